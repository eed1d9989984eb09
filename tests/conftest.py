"""Fixtures and markers for the whole suite; the helpers themselves live in tests/helpers.py."""

import pytest

import lab.machine  # noqa: F401  before torch computes: the tests run on the harness's numerical path
import torch  # noqa: E402

from tests.helpers import save_tiny_llama, write_data_folder


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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A one-layer Llama (widths divisible by 8 and 32) and a data folder in LLM-Adapters' layout, with a few
    test records per task: built once in a temporary folder, so the harness's training tests run in seconds and
    never touch the offline base model in .cache/; the tests read it and never write into it."""
    import lab

    root = tmp_path_factory.mktemp("tiny")
    records = lab.make_commonsense(12, seed=5)
    save_tiny_llama(root / "model", records)
    write_data_folder(root / "LLM-Adapters", records, test_sets=True)
    return root


@pytest.fixture
def tiny_run(tmp_path):
    """A one-layer Llama saved with save_pretrained, and a data folder in LLM-Adapters' layout (training set
    only), in the test's own folder."""
    import lab

    records = lab.make_commonsense(4, seed=5)
    save_tiny_llama(tmp_path / "model", records)
    write_data_folder(tmp_path / "data", records)
    return tmp_path
