"""Helpers shared by the core tests: tiny models built from configs and small utilities.

Every model here is built on the spot (no hub access) and small enough that the whole core suite
runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn

from core.bhra import AdaptedLinear, AdapterConfig, adapted_layers


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
    assert after["types"] == before["types"], "module tree changed"
    assert after["grad"] == before["grad"], "requires_grad flags changed"
    assert after["attrs"] == before["attrs"], "model attributes changed"
    assert after["state"].keys() == before["state"].keys(), "state_dict keys changed"
    for k, v in before["state"].items():
        torch.testing.assert_close(after["state"][k], v, rtol=0, atol=0, equal_nan=True, msg=f"{k} changed")


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
