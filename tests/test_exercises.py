"""The exercise cut works: stubs fail their tests in the student copy, the reference passes them."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "course"))
import exercises  # noqa: E402


def test_cut_turns_a_region_into_a_stub():
    text = "def f(x):\n    # exercise 9.1: double it\n    y = 2 * x\n    return y\n    # end exercise\n\nz = 1\n"
    out, ids = exercises.cut(text)
    assert ids == ["9.1"]
    assert out == "def f(x):\n    raise NotImplementedError('Exercise 9.1: double it')\n\nz = 1\n"


def test_cut_refuses_an_unclosed_region():
    with pytest.raises(ValueError, match="no '# end exercise' line"):
        exercises.cut("# exercise 9.1: never closed\nx = 1\n")


def _exercise_ids() -> list[str]:
    ids = []
    for path in sorted((ROOT / "core").glob("*.py")):
        ids += exercises.cut(path.read_text(), path.name)[1]
    return ids


def _run_marked(cwd: Path, marker: str, report: Path) -> dict[str, str]:
    """Run the tests selected by `marker` in `cwd`; return {test id: outcome}."""
    subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-m", marker, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[f"{case.get('classname')}.{case.get('name')}"] = outcome
    return outcomes


def test_every_stage_with_exercises_has_tests_that_fail_on_stubs_and_pass_on_the_reference(tmp_path):
    ids = _exercise_ids()
    assert len(ids) >= 8, f"the course promises 8-12 exercises, core/ marks {len(ids)}"
    assert len(set(ids)) == len(ids), f"exercise ids repeat: {ids}"
    stages = sorted({i.split(".")[0] for i in ids})
    marker = " or ".join(f"exercise{n}" for n in stages)

    student = tmp_path / "student"
    exercises.write_student_copy(student)
    reference = _run_marked(ROOT, marker, tmp_path / "reference.xml")
    stubbed = _run_marked(student, marker, tmp_path / "student.xml")

    assert reference and all(v == "passed" for v in reference.values()), reference
    assert stubbed.keys() == reference.keys()
    assert all(v == "failed" for v in stubbed.values()), {k: v for k, v in stubbed.items() if v != "failed"}
    for n in stages:  # every stage that has exercises is checked by at least one marked test
        listed = subprocess.run(
            [sys.executable, "-m", "pytest", "tests", "-m", f"exercise{n}", "--collect-only", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, capture_output=True, text=True,
        )
        assert listed.returncode == 0, f"exercise{n} marks no test"


def test_the_rest_of_the_suite_still_collects_in_the_student_copy(tmp_path):
    student = tmp_path / "student"
    exercises.write_student_copy(student)
    count = re.compile(r"(\d+) tests? collected")
    args = [sys.executable, "-m", "pytest", "tests", "--collect-only", "-q", "-p", "no:cacheprovider"]
    here = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    there = subprocess.run(args, cwd=student, capture_output=True, text=True)
    assert there.returncode == 0, there.stdout[-2000:] + there.stderr[-2000:]
    assert count.search(here.stdout)[1] == count.search(there.stdout)[1]
