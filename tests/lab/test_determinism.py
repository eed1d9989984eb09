"""Determinism of the offline profile, checked across processes.

What makes notebooks 04-07 reproducible: the offline base model and every fine-tuning run must come out
bit-identical whichever process builds them first. Each check runs the work twice in fresh Python
processes (fresh interpreters: no state shared through imports, caches or RNGs) and compares exactly:

* the base model, built in two caches by a process at 1 torch thread and by one at 2 threads: the same
  tokenizer file and the same weights, bit for bit (lab.offline pins the build to one thread);
* one short fine-tuning run, twice, by processes at 1 and 2 torch threads: the same loss history, exactly
  (lab.finetune pins offline training to one thread), and the same adapter tensors;
* the synthetic data folder, written twice: the same bytes (no set or dict ordering leaks into the files);
* a run whose process builds the base model on the way (a fresh clone's first run) and the same run where
  the base was already built: the same loss history (building draws random numbers; the adapters must not);
* the committed default base (lab/offline_base/): what a fresh cache is given, refused once its recipe is
  stale, and equal byte for byte to a rebuild from its recipe.

A small BaseSpec keeps the builds short (a few seconds each); the recipe is the real one.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, SMALL_BASE

BUILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from lab.offline import BaseSpec, base_model_path
path = base_model_path(BaseSpec(**json.loads(sys.argv[2])), verbose=False)
print(json.dumps({"path": str(path), "threads": torch.get_num_threads()}))
"""

TRAIN = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
import lab
from lab.offline import BaseSpec, base_model_path, offline_data
lab.quiet()
spec = BaseSpec(**json.loads(sys.argv[2]))
base = base_model_path(spec, verbose=False)
data = offline_data(n_train_per_task=8, n_test_per_task=2, n_math_train=8, n_math_test=2, seed=0, base=spec)
cfg = lab.preset("offline", method=sys.argv[3], model=str(base), data_dir=str(data), max_steps=6, batch_size=8,
                 micro_batch_size=8, warmup_steps=1, logging_steps=1, n_train=48)
rec = lab.train(cfg, verbose=False)
print(json.dumps({"losses": rec["losses"], "run_dir": rec["run_dir"], "data": str(data)}))
"""

# the small spec itself as the run's model: train() meets no base and builds it on the way
TRAIN_COLD = """
import json, sys, torch
torch.set_num_threads(1)
import lab
from lab.offline import BaseSpec, offline_data
lab.quiet()
spec = BaseSpec(**json.loads(sys.argv[2]))
data = offline_data(n_train_per_task=8, n_test_per_task=2, n_math_train=8, n_math_test=2, seed=0, base=spec)
cfg = lab.preset("offline", method=sys.argv[3], model=spec, data_dir=str(data), max_steps=6, batch_size=8,
                 micro_batch_size=8, warmup_steps=1, logging_steps=1, n_train=48)
assert not (lab.cache.root() / "base").exists()
rec = lab.train(cfg, verbose=False)
print(json.dumps({"losses": rec["losses"], "run_dir": rec["run_dir"], "data": str(data)}))
"""


def _run(script: str, cache: Path, *args) -> dict:
    env = {**os.environ, "BHRA_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the script chooses its own thread count
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_base_model_is_identical_across_processes_and_thread_counts(tmp_path):
    spec = json.dumps(SMALL_BASE)
    one = _run(BUILD, tmp_path / "a", 1, spec)
    two = _run(BUILD, tmp_path / "b", 2, spec)
    assert (one["threads"], two["threads"]) == (1, 2)
    a, b = Path(one["path"]), Path(two["path"])
    assert a != b and a.name == b.name  # two caches, one recipe hash
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa, wb = _tensors(a), _tensors(b)
    assert len(wa) > 0 and _same_tensors(wa, wb)


@pytest.mark.slow
def test_fine_tuning_is_identical_across_processes_and_thread_counts(tmp_path):
    spec = json.dumps(SMALL_BASE)
    for method in ("lora", "bhra"):
        one = _run(TRAIN, tmp_path / "a", 1, spec, method)
        two = _run(TRAIN, tmp_path / "b", 2, spec, method)
        assert len(one["losses"]) == 6
        assert one["losses"] == two["losses"], method  # exact: floats printed by json round-trip
        assert _same_tensors(_tensors(Path(one["run_dir"]) / "adapter"), _tensors(Path(two["run_dir"]) / "adapter"))
    # the data folders of the two caches hold the same bytes
    da, db = Path(one["data"]), Path(two["data"])
    files = sorted(p.relative_to(da) for p in da.rglob("*.json"))
    assert files and files == sorted(p.relative_to(db) for p in db.rglob("*.json"))
    assert all((da / f).read_bytes() == (db / f).read_bytes() for f in files)


@pytest.mark.slow
def test_a_run_that_builds_the_base_on_the_way_equals_one_that_found_it_built(tmp_path):
    spec = json.dumps(SMALL_BASE)
    cold = _run(TRAIN_COLD, tmp_path / "a", 1, spec, "lora")
    warm = _run(TRAIN, tmp_path / "b", 1, spec, "lora")
    assert len(cold["losses"]) == 6
    assert cold["losses"] == warm["losses"]
    assert _same_tensors(_tensors(Path(cold["run_dir"]) / "adapter"), _tensors(Path(warm["run_dir"]) / "adapter"))


# The committed base model (lab/offline_base/): served by default, refused when its recipe is stale, and
# reproduced byte for byte by a rebuild from its recipe (what `make base` runs).
REBUILD = """
import sys
from pathlib import Path
import lab
from lab.offline import BaseSpec, _build
_build(BaseSpec(), Path(sys.argv[1]), verbose=False)
print("{}")
"""


def test_the_default_base_is_the_committed_one():
    from lab.offline import SHIPPED, base_model_path

    served = base_model_path(verbose=False)
    files = sorted(f.name for f in SHIPPED.iterdir())
    assert "model.safetensors" in files and "base_spec.json" in files
    assert all((served / f).read_bytes() == (SHIPPED / f).read_bytes() for f in files)


def test_a_stale_committed_base_is_refused_with_the_fix():
    import dataclasses

    from lab.offline import BaseSpec, base_model_path

    edited = dataclasses.replace(BaseSpec(), recipe="0" * 12)  # what an edit of a generator in lab/offline.py gives
    with pytest.raises(RuntimeError, match="make base"):
        base_model_path(edited, verbose=False)


@pytest.mark.slow
def test_rebuilding_the_committed_base_gives_the_same_bytes(tmp_path):
    from lab.offline import SHIPPED

    _run(REBUILD, tmp_path / "cache", tmp_path / "rebuilt")
    names = sorted(f.name for f in SHIPPED.iterdir())
    assert names == sorted(f.name for f in (tmp_path / "rebuilt").iterdir())
    differ = [n for n in names if (SHIPPED / n).read_bytes() != (tmp_path / "rebuilt" / n).read_bytes()]
    assert not differ, f"a rebuild of the committed base differs in {differ}: run `make base` and commit it"
