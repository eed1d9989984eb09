"""Bad input gets a clear error that names the fix, and changes nothing.

Every test snapshots the model (state_dict values, module types, requires_grad flags, attributes)
before the failing call and checks it afterwards.
"""

from __future__ import annotations

import json

import pytest
import torch

from core.bhra import AdaptedLinear, AdapterConfig, adapted_layers, inject, load_adapter, merge, merge_and_unload
from core.bhra import save_adapter, unmerge
from core_helpers import MLP_TARGETS, METHODS, assert_unchanged, make_cfg, make_mlp, randomize_factors, snapshot

pytestmark = pytest.mark.usefixtures("single_thread")


def adapted_mlp(method="bhra", **kw):
    model = make_mlp(**{k: kw.pop(k) for k in ("d_in", "d_hidden", "d_out") if k in kw})
    return randomize_factors(inject(model, make_cfg(method, **kw), verbose=False))


# ---------------------------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0, -4])
@pytest.mark.parametrize("method", METHODS)
def test_rank_must_be_positive(method, r):
    with pytest.raises(ValueError, match=rf"r must be a positive integer .*r={r}"):
        make_cfg(method, r=r)


def test_rank_must_be_an_integer():
    with pytest.raises(ValueError, match="r must be a positive integer"):
        AdapterConfig(method="lora", r=8.0)


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
def test_rank_not_divisible_by_the_grid(method, grid):
    fix = rf"pick r a multiple of {grid} \(e\.g\. r=4\)"
    with pytest.raises(ValueError, match=rf"r=6 is not divisible by {grid}=4.*{fix}"):
        AdapterConfig(method=method, r=6, **{grid: 4})


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
@pytest.mark.parametrize("value", [0, -2])
def test_grid_must_be_positive(method, grid, value):
    with pytest.raises(ValueError, match=rf"{grid} must be a positive integer .*got {grid}={value}"):
        AdapterConfig(method=method, r=8, **{grid: value})


def test_abba_needs_an_even_rank():
    with pytest.raises(ValueError, match="r1 = r2 = r/2.*pick an even r"):
        AdapterConfig(method="abba", r=5)


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown method 'lorax'.*'lora', 'dora', 'hira', 'abba', 'gralora', 'bhra'"):
        AdapterConfig(method="lorax")


@pytest.mark.parametrize("method", ["hira", "bhra"])
def test_w0_coupled_methods_refuse_dropout(method):
    with pytest.raises(ValueError, match="set dropout=0"):
        AdapterConfig(method=method, dropout=0.1)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_must_lie_in_unit_interval(dropout):
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
        AdapterConfig(method="lora", dropout=dropout)


def test_empty_targets_are_refused():
    with pytest.raises(ValueError, match="targets is empty: name the nn.Linear modules"):
        AdapterConfig(targets=())


# ---------------------------------------------------------------------------------------------
# inject
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


# ---------------------------------------------------------------------------------------------
# merge / unmerge
# ---------------------------------------------------------------------------------------------


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
# save / load
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
