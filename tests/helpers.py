"""Helpers shared by the whole suite: the repository's root, tiny models built from configs, adapted models,
a tiny run folder for the harness, and small utilities. Fixtures live in tests/conftest.py.

Every model here is built on the spot (no hub access) and small enough that the whole core suite
runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from core.bhra import AdaptedLinear, AdapterConfig, adapted_layers, inject

REPO = Path(__file__).resolve().parents[1]  # the repository's root (or a student copy's)

# One setting per method that fits both tiny models below (all widths divide by 8).
METHOD_CONFIGS = {
    "lora": dict(method="lora", r=8, alpha=16.0),
    "dora": dict(method="dora", r=8, alpha=16.0),
    "hira": dict(method="hira", r=8),
    "abba": dict(method="abba", r=8, alpha=2.0),
    "gralora": dict(method="gralora", r=8, k=2, alpha=16.0),
    "bhra": dict(method="bhra", r=8, b=4),
}
METHODS = tuple(METHOD_CONFIGS)
MLP_TARGETS = ("fc1", "fc2")
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TinyMLP(nn.Module):
    """fc1 (32 -> 64), SiLU, fc2 (64 -> 16), plus an untargeted head: a plain nn.Module, no transformers."""

    def __init__(self, d_in=32, d_hidden=64, d_out=16):
        super().__init__()
        self.d_in = d_in
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.head = nn.Linear(d_out, 8)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x):
        return self.head(self.norm(self.fc2(torch.nn.functional.silu(self.fc1(x)))))


def make_mlp(seed: int = 1, **kw) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP(**kw).eval()


def make_llama(seed: int = 1):
    """A 2-layer Llama with grouped-query attention: q/o 64×64, k/v 32×64, MLP 128×64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


MODELS = {"mlp": (make_mlp, MLP_TARGETS), "llama": (make_llama, LLAMA_TARGETS)}


def make_cfg(method: str, targets=MLP_TARGETS, **overrides) -> AdapterConfig:
    return AdapterConfig(**{**METHOD_CONFIGS[method], "targets": targets, **overrides})


def model_input(model: nn.Module, seed: int = 2) -> dict:
    """Keyword arguments for one forward pass of either tiny model."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, TinyMLP):
        return {"x": torch.randn(3, 5, model.d_in, generator=g)}
    return {"input_ids": torch.randint(0, model.config.vocab_size, (2, 7), generator=g)}


def run(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def factor_parameters(layer: AdaptedLinear) -> dict[str, nn.Parameter]:
    """The adapter's own parameters (everything but the wrapped base layer)."""
    return {n: p for n, p in layer.named_parameters() if not n.startswith("base.")}


def randomize_factors(model: nn.Module, std: float = 0.1, seed: int = 3):
    """Give every factor non-zero random values so that ΔW ≠ 0 (DoRA's magnitudes are perturbed)."""
    g = torch.Generator().manual_seed(seed)
    layers = adapted_layers(model)
    assert layers, "no adapted layers to randomize"
    with torch.no_grad():
        for _, layer in layers:
            for name, p in factor_parameters(layer).items():
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
                p.copy_(p * (1 + std * noise) if name == "mag" else std * noise)
    return model


def snapshot(model: nn.Module) -> dict:
    """Everything an error must leave alone: values, module types, requires_grad flags."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "attrs": set(vars(model)),
    }


def assert_unchanged(model: nn.Module, before: dict):
    after = snapshot(model)
    """The model is as it was: a call that refuses must change nothing."""
    assert after["types"] == before["types"], "the module tree changed: a refusal must leave every layer in place"
    assert after["grad"] == before["grad"], "requires_grad flags changed: a refusal must leave them as they were"
    assert after["attrs"] == before["attrs"], "the model's attributes changed: a refusal must leave them as they were"
    assert after["state"].keys() == before["state"].keys(), "the state_dict's keys changed: a refusal must change nothing"
    for k, v in before["state"].items():
        torch.testing.assert_close(after["state"][k], v, rtol=0, atol=0, equal_nan=True,
                                   msg=f"{k} changed: a refusal must leave every tensor as it was")


@contextmanager
def expect_refusal(error: type[Exception], match: str, what: str):
    """pytest.raises for the exercises, failing with a sentence: `what` must raise `error`, its message
    matching the regex `match` (any other exception goes through as it is: a stub's, or a bug's)."""
    try:
        yield
    except error as err:
        if not re.search(match, str(err)):
            pytest.fail(f"{what} raises {error.__name__} as it should, but its message {str(err)!r} does not "
                        f"match {match!r} (the words are in the exercise's hint)", pytrace=False)
    else:
        pytest.fail(f"{what} should raise {error.__name__} (a message matching {match!r}), but it returned", pytrace=False)


def save_tiny_llama(folder, records: list[dict]) -> None:
    """A one-layer Llama (widths divisible by 8 and 32, random weights) and a BPE tokenizer trained on `records`'
    prompts and the offline world's corpus, saved with save_pretrained to `folder`: a model folder the harness
    loads as it loads Llama-3.2-1B."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import lab

    tok = lab.build_tokenizer([lab.generate_prompt(r) for r in records] + lab.world_corpus(200), 400)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# Adapted tiny models
# ---------------------------------------------------------------------------------------------

KINDS = list(MODELS)


def adapted(method: str, kind: str, dtype=torch.float32, randomize=True, **overrides):
    """A tiny model of `kind` with `method` injected (factors random and non-zero unless randomize=False)."""
    make, targets = MODELS[kind]
    model = make().to(dtype)
    inject(model, make_cfg(method, targets, **overrides), verbose=False)
    return randomize_factors(model) if randomize else model


def adapted_mlp(method: str = "bhra", seed: int = 1, **kw):
    """The tiny MLP (built from `seed`, widths d_in/d_hidden/d_out if given) with `method` injected on fc1 and
    fc2 (the other keywords override the method's config) and random non-zero factors."""
    model = make_mlp(seed, **{k: kw.pop(k) for k in ("d_in", "d_hidden", "d_out") if k in kw})
    return randomize_factors(inject(model, make_cfg(method, **kw), verbose=False))


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: layer.W0.detach().clone() for name, layer in adapted_layers(model)}


# The block-normalised ablation, a method of the core outside the six (core.bhra.ABLATIONS)
BLOCKNORM = dict(method="bhra_blocknorm", r=8, b=4, targets=MLP_TARGETS)


def blocknorm_mlp(seed=1):
    return randomize_factors(inject(make_mlp(seed), AdapterConfig(**BLOCKNORM), verbose=False))


# ---------------------------------------------------------------------------------------------
# The harness: a tiny run folder, a fresh interpreter, a small offline base
# ---------------------------------------------------------------------------------------------


def task_of(record: dict) -> str:
    """Which family a synthetic record belongs to, read from its answer format line."""
    fmt = record["instruction"].rsplit("Answer format: ", 1)[1]
    return {"true/false": "boolq", "solution1/solution2": "piqa", "answer1/answer2/answer3": "social_i_qa",
            "ending1/ending2/ending3/ending4": "hellaswag", "option1/option2": "winogrande"}.get(
        fmt, "openbookqa" if "kept in the" in record["instruction"] else
        "ARC-Challenge" if "which of these can you" in record["instruction"] else "ARC-Easy")  # lab.offline's stems


def write_data_folder(folder: Path, records: list[dict], test_sets: bool = False) -> Path:
    """`records` as a data folder in LLM-Adapters' layout: ft-training_set/commonsense_170k.json and, with
    `test_sets`, dataset/<task>/test.json holding up to three of each task's records."""
    import lab
    from lab.cache import write_json

    write_json(folder / "ft-training_set" / "commonsense_170k.json", records)
    if test_sets:
        for task in lab.COMMONSENSE_TASKS:
            write_json(folder / "dataset" / task / "test.json", [r for r in records if task_of(r) == task][:3])
    return folder


def run_python(code: str, cwd: Path, env: dict | None = None) -> str:
    """The last line `code` prints, run by a fresh interpreter in `cwd` with the repository on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


# A small offline base model (lab.offline.BaseSpec fields): the real recipe, built in a few seconds.
SMALL_BASE = dict(hidden_size=32, intermediate_size=88, num_attention_heads=2, num_key_value_heads=1, vocab_size=512,
                  corpus_sentences=2000, pretrain_steps=30, pretrain_batch=8, pretrain_seq=32)
