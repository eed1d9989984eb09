"""The lab harness shared by the fine-tuning notebooks: base model, data, training, evaluation.

One code path, two profiles (design §4):

* ``paper``   - ``meta-llama/Llama-3.2-1B`` (or any causal-LM folder), the LLM-Adapters data files,
                the paper's settings, one GPU.
* ``offline`` - a small Llama (RoPE, SwiGLU, grouped-query attention) built and briefly
                pre-trained here, saved with ``save_pretrained`` and loaded back through
                ``AutoModelForCausalLM`` / ``AutoTokenizer``; synthetic tasks written in the
                LLM-Adapters JSON format and read back with ``datasets``.

Everything below the two "where the model / data come from" sections is shared by both profiles.

Sections
  1. paths and the per-method learning-rate table
  2. the offline base model: a synthetic world, a BPE tokenizer, a tiny pre-trained Llama
  3. data: synthetic tasks in the LLM-Adapters format, loaders for the real files
  4. prompts and tokenisation (Alpaca template, cutoff, label masking)
  5. training through ``transformers.Trainer`` (adapters from ``core.bhra``; "full" = all weights)
  6. evaluation: batched greedy generation, answer extraction, merged inference
  7. command line: ``python -m core.lab train --profile offline --method bhra``
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

# ----------------------------------------------------------------------------------------------
# 1. Paths and tables
# ----------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("BHRA_CACHE", REPO / ".cache"))  # gitignored; every artefact lives here

METHODS_ALL = ("lora", "dora", "hira", "abba", "gralora", "bhra", "full")  # "full" = full fine-tuning
TARGETS_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Learning rates per method, one table for both profiles. The paper column holds published starting
# points (design §3): LoRA 3e-4 (LLM-Adapters), DoRA 2e-4 (DoRA paper, commonsense), HiRA and ABBA
# 1e-3 (their papers/repos), GraLoRA 2e-4 (as LoRA-like), BHRA 1e-3 (HiRA's, as the paper builds on
# it), full fine-tuning 2e-5. The offline column was tuned on the tiny model (a few hundred steps).
LEARNING_RATES = {
    #            paper   offline
    "lora":    {"paper": 3e-4, "offline": 2e-2},
    "dora":    {"paper": 2e-4, "offline": 2e-2},
    "hira":    {"paper": 1e-3, "offline": 1e-1},
    "abba":    {"paper": 1e-3, "offline": 6e-3},
    "gralora": {"paper": 2e-4, "offline": 2e-2},
    "bhra":    {"paper": 1e-3, "offline": 1e-1},
    "full":    {"paper": 2e-5, "offline": 3e-3},
}

# The eight commonsense tasks of LLM-Adapters: folder name -> regex of valid answers (first match wins).
COMMONSENSE_TASKS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "social_i_qa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
    "ARC-Easy": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Challenge": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
}


def quiet() -> None:
    """Silence the libraries' progress bars and warnings (notebook outputs stay readable)."""
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _hash(obj) -> str:
    """A short, stable hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _publish(tmp: Path, final: Path) -> Path:
    """Move a finished temp folder into place; if another process got there first, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final) if not final.exists() else shutil.rmtree(tmp)
    except OSError:  # final appeared between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_json(path: Path, obj) -> None:
    """Write JSON atomically: a killed write leaves the old file (or none), never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# 2. The offline base model
# ----------------------------------------------------------------------------------------------
# A tiny world: things in categories, each category with a verb ("you can eat a fruit") and a
# place ("in the kitchen"). Pre-training on plain sentences about this world puts the facts in W0;
# the fine-tuning tasks of section 3 ask about the same facts in the LLM-Adapters answer formats,
# so a fine-tune has to learn the format and how to use what W0 already knows.

WORLD = {
    # category:  (things, verb phrase, place)
    "animal":    (("dog", "cat", "horse", "cow", "sheep", "rabbit", "goat", "duck"), "feed", "farm"),
    "fruit":     (("apple", "banana", "grape", "lemon", "mango", "peach", "pear", "cherry"), "eat", "kitchen"),
    "tool":      (("hammer", "saw", "drill", "wrench", "shovel", "rake", "axe", "chisel"), "fix things with", "shed"),
    "vehicle":   (("car", "bus", "train", "truck", "bike", "boat", "plane", "van"), "ride", "garage"),
    "furniture": (("chair", "table", "bed", "sofa", "desk", "shelf", "stool", "bench"), "sit on", "living room"),
    "clothing":  (("shirt", "coat", "hat", "sock", "shoe", "scarf", "glove", "dress"), "wear", "closet"),
}
CATEGORY_OF = {thing: cat for cat, (things, _, _) in WORLD.items() for thing in things}
NAMES = ("Sam", "Mia", "Tom", "Ana", "Leo", "Kim", "Max", "Eva", "Ben", "Zoe")


def world_corpus(n_sentences: int, seed: int = 0) -> list[str]:
    """Plain sentences about the world and small sums: what the offline base model pre-trains on."""
    rng = random.Random(seed)
    cats = list(WORLD)
    out = []
    for _ in range(n_sentences):
        cat = rng.choice(cats)
        things, verb, place = WORLD[cat]
        x, name = rng.choice(things), rng.choice(NAMES)
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        out.append(rng.choice([
            f"a {x} is a kind of {cat}.",
            f"the {x} is a {cat}, not a {rng.choice([c for c in cats if c != cat])}.",
            f"you can {verb} a {x}.",
            f"{name} wants to {verb} something, so {name} takes the {x}.",
            f"the {x} is kept in the {place}.",
            f"in the {place} there is a {x} and a {rng.choice(things)}.",
            f"is a {x} a {cat}? yes. is a {x} a {rng.choice([c for c in cats if c != cat])}? no.",
            f"{a} plus {b} is {a + b}.",
            f"{a + b} minus {b} is {a}.",
            f"{name} has {a} {x}s and gets {b} more, so {name} has {a + b} {x}s.",
        ]))
    return out


def word_salad(n_docs: int, seed: int = 0, words_per_doc: int = 12) -> list[str]:
    """Shuffled words of prompts and answers: every token of the vocabulary occurs in pre-training
    (as in a real LLM, whose embeddings have all been trained), but no task structure does."""
    rng = random.Random(seed + 7)
    pool = [generate_prompt(e).split() for e in make_commonsense(20, seed + 3) + make_arithmetic(100, seed + 4)]
    return [" ".join(rng.sample(ws, min(words_per_doc, len(ws)))) for ws in (rng.choice(pool) for _ in range(n_docs))]


@dataclass
class BaseSpec:
    """The offline base model. Widths are multiples of 8 so every adapter grid divides them."""
    hidden_size: int = 64            # d_model
    intermediate_size: int = 176     # SwiGLU width (Llama's 8/3·d rounded to a multiple of 8)
    num_hidden_layers: int = 2
    num_attention_heads: int = 4     # head_dim = 16
    num_key_value_heads: int = 2     # grouped-query attention, as Llama-3.2 (32 q heads, 8 kv heads)
    vocab_size: int = 1024           # byte-level BPE trained on the corpus below
    max_position_embeddings: int = 512
    rope_theta: float = 500000.0     # Llama-3's RoPE base
    initializer_range: float = 0.1   # ~1/sqrt(d): a 64-wide model with 0.02 (the big models' value) ends
                                     # pre-training with logits too flat for a frozen head to sharpen
    corpus_sentences: int = 40000
    pretrain_steps: int = 400
    pretrain_batch: int = 32
    pretrain_seq: int = 64
    pretrain_lr: float = 3e-3
    seed: int = 0
    version: int = 3                 # bump when the recipe changes, so old caches are not reused


SPECIAL_TOKENS = {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": "<|pad|>"}


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (the Llama-3 kind), trained on `texts`, with BOS added in front."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=SPECIAL_TOKENS["eos"],
                                   pad_token=SPECIAL_TOKENS["pad"], model_max_length=2048)


def _tokenizer_texts(seed: int) -> list[str]:
    """What the tokenizer sees: the corpus, the prompt template and every task's wording."""
    texts = world_corpus(5000, seed)
    ex = make_commonsense(n_per_task=40, seed=seed + 1)
    ex += make_arithmetic(n=200, seed=seed + 2)
    return texts + [generate_prompt(e) for e in ex]


def base_model_path(spec: BaseSpec | None = None, build: bool = True, verbose: bool = True) -> Path:
    """Folder of the offline base model (built on first use, then reused): `.cache/base/<hash>`."""
    spec = spec or BaseSpec()
    final = CACHE / "base" / _hash(dataclasses.asdict(spec))
    if (final / "config.json").exists():
        return final
    if not build:
        raise FileNotFoundError(f"offline base model not built yet: {final}")
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent if final.parent.exists() else _mk(final.parent)))
    try:
        tokenizer = build_tokenizer(_tokenizer_texts(spec.seed), spec.vocab_size)
        model = _pretrain(spec, tokenizer, verbose)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_json(tmp / "base_spec.json", dataclasses.asdict(spec))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    if verbose:
        print(f"built offline base model in {time.time() - t0:.0f} s -> {final}")
    return final


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _pretrain(spec: BaseSpec, tokenizer, verbose: bool):
    """Next-token pre-training of a small LlamaForCausalLM on the world corpus (plain PyTorch loop)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta, initializer_range=spec.initializer_range, hidden_act="silu", tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    # one long token stream, cut into windows
    # one long stream of documents "<bos> sentence <eos>", cut into windows: the model sees EOS
    texts = world_corpus(spec.corpus_sentences, spec.seed) + word_salad(spec.corpus_sentences // 4, spec.seed)
    random.Random(spec.seed).shuffle(texts)
    docs = tokenizer(texts)["input_ids"]  # BOS added
    ids = torch.tensor([i for d in docs for i in d + [tokenizer.eos_token_id]])
    n_win = len(ids) // spec.pretrain_seq
    windows = ids[: n_win * spec.pretrain_seq].view(n_win, spec.pretrain_seq)       # (N, T)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.pretrain_lr, total_steps=spec.pretrain_steps, pct_start=0.1)
    g = torch.Generator().manual_seed(spec.seed)
    model.train()
    for step in range(spec.pretrain_steps):
        batch = windows[torch.randint(0, n_win, (spec.pretrain_batch,), generator=g)]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        if verbose and (step % 100 == 0 or step == spec.pretrain_steps - 1):
            print(f"  pre-training step {step:4d}  loss {loss.item():.3f}")
    return model.eval()


# ----------------------------------------------------------------------------------------------
# 3. Data in the LLM-Adapters format: a JSON list of {"instruction", "input", "output", "answer"}
# ----------------------------------------------------------------------------------------------
# Synthetic tasks (offline profile). Each family copies the wording and the answer format of one
# of the eight commonsense tasks; every question is answered by a fact of WORLD.

# Multiple-choice families: how many options, and the first category of their fixed window.
N_OPTIONS = {"piqa": 2, "social_i_qa": 3, "ARC-Easy": 4, "ARC-Challenge": 5, "openbookqa": 4, "hellaswag": 4, "winogrande": 2}
WINDOW_START = {"piqa": 0, "social_i_qa": 1, "ARC-Easy": 2, "ARC-Challenge": 0, "openbookqa": 3, "hellaswag": 1, "winogrande": 4}


def _window(task: str) -> list[str]:
    """The categories a multiple-choice family draws its options from, in a fixed order."""
    cats = list(WORLD)
    return [cats[(WINDOW_START[task] + j) % len(cats)] for j in range(N_OPTIONS[task])]


def _options(rng: random.Random, task: str, cat: str, fmt: str = "{}") -> tuple[list[str], int]:
    """One random thing from each category of the task's window; returns (options, index of `cat`).

    Option j is always a thing of the window's j-th category, so the answer follows from the
    category the question points at (through a word: "fruit", "eat", "kitchen") and W0's knowledge
    of the words - a rule a tiny model can pick up in a few hundred steps."""
    win = _window(task)
    return [fmt.format(rng.choice(WORLD[c][0])) for c in win], win.index(cat) + 1


def _choices(label: str, opts: list[str]) -> str:
    return "\n\n".join(f"{label}{i}: {o}" for i, o in enumerate(opts, 1))


def _record(instruction: str, answer: str) -> dict:
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def _commonsense_example(task: str, rng: random.Random) -> dict:
    cats = list(WORLD)
    cat = rng.choice(_window(task) if task in N_OPTIONS else cats)
    things, verb, place = WORLD[cat]
    x, name = rng.choice(things), rng.choice(NAMES)

    if task == "boolq":
        asked = cat if rng.random() < 0.5 else rng.choice([c for c in cats if c != cat])
        where = WORLD[rng.choice(cats)][2]
        q = f"{name} saw a {x} in the {where}. is a {x} a kind of {asked}?"
        return _record(f"Please answer the following question with true or false, question: {q}\n\nAnswer format: true/false",
                       "true" if asked == cat else "false")
    if task == "piqa":
        opts, i = _options(rng, task, cat, "take the {}")
        return _record(f"Please choose the correct solution to the question: {name} wants to {verb} something. what should {name} do?\n\n"
                       f"{_choices('Solution', opts)}\n\nAnswer format: solution1/solution2", f"solution{i}")
    if task == "social_i_qa":
        opts, i = _options(rng, task, cat)
        return _record(f"Please choose the correct answer to the question: {name} went to the {place}. what did {name} find there?\n\n"
                       f"{_choices('Answer', opts)}\n\nAnswer format: answer1/answer2/answer3", f"answer{i}")
    if task == "ARC-Easy":
        opts, i = _options(rng, task, cat)
        return _record(f"Please choose the correct answer to the question: which of these is a {cat}?\n\n"
                       f"{_choices('Answer', opts)}\n\nAnswer format: answer1/answer2/answer3/answer4", f"answer{i}")
    if task == "ARC-Challenge":  # five options, and the category is named only through its verb
        opts, i = _options(rng, task, cat)
        return _record(f"Please choose the correct answer to the question: which of these can you {verb}?\n\n"
                       f"{_choices('Answer', opts)}\n\nAnswer format: answer1/answer2/answer3/answer4/answer5", f"answer{i}")
    if task == "openbookqa":
        opts, i = _options(rng, task, cat)
        return _record(f"Please choose the correct answer to the question: fact: a {x} is kept in the {place}. "
                       f"which of these is kept in the {place}?\n\n"
                       f"{_choices('Answer', opts)}\n\nAnswer format: answer1/answer2/answer3/answer4", f"answer{i}")
    if task == "hellaswag":
        opts, i = _options(rng, task, cat, "{}.")
        return _record(f"Please choose the correct ending to complete the given sentence: {name} walked into the {place} and looked at the\n\n"
                       f"{_choices('Ending', opts)}\n\nAnswer format: ending1/ending2/ending3/ending4", f"ending{i}")
    if task == "winogrande":
        opts, i = _options(rng, task, cat)
        return _record(f"Please choose the correct answer to fill in the blank to complete the given sentence: {name} wanted to {verb} something, so {name} took the _.\n\n"
                       f"{_choices('Option', opts)}\n\nAnswer format: option1/option2", f"option{i}")
    raise ValueError(f"unknown task {task!r}; expected one of {list(COMMONSENSE_TASKS)}")


def make_commonsense(n_per_task: int, seed: int = 0) -> list[dict]:
    """`n_per_task` distinct examples of each of the eight families, tasks interleaved (like commonsense_170k)."""
    return [r for t, task in enumerate(COMMONSENSE_TASKS)
            for r in _distinct(lambda rng: _commonsense_example(task, rng), n_per_task, seed * 1000 + t)]


def _arithmetic_example(rng: random.Random) -> dict:
    cat = rng.choice(list(WORLD))
    x, name = rng.choice(WORLD[cat][0]), rng.choice(NAMES)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        q = f"{name} has {a} {x}s. {name} gets {b} more {x}s. how many {x}s does {name} have now?"
        sol, ans = f"{name} has {a} {x}s and gets {b} more, so {a} + {b} = {a + b}.", a + b
    else:
        q = f"{name} has {a + b} {x}s. {name} gives away {b} {x}s. how many {x}s does {name} have now?"
        sol, ans = f"{name} has {a + b} {x}s and gives away {b}, so {a + b} - {b} = {a}.", a
    return {"instruction": q, "input": "", "output": f"{sol} The answer is {ans}", "answer": str(ans)}


def make_arithmetic(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-style word problems with small sums and differences; outputs end "The answer is N"."""
    return _distinct(_arithmetic_example, n, seed)


def _distinct(make, n: int, seed: int) -> list[dict]:
    """`n` examples with distinct instructions, deterministic in `seed`."""
    rng, seen, out = random.Random(seed), set(), []
    for _ in range(200 * n + 1000):
        r = make(rng)
        if r["instruction"] not in seen:
            seen.add(r["instruction"]); out.append(r)
            if len(out) == n:
                return out
    raise ValueError(f"could not draw {n} distinct examples (the family has fewer)")


def offline_data(n_train_per_task: int = 500, n_test_per_task: int = 50, n_math_train: int = 2000,
                 n_math_test: int = 100, seed: int = 0) -> Path:
    """Write the synthetic tasks in LLM-Adapters' folder layout (once) and return the folder.

        <folder>/ft-training_set/commonsense_synthetic.json   (the stand-in for commonsense_170k.json)
        <folder>/ft-training_set/math_synthetic.json          (the stand-in for MetaMathQA)
        <folder>/dataset/<task>/test.json                     (the eight tasks, and gsm8k)
    Train and test are disjoint: every instruction is drawn once, the first ones go to test.
    """
    args = dict(n_train_per_task=n_train_per_task, n_test_per_task=n_test_per_task, n_math_train=n_math_train,
                n_math_test=n_math_test, seed=seed, version=1)
    final = CACHE / "data" / f"offline-{_hash(args)}"
    if (final / "done.json").exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=_mk(final.parent)))
    try:
        train, n = [], n_train_per_task + n_test_per_task
        recs = make_commonsense(n, seed)
        for t, task in enumerate(COMMONSENSE_TASKS):
            train += recs[t * n + n_test_per_task: (t + 1) * n]
            _write_json(tmp / "dataset" / task / "test.json", recs[t * n: t * n + n_test_per_task])
        random.Random(seed).shuffle(train)
        _write_json(tmp / "ft-training_set" / "commonsense_synthetic.json", train)
        math = make_arithmetic(n_math_train + n_math_test, seed * 1000 + 99)
        _write_json(tmp / "ft-training_set" / "math_synthetic.json", math[n_math_test:])
        _write_json(tmp / "dataset" / "gsm8k" / "test.json", math[:n_math_test])
        _write_json(tmp / "done.json", args)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, final)


# Loaders: the same for the synthetic folder and the real one.

REQUIRED_KEYS = ("instruction", "input", "output", "answer")

DOWNLOAD_HINT = {
    "commonsense": "Get it from the LLM-Adapters repository (github.com/AGI-Edgerunners/LLM-Adapters): "
                   "ft-training_set/commonsense_170k.json and dataset/<task>/test.json for the eight tasks, "
                   "and put them under {data_dir} in the same layout.",
    "math": "Download MetaMathQA (hub: meta-math/MetaMathQA, file MetaMathQA-395K.json) and GSM8K "
            "(hub: openai/gsm8k, or LLM-Adapters' dataset/gsm8k/test.json) and pass their paths.",
}


def load_json_records(path, kind: str = "commonsense"):
    """Read one LLM-Adapters JSON file with `datasets`, checking that it has the four fields."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}\n" + DOWNLOAD_HINT[kind].format(data_dir=path.parent))
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # not JSON, or not a list of records
        raise ValueError(f"{path} is not in the LLM-Adapters format (a JSON list of {{{', '.join(REQUIRED_KEYS)}}} "
                         f"records): {type(e).__name__}: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in ds.column_names]
    if missing:
        raise ValueError(f"{path} is not in the LLM-Adapters format: records lack {missing} "
                         f"(found columns {ds.column_names}; expected {list(REQUIRED_KEYS)})")
    return ds


def load_commonsense(data_dir, train_file: str = "ft-training_set/commonsense_170k.json",
                     tasks=tuple(COMMONSENSE_TASKS), split: str = "both"):
    """(train dataset, {task: test dataset}) from a folder in LLM-Adapters' layout."""
    data_dir = Path(data_dir)
    train = load_json_records(data_dir / train_file) if split in ("both", "train") else None
    tests = {t: load_json_records(data_dir / "dataset" / t / "test.json") for t in tasks} if split in ("both", "test") else None
    return train, tests


def load_math(source: str, split: str = "train"):
    """MetaMathQA (train) or GSM8K (test) as LLM-Adapters records, from a local file or a hub name.

    Local JSON in LLM-Adapters format is read as is; MetaMathQA's {query, response} and GSM8K's
    {question, answer "... #### N"} are converted (MetaMathQA's responses end "The answer is: N")."""
    import datasets

    p = Path(source)
    if p.suffix in (".json", ".jsonl") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p}\n" + DOWNLOAD_HINT["math"])
        ds = datasets.load_dataset("json", data_files=str(p), split="train")
    else:
        try:
            ds = datasets.load_dataset(source, "main", split=split) if "gsm8k" in source else datasets.load_dataset(source, split=split)
        except Exception as e:
            raise FileNotFoundError(f"could not load {source!r} from the hub ({type(e).__name__}). "
                                    + DOWNLOAD_HINT["math"]) from e
    cols = set(ds.column_names)
    if set(REQUIRED_KEYS) <= cols:
        return ds
    if {"query", "response"} <= cols:      # MetaMathQA
        return ds.map(lambda e: {"instruction": e["query"], "input": "", "output": e["response"],
                                 "answer": e["response"].split("The answer is:")[-1].strip()}, remove_columns=list(cols))
    if {"question", "answer"} <= cols:     # GSM8K
        return ds.map(lambda e: {"instruction": e["question"], "input": "",
                                 "output": e["answer"].split("####")[0].strip() + " The answer is " + e["answer"].split("####")[-1].strip(),
                                 "answer": e["answer"].split("####")[-1].strip().replace(",", "")}, remove_columns=list(cols))
    raise ValueError(f"{source}: unknown format with columns {sorted(cols)}; expected LLM-Adapters "
                     f"{list(REQUIRED_KEYS)}, MetaMathQA (query, response) or GSM8K (question, answer)")


# ----------------------------------------------------------------------------------------------
# 4. Prompts and tokenisation
# ----------------------------------------------------------------------------------------------

def generate_prompt(example: dict, with_output: bool = True) -> str:
    """The Alpaca template LLM-Adapters trains and evaluates with."""
    out = example["output"] if with_output else ""
    if example.get("input"):
        return ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{example['instruction']}\n\n### Input:\n{example['input']}\n\n### Response:\n{out}")
    return ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{example['instruction']}\n\n### Response:\n{out}")


def tokenize_example(example: dict, tokenizer, cutoff_len: int = 256, train_on_inputs: bool = False) -> dict:
    """input_ids / attention_mask / labels for one example, truncated to `cutoff_len`, EOS appended.

    With train_on_inputs=False the prompt's labels are -100: the loss is on the response only."""
    ids = tokenizer(generate_prompt(example), truncation=True, max_length=cutoff_len)["input_ids"]
    if len(ids) < cutoff_len and ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    labels = list(ids)
    if not train_on_inputs:
        n_prompt = len(tokenizer(generate_prompt(example, with_output=False), truncation=True, max_length=cutoff_len)["input_ids"])
        labels[:n_prompt] = [-100] * n_prompt
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


# ----------------------------------------------------------------------------------------------
# 5. Training
# ----------------------------------------------------------------------------------------------

OFFLINE = "offline"  # the model name that means "the small Llama built by base_model_path()"


def load_model(name: str = OFFLINE, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) through AutoModelForCausalLM / AutoTokenizer, from a folder or the hub.

    `name` is a hub id (meta-llama/Llama-3.2-1B), a local folder, or "offline" (built on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(base_model_path()) if name == OFFLINE else str(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"could not load the model {name!r}: it is not a folder holding config.json and weights, and the hub "
            f"could not serve it ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Download it on a machine "
            f"with network access, e.g. `huggingface-cli download {name} --local-dir models/{Path(name).name}` "
            f"(Llama models are gated: accept the licence on the hub first), then pass that folder.") from e
    if tokenizer.pad_token is None:  # Llama-3 ships none; LLM-Adapters pads with a reserved id
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@dataclass
class RunConfig:
    """One fine-tuning run. The paper and offline profiles differ only in these values."""
    method: str = "bhra"                  # one of METHODS_ALL ("full" = every weight trainable)
    profile: str = "offline"              # selects the learning-rate column and the run folder
    model: str = OFFLINE                  # hub id or folder; "offline" = the small Llama built here
    data_dir: str | None = None           # LLM-Adapters layout; None = the synthetic folder (offline_data())
    train_file: str = "ft-training_set/commonsense_synthetic.json"
    r: int = 8                            # LoRA-equivalent rank, the same for every method
    b: int = 4                            # BHRA grid (r_b = r / b)
    k: int = 2                            # GraLoRA grid
    alpha: float = 16.0                   # LoRA-family scale numerator (α/r)
    rslora: bool = False
    dropout: float = 0.0
    targets: tuple = TARGETS_ALL
    lr: float | None = None               # None = LEARNING_RATES[method][profile]
    max_steps: int = 150                  # > 0: the budget in optimiser steps (matched across methods)
    epochs: float = 3.0                   # used when max_steps <= 0
    batch_size: int = 16                  # examples per optimiser step
    micro_batch_size: int = 16            # examples per forward; gradient accumulation = batch / micro
    warmup_steps: int = 10
    cutoff_len: int = 256
    train_on_inputs: bool = False         # False: loss on the response only (prompt labels = -100)
    n_train: int | None = None            # use only the first n training records
    bf16: bool = False
    save_steps: int = 0                   # checkpoint every n steps (0: only at the end)
    logging_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        self.targets = tuple(self.targets)
        if self.method not in METHODS_ALL:
            raise ValueError(f"unknown method {self.method!r}: choose one of {METHODS_ALL}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={self.micro_batch_size}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LEARNING_RATES[self.method][self.profile]

    def adapter_config(self):
        from core.bhra import AdapterConfig
        return AdapterConfig(method=self.method, r=self.r, b=self.b, k=self.k, alpha=self.alpha,
                             rslora=self.rslora, dropout=self.dropout, targets=self.targets)


def run_dir(cfg: RunConfig) -> Path:
    """`.cache/runs/<profile>/<method>-<hash of the config>`: one folder per distinct run.

    The hash includes the learning rate actually used, so editing LEARNING_RATES starts new runs."""
    key = {**dataclasses.asdict(cfg), "learning_rate": cfg.learning_rate}
    return CACHE / "runs" / cfg.profile / f"{cfg.method}-{_hash(key)}"


def data_dir(cfg: RunConfig) -> Path:
    """The data folder; a relative path is read from the repo root, wherever the caller runs."""
    return REPO / cfg.data_dir if cfg.data_dir else offline_data(seed=cfg.seed)


def prepare_model(cfg: RunConfig, verbose: bool = True, inject_fn=None):
    """Base model + adapters (frozen W0), or the whole model trainable for "full"."""
    model, tokenizer = load_model(cfg.model)
    if cfg.method == "full":
        model.requires_grad_(True)
        if verbose:
            n = sum(p.numel() for p in model.parameters())
            print(f"trainable params: {n:,} of {n:,} (100.000%) (full fine-tuning)")
    else:
        from core.bhra import inject
        (inject_fn or inject)(model, cfg.adapter_config(), verbose=verbose)
    return model, tokenizer


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(cfg: RunConfig, reuse: bool = True, verbose: bool = True, progress: bool = False, inject_fn=None) -> dict:
    """Fine-tune once and return the run record (also in run.json); a finished run is reused.

    The run folder holds `trainer/checkpoint-*` (the Trainer's own, used to resume after a kill),
    then `adapter/` (core.bhra.save_adapter) or `model/` (full fine-tuning), `losses.json` and
    `run.json`, written last: a folder without run.json is an unfinished run, and is resumed."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    out = run_dir(cfg)
    if reuse and (out / "run.json").exists():
        return json.loads((out / "run.json").read_text())
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    model, tokenizer = prepare_model(cfg, verbose=verbose, inject_fn=inject_fn)
    tokenizer.padding_side = "right"
    ds = load_json_records(data_dir(cfg) / cfg.train_file)
    if cfg.n_train:
        ds = ds.select(range(min(cfg.n_train, len(ds))))
    ds = ds.map(lambda e: tokenize_example(e, tokenizer, cfg.cutoff_len, cfg.train_on_inputs),
                remove_columns=ds.column_names, desc="tokenize")

    args = TrainingArguments(
        output_dir=str(out / "trainer"), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size,
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear",
        weight_decay=0.0, bf16=cfg.bf16, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps or 10**9, save_total_limit=2,
        report_to=[], disable_tqdm=not progress, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8))
    if not progress:  # without progress bars the Trainer prints every log line instead
        from transformers.trainer_callback import PrinterCallback
        trainer.remove_callback(PrinterCallback)
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if last and verbose:
        print(f"resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)

    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    tmp = Path(tempfile.mkdtemp(prefix=".final-", dir=out))
    if cfg.method == "full":
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
    else:
        from core.bhra import save_adapter
        save_adapter(model, tmp / "adapter")
    final = out / ("model" if cfg.method == "full" else "adapter")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp / final.name, final)
    shutil.rmtree(tmp, ignore_errors=True)
    record = {"config": dataclasses.asdict(cfg), "run_dir": str(out), "learning_rate": cfg.learning_rate,
              "trainable": count_trainable(model), "total": sum(p.numel() for p in model.parameters()),
              "steps": trainer.state.global_step, "train_loss": result.training_loss,
              "resumed_from": last, "seconds": round(time.time() - t0, 1), "losses": losses}
    _write_json(out / "run.json", record)
    return json.loads((out / "run.json").read_text())  # the same object a reused run returns


def load_trained(cfg: RunConfig, inject_fn=None):
    """(model, tokenizer) of a finished run, adapters loaded and NOT merged (train() it first)."""
    out = run_dir(cfg)
    if not (out / "run.json").exists():
        raise FileNotFoundError(f"no finished run in {out}: call train(cfg) first")
    if cfg.method == "full":
        return load_model(str(out / "model"))
    from core.bhra import load_adapter
    model, tokenizer = load_model(cfg.model)
    if inject_fn is not None:
        inject_fn(model, cfg.adapter_config(), verbose=False)
    load_adapter(model, out / "adapter")
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# 6. Evaluation
# ----------------------------------------------------------------------------------------------

def extract_answer(task: str, text: str) -> str:
    """LLM-Adapters' commonsense extraction: the first match of the task's answer words ('' if none)."""
    # exercise 5.1: re.findall with the task's pattern in COMMONSENSE_TASKS; the first match, or ''
    found = re.findall(COMMONSENSE_TASKS[task], text.strip())
    return found[0] if found else ""
    # end exercise


def extract_number(text: str) -> float:
    """LLM-Adapters' arithmetic extraction: drop commas, take the last number (inf if none)."""
    # exercise 5.2: remove the commas, find every (signed, decimal) number, return the last as a float
    found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
    return float(found[-1]) if found else float("inf")
    # end exercise


def is_correct(task: str, generated: str, answer: str) -> bool:
    if task in COMMONSENSE_TASKS:
        return extract_answer(task, generated) == answer
    return abs(extract_number(generated) - float(str(answer).replace(",", ""))) <= 1e-3


@torch.no_grad()
def generate(model, tokenizer, examples, max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
    """Greedy continuations of the Alpaca prompts of `examples`, batched with left padding."""
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    texts = []
    try:
        for i in range(0, len(examples), batch_size):
            batch = [generate_prompt(e, with_output=False) for e in examples[i:i + batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


def evaluate(model, tokenizer, tests: dict, limit: int | None = None, max_new_tokens: int = 16,
             batch_size: int = 64) -> dict:
    """{task: accuracy} for a dict of test datasets (records), plus "average" over the tasks."""
    acc = {}
    for task, ds in tests.items():
        rows = [ds[i] for i in range(min(len(ds), limit or len(ds)))]
        gen = generate(model, tokenizer, rows, max_new_tokens, batch_size)
        acc[task] = sum(is_correct(task, g, r["answer"]) for g, r in zip(gen, rows)) / len(rows)
    acc["average"] = sum(acc.values()) / len(acc)
    return acc


def merged_equals_unmerged(model, tokenizer, examples, max_new_tokens: int = 16) -> tuple[bool, list[str]]:
    """Generate with the adapters, merge in place, generate again: are the texts identical?

    Leaves the model merged (the cheap form for evaluation) and returns (equal, merged texts)."""
    from core.bhra import merge
    before = generate(model, tokenizer, examples, max_new_tokens)
    merge(model)
    after = generate(model, tokenizer, examples, max_new_tokens)
    return before == after, after


def save_merged(model, tokenizer, folder) -> Path:
    """merge_and_unload (if adapted) and save_pretrained, atomically: a plain transformers model."""
    from core.bhra import adapted_layers, merge_and_unload
    folder = Path(folder)
    if adapted_layers(model):
        merge_and_unload(model)
    tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=_mk(folder.parent)))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def evaluate_run(cfg: RunConfig, tests: dict, limit: int | None = None, max_new_tokens: int = 16,
                 inject_fn=None) -> dict:
    """Train if needed, load, merge (checking merged == unmerged on a few prompts), evaluate merged."""
    train(cfg, verbose=False, inject_fn=inject_fn)
    model, tokenizer = load_trained(cfg, inject_fn=inject_fn)
    if cfg.method != "full":
        probe = [tests[t][i] for t in tests for i in range(min(2, len(tests[t])))]
        same, _ = merged_equals_unmerged(model, tokenizer, probe, max_new_tokens)
        if not same:
            raise AssertionError(f"{cfg.method}: merged and unmerged generations differ")
    return evaluate(model, tokenizer, tests, limit, max_new_tokens)


# The two profiles: RunConfig values, nothing else differs. Notebooks 04 and 05 read them from here.
PROFILES = {
    "paper": dict(profile="paper", model="meta-llama/Llama-3.2-1B", data_dir="data/LLM-Adapters",
                  train_file="ft-training_set/commonsense_170k.json", r=32, b=8, k=2, alpha=64.0,
                  targets=TARGETS_ALL, cutoff_len=256, bf16=True, max_steps=0, epochs=2.0,
                  batch_size=16, micro_batch_size=4, warmup_steps=100, save_steps=500),
    "offline": dict(profile="offline", model=OFFLINE, data_dir=None,
                    train_file="ft-training_set/commonsense_synthetic.json", r=8, b=4, k=2, alpha=16.0,
                    targets=TARGETS_ALL, cutoff_len=256, bf16=False, max_steps=150, epochs=3.0,
                    batch_size=16, micro_batch_size=16, warmup_steps=10, save_steps=0),
}
# Chance accuracy of each task (one uniform guess among its options) for the synthetic tasks.
CHANCE = {"boolq": 1 / 2, "piqa": 1 / 2, "social_i_qa": 1 / 3, "hellaswag": 1 / 4, "winogrande": 1 / 2,
          "ARC-Easy": 1 / 4, "ARC-Challenge": 1 / 5, "openbookqa": 1 / 4}
CHANCE["average"] = sum(CHANCE.values()) / len(CHANCE)


def configs(profile: str, methods=METHODS_ALL, **overrides) -> dict:
    """{method: RunConfig} for a profile at one matched budget (same r, steps, batch, data)."""
    return {m: RunConfig(**{**PROFILES[profile], **overrides, "method": m}) for m in methods}


def train_all(cfgs: dict, verbose: bool = False) -> dict:
    """Train (or reuse) every run; {method: run record}."""
    out = {}
    for m, cfg in cfgs.items():
        t0 = time.time()
        out[m] = train(cfg, verbose=verbose)
        print(f"{m:8s} lr {cfg.learning_rate:.0e}  steps {out[m]['steps']}  final loss {out[m]['losses'][-1][1]:.3f}  "
              f"({time.time() - t0:.0f} s{', reused' if time.time() - t0 < 1 else ''})")
    return out


def evaluate_all(cfgs: dict, limit: int | None = None, include_base: bool = True) -> dict:
    """{row: {task: accuracy}}: the untuned base model, then every method evaluated merged."""
    first = next(iter(cfgs.values()))
    _, tests = load_commonsense(data_dir(first), train_file=first.train_file, split="test")
    table = {}
    if include_base:
        model, tokenizer = load_model(first.model)
        table["base (untuned)"] = evaluate(model, tokenizer, tests, limit)
    for m, cfg in cfgs.items():
        table[m] = evaluate_run(cfg, tests, limit)
    return table


# ----------------------------------------------------------------------------------------------
# 7. Command line
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m core.lab", description="Fine-tune and evaluate with the lab harness.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "evaluate"):
        s = sub.add_parser(name)
        for f in dataclasses.fields(RunConfig):
            flag = "--" + f.name.replace("_", "-")
            if f.name == "targets":
                s.add_argument(flag, default=",".join(TARGETS_ALL), help="comma-separated nn.Linear names")
            elif f.type in ("bool",):
                s.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
            else:
                kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
                s.add_argument(flag, type=lambda v, k=kind: None if v.lower() == "none" else k(v), default=f.default)
        s.add_argument("--fresh", action="store_true", help="ignore a finished run with the same config")
        if name == "evaluate":
            s.add_argument("--limit", type=int, default=None, help="test examples per task")
    a = vars(p.parse_args(argv))
    cmd, fresh, limit = a.pop("cmd"), a.pop("fresh"), a.pop("limit", None)
    a["targets"] = tuple(t for t in a["targets"].split(",") if t)
    cfg = RunConfig(**a)
    if cmd == "train":
        rec = train(cfg, reuse=not fresh, progress=True)
        print(json.dumps({k: v for k, v in rec.items() if k != "losses"}, indent=1))
    else:
        _, tests = load_commonsense(data_dir(cfg), split="test")
        print(json.dumps(evaluate_run(cfg, tests, limit), indent=1))


if __name__ == "__main__":
    main()
