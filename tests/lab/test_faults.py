"""The harness under faults: nothing wrong is published, nothing finished is lost, every error names the fix.

Kills are real: a subprocess trains and SIGKILLs itself at a chosen point (half-way through writing a
checkpoint, or between two), and the next process resumes.
"""
import json
import os
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

import lab
from lab import finetune
from lab.cache import REPO, building
from tests.helpers import save_tiny_llama, write_data_folder

TRAIN = "ft-training_set/commonsense_170k.json"

RUNNER = """
import json, os, signal, sys, time
import lab
from lab import finetune
from transformers import TrainerCallback

model, data, cache, mode = sys.argv[1:5]
cfg = lab.RunConfig(method="lora", model=model, data_dir=data, train_file="%s", max_steps=8, batch_size=4,
                    micro_batch_size=4, save_steps=2, logging_steps=1, warmup_steps=0, cache=cache)

class At(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if mode == "kill-between" and state.global_step == 5:  # checkpoint-4 is complete, step 5 under way
            os.kill(os.getpid(), signal.SIGKILL)
    def on_step_end(self, args, state, control, **kw):
        if mode == "slow":
            time.sleep(2.0)  # long enough for a second process to start meanwhile

if mode == "kill-in-checkpoint":  # half of checkpoint-6's factors written, then killed
    real = finetune.save_file
    def save_file(tensors, path, *a, **k):
        if "checkpoint-6" in str(path):
            with open(path, "wb") as f:
                f.write(b"\\0" * 64)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(tensors, path, *a, **k)
    finetune.save_file = save_file
rec = lab.train(cfg, verbose=False, callbacks=[At()])
print(json.dumps({"pid": os.getpid(), "resumed_from": rec["resumed_from"], "steps": rec["steps"],
                  "losses": rec["losses"], "seconds": rec["seconds"]}))
""" % TRAIN


@pytest.fixture
def world(tmp_path):
    records = lab.make_commonsense(4, seed=5)
    save_tiny_llama(tmp_path / "model", records)
    write_data_folder(tmp_path / "data", records)
    return tmp_path


def _cfg(world, cache="cache", **kw):
    return lab.RunConfig(**{**dict(method="lora", model=str(world / "model"), data_dir=str(world / "data"),
                                   train_file=TRAIN, max_steps=8, batch_size=4, micro_batch_size=4, save_steps=2,
                                   logging_steps=1, warmup_steps=0, cache=str(world / cache)), **kw})


def _start(world, mode, cache="cache"):
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(world / "model"), str(world / "data"),
                             str(world / cache), mode], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "BHRA_WORKERS": "1"})


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _factors(cfg):
    return load_file(lab.run_dir(cfg) / "adapter" / "adapter.safetensors")


def _same_as_uninterrupted(world, cfg):
    clean = _cfg(world, cache="clean")
    lab.train(clean, verbose=False)
    a, b = _factors(cfg), _factors(clean)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("mode, resumes_from", [("kill-in-checkpoint", "checkpoint-4"), ("kill-between", "checkpoint-4")])
def test_a_killed_run_resumes_from_its_last_complete_checkpoint(world, mode, resumes_from):
    code, _, _ = _finish(_start(world, mode))
    assert code == -9  # it was killed, not stopped by an error
    code, out, err = _finish(_start(world, "normal"))
    assert code == 0, err[-2000:]
    rec = json.loads(out.strip().splitlines()[-1])
    assert rec["resumed_from"].endswith(resumes_from) and rec["steps"] == 8
    assert not (lab.run_dir(_cfg(world)) / "trainer").exists()
    _same_as_uninterrupted(world, _cfg(world))  # resuming gives exactly the uninterrupted run's factors


@pytest.mark.slow
def test_two_processes_on_one_run_folder_never_interleave(world):
    out = lab.run_dir(_cfg(world))
    first = _start(world, "slow")
    deadline = time.time() + 120
    while not (out / "trainer" / "checkpoint-2").exists():  # the first is training, its checkpoints appearing
        assert time.time() < deadline and first.poll() is None, first.stderr.read() if first.poll() else "too slow"
        time.sleep(0.05)
    second = _start(world, "normal")
    (c1, o1, e1), (c2, o2, e2) = _finish(first), _finish(second)
    assert c1 == 0 and c2 == 0, (e1[-2000:], e2[-2000:])
    a, b = json.loads(o1.strip().splitlines()[-1]), json.loads(o2.strip().splitlines()[-1])
    assert b["resumed_from"] is None and {**b, "pid": 0} == {**a, "pid": 0}  # it reused the finished run as is
    assert f"waiting for pid {first.pid}" in e2  # having said whom it waited for
    _same_as_uninterrupted(world, _cfg(world))


@pytest.mark.slow
def test_damaged_or_missing_files_are_never_served(world):
    cfg = _cfg(world, save_steps=0)
    lab.train(cfg, verbose=False)
    weights = lab.run_dir(cfg) / "adapter" / "adapter.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:size // 2] + b"\0" * (size - size // 2))  # same size, tensors zeroed
    for use in (lab.train, lab.load_trained):
        with pytest.raises(ValueError, match="adapter.safetensors is damaged.*--fresh"):
            use(cfg)
    weights.unlink()
    with pytest.raises(ValueError, match="adapter.safetensors is missing"):
        lab.train(cfg)
    (lab.run_dir(cfg) / "run.json").write_text('{"config": ')
    with pytest.raises(ValueError, match="run.json is damaged"):
        lab.train(cfg)


@pytest.mark.slow
def test_a_diverged_run_is_recorded_and_never_published(world):
    cfg = _cfg(world, lr=1e30, save_steps=0)
    with pytest.raises(finetune.RunDiverged, match="loss was nan"):
        lab.train(cfg, verbose=False)
    out = lab.run_dir(cfg)
    assert not (out / "run.json").exists() and not (out / "adapter").exists()
    assert "nan" in json.loads((out / finetune.DIVERGED).read_text())["reason"]
    with pytest.raises(finetune.RunDiverged, match="lower learning rate"):  # asked again: the same answer, no rerun
        lab.train(cfg, verbose=False)


def test_a_data_file_edited_in_place_names_another_run(world):
    cfg = _cfg(world)
    before = lab.run_dir(cfg)
    path = world / "data" / TRAIN
    records = json.loads(path.read_text())
    path.write_text(json.dumps(records[:-1]))
    assert lab.run_dir(cfg) != before


@pytest.mark.slow
def test_a_failing_fresh_run_keeps_the_run_it_would_replace(world, monkeypatch):
    cfg = _cfg(world, save_steps=0)
    rec = lab.train(cfg, verbose=False)

    def broken(*a, **k):
        raise RuntimeError("the training set could not be read")

    monkeypatch.setattr(finetune, "_training_set", broken)
    with pytest.raises(RuntimeError, match="could not be read"):
        lab.train(cfg, reuse=False, verbose=False)
    assert finetune.finished(lab.run_dir(cfg)) == rec  # still there, every file checked
    assert not finetune._aside(lab.run_dir(cfg)).exists()


@pytest.mark.slow
def test_factors_of_another_method_are_refused(world):
    cfg = _cfg(world, save_steps=0)
    lab.train(cfg, verbose=False)
    saved = lab.run_dir(cfg) / "adapter" / "adapter_config.json"
    saved.write_text(saved.read_text().replace('"lora"', '"hira"'))  # LoRA's factors have HiRA's shapes
    from core.bhra import load_adapter

    model, _ = lab.load_model(cfg.model)
    with pytest.raises(ValueError, match="saved as method=lora.*says hira"):
        load_adapter(model, saved.parent)


def test_evaluate_never_trains(world, capsys):
    from lab import cli

    with pytest.raises(SystemExit, match="no finished run.*python -m lab train"):
        cli.main(["evaluate", "--model", str(world / "model"), "--data-dir", str(world / "data"),
                  "--train-file", TRAIN, "--cache", str(world / "cache")])
    assert not (world / "cache" / "runs").exists() or not any((world / "cache" / "runs").rglob("run.json"))


def test_the_temporary_folders_of_dead_builders_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".artefact-{dead.stdout.strip()}-x1y2"  # what a builder killed mid-build leaves
    left.mkdir()
    with building(tmp_path / "artefact") as tmp:
        (tmp / "done").write_text("")
    assert not left.exists() and (tmp_path / "artefact" / "done").exists()
