"""Text twins of the notebooks, so that a change to a notebook shows as a readable diff.

Every `notebooks/NN_name.ipynb` has a twin `notebooks/py/NN_name.py` in jupytext's percent format:
each cell is a `# %%` block (markdown cells as `# %% [markdown]` comments), with no outputs and no
metadata. The notebook stays the source of truth (it carries the committed outputs); the twin is
written from it and only for reading and reviewing.

    python notebooks/twins.py            # (re)write every twin, remove twins whose notebook is gone
    python notebooks/twins.py --check    # write nothing; exit 1 naming each twin that is out of sync

`tests/docs/test_twins.py` runs the check, so a notebook changed without its twin fails the suite.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

NOTEBOOKS = Path(__file__).resolve().parent
TWINS = NOTEBOOKS / "py"
FORMAT = "py:percent"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def twin_path(notebook: Path) -> Path:
    return TWINS / f"{notebook.stem}.py"


def twin_text(notebook: Path) -> str:
    """The percent-format text of a notebook's cells: sources only, no outputs, no metadata header."""
    nb = jupytext.read(notebook)
    # drop the notebook and cell metadata: the twin then depends only on the cells' sources
    # (not on the kernel, the jupytext version or nbval's cell ids), so it changes exactly when they do
    nb.metadata = {"jupytext": {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}}
    return jupytext.writes(nb, fmt=FORMAT)


def out_of_sync() -> list[str]:
    """What differs between the notebooks and their twins, one line per problem (empty: in sync)."""
    problems = []
    for nb in notebooks():
        twin = twin_path(nb)
        if not twin.is_file():
            problems.append(f"{twin.relative_to(NOTEBOOKS.parent)} is missing")
        elif twin.read_text() != twin_text(nb):
            problems.append(f"{twin.relative_to(NOTEBOOKS.parent)} differs from {nb.relative_to(NOTEBOOKS.parent)}")
    expected = {twin_path(nb) for nb in notebooks()}
    problems += [f"{t.relative_to(NOTEBOOKS.parent)} has no notebook" for t in sorted(TWINS.glob("*.py")) if t not in expected]
    return problems


def write_all() -> list[Path]:
    TWINS.mkdir(exist_ok=True)
    written = []
    for nb in notebooks():
        twin, text = twin_path(nb), twin_text(nb)
        if not twin.is_file() or twin.read_text() != text:
            twin.write_text(text)
            written.append(twin)
    expected = {twin_path(nb) for nb in notebooks()}
    for orphan in TWINS.glob("*.py"):
        if orphan not in expected:
            orphan.unlink()
            written.append(orphan)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write (or check) the percent-format twins of the notebooks.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a twin is out of sync")
    args = parser.parse_args()
    if args.check:
        problems = out_of_sync()
        for p in problems:
            print(p)
        if problems:
            print("run: python notebooks/twins.py")
        sys.exit(1 if problems else 0)
    changed = write_all()
    print(f"{len(changed)} twin(s) written or removed" + "".join(f"\n  {p.relative_to(NOTEBOOKS.parent)}" for p in changed))
