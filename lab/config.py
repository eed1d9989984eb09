"""One configuration shape for every run: the `RunConfig` dataclass, its presets, and the names.

A profile is a preset of RunConfig; a run is a preset plus overrides (as nanoGPT's configurator):

    cfg = preset("offline", method="bhra")            # notebook 04, the CLI, the continual lab, the bench
    cfg = preset("paper", method="lora", seed=1)
    cfg = preset("offline", model=BaseSpec(pretrain_steps=800))   # another offline base: another run

A RunConfig holds everything that changes a run's result, the base model included, and is the only
thing a run depends on: spawned workers, the CLI and the notebooks build the same runs from it.

The path rule, one for the whole harness (lab.cache.resolve): a relative `data_dir`, `model` folder or
cache folder is read from the repository root, wherever the process started (a notebook kernel in
notebooks/, the CLI at the root, pytest anywhere). File names inside a data folder (`train_file`, ...)
are relative to that folder. A `model` that is no folder under the root (nor an absolute one) is a hub id.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

from core import bhra
from core.bhra import LLAMA_TARGETS, AdapterConfig
from lab.formats import TRAIN_FILE
from lab.offline import BaseSpec
from lab.smol import SMOL

# The names, defined once. "full" = every weight trainable (full fine-tuning).
ABLATIONS = bhra.ABLATIONS                   # bhra_blocknorm: every W0 block rescaled to one magnitude
METHODS = bhra.METHODS                       # lora, dora, hira, abba, gralora, bhra
METHODS_ALL = METHODS + ("full",)            # notebooks 04/05/07: the six adapters and full fine-tuning
TARGETS_ALL = LLAMA_TARGETS                  # q, k, v, o, gate, up, down
OFFLINE = "offline"                          # the model name that means the default BaseSpec (lab/offline_base/)

# Learning rates per method, one table for both profiles. The paper column holds published starting
# points: LoRA 3e-4 (LLM-Adapters), DoRA 2e-4 (DoRA paper, commonsense), HiRA and ABBA 1e-3 (their
# papers/repos), GraLoRA 2e-4 (as LoRA-like), BHRA 1e-3 (HiRA's, as the paper builds on it), full
# fine-tuning 2e-5. The offline column was not tuned by a sweep: LoRA, DoRA, GraLoRA and BHRA had 3x
# these rates, and they were cut so that notebook 06's assertion holds (every method's plasticity spans
# 20 points): at 3x, LoRA's, GraLoRA's and BHRA's stage-1 models relearned little of task B
# (benchmarks/README.md, "Stage 2 and what the base already knows"); DoRA, LoRA with a magnitude
# vector, follows LoRA.
# The block-normalised ablation uses BHRA's rates: it differs only in the coupling matrix.
LEARNING_RATES = {
    #            paper   offline          smol
    "lora":    {"paper": 3e-4, "offline": 6e-3, "smol": 1e-3},
    "dora":    {"paper": 2e-4, "offline": 6e-3, "smol": 1e-3},
    "hira":    {"paper": 1e-3, "offline": 3e-2, "smol": 3e-3},
    "abba":    {"paper": 1e-3, "offline": 6e-3, "smol": 1e-3},
    "gralora": {"paper": 2e-4, "offline": 6e-3, "smol": 1e-3},
    "bhra":    {"paper": 1e-3, "offline": 3e-2, "smol": 3e-3},
    "full":    {"paper": 2e-5, "offline": 3e-3, "smol": 5e-5},
}
LEARNING_RATES.update({a: LEARNING_RATES["bhra"] for a in ABLATIONS})


class Range(NamedTuple):
    """The values a number setting takes: low <= v < high (low excluded where `above`), and None where `none`
    says what None means (nan and inf fail the bounds). An int setting refuses bools and floats; a float
    setting takes ints."""
    kind: type
    low: float
    meaning: str
    high: float = math.inf
    above: bool = False
    none: str = ""

    def admits(self, v) -> bool:
        if v is None:
            return bool(self.none)
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(v, bool) or not isinstance(v, kinds):
            return False
        return (v > self.low if self.above else v >= self.low) and v < self.high

    def __str__(self):
        bounds = (f"{'>' if self.above else '>='} {self.low}" if self.high == math.inf
                  else f"in {'(' if self.above else '['}{self.low}, {self.high})")
        kind = "a whole number" if self.kind is int else "a finite number"
        return f"{kind} {bounds} ({self.meaning})" + (f", or None ({self.none})" if self.none else "")


RANGES = {  # RunConfig's number settings; RunConfig.__post_init__ checks them all
    "r": Range(int, 1, "the LoRA-equivalent rank"),
    "b": Range(int, 1, "BHRA's blocks per side"),
    "k": Range(int, 1, "GraLoRA's blocks per side"),
    "alpha": Range(float, 0, "the scale numerator", above=True),
    "dropout": Range(float, 0, "the probability of dropping an adapter input", high=1),
    "lr": Range(float, 0, "the learning rate", above=True, none="the method's rate in LEARNING_RATES"),
    "max_steps": Range(int, 0, "optimiser steps; 0: train for `epochs`"),
    "epochs": Range(float, 0, "passes over the training records when max_steps=0"),
    "batch_size": Range(int, 1, "examples per optimiser step"),
    "micro_batch_size": Range(int, 1, "examples per forward"),
    "warmup_steps": Range(int, 0, "optimiser steps of linear warm-up"),
    "cutoff_len": Range(int, 1, "the tokens kept per record"),
    "n_train": Range(int, 1, "the training records used", none="all"),
    "save_steps": Range(int, 0, "optimiser steps between checkpoints; 0: none"),
    "logging_steps": Range(int, 1, "optimiser steps between logged losses"),
    "num_beams": Range(int, 1, "beams at decoding; 1: greedy"),
    "max_new_tokens": Range(int, 1, "tokens generated per test question"),
    "eval_batch_size": Range(int, 1, "test questions per forward"),
    "seed": Range(int, 0, "the random seed; numpy takes 32 bits", high=2**32),
    "threads": Range(int, 1, "torch CPU threads", none="torch's default"),
}
EVAL_RANGES = {  # lab.finetune.evaluate's keywords (its batch_size is a run's eval_batch_size) and the CLI's --limit
    "limit": Range(int, 1, "test examples per task", none="all"),
    "max_new_tokens": RANGES["max_new_tokens"], "batch_size": RANGES["eval_batch_size"],
    "num_beams": RANGES["num_beams"],
}


def check_settings(values: dict, ranges: dict = RANGES) -> None:
    """Refuse the values outside their ranges, all in one ValueError naming each setting, its value and the fix."""
    bad = [f"{name}={v!r}{' (a bool)' if isinstance(v, bool) else ''}: give {ranges[name]}"
           for name, v in values.items() if not ranges[name].admits(v)]
    if bad:
        raise ValueError("; ".join(bad))


@dataclass
class RunConfig:
    """One fine-tuning run. The profiles (paper, offline, smol) differ only in these values. A config that cannot
    make a meaningful run is refused when it is built, by the field, the value and what to give instead."""
    method: str = "bhra"                  # one of METHODS_ALL or ABLATIONS ("full" = every weight trainable)
    profile: str = "offline"              # selects the learning-rate column and the run folder
    model: str | BaseSpec = OFFLINE       # hub id, folder, an offline BaseSpec ("offline" = the default), or "smol"
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
    max_steps: int = 300                  # the budget in optimiser steps (matched across methods); 0: `epochs` instead.
                                          # No negatives: a second spelling of 0 would hash to a second run folder
    epochs: float = 3.0                   # used when max_steps == 0
    batch_size: int = 16                  # examples per optimiser step
    micro_batch_size: int = 16            # examples per forward; gradient accumulation = batch / micro
    warmup_steps: int = 10
    cutoff_len: int = 256
    train_on_inputs: bool = False         # False: loss on the response only (prompt labels = -100)
    n_train: int | None = None            # use only the first n training records (None: all)
    bf16: bool = False                    # bf16 autocast over float32 weights (needs a GPU; CPU falls back to fp32)
    save_steps: int = 0                   # checkpoint (factors + optimiser state) every n steps; 0: none
    logging_steps: int = 5
    num_beams: int = 1                    # decoding at evaluation: 1 = greedy; LLM-Adapters uses 4-beam search
    max_new_tokens: int = 16              # generated tokens per test question
    eval_batch_size: int = 64
    seed: int = 0
    threads: int | None = 1               # torch CPU threads (None: torch's default); offline results depend on it
    progress: bool = False                # progress bars and where the model runs, for runs of hours
    gradient_checkpointing: bool | None = None  # None: on a GPU, lab.budget's estimate decides; same maths either way
    cache: str | None = None              # where artefacts go (lab.cache.root); not part of a run's identity

    def __post_init__(self):
        if isinstance(self.targets, list):
            self.targets = tuple(self.targets)
        if self.method not in METHODS_ALL + ABLATIONS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {METHODS_ALL + ABLATIONS}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}: choose one of {sorted(PROFILES)}")
        if self.model == BaseSpec():  # one spelling of the default base, so that both name the same run
            self.model = OFFLINE
        check_settings({name: getattr(self, name) for name in RANGES})
        if self.max_steps == 0 and self.epochs == 0:
            raise ValueError("max_steps=0 and epochs=0 make 0 optimiser steps: give max_steps >= 1 or epochs > 0")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={self.micro_batch_size}")
        names = isinstance(self.targets, tuple) and all(isinstance(t, str) and t for t in self.targets)
        if not (names and self.targets):
            raise ValueError(f"targets={self.targets!r}: give a non-empty tuple of nn.Linear names, "
                             "e.g. ('q_proj', 'v_proj')")
        if self.method != "full":
            self.adapter_config()  # core's own rules (b divides r, ...) refuse the run here, not when it starts

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LEARNING_RATES[self.method][self.profile]

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(method=self.method, r=self.r, b=self.b, k=self.k, alpha=self.alpha,
                             rslora=self.rslora, dropout=self.dropout, targets=self.targets)


# The two profiles, as what differs from RunConfig's defaults (the offline profile IS the defaults).
# The paper profile follows one recipe, LLM-Adapters' commonsense one as DoRA and HiRA ran it (3 epochs,
# batch 16, warm-up 100, q,k,v,up,down, dropout 0.05, loss on prompt and response); each method's own
# settings (learning rate, ABBA's scale) come from its own script. Sources: notebook 04's protocol table.
LLM_ADAPTERS_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
PROFILES = {
    "paper": dict(model="meta-llama/Llama-3.2-1B", data_dir="data/LLM-Adapters", train_file=TRAIN_FILE,
                  r=32, b=8, alpha=64.0, dropout=0.05, targets=LLM_ADAPTERS_TARGETS, bf16=True, max_steps=0,
                  epochs=3.0, micro_batch_size=4, warmup_steps=100, train_on_inputs=True, save_steps=500,
                  num_beams=4, max_new_tokens=32, eval_batch_size=16, threads=None, progress=True),
    "offline": dict(),
    # SmolLM2-135M-Instruct (lab/smol.py) on the offline tasks, sized for a 2-core laptop: r = 8 on LLM-Adapters'
    # five targets (training prints the share of the model it trains). Steps and learning rates: not yet tuned.
    "smol": dict(model=SMOL, r=8, b=4, targets=LLM_ADAPTERS_TARGETS, cutoff_len=128, max_steps=60, batch_size=8,
                 micro_batch_size=8, warmup_steps=6, eval_batch_size=16),
}
# What a method's own reference script sets otherwise, on top of its profile (ABBA's train_cr.sh: alpha 32);
# methods with no separate adapter path (core.bhra.USES) and full fine-tuning take no adapter dropout.
NO_DROPOUT = tuple(m for m in METHODS_ALL + ABLATIONS if "dropout" not in bhra.USES.get(m, ()))
BY_METHOD = {"paper": {"abba": dict(alpha=32.0), **{m: dict(dropout=0.0) for m in NO_DROPOUT}}, "offline": {}, "smol": {}}

# What notebooks 04 and 05 print of each profile, in this order.
DESCRIBED = ("model", "data_dir", "train_file", "r", "b", "k", "alpha", "dropout", "targets", "cutoff_len",
             "train_on_inputs", "bf16", "max_steps", "epochs", "batch_size", "micro_batch_size", "warmup_steps",
             "save_steps", "num_beams", "max_new_tokens", "eval_batch_size")


def describe(profile: str) -> dict:
    """The profile's values of the settings in DESCRIBED."""
    cfg = preset(profile)
    return {k: getattr(cfg, k) for k in DESCRIBED}


def preset(profile: str = "offline", **overrides) -> RunConfig:
    """The profile's RunConfig with `overrides` on top; an unknown key is refused by name."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: RunConfig has {sorted(fields)}")
    method = overrides.get("method", RunConfig.method)
    return RunConfig(**{"profile": profile, **PROFILES[profile], **BY_METHOD[profile].get(method, {}), **overrides})


def for_method(cfg: RunConfig, method: str) -> RunConfig:
    """`cfg` for another method: its own settings (BY_METHOD) replace those of cfg's method."""
    own = BY_METHOD[cfg.profile]
    undo = {k: PROFILES[cfg.profile].get(k, getattr(RunConfig, k)) for k in own.get(cfg.method, {})}
    return dataclasses.replace(cfg, method=method, **{**undo, **own.get(method, {})})


def configs(profile: str, methods=METHODS_ALL, **overrides) -> dict:
    """{method: RunConfig} for a profile at one matched budget (same r, steps, batch, data)."""
    return {m: preset(profile, **{**overrides, "method": m}) for m in methods}
