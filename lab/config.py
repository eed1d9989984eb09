"""One configuration shape for every run: the `RunConfig` dataclass, its presets, and the path rule.

A profile is a preset of RunConfig; a run is a preset plus overrides (as nanoGPT's configurator):

    cfg = preset("offline", method="bhra")            # notebook 04, the CLI, the continual lab, the bench
    cfg = preset("paper", method="lora", seed=1)

The path rule, one for the whole harness: a relative `data_dir`, `model` folder or cache folder is
read from the repository root, wherever the process started (a notebook kernel in notebooks/, the
CLI at the root, pytest anywhere). File names inside a data folder (`train_file`, ...) are relative
to that folder. A `model` that is no folder under the root (nor an absolute one) is a hub id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from core import bhra
from core.bhra import LLAMA_TARGETS, AdapterConfig

REPO = Path(__file__).resolve().parents[1]


def resolve(path) -> Path:
    """The path rule: absolute paths as given, relative ones from the repository root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else REPO / p


CACHE = resolve(os.environ.get("BHRA_CACHE", ".cache"))  # gitignored; every artefact lives here

# The names, defined once. "full" = every weight trainable (full fine-tuning).
ABLATIONS = bhra.ABLATIONS                   # bhra_blocknorm: every W0 block rescaled to one magnitude
METHODS = bhra.METHODS                       # lora, dora, hira, abba, gralora, bhra
METHODS_ALL = METHODS + ("full",)            # notebooks 04/05/07: the six adapters and full fine-tuning
TARGETS_ALL = LLAMA_TARGETS                  # q, k, v, o, gate, up, down
OFFLINE = "offline"                          # the model name that means "the small Llama built by lab.offline"

# Learning rates per method, one table for both profiles. The paper column holds published starting
# points: LoRA 3e-4 (LLM-Adapters), DoRA 2e-4 (DoRA paper, commonsense), HiRA and ABBA 1e-3 (their
# papers/repos), GraLoRA 2e-4 (as LoRA-like), BHRA 1e-3 (HiRA's, as the paper builds on it), full
# fine-tuning 2e-5. The offline column was tuned on the small model (a few hundred steps). LoRA, DoRA,
# GraLoRA and BHRA had 3x these rates, after which LoRA's, GraLoRA's and BHRA's stage-1 models relearned
# little of task B in notebook 06's protocol (benchmarks/README.md, "Stage 2 and what the base already
# knows"); DoRA, LoRA with a magnitude vector, follows LoRA.
# The block-normalised ablation uses BHRA's rates: it differs only in the coupling matrix.
LEARNING_RATES = {
    #            paper   offline
    "lora":    {"paper": 3e-4, "offline": 6e-3},
    "dora":    {"paper": 2e-4, "offline": 6e-3},
    "hira":    {"paper": 1e-3, "offline": 3e-2},
    "abba":    {"paper": 1e-3, "offline": 6e-3},
    "gralora": {"paper": 2e-4, "offline": 6e-3},
    "bhra":    {"paper": 1e-3, "offline": 3e-2},
    "full":    {"paper": 2e-5, "offline": 3e-3},
}
LEARNING_RATES.update({a: LEARNING_RATES["bhra"] for a in ABLATIONS})


@dataclass
class RunConfig:
    """One fine-tuning run. The paper and offline profiles differ only in these values."""
    method: str = "bhra"                  # one of METHODS_ALL or ABLATIONS ("full" = every weight trainable)
    profile: str = "offline"              # selects the learning-rate column and the run folder
    model: str = OFFLINE                  # hub id or folder; "offline" = the small Llama built by lab.offline
    data_dir: str | None = None           # LLM-Adapters layout; None = the synthetic folder of this seed
    train_file: str = "ft-training_set/commonsense_synthetic.json"  # inside data_dir
    r: int = 8                            # LoRA-equivalent rank, the same for every method
    b: int = 4                            # BHRA grid (r_b = r / b)
    k: int = 2                            # GraLoRA grid
    alpha: float = 16.0                   # LoRA-family scale numerator (α/r)
    rslora: bool = False
    dropout: float = 0.0
    targets: tuple = TARGETS_ALL
    lr: float | None = None               # None = LEARNING_RATES[method][profile]
    max_steps: int = 300                  # > 0: the budget in optimiser steps (matched across methods)
    epochs: float = 3.0                   # used when max_steps <= 0
    batch_size: int = 16                  # examples per optimiser step
    micro_batch_size: int = 16            # examples per forward; gradient accumulation = batch / micro
    warmup_steps: int = 10
    cutoff_len: int = 256
    train_on_inputs: bool = False         # False: loss on the response only (prompt labels = -100)
    n_train: int | None = None            # use only the first n training records
    bf16: bool = False                    # bf16 autocast over float32 weights (needs a GPU; CPU falls back to fp32)
    save_steps: int = 0                   # checkpoint (factors + optimiser state) every n steps; 0: none
    logging_steps: int = 5
    num_beams: int = 1                    # decoding at evaluation: 1 = greedy; LLM-Adapters uses 4-beam search
    max_new_tokens: int = 16              # generated tokens per test question
    eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        self.targets = tuple(self.targets) if not isinstance(self.targets, str) else self.targets
        if self.method not in METHODS_ALL + ABLATIONS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {METHODS_ALL + ABLATIONS}")
        if self.profile not in PROFILES_NAMES:
            raise ValueError(f"unknown profile {self.profile!r}: choose one of {PROFILES_NAMES}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={self.micro_batch_size}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LEARNING_RATES[self.method][self.profile]

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(method=self.method, r=self.r, b=self.b, k=self.k, alpha=self.alpha,
                             rslora=self.rslora, dropout=self.dropout, targets=self.targets)


PROFILES_NAMES = ("offline", "paper")

# The two profiles: presets of RunConfig, nothing else differs. Sources of the paper values are in
# notebook 04's settings table.
PROFILES = {
    "paper": dict(profile="paper", model="meta-llama/Llama-3.2-1B", data_dir="data/LLM-Adapters",
                  train_file="ft-training_set/commonsense_170k.json", r=32, b=8, k=2, alpha=64.0,
                  targets=TARGETS_ALL, cutoff_len=256, bf16=True, max_steps=0, epochs=2.0,
                  batch_size=16, micro_batch_size=4, warmup_steps=100, save_steps=500,
                  num_beams=4, max_new_tokens=32, eval_batch_size=16),
    "offline": dict(profile="offline", model=OFFLINE, data_dir=None,
                    train_file="ft-training_set/commonsense_synthetic.json", r=8, b=4, k=2, alpha=16.0,
                    targets=TARGETS_ALL, cutoff_len=256, bf16=False, max_steps=300, epochs=3.0,
                    batch_size=16, micro_batch_size=16, warmup_steps=10, save_steps=0,
                    num_beams=1, max_new_tokens=16, eval_batch_size=64),
}


def preset(profile: str = "offline", **overrides) -> RunConfig:
    """The profile's RunConfig with `overrides` on top; an unknown key is refused by name."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: RunConfig has {sorted(fields)}")
    return RunConfig(**{**PROFILES[profile], **overrides})


def configs(profile: str, methods=METHODS_ALL, **overrides) -> dict:
    """{method: RunConfig} for a profile at one matched budget (same r, steps, batch, data)."""
    return {m: preset(profile, **{**overrides, "method": m}) for m in methods}


# ---------------------------------------------------------------------------------------------
# Small file helpers: cache keys, atomic writes
# ---------------------------------------------------------------------------------------------

def stable_hash(obj) -> str:
    """A short, stable hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished temp folder into place; if another process got there first, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final) if not final.exists() else shutil.rmtree(tmp)
    except OSError:  # final appeared between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a killed write leaves the old file (or none), never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@contextmanager
def threads(n: int = 1):
    """Run a block at a fixed torch CPU thread count: the offline results depend on it (a reduction
    split over 1 or 2 threads rounds differently, and a few hundred steps amplify the difference)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def workers() -> int:
    """How many offline runs train at once: one per CPU core, as each run is pinned to one thread. A
    run's numbers do not depend on this (only on its own thread count); BHRA_WORKERS=1 runs in-process."""
    n = os.environ.get("BHRA_WORKERS", "")
    if n and not n.isdigit():
        raise ValueError(f"BHRA_WORKERS={n!r}: give a whole number of processes, e.g. BHRA_WORKERS=1")
    return max(1, int(n) if n else os.cpu_count() or 1)


def in_parallel(fn, jobs: list[tuple]) -> list:
    """[fn(*job) for job in jobs], spread over `workers()` fresh processes; results in the jobs' order.
    `fn` must be importable (a module's function), as the processes are spawned, not forked: they start
    from fresh imports, and get this process's cache folder (`CACHE`) but no other change made at run time."""
    n = min(workers(), len(jobs))
    if n <= 1:
        return [fn(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_worker,
                             initargs=(CACHE,)) as pool:
        return list(pool.map(fn, *zip(*jobs)))


def _worker(cache: Path) -> None:
    global CACHE
    CACHE = cache
    quiet()


def quiet() -> None:
    """Silence the libraries' progress bars and warnings (notebook outputs stay readable)."""
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
