"""Write the student copy of the repo: every marked solution region becomes a stub.

In the reference code a solution region is marked by two comment lines:

    # exercise 2.3: <hint shown to the student>
    ...solution lines...
    # end exercise

`python course/exercises.py student/` copies the tracked files of the repo into `student/` and
replaces each region by `raise NotImplementedError("Exercise 2.3: <hint>")` at the marker's
indentation. Exercise N.k belongs to lesson N; its tests carry `@pytest.mark.exerciseN`.

`python course/exercises.py student/ --solved 2` keeps the solutions of lessons 1 and 2 (a copy as
a student has it after finishing lesson 2: notebooks 01 and 02 run to the end in it) and cuts the
rest. The marked regions live in the Python packages named in SOURCES (the method and the harness).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("core", "lab")  # the packages whose Python files carry exercise regions
BEGIN = re.compile(r"^(?P<indent>\s*)# exercise (?P<id>\d+\.\d+): (?P<hint>.+?)\s*$")
END = re.compile(r"^\s*# end exercise\s*$")


def lesson(exercise_id: str) -> int:
    """'2.3' -> 2: the lesson an exercise belongs to."""
    return int(exercise_id.split(".")[0])


def cut(text: str, where: str = "<text>", solved: int = 0) -> tuple[str, list[str]]:
    """Replace every marked region of `text` by a stub; return the new text and the exercise ids.

    Regions of lessons <= `solved` keep their solution (without the marker lines); the ids returned
    are those of every region found, stubbed or not.
    """
    out, ids, region = [], [], None
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if region is None:
            if match := BEGIN.match(line):
                region = match
                ids.append(match["id"])
            else:
                out.append(line)
        elif BEGIN.match(line):
            raise ValueError(f"{where}:{lineno}: exercise {region['id']} is not closed before the next one opens")
        elif END.match(line):
            if lesson(region["id"]) > solved:
                message = f"Exercise {region['id']}: {region['hint']}"
                out.append(f"{region['indent']}raise NotImplementedError({message!r})\n")
            region = None
        elif lesson(region["id"]) <= solved:
            out.append(line)  # a solved lesson: the solution stays
    if region is not None:
        raise ValueError(f"{where}: exercise {region['id']} has no '# end exercise' line")
    return "".join(out), ids


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
    Python files of the SOURCES packages; return the ids of the exercises cut."""
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
