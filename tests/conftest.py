"""Fixtures and markers for the core tests; the helpers themselves live in tests/core_helpers.py."""

import pytest

import lab.machine  # noqa: F401  before torch computes: the tests run on the harness's numerical path
import torch  # noqa: E402

from core_helpers import make_llama, make_mlp


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: compares core.bhra with HF PEFT (needs peft installed)")


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """The tiny models gain nothing from threads, and on a busy 2-core machine a threaded LAPACK call
    (ABBA's SVD init) can take 500× longer than on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def llama():
    return make_llama()
