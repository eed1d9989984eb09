"""nbval must fail CI when a notebook raises, a checked output changes, or a result changes.

The opening cells of the cheapest notebook (01: imports, the Kronecker proof and its
`# NBVAL_CHECK_OUTPUT` cell, the rank table) are copied into a temporary folder three times:
unchanged, which must pass; with a cell inserted that raises, which must fail; and with the stored
output of a checked cell altered, which must fail. Each copy runs through
`pytest --nbval-lax --nbval-current-env` in a subprocess.

A real change of a result: notebook 04's cells up to its one optimiser step on the offline base,
run in `make test`'s comparing mode (`--nbval`), pass as committed and fail when BHRA's learning rate is
10 % higher, at the cell that prints the batch loss the step reached.
"""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.helpers import REPO as ROOT
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


def run_nbval(nb, path: Path, mode: str = "--nbval-lax") -> subprocess.CompletedProcess:
    nbformat.write(nb, path)
    cmd = [sys.executable, "-m", "pytest", mode, "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE),
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


def one_step_of_04():
    """Notebook 04 up to the cell that prints the loss after its one optimiser step (base model, data,
    one adapted layer, the step): a result of training, in half a minute."""
    nb = nbformat.read(ROOT / "notebooks" / "04_finetune_llama.ipynb", as_version=4)
    stop = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and 'print(f"batch loss' in c.source)
    nb.cells = nb.cells[: stop + 1]
    return nb, stop


def test_changed_learning_rate_fails(tmp_path):
    nb, _ = one_step_of_04()
    intact = run_nbval(nb, tmp_path / "intact04.ipynb", mode="--nbval")
    assert intact.returncode == 0, f"notebook 04's opening should pass as committed:\n{intact.stdout[-3000:]}"
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    cell = nbformat.v4.new_code_cell('lab.LEARNING_RATES["bhra"]["offline"] *= 1.1  # a real change of the recipe')
    cell["id"] = "changed-learning-rate"
    nb.cells.insert(first_code + 1, cell)
    changed = run_nbval(nb, tmp_path / "changed04.ipynb", mode="--nbval")
    assert changed.returncode != 0, "a 10 % higher learning rate must fail the comparison"
    assert "batch loss" in changed.stdout, "the changed loss itself should be reported, not only the printed rate"
