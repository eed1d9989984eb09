"""Tests for core/continual.py: the retention/plasticity metric, the block-normalised ablation, the protocol.

Lesson 6 (continual learning). The metric tests use small tables whose answers were worked out by
hand (the arithmetic is in the comments), so a change in the definition shows up as a failure.
"""

import math

import pytest
import torch

from core.bhra import AdapterConfig, adapted_layers, block_product, blocks, merge_and_unload
from core.continual import (ABLATION, BlockNormBHRALinear, block_gains, coupling_matrix, inject_blocknorm,
                            summarize)
from core_helpers import make_mlp


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
    assert s.level == pytest.approx(40)
    m = s.matched.set_index("method")
    # lora: 40 lies between P̄ = 25 and 60, w = 15/35 = 3/7; per seed (1-w)·R(1e-3) + w·R(1e-2):
    # seed 0: 4/7·60 + 3/7·30 = 330/7, seed 1: 4/7·70 + 3/7·40 = 400/7
    assert m.loc["lora", "w"] == pytest.approx(3 / 7)
    assert m.loc["lora", "retention_mean"] == pytest.approx(365 / 7)
    assert m.loc["lora", "retention_std"] == pytest.approx((70 / 7) / math.sqrt(2))
    # bhra reaches 40 exactly at its top point: retention 70, 60
    assert m.loc["bhra", "retention_mean"] == pytest.approx(65)
    assert m.loc["bhra", "retention_std"] == pytest.approx(10 / math.sqrt(2))
    # with only lora as additive control, the additive mean is lora's, and the gap is paired by seed:
    # seed 0: 70 − 330/7 = 160/7, seed 1: 60 − 400/7 = 20/7
    assert s.additive_methods == ("lora",)
    assert s.additive[0] == pytest.approx(365 / 7)
    assert s.gap("bhra")[0] == pytest.approx(90 / 7)
    assert s.gap("bhra")[1] == pytest.approx((140 / 7) / math.sqrt(2))
    assert s.gap("lora")[0] == pytest.approx(0)


@pytest.mark.exercise6
def test_level_outside_a_frontier_gives_nan_not_extrapolation():
    s = summarize(TABLE, level=50)  # above bhra's highest plasticity (40)
    m = s.matched.set_index("method")
    assert math.isnan(m.loc["bhra", "retention_mean"])
    assert m.loc["lora", "retention_mean"] == pytest.approx(65 - 30 * (25 / 35))
    assert math.isnan(s.gap("bhra")[0])
    assert math.isnan(summarize(TABLE, level=5).matched.set_index("method").loc["lora", "retention_mean"])


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
    assert m.loc["gralora", "retention_mean"] == pytest.approx(45)
    assert m.loc["abba", "retention_mean"] == pytest.approx(49)
    # per seed: (70 + 45 + 55)/3 = 170/3 and (60 + 45 + 43)/3 = 148/3
    assert s.additive_methods == ("lora", "gralora", "abba")
    assert s.additive[0] == pytest.approx(159 / 3)
    assert s.additive[1] == pytest.approx((22 / 3) / math.sqrt(2))
    # bhra − additive: 75 − 170/3 = 55/3, 85 − 148/3 = 107/3
    assert s.gap("bhra")[0] == pytest.approx(81 / 3)
    assert s.gap("bhra")[1] == pytest.approx((52 / 3) / math.sqrt(2))
    # the default level: every frontier's top is 60 except bhra's (50)
    assert summarize(t).level == pytest.approx(50)


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
# The block-normalised ablation
# ---------------------------------------------------------------------------------------------

CFG = dict(method="bhra", r=8, b=4, targets=("fc1", "fc2"))


def _uneven_mlp():
    """An MLP whose weight blocks have very different magnitudes (so the ablation differs from BHRA)."""
    model = make_mlp()
    with torch.no_grad():
        for lin in (model.fc1, model.fc2):
            m, n = lin.weight.shape
            scale = torch.logspace(-1, 1, 16).reshape(4, 4)  # one factor per block, 0.1 … 10
            lin.weight.mul_(scale.repeat_interleave(m // 4, 0).repeat_interleave(n // 4, 1))
    return model


def test_coupling_blocks_have_unit_magnitude():
    W0 = _uneven_mlp().fc1.weight
    U = coupling_matrix(W0, 4)
    per_block = blocks(U.abs(), 4).mean(dim=(-1, -2))  # (4, 4)
    torch.testing.assert_close(per_block, torch.ones(4, 4))
    # inside a block, U is W0 up to one positive factor: same signs, same pattern
    Ub, Wb = blocks(U, 4), blocks(W0, 4)
    ratio = Ub[1, 2] / Wb[1, 2]
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio))
    # the layer's gains give every block of g ⊙ W0 the global mean magnitude
    g = block_gains(W0, 4)
    scaled = blocks(W0.abs(), 4) * g[..., None, None]
    torch.testing.assert_close(scaled.mean(dim=(-1, -2)), W0.abs().mean().expand(4, 4))


def test_ablation_starts_as_identity_and_replaces_every_bhra_layer():
    model = _uneven_mlp()
    x = torch.randn(5, 32)
    before = model(x)
    inject_blocknorm(model, AdapterConfig(**CFG), verbose=False)
    layers = adapted_layers(model)
    assert len(layers) == 2 and all(isinstance(l, BlockNormBHRALinear) for _, l in layers)
    assert all(l.method == ABLATION for _, l in layers)
    torch.testing.assert_close(model(x), before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t}.{f}" for t in ("fc1", "fc2") for f in ("A", "B")}


def test_ablation_update_is_unit_blocks_times_global_scale():
    model = _uneven_mlp()
    inject_blocknorm(model, AdapterConfig(**CFG), verbose=False)
    layer = model.fc1
    with torch.no_grad():
        layer.B.normal_()
    W0 = layer.W0
    expected = W0.abs().mean() * coupling_matrix(W0, 4) * block_product(layer.B, layer.A)  # μ · U ⊙ C
    torch.testing.assert_close(layer.delta_weight(), expected, rtol=1e-5, atol=1e-6)
    # it is not BHRA's update on this W0: the blocks of BHRA's ΔW follow W0's block magnitudes
    bhra = W0 * block_product(layer.B, layer.A)
    assert not torch.allclose(layer.delta_weight(), bhra, rtol=1e-2)
    # block energies of the ablation's update are far more even than BHRA's
    from core.bhra import block_energy, gini
    assert gini(block_energy(layer.delta_weight().detach(), 4)) < gini(block_energy(bhra.detach(), 4))


def test_ablation_forward_backward_and_merge_agree():
    model = _uneven_mlp()
    inject_blocknorm(model, AdapterConfig(**CFG), verbose=False)
    with torch.no_grad():
        for _, l in adapted_layers(model):
            l.B.normal_(std=0.1)
    x = torch.randn(7, 32)
    # the lean one-GEMM forward and plain autograd give the same output and factor gradients
    outs, grads = [], []
    for lean in (True, False):
        for _, l in adapted_layers(model):
            l.lean = lean
            l.A.grad = l.B.grad = None
        y = model(x)
        y.pow(2).sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for _, l in adapted_layers(model) for p in (l.A, l.B)])
    torch.testing.assert_close(outs[0], outs[1])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    # merged (plain nn.Linear with W0 + ΔW) equals unmerged
    with torch.no_grad():
        y = model(x)
        merge_and_unload(model)
        torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
    assert not adapted_layers(model)


def test_ablation_refuses_other_methods():
    with pytest.raises(ValueError, match="BHRA variant"):
        inject_blocknorm(make_mlp(), AdapterConfig(method="hira", r=8, targets=("fc1",)), verbose=False)


# ---------------------------------------------------------------------------------------------
# The protocol, end to end on a few steps (the lab's offline base model; everything else in tmp)
# ---------------------------------------------------------------------------------------------


def test_protocol_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from core import lab
    from core import continual

    base = str(lab.base_model_path())  # built once and shared; runs and data go to tmp_path
    monkeypatch.setattr(lab, "CACHE", tmp_path)
    spec = continual.ContinualSpec(model=base, methods=("lora", "bhra", ABLATION), seeds=(0,), lr_multipliers=(0.5, 2.0),
                                   stage1_steps=2, stage2_steps=2, batch_size=4, micro_batch_size=4, warmup_steps=0,
                                   n_train_a=8, n_train_b=8, eval_limit_a=1, eval_limit_b=4, max_new_tokens_b=8)
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
    assert {c["variant"] for c in cfgs if c["method"] == "bhra"} == {"", "blocknorm"}
    assert all(c["model"] == s1[r["method"]]["model"] for c, r in zip(cfgs, records))
    assert all(c["max_steps"] == 2 and c["train_file"] == spec.task_b_file for c in cfgs)
    # the stage-1 model is a plain transformers model: no adapter factors in its checkpoint
    from safetensors.torch import load_file
    keys = load_file(Path(s1["bhra"]["model"]) / "model.safetensors").keys()
    assert not any(k.endswith((".A", ".B")) for k in keys)
    # the records feed the metric function directly
    summary = summarize(records)
    assert set(summary.matched.method) == set(spec.methods)
