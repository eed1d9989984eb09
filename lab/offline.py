"""The offline stand-in for the hub: a small Llama pre-trained from a recipe, and synthetic tasks.

No machine of this project reaches a model hub, so the `offline` profile builds what the `paper`
profile downloads, and hands it to the same code:

* a base model - a small LlamaForCausalLM (RoPE, SwiGLU, grouped-query attention, tied embeddings)
  with a byte-level BPE tokenizer, pre-trained on sentences, short stories and word problems about a tiny
  world, saved with `save_pretrained` and loaded back through `AutoModelForCausalLM` / `AutoTokenizer`;
* data - synthetic tasks in the LLM-Adapters JSON format and folder layout, read back with `datasets`.

The default base model is committed (`lab/offline_base/`, rebuilt from its recipe by `make base`), so every
machine starts from the same weights whatever its kernels. Other base models and the data are built once and
cached under `.cache/`, keyed by their recipe: the settings (BaseSpec, the
data sizes) and a hash of this file's generator source (`recipe_hash`), so an edited generator never
meets a cache written by the old one. The build is deterministic for a fixed torch thread count,
which `base_model_path` pins to one while it builds (tests/lab/test_determinism.py checks it across
processes at 1 and 2 threads).
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lab.cache import building, lock, root, stable_hash, write_json
from lab.formats import COMMONSENSE_TASKS, TASKS, Task, commonsense_record, generate_prompt
from lab.pool import threads

# ----------------------------------------------------------------------------------------------
# The base model
# ----------------------------------------------------------------------------------------------
# A tiny world: things in categories, each category with a verb ("you can eat a fruit") and a
# place ("in the kitchen"). Pre-training on sentences about this world puts the facts in W0, and on
# short stories whose end depends on their beginning the habit of looking far back in a document,
# and on word problems how a question's numbers carry into its answer; the fine-tuning tasks of
# section 3 ask about the same facts in the LLM-Adapters answer formats, so a fine-tune has to learn
# the format and how to use what W0 already knows.

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


def world_sentences(n_sentences: int, seed: int = 0) -> list[str]:
    """Plain sentences about the world and small sums."""
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
            f"{name} has {a + b} {x}s and gives away {b}, so {name} has {a} {x}s.",
        ]))
    return out


def _story(rng: random.Random) -> str:
    """A short story whose last sentence depends on its first, across unrelated sentences: "Eva wants to wear
    something. <facts and sums> so Eva takes the dress." The answer of a task prompt depends on a word many
    tokens back (the category named in the question); a base pre-trained on single sentences never needed to
    look that far, and adapters then had to build that attention themselves, which they did only on some seeds."""
    cat = rng.choice(list(WORLD))
    things, verb, place = WORLD[cat]
    x0, x, name = rng.choice(things), rng.choice(things), rng.choice(NAMES)
    kind = rng.randrange(4)  # what the first sentence names: a verb, a place, a category or a thing
    opener = [f"{name} wants to {verb} something.", f"{name} goes to the {place}.",
              f"{name} is looking for a {cat}.", f"{name} sees a {x0}."][kind]
    closer = [f"so {name} takes the {x}.", f"there {name} finds a {x}.", f"{name} finds the {x}.",
              f"{name} keeps it in the {place}."][kind]
    middle = world_sentences(rng.randint(0, 4), rng.randrange(10**9))
    return " ".join([opener] + middle + [closer])


STORY_FRACTION = 0.4  # of the corpus's documents


def _problem_records(n_docs: int, seed: int = 0, problem_fraction: float = 0.0) -> list[dict]:
    """The word problems among world_corpus's `n_docs` documents, as task-B records (the same generator)."""
    rng = random.Random(seed + 13)
    return [_arithmetic_example(rng) for _ in range(int(n_docs * problem_fraction))]


def _word_problem(r: dict) -> str:
    """A word problem of task B's family followed by its worked step, as plain text (no prompt template, no
    "The answer is"): what a web corpus holds of GSM8K-style problems."""
    return f"{r['instruction']} {r['output'].rsplit(' The answer is', 1)[0]}"


def world_corpus(n_docs: int, seed: int = 0, problem_fraction: float = 0.0) -> list[str]:
    """What the offline base model pre-trains on: plain sentences about the world and small sums, stories,
    and (problem_fraction of the documents) word problems."""
    problems = _problem_records(n_docs, seed, problem_fraction)
    n = n_docs - len(problems)
    rng = random.Random(seed + 11)
    n_stories = int(n * STORY_FRACTION)
    docs = world_sentences(n, seed)[: n - n_stories] + [_story(rng) for _ in range(n_stories)]
    return docs + [_word_problem(r) for r in problems]


def pretraining_questions(spec: "BaseSpec | None" = None) -> set[str]:
    """The word problems the base model (default: the offline one) read in pre-training: task B's test
    questions are drawn outside this set, so plasticity measures what stage 2 taught, not what the base recalls."""
    spec = spec or BaseSpec()
    return {r["instruction"] for r in _problem_records(spec.corpus_sentences, spec.seed, spec.problem_fraction)}


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
    problem_fraction: float = 0.2    # of those documents, word problems of task B's family (_word_problem)
    pretrain_steps: int = 1500
    pretrain_batch: int = 16
    pretrain_seq: int = 128          # a whole task prompt (70-100 tokens) fits in one window
    pretrain_lr: float = 3e-3
    seed: int = 0
    version: int = 7                 # bump when the recipe changes, so old caches are not reused
    recipe: str = dataclasses.field(default_factory=lambda: RECIPE)  # the generators' source hash (see recipe_hash)


def recipe_hash() -> str:
    """A hash of the source of everything that writes the offline world: the corpus, the tokenizer, the
    pre-training loop and the task generators. It is part of the base model's identity (BaseSpec.recipe,
    hence every run folder's key) and of the data folder's key, so an edit of this file can never be
    served a cache built by the previous code (version numbers alone relied on someone bumping them,
    and a shared .cache once served data written by an intermediate edit)."""
    import inspect

    parts = [inspect.getsource(f) for f in (world_sentences, _story, _problem_records, _word_problem, world_corpus,
                                            pretraining_questions, word_salad, build_tokenizer, _tokenizer_texts,
                                            _pretrain, _window, _options, Task, commonsense_record, _commonsense_example,
                                            make_commonsense, _arithmetic_example, make_arithmetic, _distinct,
                                            offline_data)]
    return stable_hash([parts, WORLD, NAMES, STORY_FRACTION, repr(TASKS), WINDOW_START, QUESTIONS, SPECIAL_TOKENS])


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


def _tokenizer_texts(seed: int, problem_fraction: float = 0.0) -> list[str]:
    """What the tokenizer sees: the corpus, the prompt template and every task's wording."""
    texts = world_corpus(5000, seed, problem_fraction)
    ex = make_commonsense(n_per_task=40, seed=seed + 1)
    ex += make_arithmetic(n=200, seed=seed + 2)
    return texts + [generate_prompt(e) for e in ex]


SHIPPED = Path(__file__).resolve().parent / "offline_base"  # the default base, built once and committed (make base)


def base_model_path(spec: BaseSpec | None = None, build: bool = True, verbose: bool = True, cache=None) -> Path:
    """Folder of the offline base model: `<cache>/base/<hash>`. The default one is copied there from the
    committed `lab/offline_base/`, whose weights are then the same on every machine whatever its kernels; any
    other spec is built on first use, then reused."""
    spec = spec or BaseSpec()
    final = root(cache) / "base" / stable_hash(dataclasses.asdict(spec))
    if (final / "config.json").exists():
        return final
    shipped = _is_shipped(spec)
    if not build and not shipped:
        raise FileNotFoundError(f"offline base model not built yet: {final}")
    t0 = time.time()
    with lock(final):  # one builder; another process waits, then finds it built
        if (final / "config.json").exists():
            return final
        with building(final) as tmp:
            if shipped:
                for f in SHIPPED.iterdir():
                    shutil.copyfile(f, tmp / f.name)
            else:
                _build(spec, tmp, verbose)
    if verbose and not shipped:
        print(f"built offline base model in {time.time() - t0:.0f} s -> {final}")
    return final


def _is_shipped(spec: BaseSpec) -> bool:
    """Whether `spec` is the committed base's. The same settings with another recipe hash mean that this
    file's generators changed since the base was committed: that is refused, not silently rebuilt."""
    try:
        stored = json.loads((SHIPPED / "base_spec.json").read_text())
    except FileNotFoundError:  # an installed copy without the committed base: build it
        return False
    wanted = dataclasses.asdict(spec)
    if stored == wanted:
        return True
    if {**stored, "recipe": None} == {**wanted, "recipe": None}:
        raise RuntimeError(f"{SHIPPED} was built by offline recipe {stored['recipe']}, and this code's recipe is "
                           f"{wanted['recipe']} (a generator in lab/offline.py changed): rebuild it with `make base` "
                           f"and commit it with the change")
    return False


def _build(spec: BaseSpec, folder: Path, verbose: bool) -> None:
    """Pre-train the base model of `spec` and save it, its tokenizer and its spec into `folder`."""
    tokenizer = build_tokenizer(_tokenizer_texts(spec.seed, spec.problem_fraction), spec.vocab_size)
    with threads(1):  # the weights depend on the thread count: one, whoever builds first
        model = _pretrain(spec, tokenizer, verbose)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "base_spec.json", dataclasses.asdict(spec))


def ship_base(verbose: bool = True) -> Path:
    """Rebuild the default base from its recipe into `lab/offline_base/`, replacing the committed one (`make base`);
    commit the result with the change of recipe that needed it."""
    with building(SHIPPED, replace=True) as tmp:
        _build(BaseSpec(), tmp, verbose)
    return SHIPPED


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
    texts = world_corpus(spec.corpus_sentences, spec.seed, spec.problem_fraction) + word_salad(spec.corpus_sentences // 4, spec.seed)
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
# Synthetic tasks in the LLM-Adapters format
# ----------------------------------------------------------------------------------------------
# Synthetic tasks (offline profile). Each family copies the wording and the answer format of one
# of the eight commonsense tasks; every question is answered by a fact of WORLD.

# Every family draws its categories from a fixed window of WORLD's categories: as many as the real task
# has options (boolq: two categories), from its first category.
WINDOW_START = {"boolq": 5, "piqa": 0, "social_i_qa": 1, "ARC-Easy": 2, "ARC-Challenge": 0, "openbookqa": 3, "hellaswag": 1, "winogrande": 4}


def _window(task: str) -> list[str]:
    """The categories a family draws its questions and options from, in a fixed order."""
    cats = list(WORLD)
    return [cats[(WINDOW_START[task] + j) % len(cats)] for j in range(TASKS[task].n_options)]


def _options(rng: random.Random, task: str, cat: str, fmt: str = "{}") -> tuple[list[str], int]:
    """One random thing from each category of the task's window; returns (options, index of `cat`).

    Option j is always a thing of the window's j-th category, so the answer follows from the
    category the question points at (through a word: "fruit", "eat", "kitchen") and W0's knowledge
    of the words. Full fine-tuning learns every family's rule in the offline step budget; an adapter
    learns a family's rule whole or not at all, depending on the seed (notebook 05)."""
    win = _window(task)
    return [fmt.format(rng.choice(WORLD[c][0])) for c in win], win.index(cat) + 1


# The multiple-choice families: (question, option format), the question filled with the drawn
# category's words. ARC-Challenge names the category only through its verb.
QUESTIONS = {
    "piqa": ("{name} wants to {verb} something. what should {name} do?", "take the {}"),
    "social_i_qa": ("{name} went to the {place}. what did {name} find there?", "{}"),
    "ARC-Easy": ("which of these is a {cat}?", "{}"),
    "ARC-Challenge": ("which of these can you {verb}?", "{}"),
    "openbookqa": ("fact: a {x} is kept in the {place}. which of these is kept in the {place}?", "{}"),
    "hellaswag": ("{name} walked into the {place} and looked at the", "{}."),
}


def _commonsense_example(task: str, rng: random.Random) -> dict:
    win = _window(task)
    cat = rng.choice(win)
    things, verb, place = WORLD[cat]
    x, (name, other) = rng.choice(things), rng.sample(NAMES, 2)

    # Seven families name the category (through a word: "fruit", "eat", "kitchen"); winogrande names
    # only a thing x, so its answer needs W0's fact "a x is a kind of c", thing by thing.
    if task == "boolq":  # can you do the window's first verb with the category? (W0 read "you can wear a hat")
        where = WORLD[rng.choice(list(WORLD))][2]
        q = f"{name} and {other} are in the {where}. is it true that you can {WORLD[win[0]][1]} a {cat}?"
        return commonsense_record(task, q, [], cat == win[0])
    if task == "winogrande":  # the options are places
        return commonsense_record(task, f"{name} and {other} keep the {x} in the _.", [WORLD[c][2] for c in win],
                                  win.index(cat) + 1)
    question, fmt = QUESTIONS[task]
    opts, i = _options(rng, task, cat, fmt)
    return commonsense_record(task, question.format(name=name, verb=verb, place=place, cat=cat, x=x), opts, i)


def make_commonsense(n_per_task: int, seed: int = 0) -> list[dict]:
    """`n_per_task` distinct examples of each of the eight families, tasks interleaved (like commonsense_170k)."""
    return [r for t, task in enumerate(COMMONSENSE_TASKS)
            for r in _distinct(lambda rng: _commonsense_example(task, rng), n_per_task, seed * 1000 + t)]


def _arithmetic_example(rng: random.Random) -> dict:
    cat = rng.choice(list(WORLD))
    x, name = rng.choice(WORLD[cat][0]), rng.choice(NAMES)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        step, ans = f"{name} has {a} {x}s and gets {b} more", a + b
    else:
        step, ans = f"{name} has {a + b} {x}s and gives away {b}", a
    q, sol = f"{step}. how many {x}s does {name} have now?", f"{step}, so {name} has {ans} {x}s."
    return {"instruction": q, "input": "", "output": f"{sol} The answer is {ans}", "answer": str(ans)}


def make_arithmetic(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-style word problems with small sums and differences; outputs end "The answer is N".

    The worked step restates the question in the words of the pre-training corpus ("Sam has 3 dogs and
    gets 4 more, so Sam has 7 dogs."), so stage 2 of the continual lab learns a format and uses sums W0
    already knows, as the commonsense tasks do."""
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


def offline_data(n_train_per_task: int = 500, n_test_per_task: int = 300, n_math_train: int = 2000,
                 n_math_test: int = 200, seed: int = 0, base: BaseSpec | None = None, cache=None) -> Path:
    """Write the synthetic tasks in LLM-Adapters' folder layout (once) and return the folder.

        <folder>/ft-training_set/commonsense_synthetic.json   (the stand-in for commonsense_170k.json)
        <folder>/ft-training_set/math_synthetic.json          (the stand-in for MetaMathQA)
        <folder>/dataset/<task>/test.json                     (the eight tasks, and gsm8k)
    Train and test are disjoint: every instruction is drawn once, the first ones go to test (for gsm8k, the
    first ones that `base` (default: the offline base) did not read in pre-training).
    """
    seen = pretraining_questions(base)
    args = dict(n_train_per_task=n_train_per_task, n_test_per_task=n_test_per_task, n_math_train=n_math_train,
                n_math_test=n_math_test, seed=seed, version=2, recipe=RECIPE, unseen=stable_hash(sorted(seen)))
    final = root(cache) / "data" / f"offline-{stable_hash(args)}"
    if (final / "done.json").exists():
        return final
    with building(final) as tmp:
        train, n = [], n_train_per_task + n_test_per_task
        recs = make_commonsense(n, seed)
        for t, task in enumerate(COMMONSENSE_TASKS):
            train += recs[t * n + n_test_per_task: (t + 1) * n]
            write_json(tmp / "dataset" / task / "test.json", recs[t * n: t * n + n_test_per_task])
        random.Random(seed).shuffle(train)
        write_json(tmp / "ft-training_set" / "commonsense_synthetic.json", train)
        math = make_arithmetic(n_math_train + 2 * n_math_test, seed * 1000 + 99)
        test = [r for r in math if r["instruction"] not in seen][:n_math_test]
        rest = [r for r in math if r not in test][:n_math_train]
        if len(test) < n_math_test or len(rest) < n_math_train:
            raise ValueError(f"could not draw {n_math_test} arithmetic test questions outside pre-training "
                             f"and {n_math_train} to train on")
        write_json(tmp / "ft-training_set" / "math_synthetic.json", rest)
        write_json(tmp / "dataset" / "gsm8k" / "test.json", test)
        write_json(tmp / "done.json", args)
    return final


RECIPE = recipe_hash()  # computed once, at import: the source as this process runs it
