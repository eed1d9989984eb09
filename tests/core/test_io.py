"""save_adapter and load_adapter: safetensors + JSON, the same outputs after loading, every refusal of a misfit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from core.bhra import AdapterConfig, BHRABlockNormLinear, adapted_layers, load_adapter, merge, save_adapter
from tests.helpers import (KINDS, METHODS, MODELS, adapted, adapted_mlp, assert_unchanged, blocknorm_mlp,
                           factor_parameters, make_mlp, model_input, run, snapshot)

pytestmark = pytest.mark.usefixtures("single_thread")


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


def test_the_ablation_saves_and_reloads_as_the_ablation(tmp_path):
    model = blocknorm_mlp()
    y = run(model, model_input(model))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["method"] == "bhra_blocknorm"
    fresh = load_adapter(make_mlp(), tmp_path)
    assert all(isinstance(layer, BHRABlockNormLinear) for _, layer in adapted_layers(fresh))
    torch.testing.assert_close(run(fresh, model_input(fresh)), y, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Loading onto an adapted model compares only the fields the method uses
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
# What save and load refuse
# ---------------------------------------------------------------------------------------------


def test_save_without_adapters_says_what_to_do(tmp_path):
    model = merge(adapted_mlp("lora"))
    with pytest.raises(RuntimeError, match=r"no adapters to save: save before merge\(\), or unmerge\(\) first"):
        save_adapter(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("saved,carried", [("lora", "bhra"), ("bhra", "hira"), ("gralora", "bhra")])
def test_loading_an_adapter_of_another_method_is_refused(saved, carried, tmp_path):
    save_adapter(adapted_mlp(saved), tmp_path)
    model = adapted_mlp(carried)
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"was saved as AdapterConfig\(method='{saved}'.*but this model carries "
                                         rf"AdapterConfig\(method='{carried}'"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_an_adapter_with_another_rank_is_refused(tmp_path):
    save_adapter(adapted_mlp("bhra", r=8), tmp_path)
    model = adapted_mlp("bhra", r=16)
    before = snapshot(model)
    with pytest.raises(ValueError, match="r=8.*this model carries.*r=16"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_an_adapter_saved_for_another_shape_into_a_fresh_model(tmp_path):
    save_adapter(adapted_mlp("lora", d_hidden=64), tmp_path)
    model = make_mlp(d_hidden=32)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"does not fit this model \(lora, r=8\): fc1.B: saved \(64, 8\), "
                                         r"model needs \(32, 8\)"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_an_adapter_saved_for_another_shape_into_an_adapted_model(tmp_path):
    save_adapter(adapted_mlp("bhra", d_hidden=64), tmp_path)
    model = adapted_mlp("bhra", d_hidden=32)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"does not fit this model \(bhra, r=8\).*saved \(4, 4, 16, 2\), model needs "
                                         r"\(4, 4, 8, 2\)"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_an_adapter_for_other_layers_is_refused(tmp_path):
    """Same method and shapes, but the layer sits under another name: the error lists the mismatch."""
    save_adapter(adapted_mlp("lora"), tmp_path)
    model = make_mlp()
    model.inner = torch.nn.Module()
    model.inner.fc2 = model.fc2
    del model.fc2
    before = snapshot(model)
    with pytest.raises(ValueError, match="does not fit this model.*missing inner.fc2.A.*unexpected fc2.A"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_from_a_folder_without_a_config(tmp_path):
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json: point at a folder written by save_adapter"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


def test_loading_a_config_with_unknown_fields(tmp_path):
    save_adapter(adapted_mlp("lora"), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 16}))
    model = make_mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"fields \['lora_alpha'\] that AdapterConfig does not know"):
        load_adapter(model, tmp_path)
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------
# adapter_config.json with a missing or wrongly typed field
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
