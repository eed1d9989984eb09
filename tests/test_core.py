"""The properties PEFT's own test suite checks for every method, for all six of ours.

Each property runs on a tiny LlamaForCausalLM and on a plain MLP with Linear layers fc1/fc2:
the adapter starts as the identity; merged output equals unmerged output; unmerge restores W0
bit-exactly; merging twice is refused; safe merge catches non-finite weights; only adapter
parameters change in training; save then load gives the same outputs; merge_and_unload leaves a
plain model that plain transformers loads; adapter files are safetensors + JSON; fp16/bf16 work.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from core.bhra import (
    AdaptedLinear,
    AdapterConfig,
    adapted_layers,
    inject,
    load_adapter,
    merge,
    merge_and_unload,
    save_adapter,
    trainable_report,
    unmerge,
)
from core_helpers import (
    METHODS,
    MODELS,
    assert_unchanged,
    factor_parameters,
    make_cfg,
    model_input,
    randomize_factors,
    run,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = list(MODELS)


def adapted(method: str, kind: str, dtype=torch.float32, randomize=True, **overrides):
    """A tiny model of `kind` with `method` injected (factors random and non-zero unless randomize=False)."""
    make, targets = MODELS[kind]
    model = make().to(dtype)
    inject(model, make_cfg(method, targets, **overrides), verbose=False)
    return randomize_factors(model) if randomize else model


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.W0.detach().clone() for name, layer in adapted_layers(model)}


# ---------------------------------------------------------------------------------------------
# Injection
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
# Merge, unmerge, safe merge
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
    assert not adapted_layers(model)
    torch.testing.assert_close(run(model, inputs), y)


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
    assert layers.keys() == W0.keys()
    for name, layer in layers.items():
        assert torch.equal(layer.W0, W0[name]), f"{name}: W0 changed by merge/unmerge"
    assert torch.equal(run(model, inputs), y)


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


@pytest.mark.exercise4
@pytest.mark.parametrize("method", METHODS)
def test_merging_twice_is_refused(method):
    model = merge(adapted(method, "mlp"))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="already merged.*unmerge"):
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
    with pytest.raises(ValueError, match=f"{name}.*non-finite.*nothing was merged"):
        merge(model, safe=True)
    assert_unchanged(model, before)
    assert all(isinstance(model.get_submodule(n), AdaptedLinear) for n in ("fc1", "fc2"))


def test_unsafe_merge_lets_non_finite_weights_through():
    """safe=False skips the check (as PEFT's safe_merge=False does)."""
    model = adapted("lora", "mlp")
    with torch.no_grad():
        model.fc2.B[0, 0] = float("nan")
    merge(model, safe=False)
    assert not torch.isfinite(model.fc2.weight).all()


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
# Save and load
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_save_then_load_into_a_fresh_base_gives_the_same_outputs(method, kind, tmp_path):
    model = adapted(method, kind)
    inputs = model_input(model)
    y = run(model, inputs)
    save_adapter(model, tmp_path)
    fresh = MODELS[kind][0]()
    load_adapter(fresh, tmp_path)
    assert [type(m) for _, m in adapted_layers(fresh)] == [type(m) for _, m in adapted_layers(model)]
    torch.testing.assert_close(run(fresh, inputs), y, rtol=0, atol=0)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", METHODS)
def test_load_into_a_model_that_carries_the_same_adapters(method, tmp_path):
    model = adapted(method, "mlp")
    inputs = model_input(model)
    y = run(model, inputs)
    save_adapter(model, tmp_path)
    other = adapted(method, "mlp", randomize=False)
    assert not torch.equal(run(other, inputs), y)
    load_adapter(other, tmp_path)
    torch.testing.assert_close(run(other, inputs), y, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_adapter_files_are_safetensors_and_json(method, tmp_path):
    model = adapted(method, "llama")
    save_adapter(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert AdapterConfig(**saved) == adapted_layers(model)[0][1].cfg
    raw = (tmp_path / "adapter.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # safetensors: an 8-byte length, a JSON header, raw bytes
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    assert len(raw) == 8 + header_len + max(ends), "bytes beyond the tensors: not a plain safetensors file"
    factors = {f"{name}.{p}": t for name, layer in adapted_layers(model) for p, t in factor_parameters(layer).items()}
    with safe_open(tmp_path / "adapter.safetensors", "pt") as f:
        assert set(f.keys()) == set(factors)  # the factors only: no frozen base weight in the adapter file
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), factors[k])


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


# ---------------------------------------------------------------------------------------------
# Half precision
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
