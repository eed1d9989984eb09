"""lab.cli: `python -m lab` resumes a killed run, names the run folder that notebook 04 names, evaluates
only finished runs, and refuses a bad setting in one line that names it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, run_python


@pytest.mark.slow
def test_cli_run_killed_after_a_checkpoint_resumes_to_the_same_step_count(tiny, tmp_path):
    env = {**os.environ, "BHRA_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lab", "train", "--method", "lora", "--model", str(tiny / "model"),
           "--data-dir", str(tiny / "LLM-Adapters"), "--train-file", "ft-training_set/commonsense_170k.json",
           "--r", "8", "--max-steps", "300", "--save-steps", "5", "--batch-size", "4", "--micro-batch-size", "4"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    runs = tmp_path / "runs" / "offline"
    deadline = time.time() + 120
    while not list(runs.glob("*/trainer/checkpoint-*/complete")):  # a checkpoint counts once marked complete
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = [p for p in runs.iterdir() if p.is_dir()]  # beside it: its .lock file
    assert not (run / "run.json").exists(), "the run finished before it could be killed"
    assert not (run / "adapter").exists()
    for ckpt in (run / "trainer").glob("checkpoint-*"):  # the factors and the optimiser state, not the model
        assert (ckpt / "trainable.safetensors").exists() and not list(ckpt.glob("model*.safetensors"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rec = json.loads((run / "run.json").read_text())
    assert rec["resumed_from"] is not None and "checkpoint-" in rec["resumed_from"]
    assert rec["steps"] == 300
    assert rec["losses"][0][0] == 5 and rec["losses"][-1][0] == 300   # the log spans both parts


def _notebook_cell(path: Path, needle: str) -> str:
    import nbformat
    (cell,) = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and needle in c.source]
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["offline", "paper"])
def test_cli_and_notebook_04_use_the_same_run_folder(profile, tmp_path):
    """Notebook 04's own parameters cell, run in notebooks/, against `python -m lab show` at the root."""
    env = {"BHRA_PROFILE": profile, "BHRA_CACHE": str(tmp_path)}
    cell = _notebook_cell(REPO / "notebooks" / "04_finetune_llama.ipynb", "cfgs = lab.configs(")
    from_notebook = run_python(cell + "\nprint(lab.run_dir(cfgs['bhra']))", REPO / "notebooks", env)
    shown = subprocess.run([sys.executable, "-m", "lab", "show", "--profile", profile, "--method", "bhra"], cwd=REPO,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["run_dir"] == from_notebook
    assert from_notebook.startswith(str(tmp_path / "runs" / profile / "bhra-"))


def test_evaluate_of_an_untrained_run_names_the_train_command_and_trains_nothing(tiny, tmp_path):
    from lab.cli import main

    flags = ["--method", "lora", "--model", str(tiny / "model"), "--data-dir", str(tiny / "LLM-Adapters"),
             "--train-file", "ft-training_set/commonsense_170k.json", "--cache", str(tmp_path)]
    with pytest.raises(SystemExit, match="train it first, with the same flags: python -m lab train --method lora"):
        main(["evaluate", *flags])
    assert not (tmp_path / "runs").exists()


def test_show_with_bad_settings_names_them_in_one_line_and_prints_no_config(capsys):
    from lab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["show", "--rank", "-1", "--b", "0", "--lr", "-5"])
    assert e.value.code != 0
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    (line,) = [l for l in err.splitlines() if "error:" in l]
    assert all(s in line for s in ("r=-1", "b=0", "lr=-5.0"))


@pytest.mark.parametrize("flags, named", [(["--limit", "-1"], "limit=-1"), (["--limit", "0"], "limit=0"),
                                          (["--micro-batch-size", "0"], "micro_batch_size=0"),
                                          (["--max-steps", "0", "--epochs", "0"], "max_steps=0 and epochs=0")])
def test_the_cli_refuses_what_would_fail_later_by_name(flags, named, capsys):
    from lab.cli import config_from_args

    with pytest.raises(SystemExit) as e:
        config_from_args(["evaluate", *flags])
    assert e.value.code != 0 and named in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["model weights", "training record"])
def test_a_library_error_reaches_the_user_as_one_line_naming_the_file_and_the_fix(damage, tiny, tmp_path):
    import shutil

    from lab.cli import main

    model, data = tmp_path / "model", tmp_path / "data"
    shutil.copytree(tiny / "model", model)
    shutil.copytree(tiny / "LLM-Adapters", data)
    if damage == "model weights":  # safetensors alone says "Error while deserializing header", naming no file
        (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:1000])
        named, fix = str(model), "Copy or download the model again"
    else:
        (data / "ft-training_set" / "commonsense_170k.json").write_text('[{"instruction": 1}]')
        named, fix = "commonsense_170k.json", "record 0, field 'instruction'"
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "lora", "--model", str(model), "--data-dir", str(data), "--max-steps", "1",
              "--train-file", "ft-training_set/commonsense_170k.json", "--cache", str(tmp_path / "cache")])
    assert str(e.value.code).startswith("error: ") and named in e.value.code and fix in e.value.code
    assert not list((tmp_path / "cache").glob("runs/*/*/run.json"))
