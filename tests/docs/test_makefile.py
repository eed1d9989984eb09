"""The Makefile's promises that a test can keep: `make clean` never deletes a student's work."""
import shutil
import subprocess

import pytest

from tests.helpers import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_keeps_the_student_copy(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "student" / "core").mkdir(parents=True)
    (tmp_path / "student" / "core" / "bhra.py").write_text("# my solutions\n")
    (tmp_path / "build").mkdir()
    (tmp_path / ".cache").mkdir()
    done = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "student" / "core" / "bhra.py").read_text() == "# my solutions\n"
    assert not (tmp_path / "build").exists() and not (tmp_path / ".cache").exists()
    assert "kept student/" in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("failing", [None, "lab.smoke", "tests", "--nbval"])
def test_make_test_runs_every_part_and_fails_when_one_fails(tmp_path, failing):
    """`make test` runs the unit tests, paper-smoke and the notebooks whatever one of them reports, and
    exits non-zero when any failed (a stand-in interpreter records the calls and fails the chosen one)."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.txt", "pyproject.toml"):
        (tmp_path / name).write_text("")
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake = venv_bin / "python"
    fake.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/../../calls.log"\n'
                    + (f'case "$*" in *"{failing}"*) exit 3;; esac\n' if failing else "") + "exit 0\n")
    fake.chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()   # newer than requirements.txt: no install
    done = subprocess.run(["make", "test"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    calls = (tmp_path / "calls.log").read_text()
    assert "-m lab.smoke" in calls and "-m pytest tests" in calls and "--nbval" in calls, calls
    assert (done.returncode == 0) == (failing is None), (done.returncode, done.stdout, done.stderr)
