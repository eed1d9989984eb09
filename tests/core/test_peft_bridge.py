"""The PEFT bridge (lab/peft_bhra.py): BHRA through PEFT's verbs gives the numbers of core.bhra.

Given the same factor values, a PEFT-wrapped tiny Llama and `core.bhra.inject` agree on logits,
factor gradients and merged weights; get_peft_model → a training step → save_pretrained →
PeftModel.from_pretrained → merge_and_unload ends at the core's merged model.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")
from peft import PeftModel, get_peft_model  # noqa: E402
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING  # noqa: E402

from core.bhra import AdapterConfig, adapted_layers, inject, merge_and_unload  # noqa: E402
from tests.helpers import LLAMA_TARGETS, make_llama, model_input, randomize_factors, run  # noqa: E402
from lab.peft_bhra import BhraConfig, BhraLayer, BhraModel  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("single_thread")]

R, B = 8, 4  # r_b = 2; every width of the tiny Llama (32, 64, 128) divides by 4
TOL = dict(rtol=1e-5, atol=1e-5)


def peft_bhra(model=None):
    config = BhraConfig(r=R, b=B, target_modules=list(LLAMA_TARGETS), task_type="CAUSAL_LM")
    return get_peft_model(model or make_llama(), config)


def core_bhra(model=None):
    return inject(model or make_llama(), AdapterConfig(method="bhra", r=R, b=B, targets=LLAMA_TARGETS), verbose=False)


def bridge_layers(peft_model) -> dict[str, BhraLayer]:
    """The PEFT layers under the names core.bhra gives the same nn.Linear."""
    return {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules() if isinstance(m, BhraLayer)}


def factor_pairs(core, peft) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(core factor, PEFT factor) for A and B of every adapted layer, matched by layer name."""
    layers = bridge_layers(peft)
    assert len(layers) == len(adapted_layers(core)) > 0
    return [pair for name, c in adapted_layers(core)
            for pair in ((c.A, layers[name].bhra_A["default"]), (c.B, layers[name].bhra_B["default"]))]


@torch.no_grad()
def copy_factors(core, peft, into="peft"):
    for c, p in factor_pairs(core, peft):
        if into == "peft":
            p.copy_(c)
        else:
            c.copy_(p)


def test_bhra_is_registered_with_peft():
    assert PEFT_TYPE_TO_CONFIG_MAPPING["BHRA"] is BhraConfig and PEFT_TYPE_TO_TUNER_MAPPING["BHRA"] is BhraModel


def test_the_config_checks_r_and_b_as_the_core_does():
    with pytest.raises(ValueError, match=r"r=6 is not divisible by b=4.*pick r a multiple of b"):
        BhraConfig(r=6, b=4, target_modules=["q_proj"])


def test_the_bridge_trains_the_core_budget_and_starts_as_the_base_model():
    model, core = peft_bhra(), core_bhra()
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(model) == trainable(core) == 2 * R * (2 * 128 + 2 * 96 + 3 * 192)
    inputs = model_input(make_llama())
    torch.testing.assert_close(run(model, inputs), run(make_llama(), inputs), rtol=0, atol=0)


def test_same_factors_give_the_same_logits_gradients_and_merged_weights():
    core = randomize_factors(core_bhra())
    model = peft_bhra()
    copy_factors(core, model)
    inputs = model_input(core)
    y_core, y_peft = core(**inputs).logits, model(**inputs).logits
    torch.testing.assert_close(y_peft, y_core, **TOL)
    y_core.pow(2).mean().backward()
    y_peft.pow(2).mean().backward()
    for c, p in factor_pairs(core, model):
        torch.testing.assert_close(p.grad, c.grad, **TOL)
    merged_core, merged_peft = merge_and_unload(core).state_dict(), model.merge_and_unload().state_dict()
    assert merged_peft.keys() == merged_core.keys()
    for k in merged_core:
        torch.testing.assert_close(merged_peft[k], merged_core[k], **TOL, msg=k)


def test_a_trained_adapter_round_trips_through_peft_to_the_core_merged_model(tmp_path):
    model = peft_bhra()
    inputs = model_input(make_llama())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen), "a frozen weight moved"
    y = run(model, inputs)
    assert (y - run(make_llama(), inputs)).abs().max() > 1e-3, "one step should change the output"

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_llama(), tmp_path)
    assert all(isinstance(m, BhraLayer) for m in bridge_layers(loaded).values())
    torch.testing.assert_close(run(loaded, inputs), y, rtol=0, atol=0)

    core = core_bhra()
    copy_factors(core, loaded, into="core")  # the core model holding the reloaded factors
    merged = loaded.merge_and_unload()
    assert not [m for m in merged.modules() if isinstance(m, BhraLayer)]
    torch.testing.assert_close(run(merged, inputs), run(merge_and_unload(core), inputs), **TOL)
    torch.testing.assert_close(run(merged, inputs), y, **TOL)


def test_unmerge_after_a_dtype_move_restores_w0_in_the_new_dtype():
    model = peft_bhra()
    copy_factors(randomize_factors(core_bhra()), model)
    W0 = {n: layer.get_base_layer().weight.detach().clone() for n, layer in bridge_layers(model).items()}
    model.base_model.merge_adapter()
    model.to(torch.float64)
    model.base_model.unmerge_adapter()
    for name, layer in bridge_layers(model).items():
        assert torch.equal(layer.get_base_layer().weight, W0[name].double()), name
