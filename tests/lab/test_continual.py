"""Tests for lab/continual.py: the retention/plasticity metric and the protocol (the ablation's layer is
core.bhra's and is tested with the core).

Lesson 6 (continual learning). The metric tests use small tables whose answers were worked out by
hand (the arithmetic is in the comments), so a change in the definition shows up as a failure.
"""

import math

import pytest
import torch

from lab.continual import ABLATION, continual_preset, summarize


def rows(method, table):
    """table: {lr: [(seed, acc_A_stage1, acc_A_stage2, acc_B_stage2), ...]} -> records."""
    return [dict(method=method, lr=lr, seed=s, acc_A_stage1=a1, acc_A_stage2=a2, acc_B_stage2=b2)
            for lr, entries in table.items() for s, a1, a2, b2 in entries]


# Two methods, two seeds, two stage-2 learning rates each.
#   lora  lr 1e-3: P = 20, 30 (mean 25), R = 60, 70 (65);   lr 1e-2: P = 50, 70 (60), R = 30, 40 (35)
#   bhra  lr 1e-3: P = 10, 20 (15),      R = 80, 90 (85);   lr 1e-2: P = 40, 40 (40), R = 70, 60 (65)
TABLE = rows("lora", {1e-3: [(0, 90, 60, 20), (1, 92, 70, 30)], 1e-2: [(0, 90, 30, 50), (1, 92, 40, 70)]}) + \
        rows("bhra", {1e-3: [(0, 95, 80, 10), (1, 93, 90, 20)], 1e-2: [(0, 95, 70, 40), (1, 93, 60, 40)]})


def test_frontier_is_mean_and_std_over_seeds():
    s = summarize(TABLE)
    f = s.frontier.set_index(["method", "lr"])
    assert f.loc[("lora", 1e-2), "plasticity_mean"] == pytest.approx(60)
    assert f.loc[("lora", 1e-2), "plasticity_std"] == pytest.approx(20 / math.sqrt(2))  # sample std of 50, 70
    assert f.loc[("lora", 1e-3), "retention_mean"] == pytest.approx(65)
    assert f.loc[("lora", 1e-3), "forgetting_mean"] == pytest.approx(((90 - 60) + (92 - 70)) / 2)
    assert f.loc[("bhra", 1e-3), "stage1_mean"] == pytest.approx(94)
    assert (f["n_seeds"] == 2).all()


@pytest.mark.exercise6
def test_matched_retention_interpolates_along_each_frontier():
    s = summarize(TABLE)
    # the common level: the highest plasticity both mean frontiers reach = min(60, 40)
    assert s.level == pytest.approx(40), (
        f"the common level should be 40, the highest plasticity both frontiers reach, got {s.level}")
    m = s.matched.set_index("method")
    # lora: 40 lies between P̄ = 25 and 60, w = 15/35 = 3/7; per seed (1-w)·R(1e-3) + w·R(1e-2):
    # seed 0: 4/7·60 + 3/7·30 = 330/7, seed 1: 4/7·70 + 3/7·40 = 400/7
    assert m.loc["lora", "w"] == pytest.approx(3 / 7), (
        f"level 40 lies between lora's plasticities 25 and 60, so _bracket's weight should be 15/35 = 3/7, "
        f"got {m.loc['lora', 'w']} (Exercise 6.1)")
    assert m.loc["lora", "retention_mean"] == pytest.approx(365 / 7), (
        f"lora's matched retention should be the weighted mean of its neighbours, 365/7, got "
        f"{m.loc['lora', 'retention_mean']} (Exercise 6.1: the neighbours of the level and the linear weight)")
    assert m.loc["lora", "retention_std"] == pytest.approx((70 / 7) / math.sqrt(2)), (
        f"lora's matched retention per seed is 330/7 and 400/7, so its std should be 10/√2, got {m.loc['lora', 'retention_std']}")
    # bhra reaches 40 exactly at its top point: retention 70, 60
    assert m.loc["bhra", "retention_mean"] == pytest.approx(65), (
        f"bhra reaches the level at its top point, whose retention is 65, got {m.loc['bhra', 'retention_mean']} "
        "(Exercise 6.1: a level equal to a point takes that point, weight 0)")
    assert m.loc["bhra", "retention_std"] == pytest.approx(10 / math.sqrt(2)), (
        f"bhra's retention at its top point is 70 and 60, so its std should be 10/√2, got {m.loc['bhra', 'retention_std']}")
    # with only lora as additive control, the additive mean is lora's, and the gap is paired by seed:
    # seed 0: 70 − 330/7 = 160/7, seed 1: 60 − 400/7 = 20/7
    assert s.additive_methods == ("lora",), (
        f"only lora is an additive control in this table, got {s.additive_methods} (Exercise 6.2: the controls present)")
    assert s.additive[0] == pytest.approx(365 / 7), (
        f"with lora the only control, the additive mean should be lora's matched retention, 365/7, got {s.additive[0]} (Exercise 6.2)")
    # gap: the mean of 160/7 and 20/7 = 90/7; their difference is 20, so s = 20/√2, and with two seeds the
    # 95 % half-width is t(0.975, 1) · s / √2 = 12.706 · 10
    assert s.gap("bhra").mean == pytest.approx(90 / 7), (
        f"bhra's gap, paired by seed (160/7 and 20/7), should have mean 90/7, got {s.gap('bhra').mean} (Exercise 6.2: "
        "the additive mean per seed)")
    assert m.loc["bhra", "gap_std"] == pytest.approx(20 / math.sqrt(2)), (
        f"bhra's per-seed gaps differ by 20, so their std should be 20/√2, got {m.loc['bhra', 'gap_std']}")
    assert s.gap("bhra").half == pytest.approx(127.06), (
        f"with two seeds the 95 % half-width should be t(0.975, 1)·s/√2 = 127.06, got {s.gap('bhra').half}")
    assert s.gap("bhra").n == 2, f"bhra's gap should be paired over the 2 seeds, got {s.gap('bhra').n}"
    assert s.verdict("bhra") == "too few seeds", f"two seeds give no verdict ('too few seeds'), got {s.verdict('bhra')!r}"
    assert s.gap("lora").mean == pytest.approx(0), (
        f"lora is the only control, so its own gap should be 0, got {s.gap('lora').mean} (Exercise 6.2: per seed, not pooled)")


@pytest.mark.exercise6
def test_level_outside_a_frontier_gives_nan_not_extrapolation():
    s = summarize(TABLE, level=50)  # above bhra's highest plasticity (40)
    m = s.matched.set_index("method")
    assert math.isnan(m.loc["bhra", "retention_mean"]), (
        f"level 50 is above bhra's highest plasticity (40): its matched retention should be NaN, got "
        f"{m.loc['bhra', 'retention_mean']} (Exercise 6.1: None outside [p[0], p[-1]], no extrapolation)")
    assert m.loc["lora", "retention_mean"] == pytest.approx(65 - 30 * (25 / 35)), (
        f"level 50 lies inside lora's frontier (25 to 60): its matched retention should be 65 − 30·25/35, got "
        f"{m.loc['lora', 'retention_mean']} (Exercise 6.1)")
    assert math.isnan(s.gap("bhra").mean), f"without a matched retention bhra's gap should be NaN, got {s.gap('bhra').mean}"
    assert math.isnan(summarize(TABLE, level=5).matched.set_index("method").loc["lora", "retention_mean"]), (
        "level 5 is below lora's lowest plasticity (25): its matched retention should be NaN (Exercise 6.1: no extrapolation)")


@pytest.mark.exercise6
def test_additive_control_mean_averages_the_three_controls_per_seed():
    # Each control: P̄ = 40 at lr 1e-3 and 60 at lr 1e-2, so level 50 gives w = 1/2 and
    # matched retention = the average of the two learning rates, seed by seed.
    t = rows("lora", {1e-3: [(0, 90, 80, 40), (1, 90, 70, 40)], 1e-2: [(0, 90, 60, 60), (1, 90, 50, 60)]})  # 70, 60
    t += rows("gralora", {1e-3: [(0, 90, 50, 30), (1, 90, 60, 50)], 1e-2: [(0, 90, 40, 60), (1, 90, 30, 60)]})  # 45, 45
    t += rows("abba", {1e-3: [(0, 90, 66, 40), (1, 90, 66, 40)], 1e-2: [(0, 90, 44, 50), (1, 90, 20, 70)]})  # 55, 43
    t += rows("bhra", {1e-3: [(0, 90, 75, 50), (1, 90, 85, 50)]})  # one point exactly at the level: 75, 85
    s = summarize(t, level=50)
    m = s.matched.set_index("method")
    assert m.loc["gralora", "retention_mean"] == pytest.approx(45), (
        f"gralora's matched retention at w = 1/2 should be 45, got {m.loc['gralora', 'retention_mean']} (Exercise 6.1)")
    assert m.loc["abba", "retention_mean"] == pytest.approx(49), (
        f"abba's matched retention at w = 1/2 should be 49, got {m.loc['abba', 'retention_mean']} (Exercise 6.1)")
    # per seed: (70 + 45 + 55)/3 = 170/3 and (60 + 45 + 43)/3 = 148/3
    assert s.additive_methods == ("lora", "gralora", "abba"), (
        f"the three additive controls are present, in the order of ADDITIVE, got {s.additive_methods} (Exercise 6.2)")
    assert s.additive[0] == pytest.approx(159 / 3), (
        f"the additive mean should be the mean over seeds of the per-seed mean of the controls, 159/3, got "
        f"{s.additive[0]} (Exercise 6.2)")
    assert s.additive[1] == pytest.approx((22 / 3) / math.sqrt(2)), (
        f"the per-seed additive means are 170/3 and 148/3, so their std should be (22/3)/√2, got {s.additive[1]} "
        "(Exercise 6.2: the std of the per-seed means, with _std)")
    # bhra − additive: 75 − 170/3 = 55/3, 85 − 148/3 = 107/3
    assert s.gap("bhra").mean == pytest.approx(81 / 3), (
        f"bhra's gap to the per-seed additive mean should be 81/3, got {s.gap('bhra').mean} (Exercise 6.2)")
    assert m.loc["bhra", "gap_std"] == pytest.approx((52 / 3) / math.sqrt(2)), (
        f"bhra's per-seed gaps are 55/3 and 107/3, so their std should be (52/3)/√2, got {m.loc['bhra', 'gap_std']}")
    # the default level: every frontier's top is 60 except bhra's (50)
    assert summarize(t).level == pytest.approx(50), "the default level should be 50, the lowest top of the frontiers (bhra's)"


@pytest.mark.exercise6
def test_matched_retention_uses_the_non_dominated_envelope():
    # lora, one seed, three rates: (P, R) = (20, 80), (30, 50), (40, 60). The middle point is dominated by
    # (40, 60): more plasticity AND more retention. At level 30 the envelope runs from (20, 80) to (40, 60),
    # w = 1/2, so R = 70 (joining the mean points in order of P would have given 50).
    t = rows("lora", {1: [(0, 90, 80, 20)], 2: [(0, 90, 50, 30)], 3: [(0, 90, 60, 40)]})
    s = summarize(t, level=30)
    f = s.frontier.set_index("lr")
    assert list(f["on_envelope"]) == [True, False, True], (
        f"(30, 50) is dominated by (40, 60), so only the first and last points are on the envelope, got {list(f['on_envelope'])}")
    assert s.matched.set_index("method").loc["lora", "retention_mean"] == pytest.approx(70), (
        "at level 30 the envelope runs from (20, 80) to (40, 60), so the matched retention should be 70 "
        "(Exercise 6.1: the neighbours of the level on the envelope, not on every point)")
    assert s.level == 30 and summarize(t).level == pytest.approx(40), (
        f"the level should be the one asked for (30), and by default the frontier's top (40); got {s.level} and "
        f"{summarize(t).level}")


def test_the_claim_is_untestable_where_the_level_does_not_clear_b_s_majority_answer():
    # three seeds, one rate each, every method at P = 50: P* = 50. BHRA retains 70 + s, each control 40 + s,
    # so BHRA's gap is 30 on every seed (interval [30, 30]): "above" when B's majority answer is below 50;
    # at 50 or more, the matched models learned no more of B than a constant answer: "untestable".
    t = sum((rows(m, {1: [(s, 90, r + s, 50) for s in range(3)]})
             for m, r in [("lora", 40), ("gralora", 40), ("abba", 40), ("bhra", 70)]), [])
    s = summarize(t)
    assert s.level == 50 and s.gap("bhra").mean == pytest.approx(30)
    assert s.claim("bhra", floor=49.9) == "above" and s.claim("bhra") == "above"
    assert s.claim("bhra", floor=50) == "untestable"
    two_seeds = summarize([r for r in t if r["seed"] < 2])
    assert two_seeds.claim("bhra", floor=10) == "too few seeds" and two_seeds.claim("bhra", floor=60) == "untestable"


def test_envelope_keeps_ties_and_drops_strictly_dominated_points():
    from lab.continual import envelope

    # (10, 50) is dominated by (10, 60) (same P, more R); (5, 60) by (10, 60); the two (20, 30) tie: both kept
    assert list(envelope([10, 10, 5, 20, 20], [50, 60, 60, 30, 30])) == [False, True, False, True, True]


@pytest.mark.exercise6
def test_level_is_fixed_by_the_additive_controls_and_bhra():
    # lora reaches P = 60, bhra 40: P* = 40. HiRA reaches only 30 and the ablation 20, but they are not in
    # LEVEL_METHODS: P* stays 40, and their matched retention is NaN (P* beyond their envelopes).
    t = TABLE + rows("hira", {1e-3: [(0, 90, 80, 10), (1, 90, 80, 10)], 1e-2: [(0, 90, 50, 30), (1, 90, 50, 30)]})
    t += rows(ABLATION, {1e-3: [(0, 90, 80, 20), (1, 90, 80, 20)]})
    s = summarize(t)
    assert s.level == pytest.approx(40), (
        f"the level should be 40, fixed by lora and bhra alone (HiRA and the ablation are not in LEVEL_METHODS), got {s.level}")
    assert s.level_methods == ("lora", "bhra"), f"the level should be fixed by lora and bhra, got {s.level_methods}"
    m = s.matched.set_index("method")
    assert math.isnan(m.loc["hira", "retention_mean"]) and math.isnan(m.loc[ABLATION, "retention_mean"]), (
        "the level 40 is beyond HiRA's and the ablation's envelopes: their matched retention should be NaN "
        "(Exercise 6.1: no extrapolation)")


def test_sensitivity_recomputes_the_gap_at_offsets_of_the_level():
    from lab.continual import sensitivity

    # TABLE's P* = 40. At 30: lora w = 5/35 = 1/7: seeds 60 − 30/7 = 390/7, 70 − 30/7 = 460/7;
    # bhra w = 15/25 = 3/5: seeds 80 − 6 = 74, 90 − 18 = 72; gaps 128/7, 44/7: mean 86/7
    d = sensitivity(TABLE, "bhra", offsets=(-10.0, 0.0)).set_index("offset")
    assert d.loc[-10.0, "level"] == pytest.approx(30)
    assert d.loc[-10.0, "gap_mean"] == pytest.approx(86 / 7)
    assert d.loc[0.0, "gap_mean"] == pytest.approx(90 / 7)
    assert (d["verdict"] == "too few seeds").all()


def test_summarize_accepts_a_dataframe_and_refuses_bad_tables():
    import pandas as pd

    assert summarize(pd.DataFrame(TABLE)).level == pytest.approx(40)
    with pytest.raises(ValueError, match="lack columns"):
        summarize([{k: v for k, v in TABLE[0].items() if k != "acc_B_stage2"}])
    with pytest.raises(ValueError, match="twice"):
        summarize(TABLE + TABLE[:1])
    with pytest.raises(ValueError, match="different seeds"):
        summarize(TABLE[:-1])


# ---------------------------------------------------------------------------------------------
# The protocol, end to end on a few steps (the lab's offline base model; everything else in tmp)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_two_takes_its_own_cutoff_and_each_methods_own_settings():
    from lab.continual import stage_config

    spec = continual_preset("paper", grid="ci")
    one, two = (stage_config(spec, "abba", 0, stage, "m", 1e-3) for stage in (1, 2))
    assert (one.cutoff_len, two.cutoff_len) == (256, 512)       # ABBA's arithmetic max_seq_length
    assert one.alpha == two.alpha == 32.0                        # ABBA's own scale in both stages
    assert stage_config(spec, "lora", 0, 2, "m", 1e-3).alpha == 64.0
    assert stage_config(continual_preset("offline", grid="ci"), "bhra", 0, 2, "m", 1e-3).cutoff_len == 256


def test_protocol_end_to_end_on_a_tiny_budget(tmp_path):
    import json
    from pathlib import Path

    import lab
    from lab import continual

    spec = continual.continual_preset(  # the base, the data and every run in tmp_path
        "offline", run=dict(cache=str(tmp_path), max_steps=2, batch_size=4, micro_batch_size=4, warmup_steps=0, n_train=8),
        methods=("lora", "bhra", ABLATION), seeds=(0,), lr_multipliers=(0.5, 2.0),
        stage2_steps=2, n_train_b=8, eval_limit_a=1, eval_limit_b=4, max_new_tokens_b=8)
    records = continual.run_grid(spec, progress=None)
    assert len(records) == 3 * 2
    for r in records:
        assert 0 <= r["acc_A_stage1"] <= 100 and 0 <= r["acc_A_stage2"] <= 100 and 0 <= r["acc_B_stage2"] <= 100
    # the stage-2 learning rates are the table's rate times the multipliers (the ablation uses BHRA's)
    lrs = {(r["method"], r["lr_multiplier"]): r["lr"] for r in records}
    assert lrs[("bhra", 2.0)] == pytest.approx(2.0 * lab.LEARNING_RATES["bhra"]["offline"])
    assert lrs[(ABLATION, 0.5)] == pytest.approx(0.5 * lab.LEARNING_RATES["bhra"]["offline"])
    # the ablation and BHRA train in separate run folders, and the ablation's stage 2 starts from its own stage 1
    dirs = {r["run_dir"] for r in records}
    assert len(dirs) == len(records)
    s1 = {m: continual.run_stage1(spec, m, 0) for m in spec.methods}
    assert len({v["model"] for v in s1.values()}) == 3
    cfgs = [json.loads((Path(r["run_dir"]) / "run.json").read_text())["config"] for r in records]
    assert {c["method"] for c in cfgs} == {"lora", "bhra", ABLATION}
    for r in records:  # the ablation's adapter is saved as itself, so it reloads as the ablation
        saved = json.loads((Path(r["run_dir"]) / "adapter" / "adapter_config.json").read_text())
        assert saved["method"] == r["method"]
    assert all(c["model"] == s1[r["method"]]["model"] for c, r in zip(cfgs, records))
    assert all(c["max_steps"] == spec.stage2_steps and c["train_file"] == spec.task_b_file for c in cfgs)
    # the stage-1 model is a plain transformers model: no adapter factors in its checkpoint
    from safetensors.torch import load_file
    keys = load_file(Path(s1["bhra"]["model"]) / "model.safetensors").keys()
    assert not any(k.endswith((".A", ".B")) for k in keys)
    # the records feed the metric function directly
    summary = summarize(records)
    assert set(summary.matched.method) == set(spec.methods)


def test_each_seed_s_plasticity_at_the_level_uses_its_retention_s_interpolation():
    # TABLE at P* = 40: lora between P̄ = 25 and 60 with w = 3/7; seed 0: 4/7·20 + 3/7·50 = 230/7, seed 1:
    # 4/7·30 + 3/7·70 = 330/7 (mean 40 = P*); bhra sits at its top point, 40 and 40.
    s = summarize(TABLE)
    lora = s.plasticity_at_level("lora")
    assert lora.loc[0] == pytest.approx(230 / 7) and lora.loc[1] == pytest.approx(330 / 7)
    assert lora.mean() == pytest.approx(s.level)
    assert s.plasticity_at_level("bhra").tolist() == pytest.approx([40, 40])
    assert math.isnan(summarize(TABLE, level=50).plasticity_at_level("bhra").iloc[0])  # beyond its envelope


def test_no_retention_verdict_where_neither_side_clears_a_s_chance():
    # the table of the test above: BHRA retains 70 + s, each control 40 + s, at P* = 50 (gap 30, "above").
    t = sum((rows(m, {1: [(s, 90, r + s, 50) for s in range(3)]})
             for m, r in [("lora", 40), ("gralora", 40), ("abba", 40), ("bhra", 70)]), [])
    s = summarize(t)
    assert s.claim("bhra", chance=60) == "above"          # BHRA (71) clears chance 60, the controls (41) do not
    assert s.retains_above(70.9) and not s.retains_above(71)  # BHRA's mean is 71, the controls' 41
    assert s.claim("bhra", chance=71) == "untestable"     # neither 71 nor 41 lies above 71
    assert s.claim("bhra", floor=10, chance=30) == "above"


def test_recorded_train_seconds_counts_each_stage1_run_once(monkeypatch):
    import lab.continual as lc

    # two stage-2 runs on one stage-1 run of 10 s: their records hold 10 + 3 and 10 + 5 -> stage 1 10, stage 2 8
    monkeypatch.setattr(lc, "run_stage1", lambda spec, m, s: {"train_seconds": 10.0})
    recs = [dict(method="bhra", seed=0, train_seconds=13.0), dict(method="bhra", seed=0, train_seconds=15.0)]
    assert lc.recorded_train_seconds(None, recs) == {"stage1": 10.0, "stage2": 8.0, "runs": (1, 2)}
