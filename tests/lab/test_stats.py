"""lab.stats: means with 95 % t-intervals over seeds, paired differences, verdicts, plotted intervals."""

import math

import pytest


def test_mean_ci_is_students_t_over_seeds():
    from lab.stats import mean_ci

    # 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303, half = 4.303 / √3 = 2.4843
    ci = mean_ci([1, 2, 3])
    assert (ci.mean, ci.n) == (2, 3)
    assert ci.half == pytest.approx(4.303 / math.sqrt(3))
    assert ci.fmt() == "2.0 ± 2.5"
    # 10, 20, 30, 40: mean 25, s = √(500/3) = 12.910, t(0.975, 3) = 3.182, half = 3.182 · 12.910 / 2 = 20.540
    assert mean_ci([10, 20, 30, 40]).half == pytest.approx(3.182 * math.sqrt(500 / 3) / 2)
    one = mean_ci([7.0])
    assert one.mean == 7.0 and math.isnan(one.half) and one.fmt() == "7.0 ± n/a"
    assert mean_ci([1, float("nan"), 3]).n == 2  # NaN entries are dropped


def test_paired_difference_is_taken_seed_by_seed():
    from lab.stats import paired_diff

    # a − b by seed: 10, 4, 6 (seed 3 is only in a: left out); mean 20/3, s = √(28/3) = 3.055,
    # half = 4.303 · 3.055 / √3 = 7.590. Unpaired, the spread of a and of b would be compared instead.
    d = paired_diff({0: 70, 1: 66, 2: 71, 3: 99}, {0: 60, 1: 62, 2: 65})
    assert d.n == 3 and d.mean == pytest.approx(20 / 3)
    assert d.half == pytest.approx(4.303 * math.sqrt(28 / 3) / math.sqrt(3))


def test_verdicts_need_three_seeds_and_an_interval_clear_of_zero():
    from lab.stats import CI, verdict

    assert verdict(CI(20.0, 0.0, 1)) == "too few seeds"        # one seed: never "above"
    assert verdict(CI(20.0, 5.0, 2)) == "too few seeds"
    assert verdict(CI(6.0, 5.0, 3)) == "above"                 # [1, 11]
    assert verdict(CI(-6.0, 5.0, 3)) == "below"                # [−11, −1]
    assert verdict(CI(4.0, 5.0, 3)) == "inconclusive"          # [−1, 9]
    assert verdict(CI(float("nan"), float("nan"), 3)) == "undefined"


def test_plotted_intervals_stop_where_an_accuracy_can_go():
    from lab.stats import bounded_errorbars

    # 10 ± 20 -> [0, 30]; 50 ± 5 -> [45, 55]; 95 ± 10 -> [85, 100]; a NaN half-width or mean draws no bar
    err = bounded_errorbars([10, 50, 95, 40, float("nan")], [20, 5, 10, float("nan"), 3])
    assert err.shape == (2, 5)
    assert err.tolist() == [[10, 5, 10, 0, 0], [20, 5, 5, 0, 0]]
    assert bounded_errorbars([0.5], [2.0], lo=0.0, hi=1.0).tolist() == [[0.5], [0.5]]
