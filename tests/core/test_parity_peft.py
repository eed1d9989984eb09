"""Parity with HF PEFT 0.21: the same factor values give the same outputs and the same merged weights.

PEFT is the reference implementation wherever it has the method. Our factors are set to random
non-zero values (so ΔW ≠ 0), copied into PEFT's parameters, and both models run the same input.
PEFT's layouts, read from peft/tuners/*/layer.py:

    LoRA, DoRA   lora_A.weight (r, n) = A,  lora_B.weight (m, r) = B,  lora_magnitude_vector.weight = mag
    HiRA         hira_A (r, n) = A,  hira_B (m, r) = B,  no scale
    GraLoRA      gralora_A (k, n/k, r): input block j, output block i packed into the rank axis
                 gralora_B (k, r, m/k): output block i, input block j packed into the rank axis
    LoHa         ΔW = (w1a w1b) ⊙ (w2a w2b) · alpha/r: ABBA's product form with r_LoHa = r/2
"""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from einops import rearrange

from core.bhra import adapted_layers, inject, merge, merge_and_unload, scaling
from tests.helpers import MODELS, make_cfg, model_input, randomize_factors, run

pytestmark = [
    pytest.mark.parity,
    pytest.mark.usefixtures("single_thread"),
    # peft 0.21 calls a transformers 5 method that warns about its own deprecation
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

ATOL = 1e-5  # fp32


def _copy_lora(ours, theirs):
    theirs.lora_A["default"].weight.copy_(ours.A)
    theirs.lora_B["default"].weight.copy_(ours.B)
    if ours.method == "dora":
        theirs.lora_magnitude_vector["default"].weight.copy_(ours.mag)


def _copy_hira(ours, theirs):
    theirs.hira_A["default"].copy_(ours.A)
    theirs.hira_B["default"].copy_(ours.B)


def _copy_gralora(ours, theirs):
    theirs.gralora_A["default"].copy_(rearrange(ours.A, "i j r q -> j q (i r)"))  # (k, n/k, r)
    theirs.gralora_B["default"].copy_(rearrange(ours.B, "i j p r -> i (j r) p"))  # (k, r, m/k)


def _copy_abba_to_loha(ours, theirs):
    theirs.hada_w1_a["default"].copy_(ours.B1)
    theirs.hada_w1_b["default"].copy_(ours.A1)
    theirs.hada_w2_a["default"].copy_(ours.B2)
    theirs.hada_w2_b["default"].copy_(ours.A2)


# W0-coupled and product updates are second order in the factors: larger factors make ΔW visible.
FACTOR_STD = {"hira": 0.3, "abba": 0.3}

# case id -> (our method, our config overrides, PEFT config from (our cfg, targets), factor copier)
CASES = {
    "lora": ("lora", {}, lambda c, t: peft.LoraConfig(r=c.r, lora_alpha=c.alpha, target_modules=t), _copy_lora),
    "rslora": (
        "lora", {"rslora": True},
        lambda c, t: peft.LoraConfig(r=c.r, lora_alpha=c.alpha, use_rslora=True, target_modules=t), _copy_lora,
    ),
    "dora": (
        "dora", {},
        lambda c, t: peft.LoraConfig(r=c.r, lora_alpha=c.alpha, use_dora=True, target_modules=t), _copy_lora,
    ),
    "hira": ("hira", {}, lambda c, t: peft.HiraConfig(r=c.r, target_modules=t), _copy_hira),
    "gralora_k2": (
        "gralora", {"k": 2},
        lambda c, t: peft.GraloraConfig(r=c.r, gralora_k=c.k, alpha=c.alpha, hybrid_r=0, target_modules=t),
        _copy_gralora,
    ),
    "gralora_k4": (
        "gralora", {"k": 4},
        lambda c, t: peft.GraloraConfig(r=c.r, gralora_k=c.k, alpha=c.alpha, hybrid_r=0, target_modules=t),
        _copy_gralora,
    ),
    # LoHa scales by alpha_LoHa / r_LoHa; ours by α (√α1·√α2), so alpha_LoHa = α · r_LoHa.
    "abba_loha": ("abba", {}, lambda c, t: peft.LoHaConfig(r=c.r // 2, alpha=c.alpha * (c.r // 2), target_modules=t),
                  _copy_abba_to_loha),
}


def _pair(case: str, kind: str):
    """Our adapted model and PEFT's, holding the same random non-zero factors."""
    method, overrides, peft_config, copy_factors = CASES[case]
    make, targets = MODELS[kind]
    ours = make()
    theirs = copy.deepcopy(ours)
    cfg = make_cfg(method, targets, **overrides)
    randomize_factors(inject(ours, cfg, verbose=False), std=FACTOR_STD.get(method, 0.1))
    theirs = peft.get_peft_model(theirs, peft_config(cfg, list(targets)))
    theirs.eval()
    layers = adapted_layers(ours)
    assert len(layers) == (2 if kind == "mlp" else 14)
    with torch.no_grad():
        for name, layer in layers:
            copy_factors(layer, theirs.base_model.model.get_submodule(name))
    return ours, theirs, cfg


@pytest.mark.parametrize("kind", ["mlp", "llama"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_peft(case, kind):
    ours, theirs, _ = _pair(case, kind)
    inputs = model_input(ours)
    y, y_peft, y_base = run(ours, inputs), run(theirs, inputs), run(MODELS[kind][0](), inputs)
    assert (y - y_base).abs().max() > 1e3 * ATOL, "the adapters barely change the output: the check would be vacuous"
    torch.testing.assert_close(y, y_peft, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", ["mlp", "llama"])
@pytest.mark.parametrize("case", list(CASES))
def test_merged_weights_match_peft(case, kind):
    ours, theirs, _ = _pair(case, kind)
    names = [name for name, _ in adapted_layers(ours)]
    before = {name: layer.W0.detach().clone() for name, layer in adapted_layers(ours)}
    merge(ours)
    plain = theirs.merge_and_unload()
    for name in names:
        W, W_peft = ours.get_submodule(name).weight, plain.get_submodule(name).weight
        assert (W - before[name]).abs().max() > 1e3 * ATOL, f"{name}: ΔW is too small for a meaningful check"
        torch.testing.assert_close(W, W_peft, rtol=0, atol=ATOL, msg=f"{name}: merged weights differ from PEFT's")
    inputs = model_input(ours)
    torch.testing.assert_close(run(ours, inputs), run(plain, inputs), rtol=0, atol=ATOL)


# Our factor -> (PEFT's attribute, how to reach the parameter or an einops pattern back to our layout).
PEFT_GRADS = {
    "lora": {"A": ("lora_A", lambda t: t.weight), "B": ("lora_B", lambda t: t.weight)},
    "dora": {"A": ("lora_A", lambda t: t.weight), "B": ("lora_B", lambda t: t.weight),
             "mag": ("lora_magnitude_vector", lambda t: t.weight)},
    "hira": {"A": ("hira_A", None), "B": ("hira_B", None)},
    "gralora": {"A": ("gralora_A", "j q (i r) -> i j r q"), "B": ("gralora_B", "i (j r) p -> i j p r")},  # to ours
    "abba": {
        "B1": ("hada_w1_a", None), "A1": ("hada_w1_b", None), "B2": ("hada_w2_a", None), "A2": ("hada_w2_b", None),
    },
}


@pytest.mark.parametrize("kind", ["mlp", "llama"])
@pytest.mark.parametrize("case", list(CASES))
def test_factor_gradients_match_peft(case, kind):
    """Training parity: the same loss gives the same gradient on every factor (DoRA: norm detached)."""
    ours, theirs, cfg = _pair(case, kind)
    inputs = model_input(ours)
    for model in (ours, theirs):
        out = model(**inputs)
        (out if isinstance(out, torch.Tensor) else out.logits).pow(2).mean().backward()
    for name, layer in adapted_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(name)
        for factor, (attr, view) in PEFT_GRADS[cfg.method].items():
            param = getattr(peft_layer, attr)["default"]
            param = view(param) if callable(view) else param
            grad = param.grad
            if isinstance(view, str):  # PEFT's GraLoRA layout back to our (k, k, ·, ·) blocks
                grad = rearrange(grad, view, **{"i" if factor == "A" else "j": cfg.k})
            ours_grad = getattr(layer, factor).grad
            assert ours_grad.abs().max() > 0, f"{name}.{factor}: zero gradient, the check would be vacuous"
            msg = f"{name}.{factor}: gradient differs from PEFT's"
            torch.testing.assert_close(ours_grad, grad, rtol=1.3e-6, atol=1e-6, msg=msg)


@pytest.mark.parametrize("case", list(CASES))
def test_scaling_matches_peft(case):
    """The scalar in front of each update is PEFT's (HiRA: none; LoHa: alpha/r with alpha = α·r/2)."""
    ours, theirs, cfg = _pair(case, "mlp")
    theirs_fc1 = theirs.base_model.model.fc1
    expected = theirs_fc1.scaling["default"] if hasattr(theirs_fc1, "scaling") else 1.0
    assert scaling(cfg) == pytest.approx(expected, rel=1e-12)


def test_abba_layer_starts_where_peft_cannot():
    """ABBA is LoHa's form with a different init: B1 A1 is W0's best rank-r/2 approximation, B2 = 0."""
    model = MODELS["mlp"][0]()
    inject(model, make_cfg("abba"), verbose=False)
    for _, layer in adapted_layers(model):
        U, S, Vh = torch.linalg.svd(layer.W0.detach(), full_matrices=False)
        r1 = layer.cfg.r // 2
        best = U[:, :r1] @ torch.diag(S[:r1]) @ Vh[:r1]
        torch.testing.assert_close(layer.B1 @ layer.A1, best, rtol=0, atol=ATOL)
        assert torch.count_nonzero(layer.B2) == 0 and torch.count_nonzero(layer.A2) > 0


def test_merge_and_unload_gives_the_same_plain_model_as_peft():
    """Both end as a plain model with the same parameter names (no adapter left behind)."""
    ours, theirs, _ = _pair("lora", "llama")
    merge_and_unload(ours)
    plain = theirs.merge_and_unload()
    assert ours.state_dict().keys() == plain.state_dict().keys()
