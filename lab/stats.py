"""Statistics over seeds, the few a referee asks for: a mean with its 95 % t-interval, and a paired
difference (by seed) with its 95 % t-interval. With fewer than MIN_SEEDS seeds no verdict is given.

    ci = mean_ci([61.0, 64.5, 59.8])          # CI(mean, half, n): mean ± half is the 95 % interval
    d = paired_diff({0: 70, 1: 66, 2: 71}, {0: 60, 1: 62, 2: 65})   # by seed: 10, 4, 6
    verdict(d)                                 # "above" / "below" / "inconclusive" / "too few seeds"
    against(ci, 50.0)                          # the same verdict for a mean against a fixed level (chance)

The interval is Student's t over seeds: mean ± t(0.975, n−1) · s / √n, s the sample standard deviation
(ddof = 1). It treats the seeds as the unit of replication (each seed draws its own data, adapter
initialisation and batch order), so it covers seed-to-seed variation, test-set sampling included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3  # below this a verdict reads "too few seeds"


# Student's t, 97.5 % quantile (two-sided 95 %), df = 1..30; beyond, the normal value plus Cornish-Fisher's 1/df term.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t(0.975, df): the multiplier of s/√n in a two-sided 95 % interval (no scipy needed)."""
    if df < 1:
        raise ValueError("a t-interval needs at least two values (df >= 1)")
    return T975[df - 1] if df <= len(T975) else 1.95996 + 2.3722 / df


@dataclass(frozen=True)
class CI:
    """A mean over n values with the half-width of its 95 % t-interval (NaN for n < 2)."""
    mean: float
    half: float
    n: int

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def fmt(self, digits: int = 1) -> str:
        half = "n/a" if math.isnan(self.half) else f"{self.half:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {half}"


def mean_ci(values) -> CI:
    """Mean and 95 % t-interval half-width of `values` (NaN entries dropped)."""
    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return CI(math.nan, math.nan, 0)
    if n == 1:
        return CI(float(x[0]), math.nan, 1)
    return CI(float(x.mean()), t_quantile(n - 1) * float(x.std(ddof=1)) / math.sqrt(n), n)


def paired_diff(a: dict, b: dict) -> CI:
    """a − b seed by seed ({seed: value} each, over the seeds both have), with its 95 % t-interval."""
    common = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in common])


def verdict(d: CI, min_seeds: int = MIN_SEEDS) -> str:
    """"above" (the whole interval > 0), "below" (< 0), "inconclusive" (it contains 0), or
    "too few seeds" (n < min_seeds), or "undefined" (no value)."""
    if d.n < min_seeds:
        return "too few seeds"
    if math.isnan(d.mean):
        return "undefined"
    if d.lo > 0:
        return "above"
    if d.hi < 0:
        return "below"
    return "inconclusive"


def against(ci: CI, level: float, min_seeds: int = MIN_SEEDS) -> str:
    """A mean over seeds against a fixed level (chance, the majority answer): `verdict` of mean − level, i.e.
    "above" when the whole interval lies above the level, "below" when below it, "inconclusive" when it
    contains the level, "too few seeds" below `min_seeds`."""
    return verdict(CI(ci.mean - level, ci.half, ci.n), min_seeds)


def seed_line(baseline: float, n: int, z: float = 1.96) -> float:
    """The accuracy (in %) one seed must pass to clear `baseline` (in %) on `n` test items: the baseline plus `z`
    binomial standard errors at the baseline's rate, 100·√(p(1 − p)/n) with p = baseline/100."""
    p = min(max(baseline / 100, 0.0), 1.0)
    return baseline + z * 100 * math.sqrt(p * (1 - p) / n)


def one_seed_clears(acc: float, baseline: float, n: int, z: float = 1.96) -> bool:
    """Does one seed's accuracy (in %, over `n` test items) pass `seed_line(baseline, n, z)`? A seed that does
    learned the task beyond what the test set's sampling noise around the baseline would give; one that does not
    missed it. Per seed there is no interval over seeds, so this test-set error is the only yardstick."""
    return bool(acc > seed_line(baseline, n, z))


def bounded_errorbars(mean, half, lo: float = 0.0, hi: float = 100.0) -> np.ndarray:
    """matplotlib's (2, n) xerr / yerr for mean ± half, cut at the range the quantity can take (an accuracy:
    0-100 %). A t-interval over three seeds is symmetric and can pass 0 or 100; a plot draws only the part
    of it that an accuracy can reach (the tables keep the whole half-width). NaN draws no bar."""
    m, h = np.asarray(mean, dtype=float), np.asarray(half, dtype=float)
    return np.nan_to_num(np.stack([np.clip(np.minimum(h, m - lo), 0, None), np.clip(np.minimum(h, hi - m), 0, None)]))


def majority(answers) -> float:
    """The share of the most common answer: what a model that always gives it scores (a baseline)."""
    _, counts = np.unique(np.asarray(list(answers)), return_counts=True)
    return float(counts.max() / counts.sum())
