"""The paper profile's real code path, end to end, on a Llama-3.2-1B-shaped model with random weights.

    make paper-smoke                                  # python -m lab.smoke: 1 layer, CPU, a few minutes
    BHRA_SMOKE_LAYERS=16 python -m lab.smoke          # all of Llama-3.2-1B's 16 layers (a GPU): memory, step time

No hub is needed. The script builds what `python -m lab.data` and the hub would provide:
  * a model with Llama-3.2-1B's config (vocab 128256, hidden 2048, intermediate 8192, 32 query / 8 kv
    heads, RoPE llama3 scaling, θ 500000, tied embeddings) but BHRA_SMOKE_LAYERS layers (default 1) and
    random weights, stored in bfloat16 like the hub checkpoint, with a tokenizer that has Llama-3's
    special-token ids (<|begin_of_text|> 128000, <|end_of_text|> 128001; a small byte-level BPE padded
    up to 128256 ids), saved with save_pretrained;
  * a few dozen records per file in the LLM-Adapters layout (commonsense train, the eight test sets,
    MetaMathQA-40K, gsm8k test), written by lab.offline's generators;
then, for every method of lab.METHODS_ALL + lab.ABLATIONS, the paper preset with tiny overrides
(SMOKE below): train 2 steps (checkpointing every step) -> load the run -> merge (merged == unmerged
checked on the logits) -> save_pretrained in the base dtype -> reload -> evaluate a few questions per task;
and one continual stage-1 -> stage-2 pass of BHRA through lab.continual.

It checks that a finished adapter run folder holds only adapter/ + run.json and that no file there,
nor in any checkpoint written during training, is larger than 3 x the factors' float32 bytes (+ 1 MiB):
the factors plus AdamW's two moments. It prints the device and dtype, step time and peak memory per
method (torch.cuda.max_memory_allocated on a GPU, else the peak resident set of the process) and
writes them to <cache>/smoke.json. Everything lives under .cache/smoke (BHRA_SMOKE_CACHE to move it),
away from the notebooks' runs; its runs are deleted and retrained on every invocation.

Settings (environment): BHRA_SMOKE_LAYERS (1); BHRA_SMOKE_BEAMS (the paper's 4-beam search on a
GPU, greedy on a CPU, where 4 beams took about 3x the time per question); BHRA_SMOKE_LIMIT (1
question per task); BHRA_SMOKE_METHODS (default: every method of lab.METHODS_ALL + lab.ABLATIONS);
BHRA_SMOKE_THREADS (CPU only, default 1: on this project's shared 2-core machine, ABBA's SVD
initialisation of the 1-layer model took 65 s on one thread and 197 s on two while other jobs ran).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

import lab
from lab import continual, finetune
from lab.cache import building, resolve, write_json

# Llama-3.2-1B's config.json (meta-llama/Llama-3.2-1B), with the layer count left to the caller.
LLAMA_3_2_1B = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, hidden_act="silu",
    max_position_embeddings=131072, rms_norm_eps=1e-5, initializer_range=0.02,
    rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=8192),
    tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
    bos_token_id=128000, eos_token_id=128001)
N_REGULAR = 128000  # ids below are ordinary BPE tokens; 128000..128255 are Llama-3's 256 special tokens
SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
            + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)])
assert len(SPECIALS) == 256
VERSION = 1  # bump when the built model or data change

LAYERS = int(os.environ.get("BHRA_SMOKE_LAYERS", "1"))
BEAMS = int(os.environ.get("BHRA_SMOKE_BEAMS", "4" if torch.cuda.is_available() else "1"))  # paper: 4 beams
LIMIT = int(os.environ.get("BHRA_SMOKE_LIMIT", "1"))     # test questions per task
THREADS = int(os.environ.get("BHRA_SMOKE_THREADS", "1"))  # CPU only
METHODS = tuple(m for m in os.environ.get("BHRA_SMOKE_METHODS", ",".join(lab.METHODS_ALL + lab.ABLATIONS)).split(",") if m)
SLACK = 2**20                                            # bytes allowed above 3 x the factors

# The paper preset with the smallest budget that still runs every piece: 2 optimiser steps of 2
# micro-batches (gradient accumulation), a checkpoint and a loss log after each step, short answers.
# cutoff_len 128, not shorter: with this small BPE the prompts are 67-101 tokens, and a cut below
# the response leaves no label to learn from (the loss is 0 and nothing trains).
CACHE = resolve(os.environ.get("BHRA_SMOKE_CACHE", ".cache/smoke"))  # away from the notebooks' runs
SMOKE = dict(max_steps=2, micro_batch_size=1, batch_size=2, cutoff_len=128, max_new_tokens=4,
             num_beams=BEAMS, save_steps=1, logging_steps=1, progress=False, cache=str(CACHE))


# ----------------------------------------------------------------------------------------------
# The stand-ins: model, tokenizer, data
# ----------------------------------------------------------------------------------------------


def build_tokenizer(texts):
    """A byte-level BPE trained on `texts`, its vocabulary padded with unreachable entries up to id
    128000, then Llama-3's 256 special tokens at 128000..128255; BOS prepended as Llama-3 does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=[], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), N_REGULAR)})
    spec["added_tokens"] = [dict(id=N_REGULAR + i, content=s, single_word=False, lstrip=False, rstrip=False,
                                 normalized=False, special=True) for i, s in enumerate(SPECIALS)]
    tok = Tokenizer.from_str(json.dumps(spec))
    bos = SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, N_REGULAR)])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=SPECIALS[1], model_max_length=131072)
    assert len(out) == LLAMA_3_2_1B["vocab_size"] and out.bos_token_id == 128000 and out.eos_token_id == 128001
    return out


def build_model(folder: Path, layers: int) -> Path:
    """Llama-3.2-1B's config with `layers` layers, random weights, saved in bfloat16 (as on the hub). Cached."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    t0 = time.time()
    texts = [lab.generate_prompt(r) for r in lab.make_commonsense(20, seed=11) + lab.make_arithmetic(100, seed=12)]
    tokenizer = build_tokenizer(texts + lab.world_corpus(2000, seed=13))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**LLAMA_3_2_1B, "num_hidden_layers": layers}))
    with building(folder) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"built the {layers}-layer Llama-3.2-1B-shaped model in {time.time() - t0:.0f} s -> {folder}")
    return folder


def build_data(folder: Path) -> Path:
    """A few dozen records per file, in the LLM-Adapters layout the paper profile reads. Cached."""
    from lab.data import GSM8K_FILE, MATH_FILE, TRAIN_FILE

    if (folder / "done").is_file():
        return folder
    with building(folder) as tmp:
        write_json(tmp / TRAIN_FILE, lab.make_commonsense(5, seed=1))                # 40 records
        tests = lab.make_commonsense(24, seed=2)                                     # 24 per task
        for t, task in enumerate(lab.COMMONSENSE_TASKS):
            write_json(tmp / "dataset" / task / "test.json", tests[t * 24:(t + 1) * 24])
        math = lab.make_arithmetic(48, seed=3)
        write_json(tmp / MATH_FILE, math[:24])
        write_json(tmp / GSM8K_FILE, math[24:])
        (tmp / "done").write_text("")
    return folder


# ----------------------------------------------------------------------------------------------
# Measuring: step time, peak memory, file sizes
# ----------------------------------------------------------------------------------------------


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def memory_reset():
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # Linux: reset the peak resident set (VmHWM) to the current one
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def memory_peak() -> tuple[int, str]:
    """(bytes, what was measured)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    try:
        kib = int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM")).split()[1])
        return kib * 1024, "peak RSS of the process (VmHWM)"
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS of the process (ru_maxrss)"


class Probe:
    """What the smoke run learns from inside the Trainer: the time of every optimiser step and the
    largest file of every checkpoint (checked against the factors' bytes as soon as it is written)."""

    def __init__(self):
        self.steps, self.checkpoint_files, self._t = [], [], None

    def callback(self):
        """A TrainerCallback that records into this probe (lab.train(cfg, callbacks=[probe.callback()]))."""
        from transformers import TrainerCallback

        probe = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                _sync()
                probe._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                _sync()
                probe.steps.append(time.perf_counter() - probe._t)

            def on_save(self, args, state, control, **kw):
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                probe.checkpoint_files += [(f, f.stat().st_size) for f in folder.rglob("*") if f.is_file()]

        return Callback()


def check_sizes(files, factor_bytes: int, where: str) -> int:
    """Every file below 3 x the factors' bytes + SLACK (factors + AdamW's two moments); the largest size."""
    limit = 3 * factor_bytes + SLACK
    too_big = [(str(f), n) for f, n in files if n > limit]
    if too_big:
        raise AssertionError(
            f"{where}: files larger than the factors plus optimizer state (3 x {factor_bytes:,} B + {SLACK:,} B "
            f"= {limit:,} B): {too_big}. A checkpoint or a finished run must not hold the frozen base model "
            "(lab.finetune's FactorTrainer saves the trainable tensors only).")
    return max((n for _, n in files), default=0)


def check_run_folder(out: Path, factor_bytes: int) -> int:
    """A finished adapter run keeps adapter/ and run.json only, every file small."""
    entries = sorted(p.name for p in out.iterdir())
    if entries != ["adapter", "run.json"]:
        raise AssertionError(f"{out}: a finished adapter run should hold only adapter/ and run.json, found {entries}")
    return check_sizes([(f, f.stat().st_size) for f in out.rglob("*") if f.is_file()], factor_bytes, str(out))


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def merge_logit_diff(model, tokenizer, rows) -> float:
    """Merge in place; the largest change of the next-token logits of `rows` that merging caused."""
    from core.bhra import merge

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    enc = tokenizer([lab.generate_prompt(r, with_output=False) for r in rows], return_tensors="pt",
                    padding=True).to(next(model.parameters()).device)
    tokenizer.padding_side = side
    before = model(**enc, logits_to_keep=1).logits.float()
    merge(model)
    return (model(**enc, logits_to_keep=1).logits.float() - before).abs().max().item()


def smoke_method(method: str, base: Path, data: Path, tests: dict, probe: Probe) -> dict:
    cfg = lab.preset("paper", method=method, model=str(base), data_dir=str(data),
                     **{**SMOKE, **({"save_steps": 0} if method == "full" else {})})
    probe.steps, probe.checkpoint_files = [], []
    memory_reset()
    t0 = time.time()
    rec = lab.train(cfg, reuse=False, verbose=False, callbacks=[probe.callback()])
    t_train = time.time() - t0
    assert rec["steps"] == SMOKE["max_steps"], rec["steps"]
    losses = [l for _, l in rec["losses"]]
    if len(losses) != SMOKE["max_steps"] or not all(0 < l < float("inf") for l in losses):
        raise AssertionError(f"{method}: expected a finite positive loss at every step, got {rec['losses']}")
    factor_bytes = 4 * rec["trainable"]
    row = dict(method=method, trainable=rec["trainable"], steps=rec["steps"], train_s=round(t_train, 1),
               step_s=[round(s, 3) for s in probe.steps], loss=round(losses[-1], 3))
    if method != "full":
        row["largest_checkpoint_file"] = check_sizes(probe.checkpoint_files, factor_bytes, f"{method} checkpoints")
        assert probe.checkpoint_files, f"{method}: save_steps=1 wrote no checkpoint"
        row["largest_run_file"] = check_run_folder(finetune.run_dir(cfg), factor_bytes)
        row["factor_bytes"] = factor_bytes

    t1 = time.time()
    model, tokenizer = lab.load_trained(cfg)
    row["device"], row["dtype"] = str(next(model.parameters()).device), str(next(model.parameters()).dtype)
    if method != "full":  # merged == unmerged, on the logits: random weights give near-ties (1e-5 apart) among
        # 128256 logits, so comparing generated tokens (lab.merged_equals_unmerged) would test the ties
        row["merge_max_logit_diff"] = merge_logit_diff(model, tokenizer, [tests[t][0] for t in ("boolq", "piqa")])
        tol = 1e-3 if next(model.parameters()).dtype == torch.float32 else 0.25  # bf16 rounds W0 + ΔW
        if not row["merge_max_logit_diff"] <= tol:
            raise AssertionError(f"{method}: merged and unmerged logits differ by {row['merge_max_logit_diff']:.2e} > {tol}")
    merged = lab.save_merged(model, tokenizer, CACHE / "merged" / method, dtype=lab.stored_dtype(cfg.model))
    del model
    model, tokenizer = lab.load_model(str(merged), dtype=torch.bfloat16 if cfg.bf16 and torch.cuda.is_available()
                                      else torch.float32, on=lab.device())
    acc = lab.evaluate(model, tokenizer, tests, LIMIT, cfg=cfg)
    row["eval_s"] = round(time.time() - t1, 1)
    row["accuracy"] = round(acc["average"], 3)
    row["peak_bytes"], _ = memory_peak()
    del model
    shutil.rmtree(merged, ignore_errors=True)
    return row


def smoke_continual(base: Path, data: Path) -> dict:
    spec = continual.continual_preset(
        "paper", grid="ci", run=dict(model=str(base), data_dir=str(data), **SMOKE),
        methods=("bhra",), seeds=(0,), lr_multipliers=(1.0,), stage2_steps=2,
        eval_limit_a=1, eval_limit_b=LIMIT, max_new_tokens_b=4)
    t0 = time.time()
    records = continual.run_grid(spec, progress=None)
    assert len(records) == 1 and {"acc_A_stage1", "acc_A_stage2", "acc_B_stage2"} <= set(records[0])
    return {**{k: records[0][k] for k in ("method", "lr", "acc_A_stage1", "acc_A_stage2", "acc_B_stage2")},
            "seconds": round(time.time() - t0, 1)}


def main() -> int:
    t_start = time.time()
    for stale in ("runs", "continual", "merged"):  # every invocation trains from step 0
        shutil.rmtree(CACHE / stale, ignore_errors=True)
    lab.quiet()
    dev = lab.device()
    if dev.type == "cpu":
        torch.set_num_threads(THREADS)
    print(f"paper-smoke: Llama-3.2-1B config with {LAYERS} layer(s), random weights; device {dev}"
          + (f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else f" ({os.cpu_count()} CPU cores, "
             f"{torch.get_num_threads()} torch threads)")
          + f"; training {'bf16 autocast over float32 weights' if dev.type == 'cuda' else 'float32'}; "
            f"num_beams {BEAMS}; cache {CACHE}")
    base = build_model(CACHE / f"base-{LAYERS}layers-v{VERSION}", LAYERS)
    data = build_data(CACHE / f"data-v{VERSION}")
    _, tests = lab.load_commonsense(data, split="test")

    probe = Probe()
    rows = []
    for method in METHODS:
        row = smoke_method(method, base, data, tests, probe)
        rows.append(row)
        print(f"  {method:15s} trainable {row['trainable'] / 1e6:8.2f} M  steps {row['steps']}  "
              f"step s {row['step_s']}  peak {row['peak_bytes'] / 2**30:6.2f} GiB  train {row['train_s']:5.1f} s  "
              f"merge+save+reload+eval {row['eval_s']:5.1f} s  ({row['device']}, {row['dtype']})", flush=True)
    cont = smoke_continual(base, data)
    print(f"  continual bhra stage 1 -> stage 2: {cont}", flush=True)

    peak_kind = memory_peak()[1]
    total = time.time() - t_start
    result = dict(layers=LAYERS, device=str(dev), gpu=torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
                  cpu_cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                  python=platform.python_version(), num_beams=BEAMS, limit=LIMIT, settings=SMOKE,
                  peak_memory=peak_kind, rows=rows, continual=cont, seconds=round(total, 1))
    write_json(CACHE / "smoke.json", result)

    print("\n| method | trainable | step s (each) | peak GiB | largest file / factor bytes: checkpoint, finished run |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        ratio = (f"{r['largest_checkpoint_file'] / r['factor_bytes']:.2f}, {r['largest_run_file'] / r['factor_bytes']:.2f}"
                 if "factor_bytes" in r else "– (full fine-tuning keeps model/)")
        print(f"| {r['method']} | {r['trainable'] / 1e6:.2f} M | {', '.join(f'{s:.2f}' for s in r['step_s'])} "
              f"| {r['peak_bytes'] / 2**30:.2f} | {ratio} |")
    print(f"\npeak memory: {peak_kind}; step = one optimiser step of {SMOKE['batch_size']} micro-batches of "
          f"{SMOKE['micro_batch_size']} (cutoff {SMOKE['cutoff_len']} tokens). paper-smoke passed in {total:.0f} s "
          f"({LAYERS} layer(s), {dev}); numbers in {CACHE / 'smoke.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
