"""lab.budget: the memory estimate counts what inject trains, the fit decision follows the memory it is given,
gradient checkpointing leaves HiRA's and BHRA's gradients unchanged, TF32 and the base's dtype are set where
the runs are evaluated."""
import dataclasses
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from core.bhra import AdapterConfig, adapted_layers, inject
from lab import budget
from lab.config import ABLATIONS, METHODS, METHODS_ALL, preset

GB = 10**9


def _tiny_config():
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=96, tie_word_embeddings=True)


@pytest.mark.parametrize("method", METHODS_ALL + ABLATIONS)
def test_the_estimate_counts_the_parameters_inject_trains(method):
    cfg = preset("paper", method=method, r=8, b=4, k=2, dropout=0.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config())
    if method == "full":
        model.requires_grad_(True)
    else:
        inject(model, cfg.adapter_config(), verbose=False)
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert budget.trainable(cfg, budget.shape_of(_tiny_config())) == counted


def test_llama_shapes_come_from_the_config_on_the_meta_device():
    s1, s3 = budget.shape_of("meta-llama/Llama-3.2-1B"), budget.shape_of("meta-llama/Llama-3.2-3B")
    assert (s1.layers, s1.hidden, s1.kv, s3.layers, s3.hidden) == (16, 2048, 512, 28, 3072)
    assert 1.2e9 < s1.total < 1.3e9 and 3.1e9 < s3.total < 3.3e9  # tied embeddings counted once


def test_the_fit_decision_follows_the_memory_it_is_given():
    one, three = "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B"
    s1, s3 = budget.shape_of(one), budget.shape_of(three)
    card24, card80 = 24 * GB - budget.CONTEXT_BYTES, 80 * GB - budget.CONTEXT_BYTES
    for m in METHODS:  # every adapter of 1B fits a 24 GB card as is
        assert budget.fit(preset("paper", method=m), s1, card24) is False
    full = preset("paper", method="full")
    assert budget.peak(full, s1) > 16 * s1.total  # weights, grads, AdamW and more
    with pytest.raises(budget.DoesNotFit, match="micro-batch-size.*full.*more memory"):
        budget.fit(full, s1, card24)
    assert budget.fit(full, s1, card80) is False
    lora3 = preset("paper", method="lora", model=three)
    assert budget.peak(lora3, s3) > budget.HEADROOM * card24 >= budget.peak(lora3, s3, checkpointing=True)
    assert budget.fit(lora3, s3, card24) is True and budget.fit(lora3, s3, card80) is False
    # the user's explicit choice is kept, even where the estimate says it does not fit
    assert budget.fit(dataclasses.replace(full, gradient_checkpointing=False), s1, card24) is False
    assert budget.fit(dataclasses.replace(lora3, gradient_checkpointing=True), s3, card80) is True
    # a larger micro-batch costs more activations; checkpointing always saves memory
    assert budget.peak(dataclasses.replace(lora3, micro_batch_size=8), s3) > budget.peak(lora3, s3)
    assert all(budget.peak(preset("paper", method=m), s1, True) < budget.peak(preset("paper", method=m), s1)
               for m in METHODS_ALL)


def test_the_steps_follow_the_preset():
    cfg = preset("paper", method="bhra")
    records = budget.TRAIN_RECORDS[cfg.train_file]
    assert budget.steps(cfg) == math.ceil(cfg.epochs * records / cfg.batch_size)
    assert budget.steps(dataclasses.replace(cfg, epochs=2 * cfg.epochs)) == math.ceil(2 * cfg.epochs * records
                                                                                       / cfg.batch_size)
    assert budget.steps(dataclasses.replace(cfg, max_steps=7)) == 7
    s = budget.shape_of(cfg.model)
    lora = budget.train_flops(preset("paper", method="lora"), s)
    bhra = budget.train_flops(cfg, s)
    assert lora[1] == 0 and bhra[1] > 0  # HiRA/BHRA's full weight gradient is a float32 (TF32) product
    assert budget.train_seconds(cfg, s, "H100") < budget.train_seconds(cfg, s, "A100")


def test_the_notebooks_count_the_runs_their_code_builds():
    from lab.continual import GRIDS, continual_preset

    nb04, nb05, nb06, nb07 = budget.notebooks("paper", "full")
    seeds = GRIDS["full"]["seeds"]
    assert len(nb04.runs) == len(METHODS_ALL) and len(nb05.runs) == len(METHODS_ALL) * (len(seeds) - 1)
    spec = continual_preset("paper", grid="full")
    n1 = len(spec.methods) * len(spec.seeds)
    assert len(nb06.runs) == n1 * (1 + len(spec.lr_multipliers)) and len(nb06.merged) == n1
    assert budget.commonsense_questions() == sum(n for n, _ in budget.TEST_SETS.values())
    assert all(c.model == "meta-llama/Llama-3.2-3B" for c in nb06.runs)
    assert all(c.method == "bhra" for c in nb07.runs)


def _grads(model, ids) -> dict:
    model.zero_grad(set_to_none=True)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["hira", "bhra"])
def test_gradient_checkpointing_gives_the_same_factor_gradients(method, tiny, tmp_path):
    from lab.finetune import _trainer, prepare_model

    cfg = preset("offline", method=method, model=str(tiny / "model"), r=8, b=4, cache=str(tmp_path))
    model, tokenizer = prepare_model(cfg, verbose=False)
    with torch.no_grad():  # B away from zero, so that every factor's gradient depends on the recomputed forward
        for _, layer in adapted_layers(model):
            layer.B.normal_(0, 0.05)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    calls = []
    for _, layer in adapted_layers(model):
        layer.register_forward_hook(lambda *_: calls.append(1))
    plain = _grads(model, ids)
    n_plain = len(calls)
    _trainer(cfg, model, tokenizer, None, tmp_path, gradient_checkpointing=True)  # the Trainer turns it on
    again = _grads(model, ids)
    assert model.is_activation_checkpointing and len(calls) - n_plain > n_plain  # adapted forwards ran again
    assert plain.keys() == again.keys() and plain
    for name in plain:
        torch.testing.assert_close(again[name], plain[name], rtol=1e-6, atol=1e-9, msg=name)
        assert plain[name].abs().max() > 0, name


def test_checkpointing_on_the_cpu_is_the_configs_choice():
    from lab.finetune import checkpointing

    assert checkpointing(preset("paper", method="bhra"), None) is False
    assert checkpointing(preset("paper", method="bhra", gradient_checkpointing=True), None) is True


def test_tf32_is_set_for_bf16_runs_on_a_gpu_only():
    from lab.finetune import matmul_precision

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert matmul_precision(preset("paper"), torch.device("cuda")) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert matmul_precision(preset("offline"), torch.device("cuda")) is False
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert matmul_precision(preset("paper"), torch.device("cpu")) is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_the_untuned_base_is_evaluated_in_the_runs_dtype(tiny):
    from lab.finetune import eval_dtype, load_base

    paper = preset("paper", model=str(tiny / "model"))
    assert eval_dtype(paper, torch.device("cuda")) == torch.bfloat16  # as load_trained evaluates the methods
    assert eval_dtype(paper, torch.device("cpu")) == eval_dtype(preset("offline"), torch.device("cuda")) == torch.float32
    model, _ = load_base(paper, on=torch.device("cpu"), verbose=False)
    assert next(model.parameters()).dtype == eval_dtype(paper, torch.device("cpu")) and not model.training
