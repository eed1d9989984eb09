"""The exercise cut works: stubs fail their tests in the student copy, the reference passes them; the copy
gives no solution away; every exercise test fails with a sentence."""

import ast
import html
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import REPO as ROOT
sys.path.insert(0, str(ROOT / "course"))
import exercises  # noqa: E402


def test_cut_turns_a_region_into_a_stub():
    text = "def f(x):\n    # exercise 9.1: double it\n    y = 2 * x\n    return y\n    # end exercise\n\nz = 1\n"
    out, ids = exercises.cut(text)
    assert ids == ["9.1"]
    assert out == "def f(x):\n    raise NotImplementedError('Exercise 9.1: double it')\n\nz = 1\n"


def test_cut_keeps_a_hint_of_several_lines_whole():
    """Every comment line right below the marker goes on with the hint (up to the first line of code)."""
    text = ("def f(x):\n    # exercise 9.1: double it,\n    # then add 'one'\n    # (\"1\" in words)\n"
            "    y = 2 * x + 1\n    # a comment of the solution\n    return y\n    # end exercise\n")
    out, _ = exercises.cut(text)
    assert out == ('def f(x):\n    raise NotImplementedError(\n        "Exercise 9.1: double it, "\n'
                   '        "then add \'one\' "\n        "(\\"1\\" in words)"\n    )\n'), out
    namespace = {}
    exec(out, namespace)
    with pytest.raises(NotImplementedError) as err:
        namespace["f"](1)
    assert str(err.value) == 'Exercise 9.1: double it, then add \'one\' ("1" in words)'
    assert "a comment of the solution" not in out


def test_exercise_4_1_tells_the_student_the_messages_its_tests_match():
    hint = _hints(ROOT)["4.1"]
    for words in ("the adapters are already merged: unmerge() first to merge again",
                  "no adapters to merge: inject() or load_adapter() first",
                  "merging {name} gives non-finite weights: the adapter diverged (lower the learning rate or train "
                  "in float32); nothing was merged"):
        assert words in hint, f"exercise 4.1's hint does not give the message {words!r}, which its tests match"


def test_a_notebook_output_that_shows_a_region_is_cut_like_the_code():
    """show() in a notebook prints the reference source; in the student copy the output shows the stub."""
    import json

    source = "def f(x):\n    # exercise 9.1: double it\n    return 2 * x\n    # end exercise\n"
    shown = {"output_type": "display_data", "metadata": {},
             "data": {"text/markdown": ["```python\n"] + source.splitlines(keepends=True) + ["```"],
                      "text/plain": ["<IPython.core.display.Markdown object>"]}}
    printed = {"output_type": "stream", "name": "stdout", "text": "no region here\n"}
    nb = {"cells": [{"cell_type": "code", "source": "show(f)", "metadata": {}, "outputs": [shown, printed]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    outputs = json.loads(exercises.cut_notebook(text))["cells"][0]["outputs"]
    assert "".join(outputs[0]["data"]["text/markdown"]) == (
        "```python\ndef f(x):\n    raise NotImplementedError('Exercise 9.1: double it')\n```")
    assert outputs[1] == printed and outputs[0]["data"]["text/plain"] == shown["data"]["text/plain"]
    assert "".join(json.loads(exercises.cut_notebook(text, solved=9))["cells"][0]["outputs"][0]["data"]["text/markdown"]) == (
        "```python\ndef f(x):\n    return 2 * x\n```"), "a solved lesson's output keeps the solution, as its code does"
    plain = json.dumps({**nb, "cells": [{**nb["cells"][0], "outputs": [printed]}]}, indent=1) + "\n"
    assert exercises.cut_notebook(plain) == plain, "a notebook that shows no region is copied as it is"


def test_cut_refuses_an_unclosed_region():
    with pytest.raises(ValueError, match="no '# end exercise' line"):
        exercises.cut("# exercise 9.1: never closed\nx = 1\n")


def test_cut_keeps_the_solutions_of_solved_lessons():
    text = ("# exercise 1.1: one\nx = 1\n# end exercise\n"
            "# exercise 2.1: two\ny = 2\n# end exercise\n")
    out, ids = exercises.cut(text, solved=1)
    assert ids == ["1.1", "2.1"]
    assert out == "x = 1\nraise NotImplementedError('Exercise 2.1: two')\n"
    assert exercises.cut(text, solved=2)[0] == "x = 1\ny = 2\n"


def _exercise_ids() -> list[str]:
    ids = []
    for path in exercises.source_files(ROOT):
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


@pytest.mark.slow  # runs the suite again in subprocesses: out of the quick loop
def test_every_stage_with_exercises_has_tests_that_fail_on_stubs_and_pass_on_the_reference(tmp_path):
    ids = sorted(set(_exercise_ids()))  # an exercise may span several regions
    assert len(ids) >= 8, f"the course has 2-4 exercises in each of 7 sessions, the code marks {len(ids)}"
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


@pytest.mark.slow  # runs the suite again in subprocesses: out of the quick loop
def test_the_rest_of_the_suite_still_collects_in_the_student_copy(tmp_path):
    student = tmp_path / "student"
    exercises.write_student_copy(student)
    count = re.compile(r"(\d+) tests? collected")
    args = [sys.executable, "-m", "pytest", "tests", "--collect-only", "-q", "-p", "no:cacheprovider"]
    here = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    there = subprocess.run(args, cwd=student, capture_output=True, text=True)
    assert there.returncode == 0, there.stdout[-2000:] + there.stderr[-2000:]
    assert count.search(here.stdout)[1] == count.search(there.stdout)[1]


# ---------------------------------------------------------------------------------------------
# The student's path: after lessons 1..N, notebook N runs to the end in the student copy
# ---------------------------------------------------------------------------------------------


def _run_notebook(path: Path) -> str | None:
    """Execute a notebook in its own folder with this interpreter's kernel; None, or the error it stopped with."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as err:
        return re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the traceback without its terminal colours
    return None


def _notebook(n: int) -> str:
    return next(p.name for p in (ROOT / "notebooks").glob(f"{n:02d}_*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 3])
def test_notebook_n_runs_in_a_student_copy_with_lessons_1_to_n_solved(tmp_path, n):
    """Lessons 1..N solved: notebook N runs to the end; lesson N left undone: it stops at a lesson-N stub.

    The second half proves that the notebook ran on the copy's own core (not the installed reference)
    and that it needs lesson N's exercises, so none of them could move to a later lesson unnoticed.
    """
    ids = exercises.write_student_copy(tmp_path / "solved", solved=n)
    assert ids and all(exercises.lesson(i) > n for i in ids), ids
    error = _run_notebook(tmp_path / "solved" / "notebooks" / _notebook(n))
    assert error is None, f"notebook {n:02d} failed in a student copy with lessons 1..{n} solved:\n{error[-3000:]}"

    exercises.write_student_copy(tmp_path / "unsolved", solved=n - 1)
    error = _run_notebook(tmp_path / "unsolved" / "notebooks" / _notebook(n))
    assert error is not None and re.search(rf"NotImplementedError: Exercise {n}\.\d", error), (
        f"notebook {n:02d} should stop at a stub of lesson {n} when only lessons 1..{n - 1} are solved; "
        + ("it ran to the end (does it import the installed core instead of the copy's?)" if error is None else error[-2000:]))


# ---------------------------------------------------------------------------------------------
# The student copy gives no answer away: no solution's text appears anywhere in it
# ---------------------------------------------------------------------------------------------

STRING = re.compile(r"""(?:[rbuf]{0,2})("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
MIN_LINE, MIN_STRING = 12, 8  # shorter lines (`else:`, `plain = {}`) and strings say nothing of a solution
# Lines of a solution that any code around adapters writes too (a test's loop over layers): not a give-away.
IDIOMS = {"for name, layer in layers:"}


def _squash(text: str) -> str:
    return " ".join(text.split())


def _solution_fragments(root: Path) -> dict[str, set[str]]:
    """{exercise id: the pieces of its solution that give it away}, read from the reference sources.

    A piece is a line of code of the region's body (its trailing comment dropped) or a string literal in
    it (an einsum pattern, an error message), whitespace collapsed. Comment lines are left out: they are
    the hint, or prose about the solution, not the solution. Parsed here with the marker patterns only, so
    a fault in the cut cannot hide a piece.
    """
    pieces: dict[str, set[str]] = {}
    for path in exercises.source_files(root):
        current = None
        for line in path.read_text().splitlines():
            if match := exercises.BEGIN.match(line):
                current = pieces.setdefault(match["id"], set())
            elif exercises.END.match(line):
                current = None
            elif current is not None and not line.lstrip().startswith("#"):
                code = _squash(re.sub(r"\s+#\s.*$", "", line))
                if len(code) >= MIN_LINE and code not in IDIOMS:
                    current.add(code)
                current.update(_squash(s[1:-1]) for s in STRING.findall(line) if len(s) - 2 >= MIN_STRING)
    return pieces


def _hints(root: Path) -> dict[str, str]:
    """{exercise id: its hint}: the marker line and the comment lines right below it, as one line."""
    hints, current = {}, None
    for path in exercises.source_files(root):
        for line in path.read_text().splitlines():
            if match := exercises.BEGIN.match(line):
                current, hints[match["id"]] = match["id"], match["hint"]
            elif current and line.lstrip().startswith("#"):
                hints[current] += " " + line.lstrip()[1:].strip()
            else:
                current = None
    return hints


def _readable_text(path: Path) -> str | None:
    """A file's text as a reader sees it (a notebook: every cell's source and every output's text); None if binary."""
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".ipynb":
        import json

        strings = []

        def walk(node):
            if isinstance(node, str):
                strings.append(node)
            elif isinstance(node, list) and node and all(isinstance(x, str) for x in node):
                strings.append("".join(node))  # a multi-line source or output, stored line by line
            elif isinstance(node, (list, dict)):
                for child in node.values() if isinstance(node, dict) else node:
                    walk(child)

        walk(json.loads(text))
        text = "\n".join(strings)
    return _squash(html.unescape(text))


def _leaks(copy: Path, root: Path) -> list[str]:
    """'exercise X.Y: <piece> in <file>' for every solution piece found in the student copy at `copy`.

    A piece the student is given anyway (it occurs in the cut sources themselves, in code outside every
    region, or in a hint: the marker's comment lines, read as one text) is not a leak.
    """
    cut = [exercises.cut(p.read_text(), p.name)[0] for p in exercises.source_files(root)]
    given = _squash("\n".join(cut + list(_hints(root).values())))
    pieces = {ex: {p for p in found if p not in given} for ex, found in _solution_fragments(root).items()}
    texts = {path.relative_to(copy): _readable_text(path) for path in sorted(copy.rglob("*")) if path.is_file()}
    return [f"exercise {ex}: {piece!r} in {name}" for ex, found in sorted(pieces.items()) for piece in sorted(found)
            for name, text in texts.items() if text is not None and piece in text]


def test_the_leak_check_finds_every_solution_in_the_reference():
    """The check below is only as good as its pieces: every exercise has some, and each is in the reference."""
    pieces = _solution_fragments(ROOT)
    assert sorted(pieces) == sorted(set(_exercise_ids())), "the leak check reads other exercises than the cut"
    sources = "\n".join(_squash(p.read_text()) for p in exercises.source_files(ROOT))
    for ex, found in pieces.items():
        assert found, f"exercise {ex}: the leak check found no line or string of its solution to look for"
        assert all(p in sources for p in found), f"exercise {ex}: a piece of its solution is not in the reference"


def test_the_student_copy_shows_no_solution_anywhere(tmp_path):
    """No file of a fresh student copy (code, notebooks with their outputs, lessons, any text) holds a solution."""
    copy = tmp_path / "student"
    exercises.write_student_copy(copy)
    leaks = _leaks(copy, ROOT)
    assert not leaks, (f"the student copy gives {len(leaks)} pieces of solutions away; cut them, or describe "
                       "instead of printing them:\n" + "\n".join(leaks))


SHOWN = r'''
import importlib, inspect, json, re, sys
from pathlib import Path
modules = [importlib.import_module(m) for m in ("core.bhra", "lab.spectra")]
assert all(Path(m.__file__).resolve().is_relative_to(Path.cwd().resolve()) for m in modules), "imported the wrong core"
wrong, checked = [], 0
for path in sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb")):
    for cell in json.loads(path.read_text())["cells"]:
        call = re.search(r"^show\(([\w, ]+)\)$", "".join(cell["source"]), re.M) if cell["cell_type"] == "code" else None
        if call:
            checked += 1
            objects = [next(getattr(m, n) for m in modules if hasattr(m, n)) for n in call[1].replace(" ", "").split(",")]
            want = "\n\n".join(f"```python\n{inspect.getsource(o)}```" for o in objects)
            have = ["".join(o["data"]["text/markdown"]) for o in cell["outputs"] if "text/markdown" in o.get("data", {})]
            if have != [want]:
                wrong.append(f"{path.name}: {call[0]}")
print(json.dumps({"wrong": wrong, "checked": checked}))
'''


@pytest.mark.parametrize("solved", [0, 7])
def test_the_copy_s_notebooks_show_the_copy_s_own_source(tmp_path, solved):
    """Each show() output of a student copy's notebook is what show() prints from that copy's own code:
    the stubs after a fresh cut, the reference once every lesson is solved (the committed outputs)."""
    import json

    copy = tmp_path / "student"
    exercises.write_student_copy(copy, solved=solved)
    env = {**__import__("os").environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([sys.executable, "-c", SHOWN], cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["checked"] >= 11, f"found {report['checked']} show() cells in the notebooks, expected 11 or more"
    wrong = report["wrong"]
    assert not wrong, (f"in a student copy with lessons 1..{solved} solved, these show() outputs differ from the "
                       "copy's own source:\n" + "\n".join(wrong))


# ---------------------------------------------------------------------------------------------
# Every exercise test fails with a sentence saying what is wrong
# ---------------------------------------------------------------------------------------------


def _exercise_tests() -> list[tuple[Path, ast.FunctionDef, list]]:
    """(file, test, the module's functions it calls) for every test marked exerciseN, directly or through a
    parametrize helper that returns pytest.param(..., marks=pytest.mark.exerciseN)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        marking = {name for name, f in functions.items() if re.search(r"mark\.exercise\d", ast.unparse(f))}
        for name, f in functions.items():
            decorators = " ".join(ast.unparse(d) for d in f.decorator_list)
            if name.startswith("test_") and (re.search(r"mark\.exercise\d", decorators)
                                             or any(f"{m}(" in decorators for m in marking)):
                called = {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                found.append((path, f, [functions[c] for c in sorted(called & functions.keys())]))
    return found


def _silent_failures(node) -> list[str]:
    """The checks in `node` that fail without a sentence: an assert with no message, assert_close with no msg,
    a bare pytest.raises (its 'DID NOT RAISE' says nothing of the exercise)."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert) and sub.msg is None:
            out.append(f"line {sub.lineno}: assert {ast.unparse(sub.test)} has no message")
        elif isinstance(sub, ast.Call):
            name = ast.unparse(sub.func)
            if name.endswith("assert_close") and not any(k.arg == "msg" for k in sub.keywords):
                out.append(f"line {sub.lineno}: {name}(...) has no msg")
            elif name == "pytest.raises":
                out.append(f"line {sub.lineno}: pytest.raises (use tests.helpers.expect_refusal, which says what was refused)")
    return out


def test_every_exercise_test_fails_with_a_sentence():
    tests = _exercise_tests()
    marked = {n for _, f, _ in tests for n in re.findall(r"exercise(\d)", ast.unparse(f))}
    assert marked >= {str(lesson) for lesson in range(1, 8)}, f"found exercise tests of lessons {sorted(marked)} only"
    problems = [f"{path.relative_to(ROOT)}::{f.name} ({g.name}) {problem}" for path, f, helpers in tests
                for g in [f, *helpers] for problem in _silent_failures(g)]
    assert not problems, ("these checks of exercise tests would fail without saying what is wrong; give each a "
                          "message that does:\n" + "\n".join(problems))
