"""The course text stays consistent with the code and the notebooks.

- every lesson links its own notebook, and that notebook exists;
- every notebook has a lesson, and the syllabus links every lesson and every notebook;
- every exercise marked in core/*.py (`# exercise N.k: ...`) is taught in lesson N and listed in
  the syllabus, each with its `make check-exercise N=N` command;
- every exercise the course mentions ("Exercise N.k") is marked in the code;
- every relative link in course/ points at a file that exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO as ROOT
COURSE = ROOT / "course"
LESSONS = COURSE / "lessons"
SYLLABUS = COURSE / "README.md"
GUIDE = COURSE / "instructor_guide.md"
NOTEBOOKS = ROOT / "notebooks"

sys.path.insert(0, str(COURSE))
import exercises  # noqa: E402  (its BEGIN pattern is the one definition of an exercise marker)

MENTION = re.compile(r"\bexercise\s+(\d+\.\d+)\b", re.IGNORECASE)  # "Exercise 2.3" in course text
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _lesson_files() -> dict[int, Path]:
    return {int(p.name[:2]): p for p in sorted(LESSONS.glob("[0-9][0-9]_*.md"))}


def _notebooks() -> dict[int, Path]:
    return {int(p.name[:2]): p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


def _course_docs() -> list[Path]:
    return sorted(COURSE.rglob("*.md"))


def _prose(path: Path) -> str:
    """The markdown without code blocks and inline code, where links are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", path.read_text()))


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path))


def _relative_targets(path: Path) -> list[tuple[str, Path]]:
    """(link as written, file it points at) for every link that is neither a URL nor an anchor."""
    out = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto: ... and in-page anchors
        out.append((target, (path.parent / target.split("#", 1)[0]).resolve()))
    return out


def _marked_exercises() -> dict[str, Path]:
    """{"2.1": core/bhra.py, ...}: every `# exercise N.k:` marker in the packages the student copy cuts.

    One exercise may span several regions (Exercise 1.3 is three small functions), all in one file: the file
    the syllabus names for it."""
    ids = {}
    for path in exercises.source_files(ROOT):  # core/ and lab/, the packages the student copy cuts
        for line in path.read_text().splitlines():
            if match := exercises.BEGIN.match(line):
                assert ids.get(match["id"], path) == path, (f"exercise {match['id']} is marked in two files "
                                                            f"({ids[match['id']]}, {path}); give each its own number")
                ids[match["id"]] = path
    return ids


def _mentions(path: Path) -> set[str]:
    return set(MENTION.findall(path.read_text()))


# ---------------------------------------------------------------------------------------------
# Lessons and notebooks
# ---------------------------------------------------------------------------------------------


def test_there_is_one_lesson_per_session():
    assert sorted(_lesson_files()) == list(range(1, 8)), f"course/lessons holds {sorted(_lesson_files())}"


def test_every_notebook_has_a_lesson():
    missing = sorted(set(_notebooks()) - set(_lesson_files()))
    assert not missing, f"notebooks {[_notebooks()[n].name for n in missing]} have no lesson in course/lessons/"


@pytest.mark.parametrize("number", range(1, 8))
def test_every_lesson_links_its_own_notebook_and_it_exists(number):
    lesson = _lesson_files().get(number)
    assert lesson is not None, f"no course/lessons/{number:02d}_*.md"
    mine = [(t, p) for t, p in _relative_targets(lesson) if p.suffix == ".ipynb" and p.parent == NOTEBOOKS.resolve()]
    assert mine, f"{lesson.name} links no notebook (expected ../../notebooks/{number:02d}_*.ipynb)"
    own = [(t, p) for t, p in mine if p.name.startswith(f"{number:02d}_")]
    assert own, f"{lesson.name} links {[t for t, _ in mine]} but not notebook {number:02d}"
    for target, path in own:
        assert path.is_file(), f"{lesson.name} links {target}, which does not exist (yet?)"


def test_the_syllabus_links_every_lesson_and_every_notebook():
    linked = {p for _, p in _relative_targets(SYLLABUS)}
    for path in list(_lesson_files().values()) + list(_notebooks().values()):
        assert path.resolve() in linked, f"course/README.md does not link {path.relative_to(ROOT)}"


# ---------------------------------------------------------------------------------------------
# Exercises: the code's markers and the course's text name the same set
# ---------------------------------------------------------------------------------------------


def test_every_marked_exercise_is_taught_in_its_lesson_and_listed_in_the_syllabus():
    marked = _marked_exercises()
    assert marked, "core/*.py marks no exercise (`# exercise N.k: hint` ... `# end exercise`)"
    lessons, syllabus = _lesson_files(), _mentions(SYLLABUS)
    syllabus_text = SYLLABUS.read_text()
    problems = []
    for ex, where in sorted(marked.items()):
        n = int(ex.split(".")[0])
        if n not in lessons:
            problems.append(f"exercise {ex} ({where.name}) belongs to lesson {n}, which does not exist")
            continue
        if ex not in _mentions(lessons[n]):
            problems.append(f"exercise {ex} ({where.name}) is not in {lessons[n].name}")
        if f"make check-exercise N={n}" not in lessons[n].read_text():
            problems.append(f"{lessons[n].name} does not give the command `make check-exercise N={n}`")
        if ex not in syllabus:
            problems.append(f"exercise {ex} is not in the syllabus course/README.md")
        if f"make check-exercise N={n}" not in syllabus_text:
            problems.append(f"the syllabus does not give the command `make check-exercise N={n}`")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", _course_docs(), ids=lambda p: str(p.relative_to(COURSE)))
def test_every_exercise_the_course_mentions_is_marked_in_the_code(doc):
    unknown = sorted(_mentions(doc) - set(_marked_exercises()))
    assert not unknown, f"{doc.relative_to(ROOT)} mentions exercises {unknown}, which no `# exercise` marker in core/ defines"


def test_each_lesson_lists_only_exercises_that_exist_and_all_of_its_own():
    """Lesson N's own exercises (N.k) are exactly those the code marks N.k."""
    marked = set(_marked_exercises())
    for n, lesson in _lesson_files().items():
        own_in_text = {e for e in _mentions(lesson) if e.split(".")[0] == str(n)}
        own_in_code = {e for e in marked if e.split(".")[0] == str(n)}
        assert own_in_text == own_in_code, f"{lesson.name}: text names {sorted(own_in_text)}, code marks {sorted(own_in_code)}"


def test_every_session_has_two_to_four_exercises_and_one_experiment():
    """An even load: 2-4 exercises per session, the last of them an open-ended experiment (lab/experiments.py)."""
    marked = _marked_exercises()
    for n in _lesson_files():
        own = sorted((e for e in marked if e.split(".")[0] == str(n)), key=lambda e: int(e.split(".")[1]))
        assert 2 <= len(own) <= 4, f"session {n} has {len(own)} exercises ({own}); the course gives each 2 to 4"
        experiments = [e for e in own if marked[e].name == "experiments.py"]
        assert experiments == own[-1:], (f"session {n}: its last exercise should be its one open-ended experiment, "
                                          f"in lab/experiments.py; the experiments are {experiments} of {own}")


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", _course_docs(), ids=lambda p: str(p.relative_to(COURSE)))
def test_every_relative_link_resolves(doc):
    broken = [target for target, path in _relative_targets(doc) if not path.exists()]
    assert not broken, f"{doc.relative_to(ROOT)} links files that do not exist: {broken}"


def test_the_link_checker_sees_links_and_skips_code(tmp_path):
    """The checks above rely on the parser: prove it finds links and ignores code."""
    doc = tmp_path / "x.md"
    doc.write_text("see [a](a.md) and ![fig](img/b.png \"t\") and [c](https://x.org) [d](#top)\n"
                   "```\n[not](a link.md)\n```\nand `[nor](this.md)`; Exercise 1.2, exercise 3.1.\n")
    assert _links(doc) == ["a.md", "img/b.png", "https://x.org", "#top"]
    assert [t for t, _ in _relative_targets(doc)] == ["a.md", "img/b.png"]
    assert _mentions(doc) == {"1.2", "3.1"}


def test_lesson_05_sizes_and_standard_errors_follow_the_offline_test_sets():
    """Lesson 05 quotes the offline test-set sizes and the standard errors they give; both come from
    lab.offline_data's defaults, so a change of test-set size fails here until the lesson follows."""
    import inspect
    import math

    import lab

    n_task = inspect.signature(lab.offline_data).parameters["n_test_per_task"].default
    n_all = n_task * len(lab.COMMONSENSE_TASKS)
    text = (LESSONS / "05_evaluation.md").read_text()
    se = lambda p, n: f"{100 * math.sqrt(p * (1 - p) / n):.1f}"  # noqa: E731
    assert f"| offline, one task | {n_task} | {se(.6, n_task)} points | {se(.8, n_task)} points |" in text
    assert f"| offline, average of {len(lab.COMMONSENSE_TASKS)} tasks | {n_all} | {se(.6, n_all)} | {se(.8, n_all)} |" in text
    two_se = lambda n: round(200 * math.sqrt(2 * .25 / n))  # noqa: E731  two SEs of a difference at p = 0.5
    assert f"have {n_task} examples per task" in text
    assert f"about {two_se(n_task)} points per task (`n = {n_task}`, `p = 0.5`)" in text
    assert f"about {two_se(n_all)} points on the eight-task average\n   (`n = {n_all}`)" in text


# A reader has this repository and the public sources it names, nothing else: every markdown document a file
# names (in prose; a quoted name is a file the code writes) is one of the repository's, and no file cites a
# section (§) of a document.
CITED_DOC = re.compile(r"(?<![\"'\w./-])[\w./-]+\.md\b|§")


def _citations_of_absent(text: str, have: set[str]) -> list[tuple[int, str]]:
    return [(i, hit) for i, line in enumerate(text.splitlines(), 1) for hit in CITED_DOC.findall(line)
            if hit == "§" or Path(hit).name not in have]


def test_nothing_cites_a_document_the_reader_lacks():
    have = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    files = [p for d in ("lab", "core", "tests", "benchmarks", "course", "notebooks") for p in (ROOT / d).rglob("*")
             if p.suffix in (".py", ".md", ".ipynb") and ".ipynb_checkpoints" not in p.parts and p != Path(__file__)]
    files += [ROOT / "README.md"]
    assert len(files) > 50 and "README.md" in have
    cited = [f"{f.relative_to(ROOT)}:{i}: {hit}" for f in files
             for i, hit in _citations_of_absent(f.read_text(errors="replace"), have)]
    assert not cited, cited


def test_the_absent_document_check_sees_a_citation():
    text = 'see README.md\n# as in notes.md, section 2\n# and its §3\nout = folder / "table.md"\n'
    assert _citations_of_absent(text, {"README.md"}) == [(2, "notes.md"), (3, "§")]
