"""Fine-tuning and evaluation: one code path for every profile (offline, smol, paper).

    run = train(preset("offline", method="bhra"))     # Trainer, adapters from core.bhra, cached run folder
    model, tok = load_trained(cfg)                     # base model + the run's adapter, on the GPU if any
    evaluate(model, tok, tests)                        # batched generation, LLM-Adapters answer extraction

A run folder, `<cache>/runs/<profile>/<method>-<hash>`, is keyed by `identity(cfg)`: everything that
changes the result — the RunConfig's training fields, the learning rate actually used, the base
model's identity (an offline BaseSpec, the smol base's GGUF, or a folder's / hub model's path and config
hash) and the sha256 of the training file. It holds `adapter/` (the factors, core.bhra.save_adapter) or
`model/` (full fine-tuning), `run.json` (written last, with the sha256 of every file it vouches for: loading
checks them) and, while the run is unfinished, `trainer/checkpoint-*` holding the trainable tensors and the
optimiser state only, each marked complete when written to the end. A run that diverged (a loss not finite,
or no optimiser step) is never published: `diverged.json` says why. One process writes a run folder at a
time (lab.cache.lock).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.bhra import adapted_layers, inject, load_adapter, merge, merge_and_unload, save_adapter
from lab import budget
from lab.cache import building, file_sha256, lock, read_json, resolve, root, stable_hash, write_json
from lab.config import EVAL_RANGES, OFFLINE, RunConfig, check_settings
from lab.formats import (COMMONSENSE_TASKS, extract_answer, extract_number, generate_prompt, is_correct,
                         load_json_records, tokenize_example)
from lab import smol
from lab.offline import BaseSpec, base_model_path, offline_data
from lab.pool import in_parallel, threads

# ----------------------------------------------------------------------------------------------
# The base model: where it comes from, what it is, where it runs
# ----------------------------------------------------------------------------------------------


def offline_spec(model) -> BaseSpec | None:
    """The BaseSpec a `model` value names ("offline" = the default one), or None for a folder / hub id."""
    return BaseSpec() if model == OFFLINE else model if isinstance(model, BaseSpec) else None


def model_path(model, cache=None) -> str:
    """The path rule for models: an offline BaseSpec ("offline" = the default) -> its built folder; "smol" ->
    SmolLM2-135M-Instruct's converted folder (lab.smol); a folder (relative: from the repo root) -> its absolute
    path; anything else is a hub id, returned as is."""
    if model == smol.SMOL:
        return str(smol.base_path(cache))
    spec = offline_spec(model)
    if spec is not None:
        return str(base_model_path(spec, cache=cache))
    folder = resolve(model)
    if folder.is_dir():
        return str(folder)
    if str(model).startswith(("/", ".", "~")):  # a path, not a hub id ("org/name")
        raise FileNotFoundError(f"model {model!r}: no such folder ({folder}). Pass a folder that holds config.json "
                                "and the weights, or a hub id such as meta-llama/Llama-3.2-1B")
    return model


def _hub_config(model) -> Path | None:
    """A hub model's config.json in the local hub cache; None if it was never downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid hub id either (e.g. a folder that does not exist)
        return None
    return Path(cached) if isinstance(cached, str) else None


def _is_hub_id(model) -> bool:
    return (offline_spec(model) is None and model != smol.SMOL and not resolve(model).is_dir()
            and model_path(model) == model)  # model_path refuses a path to no folder


def fetch_config(model) -> None:
    """Download a hub model's config.json unless the hub cache has it. A hub model's identity hashes that
    file, so a run names the same folder before the model's first download as after it; training fetches
    it before naming its folder (a folder or an offline base needs nothing)."""
    if not _is_hub_id(model) or _hub_config(model):
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json")
    except Exception as e:  # noqa: BLE001 - any hub failure: the same advice as for loading the model
        raise _unloadable(model, e) from e


def model_identity(model, cache=None) -> dict:
    """What a run's result depends on in the base model: the offline recipe (spec and its version), the smol
    base's GGUF file and conversion, or a folder's / hub model's path and the hash of its config.json (None
    for a hub model never downloaded: `fetch_config` first)."""
    if model == smol.SMOL:
        return {"smol": smol.identity()}
    spec = offline_spec(model)
    if spec is not None:
        return {"offline": dataclasses.asdict(spec)}
    path = model_path(model, cache)
    config = Path(path) / "config.json" if not _is_hub_id(model) else _hub_config(model)
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config and config.is_file() else None
    return {"model": path, "config": digest}


def _unloadable(model, e: Exception) -> FileNotFoundError:
    return FileNotFoundError(
        f"could not load the model {model!r}: it is not a folder holding config.json and weights, and the hub "
        f"could not serve it ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). Download it on "
        f"a machine with network access, e.g. `hf download {model} --local-dir models/{Path(str(model)).name}` "
        f"(Llama models are gated: accept the licence on the hub and `hf auth login` first), then pass that folder.")


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model=OFFLINE, dtype: torch.dtype = torch.float32, on=None, cache=None):
    """(model, tokenizer) through AutoModelForCausalLM / AutoTokenizer, from a folder or the hub.

    `model` is a hub id (meta-llama/Llama-3.2-1B), a folder, or an offline BaseSpec ("offline": the default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(model, cache)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        loaded = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - safetensors, tokenizers, json: name the folder, not the library
        if Path(path).is_dir():
            raise ValueError(f"the model folder {path} could not be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}): a file in it is damaged or "
                             "missing. Copy or download the model again; a base built in the cache (offline, "
                             "smol) is rebuilt once its folder is deleted") from e
        raise _unloadable(model, e) from e
    if tokenizer.pad_token is None:  # Llama-3 ships none; pad with EOS (masked out of the loss)
        tokenizer.pad_token = tokenizer.eos_token
    if on is not None:
        loaded.to(on)
    return loaded, tokenizer


def stored_dtype(model, cache=None) -> torch.dtype:
    """The dtype the base model's checkpoint is stored in (a merged model is saved in it)."""
    from transformers import AutoConfig

    stored = getattr(AutoConfig.from_pretrained(model_path(model, cache)), "dtype", None)
    return stored if isinstance(stored, torch.dtype) else torch.float32


def data_dir(cfg: RunConfig) -> Path:
    """The data folder (the path rule: relative to the repo root); None = the synthetic folder of the
    run's seed (its arithmetic test questions are those the offline base did not read in pre-training)."""
    if cfg.data_dir:
        return resolve(cfg.data_dir)
    return offline_data(seed=cfg.seed, base=offline_spec(cfg.model), cache=cfg.cache)


# Fields that change how a run is evaluated, logged or stored, not what it learns: not part of its identity.
# Gradient checkpointing recomputes the same forward: the GPU's memory picks it, the run stays the same run.
_NOT_IDENTITY = ("num_beams", "max_new_tokens", "eval_batch_size", "save_steps", "logging_steps", "progress",
                 "gradient_checkpointing",
                 "cache")


def identity(cfg: RunConfig) -> dict:
    """Everything a run's result depends on (see the module docstring); `run_dir` hashes it."""
    key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    # the data: a folder's path, or the synthetic folder's name (which hashes its recipe and sizes), and the
    # training file's content, so that a file edited in place names another run (None: not there yet)
    data = str(data_dir(cfg)) if cfg.data_dir else data_dir(cfg).name
    train_file = data_dir(cfg) / cfg.train_file
    base = model_identity(cfg.model, cfg.cache)
    key.update(model=OFFLINE if "offline" in base else cfg.model, learning_rate=cfg.learning_rate, base=base,
               data=data, train_sha256=file_sha256(train_file) if train_file.is_file() else None)
    return key


def run_dir(cfg: RunConfig) -> Path:
    """`<cache>/runs/<profile>/<method>-<hash>`: one folder per distinct run."""
    return root(cfg.cache) / "runs" / cfg.profile / f"{cfg.method}-{stable_hash(identity(cfg))}"


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def prepare_model(cfg: RunConfig, verbose: bool = True):
    """Base model + adapters (frozen W0), or the whole model trainable for "full"."""
    model, tokenizer = load_model(cfg.model, cache=cfg.cache)
    torch.manual_seed(cfg.seed)  # here, not before loading: building an offline base on the way draws random numbers
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

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                (Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}" / COMPLETE).write_text("")

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            params = dict((model or self.model).named_parameters())
            with torch.no_grad():
                for name, value in load_file(Path(resume_from_checkpoint) / TRAINABLE).items():
                    params[name].copy_(value)

    return FactorTrainer


def _training_set(cfg: RunConfig, tokenizer):
    """The run's training records, tokenised (labels -100 on the prompt unless train_on_inputs)."""
    ds = load_json_records(data_dir(cfg) / cfg.train_file, kind=None)  # commonsense or arithmetic (task B)
    if cfg.n_train:
        ds = ds.select(range(min(cfg.n_train, len(ds))))
    ds = ds.map(lambda e: tokenize_example(e, tokenizer, cfg.cutoff_len, cfg.train_on_inputs),
                remove_columns=ds.column_names, desc="tokenize")
    cut = truncated_share(ds, cfg.cutoff_len)
    if cut:
        print(f"{100 * cut:.1f} % of the training records reach cutoff_len={cfg.cutoff_len} and lose their end "
              "(the answer and EOS): a larger cutoff_len keeps them")
    return ds


def truncated_share(ds, cutoff_len: int) -> float:
    """The share of tokenised records cut at `cutoff_len` (tokenize_example appends EOS only below it)."""
    return sum(len(ids) >= cutoff_len for ids in ds["input_ids"]) / max(1, len(ds))


def matmul_precision(cfg: RunConfig, on: torch.device) -> bool:
    """TF32 for float32 matmuls (HiRA/BHRA's full weight gradient, DoRA's norms) on a GPU, for runs that train in
    bf16 (the paper profile): they accept bf16's rounding already. Sets torch's flags; returns the setting."""
    tf32 = bool(cfg.bf16 and on.type == "cuda")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    return tf32


def checkpointing(cfg: RunConfig, model) -> bool:
    """On a GPU: gradient checkpointing or not, from lab.budget's estimate against the free memory (raises
    budget.DoesNotFit before training when neither fits). On the CPU: cfg.gradient_checkpointing (None: off)."""
    if not torch.cuda.is_available():
        return bool(cfg.gradient_checkpointing)
    free, _ = torch.cuda.mem_get_info()
    return budget.fit(cfg, budget.shape_of(model.config), free)


def _trainer(cfg: RunConfig, model, tokenizer, ds, out: Path, callbacks=(), gradient_checkpointing: bool = False):
    """The transformers Trainer of a run: its schedule, precision, checkpoints and logging."""
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    bf16 = cfg.bf16 and torch.cuda.is_available()
    if cfg.bf16 and not bf16:
        print("bf16 needs a GPU and none is visible: training in float32 on the CPU instead "
              "(hours for a 1B model; install the CUDA build of torch on a GPU machine)")
    args = TrainingArguments(
        output_dir=str(out / "trainer"), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size // max(1, _world_size()),
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear",
        weight_decay=0.0, bf16=bf16, logging_steps=cfg.logging_steps,
        # non-reentrant: recomputes through core.bhra's custom Function, and needs no input that requires grad
        activation_checkpointing=gradient_checkpointing, activation_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 10**9, save_total_limit=2,
        report_to=[], disable_tqdm=not cfg.progress, dataloader_num_workers=0,
        logging_nan_inf_filter=False,  # a NaN loss must show in the record, not be averaged away
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory only helps a GPU
        # on CPU, only use_cpu makes the Trainer join torchrun's gloo group; without it every rank
        # trains the whole run alone and writes the same checkpoint folder as the others
        use_cpu=not torch.cuda.is_available())
    if gradient_checkpointing:  # here, not only in Trainer.train(): the model this returns is the model that trains
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8)
    trainer = _trainer_class()(model=model, args=args, train_dataset=ds, data_collator=collator,
                               callbacks=list(callbacks))
    if not cfg.progress:  # without progress bars the Trainer prints every log line instead
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    return trainer


COMPLETE = "complete"  # written last into a checkpoint folder: one without it was cut short and does not count


def _last_checkpoint(out: Path):
    """The newest complete checkpoint of an unfinished run, or None. Incomplete ones (a process killed while
    writing them) are removed: the run resumes from the last complete one."""
    folder = out / "trainer"
    if not folder.is_dir():
        return None
    found = sorted((int(c.name.split("-")[1]), c) for c in folder.glob("checkpoint-*") if c.name.split("-")[1].isdigit())
    for _, c in found:
        if not (c / COMPLETE).exists():
            shutil.rmtree(c, ignore_errors=True)
    complete = [c for _, c in found if (c / COMPLETE).exists()]
    return str(complete[-1]) if complete else None


def _publish(cfg: RunConfig, model, tokenizer, out: Path) -> dict:
    """The trained factors (or the whole model, for "full") into the run folder, atomically; returns
    {file: sha256} of what was published, for run.json to vouch for."""
    name = "model" if cfg.method == "full" else "adapter"
    with building(out / name, replace=True) as tmp:
        if cfg.method == "full":
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        else:
            save_adapter(model, tmp)
    shutil.rmtree(out / "trainer", ignore_errors=True)  # a finished run needs no checkpoint
    return {f"{name}/{f.name}": file_sha256(f) for f in sorted((out / name).iterdir())}


class RunDiverged(RuntimeError):
    """A run whose loss was not finite, or that took no optimiser step: recorded, never published."""


def finished(out: Path) -> dict | None:
    """The record of the finished run in `out`, with every file it vouches for checked; None when unfinished.
    A diverged run raises RunDiverged; a damaged one raises, naming the file and the fix."""
    fix = f"delete {out} and train again (`python -m lab train ... --fresh`)"
    if (out / DIVERGED).exists():
        raise RunDiverged(f"{out} diverged: {read_json(out / DIVERGED, fix)['reason']}. Train it with a lower "
                          f"learning rate (--lr), or again from step 0 with --fresh")
    if not (out / "run.json").exists():
        return None
    record = read_json(out / "run.json", fix)
    if "files" not in record:
        raise ValueError(f"{out / 'run.json'} lists no files to check (written by older code): {fix}")
    for name, digest in record["files"].items():
        path = out / name
        if not path.is_file():
            raise ValueError(f"{path} is missing: this run cannot be trusted; {fix}")
        if file_sha256(path) != digest:
            raise ValueError(f"{path} is damaged (its sha256 differs from run.json's): this run cannot be trusted; {fix}")
    return record


DIVERGED = "diverged.json"


def _check_result(result, trainer, losses: list, out: Path) -> None:
    """Refuse to publish a run that took no optimiser step or whose loss was not finite (recorded in diverged.json)."""
    bad = [(s, v) for s, v in losses if not math.isfinite(v)]
    reason = ("it took no optimiser step (no training records, or max_steps and epochs give none)"
              if trainer.state.global_step < 1 else
              f"its loss was {bad[0][1]} at step {bad[0][0]}" if bad else
              f"its mean loss was {result.training_loss}" if not math.isfinite(result.training_loss) else None)
    if reason:
        shutil.rmtree(out / "trainer", ignore_errors=True)  # resuming would diverge the same way
        write_json(out / DIVERGED, {"reason": reason, "losses": losses})
        raise RunDiverged(f"{out} diverged: {reason}. Nothing was published; lower the learning rate (--lr) "
                          f"or check the data, then train again")


def _aside(out: Path) -> Path:
    return out.with_name(out.name + ".replaced")


def train(cfg: RunConfig, reuse: bool = True, verbose: bool = True, callbacks=()) -> dict:
    """Fine-tune once and return the run record (also in run.json); a finished run is reused.

    `reuse=False` (the CLI's --fresh) trains from step 0; the old run is moved aside and deleted only once
    the new one is published (restored if training fails). An unfinished run (no run.json) resumes from its
    last complete checkpoint. One process trains a run folder at a time (lab.cache.lock): a second waits,
    then reuses the finished run. `callbacks`: extra transformers TrainerCallbacks (lab.smoke times the steps
    with one). Runs on `cfg.threads` CPU threads."""
    fetch_config(cfg.model)  # before naming the folder: a hub model's identity hashes its config
    out = run_dir(cfg)
    with lock(out) if _rank() == 0 else contextlib.nullcontext():
        old = _aside(out)
        if old.exists():  # a --fresh run died before publishing: the run it replaced is still the run
            if (out / "run.json").exists():
                shutil.rmtree(old)
            else:
                shutil.rmtree(out, ignore_errors=True)
                os.replace(old, out)
        if reuse:
            record = finished(out)
            if record is not None:
                return record
        elif out.exists():
            os.replace(out, old)
        try:
            record = _train(cfg, out, verbose, callbacks)
        except BaseException:
            if old.exists():
                shutil.rmtree(out, ignore_errors=True)
                os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    return record


def _train(cfg: RunConfig, out: Path, verbose: bool, callbacks) -> dict:
    t0 = time.time()
    with threads(cfg.threads):
        model, tokenizer = prepare_model(cfg, verbose=verbose)
        tokenizer.padding_side = "right"
        ckpt = checkpointing(cfg, model)  # before the data: a run that cannot fit stops here
        if ckpt and verbose:
            print("gradient checkpointing on (use_reentrant=False)")
        matmul_precision(cfg, device())
        ds = _training_set(cfg, tokenizer)
        trainer = _trainer(cfg, model, tokenizer, ds, out, callbacks, gradient_checkpointing=ckpt)
        last = _last_checkpoint(out)
        if last and verbose:
            print(f"resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
        _barrier()  # every rank has written its share of the last checkpoint before rank 0 deletes them

    if trainer.args.should_save:
        losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
        _check_result(result, trainer, losses, out)
        files = _publish(cfg, model, tokenizer, out)
        write_json(out / "run.json", {
            "config": dataclasses.asdict(cfg), "run_dir": str(out), "learning_rate": cfg.learning_rate,
            "trainable": count_trainable(model), "total": sum(p.numel() for p in model.parameters()),
            "steps": trainer.state.global_step, "world_size": trainer.args.world_size,
            "train_loss": result.training_loss, "truncated": truncated_share(ds, cfg.cutoff_len),
            "resumed_from": last, "seconds": round(time.time() - t0, 1), "gradient_checkpointing": ckpt,
            "losses": losses, "files": files})
    _barrier()
    return json.loads((out / "run.json").read_text())  # the same object a reused run returns


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def load_trained(cfg: RunConfig, on=None, verbose: bool | None = None):
    """(model, tokenizer) of a finished run, adapters loaded and NOT merged (train() it first).

    On a GPU the model goes there, in bf16 when the run trained in bf16; else CPU, float32. Prints
    where the model runs when `verbose` (default: cfg.progress)."""
    out = run_dir(cfg)
    if finished(out) is None:
        raise FileNotFoundError(f"no finished run in {out}: train it first (lab.train(cfg), or `python -m lab train` "
                                "with the same flags)")
    on = on or device()
    dtype = eval_dtype(cfg, on)
    matmul_precision(cfg, on)
    if cfg.method == "full":
        model, tokenizer = load_model(str(out / "model"), dtype=dtype)
    else:
        model, tokenizer = load_model(cfg.model, dtype=dtype, cache=cfg.cache)
        load_adapter(model, out / "adapter")
    model.to(on)
    if cfg.progress if verbose is None else verbose:
        print(f"{cfg.method}: model on {on}, {dtype}")
    return model.eval(), tokenizer


def eval_dtype(cfg: RunConfig, on: torch.device) -> torch.dtype:
    """The dtype a run's models are evaluated in: bf16 on a GPU when the run trained in bf16, else float32."""
    return torch.bfloat16 if (on.type == "cuda" and cfg.bf16) else torch.float32


def load_base(cfg: RunConfig, on=None, verbose: bool | None = None):
    """(model, tokenizer) of the run's untuned base model, evaluated as its trained runs are (load_trained):
    the same device, dtype and matmul precision, so the base's score compares with theirs."""
    on = on or device()
    model, tokenizer = load_model(cfg.model, dtype=eval_dtype(cfg, on), on=on, cache=cfg.cache)
    matmul_precision(cfg, on)
    if cfg.progress if verbose is None else verbose:
        print(f"untuned base: model on {on}, {eval_dtype(cfg, on)}")
    return model.eval(), tokenizer


def save_merged(model, tokenizer, folder, dtype: torch.dtype = torch.float32) -> Path:
    """merge_and_unload (if adapted) and save_pretrained in `dtype` (the base model's: `stored_dtype`),
    atomically: a plain transformers model."""
    folder = resolve(folder)
    if adapted_layers(model):
        merge_and_unload(model)
    with building(folder, replace=True) as tmp:
        model.to(dtype).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def train_many(cfgs: list, verbose: bool = False) -> list[dict]:
    """Train (or reuse) every run; the missing single-threaded ones side by side, one per core
    (lab.pool.in_parallel). Each is single-threaded, so its numbers are those of a run on its own."""
    todo = [c for c in cfgs if c.threads == 1 and finished(run_dir(c)) is None]
    in_parallel(train, [(c, True, verbose) for c in todo])
    return [train(c, verbose=verbose) for c in cfgs]


def train_all(cfgs: dict, verbose: bool = False) -> dict:
    """Train (or reuse) every run; {method: run record}, with one line per run."""
    out = dict(zip(cfgs, train_many(list(cfgs.values()), verbose)))
    for m, cfg in cfgs.items():
        print(f"{m:8s} lr {cfg.learning_rate:.0e}  steps {out[m]['steps']}  final loss {out[m]['losses'][-1][1]:.3f}  "
              f"({out[m]['seconds']:.0f} s of training)")
    return out


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


def evaluate_task(model, tokenizer, task: str, records, max_new_tokens: int = 16, batch_size: int = 64,
           num_beams: int = 1, progress: bool = False) -> tuple[list, float]:
    """(the answers extracted from the model's generations, the fraction correct) on `records` of `task`:
    LLM-Adapters' extraction, the first answer word (commonsense) or the last number (arithmetic)."""
    rows = [records[i] for i in range(len(records))]
    texts = generate(model, tokenizer, rows, max_new_tokens, batch_size, num_beams, progress)
    given = [extract_answer(task, g) if task in COMMONSENSE_TASKS else extract_number(g) for g in texts]
    return given, sum(is_correct(task, g, r["answer"]) for g, r in zip(texts, rows)) / len(rows)


def evaluate(model, tokenizer, tests: dict, limit: int | None = None, max_new_tokens: int = 16,
             batch_size: int = 64, num_beams: int = 1, progress: bool = False, cfg: RunConfig | None = None) -> dict:
    """{task: accuracy} for a dict of test datasets (records), plus "average" over the tasks. With a run's
    `cfg`, its decoding settings, thread count and progress bar replace the keyword values."""
    check_settings(dict(limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size, num_beams=num_beams),
                   EVAL_RANGES)
    if cfg is not None:
        max_new_tokens, batch_size, num_beams = cfg.max_new_tokens, cfg.eval_batch_size, cfg.num_beams
        progress = cfg.progress
    with threads(cfg.threads if cfg is not None else None):
        acc = {t: evaluate_task(model, tokenizer, t, [ds[i] for i in range(min(len(ds), limit or len(ds)))],
                                max_new_tokens, batch_size, num_beams, progress)[1] for t, ds in tests.items()}
    acc["average"] = sum(acc.values()) / len(acc)
    return acc


def merged_equals_unmerged(model, tokenizer, examples, max_new_tokens: int = 16) -> tuple[bool, list[str]]:
    """Generate with the adapters, merge in place, generate again: are the texts identical?

    Leaves the model merged (the cheap form for evaluation) and returns (equal, merged texts)."""
    before = generate(model, tokenizer, examples, max_new_tokens)
    merge(model)
    after = generate(model, tokenizer, examples, max_new_tokens)
    return before == after, after


def evaluate_run(cfg: RunConfig, tests: dict, limit: int | None = None) -> dict:
    """A finished run (train() it first), loaded and merged (checking merged == unmerged on a few
    prompts), evaluated merged."""
    model, tokenizer = load_trained(cfg)
    if cfg.method != "full":
        probe = [tests[t][i] for t in tests for i in range(min(2, len(tests[t])))]
        same, _ = merged_equals_unmerged(model, tokenizer, probe, cfg.max_new_tokens)
        if not same and next(model.parameters()).dtype == torch.float32:  # bf16 merging rounds W0 + ΔW
            raise AssertionError(f"{cfg.method}: merged and unmerged generations differ")
    return evaluate(model, tokenizer, tests, limit, cfg=cfg)
