"""merge, unmerge, safe merge, merge_and_unload: same outputs, W0 restored bit-exactly, refusals that change nothing."""

from __future__ import annotations

import pytest
import torch

from core.bhra import AdaptedLinear, adapted_layers, merge, merge_and_unload, unmerge
from tests.helpers import (KINDS, METHODS, MLP_TARGETS, MODELS, adapted, adapted_mlp, assert_unchanged, base_weights,
                           blocknorm_mlp, expect_refusal, factor_parameters, make_mlp, model_input, run, snapshot)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# Merge and unmerge
# ---------------------------------------------------------------------------------------------


@pytest.mark.exercise4
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_merged_output_equals_unmerged(method, kind):
    model = adapted(method, kind)
    inputs = model_input(model)
    y = run(model, inputs)
    y_base = run(MODELS[kind][0](), inputs)
    assert (y - y_base).abs().max() > 1e-3, "random factors should change the output"
    merge(model)
    left = [name for name, _ in adapted_layers(model)]
    assert not left, f"after merge() no adapted layer should be left, but {left} still are: _install a plain nn.Linear for each"
    torch.testing.assert_close(run(model, inputs), y, msg=lambda detail: (
        f"the merged {method} model should compute what the adapted one did: each plain nn.Linear needs "
        f"layer.merged_weight() (W0 + ΔW) and the base's bias. {detail}"))


@pytest.mark.exercise4
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_unmerge_restores_w0_bit_exactly(method, kind):
    model = adapted(method, kind)
    inputs = model_input(model)
    W0, y = base_weights(model), run(model, inputs)
    merge(model)
    unmerge(model)
    layers = dict(adapted_layers(model))
    assert layers.keys() == W0.keys(), (
        f"unmerge() should put back the adapted layers {sorted(W0)}, got {sorted(layers)}: merge() must keep "
        "them in model.__dict__[_MERGED]")
    for name, layer in layers.items():
        assert torch.equal(layer.W0, W0[name]), f"{name}: W0 changed by merge/unmerge"
    assert torch.equal(run(model, inputs), y), (
        f"after merge() and unmerge() the {method} model should compute exactly what it did before")


@pytest.mark.parametrize("method", METHODS)
def test_merge_unmerge_round_trips_repeat(method):
    """Merge, unmerge, train a step, merge again: the second merge folds the new factors."""
    model = adapted(method, "mlp")
    inputs = model_input(model)
    merge(model)
    unmerge(model)
    with torch.no_grad():
        for _, layer in adapted_layers(model):
            for p in factor_parameters(layer).values():
                p.mul_(1.5)
    y = run(model, inputs)
    merge(model)
    torch.testing.assert_close(run(model, inputs), y)


@pytest.mark.parametrize("method", METHODS)
def test_a_dtype_move_while_merged_reaches_the_adapters_kept_for_unmerge(method):
    model = adapted_mlp(method)
    x = model_input(model)["x"]
    merge(model).to(torch.float64)
    y_merged = run(model, {"x": x.double()})
    unmerge(model)
    dtypes = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
    assert set(dtypes.values()) == {torch.float64}, f"mixed dtypes after unmerge: {dtypes}"
    torch.testing.assert_close(run(model, {"x": x.double()}), y_merged, rtol=1e-5, atol=1e-6)  # merged in float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("method", METHODS)
def test_a_device_move_while_merged_reaches_the_adapters_kept_for_unmerge(method):
    model = adapted_mlp(method)
    x = model_input(model)["x"].cuda()
    y_merged = run(merge(model).cuda(), {"x": x})
    unmerge(model)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"cuda"}
    torch.testing.assert_close(run(model, {"x": x}), y_merged, rtol=1e-4, atol=1e-5)


def test_the_ablation_merged_equals_unmerged_and_unmerge_restores_w0():
    model = blocknorm_mlp()
    inputs = model_input(model)
    W0 = {name: layer.W0.clone() for name, layer in adapted_layers(model)}
    y = run(model, inputs)
    torch.testing.assert_close(run(merge(model), inputs), y, rtol=1e-5, atol=1e-6)
    unmerge(model)
    assert all(torch.equal(layer.W0, W0[name]) for name, layer in adapted_layers(model))
    torch.testing.assert_close(run(merge_and_unload(model), inputs), y, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Safe merge and the refusals
# ---------------------------------------------------------------------------------------------


@pytest.mark.exercise4
@pytest.mark.parametrize("method", METHODS)
def test_merging_twice_is_refused(method):
    model = merge(adapted(method, "mlp"))
    before = snapshot(model)
    with expect_refusal(RuntimeError, "already merged.*unmerge", "merging a model that is already merged"):
        merge(model)
    assert_unchanged(model, before)


@pytest.mark.exercise4
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("method", METHODS)
def test_safe_merge_refuses_non_finite_weights_and_changes_nothing(method, bad):
    model = adapted(method, "mlp")
    name, layer = adapted_layers(model)[-1]  # the last layer: a refusal must not leave earlier layers merged
    with torch.no_grad():
        next(iter(factor_parameters(layer).values()))[0].fill_(bad)
    before = snapshot(model)
    with expect_refusal(ValueError, f"{name}.*non-finite.*nothing was merged", f"a safe merge with a {bad} in {name}"):
        merge(model, safe=True)
    assert_unchanged(model, before)
    assert all(isinstance(model.get_submodule(n), AdaptedLinear) for n in ("fc1", "fc2")), (
        "a refused merge should leave every adapted layer in place: build and check all the plain layers "
        "before installing any")


def test_unsafe_merge_lets_non_finite_weights_through():
    """safe=False skips the check (as PEFT's safe_merge=False does)."""
    model = adapted("lora", "mlp")
    with torch.no_grad():
        model.fc2.B[0, 0] = float("nan")
    merge(model, safe=False)
    assert not torch.isfinite(model.fc2.weight).all()


@pytest.mark.parametrize("method", METHODS)
def test_merging_weights_that_overflow_is_refused(method):
    """Finite factors whose ΔW overflows float32: the merge would write inf into the model."""
    model = adapted_mlp(method)
    with torch.no_grad():
        for p in dict(model.fc2.named_parameters()).values():
            if p.requires_grad:
                p.fill_(1e25)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    before = snapshot(model)
    fix = "lower the learning rate or train in float32"
    with pytest.raises(ValueError, match=f"merging fc2 gives non-finite weights.*{fix}.*nothing was merged"):
        merge(model)
    assert_unchanged(model, before)


def test_merge_without_adapters_says_what_to_do():
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"no adapters to merge: inject\(\) or load_adapter\(\) first"):
        merge(model)
    assert_unchanged(model, before)


def test_unmerge_after_merge_and_unload_is_refused():
    model = merge_and_unload(adapted_mlp("bhra"))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"merge_and_unload\(\) discarded the adapters.*load_adapter\(\)"):
        unmerge(model)
    assert_unchanged(model, before)


def test_unmerge_without_merge_is_refused():
    model = adapted_mlp("lora")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"nothing to unmerge: merge\(\) was not called"):
        unmerge(model)
    assert_unchanged(model, before)
    assert all(isinstance(model.get_submodule(n), AdaptedLinear) for n in MLP_TARGETS)


# ---------------------------------------------------------------------------------------------
# merge_and_unload: a plain model again, loadable by plain transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_merge_and_unload_leaves_no_adapter_behind(method, kind):
    model = adapted(method, kind)
    keys = MODELS[kind][0]().state_dict().keys()
    merge_and_unload(model)
    assert not [m for m in model.modules() if isinstance(m, AdaptedLinear)]
    assert all(type(m).__module__.split(".")[0] != "core" for m in model.modules())
    assert model.state_dict().keys() == keys, "the plain model must have the base model's parameter names"
    assert not [n for n, v in vars(model).items() if "adapter" in n], "adapters kept alive after unloading"


@pytest.mark.parametrize("method", METHODS)
def test_merged_checkpoint_loads_in_plain_transformers(method, tmp_path):
    from transformers import AutoModelForCausalLM

    model = adapted(method, "llama")
    inputs = model_input(model)
    y = run(model, inputs)
    merge_and_unload(model)
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt")), "no pickle checkpoints"
    assert "core" not in (tmp_path / "config.json").read_text()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__module__.startswith("transformers.")
    torch.testing.assert_close(run(loaded, inputs), y)
