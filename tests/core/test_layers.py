"""The adapted layers: identity at init, only factors train, half precision, input dtypes, the ablation's layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.bhra import ABLATIONS, LAYERS, AdapterConfig, BHRABlockNormLinear, adapted_layers, inject, merge, unmerge
from core.bhra import METHODS as CORE_METHODS
from tests.helpers import (BLOCKNORM, KINDS, METHODS, MODELS, adapted, adapted_mlp, base_weights, factor_parameters,
                           make_cfg, make_mlp, model_input, run)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# The adapter starts as the identity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_adapter_starts_as_identity(method, kind):
    make, _ = MODELS[kind]
    inputs = model_input(make())
    y_base = run(make(), inputs)
    model = adapted(method, kind, randomize=False)
    for name, layer in adapted_layers(model):
        assert torch.count_nonzero(layer.delta_weight()) == 0, f"{name}: ΔW ≠ 0 at init"
    torch.testing.assert_close(run(model, inputs), y_base)


@pytest.mark.parametrize("method", METHODS)
def test_init_is_not_trivially_zero(method):
    """Identity at init comes from one zero factor (B, or B2 for ABBA); the others carry signal."""
    model = adapted(method, "mlp", randomize=False)
    for _, layer in adapted_layers(model):
        nonzero = {n for n, p in factor_parameters(layer).items() if torch.count_nonzero(p) > 0}
        zero = set(factor_parameters(layer)) - nonzero
        assert zero == ({"B2"} if method == "abba" else {"B"})


# ---------------------------------------------------------------------------------------------
# Training touches only the adapter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_only_adapter_parameters_change_in_training(method, kind):
    model = adapted(method, kind, randomize=False)  # from the init, as in real training
    model.train()
    factors = {f"{name}.{p}" for name, layer in adapted_layers(model) for p in factor_parameters(layer)}
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # all params: freezing must hold
    inputs = model_input(model)
    for _ in range(3):
        out = model(**inputs)
        loss = (out if isinstance(out, torch.Tensor) else out.logits).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        if k in factors:
            assert not torch.equal(after[k], v), f"adapter parameter {k} did not change"
        else:
            assert torch.equal(after[k], v), f"frozen tensor {k} changed"


# ---------------------------------------------------------------------------------------------
# Half precision, and inputs of another dtype
# ---------------------------------------------------------------------------------------------


def _relative_error(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_half_precision_forward(method, dtype):
    """Inject into a half-precision model: factors follow W0's dtype and the forward tracks fp32."""
    model = adapted(method, "llama", dtype=dtype)
    for _, layer in adapted_layers(model):
        assert all(p.dtype == dtype for p in factor_parameters(layer).values())
    ref = MODELS["llama"][0]()
    inject(ref, make_cfg(method, MODELS["llama"][1]), verbose=False)
    ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})  # the same (rounded) values
    inputs = model_input(model)
    y, y32 = run(model, inputs), run(ref, inputs)
    assert y.dtype == dtype and torch.isfinite(y).all()
    eps = torch.finfo(dtype).eps  # 2⁻¹⁰ (fp16), 2⁻⁷ (bf16)
    assert _relative_error(y, y32) < 8 * eps


@pytest.mark.parametrize("method", METHODS)
def test_bf16_backward_and_merge(method):
    model = adapted(method, "llama", dtype=torch.bfloat16)
    inputs = model_input(model)
    W0 = base_weights(model)
    model(**inputs).logits.float().pow(2).mean().backward()
    for name, layer in adapted_layers(model):
        for pname, p in factor_parameters(layer).items():
            assert p.grad is not None and p.grad.dtype == torch.bfloat16, f"{name}.{pname}: no bf16 gradient"
            assert torch.isfinite(p.grad).all() and torch.count_nonzero(p.grad) > 0, f"{name}.{pname}: bad gradient"
        assert layer.base.weight.grad is None, f"{name}: frozen W0 got a gradient"
    y = run(model, inputs)
    merge(model)
    for name in W0:
        assert model.get_submodule(name).weight.dtype == torch.bfloat16
    y_merged = run(model, inputs)
    assert y_merged.dtype == torch.bfloat16 and torch.isfinite(y_merged).all()
    assert _relative_error(y_merged, y) < 8 * torch.finfo(torch.bfloat16).eps
    unmerge(model)
    assert all(torch.equal(layer.W0, W0[name]) for name, layer in adapted_layers(model))


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_a_half_input_to_a_float32_layer_raises_as_nn_linear_does(method, lean):
    x = torch.randn(3, 32, dtype=torch.float16)
    with pytest.raises(RuntimeError) as linear_error:
        nn.Linear(32, 64)(x)
    model = adapted_mlp(method)
    model.fc1.lean = lean
    with pytest.raises(RuntimeError) as error:
        model.fc1(x)
    assert type(error.value) is type(linear_error.value)
    assert "dtype" in str(error.value)


# ---------------------------------------------------------------------------------------------
# The block-normalised ablation, a method of the core
# ---------------------------------------------------------------------------------------------


def test_the_ablation_is_kept_apart_from_the_six_methods():
    assert ABLATIONS == ("bhra_blocknorm",) and "bhra_blocknorm" not in CORE_METHODS
    assert LAYERS["bhra_blocknorm"] is BHRABlockNormLinear


def test_the_ablation_starts_as_identity_with_bhra_budget():
    model = inject(make_mlp(), AdapterConfig(**BLOCKNORM), verbose=False)
    bhra = inject(make_mlp(), AdapterConfig(**{**BLOCKNORM, "method": "bhra"}), verbose=False)
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(model) == count(bhra) == sum(8 * (m + n) for m, n in [(64, 32), (16, 64)])
    for _, layer in adapted_layers(model):
        assert isinstance(layer, BHRABlockNormLinear) and torch.count_nonzero(layer.delta_weight()) == 0
    torch.testing.assert_close(run(model, model_input(model)), run(make_mlp(), model_input(model)), rtol=0, atol=0)
