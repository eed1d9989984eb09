"""Write the student copy of the repo: every marked solution region becomes a stub.

In the reference code a solution region is marked by two comment lines:

    # exercise 2.3: <hint shown to the student>
    # <the hint may go on over the comment lines right below the marker>
    ...solution lines...
    # end exercise

`python course/exercises.py student/` copies the tracked files of the repo into `student/` and
replaces each region by `raise NotImplementedError("Exercise 2.3: <hint>")` at the marker's
indentation (the whole hint: every comment line right below the marker continues it, up to the
first line of code). Exercise N.k belongs to lesson N; its tests carry `@pytest.mark.exerciseN`.

The committed notebooks display the reference source beside the prose (their `show()` cells), so
their outputs hold the solutions. In the copy, every output that shows a marked region is cut like
the code: it then reads as `show()` would print it from the copy's own source (the stub and its hint;
after `--solved N`, the solution without markers), and re-running the notebook in the copy gives the
same output. The outputs are rewritten, not stripped: a notebook without outputs reads as a blank page.

`python course/exercises.py student/ --solved 2` keeps the solutions of lessons 1 and 2 (a copy as
a student has it after finishing lesson 2: notebooks 01 and 02 run to the end in it) and cuts the
rest. The marked regions live in the Python packages named in SOURCES (the method and the harness).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("core", "lab")  # the packages whose Python files carry exercise regions
BEGIN = re.compile(r"^(?P<indent>\s*)# exercise (?P<id>\d+\.\d+): (?P<hint>.+?)\s*$")
END = re.compile(r"^\s*# end exercise\s*$")
MORE = re.compile(r"^\s*#\s?(?P<hint>.*?)\s*$")  # a comment line right below the marker: the hint goes on


def lesson(exercise_id: str) -> int:
    """'2.3' -> 2: the lesson an exercise belongs to."""
    return int(exercise_id.split(".")[0])


def cut(text: str, where: str = "<text>", solved: int = 0) -> tuple[str, list[str]]:
    """Replace every marked region of `text` by a stub; return the new text and the exercise ids.

    Regions of lessons <= `solved` keep their solution (without the marker lines); the ids returned
    are those of every region found, stubbed or not.
    """
    out, ids, region, hint = [], [], None, []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if region is None:
            if match := BEGIN.match(line):
                region, hint, in_hint = match, [match["hint"]], True
                ids.append(match["id"])
            else:
                out.append(line)
        elif BEGIN.match(line):
            raise ValueError(f"{where}:{lineno}: exercise {region['id']} is not closed before the next one opens")
        elif END.match(line):
            if lesson(region["id"]) > solved:
                out.append(stub(region["id"], hint, region["indent"]))
            region = None
        elif in_hint and (more := MORE.match(line)):
            if more["hint"]:
                hint.append(more["hint"])
        else:
            in_hint = False
            if lesson(region["id"]) <= solved:
                out.append(line)  # a solved lesson: the solution stays
    if region is not None:
        raise ValueError(f"{where}: exercise {region['id']} has no '# end exercise' line")
    return "".join(out), ids


def stub(exercise_id: str, hint: list[str], indent: str) -> str:
    """The line(s) that replace a region: one raise whose message is the whole hint.

    A one-line hint gives one line; a longer one keeps its lines, as implicitly joined strings.
    """
    if len(hint) == 1:
        return f"{indent}raise NotImplementedError({f'Exercise {exercise_id}: {hint[0]}'!r})\n"
    parts = [f"Exercise {exercise_id}: {hint[0]}"] + hint[1:]
    quoted = [_quoted(part + " " if i < len(parts) - 1 else part) for i, part in enumerate(parts)]
    return f"{indent}raise NotImplementedError(\n" + "".join(f"{indent}    {q}\n" for q in quoted) + f"{indent})\n"


def _quoted(text: str) -> str:
    """A double-quoted Python string literal of `text` (repr would switch quotes from line to line)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cut_notebook(text: str, where: str = "<notebook>", solved: int = 0) -> str:
    """A notebook's JSON with every output that shows a marked region cut as the code is (see the module's
    docstring); the cells' sources are left as they are. The same text when no output shows a region."""
    nb = json.loads(text)
    changed = False

    def cut_lines(value):
        nonlocal changed
        joined = "".join(value) if isinstance(value, list) else value
        if not any(BEGIN.match(line) for line in joined.splitlines()):
            return value
        changed = True
        new = cut(joined, where, solved)[0]
        return new.splitlines(keepends=True) if isinstance(value, list) else new

    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if "text" in output:  # a stream: print()
                output["text"] = cut_lines(output["text"])
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, (str, list)):
                    output["data"][mime] = cut_lines(value)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n" if changed else text


def tracked_files(root: Path) -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return [root / name for name in listed.splitlines() if (root / name).is_file()]


def is_source(path: Path, root: Path = ROOT) -> bool:
    """A Python file of one of the SOURCES packages (at any depth), where exercise regions live."""
    rel = path.relative_to(root)
    return path.suffix == ".py" and len(rel.parts) > 1 and rel.parts[0] in SOURCES


def source_files(root: Path = ROOT) -> list[Path]:
    """The Python files of the SOURCES packages as they are on disk (tracked or not yet)."""
    return sorted(p for name in SOURCES for p in (root / name).rglob("*.py") if "__pycache__" not in p.parts)


def write_student_copy(dest: Path, root: Path = ROOT, solved: int = 0) -> list[str]:
    """Copy the repo's tracked files to `dest`, cutting the exercises of lessons > `solved` out of the
    Python files of the SOURCES packages and out of the notebooks' outputs that show them; return the
    ids of the exercises cut."""
    dest = Path(dest).resolve()
    if dest == root or dest in root.parents:
        raise ValueError(f"refusing to write the student copy over the repo itself ({dest})")
    if dest.exists():
        shutil.rmtree(dest)
    ids = []
    for src in tracked_files(root):
        target = dest / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_source(src, root):
            text, found = cut(src.read_text(), str(src.relative_to(root)), solved)
            target.write_text(text)
            ids += [i for i in found if lesson(i) > solved]
        elif src.suffix == ".ipynb":
            target.write_text(cut_notebook(src.read_text(), str(src.relative_to(root)), solved))
        else:
            shutil.copy2(src, target)
    return ids


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the student copy of the repo (exercises cut out).")
    parser.add_argument("dest", type=Path, help="the folder to write; it is rewritten, e.g. student/")
    parser.add_argument("--solved", type=int, default=0, metavar="N",
                        help="keep the solutions of lessons 1..N (default 0: cut every exercise)")
    args = parser.parse_args()
    ids = write_student_copy(args.dest, solved=args.solved)
    kept = f" (solutions of lessons 1..{args.solved} kept)" if args.solved else ""
    print(f"wrote {args.dest} with {len(ids)} exercises{kept}: {', '.join(ids)}")
