"""The instructor guide (course/instructor_guide.md) stays in step with the notebooks and their results.

- every session has a run-of-show whose minutes add up to the length its heading states, with a lecture
  block as long as the lesson's lecture outline, a lab block and an exercise block;
- a measured number or verdict the guide quotes is a checked quote, `NN_name.json: key/key = value`,
  compared here with notebooks/results/NN_name.json; the guide types no other result.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import REPO as ROOT

GUIDE = ROOT / "course" / "instructor_guide.md"
SYLLABUS = ROOT / "course" / "README.md"
LESSONS = ROOT / "course" / "lessons"
RESULTS = ROOT / "notebooks" / "results"

SESSION_HEADING = re.compile(r"^### Session (\d) — (.+) \((\d+) min\)$", re.MULTILINE)
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([a-z][a-z -]*?)\s*\|(.*)\|\s*$")  # | minutes | block | what |
RESULT_QUOTE = re.compile(r"`(\d\d_[a-z_]+\.json): ([^`=]+?) = ([^`]+)`")  # key path: keys joined by "/"


def _section(text: str, heading: str) -> str:
    """The text of one `## ` section (heading line excluded), up to the next `## ` heading."""
    start = text.index(heading + "\n") + len(heading) + 1
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


# ---------------------------------------------------------------------------------------------
# Run-of-show
# ---------------------------------------------------------------------------------------------


def run_of_show(text: str) -> dict[int, tuple[str, int, list[tuple[int, str, str]], str]]:
    """{session: (title, stated minutes, [(minutes, block, what), ...], body)} from the guide's run-of-show."""
    section = _section(text, "## Run-of-show")
    out = {}
    for match in SESSION_HEADING.finditer(section):
        end = re.compile(r"^#{1,3} ", re.MULTILINE).search(section, match.end())
        body = section[match.end(): end.start() if end else len(section)]
        rows = [(int(m.group(1)), m.group(2), m.group(3).strip()) for m in map(ROW.match, body.splitlines()) if m]
        out[int(match.group(1))] = (match.group(2), int(match.group(3)), rows, body)
    return out


def _lecture_minutes(number: int) -> int:
    (lesson,) = LESSONS.glob(f"{number:02d}_*.md")
    (minutes,) = re.findall(r"^## Lecture outline \(about (\d+) minutes", lesson.read_text(), re.MULTILINE)
    return int(minutes)


def _session_titles() -> dict[int, str]:
    return {int(n): t for n, t in re.findall(r"^### Session (\d) — (.+)$", SYLLABUS.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("number", range(1, 8))
def test_every_session_has_a_run_of_show_whose_minutes_add_up(number):
    sessions = run_of_show(GUIDE.read_text())
    assert number in sessions, f"the guide's run-of-show has no '### Session {number} — <title> (<minutes> min)'"
    title, length, rows, body = sessions[number]
    assert title == _session_titles()[number], f"session {number} is {_session_titles()[number]!r} in the syllabus, {title!r} in the guide"
    assert sum(m for m, _, _ in rows) == length, f"session {number}: the blocks add up to {sum(m for m, _, _ in rows)} min, the heading says {length}"
    blocks = {b: m for m, b, _ in rows}
    assert {"lecture", "lab", "exercises"} <= set(blocks), f"session {number} lacks a lecture, lab or exercises block: {sorted(blocks)}"
    assert blocks["lecture"] == _lecture_minutes(number), (
        f"session {number}: the lecture block is {blocks['lecture']} min, lesson {number:02d}'s outline {_lecture_minutes(number)}")
    assert "**Expected headline results.**" in body, f"session {number} does not say what results to expect"
    assert f"notebooks/{number:02d}_" in body or f"../notebooks/{number:02d}_" in body, f"session {number} does not point at its notebook"


def test_the_run_of_show_parser_reads_a_session(tmp_path):
    text = ("## Run-of-show\n\n### Session 1 — A (30 min)\n\n| minutes | block | what |\n|---|---|---|\n"
            "| 20 | lecture | talk |\n| 10 | lab | run it |\n\n**Expected headline results.** none\n\n## Other\n| 5 | lecture | x |\n")
    ((n, (title, length, rows, _)),) = run_of_show(text).items()
    assert (n, title, length, rows) == (1, "A", 30, [(20, "lecture", "talk"), (10, "lab", "run it")])


# ---------------------------------------------------------------------------------------------
# Quoted results
# ---------------------------------------------------------------------------------------------


def _lookup(data, path: str):
    for key in path.split("/"):
        data = data[key]
    return data


def quote_problems(text: str) -> list[str]:
    problems = []
    for file, path, quoted in RESULT_QUOTE.findall(text):
        results = RESULTS / file
        if not results.is_file():
            problems.append(f"`{file}: {path} = {quoted}`: notebooks/results/{file} does not exist")
            continue
        try:
            value = _lookup(json.loads(results.read_text()), path)
        except (KeyError, TypeError):
            problems.append(f"`{file}: {path} = {quoted}`: notebooks/results/{file} has no {path}")
            continue
        if (value if isinstance(value, str) else json.dumps(value)) != quoted.strip():
            problems.append(f"`{file}: {path} = {quoted}`: notebooks/results/{file} holds {value!r}")
    return problems


def test_every_result_the_guide_quotes_is_the_one_in_its_results_file():
    text = GUIDE.read_text()
    assert len(RESULT_QUOTE.findall(text)) >= 5, "the guide quotes notebook 06's verdicts through checked quotes"
    problems = quote_problems(text)
    assert not problems, "\n".join(problems)


def test_the_quote_check_sees_a_wrong_value_a_wrong_key_and_a_missing_file():
    d = json.loads((RESULTS / "06_continual_learning.json").read_text())
    text = (f"`06_continual_learning.json: claim_a = {d['claim_a']}` `06_continual_learning.json: claim_a = settled` "
            f"`06_continual_learning.json: grid = {d['grid']}` `06_continual_learning.json: nothing/here = 1` "
            f"`06_continual_learning.json: level_Pstar = {json.dumps(d['level_Pstar'])}` `99_none.json: a = 1`")
    assert quote_problems(text) == [
        f"`06_continual_learning.json: claim_a = settled`: notebooks/results/06_continual_learning.json holds {d['claim_a']!r}",
        "`06_continual_learning.json: nothing/here = 1`: notebooks/results/06_continual_learning.json has no nothing/here",
        "`99_none.json: a = 1`: notebooks/results/99_none.json does not exist",
    ]
