"""One numerical path on every x86 machine, and the record of the machine a result was computed on.

A CPU kernel picks its code by the processor it runs on: ATen's vectorised kernels by ISA (AVX-512 on
this project's Intel machines, AVX2 on its AMD ones), MKL's GEMMs by ISA and vendor, oneDNN likewise.
The sums come out in another order, a last bit changes, and a few hundred training steps turn that bit
into points of accuracy. So every process of the harness computes on one path, which every x86 machine of
the project can take:

    ATEN_CPU_CAPABILITY=avx2   ATen's kernels: AVX2, which every x86 machine of the project has
    MKL_CBWR=COMPATIBLE        MKL's conditional numerical reproducibility: the one branch MKL honours on
                               Intel and AMD alike (on an AMD processor it refuses the AVX2 branch and stays
                               on AUTO, whose matrix products differ from Intel's); slower, about 1.3× for a
                               training run measured on an AMD EPYC
    MKL_ENABLE_INSTRUCTIONS=AVX2   MKL's ISA ceiling, so a user's AVX512 cannot overrule MKL_CBWR
    ONEDNN_MAX_CPU_ISA=AVX2    oneDNN (the float32 paths here do not reach it; bf16 on a CPU would)

Each library reads its variable once, at its first computation, so the pins must be in the environment
before torch computes anything. `import lab` sets them (this module is the first thing it imports, and it
does not import torch), so they reach the CLI, the spawned training workers and every notebook kernel,
whatever started it (make, nbval, a JupyterLab started by hand): each notebook imports lab before it
computes. A process in which torch already computed on another path is refused by `check`, with the fix.
`BHRA_NATIVE_NUMERICS=1` opts out: each machine's fastest path, whose numbers differ from the committed ones.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
OPT_OUT = "BHRA_NATIVE_NUMERICS"
PINNED_ISA = "AVX2"  # what torch.backends.cpu.get_cpu_capability() reports on the pinned path
PINNED_MKL = "COMPATIBLE"  # what mkl_branch() reports there


def applies() -> bool:
    """The pins are for x86 processors with AVX2 (every machine of this project); elsewhere (an ARM laptop)
    the libraries take their own path and the numbers differ from the committed ones."""
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return False
    return platform.machine().lower() in ("x86_64", "amd64") and "avx2" in cpu_flags()


def pin() -> None:
    """Put the pins in this process's environment (and so in every process it starts)."""
    if applies():
        os.environ.update(PINS)


def mkl_branch() -> str | None:
    """The code branch MKL computes on ("COMPATIBLE" when pinned), or None where torch has no MKL to ask."""
    import ctypes

    import torch
    names = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
             10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get  # MKL's mkl_cbwr_get, as linked into torch (MKL_CBWR_BRANCH = 1)
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    return names.get(get(1), str(get(1)))


def check() -> None:
    """Refuse a process whose torch computes off the pinned path (it computed before the pins were set)."""
    import torch
    if not applies():
        return
    isa, mkl = torch.backends.cpu.get_cpu_capability(), mkl_branch()
    if isa != PINNED_ISA or mkl not in (None, PINNED_MKL):
        settings = " ".join(f"{k}={v}" for k, v in PINS.items())
        raise RuntimeError(
            f"torch computes on the {isa} path (MKL branch {mkl}), not the pinned {PINNED_ISA} one (MKL {PINNED_MKL}): it computed "
            f"before lab set the pins, and results would differ from the committed ones. Restart the kernel or "
            f"process and import lab before anything computes with torch, or start it with {settings}; "
            f"{OPT_OUT}=1 keeps this machine's own path on purpose.")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a results file records of the machine: CPU, the ISA torch computed with, MKL's branch, the pins."""
    import torch
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "isa": torch.backends.cpu.get_cpu_capability(),
            "mkl_branch": mkl_branch(), "pins": {k: os.environ.get(k) for k in PINS}, "torch": torch.__version__}


pin()
