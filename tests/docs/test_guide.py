"""The instructor guide (course/instructor_guide.md) stays in step with the notebooks and their results.

- every question a notebook asks its reader ("Questions for the reader", or **Questions**, in its markdown
  cells) has one answer in the guide, which quotes the question word for word, and the guide answers no
  question that no notebook asks: a question reworded, added or dropped in a notebook fails here until
  the guide follows;
- every session has a run-of-show whose minutes add up to the length its heading states, with a lecture
  block as long as the lesson's lecture outline, a lab block and an exercise block;
- a measured number or verdict the guide quotes is a checked quote, `NN_name.json: key/key = value`,
  compared here with notebooks/results/NN_name.json; the guide types no other result.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import REPO as ROOT

GUIDE = ROOT / "course" / "instructor_guide.md"
SYLLABUS = ROOT / "course" / "README.md"
LESSONS = ROOT / "course" / "lessons"
NOTEBOOKS = ROOT / "notebooks"
RESULTS = NOTEBOOKS / "results"

QUESTIONS_HEADING = re.compile(r"^\s*(?:#+\s*Questions for the reader|\*\*Questions\*\*)\s*$")
ITEM = re.compile(r"^(\d+)\.\s+(.*)$")                           # "3. text" at the start of a line
ANSWERS_SECTION = "## Answers to the notebooks' questions for the reader"
NOTEBOOK_HEADING = re.compile(r"^### Notebook (\d\d) — ", re.MULTILINE)
QUOTED_ITEM = re.compile(r"^(\d+)\. > (.*)$")                    # "3. > the question, first line"
QUOTE_CONTINUED = re.compile(r"^ {3}> ?(.*)$")                   # "   > its next lines"
SESSION_HEADING = re.compile(r"^### Session (\d) — (.+) \((\d+) min\)$", re.MULTILINE)
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([a-z][a-z -]*?)\s*\|(.*)\|\s*$")  # | minutes | block | what |
RESULT_QUOTE = re.compile(r"`(\d\d_[a-z_]+\.json): ([^`=]+?) = ([^`]+)`")  # key path: keys joined by "/"


def _words(text: str) -> str:
    return " ".join(text.split())


def _section(text: str, heading: str) -> str:
    """The text of one `## ` section (heading line excluded), up to the next `## ` heading."""
    start = text.index(heading + "\n") + len(heading) + 1
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def _subsections(text: str, heading: re.Pattern) -> dict[int, str]:
    """{number: body} for every heading of the pattern in text; a body runs to the next heading of any level."""
    out = {}
    for match in heading.finditer(text):
        end = re.compile(r"^#{1,3} ", re.MULTILINE).search(text, match.end())
        number = int(match.group(1))
        assert number not in out, f"the guide has two sections for {match.group(0).strip()}"
        out[number] = text[match.end(): end.start() if end else len(text)]
    return out


# ---------------------------------------------------------------------------------------------
# Parsers: the notebooks' questions, the guide's answers
# ---------------------------------------------------------------------------------------------


def notebook_questions(path: Path) -> list[str]:
    """The reader's questions of one notebook, in order, each as one line of words."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]
    found = []
    for cell in cells:
        lines = "".join(cell["source"]).splitlines()
        starts = [i for i, line in enumerate(lines) if QUESTIONS_HEADING.match(line)]
        for start in starts:
            items: list[list[str]] = []
            for line in lines[start + 1:]:
                if item := ITEM.match(line):
                    assert int(item.group(1)) == len(items) + 1, f"{path.name}: question {item.group(1)} out of order"
                    items.append([item.group(2)])
                elif items and line.startswith((" ", "\t")) and line.strip():
                    items[-1].append(line)  # an indented continuation of the current question
                elif items and (line.startswith("#") or (line.strip() and not line.startswith(" "))):
                    break  # a heading or a paragraph after the list ends it
            found.append([_words(" ".join(item)) for item in items])
    assert len(found) == 1, f"{path.name} has {len(found)} question sections (expected one)"
    assert found[0], f"{path.name}: its question section lists no question"
    return found[0]


def guide_answers(text: str) -> dict[int, list[tuple[int, str, str]]]:
    """{notebook: [(number, quoted question, answer), ...]} from the guide's answers section."""
    out = {}
    for nb, body in _subsections(_section(text, ANSWERS_SECTION), NOTEBOOK_HEADING).items():
        items: list[list] = []  # [number, quote lines, answer lines]
        for line in body.splitlines():
            if item := QUOTED_ITEM.match(line):
                items.append([int(item.group(1)), [item.group(2)], []])
            elif ITEM.match(line):
                items.append([int(ITEM.match(line).group(1)), [], [line]])  # an answer that quotes no question
            elif items and (cont := QUOTE_CONTINUED.match(line)) and not items[-1][2]:
                items[-1][1].append(cont.group(1))
            elif items and line.strip():
                items[-1][2].append(line)
        out[nb] = [(n, _words(" ".join(q)), _words(" ".join(a))) for n, q, a in items]
    return out


def pairing_problems(questions: dict[int, list[str]], answers: dict[int, list[tuple[int, str, str]]]) -> list[str]:
    """Every way the guide's answers and the notebooks' questions fail to pair one to one."""
    problems = []
    for nb in sorted(set(questions) | set(answers)):
        asked, given = questions.get(nb), answers.get(nb, [])
        if asked is None:
            problems.append(f"the guide answers questions of notebook {nb:02d}, which does not exist")
            continue
        if nb not in answers:
            problems.append(f"notebook {nb:02d} asks {len(asked)} questions; the guide has no '### Notebook {nb:02d} — ' section")
        by_number = {}
        for number, quote, answer in given:
            if number in by_number:
                problems.append(f"notebook {nb:02d}: the guide answers question {number} twice")
            by_number[number] = (quote, answer)
        for i, question in enumerate(asked, 1):
            if i not in by_number:
                problems.append(f"notebook {nb:02d}, question {i} has no answer in the guide: {question!r}")
                continue
            quote, answer = by_number[i]
            if not quote:
                problems.append(f"notebook {nb:02d}, question {i}: the guide's answer {i} does not quote its question "
                                f"(write `{i}. > {question[:40]}...`)")
            elif quote != question:
                problems.append(f"notebook {nb:02d}, question {i}: the guide quotes {quote!r}, the notebook asks {question!r}")
            if len(answer.split()) < 20:
                problems.append(f"notebook {nb:02d}, question {i}: the guide's answer is missing or too short: {answer!r}")
        for number in sorted(set(by_number) - set(range(1, len(asked) + 1))):
            problems.append(f"notebook {nb:02d}: the guide answers a question {number}, but the notebook asks {len(asked)}: "
                            f"{by_number[number][0] or by_number[number][1]!r}")
    return problems


def _all_questions() -> dict[int, list[str]]:
    return {int(p.name[:2]): notebook_questions(p) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


# ---------------------------------------------------------------------------------------------
# Questions and answers
# ---------------------------------------------------------------------------------------------


def test_every_notebook_asks_its_reader_questions():
    questions = _all_questions()
    assert sorted(questions) == list(range(1, 8)), sorted(questions)


def test_the_guide_answers_as_many_questions_as_each_notebook_asks():
    answers = guide_answers(GUIDE.read_text())
    counts = {nb: (len(asked), len(answers.get(nb, []))) for nb, asked in _all_questions().items()}
    assert all(a == g for a, g in counts.values()), {nb: f"asks {a}, guide answers {g}" for nb, (a, g) in counts.items() if a != g}


def test_every_question_of_every_notebook_has_its_answer_in_the_guide_and_no_answer_lacks_a_question():
    problems = pairing_problems(_all_questions(), guide_answers(GUIDE.read_text()))
    assert not problems, "\n".join(problems)


def test_the_pairing_sees_a_missing_answer_a_stray_answer_and_a_reworded_question(tmp_path):
    """The check above relies on the parsers: prove they read both formats and report each kind of mismatch."""
    md = lambda src: {"cell_type": "markdown", "metadata": {}, "source": src}  # noqa: E731
    nb = tmp_path / "09_x.ipynb"
    nb.write_text(json.dumps({"cells": [md("## Summary\n\n* a point\n\n## Questions for the reader\n\n"
                                           "1. Why is the sky\n   blue?\n2. Is $r_b = 2$ enough?\n"),
                                        {"cell_type": "code", "metadata": {}, "source": "1. not a question", "outputs": []}]}))
    bold = tmp_path / "08_y.ipynb"
    bold.write_text(json.dumps({"cells": [md("**Questions**\n1. One?\n2. Two?\n")]}))
    assert notebook_questions(nb) == ["Why is the sky blue?", "Is $r_b = 2$ enough?"]
    assert notebook_questions(bold) == ["One?", "Two?"]
    answer = "because " * 20
    guide = (f"{ANSWERS_SECTION}\n\nIntro.\n\n### Notebook 09 — x\n\n1. > Why is the sky\n   > blue?\n\n   {answer}\n"
             f"3. > Where is question 3?\n\n   {answer}\n\n### Notebook 08 — y\n\n1. > One!\n\n   {answer}\n"
             f"2. **Two?** {answer}\n\n## Next section\n\n1. > not an answer\n")
    answers = guide_answers(guide)
    assert [(n, q) for n, q, _ in answers[9]] == [(1, "Why is the sky blue?"), (3, "Where is question 3?")]
    problems = pairing_problems({9: notebook_questions(nb), 8: notebook_questions(bold)}, answers)
    assert problems == [
        "notebook 08, question 1: the guide quotes 'One!', the notebook asks 'One?'",
        "notebook 08, question 2: the guide's answer 2 does not quote its question (write `2. > Two?...`)",
        "notebook 09, question 2 has no answer in the guide: 'Is $r_b = 2$ enough?'",
        "notebook 09: the guide answers a question 3, but the notebook asks 2: 'Where is question 3?'",
    ], problems
    assert pairing_problems({}, answers)[0] == "the guide answers questions of notebook 08, which does not exist"


def test_the_seed_count_that_halves_an_interval_is_computed_not_guessed():
    """Notebook 05, question 4: the half-width is t_{0.975,S-1} σ / √S; the guide's answer names the smallest S
    that halves the three-seed one, and the answer that forgets t's change with S."""
    import math

    from lab.stats import t_quantile

    width = lambda s: t_quantile(s - 1) / math.sqrt(s)  # noqa: E731  the half-width per unit of spread
    seeds = next(s for s in range(4, 100) if width(s) <= width(3) / 2)
    naive = next(s for s in range(4, 100) if 1 / math.sqrt(s) <= 1 / (2 * math.sqrt(3)))
    (answer,) = [a for n, _, a in guide_answers(GUIDE.read_text())[5] if n == 4]
    assert f"**{seeds} seeds**" in answer and f"{naive} seeds" in answer, answer
    assert f"{width(3):.2f}" in answer and f"{width(seeds):.2f}" in answer and f"{width(seeds - 1):.2f}" in answer, answer


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
