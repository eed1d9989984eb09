"""lab.finetune: training, resuming, merged evaluation and reloading, and what names a run folder."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import lab
from lab.config import LLM_ADAPTERS_TARGETS
from tests.helpers import REPO


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


def test_missing_model_is_a_clear_error(tmp_path):
    """A path to no folder is named as such (not sent to the hub as an id, whose validation error names nothing)."""
    with pytest.raises(FileNotFoundError, match="no such folder"):
        lab.load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        lab.run_dir(lab.preset("offline", model=str(tmp_path / "no-such-model")))


@pytest.mark.slow
def test_paper_shaped_config_runs_the_same_harness(tiny, tmp_path, single_thread):
    """The paper profile with only model, data folder, step count and CPU-friendly batch changed."""
    paper = lab.preset("paper")
    assert (paper.r, paper.b, paper.cutoff_len, paper.targets) == (32, 8, 256, LLM_ADAPTERS_TARGETS)
    cfg = lab.preset("paper", method="bhra", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                     max_steps=2, micro_batch_size=2, batch_size=4, warmup_steps=0, bf16=False, save_steps=1,
                     num_beams=1, max_new_tokens=4, progress=False, cache=str(tmp_path))
    rec = lab.train(cfg, verbose=False)
    assert rec["steps"] == 2 and rec["config"]["r"] == 32 and rec["config"]["b"] == 8
    out = lab.run_dir(cfg)
    assert out.parent == tmp_path / "runs" / "paper"
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "run.json").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["b"] == 8
    assert lab.train(cfg) == rec                                    # a finished run is reused
    _, tests = lab.load_commonsense(cfg.data_dir, train_file=cfg.train_file, split="test")
    acc = lab.evaluate_run(cfg, tests, limit=2)                      # merged, with the merged==unmerged check
    assert set(acc) == set(lab.COMMONSENSE_TASKS) | {"average"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


@pytest.mark.slow
def test_merged_model_reloads_with_plain_transformers(tiny, tmp_path, single_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.bhra import adapted_layers

    cfg = lab.RunConfig(method="lora", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", r=8, max_steps=3, batch_size=4,
                        micro_batch_size=4, lr=5e-2, cache=str(tmp_path))
    lab.train(cfg, verbose=False)
    model, tok = lab.load_trained(cfg)
    probe = lab.make_commonsense(1, seed=9)
    with torch.no_grad():                      # the trained adapter must change the model
        for _, layer in adapted_layers(model):
            assert layer.delta_weight().abs().max() > 0
    same, texts = lab.merged_equals_unmerged(model, tok, probe, max_new_tokens=6)
    assert same
    folder = lab.save_merged(model, tok, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert not adapted_layers(plain)
    assert lab.generate(plain, AutoTokenizer.from_pretrained(folder), probe, max_new_tokens=6) == texts


@pytest.mark.slow
def test_fresh_starts_from_step_zero(tiny, tmp_path, single_thread):
    cfg = lab.RunConfig(method="lora", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", max_steps=3, batch_size=4,
                        micro_batch_size=4, save_steps=1, logging_steps=1, cache=str(tmp_path))
    first = lab.train(cfg, verbose=False)
    again = lab.train(cfg, reuse=False, verbose=False)
    assert again["resumed_from"] is None and again["steps"] == 3
    assert [s for s, _ in again["losses"]] == [1, 2, 3]
    assert again["losses"] == first["losses"]                        # the same run, from scratch


@pytest.mark.slow
def test_the_ablation_trains_saves_and_reloads_as_itself(tiny, tmp_path, single_thread):
    from core.bhra import LAYERS, adapted_layers

    kw = dict(model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"), train_file="ft-training_set/commonsense_170k.json",
              max_steps=2, batch_size=4, micro_batch_size=4, cache=str(tmp_path))
    ablation, bhra = (lab.RunConfig(method=m, **kw) for m in ("bhra_blocknorm", "bhra"))
    assert lab.run_dir(ablation) != lab.run_dir(bhra)
    lab.train(ablation, verbose=False)
    saved = json.loads((lab.run_dir(ablation) / "adapter" / "adapter_config.json").read_text())
    assert saved["method"] == "bhra_blocknorm"
    model, _ = lab.load_trained(ablation)
    kinds = {type(layer) for _, layer in adapted_layers(model)}
    assert kinds == {LAYERS["bhra_blocknorm"]}


@pytest.mark.slow
def test_a_finished_run_keeps_only_the_factors(tiny, tmp_path, single_thread):
    cfg = lab.RunConfig(method="bhra", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", max_steps=2, batch_size=4,
                        micro_batch_size=4, save_steps=1, cache=str(tmp_path))
    rec = lab.train(cfg, verbose=False)
    out = lab.run_dir(cfg)
    factors = rec["trainable"] * 4                                   # float32 bytes
    files = [f for f in out.rglob("*") if f.is_file()]
    assert {f.relative_to(out).parts[0] for f in files} == {"adapter", "run.json"}
    assert max(f.stat().st_size for f in files) <= factors + 64 * 1024, {str(f): f.stat().st_size for f in files}
    model_bytes = sum(f.stat().st_size for f in (tiny / "model").glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) < model_bytes / 4


# ---------------------------------------------------------------------------------------------
# Run identity: what a run folder's name depends on
# ---------------------------------------------------------------------------------------------


def test_run_folder_follows_the_learning_rate_used():
    cfg = lab.RunConfig(method="bhra")
    assert lab.identity(cfg)["learning_rate"] == lab.LEARNING_RATES["bhra"]["offline"]  # the table's rate is the key
    other = lab.run_dir(dataclasses.replace(cfg, lr=2 * cfg.learning_rate))
    assert other != lab.run_dir(cfg) and other.parent == lab.run_dir(cfg).parent  # a new rate is a new run


def test_a_change_of_base_model_changes_the_run_folder(tiny, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny / "model", other)
    cfg = lab.RunConfig(method="bhra", model=str(tiny / "model"))
    moved = lab.run_dir(lab.RunConfig(method="bhra", model=str(other)))
    assert moved != lab.run_dir(cfg)                                 # another folder
    conf = json.loads((other / "config.json").read_text())
    before = lab.run_dir(lab.RunConfig(method="bhra", model=str(other)))
    (other / "config.json").write_text(json.dumps({**conf, "rms_norm_eps": 1e-5}))
    assert lab.run_dir(lab.RunConfig(method="bhra", model=str(other))) != before   # same folder, new config


def test_two_runs_that_differ_only_in_the_base_model_get_two_run_folders(tmp_path):
    """The base model is a field of the run: another offline recipe is another run, with no patching."""
    default, other = lab.BaseSpec(), lab.BaseSpec(pretrain_steps=lab.BaseSpec().pretrain_steps + 1)
    runs = [lab.preset("offline", method="bhra", model=m, cache=str(tmp_path)) for m in ("offline", default, other)]
    assert runs[0] == runs[1]                                        # the default base has one spelling
    assert lab.run_dir(runs[0]) == lab.run_dir(runs[1]) != lab.run_dir(runs[2])
    assert lab.identity(runs[2])["base"] == {"offline": dataclasses.asdict(other)}


def test_the_synthetic_data_is_part_of_a_run_identity(tmp_path):
    """The synthetic folder's name (which hashes its recipe and sizes) is in the key; a folder by its path."""
    cfg = lab.RunConfig(method="lora", cache=str(tmp_path))
    assert lab.identity(cfg)["data"] == lab.data_dir(cfg).name
    resized = lab.offline_data(n_test_per_task=299, cache=tmp_path)
    assert resized.name != lab.data_dir(cfg).name
    assert lab.run_dir(dataclasses.replace(cfg, data_dir=str(resized))) != lab.run_dir(cfg)


# A hub model whose files reach the hub cache during the run (the first download): the fake download below
# writes the tiny model into the cache's layout as the hub client would, and the process loads it offline.
FIRST_DOWNLOAD = """
import json, shutil, sys
from pathlib import Path
import huggingface_hub
import lab

hub, tiny, cache = map(Path, sys.argv[1:4])

def download(repo_id, filename, **kw):  # every file of the model at once, as a first snapshot download
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tiny / "model", repo / "snapshots" / ("0" * 40), dirs_exist_ok=True)
    return str(repo / "snapshots" / ("0" * 40) / filename)

huggingface_hub.hf_hub_download = download
cfg = lab.RunConfig(method="lora", model="org/tiny-llama", data_dir=str(tiny / "LLM-Adapters"),
                    train_file="ft-training_set/commonsense_170k.json", max_steps=2, batch_size=4,
                    micro_batch_size=4, cache=str(cache))
before = lab.model_identity(cfg.model)["config"]
rec = lab.train(cfg, verbose=False)
model, _ = lab.load_trained(cfg)  # found where train() put it
print(json.dumps({"before": before, "after": lab.model_identity(cfg.model)["config"], "trained_in": rec["run_dir"],
                  "run_dir": str(lab.run_dir(cfg))}))
"""


@pytest.mark.slow
def test_a_hub_model_names_the_same_run_folder_before_and_after_its_first_download(tiny, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", FIRST_DOWNLOAD, str(tmp_path / "hub"), str(tiny), str(tmp_path / "c")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] is None and out["after"] is not None       # the config arrived during the run
    assert out["trained_in"] == out["run_dir"]                       # and the run is found where it was trained


def test_truncated_share_counts_the_records_cut_at_the_cutoff():
    import datasets

    from lab.finetune import truncated_share

    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4], [1, 2, 9], [5, 6, 7, 8]]})
    assert truncated_share(ds, 4) == 2 / 3 and truncated_share(ds, 5) == 0.0
