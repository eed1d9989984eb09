"""One numerical path on every x86 machine (lab/machine.py), checked by simulating other machines.

A machine's vendor shows in which code its kernels pick: ATen by `ATEN_CPU_CAPABILITY`'s default (the
best ISA the CPU has), MKL by its branch. Each check below starts fresh processes that would, left alone,
compute on another path (ATen's scalar kernels, MKL's AVX2 branch, AVX-512), builds a small offline
base model in each, and compares the weights' hash:

* with lab's pins, every simulated machine gives the same weights (an AMD machine's MKL takes no branch but
  AUTO and COMPATIBLE, so COMPATIBLE is the pinned one);
* without them (BHRA_NATIVE_NUMERICS=1), the same simulations give different weights: the check can see
  a difference of path, so the first check is not equal by accident;
* a process in which torch computed before lab was imported is refused with an error that names the fix.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import machine
from tests.helpers import REPO, SMALL_BASE

BUILD = """
import hashlib, json, sys
import lab
from lab.offline import BaseSpec, base_model_path
path = base_model_path(BaseSpec(**json.loads(sys.argv[1])), verbose=False)
print(json.dumps({"weights": hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest(),
                  "machine": lab.machine.machine()}))
"""
# what another machine's libraries would choose by themselves, simulated on this one
OTHER_MACHINES = {
    "as started": {},
    "ATen scalar kernels": {"ATEN_CPU_CAPABILITY": "default"},
    "ATen AVX-512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "MKL AVX2 branch": {"MKL_CBWR": "AVX2"},
    "MKL AVX-512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}  # an AVX2-only machine, unpinned

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not machine.applies(), reason="the pins are for x86 with AVX2")]


def build(tmp_path: Path, name: str, env: dict) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*machine.PINS, machine.OPT_OUT)}
    cache = tmp_path / name.replace(" ", "-")
    out = subprocess.run([sys.executable, "-c", BUILD, json.dumps(SMALL_BASE)], cwd=REPO, capture_output=True, text=True,
                         env={**clean, **env, "BHRA_CACHE": str(cache)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pinned_weights_are_the_same_whatever_the_machine_would_choose(tmp_path):
    runs = {name: build(tmp_path, name, env) for name, env in OTHER_MACHINES.items()}
    assert all(r["machine"]["isa"] == machine.PINNED_ISA for r in runs.values()), {n: r["machine"] for n, r in runs.items()}
    assert all(r["machine"]["mkl_branch"] in (None, machine.PINNED_MKL) for r in runs.values()), {n: r["machine"] for n, r in runs.items()}
    assert all(r["machine"]["pins"] == machine.PINS for r in runs.values())
    hashes = {name: r["weights"][:16] for name, r in runs.items()}
    assert len(set(hashes.values())) == 1, f"the pins did not give one path: {hashes}"


def test_unpinned_simulations_differ(tmp_path):
    native = {machine.OPT_OUT: "1"}
    runs = {"ATen scalar kernels": build(tmp_path, "scalar", {**OTHER_MACHINES["ATen scalar kernels"], **native}),
            "MKL compatible branch": build(tmp_path, "mkl-compatible", {**AVX2_ONLY, "MKL_CBWR": "COMPATIBLE", **native})}
    runs["AVX2"] = build(tmp_path, "avx2", {**AVX2_ONLY, **native})  # MKL on its own choice (AUTO)
    assert runs["ATen scalar kernels"]["machine"]["isa"] == "DEFAULT"
    assert runs["MKL compatible branch"]["machine"]["mkl_branch"] in (None, "COMPATIBLE")
    hashes = [r["weights"] for r in runs.values()]
    assert len(set(hashes)) == len(hashes), "the simulated machines should compute different weights when unpinned"


def test_torch_computing_before_lab_is_refused():
    env = {k: v for k, v in os.environ.items() if k not in (*machine.PINS, machine.OPT_OUT)}
    code = "import torch; torch.ones(2).exp(); import lab"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    assert "import lab before anything computes with torch" in out.stderr
    assert "ATEN_CPU_CAPABILITY=avx2" in out.stderr  # names the settings that fix it
    ok = subprocess.run([sys.executable, "-c", "import torch; import lab; torch.ones(2).exp()"], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]  # importing torch is fine; computing first is not
