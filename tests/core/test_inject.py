"""inject(): the layers it wraps, what it freezes and reports, and what it refuses (leaving the model unchanged)."""

from __future__ import annotations

import pytest
from torch import nn

from core.bhra import adapted_layers, inject, merge, merge_and_unload, trainable_report
from tests.helpers import (KINDS, METHODS, MODELS, adapted, adapted_mlp, assert_unchanged, factor_parameters, make_cfg,
                           make_mlp, snapshot)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# What inject wraps, freezes and reports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_inject_wraps_exactly_the_targets(method, kind):
    make, targets = MODELS[kind]
    linears = [n for n, m in make().named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    model = adapted(method, kind, randomize=False)
    layers = adapted_layers(model)
    assert [name for name, _ in layers] == linears
    assert all(layer.method == method and isinstance(layer.base, nn.Linear) for _, layer in layers)


@pytest.mark.parametrize("method", METHODS)
def test_inject_freezes_everything_but_the_factors(method):
    model = adapted(method, "llama", randomize=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    factors = {f"{name}.{p}" for name, layer in adapted_layers(model) for p in factor_parameters(layer)}
    assert trainable == factors


def test_inject_prints_a_trainable_report(capsys):
    model = MODELS["mlp"][0]()
    inject(model, make_cfg("bhra"))
    out = capsys.readouterr().out
    assert out.strip() == trainable_report(model)
    trainable = 8 * (32 + 64) + 8 * (64 + 16)  # r (m + n) per layer
    assert f"trainable params: {trainable:,} of" in out and "2 bhra layers" in out


# ---------------------------------------------------------------------------------------------
# What inject refuses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
def test_in_features_not_divisible_by_the_grid(method, grid):
    model = make_mlp(d_in=30)  # fc1: (out, in) = (64, 30)
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"fc1: \(out, in\) = \(64, 30\) is not divisible by {grid}=4.*"
                                         r"try one of \[2\].*or leave this layer out of targets"):
        inject(model, make_cfg(method, **{grid: 4}), verbose=False)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
def test_out_features_not_divisible_by_the_grid(method, grid):
    model = make_mlp(d_out=12)  # fc2: (out, in) = (12, 64); fc1 fits, so a partial inject would be visible
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"fc2: \(out, in\) = \(12, 64\) is not divisible by {grid}=8.*"
                                         r"try one of \[2, 4\]"):
        inject(model, make_cfg(method, r=8, **{grid: 8}), verbose=False)
    assert_unchanged(model, before)


def test_target_that_matches_nothing_lists_what_exists():
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"targets \['q_proj'\] match no nn.Linear.*\['fc1', 'fc2', 'head'\]"):
        inject(model, make_cfg("lora", targets=("fc1", "q_proj")), verbose=False)
    assert_unchanged(model, before)


@pytest.mark.parametrize("second", ["bhra", "lora"])
def test_injecting_twice_is_refused(second):
    model = adapted_mlp("bhra")
    before = snapshot(model)
    with pytest.raises(ValueError, match="already carries adapters: merge_and_unload\\(\\) them first"):
        inject(model, make_cfg(second), verbose=False)
    assert_unchanged(model, before)


def test_injecting_into_a_merged_model_is_refused():
    model = merge(adapted_mlp("lora"))
    before = snapshot(model)
    with pytest.raises(ValueError, match="already carries adapters"):
        inject(model, make_cfg("lora"), verbose=False)
    assert_unchanged(model, before)


def test_injecting_after_merge_and_unload_works():
    model = merge_and_unload(adapted_mlp("lora"))
    inject(model, make_cfg("bhra"), verbose=False)
    assert [layer.method for _, layer in adapted_layers(model)] == ["bhra", "bhra"]
