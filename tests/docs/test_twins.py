"""Every notebook has a text twin in notebooks/py/ (jupytext percent format) that matches its cells.

The twins make a notebook change reviewable as a plain diff. A notebook edited without its twin
fails here; `python notebooks/twins.py` (or `make twins`) rewrites them.
"""

import sys

import pytest

from tests.helpers import REPO as ROOT
sys.path.insert(0, str(ROOT / "notebooks"))
twins = pytest.importorskip("twins", reason="notebooks/twins.py needs jupytext (requirements.txt)")

NOTEBOOKS = twins.notebooks()


def test_there_are_notebooks_to_twin():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_twin_matches_its_notebook(notebook):
    twin = twins.twin_path(notebook)
    assert twin.is_file(), f"{twin.relative_to(ROOT)} is missing: run `python notebooks/twins.py` (or `make twins`)"
    expected = twins.twin_text(notebook)
    if twin.read_text() != expected:
        got, want = twin.read_text().splitlines(), expected.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{twin.relative_to(ROOT)} is out of sync with {notebook.relative_to(ROOT)} "
                    f"(first difference at line {first + 1}): run `python notebooks/twins.py` (or `make twins`) and commit both")


def test_no_twin_without_a_notebook():
    orphans = [p.name for p in sorted(twins.TWINS.glob("*.py")) if p.with_suffix(".ipynb").name not in {n.name for n in NOTEBOOKS}]
    assert not orphans, f"twins without a notebook: {orphans}; run `python notebooks/twins.py` to remove them"


def test_the_twin_holds_every_cell_source_and_no_output():
    notebook = NOTEBOOKS[0]
    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    text = twins.twin_text(notebook)
    code = [c.source for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert text.count("# %%") == len(nb.cells)
    assert all(src.splitlines()[0] in text for src in code)
    assert "image/png" not in text and "execution_count" not in text
