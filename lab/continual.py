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

The referee's ablation, `bhra_blocknorm` (core.bhra), keeps BHRA's grid but gives every W0 block
the same magnitude: if it retains as well as BHRA, the gain does not come from scaling each block
by its |W0|.

Sections
  1. the metric: one function from per-seed accuracy tables to frontiers and matched retention
  2. the protocol: a ContinualSpec (a RunConfig preset for both stages, plus task B and the sweep),
     stage 1, merge, stage 2 sweep, evaluation, cached per (method, seed, lr)
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.bhra import adapted_layers, merge_and_unload
from lab.cache import lock, read_json, root, stable_hash, write_json
from lab.config import ABLATIONS, RunConfig, for_method, preset
from lab.finetune import (data_dir, evaluate, load_base, load_trained, model_identity, save_merged, stored_dtype,
                          train)
from lab.pool import in_parallel
from lab.formats import load_commonsense, load_json_records
from lab.stats import CI, mean_ci, paired_diff, verdict

ADDITIVE = ("lora", "gralora", "abba")  # the W0-free additive controls of the paper
ABLATION = ABLATIONS[0]  # "bhra_blocknorm": BHRA with every W0 block normalised to the same magnitude

# ---------------------------------------------------------------------------------------------
# 1. The metric: frontiers and retention at matched plasticity
# ---------------------------------------------------------------------------------------------
# Input: one row per (method, seed, stage-2 learning rate) with the three accuracies.
#
#   frontier   per (method, lr): mean, std and 95 % t-interval over seeds of plasticity P = acc_B_stage2,
#              retention R = acc_A_stage2, stage-1 accuracy, and forgetting = acc_A_stage1 − R.
#   envelope   per method, the non-dominated points of its frontier: a point (P̄, R̄) is dropped when another
#              learning rate of the same method reaches at least its plasticity AND at least its retention
#              (one of them strictly). Sorted by P̄, the envelope's retention falls as plasticity rises.
#   level      the common plasticity level P*: the highest plasticity that every method of a FIXED set
#              reaches on its envelope, min_m max_lr P̄(m, lr), over LEVEL_METHODS (the additive controls and
#              BHRA). Optional methods (HiRA, the ablation, full fine-tuning) never move P*.
#   matched    per method, retention at P*: the envelope is a piecewise-linear curve; P* falls between two of
#              its points with weight w. Every seed's retention is interpolated with the same two points and
#              the same w, so the seeds stay paired and the mean of the per-seed values is exactly the
#              interpolated mean envelope. Outside a method's envelope the value is NaN (no extrapolation).
#   additive   per seed, the mean of the additive controls' matched retention (LoRA, GraLoRA, ABBA), then
#              mean ± std over seeds; `gap` is each method minus that, seed by seed, with a 95 % t-interval
#              on the paired difference (lab.stats); `verdict` reads it ("too few seeds" below 3 seeds), and
#              `claim` says "untestable" where P* does not clear task B's majority-answer accuracy.

COLUMNS = ("method", "seed", "lr", "acc_A_stage1", "acc_A_stage2", "acc_B_stage2")
LEVEL_METHODS = ADDITIVE + ("bhra",)  # the fixed set P* is defined on


@dataclass
class ContinualSummary:
    frontier: "pd.DataFrame"  # one row per (method, lr): means, stds, 95 % half-widths over seeds; on_envelope
    matched: "pd.DataFrame"  # one row per method: retention at the common plasticity level
    per_seed: "pd.DataFrame"  # (method, seed) -> that seed's matched retention, and its plasticity at P*
    level: float  # the common plasticity level P*
    additive: tuple[float, float]  # mean ± std over seeds of the additive controls' matched retention
    additive_methods: tuple[str, ...] = field(default=ADDITIVE)
    level_methods: tuple[str, ...] = field(default=LEVEL_METHODS)

    def gap(self, method: str) -> CI:
        """Matched retention of `method` minus the additive-control mean, paired by seed: CI(mean, half, n)."""
        row = self.matched.set_index("method").loc[method]
        return CI(float(row["gap_mean"]), float(row["gap_half"]), int(row["gap_n"]))

    def paired(self, a: str, b: str) -> CI:
        """Matched retention of `a` minus that of `b`, seed by seed, with its 95 % t-interval."""
        r = self.per_seed.pivot(index="seed", columns="method", values="retention")
        return paired_diff(r[a].dropna().to_dict(), r[b].dropna().to_dict())

    def verdict(self, method: str) -> str:
        """Is `method`'s gap to the additive controls above 0, below, or inconclusive? ("too few seeds" below 3)."""
        return verdict(self.gap(method))

    def claim(self, method: str = "bhra", floor: float = -math.inf, chance: float = -math.inf) -> str:
        """The paper's claim (a) for `method`: its verdict, or "untestable" when P* does not clear `floor`, task
        B's majority-answer accuracy (matched there, no method has learned more of B than one constant answer
        gives, so retention is compared between models that made no trade-off at all), or when neither the
        method's matched retention nor the additive-control mean clears `chance`, task A's chance (there neither
        side keeps more of A than answering at random would score, so no retention is compared)."""
        if not self.level > floor or not self.retains_above(chance, method):
            return "untestable"
        return self.verdict(method)

    def retains_above(self, chance: float, method: str = "bhra") -> bool:
        """Does `method`'s mean matched retention, or the additive-control mean, lie above `chance`?"""
        mine = self.matched.set_index("method").loc[method, "retention_mean"]
        return bool(mine > chance or self.additive[0] > chance)

    def plasticity_at_level(self, method: str) -> "pd.Series":
        """{seed: plasticity} of `method` at P*, interpolated with the same envelope points and weight as its
        matched retention (their mean is P* itself; NaN where the envelope does not reach P*). P* is a mean over
        seeds: these values say how far apart the seeds it stands for are."""
        return self.per_seed[self.per_seed["method"] == method].set_index("seed")["plasticity"]


def _std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), 0 for a single value, ignoring NaN."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def envelope(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated points of (p, r): no other point has p' >= p and r' >= r, one strictly."""
    p, r = np.asarray(p, dtype=float), np.asarray(r, dtype=float)
    keep = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        dominated = (p >= p[i]) & (r >= r[i]) & ((p > p[i]) | (r > r[i]))
        keep[i] = not dominated.any()
    return keep


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


def summarize(records, level: float | None = None, additive: tuple[str, ...] = ADDITIVE,
              level_methods: tuple[str, ...] = LEVEL_METHODS) -> ContinualSummary:
    """Frontiers, their non-dominated envelopes, the common plasticity level, matched retention, the
    additive-control mean and every method's paired gap to it.

    `records`: a DataFrame or a list of dicts with the columns of COLUMNS (accuracies in any unit,
    e.g. percent). Every method must have the same seeds at every one of its learning rates.
    `level`: P* (default: the highest plasticity every method of `level_methods` present reaches).
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
            ci = mean_ci(g[col])
            row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_half"] = ci.mean, _std(g[col]), ci.half
        rows.append(row)
    frontier = pd.DataFrame(rows)
    frontier["on_envelope"] = False
    for method, f in frontier.groupby("method"):
        frontier.loc[f.index, "on_envelope"] = envelope(f["plasticity_mean"], f["retention_mean"])

    env = frontier[frontier["on_envelope"]]
    present = [m for m in level_methods if m in set(df["method"])]
    if level is None:  # the highest plasticity every method of the fixed set reaches
        compared = env[env["method"].isin(present)] if present else env
        level = float(compared.groupby("method")["plasticity_mean"].max().min())

    matched_rows, seed_rows = [], []
    for method, f in env.groupby("method", sort=False):
        f = f.sort_values(["plasticity_mean", "lr"])
        p = f["plasticity_mean"].to_numpy()
        br = _bracket(p, level)
        g = df[df["method"] == method]
        seeds = sorted(g["seed"].unique())
        wide = g.pivot(index="seed", columns="lr", values="acc_A_stage2").loc[seeds]  # (seed, lr)
        wide_p = g.pivot(index="seed", columns="lr", values="acc_B_stage2").loc[seeds]  # (seed, lr)
        stage1 = g.groupby("seed")["acc_A_stage1"].mean().loc[seeds]
        if br is None:
            per_seed = per_seed_p = np.full(len(seeds), np.nan)
            lr_lo = lr_hi = w = np.nan
        else:
            lo, hi, w = br
            lr_lo, lr_hi = f["lr"].iloc[lo], f["lr"].iloc[hi]
            per_seed = (1 - w) * wide[lr_lo].to_numpy() + w * wide[lr_hi].to_numpy()
            per_seed_p = (1 - w) * wide_p[lr_lo].to_numpy() + w * wide_p[lr_hi].to_numpy()  # mean: P*
        for s, v, pv, a1 in zip(seeds, per_seed, per_seed_p, stage1):
            seed_rows.append({"method": method, "seed": s, "retention": float(v), "plasticity": float(pv),
                              "stage1": float(a1)})
        r_ci, s_ci = mean_ci(per_seed), mean_ci(stage1.to_numpy())
        matched_rows.append({"method": method, "level": level, "n_seeds": len(seeds),
                             "retention_mean": float(np.mean(per_seed)), "retention_std": _std(per_seed),
                             "retention_half": r_ci.half if br is not None else math.nan,
                             "stage1_mean": float(stage1.mean()), "stage1_std": _std(stage1.to_numpy()),
                             "stage1_half": s_ci.half, "lr_lo": lr_lo, "lr_hi": lr_hi, "w": w})
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

    gaps = []
    for method in matched["method"]:
        if add_seed is None:
            gaps.append((math.nan, math.nan, math.nan, 0)); continue
        mine = per_seed[per_seed["method"] == method].set_index("seed")["retention"]
        common = mine.index.intersection(add_seed.index)
        d = (mine.loc[common] - add_seed.loc[common]).to_numpy()
        ci = mean_ci(d) if len(d) and not np.isnan(d).any() else CI(math.nan, math.nan, len(d))
        gaps.append((ci.mean, _std(d), ci.half, len(d)))
    matched["gap_mean"], matched["gap_std"], matched["gap_half"], matched["gap_n"] = (
        [g[i] for g in gaps] for i in range(4))
    return ContinualSummary(frontier=frontier, matched=matched, per_seed=per_seed, level=float(level),
                            additive=additive_stat, additive_methods=tuple(present), level_methods=tuple(
                                m for m in level_methods if m in set(df["method"])))


def sensitivity(records, method: str = "bhra", offsets=(-10.0, -5.0, -2.0, 0.0), **kw) -> "pd.DataFrame":
    """`method`'s paired gap to the additive controls at P* + each offset (P* of summarize(records)):
    a verdict that flips within a few points of P* hinges on where P* happens to fall."""
    import pandas as pd

    level = summarize(records, **kw).level
    rows = []
    for off in offsets:
        g = summarize(records, level=level + off, **kw).gap(method)
        rows.append({"offset": off, "level": level + off, "gap_mean": g.mean, "gap_half": g.half, "n": g.n,
                     "verdict": verdict(g)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# 2. The protocol: stage 1 on A, merge, stage 2 on B at several learning rates, evaluate
# ---------------------------------------------------------------------------------------------
# Training and evaluation are the lab harness's (lab.finetune.train / evaluate): the same Trainer,
# prompts, tokenisation and answer extraction as notebooks 04-05. Stage 2 starts from the merged
# stage-1 model saved with save_pretrained, so it loads like any base model (RunConfig.model is
# that folder). Every finished piece is cached under .cache/continual/, keyed by its settings.

GRIDS = {  # the notebooks' committed outputs come from "full", the default
    "full": dict(seeds=(0, 1, 2), lr_multipliers=(0.1, 0.3, 1.0)),
    "ci": dict(seeds=(0,), lr_multipliers=(0.1, 1.0)),
}


def grid_from_env(default: str = "full") -> tuple[str, dict]:
    """(name, settings) of the grid BHRA_GRID names: what the notebooks' parameters cells read."""
    name = os.environ.get("BHRA_GRID", default).strip().lower()
    if name not in GRIDS:
        raise ValueError(f"BHRA_GRID={name!r}: choose one of {sorted(GRIDS)}")
    return name, dict(GRIDS[name])


@dataclass
class ContinualSpec:
    """One continual-learning experiment, identical for every method: `run` is the RunConfig of
    stage 1 (a profile preset); stage 2 is the same run on task B with its own steps and rates."""
    run: RunConfig = field(default_factory=RunConfig)
    task_b_file: str = "ft-training_set/math_synthetic.json"  # stage 2's training file, inside the data folder
    task_b_test: str = "dataset/gsm8k/test.json"  # plasticity is measured here (inside the data folder)
    stage2_steps: int = 100
    n_train_b: int | None = None  # use only the first n records of B's training file (None: all)
    methods: tuple[str, ...] = ("lora", "gralora", "abba", "hira", "bhra", ABLATION, "full")
    seeds: tuple[int, ...] = (0, 1, 2)
    lr_multipliers: tuple[float, ...] = (0.1, 0.3, 1.0)  # stage-2 lr = the method's table lr × these
    eval_limit_a: int | None = 25  # test examples per commonsense task (None: all)
    eval_limit_b: int | None = 100  # arithmetic test examples (None: all)
    max_new_tokens_b: int = 32  # arithmetic answers are longer than a choice
    cutoff_len_b: int | None = None  # stage 2's cutoff_len (None: the run's); worked solutions are longer

    def __post_init__(self):
        self.methods, self.seeds = tuple(self.methods), tuple(self.seeds)
        self.lr_multipliers = tuple(self.lr_multipliers)

    @property
    def profile(self) -> str:
        return self.run.profile

    def key(self) -> dict:
        """The settings a stage-1 run depends on (the stage-2 sweep is not among them), with the
        base model's identity, so a rebuilt base never mixes with old results."""
        d = dataclasses.asdict(self)
        for k in ("methods", "seeds", "lr_multipliers"):
            d.pop(k)
        d["base"] = model_identity(self.run.model, self.run.cache)
        for k in ("cache", "progress"):  # where the pieces are stored, and bars, are no part of what they are
            d["run"].pop(k)
        return d


# The profiles of the continual lab: presets of the same shape (a RunConfig preset + task B).
CONTINUAL = {
    "offline": dict(
        run=dict(max_new_tokens=10),  # stage 1 IS notebook 04's run of each method and seed (same RunConfig, same cache)
        stage2_steps=100, n_train_b=None,                   # 100 steps of 16 on B (the 2000 arithmetic records)
        eval_limit_a=50, eval_limit_b=200, max_new_tokens_b=24),  # 8 × 50 commonsense and 200 arithmetic questions; a worked answer is ~16 tokens
    "smol": dict(  # SmolLM2-135M-Instruct on the offline tasks; stage 2 as long as stage 1 (not yet tuned)
        run=dict(max_new_tokens=10), stage2_steps=60, n_train_b=None,
        eval_limit_a=50, eval_limit_b=200, max_new_tokens_b=24),
    "paper": dict(
        run=dict(model="meta-llama/Llama-3.2-3B",            # the paper's continual model; "...-1B" fits smaller GPUs
                 max_steps=3000, max_new_tokens=32, eval_batch_size=32),
        task_b_file="ft-training_set/MetaMathQA-40K.json",  # written by `python -m lab.data`
        stage2_steps=2000, eval_limit_a=None, eval_limit_b=None, max_new_tokens_b=256,
        cutoff_len_b=512),  # ABBA's train_arithmetic.py --max_seq_length: 256 cuts the long MetaMathQA solutions
}


def continual_preset(profile: str = "offline", grid: str = "full", run: dict | None = None,
                     **overrides) -> ContinualSpec:
    """The profile's ContinualSpec: its RunConfig preset (plus `run` overrides), the grid's seeds
    and rates (GRIDS), then `overrides` on top."""
    if profile not in CONTINUAL:
        raise ValueError(f"unknown profile {profile!r}: choose one of {sorted(CONTINUAL)}")
    p = dict(CONTINUAL[profile])
    run_cfg = preset(profile, **{**p.pop("run"), **(run or {})})
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}: choose one of {sorted(GRIDS)}")
    return ContinualSpec(run=run_cfg, **{**p, **GRIDS[grid], **overrides})


def base_lr(spec: ContinualSpec, method: str) -> float:
    """The method's stage-1 learning rate: spec.run's `lr` if set, else the lab's table (the ablation uses BHRA's)."""
    return for_method(spec.run, method).learning_rate


def stage_config(spec: ContinualSpec, method: str, seed: int, stage: int, model: str, lr: float) -> RunConfig:
    """The RunConfig of one stage's run: the method's own settings, trained from `model` at `lr`."""
    if stage == 1:
        return dataclasses.replace(for_method(spec.run, method), seed=seed, lr=lr)
    return dataclasses.replace(for_method(spec.run, method), seed=seed, lr=lr, model=model,
                               train_file=spec.task_b_file, max_steps=spec.stage2_steps, n_train=spec.n_train_b,
                               cutoff_len=spec.cutoff_len_b or spec.run.cutoff_len)


def _root(spec: ContinualSpec) -> Path:
    return root(spec.run.cache) / "continual" / spec.profile / stable_hash(spec.key())


def check_data(spec: ContinualSpec, seed: int = 0) -> None:
    """Fail before stage 1 if a file of either stage is missing (the error names the fix)."""
    folder = data_dir(dataclasses.replace(spec.run, seed=seed))
    for f in (spec.run.train_file, spec.task_b_file, spec.task_b_test):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} is missing: the continual lab needs both stages' files before it "
                                    f"starts. Run `python -m lab.data` (needs hub access) or point data_dir at them.")


def _tests(spec: ContinualSpec, seed: int) -> tuple[dict, dict]:
    """({task: test set} for A, {"gsm8k": test set} for B) of this seed's data."""
    folder = data_dir(dataclasses.replace(spec.run, seed=seed))
    _, tests_a = load_commonsense(folder, split="test")
    return tests_a, {"gsm8k": load_json_records(folder / spec.task_b_test, kind="math")}


def _accuracy(spec: ContinualSpec, model, tokenizer, tests: dict, task: str) -> float:
    """Percent correct: A = the average over the commonsense tasks, B = arithmetic."""
    if task == "A":
        acc = evaluate(model, tokenizer, tests, spec.eval_limit_a, cfg=spec.run)
    else:
        acc = evaluate(model, tokenizer, tests, spec.eval_limit_b,
                       cfg=dataclasses.replace(spec.run, max_new_tokens=spec.max_new_tokens_b))
    return 100.0 * acc["average"]


def _merged(cfg: RunConfig):
    """The trained run, merged: a plain model with W0 + ΔW (full fine-tuning: the trained model)."""
    model, tokenizer = load_trained(cfg)
    if adapted_layers(model):
        merge_and_unload(model)
    return model.eval(), tokenizer


def _once(done: Path, measure) -> dict:
    """`done`'s record, measured and written first if it is not there yet: by one process at a time (a second
    waits for the first, then reads its record)."""
    if not done.exists():
        with lock(done):
            if not done.exists():
                write_json(done, measure())
    return read_json(done, f"delete {done} to measure it again")


def run_stage1(spec: ContinualSpec, method: str, seed: int, verbose: bool = False) -> dict:
    """Adapt the base model to task A, merge, save the merged model (base dtype), measure A. Cached."""
    cfg = stage_config(spec, method, seed, 1, spec.run.model, base_lr(spec, method))
    folder = _root(spec) / f"{method}-lr{cfg.learning_rate:.3g}" / f"seed{seed}"

    def measure():
        check_data(spec, seed)
        rec = train(cfg, verbose=verbose)
        model, tokenizer = _merged(cfg)
        tests_a, _ = _tests(spec, seed)
        acc_a = _accuracy(spec, model, tokenizer, tests_a, "A")
        save_merged(model, tokenizer, folder / "stage1_model", dtype=stored_dtype(spec.run.model, spec.run.cache))
        return {"method": method, "seed": seed, "lr_stage1": cfg.learning_rate, "acc_A_stage1": acc_a,
                "model": str(folder / "stage1_model"), "train_seconds": rec["seconds"], "run_dir": rec["run_dir"]}
    return _once(folder / "stage1.json", measure)


def run_stage2(spec: ContinualSpec, method: str, seed: int, multiplier: float, verbose: bool = False) -> dict:
    """A fresh adapter of the same method on the merged stage-1 model, trained on B; measure A and B."""
    s1 = run_stage1(spec, method, seed, verbose)
    lr = base_lr(spec, method) * multiplier

    def measure():
        cfg = stage_config(spec, method, seed, 2, s1["model"], lr)
        rec = train(cfg, verbose=verbose)
        model, tokenizer = _merged(cfg)
        tests_a, tests_b = _tests(spec, seed)
        return {"method": method, "seed": seed, "lr": lr, "lr_multiplier": multiplier,
                "acc_A_stage1": s1["acc_A_stage1"],
                "acc_A_stage2": _accuracy(spec, model, tokenizer, tests_a, "A"),
                "acc_B_stage2": _accuracy(spec, model, tokenizer, tests_b, "B"),
                "train_seconds": s1["train_seconds"] + rec["seconds"], "run_dir": rec["run_dir"]}
    return _once(Path(s1["model"]).parent / f"stage2-lr{lr:.3g}.json", measure)


def base_accuracy(spec: ContinualSpec, seed: int) -> dict:
    """The untuned base model on A and B (the floor every method should clear). Cached."""
    def measure():
        model, tokenizer = load_base(spec.run, verbose=False)  # on the device, in the dtype its runs are evaluated in
        tests_a, tests_b = _tests(spec, seed)
        return {"seed": seed, "acc_A": _accuracy(spec, model, tokenizer, tests_a, "A"),
                "acc_B": _accuracy(spec, model, tokenizer, tests_b, "B")}
    return _once(_root(spec) / "base" / f"seed{seed}.json", measure)


def run_grid(spec: ContinualSpec, verbose: bool = False, progress=print) -> list[dict]:
    """Every (method, seed, stage-2 lr) of the spec: one record each, in the format summarize() takes."""
    for seed in spec.seeds:
        check_data(spec, seed)  # a missing stage-2 file is found before hours of stage 1
    t0 = time.time()
    grid = [(spec, m, seed, mult) for m in spec.methods for seed in spec.seeds for mult in spec.lr_multipliers]
    if spec.run.threads == 1:  # single-threaded runs go side by side, one per core
        in_parallel(run_stage1, [(spec, m, seed, verbose) for m in spec.methods for seed in spec.seeds])
        records = in_parallel(run_stage2, [(*job, verbose) for job in grid])
    else:
        records = [run_stage2(*job, verbose) for job in grid]
    if progress:
        progress(f"{len(records)} stage-2 runs ({len(spec.methods)} methods × {len(spec.seeds)} seeds × "
                 f"{len(spec.lr_multipliers)} rates) in {time.time() - t0:.0f} s")
    return records


def recorded_train_seconds(spec: ContinualSpec, records: list[dict]) -> dict:
    """The training time the grid's runs recorded when they were trained, in seconds: {"stage1": the sum over the
    stage-1 runs (one per method and seed), "stage2": the sum over the stage-2 runs, "runs": how many of each}.

    Each stage-2 record's `train_seconds` holds its stage-1 run's time plus its own, so stage 1 is taken from its
    (cached) record once per (method, seed) and subtracted. A grid read back from the cache takes seconds; this is
    what training it took, each run timed in its own process (runs went side by side, so the wall time was shorter)."""
    pairs = sorted({(r["method"], r["seed"]) for r in records})
    stage1 = {(m, s): run_stage1(spec, m, s)["train_seconds"] for m, s in pairs}
    stage2 = sum(r["train_seconds"] - stage1[(r["method"], r["seed"])] for r in records)
    return {"stage1": float(sum(stage1.values())), "stage2": float(stage2), "runs": (len(stage1), len(records))}
