"""Continual learning on top of the lab harness: retention, plasticity, and the referee's ablation.

The protocol (notebook 06), the same for every method:

    base model ──stage 1: adapter on task A──▶ merge_and_unload ──stage 2: a FRESH adapter of the
    same method on task B, at several learning rates──▶ merge_and_unload

    acc_A_stage1   accuracy on A after stage 1   (what there is to keep)
    acc_A_stage2   accuracy on A after stage 2   = retention
    acc_B_stage2   accuracy on B after stage 2   = plasticity

Task A is commonsense-style (the eight LLM-Adapters formats), task B arithmetic (GSM8K-style).
Data, step counts, batch sizes and schedules are identical across methods; only the method and
its learning rate change. A larger stage-2 learning rate buys plasticity and costs retention, so
comparing methods at one learning rate each compares different points of a trade-off. Instead
each method's stage-2 learning rate is swept, the (plasticity, retention) points form the
method's *frontier*, and retention is read off every frontier at one common plasticity level.

Sections
  1. the referee's ablation: BHRA with every block of W0 normalised to the same magnitude
  2. the metric: one function from per-seed accuracy tables to frontiers and matched retention
  3. the protocol: stage 1, merge, stage 2 sweep, evaluation, cached per (method, seed, lr)
  4. what the update looks like (notebook 07): per-layer spectra and block energy of ΔW
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, reduce

from core.bhra import (AdapterConfig, BHRALinear, adapted_layers, bhra_delta, block_hadamard_linear,
                       block_hadamard_linear_reference, blocks, inject)

ADDITIVE = ("lora", "gralora", "abba")  # the W0-free additive controls of the paper
COUPLED = ("hira", "bhra")  # the W0-coupled methods
ABLATION = "bhra_blocknorm"  # BHRA with every W0 block normalised to the same magnitude

# ---------------------------------------------------------------------------------------------
# 1. The referee's ablation: normalised blocks
# ---------------------------------------------------------------------------------------------
# BHRA couples its update to W0 entry by entry:   ΔW_ij = W0_ij ⊙ (B_ij A_ij).
# Two things happen at once: the update lives on a b×b grid of independent low-rank blocks, and
# each block is scaled by the size of its W0 block (a block where W0 is large gets a large update).
# The ablation keeps the grid and the pattern of W0 inside each block, but gives every block the
# same magnitude:
#
#     U_ij  = W0_ij / mean|W0_ij|              (every coupling block has mean |entry| = 1)
#     ΔW_ij = μ · U_ij ⊙ (B_ij A_ij),   μ = mean|W0|   (a single scalar, so that the overall step
#                                                      size matches BHRA's and its learning rate)
#
# Since U_ij is W0_ij times the scalar d_ij = 1 / mean|W0_ij|, the ablation is BHRA with block
# (i, j) of B scaled by μ·d_ij: it reuses BHRA's one-GEMM forward and custom backward unchanged.
# If BHRA retains better than the additive controls but this ablation retains as well as BHRA,
# the gain does not come from scaling each block by its |W0|.


def block_gains(W0: torch.Tensor, b: int) -> torch.Tensor:
    """(b, b) gains μ/mean|W0_ij|, so that every block of (gain ⊙ W0) has mean |entry| = mean|W0|."""
    W = W0.detach().float().abs()
    per_block = reduce(blocks(W, b), "i j p q -> i j", "mean")  # (b, b)
    return W.mean() / per_block.clamp_min(torch.finfo(torch.float32).tiny)


def coupling_matrix(W0: torch.Tensor, b: int) -> torch.Tensor:
    """U: W0 with each of its b×b blocks divided by its mean |entry| (unit-magnitude blocks)."""
    W = blocks(W0.detach().float(), b)  # (b, b, m/b, n/b)
    U = W / reduce(W.abs(), "i j p q -> i j 1 1", "mean").clamp_min(torch.finfo(torch.float32).tiny)
    return rearrange(U, "i j p q -> (i p) (j q)")


class BlockNormBHRALinear(BHRALinear):
    """BHRA whose coupling matrix is W0 with every block rescaled to the same mean magnitude.

    ΔW_ij = s · (g_ij W0_ij) ⊙ (B_ij A_ij), g_ij = mean|W0| / mean|W0_ij|, computed once from the
    frozen W0 at injection and kept as a buffer (it is not trained)."""

    method = ABLATION

    def __init__(self, base, cfg):
        super().__init__(base, cfg)
        gains = block_gains(self.W0, cfg.b).to(self.W0.dtype)
        self.register_buffer("gains", rearrange(gains, "i j -> i j 1 1"), persistent=False)  # (b, b, 1, 1)

    def scaled_B(self) -> torch.Tensor:
        return self.B * self.gains  # (b, b, m/b, r_b): block (i, j) of the update scaled by g_ij

    def delta_weight(self):
        return bhra_delta(self.W0, self.scaled_B(), self.A, self.s)

    def forward(self, x):
        fn = block_hadamard_linear if self.lean else block_hadamard_linear_reference
        return fn(x, self.W0, self.base.bias, self.scaled_B(), self.A, self.s)


def inject_blocknorm(model: torch.nn.Module, cfg: AdapterConfig, verbose: bool = True) -> torch.nn.Module:
    """inject() a BHRA adapter (cfg.method must be 'bhra'), then swap every layer for the ablation.

    The factors are carried over, so the ablation starts from exactly BHRA's initialisation."""
    if cfg.method != "bhra":
        raise ValueError(f"the block-normalised ablation is a BHRA variant: pass method='bhra', got {cfg.method!r}")
    inject(model, cfg, verbose=verbose)
    for name, layer in adapted_layers(model):
        new = BlockNormBHRALinear(layer.base, cfg)
        with torch.no_grad():
            new.A.copy_(layer.A)
            new.B.copy_(layer.B)
        model.set_submodule(name, new)
    return model


def adapter_config(method: str, **kw) -> AdapterConfig:
    """AdapterConfig for a method name of this module (the ablation is configured as BHRA)."""
    return AdapterConfig(method="bhra" if method == ABLATION else method, **kw)


def inject_method(model, method: str, cfg: AdapterConfig, verbose: bool = False):
    """inject() for the six methods of core.bhra and the ablation."""
    return inject_blocknorm(model, cfg, verbose) if method == ABLATION else inject(model, cfg, verbose)


# ---------------------------------------------------------------------------------------------
# 2. The metric: frontiers and retention at matched plasticity
# ---------------------------------------------------------------------------------------------
# Input: one row per (method, seed, stage-2 learning rate) with the three accuracies.
#
#   frontier   per (method, lr): mean ± std over seeds of plasticity P = acc_B_stage2,
#              retention R = acc_A_stage2, stage-1 accuracy, and forgetting = acc_A_stage1 − R.
#   level      the common plasticity level P*: by default the highest plasticity that every
#              method's mean frontier reaches, min_m max_lr P̄(m, lr), over every method but full
#              fine-tuning (a reference whose frontier may lie far from the adapters').
#   matched    per method, retention at P*: the mean frontier, sorted by P̄, is a piecewise-linear
#              curve; P* falls between two of its points with weight w. Every seed's retention is
#              interpolated with the same two points and the same w, so the seeds stay paired and
#              the mean of the per-seed values is exactly the interpolated mean frontier. Outside a
#              method's plasticity range the value is NaN (no extrapolation).
#   additive   per seed, the mean of the additive controls' matched retention (LoRA, GraLoRA,
#              ABBA), then mean ± std over seeds; `gap` is each method minus that, seed by seed.

COLUMNS = ("method", "seed", "lr", "acc_A_stage1", "acc_A_stage2", "acc_B_stage2")


@dataclass
class ContinualSummary:
    frontier: "pd.DataFrame"  # one row per (method, lr): means and stds over seeds
    matched: "pd.DataFrame"  # one row per method: retention at the common plasticity level
    per_seed: "pd.DataFrame"  # (method, seed) -> matched retention of that seed
    level: float  # the common plasticity level P*
    additive: tuple[float, float]  # mean ± std over seeds of the additive controls' matched retention
    additive_methods: tuple[str, ...] = field(default=ADDITIVE)

    def gap(self, method: str) -> tuple[float, float]:
        """Matched retention of `method` minus the additive-control mean: (mean, std) over seeds."""
        row = self.matched.set_index("method").loc[method]
        return float(row["gap_mean"]), float(row["gap_std"])


def _std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), 0 for a single value, ignoring NaN."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def _bracket(p: np.ndarray, level: float) -> tuple[int, int, float] | None:
    """Indices (lo, hi) into p (sorted ascending) and the weight w with level = (1−w)p[lo] + w p[hi]."""
    # exercise 6.1: None outside [p[0], p[-1]] (no extrapolation); else the neighbours of level and the linear weight
    if np.isnan(level) or len(p) == 0 or level < p[0] - 1e-12 or level > p[-1] + 1e-12:
        return None
    hi = int(np.searchsorted(p, level, side="left"))
    hi = min(max(hi, 0), len(p) - 1)
    if p[hi] == level or hi == 0:
        return hi, hi, 0.0
    lo = hi - 1
    return lo, hi, float((level - p[lo]) / (p[hi] - p[lo]))
    # end exercise


def summarize(records, level: float | None = None, additive: tuple[str, ...] = ADDITIVE) -> ContinualSummary:
    """Frontiers, the common plasticity level, matched retention and the additive-control mean.

    `records`: a DataFrame or a list of dicts with the columns of COLUMNS (accuracies in any unit,
    e.g. percent). Every method must have the same seeds at every one of its learning rates.
    """
    import pandas as pd

    df = pd.DataFrame(records)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}; expected {list(COLUMNS)}")
    if df.empty:
        raise ValueError("no records to summarize")
    df = df[list(COLUMNS)].copy()
    df["forgetting"] = df["acc_A_stage1"] - df["acc_A_stage2"]
    if df.duplicated(["method", "seed", "lr"]).any():
        raise ValueError("records hold the same (method, seed, lr) twice")
    for method, g in df.groupby("method"):
        seeds = g.groupby("lr")["seed"].apply(lambda s: tuple(sorted(s)))
        if seeds.nunique() != 1:
            raise ValueError(f"{method}: the learning rates were run with different seeds {dict(seeds)}")

    stats = {"acc_A_stage1": "stage1", "acc_A_stage2": "retention", "acc_B_stage2": "plasticity",
             "forgetting": "forgetting"}
    rows = []
    for (method, lr), g in df.groupby(["method", "lr"], sort=True):
        row = {"method": method, "lr": lr, "n_seeds": len(g)}
        for col, name in stats.items():
            row[f"{name}_mean"], row[f"{name}_std"] = float(g[col].mean()), _std(g[col])
        rows.append(row)
    frontier = pd.DataFrame(rows)

    if level is None:  # the highest plasticity every compared method reaches (full fine-tuning is a reference)
        compared = frontier[frontier["method"] != "full"] if (frontier["method"] != "full").any() else frontier
        level = float(compared.groupby("method")["plasticity_mean"].max().min())

    matched_rows, seed_rows = [], []
    for method, f in frontier.groupby("method", sort=False):
        f = f.sort_values(["plasticity_mean", "lr"])
        p = f["plasticity_mean"].to_numpy()
        br = _bracket(p, level)
        g = df[df["method"] == method]
        seeds = sorted(g["seed"].unique())
        wide = g.pivot(index="seed", columns="lr", values="acc_A_stage2").loc[seeds]  # (seed, lr)
        stage1 = g.groupby("seed")["acc_A_stage1"].mean().loc[seeds]
        if br is None:
            per_seed = np.full(len(seeds), np.nan)
            lr_lo = lr_hi = w = np.nan
        else:
            lo, hi, w = br
            lr_lo, lr_hi = f["lr"].iloc[lo], f["lr"].iloc[hi]
            per_seed = (1 - w) * wide[lr_lo].to_numpy() + w * wide[lr_hi].to_numpy()
        for s, v, a1 in zip(seeds, per_seed, stage1):
            seed_rows.append({"method": method, "seed": s, "retention": float(v), "stage1": float(a1)})
        matched_rows.append({"method": method, "level": level, "n_seeds": len(seeds),
                             "retention_mean": float(np.mean(per_seed)), "retention_std": _std(per_seed),
                             "stage1_mean": float(stage1.mean()), "stage1_std": _std(stage1.to_numpy()),
                             "lr_lo": lr_lo, "lr_hi": lr_hi, "w": w})
    per_seed = pd.DataFrame(seed_rows)
    matched = pd.DataFrame(matched_rows)

    # exercise 6.2: per seed, the mean matched retention of the additive controls present; then mean ± std (_std)
    present = [m for m in additive if m in set(df["method"])]
    if present:
        wide = per_seed[per_seed["method"].isin(present)].pivot(index="seed", columns="method", values="retention")
        add_seed = wide[present].mean(axis=1, skipna=False)  # per seed: mean over the controls
        additive_stat = (float(add_seed.mean(skipna=False)), _std(add_seed.to_numpy()))
    else:
        add_seed, additive_stat = None, (math.nan, math.nan)
    # end exercise

    gaps_mean, gaps_std = [], []
    for method in matched["method"]:
        if add_seed is None:
            gaps_mean.append(math.nan); gaps_std.append(math.nan); continue
        mine = per_seed[per_seed["method"] == method].set_index("seed")["retention"]
        common = mine.index.intersection(add_seed.index)
        d = (mine.loc[common] - add_seed.loc[common]).to_numpy()
        gaps_mean.append(float(np.mean(d)) if len(d) else math.nan)
        gaps_std.append(_std(d))
    matched["gap_mean"], matched["gap_std"] = gaps_mean, gaps_std
    return ContinualSummary(frontier=frontier, matched=matched, per_seed=per_seed, level=float(level),
                            additive=additive_stat, additive_methods=tuple(present))


# ---------------------------------------------------------------------------------------------
# 3. The protocol: stage 1 on A, merge, stage 2 on B at several learning rates, evaluate
# ---------------------------------------------------------------------------------------------
# Training and evaluation are the lab harness's (core.lab.train / evaluate): the same Trainer,
# prompts, tokenisation and answer extraction as notebooks 04-05. Stage 2 starts from the merged
# stage-1 model saved with save_pretrained, so it loads like any base model (RunConfig.model is
# that folder). Every finished piece is cached under .cache/continual/, keyed by its settings.

GRIDS = {  # BHRA_GRID selects one; the notebooks' committed outputs come from "full"
    "full": dict(seeds=(0, 1, 2), lr_multipliers=(0.1, 0.3, 1.0)),
    "ci": dict(seeds=(0,), lr_multipliers=(0.1, 1.0)),
}


def grid_from_env(default: str = "ci") -> tuple[str, dict]:
    name = os.environ.get("BHRA_GRID", default).strip().lower()
    if name not in GRIDS:
        raise ValueError(f"BHRA_GRID={name!r}: choose one of {sorted(GRIDS)}")
    return name, dict(GRIDS[name])


def _lab():
    from core import lab
    return lab


@functools.lru_cache(maxsize=None)
def _run_config_class():
    """lab.RunConfig plus the name of the adapter variant, so the ablation gets its own run folder.

    (lab.run_dir hashes the config's fields; the ablation is configured as BHRA and differs only in
    the inject function, which is not a field. The extra field keeps the two runs apart.)"""
    from dataclasses import dataclass as _dc

    lab = _lab()

    @_dc
    class ContinualRunConfig(lab.RunConfig):
        variant: str = ""  # "" = the method as core.bhra defines it; "blocknorm" = the ablation

    return ContinualRunConfig


@dataclass
class ContinualSpec:
    """Everything that defines one continual-learning experiment; identical for every method."""
    profile: str = "offline"  # "paper": Llama-3.2, commonsense_170k -> MetaMathQA, GSM8K
    model: str = "offline"  # hub id or folder of the base model
    data_dir: str | None = None  # LLM-Adapters layout; None = the synthetic folder (one per seed)
    task_a_file: str = "ft-training_set/commonsense_synthetic.json"  # stage 1 (relative to data_dir)
    task_b_file: str = "ft-training_set/math_synthetic.json"  # stage 2 (relative to data_dir, or a path)
    task_b_test: str = "dataset/gsm8k/test.json"  # plasticity is measured here
    methods: tuple[str, ...] = ("lora", "gralora", "abba", "hira", "bhra", ABLATION, "full")
    seeds: tuple[int, ...] = (0, 1, 2)
    lr_multipliers: tuple[float, ...] = (0.1, 0.3, 1.0)  # stage-2 lr = the method's table lr × these
    r: int = 8  # LoRA-equivalent rank (every method trains r·(m + n) per layer)
    b: int = 4  # BHRA grid
    k: int = 2  # GraLoRA grid
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    stage1_steps: int = 150
    stage2_steps: int = 150
    batch_size: int = 16
    micro_batch_size: int = 16
    warmup_steps: int = 15
    cutoff_len: int = 256
    bf16: bool = False
    eval_limit_a: int | None = 25  # test examples per commonsense task (None: all)
    eval_limit_b: int | None = 100  # arithmetic test examples (None: all)
    max_new_tokens_a: int = 10
    max_new_tokens_b: int = 32
    eval_batch_size: int = 64
    n_train_a: int | None = None  # use only the first n records of A's training file (None: all)
    n_train_b: int | None = None  # the same for B
    lrs: dict | None = None  # method -> stage-1 learning rate; None: core.lab.LEARNING_RATES (see resolved())

    def __post_init__(self):
        self.methods, self.seeds, self.targets = tuple(self.methods), tuple(self.seeds), tuple(self.targets)
        self.lr_multipliers = tuple(self.lr_multipliers)

    def resolved(self) -> "ContinualSpec":
        """A copy pinned to what it runs on: the base model's concrete folder and the learning rates.

        Cached results are keyed by the spec, so a rebuilt offline base model or a changed rate table
        gives new runs instead of silently mixing old and new ones."""
        import dataclasses

        lab = _lab()
        model = str(lab.base_model_path()) if self.model == lab.OFFLINE else self.model
        lrs = self.lrs or {m: lab.LEARNING_RATES[_split(m)[0]][self.profile] for m in self.methods}
        return dataclasses.replace(self, model=model, lrs=dict(lrs))

    def key(self) -> dict:
        """The settings a stage-1 run depends on (the stage-2 sweep is not among them)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("methods", "seeds", "lr_multipliers")}
        return d


def _split(method: str) -> tuple[str, str]:
    """Method name of this module -> (lab method, variant)."""
    return ("bhra", "blocknorm") if method == ABLATION else (method, "")


def _inject_fn(method: str):
    return inject_blocknorm if method == ABLATION else None


def base_lr(spec: ContinualSpec, method: str) -> float:
    """The method's stage-1 learning rate: spec.lrs, else the lab's table (the ablation uses BHRA's)."""
    if spec.lrs and method in spec.lrs:
        return spec.lrs[method]
    return _lab().LEARNING_RATES[_split(method)[0]][spec.profile]


def _config(spec: ContinualSpec, method: str, seed: int, stage: int, model: str, lr: float):
    lab_method, variant = _split(method)
    return _run_config_class()(
        method=lab_method, variant=variant, profile=spec.profile, model=model, data_dir=spec.data_dir,
        train_file=spec.task_a_file if stage == 1 else spec.task_b_file,
        r=spec.r, b=spec.b, k=spec.k, alpha=spec.alpha, targets=spec.targets, lr=lr,
        max_steps=spec.stage1_steps if stage == 1 else spec.stage2_steps, batch_size=spec.batch_size,
        micro_batch_size=spec.micro_batch_size, warmup_steps=spec.warmup_steps, cutoff_len=spec.cutoff_len,
        bf16=spec.bf16, seed=seed, n_train=spec.n_train_a if stage == 1 else spec.n_train_b)


def _root(spec: ContinualSpec) -> Path:
    lab = _lab()
    return lab.CACHE / "continual" / spec.profile / lab._hash(spec.key())


def _tests(spec: ContinualSpec, seed: int) -> tuple[dict, dict]:
    """({task: test set} for A, {"gsm8k": test set} for B) of this seed's data."""
    lab = _lab()
    folder = Path(spec.data_dir) if spec.data_dir else lab.offline_data(seed=seed)
    _, tests_a = lab.load_commonsense(folder, split="test")
    b_path = Path(spec.task_b_test)
    b_path = b_path if b_path.is_absolute() else folder / b_path
    return tests_a, {"gsm8k": lab.load_json_records(b_path, kind="math")}


def _accuracy(spec: ContinualSpec, model, tokenizer, tests: dict, task: str) -> float:
    """Percent correct: A = the average over the commonsense tasks, B = arithmetic."""
    lab = _lab()
    if task == "A":
        acc = lab.evaluate(model, tokenizer, tests, spec.eval_limit_a, spec.max_new_tokens_a, spec.eval_batch_size)
    else:
        acc = lab.evaluate(model, tokenizer, tests, spec.eval_limit_b, spec.max_new_tokens_b, spec.eval_batch_size)
    return 100.0 * acc["average"]


def _merged(cfg, method: str):
    """The trained run, merged: a plain model with W0 + ΔW (full fine-tuning: the trained model)."""
    from core.bhra import merge_and_unload

    model, tokenizer = _lab().load_trained(cfg, inject_fn=_inject_fn(method))
    if adapted_layers(model):
        merge_and_unload(model)
    return model.eval(), tokenizer


def run_stage1(spec: ContinualSpec, method: str, seed: int, verbose: bool = False) -> dict:
    """Adapt the base model to task A, merge, save the merged model, measure A. Cached."""
    lab = _lab()
    spec = spec.resolved()
    folder = _root(spec) / method / f"seed{seed}"
    done = folder / "stage1.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = _config(spec, method, seed, 1, spec.model, base_lr(spec, method))
    rec = lab.train(cfg, verbose=verbose, inject_fn=_inject_fn(method))
    model, tokenizer = _merged(cfg, method)
    tests_a, _ = _tests(spec, seed)
    acc_a = _accuracy(spec, model, tokenizer, tests_a, "A")
    lab.save_merged(model, tokenizer, folder / "stage1_model")
    out = {"method": method, "seed": seed, "lr_stage1": cfg.learning_rate, "acc_A_stage1": acc_a,
           "model": str(folder / "stage1_model"), "train_seconds": rec["seconds"], "run_dir": rec["run_dir"]}
    lab._write_json(done, out)
    return out


def run_stage2(spec: ContinualSpec, method: str, seed: int, multiplier: float, verbose: bool = False) -> dict:
    """A fresh adapter of the same method on the merged stage-1 model, trained on B; measure A and B."""
    lab = _lab()
    spec = spec.resolved()
    s1 = run_stage1(spec, method, seed, verbose)
    lr = base_lr(spec, method) * multiplier
    done = _root(spec) / method / f"seed{seed}" / f"stage2-lr{lr:.3g}.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = _config(spec, method, seed, 2, s1["model"], lr)
    rec = lab.train(cfg, verbose=verbose, inject_fn=_inject_fn(method))
    model, tokenizer = _merged(cfg, method)
    tests_a, tests_b = _tests(spec, seed)
    out = {"method": method, "seed": seed, "lr": lr, "lr_multiplier": multiplier,
           "acc_A_stage1": s1["acc_A_stage1"],
           "acc_A_stage2": _accuracy(spec, model, tokenizer, tests_a, "A"),
           "acc_B_stage2": _accuracy(spec, model, tokenizer, tests_b, "B"),
           "train_seconds": s1["train_seconds"] + rec["seconds"], "run_dir": rec["run_dir"]}
    lab._write_json(done, out)
    return out


def base_accuracy(spec: ContinualSpec, seed: int) -> dict:
    """The untuned base model on A and B (the floor every method should clear). Cached."""
    lab = _lab()
    spec = spec.resolved()
    done = _root(spec) / "base" / f"seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    model, tokenizer = lab.load_model(spec.model)
    tests_a, tests_b = _tests(spec, seed)
    out = {"seed": seed, "acc_A": _accuracy(spec, model, tokenizer, tests_a, "A"),
           "acc_B": _accuracy(spec, model, tokenizer, tests_b, "B")}
    lab._write_json(done, out)
    return out


def run_grid(spec: ContinualSpec, verbose: bool = False, progress=print) -> list[dict]:
    """Every (method, seed, stage-2 lr) of the spec: one record each, in the format summarize() takes."""
    import time

    spec = spec.resolved()
    records = []
    for method in spec.methods:
        t0 = time.time()
        for seed in spec.seeds:
            for mult in spec.lr_multipliers:
                records.append(run_stage2(spec, method, seed, mult, verbose))
        if progress:
            progress(f"{method:15s} {len(spec.seeds)} seeds × {len(spec.lr_multipliers)} stage-2 lrs  "
                     f"{time.time() - t0:6.1f} s")
    return records


# ---------------------------------------------------------------------------------------------
# 4. What the update looks like (notebook 07)
# ---------------------------------------------------------------------------------------------
# For every adapted layer: the number of singular values of ΔW above 0.005 (HiRA's measure), the
# stable rank ‖ΔW‖_F²/‖ΔW‖_2², and the Gini coefficient of the update's energy over a g×g grid of
# blocks (0: spread evenly over the blocks, → 1: concentrated in a few).


def layer_updates(model, base=None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(layer name, ΔW, W0)] of an adapted model; for a fully fine-tuned `model`, pass the `base`
    model and get ΔW = W − W0 for the same nn.Linear layers the adapters target."""
    if base is None:
        return [(name, layer.delta_weight().detach().float(), layer.W0.detach().float())
                for name, layer in adapted_layers(model)]
    tuned = dict(model.named_modules())
    out = []
    for name, mod in base.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "gate_proj", "up_proj", "down_proj"):
            W0 = mod.weight.detach().float()
            out.append((name, tuned[name].weight.detach().float() - W0, W0))
    return out


def update_measures(updates, g: int, threshold: float = 0.005):
    """One row per layer: shape, singular values above `threshold`, stable rank, block-energy Gini."""
    import pandas as pd

    from core.bhra import block_energy, count_singular_values, gini, stable_rank

    rows = []
    for name, dW, W0 in updates:
        m, n = dW.shape
        rows.append({"layer": name, "module": name.rsplit(".", 1)[-1], "m": m, "n": n,
                     "sv_above": count_singular_values(dW, threshold), "stable_rank": stable_rank(dW),
                     "block_gini": gini(block_energy(dW, g)), "norm": float(dW.norm())})
    return pd.DataFrame(rows)


def normalised_spectra(updates, k: int | None = None) -> np.ndarray:
    """(layers, k) singular values σ_i/σ_1 of each ΔW, padded with NaN to a common length."""
    spectra = [torch.linalg.svdvals(dW.double()).numpy() for _, dW, _ in updates]
    k = k or max(len(s) for s in spectra)
    out = np.full((len(spectra), k), np.nan)
    for i, s in enumerate(spectra):
        s = s[:k] / s[0] if s[0] > 0 else np.zeros(min(k, len(s)))
        out[i, :len(s)] = s
    return out
