"""Write the student copy of the repo: every marked solution region becomes a stub.

In the reference code a solution region is marked by two comment lines:

    # exercise 2.3: <hint shown to the student>
    ...solution lines...
    # end exercise

`python course/exercises.py student/` copies the tracked files of the repo into `student/` and
replaces each region by `raise NotImplementedError("Exercise 2.3: <hint>")` at the marker's
indentation. Exercise N.k belongs to lesson N; its tests carry `@pytest.mark.exerciseN`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"^(?P<indent>\s*)# exercise (?P<id>\d+\.\d+): (?P<hint>.+?)\s*$")
END = re.compile(r"^\s*# end exercise\s*$")


def cut(text: str, where: str = "<text>") -> tuple[str, list[str]]:
    """Replace every marked region of `text` by a stub; return the new text and the exercise ids."""
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
            message = f"Exercise {region['id']}: {region['hint']}"
            out.append(f"{region['indent']}raise NotImplementedError({message!r})\n")
            region = None
    if region is not None:
        raise ValueError(f"{where}: exercise {region['id']} has no '# end exercise' line")
    return "".join(out), ids


def tracked_files(root: Path) -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return [root / name for name in listed.splitlines() if (root / name).is_file()]


def write_student_copy(dest: Path, root: Path = ROOT) -> list[str]:
    """Copy the repo's tracked files to `dest`, cutting the exercises out of the Python files."""
    dest = Path(dest).resolve()
    if dest == root or dest in root.parents:
        raise ValueError(f"refusing to write the student copy over the repo itself ({dest})")
    if dest.exists():
        shutil.rmtree(dest)
    ids = []
    for src in tracked_files(root):
        target = dest / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".py" and src.parent.name == "core":
            text, found = cut(src.read_text(), str(src.relative_to(root)))
            target.write_text(text)
            ids += found
        else:
            shutil.copy2(src, target)
    return ids


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python course/exercises.py DEST   (DEST is rewritten, e.g. student/)")
    ids = write_student_copy(Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]} with {len(ids)} exercises: {', '.join(ids)}")
