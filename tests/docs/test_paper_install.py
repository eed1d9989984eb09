"""The paper page's install step: the torch it installs is the one requirements.txt pins, from wheel
indexes that build that version (PyTorch 2.12 and later: CUDA 12.6, 13.0 and 13.2, and the CPU build)."""
import re

from tests.helpers import REPO

PAGE = (REPO / "course" / "paper_profile.md").read_text()
INDEXES = {"cu126", "cu130", "cu132", "cpu"}  # download.pytorch.org/whl/<index> of the torch 2.12+ release matrix


def _pinned_torch() -> str:
    (pin,) = re.findall(r"^torch==([\d.]+)$", (REPO / "requirements.txt").read_text(), flags=re.M)
    return pin


def test_the_page_installs_the_pinned_torch_from_indexes_that_build_it():
    installs = re.findall(r"pip install (torch\S*)(.*)", PAGE)
    assert installs, "the page no longer installs torch"
    for spec, rest in installs:
        assert spec == f"torch=={_pinned_torch()}", spec
        for index in re.findall(r"download\.pytorch\.org/whl/(\w+)", rest):
            assert index in INDEXES, f"no torch {_pinned_torch()} wheels on the {index} index"
    assert any("--index-url" not in rest for _, rest in installs)  # PyPI's own CUDA 13.0 wheel first


def test_the_page_says_which_python_and_how_to_read_a_cpu_build():
    assert "Python ≥ 3.11" in PAGE and "python3.11 -m venv .venv" in PAGE
    assert "torch.version.cuda" in PAGE and "nvidia-smi" in PAGE
