"""The CLI under torchrun: two CPU processes (gloo), the Trainer's data parallelism, one finished run.

course/paper_profile.md tells students with several GPUs to run `torchrun --nproc_per_node N -m lab
train ...`; this runs exactly that command on CPU with a one-layer Llama, for 2 optimiser steps.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_cli_under_torchrun_two_gloo_processes(tiny_run):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found next to the interpreter"
    cache = tiny_run / "cache"
    # no --r: torchrun's own parser would take it for an abbreviation of --rdzv-*/--role/--run-path
    args = ["--profile", "offline", "--method", "bhra", "--model", str(tiny_run / "model"),
            "--data-dir", str(tiny_run / "data"), "--train-file", "ft-training_set/commonsense_170k.json",
            "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "1",
            "--cutoff-len", "256", "--warmup-steps", "0", "--logging-steps", "1", "--save-steps", "1"]
    env = {**os.environ, "BHRA_CACHE": str(cache), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lab", "train", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    runs = list((cache / "runs" / "offline").glob("bhra-*/run.json"))
    assert len(runs) == 1, runs                                  # both ranks trained the same run
    rec = json.loads(runs[0].read_text())
    assert rec["world_size"] == 2, rec["world_size"]            # one data-parallel run, not two lone ones
    assert rec["steps"] == 2 and all(0 < loss < float("inf") for _, loss in rec["losses"])
    assert sorted(p.name for p in runs[0].parent.iterdir()) == ["adapter", "run.json"]   # checkpoints gone
    # the folder is the one the single-process CLI names for the same flags
    show = subprocess.run([sys.executable, "-m", "lab", "show", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert show.returncode == 0, show.stderr[-3000:]
    assert json.loads(show.stdout)["run_dir"] == str(runs[0].parent)
