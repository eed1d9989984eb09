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


def test_a_mean_is_read_against_a_fixed_level_by_its_interval():
    from lab.stats import CI, against

    assert against(CI(60.0, 5.0, 3), 50.0) == "above"          # [55, 65] clears 50
    assert against(CI(52.0, 5.0, 3), 50.0) == "inconclusive"   # [47, 57] contains 50
    assert against(CI(40.0, 5.0, 3), 50.0) == "below"          # [35, 45]
    assert against(CI(90.0, 1.0, 2), 50.0) == "too few seeds"


def test_one_seed_clears_a_baseline_by_two_binomial_standard_errors():
    from lab.stats import one_seed_clears, seed_line

    # baseline 50 % on 300 items: SE = 100·√(0.25/300) = 2.887 points, 1.96 SE = 5.658: the line is 55.658
    assert seed_line(50.0, 300) == pytest.approx(50 + 1.96 * 100 * math.sqrt(0.25 / 300))
    assert one_seed_clears(55.7, 50.0, 300) and not one_seed_clears(55.6, 50.0, 300)
    # baseline 25 % on 300 items: SE = 100·√(0.1875/300) = 2.5 points, 1.96 SE = 4.9: the line is 29.9
    assert one_seed_clears(30.0, 25.0, 300) and not one_seed_clears(29.8, 25.0, 300)
    assert not one_seed_clears(20.0, 25.0, 300)
