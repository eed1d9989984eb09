"""Fine-tuning and evaluation: one code path for the offline and the paper profile.

    run = train(preset("offline", method="bhra"))     # Trainer, adapters from core.bhra, cached run folder
    model, tok = load_trained(cfg)                     # base model + the run's adapter, on the GPU if any
    evaluate(model, tok, tests)                        # batched generation, LLM-Adapters answer extraction

A run folder, `.cache/runs/<profile>/<method>-<hash>`, is keyed by everything that changes the
result: the RunConfig's training fields, the learning rate actually used, and the base model's
identity (the offline recipe, or a folder's path and config hash). It holds `adapter/` (the factors,
core.bhra.save_adapter) or `model/` (full fine-tuning), `run.json` (written last) and, while the run
is unfinished, `trainer/checkpoint-*` holding the trainable tensors and the optimiser state only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.bhra import adapted_layers, inject, load_adapter, merge, merge_and_unload, save_adapter
from lab import config
from lab.config import OFFLINE, RunConfig, in_parallel, resolve, stable_hash, threads, write_json
from lab.formats import generate_prompt, is_correct, load_commonsense, load_json_records, tokenize_example
from lab.offline import BaseSpec, base_model_path, offline_data

# ----------------------------------------------------------------------------------------------
# The base model: where it comes from, what it is, where it runs
# ----------------------------------------------------------------------------------------------


def model_path(name: str) -> str:
    """The path rule for models: "offline" -> the built base; a folder (relative: from the repo root)
    -> its absolute path; anything else is a hub id, returned as is."""
    if name == OFFLINE:
        return str(base_model_path())
    folder = resolve(name)
    return str(folder) if folder.is_dir() else name


def model_identity(name: str) -> dict:
    """What a run's result depends on in the base model: the offline recipe (spec and its version),
    or a folder's / hub model's path and the hash of its config.json."""
    if name == OFFLINE:
        return {"offline": dataclasses.asdict(BaseSpec())}
    path = model_path(name)
    config = Path(path) / "config.json"
    if not config.is_file():  # a hub id: its cached config if the hub was reached before
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json")
            config = Path(cached) if isinstance(cached, str) else config
        except ImportError:
            pass
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.is_file() else None
    return {"model": path, "config": digest}


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(name: str = OFFLINE, dtype: torch.dtype = torch.float32, on=None):
    """(model, tokenizer) through AutoModelForCausalLM / AutoTokenizer, from a folder or the hub.

    `name` is a hub id (meta-llama/Llama-3.2-1B), a folder, or "offline" (built on first use).
    `model.base_dtype` keeps the dtype the checkpoint was stored in (merged models are saved in it)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        stored = getattr(AutoConfig.from_pretrained(path), "dtype", None)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"could not load the model {name!r}: it is not a folder holding config.json and weights, and the hub "
            f"could not serve it ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Download it on a machine "
            f"with network access, e.g. `hf download {name} --local-dir models/{Path(name).name}` "
            f"(Llama models are gated: accept the licence on the hub and `hf auth login` first), then pass that folder.") from e
    if tokenizer.pad_token is None:  # Llama-3 ships none; pad with EOS (masked out of the loss)
        tokenizer.pad_token = tokenizer.eos_token
    model.base_dtype = stored if isinstance(stored, torch.dtype) else torch.float32  # as stored, for save_merged
    if on is not None:
        model.to(on)
    return model, tokenizer


def data_dir(cfg: RunConfig) -> Path:
    """The data folder (the path rule: relative to the repo root); None = the synthetic folder."""
    return resolve(cfg.data_dir) if cfg.data_dir else offline_data(seed=cfg.seed)


# Fields that change how a run is evaluated or logged, not what it learns: not part of its identity.
_NOT_IDENTITY = ("num_beams", "max_new_tokens", "eval_batch_size", "save_steps", "logging_steps")


def run_dir(cfg: RunConfig) -> Path:
    """`.cache/runs/<profile>/<method>-<hash>`: one folder per distinct run (see the module docstring)."""
    key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    # the data: a folder's path, or the synthetic folder's name, which hashes its recipe and sizes
    data = str(data_dir(cfg)) if cfg.data_dir else data_dir(cfg).name
    key.update(learning_rate=cfg.learning_rate, base=model_identity(cfg.model), data=data)
    return config.CACHE / "runs" / cfg.profile / f"{cfg.method}-{stable_hash(key)}"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def prepare_model(cfg: RunConfig, verbose: bool = True):
    """Base model + adapters (frozen W0), or the whole model trainable for "full"."""
    model, tokenizer = load_model(cfg.model)
    torch.manual_seed(cfg.seed)  # here, not before loading: building the offline base on the way draws random numbers
    if cfg.method == "full":
        model.requires_grad_(True)
        if verbose:
            n = sum(p.numel() for p in model.parameters())
            print(f"trainable params: {n:,} of {n:,} (100.000%) (full fine-tuning)")
    else:
        inject(model, cfg.adapter_config(), verbose=verbose)
    return model, tokenizer


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


TRAINABLE = "trainable.safetensors"  # what a checkpoint holds besides the Trainer's optimiser/scheduler/RNG state


def _trainer_class():
    from transformers import Trainer

    class FactorTrainer(Trainer):
        """A Trainer whose checkpoints hold the trainable tensors only, not the frozen base model
        (a few MB for an adapter instead of the whole model)."""

        def _save(self, output_dir=None, state_dict=None):
            if not self.args.should_save:
                return
            folder = Path(output_dir or self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            save_file({n: p.detach().contiguous().cpu() for n, p in self.model.named_parameters() if p.requires_grad},
                      folder / TRAINABLE)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            params = dict((model or self.model).named_parameters())
            with torch.no_grad():
                for name, value in load_file(Path(resume_from_checkpoint) / TRAINABLE).items():
                    params[name].copy_(value)

    return FactorTrainer


def train(cfg: RunConfig, reuse: bool = True, verbose: bool = True, progress: bool | None = None) -> dict:
    """Fine-tune once and return the run record (also in run.json); a finished run is reused.

    `reuse=False` (the CLI's --fresh) deletes the run folder and starts from step 0. An unfinished
    run (no run.json) resumes from its last checkpoint. `progress`: the Trainer's bar (default: on
    in the paper profile, off offline). The offline profile trains on one CPU thread (deterministic)."""
    from transformers import DataCollatorForSeq2Seq, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    out = run_dir(cfg)
    if reuse and (out / "run.json").exists():
        return json.loads((out / "run.json").read_text())
    if not reuse:
        shutil.rmtree(out, ignore_errors=True)
    progress = cfg.profile == "paper" if progress is None else progress
    bf16 = cfg.bf16 and torch.cuda.is_available()
    if cfg.bf16 and not bf16:
        print("bf16 needs a GPU and none is visible: training in float32 on the CPU instead "
              "(hours for a 1B model; install the CUDA build of torch on a GPU machine)")
    t0 = time.time()
    with threads(1) if cfg.profile == "offline" else nullcontext():
        model, tokenizer = prepare_model(cfg, verbose=verbose)
        tokenizer.padding_side = "right"
        ds = load_json_records(data_dir(cfg) / cfg.train_file)
        if cfg.n_train:
            ds = ds.select(range(min(cfg.n_train, len(ds))))
        ds = ds.map(lambda e: tokenize_example(e, tokenizer, cfg.cutoff_len, cfg.train_on_inputs),
                    remove_columns=ds.column_names, desc="tokenize")
        args = TrainingArguments(
            output_dir=str(out / "trainer"), seed=cfg.seed, data_seed=cfg.seed,
            per_device_train_batch_size=cfg.micro_batch_size,
            gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size // max(1, _world_size()),
            learning_rate=cfg.learning_rate, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
            num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear",
            weight_decay=0.0, bf16=bf16, logging_steps=cfg.logging_steps,
            save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 10**9, save_total_limit=2,
            report_to=[], disable_tqdm=not progress, dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory only helps a GPU
            # on CPU, only use_cpu makes the Trainer join torchrun's gloo group; without it every rank
            # trains the whole run alone and writes the same checkpoint folder as the others
            use_cpu=not torch.cuda.is_available())
        trainer = _trainer_class()(model=model, args=args, train_dataset=ds,
                                   data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100,
                                                                        pad_to_multiple_of=8))
        if not progress:  # without progress bars the Trainer prints every log line instead
            from transformers.trainer_callback import PrinterCallback
            trainer.remove_callback(PrinterCallback)
        last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
        if last and verbose:
            print(f"resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
        _barrier()  # every rank has written its share of the last checkpoint before rank 0 deletes them

    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    if args.should_save:
        tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
        if cfg.method == "full":
            model.save_pretrained(tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
        else:
            save_adapter(model, tmp / "adapter")
        final = out / ("model" if cfg.method == "full" else "adapter")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp / final.name, final)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out / "trainer", ignore_errors=True)  # a finished run needs no checkpoint
        record = {"config": dataclasses.asdict(cfg), "run_dir": str(out), "learning_rate": cfg.learning_rate,
                  "trainable": count_trainable(model), "total": sum(p.numel() for p in model.parameters()),
                  "steps": trainer.state.global_step, "world_size": args.world_size, "train_loss": result.training_loss,
                  "resumed_from": last, "seconds": round(time.time() - t0, 1), "losses": losses}
        write_json(out / "run.json", record)
    _barrier()
    return json.loads((out / "run.json").read_text())  # the same object a reused run returns


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def load_trained(cfg: RunConfig, on=None, verbose: bool | None = None):
    """(model, tokenizer) of a finished run, adapters loaded and NOT merged (train() it first).

    On a GPU the model goes there, in bf16 when the run trained in bf16; else CPU, float32. The
    paper profile prints where the model runs (`verbose`, default: on in the paper profile)."""
    out = run_dir(cfg)
    if not (out / "run.json").exists():
        raise FileNotFoundError(f"no finished run in {out}: call train(cfg) first")
    on = on or device()
    dtype = torch.bfloat16 if (on.type == "cuda" and cfg.bf16) else torch.float32
    if cfg.method == "full":
        model, tokenizer = load_model(str(out / "model"), dtype=dtype)
    else:
        model, tokenizer = load_model(cfg.model, dtype=dtype)
        load_adapter(model, out / "adapter")
    model.to(on)
    if cfg.profile == "paper" if verbose is None else verbose:
        print(f"{cfg.method}: model on {on}, {dtype}")
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model, tokenizer, examples, max_new_tokens: int = 16, batch_size: int = 64, num_beams: int = 1,
             progress: bool = False) -> list[str]:
    """Continuations of the Alpaca prompts of `examples`, batched with left padding: greedy
    (num_beams=1) or beam search (LLM-Adapters evaluates with 4 beams)."""
    model.eval()
    on = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    starts = range(0, len(examples), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="evaluate", unit="batch")
    texts = []
    try:
        for i in starts:
            batch = [generate_prompt(e, with_output=False) for e in examples[i:i + batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True).to(on)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


def evaluate(model, tokenizer, tests: dict, limit: int | None = None, max_new_tokens: int = 16,
             batch_size: int = 64, num_beams: int = 1, progress: bool = False) -> dict:
    """{task: accuracy} for a dict of test datasets (records), plus "average" over the tasks."""
    acc = {}
    for task, ds in tests.items():
        rows = [ds[i] for i in range(min(len(ds), limit or len(ds)))]
        gen = generate(model, tokenizer, rows, max_new_tokens, batch_size, num_beams, progress)
        acc[task] = sum(is_correct(task, g, r["answer"]) for g, r in zip(gen, rows)) / len(rows)
    acc["average"] = sum(acc.values()) / len(acc)
    return acc


def evaluate_cfg(model, tokenizer, tests: dict, cfg: RunConfig, limit: int | None = None) -> dict:
    """evaluate() with the run's decoding settings (beams, tokens, batch; a bar in the paper profile)."""
    with threads(1) if cfg.profile == "offline" else nullcontext():
        return evaluate(model, tokenizer, tests, limit, cfg.max_new_tokens, cfg.eval_batch_size, cfg.num_beams,
                        progress=cfg.profile == "paper")


def merged_equals_unmerged(model, tokenizer, examples, max_new_tokens: int = 16) -> tuple[bool, list[str]]:
    """Generate with the adapters, merge in place, generate again: are the texts identical?

    Leaves the model merged (the cheap form for evaluation) and returns (equal, merged texts)."""
    before = generate(model, tokenizer, examples, max_new_tokens)
    merge(model)
    after = generate(model, tokenizer, examples, max_new_tokens)
    return before == after, after


def save_merged(model, tokenizer, folder) -> Path:
    """merge_and_unload (if adapted) and save_pretrained in the base model's dtype, atomically:
    a plain transformers model."""
    folder = resolve(folder)
    if adapted_layers(model):
        merge_and_unload(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder.parent))
    model.to(getattr(model, "base_dtype", torch.float32)).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def evaluate_run(cfg: RunConfig, tests: dict, limit: int | None = None) -> dict:
    """Train if needed, load, merge (checking merged == unmerged on a few prompts), evaluate merged."""
    train(cfg, verbose=False)
    model, tokenizer = load_trained(cfg)
    if cfg.method != "full":
        probe = [tests[t][i] for t in tests for i in range(min(2, len(tests[t])))]
        same, _ = merged_equals_unmerged(model, tokenizer, probe, cfg.max_new_tokens)
        if not same and next(model.parameters()).dtype == torch.float32:  # bf16 merging rounds W0 + ΔW
            raise AssertionError(f"{cfg.method}: merged and unmerged generations differ")
    return evaluate_cfg(model, tokenizer, tests, cfg, limit)


def train_many(cfgs: list) -> list[dict]:
    """Train (or reuse) every run, quietly; the missing offline runs side by side, one per core
    (config.in_parallel). Each is single-threaded, so its numbers are those of a run on its own."""
    todo = [c for c in cfgs if c.profile == "offline" and not (run_dir(c) / "run.json").exists()]
    in_parallel(train, [(c, True, False) for c in todo])
    return [train(c, verbose=False) for c in cfgs]


def train_all(cfgs: dict, verbose: bool = False) -> dict:
    """Train (or reuse) every run; {method: run record}."""
    records = train_many(list(cfgs.values())) if not verbose else [train(c) for c in cfgs.values()]
    out = dict(zip(cfgs, records))
    for m, cfg in cfgs.items():
        print(f"{m:8s} lr {cfg.learning_rate:.0e}  steps {out[m]['steps']}  final loss {out[m]['losses'][-1][1]:.3f}  "
              f"({out[m]['seconds']:.0f} s of training)")
    return out


def evaluate_all(cfgs: dict, limit: int | None = None, include_base: bool = True) -> dict:
    """{row: {task: accuracy}}: the untuned base model, then every method evaluated merged."""
    first = next(iter(cfgs.values()))
    _, tests = load_commonsense(data_dir(first), train_file=first.train_file, split="test")
    table = {}
    if include_base:
        model, tokenizer = load_model(first.model, on=device())
        table["base (untuned)"] = evaluate_cfg(model, tokenizer, tests, first, limit)
    for m, cfg in cfgs.items():
        table[m] = evaluate_run(cfg, tests, limit)
    return table
