"""nbval must fail CI when a notebook raises or a checked output changes.

The opening cells of the cheapest notebook (01: imports, the Kronecker proof and its
`# NBVAL_CHECK_OUTPUT` cell, the rank table) are copied into a temporary folder three times:
unchanged, which must pass; with a cell inserted that raises, which must fail; and with the stored
output of a checked cell altered, which must fail. Each copy runs through
`pytest --nbval-lax --nbval-current-env` in a subprocess, exactly as `make test` runs the notebooks.
"""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_hadamard_rank_inequality.ipynb"
SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"
CHECK = "# NBVAL_CHECK_OUTPUT"



pytestmark = pytest.mark.slow  # each test runs nbval on a notebook copy

def opening(n_checked=2):
    """The notebook's cells up to and including its n-th checked cell (a few seconds to run)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    checked = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(CHECK)]
    assert len(checked) >= n_checked, "notebook 01 should have checked cells"
    nb.cells = nb.cells[: checked[n_checked - 1] + 1]
    return nb, checked[:n_checked]


def run_nbval(nb, path: Path) -> subprocess.CompletedProcess:
    nbformat.write(nb, path)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE),
           str(path), "-p", "no:cacheprovider", "-q", "--rootdir", str(path.parent)]
    return subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, timeout=600)


def test_intact_copy_passes(tmp_path):
    nb, _ = opening()
    result = run_nbval(nb, tmp_path / "intact.ipynb")
    assert result.returncode == 0, f"the unbroken copy should pass:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"


def test_raising_cell_fails(tmp_path):
    nb, _ = opening()
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    cell = nbformat.v4.new_code_cell('raise RuntimeError("deliberately broken notebook")')
    cell["id"] = "deliberately-broken"
    nb.cells.insert(first_code + 1, cell)
    result = run_nbval(nb, tmp_path / "broken.ipynb")
    assert result.returncode != 0, "a notebook cell that raises must fail nbval"
    assert "deliberately broken notebook" in result.stdout + result.stderr


def test_changed_checked_output_fails(tmp_path):
    nb, checked = opening()
    outputs = nb.cells[checked[0]].outputs
    stream = next(o for o in outputs if o.output_type == "stream")
    stream.text = stream.text.replace("6", "7")  # a different rank than the one the cell computes
    result = run_nbval(nb, tmp_path / "changed.ipynb")
    assert result.returncode != 0, "a changed output in a # NBVAL_CHECK_OUTPUT cell must fail nbval"
