"""What the Makefile and the install promise that a test can keep: `make clean` never deletes a student's work, and
the Python the project asks for is one its pinned packages install on."""
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


def _lower_bound(spec: str) -> tuple[int, ...]:
    """(3, 11) of ">=3.11" or ">=3.11.0, <4"."""
    import re

    return tuple(int(x) for x in re.search(r">=\s*([\d.]+)", spec)[1].split(".")[:2])


def test_the_python_the_project_asks_for_is_one_every_pinned_package_installs_on():
    """pyproject's requires-python, and the Python the README and the course name, are at least the highest
    Requires-Python among the packages requirements.txt installs (as installed here)."""
    import importlib.metadata
    import re

    names = [re.split(r"[=<>~ #]", line)[0] for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    needed = max(_lower_bound(importlib.metadata.metadata(n)["Requires-Python"] or ">=3.0") for n in names)
    asked = _lower_bound(re.search(r'requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text())[1])
    assert asked >= needed, f"pyproject.toml asks for Python {asked}, but a pinned package needs {needed}"
    said = "Python ≥ " + ".".join(map(str, asked))
    for doc in ("README.md", "course/README.md"):
        assert said in (REPO / doc).read_text(), f"{doc} should say {said}"
