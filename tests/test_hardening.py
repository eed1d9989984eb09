"""Issue 13: the core hardened against what users do.

1. a dtype/device move while merged reaches the adapted layers kept for unmerge;
2. load_adapter refuses an adapter_config.json with a missing or wrongly typed field;
3. AdapterConfig refuses wrongly typed values, naming the field and the fix;
4. load_adapter onto an adapted model compares only the fields the method uses (targets as a set);
5. HiRA and BHRA refuse an input whose dtype differs from W0's, as nn.Linear does;
6. BHRA's rank bound caps every block-row at its height and every block-column at its width.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.bhra import (ABLATIONS, LAYERS, AdapterConfig, BHRABlockNormLinear, BHRALinear, adapted_layers,
                       bhra_blocknorm_delta, bhra_delta, block_gains, blocks, inject, load_adapter, merge,
                       merge_and_unload, numeric_rank, rank_bound, save_adapter, unmerge)
from core.bhra import METHODS as CORE_METHODS
from core_helpers import (METHODS, MLP_TARGETS, assert_unchanged, make_cfg, make_mlp, model_input,
                          randomize_factors, run, snapshot)

pytestmark = pytest.mark.usefixtures("single_thread")


def adapted_mlp(method="bhra", seed=1, **kw):
    return randomize_factors(inject(make_mlp(seed), make_cfg(method, **kw), verbose=False))


# ---------------------------------------------------------------------------------------------
# 1. .to() / .half() / .cuda() while merged
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 2. adapter_config.json with a missing or wrongly typed field
# ---------------------------------------------------------------------------------------------


def _edit_config(folder, **changes):
    """Rewrite adapter_config.json: a value of None deletes the field."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    for k, v in changes.items():
        config.pop(k) if v is None else config.__setitem__(k, v)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("method,field", [("lora", "alpha"), ("lora", "method"), ("lora", "r"), ("lora", "rslora"),
                                          ("lora", "targets"), ("bhra", "b"), ("gralora", "k")])
def test_load_refuses_a_config_missing_a_field_the_method_needs(method, field, tmp_path):
    save_adapter(adapted_mlp(method, alpha=8.0) if method == "lora" else adapted_mlp(method), tmp_path)
    _edit_config(tmp_path, **{field: None})
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"adapter_config.json lacks \['{field}'\].*add"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_load_accepts_a_config_missing_only_fields_the_method_ignores(tmp_path):
    model = adapted_mlp("lora")
    y = run(model, model_input(model))
    save_adapter(model, tmp_path)
    _edit_config(tmp_path, b=None, k=None)  # LoRA has no grid
    fresh = load_adapter(make_mlp(), tmp_path)
    torch.testing.assert_close(run(fresh, model_input(fresh)), y, rtol=0, atol=0)


@pytest.mark.parametrize("method,field,value", [("bhra", "alpha", "8"), ("lora", "alpha", "abc"), ("lora", "r", 8.5),
                                                ("lora", "dropout", "0.1"), ("bhra", "b", "4"),
                                                ("lora", "targets", "fc1"), ("lora", "rslora", "no")])
def test_load_refuses_a_config_with_a_wrongly_typed_field(method, field, value, tmp_path):
    save_adapter(adapted_mlp(method), tmp_path)
    _edit_config(tmp_path, **{field: value})
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"adapter_config.json: {field} must be"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------
# 3. wrongly typed config values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,message", [
    (dict(r=True), r"r must be a positive integer .*got r=True \(bool\)"),
    (dict(r="8"), r"r must be a positive integer .*got r='8' \(str\)"),
    (dict(dropout="0.1"), r"dropout must be a number in \[0, 1\).*got dropout='0.1' \(str\).*dropout=0.1"),
    (dict(alpha="abc"), r"alpha must be a number.*got alpha='abc' \(str\).*alpha=64.0"),
    (dict(alpha=True), r"alpha must be a number.*got alpha=True \(bool\)"),
    (dict(rslora="yes"), r"rslora must be True or False, got rslora='yes' \(str\)"),
    (dict(b=2.0), r"b must be a positive integer .*got b=2.0 \(float\)"),
    (dict(k="2"), r"k must be a positive integer .*got k='2' \(str\)"),
    (dict(targets=("q_proj", 3)), r"targets must be names of nn.Linear modules.*got 3 \(int\)"),
])
def test_config_refuses_wrongly_typed_values_naming_the_field_and_fix(kw, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(method="lora", **kw)


def test_a_single_target_string_is_refused_with_the_tuple_to_write():
    with pytest.raises(ValueError, match=r"targets must be a tuple or list of names.*targets=\('q_proj',\)"):
        AdapterConfig(targets="q_proj")


def test_targets_given_as_a_list_become_a_tuple():
    assert AdapterConfig(targets=["q_proj", "v_proj"]).targets == ("q_proj", "v_proj")


# ---------------------------------------------------------------------------------------------
# 4. loading onto an adapted model compares only the fields the method uses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,saved,carried", [
    ("lora", dict(b=8), dict(b=4)),  # LoRA ignores b
    ("bhra", dict(alpha=64.0), dict(alpha=8.0)),  # BHRA ignores alpha
    ("lora", dict(targets=("fc1", "fc2")), dict(targets=("fc2", "fc1"))),  # targets are a set
])
def test_load_onto_adapted_model_ignores_fields_the_method_does_not_use(method, saved, carried, tmp_path):
    model = adapted_mlp(method, **saved)
    y = run(model, model_input(model))
    save_adapter(model, tmp_path)
    other = adapted_mlp(method, seed=1, **carried)
    load_adapter(other, tmp_path)
    torch.testing.assert_close(run(other, model_input(other)), y, rtol=0, atol=0)


def test_load_onto_adapted_model_still_refuses_a_field_the_method_uses(tmp_path):
    save_adapter(adapted_mlp("lora", alpha=8.0), tmp_path)
    model = adapted_mlp("lora", alpha=16.0)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"alpha=8.0.*this model carries.*alpha=16.0"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------
# 5. input dtype different from the weight's
# ---------------------------------------------------------------------------------------------


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
# 6. BHRA's rank bound: block-row and block-column caps
# ---------------------------------------------------------------------------------------------


def test_bhra_rank_bound_caps_each_block_row_at_its_height():
    """W0 32×32, b=2, r=4 (r_b=2): a random top block-row, rank-1 blocks below.

    Each top block could add 16, but the top block-row holds only 16 rows; each bottom block adds
    1·r_b = 2. Attainable: 16 + 2 + 2 = 20 (the old per-block sum said min(32, 16+16+2+2) = 32)."""
    g = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W0 = torch.randn(32, 32, **g)
    for j in range(2):
        W0[16:, 16 * j:16 * (j + 1)] = torch.randn(16, 1, **g) @ torch.randn(1, 16, **g)
    cfg = AdapterConfig(method="bhra", r=4, b=2, targets=("x",))
    assert rank_bound(cfg, W0) == 20
    base = nn.Linear(32, 32, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = inject(nn.Sequential(base), AdapterConfig(method="bhra", r=4, b=2, targets=("0",)), verbose=False)[0]
    ranks = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            layer.A.normal_()
            layer.B.normal_()
            ranks.append(numeric_rank(layer.delta_weight()))
    assert ranks == [20, 20, 20]


def test_bhra_rank_bound_caps_each_block_column_at_its_width():
    """The transpose of the case above: a random left block-column, rank-1 blocks to its right."""
    g = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W0 = torch.randn(32, 32, **g)
    for i in range(2):
        W0[16 * i:16 * (i + 1), 16:] = torch.randn(16, 1, **g) @ torch.randn(1, 16, **g)
    assert rank_bound(AdapterConfig(method="bhra", r=4, b=2, targets=("x",)), W0) == 20


# ---------------------------------------------------------------------------------------------
# The block-normalised ablation, a method of the core
# ---------------------------------------------------------------------------------------------

BLOCKNORM = dict(method="bhra_blocknorm", r=8, b=4, targets=MLP_TARGETS)


def blocknorm_mlp(seed=1):
    return randomize_factors(inject(make_mlp(seed), AdapterConfig(**BLOCKNORM), verbose=False))


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


def test_the_ablation_saves_and_reloads_as_the_ablation(tmp_path):
    model = blocknorm_mlp()
    y = run(model, model_input(model))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["method"] == "bhra_blocknorm"
    fresh = load_adapter(make_mlp(), tmp_path)
    assert all(isinstance(layer, BHRABlockNormLinear) for _, layer in adapted_layers(fresh))
    torch.testing.assert_close(run(fresh, model_input(fresh)), y, rtol=0, atol=0)


def test_the_ablation_merged_equals_unmerged_and_unmerge_restores_w0():
    model = blocknorm_mlp()
    inputs = model_input(model)
    W0 = {name: layer.W0.clone() for name, layer in adapted_layers(model)}
    y = run(model, inputs)
    torch.testing.assert_close(run(merge(model), inputs), y, rtol=1e-5, atol=1e-6)
    unmerge(model)
    assert all(torch.equal(layer.W0, W0[name]) for name, layer in adapted_layers(model))
    torch.testing.assert_close(run(merge_and_unload(model), inputs), y, rtol=1e-5, atol=1e-6)


def test_the_gains_give_every_block_the_mean_magnitude_of_w0():
    W0 = torch.randn(48, 32, dtype=torch.float64) * torch.rand(48, 1, dtype=torch.float64) * 10
    g = block_gains(W0, 4)  # (4, 4)
    per_block = (blocks(W0, 4).abs().mean(dim=(-1, -2)) * g).float()
    torch.testing.assert_close(per_block, torch.full((4, 4), W0.abs().mean().item()), rtol=1e-6, atol=0)


def _layer(cls, W0, **cfg):
    base = nn.Linear(W0.shape[1], W0.shape[0], dtype=W0.dtype)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = cls(base, AdapterConfig(targets=("x",), **cfg))
    with torch.no_grad():
        layer.B.normal_()
    return layer


def test_the_ablation_equals_bhra_when_every_block_has_the_same_mean_magnitude():
    W0 = torch.randn(32, 32, dtype=torch.float64)
    Wb = blocks(W0, 2)  # a view: normalise each block to mean |entry| 1 in place
    Wb /= Wb.abs().mean(dim=(-1, -2), keepdim=True)
    torch.manual_seed(0)
    ablation = _layer(BHRABlockNormLinear, W0, method="bhra_blocknorm", r=4, b=2)
    torch.manual_seed(0)
    bhra = _layer(BHRALinear, W0, method="bhra", r=4, b=2)
    x = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(ablation(x), bhra(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ablation.delta_weight(), bhra.delta_weight(), rtol=1e-12, atol=1e-12)


def test_the_ablation_scales_block_ij_of_bhra_by_its_gain():
    W0 = torch.randn(32, 16, dtype=torch.float64) * torch.linspace(0.1, 3, 32, dtype=torch.float64)[:, None]
    B, A = torch.randn(2, 2, 16, 2, dtype=torch.float64), torch.randn(2, 2, 2, 8, dtype=torch.float64)
    g = block_gains(W0, 2).double()
    expected = blocks(bhra_delta(W0, B, A, 1.0), 2) * g[:, :, None, None]
    torch.testing.assert_close(blocks(bhra_blocknorm_delta(W0, B, A, 1.0), 2), expected, rtol=1e-6, atol=1e-9)
    layer = _layer(BHRABlockNormLinear, W0, method="bhra_blocknorm", r=4, b=2)
    x = torch.randn(3, 16, dtype=torch.float64)
    y = x @ (layer.W0 + layer.delta_weight()).T + layer.base.bias
    torch.testing.assert_close(layer(x), y, rtol=1e-10, atol=1e-10)
    assert rank_bound(layer.cfg, W0) == rank_bound(AdapterConfig(method="bhra", r=4, b=2, targets=("x",)), W0)
