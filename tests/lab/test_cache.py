"""lab.cache: the path rule (a relative path is relative to the repository, wherever the process starts)."""

import pytest

import lab
from tests.helpers import REPO, run_python


@pytest.mark.slow
def test_relative_paths_resolve_the_same_from_notebooks_and_the_root(tmp_path):
    code = ("import lab; from lab import cache, finetune; "
            "print([str(lab.resolve('data/x')), str(cache.root()), str(lab.data_dir(lab.preset('paper'))), "
            "finetune.model_path('tests')])")
    env = {"BHRA_CACHE": "cache-relative"}
    seen = {where: run_python(code, where, env) for where in (REPO, REPO / "notebooks", tmp_path)}
    assert len(set(seen.values())) == 1, seen
    assert f"'{REPO / 'data' / 'x'}'" in seen[REPO] and f"'{REPO / 'cache-relative'}'" in seen[REPO]
    assert f"'{REPO / 'tests'}'" in seen[REPO]                     # a folder under the root is a folder ...
    assert lab.finetune.model_path("meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"  # ... a hub id is not
