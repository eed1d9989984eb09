"""The Makefile's promises that a test can keep: `make clean` never deletes a student's work."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
