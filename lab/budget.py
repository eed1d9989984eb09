"""What a run costs before it runs: peak GPU memory, the fit decision, time and disk. Arithmetic, not measurement.

    rows = memory(cfg, shape_of(cfg.model))          # [(what, how, bytes)]: the peak of one training step
    checkpointing = fit(cfg, shape, free_bytes)      # False: fits as is; True: fits with checkpointing; else DoesNotFit
    print(report(cfg))                               # `python -m lab budget --profile paper --method bhra`

The model's shapes come from its transformers config, built on the meta device (no weights, no GPU). Memory counts
what a training step keeps (float32 weights under bf16 autocast, AdamW, as lab.finetune trains); time divides
FLOPs by a named GPU's dense peak times an assumed utilisation; evaluation adds one weight read per decoding step.
Nothing here was measured on a GPU: every printed figure says so.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from lab.config import RunConfig

GiB = 2**30
COUPLED = ("hira", "bhra", "bhra_blocknorm")  # core.bhra's lean Function: saves x and the factors, no bf16 W0 copy
HEADROOM = 0.9  # a run fits when its estimate is at most this share of the free memory (fragmentation, the unknown)
CONTEXT_BYTES = GiB // 2  # CUDA context + cuBLAS workspace of a named GPU (assumed; a live GPU reports its free bytes)

# Llama-3.2's published configs (config.json on the hub), so that an estimate needs no download.
MODELS = {
    "meta-llama/Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "meta-llama/Llama-3.2-3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                    num_attention_heads=24, num_key_value_heads=8, vocab_size=128256),
}

# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets (H100 SXM, A100 SXM 80GB, L4) and the Ada
# Lovelace whitepaper (RTX 4090, FP32 accumulate); TF32 is half the bf16 rate on all four. bandwidth in TB/s.
GPUS = {
    "H100": dict(label="H100 SXM 80GB", memory_gb=80, bf16_tflops=989.4, tf32_tflops=494.7, bandwidth=3.35),
    "A100": dict(label="A100 SXM 80GB", memory_gb=80, bf16_tflops=312.0, tf32_tflops=156.0, bandwidth=2.039),
    "RTX4090": dict(label="RTX 4090 24GB", memory_gb=24, bf16_tflops=165.2, tf32_tflops=82.6, bandwidth=1.008),
    "L4": dict(label="L4 24GB", memory_gb=24, bf16_tflops=121.0, tf32_tflops=60.0, bandwidth=0.3),
}
UTILISATION = 0.35  # assumed share of the peak a Trainer step reaches (bf16 GEMMs of this size, small micro-batches)
DECODE_STEP_S = 0.02  # assumed host time per generate() step (beam bookkeeping, Python), on top of the weight read

# Sizes of the data files lab.data writes (records), and characters per record measured on LLM-Adapters' own test
# files (github.com/AGI-Edgerunners/LLM-Adapters at 8166572): the Alpaca prompt without the answer (lab.formats.
# generate_prompt), mean over the file. hellaswag/test.json is not in that repository: it gets the others' mean.
TRAIN_RECORDS = {"ft-training_set/commonsense_170k.json": 170_420, "ft-training_set/MetaMathQA-40K.json": 40_000}
TEST_SETS = {  # task: (questions, prompt characters)
    "boolq": (3270, 278), "piqa": (1838, 487), "social_i_qa": (1954, 428), "hellaswag": (10042, None),
    "winogrande": (1267, 391), "ARC-Easy": (2376, 483), "ARC-Challenge": (1172, 527), "openbookqa": (500, 401),
}
GSM8K = (1319, 380)
ANSWER_CHARS = 28  # mean characters of `output` in LLM-Adapters' commonsense train files ("the correct answer is X")
CHARS_PER_TOKEN = 4.0  # assumed for Llama-3's 128k BPE on English prose (no Llama tokenizer was available)


# ---------------------------------------------------------------------------------------------
# The model's shapes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs of a decoder: sizes, and one layer's linears as (name, out m, in n)."""
    layers: int
    hidden: int
    intermediate: int
    kv: int                 # width of k and v (kv heads x head dim)
    vocab: int
    total: int              # parameters, tied embeddings counted once
    linears: tuple          # ((name, m, n), ...) of one decoder layer
    lm_head: int            # vocab x hidden

    def targets(self, cfg: RunConfig) -> list[tuple[str, int, int]]:
        return [lin for lin in self.linears if lin[0] in cfg.targets]


def model_config(model):
    """A transformers config for `model`: Llama-3.2's from MODELS, else the config.json of a folder or hub cache."""
    from transformers import AutoConfig, LlamaConfig

    if model in MODELS:
        return LlamaConfig(**MODELS[model], tie_word_embeddings=True)
    from lab.finetune import model_path

    try:
        return AutoConfig.from_pretrained(model_path(model))
    except (OSError, ValueError) as e:
        raise ValueError(f"no config for {model!r}: pass a folder holding config.json, or one of {sorted(MODELS)}"
                         ) from e


def shape_of(config) -> Shape:
    """A Shape from a transformers config (or a model name: model_config), via the model built on the meta device."""
    from transformers import AutoModelForCausalLM

    config = model_config(config) if isinstance(config, str) else config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layer = model.model.layers[0]
    linears = tuple((n.rsplit(".", 1)[-1], mod.out_features, mod.in_features) for n, mod in layer.named_modules()
                    if isinstance(mod, torch.nn.Linear))
    h = config.hidden_size
    return Shape(layers=config.num_hidden_layers, hidden=h, intermediate=config.intermediate_size,
                 kv=h * config.num_key_value_heads // config.num_attention_heads, vocab=config.vocab_size,
                 total=sum(p.numel() for p in model.parameters()), linears=linears, lm_head=config.vocab_size * h)


def factors(cfg: RunConfig, m: int, n: int) -> int:
    """Trainable parameters of one adapted (m, n) layer: r (m + n) for every method, DoRA's m magnitudes on top."""
    if cfg.method == "full":
        return m * n
    return cfg.r * (m + n) + (m if cfg.method == "dora" else 0)


def trainable(cfg: RunConfig, s: Shape) -> int:
    return s.total if cfg.method == "full" else s.layers * sum(factors(cfg, m, n) for _, m, n in s.targets(cfg))


def _rank(cfg: RunConfig) -> int:
    """The inner width an additive adapter's activations run through: ABBA's Khatri-Rao product is r1 r2 wide."""
    return (cfg.r // 2) ** 2 if cfg.method == "abba" else cfg.r


# ---------------------------------------------------------------------------------------------
# Memory: what one training step keeps at its peak
# ---------------------------------------------------------------------------------------------


def _activations_per_token_layer(cfg: RunConfig, s: Shape) -> int:
    """Bytes one token keeps for backward in one decoder layer, under bf16 autocast over float32 weights."""
    h, i, kv, targets = s.hidden, s.intermediate, s.kv, s.targets(cfg)
    full, coupled = cfg.method == "full", cfg.method in COUPLED
    b = 2 * 4 * h                                        # float32 residual inputs of the two RMSNorms
    b += 2 * 4 * h if full else 0                        # their normed outputs, for the norm weights' gradients
    b += 2 * (h + 2 * kv) + 2 * h                        # attention: rotated q, k, v and its output, bf16
    b += 4 * 2 * i                                       # MLP: gate, SiLU(gate), up, their product, bf16
    normed = [n for n, _, _ in (s.linears if full else targets) if n in ("q_proj", "k_proj", "v_proj",
                                                                          "gate_proj", "up_proj")]
    if coupled:  # the Function saves the float32 normed input as is, one tensor per RMSNorm its projections share
        b += 4 * h * len({n in ("gate_proj", "up_proj") for n in normed})
    else:  # every projection whose weight or factors need x keeps its own bf16 cast of the normed input
        b += 2 * h * len(normed)
    if not full and not coupled:  # the adapter path: x A^T (rank-wide), DoRA's y, dropout's mask
        for _, m, n in targets:
            b += 2 * _rank(cfg) * (cfg.k if cfg.method == "gralora" else 1) + (2 * m if cfg.method == "dora" else 0)
            b += n if cfg.dropout else 0
    return b


def memory(cfg: RunConfig, s: Shape, checkpointing: bool = False) -> list[tuple[str, str, int]]:
    """[(what, how it is counted, bytes)] of the peak of one training step; the sum is the estimate.

    With gradient checkpointing every decoder layer keeps only its float32 input, and one layer at a time holds
    its full activations again during backward. Not counted: the CUDA context, the allocator's fragmentation."""
    T, L, V, h = cfg.micro_batch_size * cfg.cutoff_len, s.layers, s.vocab, s.hidden
    targets, full, coupled = s.targets(cfg), cfg.method == "full", cfg.method in COUPLED
    adapted = sum(m * n for _, m, n in targets)
    F = trainable(cfg, s)
    a = _activations_per_token_layer(cfg, s)
    kept = 1 if checkpointing else L  # layers whose saved tensors live at once
    rows = []
    if not full:
        rows.append(("weights, float32 (frozen)", f"{s.total / 1e6:,.1f} M params x 4 B", 4 * s.total))
    rows.append(("trainable: weights + grads + AdamW's 2 moments, float32",
                 f"{F / 1e6:,.2f} M params x 16 B", 16 * F))
    if full:  # autocast caches the cast of every trainable weight until the forward ends, checkpointing or not
        copies, how = L * sum(m * n for _, m, n in s.linears) + s.lm_head, "all linears + lm_head"
    elif coupled:
        copies, how = s.lm_head, "lm_head"
    else:
        copies, how = kept * adapted + s.lm_head, f"adapted linears of {kept} layer(s) + lm_head"
    rows.append(("bf16 copies of weights kept for backward", f"{copies / 1e6:,.1f} M ({how}) x 2 B", 2 * copies))
    if checkpointing:
        rows.append(("activations: each layer's input (checkpointing)", f"{T} tokens x {L} layers x {4 * h:,} B",
                     T * L * 4 * h))
        rows.append(("activations: one layer recomputed in backward", f"{T} tokens x {a:,} B", T * a))
    else:
        rows.append(("activations kept for backward", f"{T} tokens x {L} layers x {a:,} B", T * L * a))
    if cfg.method == "abba":  # the Khatri-Rao factors (m, r1 r2) and (n, r1 r2), float32 and their bf16 casts
        kr = sum((m + n) * _rank(cfg) for _, m, n in targets)
        rows.append(("ABBA's Khatri-Rao factors per layer", f"{kept} layer(s) x {kr / 1e6:,.1f} M x 6 B",
                     kept * kr * 6))
    rows.append(("logits: bf16, their float32 copy for the loss, its gradient", f"{T} x {V:,} x (2 + 4 + 4) B",
                 T * V * 10))
    big = max((m * n for _, m, n in (s.linears if full else targets)), default=0)
    if coupled or full:  # coupled: G, W0 ⊙ G and the rebuilt weight; full: a weight's bf16 grad and its fp32 copy
        per = 12 if coupled else 6
        rows.append(("one layer's backward temporaries (largest linear)", f"{big / 1e6:,.1f} M x {per} B", big * per))
    return rows


def peak(cfg: RunConfig, s: Shape, checkpointing: bool = False) -> int:
    return sum(b for *_, b in memory(cfg, s, checkpointing))


class DoesNotFit(MemoryError):
    """A run whose estimate exceeds the GPU's free memory even with gradient checkpointing."""


def fit(cfg: RunConfig, s: Shape, free: int) -> bool:
    """Gradient checkpointing or not, for a run on a GPU with `free` bytes; raises DoesNotFit (naming the fixes).

    cfg.gradient_checkpointing True/False is the user's choice and is kept (a run over the estimate only warns);
    None: as is when the estimate fits HEADROOM x free, else with checkpointing when that fits, else refused."""
    limit = HEADROOM * free
    if cfg.gradient_checkpointing is not None:
        if peak(cfg, s, cfg.gradient_checkpointing) > limit:
            print(f"warning: {_over(cfg, s, free, cfg.gradient_checkpointing)}; trying as asked")
        return cfg.gradient_checkpointing
    if peak(cfg, s, False) <= limit:
        return False
    if peak(cfg, s, True) <= limit:
        return True
    raise DoesNotFit(f"{_over(cfg, s, free, True)}. Lower --micro-batch-size (the batch per step, and the results, "
                     f"stay the same), leave out `full` (METHODS in notebooks 04-05; BHRA_SMOKE_METHODS), or use a GPU with more memory; "
                     f"--no-gradient-checkpointing or --gradient-checkpointing tries anyway")


def _over(cfg: RunConfig, s: Shape, free: int, checkpointing: bool) -> str:
    how = "with" if checkpointing else "without"
    return (f"{cfg.method} at micro-batch {cfg.micro_batch_size} x {cfg.cutoff_len} tokens needs about "
            f"{peak(cfg, s, checkpointing) / GiB:.1f} GiB {how} gradient checkpointing (lab.budget, an estimate), "
            f"more than {HEADROOM:.0%} of the GPU's {free / GiB:.1f} GiB free")


def gpu_free(gpu: str) -> int:
    """Free bytes of a named GPU once the CUDA context is up (assumed: CONTEXT_BYTES)."""
    return int(GPUS[gpu]["memory_gb"] * 1e9) - CONTEXT_BYTES


def decision(cfg: RunConfig, s: Shape, free: int) -> str:
    """'as is', 'checkpointing' or 'refused': what lab.finetune.train does on a GPU with `free` bytes."""
    try:
        return "checkpointing" if fit(dataclasses.replace(cfg, gradient_checkpointing=None), s, free) else "as is"
    except DoesNotFit:
        return "refused"


# ---------------------------------------------------------------------------------------------
# Time: FLOPs over a named GPU's peak (derived, not measured)
# ---------------------------------------------------------------------------------------------


def _mean_prompt_chars() -> float:
    known = [(n, c) for n, c in TEST_SETS.values() if c is not None]
    return sum(n * c for n, c in known) / sum(n for n, _ in known)


def record_tokens(cfg: RunConfig) -> float:
    """Mean tokens a training record of cfg.train_file feeds (capped at cutoff_len; MetaMathQA: the cutoff)."""
    if "commonsense" not in cfg.train_file:
        return float(cfg.cutoff_len)  # no measured length: the cutoff, an upper bound
    return min(cfg.cutoff_len, (_mean_prompt_chars() + ANSWER_CHARS) / CHARS_PER_TOKEN + 1)  # + EOS


def steps(cfg: RunConfig) -> int:
    """Optimiser steps of a run: max_steps, else epochs over the training file's records."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    records = min(cfg.n_train or math.inf, TRAIN_RECORDS[cfg.train_file])
    return math.ceil(cfg.epochs * records / cfg.batch_size)


def train_flops(cfg: RunConfig, s: Shape, checkpointing: bool = False) -> tuple[float, float]:
    """(bf16 FLOPs, float32/TF32 FLOPs) of a whole run. Per token, N = matmul weights: full fine-tuning 6N
    (forward, activation and weight gradients); adapters 4N plus their paths (6 x rank x (m + n) per layer);
    HiRA/BHRA's full weight gradient G = gᵀx, 2mn per adapted layer, runs in float32; checkpointing adds a forward."""
    N = s.layers * sum(m * n for _, m, n in s.linears) + s.lm_head
    targets = s.targets(cfg)
    tokens = steps(cfg) * cfg.batch_size * record_tokens(cfg)
    fp32 = 0.0
    if cfg.method == "full":
        bf16 = 6 * N
    elif cfg.method in COUPLED:
        bf16, fp32 = 4 * N, 2 * s.layers * sum(m * n for _, m, n in targets)
    else:
        bf16 = 4 * N + 6 * s.layers * sum(_rank(cfg) * (m + n) for _, m, n in targets)
    bf16 += 2 * N if checkpointing else 0
    return bf16 * tokens, fp32 * tokens


def train_seconds(cfg: RunConfig, s: Shape, gpu: str, checkpointing: bool = False) -> float:
    g = GPUS[gpu]
    bf16, fp32 = train_flops(cfg, s, checkpointing)
    return (bf16 / g["bf16_tflops"] + fp32 / g["tf32_tflops"]) / 1e12 / UTILISATION


def eval_seconds(s: Shape, questions: int, prompt_chars: float, new_tokens: int, beams: int, batch: int,
                 gpu: str) -> float:
    """Generation of `questions` in batches: the prefill (beams x prompt tokens x 2N FLOPs), then up to
    `new_tokens` decoding steps per batch, each reading the bf16 weights once plus DECODE_STEP_S of host time."""
    g, N = GPUS[gpu], s.total
    prefill = 2 * N * questions * beams * prompt_chars / CHARS_PER_TOKEN / (g["bf16_tflops"] * 1e12) / UTILISATION
    read = 2 * s.total / (g["bandwidth"] * 1e12) / UTILISATION
    return prefill + math.ceil(questions / batch) * new_tokens * (read + DECODE_STEP_S)


def commonsense_seconds(cfg: RunConfig, s: Shape, gpu: str, limit: int | None = None, beams: int | None = None,
                        batch: int | None = None) -> float:
    """The eight commonsense test sets (or their first `limit` questions each), decoded as cfg says."""
    mean = _mean_prompt_chars()
    return sum(eval_seconds(s, min(n, limit or n), c or mean, cfg.max_new_tokens, beams or cfg.num_beams,
                            batch or cfg.eval_batch_size, gpu) for n, c in TEST_SETS.values())


def commonsense_questions(limit: int | None = None) -> int:
    return sum(min(n, limit or n) for n, _ in TEST_SETS.values())


# ---------------------------------------------------------------------------------------------
# Disk
# ---------------------------------------------------------------------------------------------


def run_disk(cfg: RunConfig, s: Shape) -> tuple[int, int]:
    """(bytes a finished run keeps, bytes its checkpoints hold at most while it trains). Adapter runs keep the
    float32 factors; full fine-tuning its float32 model. A checkpoint: the trainable tensors and AdamW's two
    moments (12 B per trainable parameter), two of them kept, deleted when the run finishes."""
    F = trainable(cfg, s)
    kept = 4 * s.total if cfg.method == "full" else 4 * F
    return kept, (2 * 12 * F if cfg.save_steps else 0)


# ---------------------------------------------------------------------------------------------
# The notebooks of the paper profile, counted from the code that builds their runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Cost:
    """One notebook's work: training runs, evaluations (seconds per GPU), peak memory, disk."""
    name: str
    runs: list = dataclasses.field(default_factory=list)        # RunConfigs trained here (not before)
    evals: list = dataclasses.field(default_factory=list)       # (cfg, kind, limit, count): kind "A" or "B"
    merged: list = dataclasses.field(default_factory=list)      # (shape, bytes per parameter) of saved merged models

    def hours(self, gpu: str) -> tuple[float, float]:
        """(training hours, evaluation hours) on `gpu`, each run with the checkpointing its fit needs there."""
        train = sum(train_seconds(c, _shape(c), gpu, decision(c, _shape(c), gpu_free(gpu)) == "checkpointing")
                    for c in self.runs)
        ev = 0.0
        for cfg, kind, limit, count in self.evals:
            s = _shape(cfg)
            if kind == "A":
                ev += count * commonsense_seconds(cfg, s, gpu, limit)
            else:
                n = min(GSM8K[0], limit or GSM8K[0])
                ev += count * eval_seconds(s, n, GSM8K[1], kind[1], cfg.num_beams, cfg.eval_batch_size, gpu)
        return train / 3600, ev / 3600

    def disk(self) -> int:
        kept = sum(run_disk(c, _shape(c))[0] for c in self.runs)
        checkpoints = max((run_disk(c, _shape(c))[1] for c in self.runs), default=0)  # one run trains at a time
        return kept + checkpoints + sum(s.total * per for s, per in self.merged)

    def peak(self, gpu: str) -> tuple[int, set]:
        """(the largest estimate among its runs at the checkpointing they get, the runs refused on `gpu`)."""
        worst, refused = 0, set()
        for c in self.runs:
            s = _shape(c)
            d = decision(c, s, gpu_free(gpu))
            if d == "refused":
                refused.add(f"{c.method} ({_short(c.model)})")
            else:
                worst = max(worst, peak(c, s, d == "checkpointing"))
        return worst, refused


_SHAPES: dict = {}


def _shape(cfg: RunConfig) -> Shape:
    key = (cfg.model if isinstance(cfg.model, str) else repr(cfg.model))
    if key not in _SHAPES:
        _SHAPES[key] = shape_of(cfg.model)
    return _SHAPES[key]


def _short(model) -> str:
    return str(model).rsplit("/", 1)[-1]


def _key(cfg: RunConfig) -> str:
    return repr(sorted(dataclasses.asdict(cfg).items()))


def notebooks(profile: str = "paper", grid: str = "full") -> list[Cost]:
    """Notebooks 04-07 as their parameters cells build them (lab.configs, GRIDS, continual_preset), each
    charged only for the runs no earlier notebook trained."""
    from lab.config import METHODS_ALL, configs
    from lab.continual import GRIDS, base_lr, continual_preset, stage_config

    seeds = GRIDS[grid]["seeds"]
    done: set = set()

    def new(cfgs):
        out = [c for c in cfgs if _key(c) not in done]
        done.update(_key(c) for c in out)
        return out

    first = configs(profile, METHODS_ALL, seed=seeds[0])
    nb04 = Cost("04 fine-tune", runs=new(first.values()))
    every = [c for s in seeds for c in configs(profile, METHODS_ALL, seed=s).values()]
    bhra = first["bhra"]
    nb05 = Cost("05 evaluate", runs=new(every), evals=[(c, "A", None, 1) for c in every] + [(bhra, "A", 50, 1)],
                merged=[(_shape(bhra), 4)])  # one merged BHRA model, saved in float32; the untuned base, 50 per task
    # 07's sweep: every (r_b, b) with b dividing r and every adapted width, at the notebook's seeds
    s = _shape(bhra)
    widths = {d for _, m, n in s.targets(bhra) for d in (m, n)}
    grids = [b for b in range(1, bhra.r + 1) if bhra.r % b == 0 and all(w % b == 0 for w in widths)]
    sweep = [c for b in grids for seed in seeds for c in configs(profile, ["bhra"], seed=seed, b=b, r=bhra.r).values()]
    greedy = [dataclasses.replace(c, num_beams=1, eval_batch_size=64) for c in sweep]  # lab.evaluate's defaults
    nb07 = Cost("07 spectra", runs=new(sweep), evals=[(c, "A", None, 1) for c in greedy])
    spec = continual_preset(profile, grid=grid)
    m0 = spec.run.model  # stage 2 starts from stage 1's merged model, of the same shape
    stage1 = [stage_config(spec, m, sd, 1, m0, base_lr(spec, m)) for m in spec.methods for sd in spec.seeds]
    stage2 = [stage_config(spec, c.method, c.seed, 2, m0, base_lr(spec, c.method) * k)
              for c in stage1 for k in spec.lr_multipliers]
    b_eval = ("B", spec.max_new_tokens_b)
    nb06 = Cost("06 continual", runs=new(stage1) + stage2,
                evals=[(spec.run, "A", spec.eval_limit_a, len(stage1) + len(stage2) + len(spec.seeds)),
                       (spec.run, b_eval, spec.eval_limit_b, len(stage2) + len(spec.seeds))],
                merged=[(_shape(spec.run), 2)] * len(stage1))  # stage-1 models merged, saved in bf16
    return [nb04, nb05, nb06, nb07]


# ---------------------------------------------------------------------------------------------
# What `python -m lab budget` prints
# ---------------------------------------------------------------------------------------------

DERIVED = (f"derived, not measured: FLOPs / (dense bf16 or TF32 peak x {UTILISATION} utilisation, assumed); "
           f"evaluation adds one bf16 weight read per decoding step and {DECODE_STEP_S * 1e3:.0f} ms of host time "
           f"(assumed), up to max_new_tokens; tokens per record from characters / {CHARS_PER_TOKEN:g} (assumed)")


def report(cfg: RunConfig) -> str:
    """The memory rows of one run, as is and with checkpointing, and the fit decision on every named GPU."""
    s = _shape(cfg)
    lines = [f"Estimate: {cfg.method} on {_short(cfg.model)} ({s.layers} layers, hidden {s.hidden}, "
             f"vocab {s.vocab:,}), "
             f"r={cfg.r}, targets {','.join(t.removesuffix('_proj') for t in cfg.targets)}; micro-batch "
             f"{cfg.micro_batch_size} x {cfg.cutoff_len} tokens; float32 weights under bf16 autocast, AdamW"]
    for ckpt in (False, True):
        rows = memory(cfg, s, ckpt)
        lines += ["", f"{'with' if ckpt else 'without'} gradient checkpointing:"]
        lines += [f"  {what:62s} {how:52s} {b / GiB:7.2f} GiB" for what, how, b in rows]
        lines.append(f"  {'total':62s} {'':52s} {sum(b for *_, b in rows) / GiB:7.2f} GiB")
    lines += ["", f"fit (estimate <= {HEADROOM:.0%} of free memory; a named GPU's free memory = its size - "
                  f"{CONTEXT_BYTES / GiB:.1f} GiB of context): "
              + ", ".join(f"{g['label']} {decision(cfg, s, gpu_free(k))}" for k, g in GPUS.items())]
    kept, ckpt = run_disk(cfg, s)
    lines.append(f"disk: the finished run {kept / GiB:.2f} GiB; its checkpoints while training {ckpt / GiB:.2f} GiB")
    lines.append("not measured: arithmetic from the model's config; `python benchmarks/bench.py --preset llama-3.2-1b` "
                 "on a GPU measures a step")
    return "\n".join(lines)


def fits(profile: str = "paper", models=tuple(MODELS), batches=(4,)) -> str:
    """A markdown table: every method's peak estimate and the fit decision on every named GPU."""
    from lab.config import METHODS_ALL, preset

    gpus = list(GPUS)
    head = ("| model | method | micro-batch | estimate as is | with checkpointing | "
            + " | ".join(GPUS[g]["label"] for g in gpus) + " |")
    lines = [head, "|" + "---|" * (5 + len(gpus))]
    for model in models:
        for mb in batches:
            for m in METHODS_ALL:
                c = preset(profile, method=m, model=model, micro_batch_size=mb)
                s = _shape(c)
                lines.append(f"| {_short(model)} | {m} | {mb} x {c.cutoff_len} | {peak(c, s) / GiB:.1f} GiB "
                             f"| {peak(c, s, True) / GiB:.1f} GiB | "
                             + " | ".join(decision(c, s, gpu_free(g)) for g in gpus) + " |")
    return "\n".join(lines)


def notebook_table(profile: str = "paper", grid: str = "full", gpus=("H100", "A100", "RTX4090")) -> str:
    """A markdown table: per notebook, runs trained, questions decoded, hours per GPU, peak memory, disk."""
    costs = notebooks(profile, grid)
    lines = ["| notebook | runs trained | models evaluated | " + " | ".join(
        f"{GPUS[g]['label']}: train + eval hours" for g in gpus) + " | peak memory (H100) | disk |",
        "|" + "---|" * (5 + len(gpus))]
    for c in costs:
        hours = []
        for g in gpus:
            t, e = c.hours(g)
            _, refused = c.peak(g)
            hours.append(f"{t:.1f} + {e:.1f}" + (f" (refused: {', '.join(sorted(refused))})" if refused else ""))
        worst, _ = c.peak("H100")
        lines.append(f"| {c.name} | {len(c.runs)} | {sum(n for *_, n in c.evals)} | " + " | ".join(hours)
                     + f" | {worst / GiB:.1f} GiB | {c.disk() / 1e9:.0f} GB |")
    lines += ["", f"Hours: {DERIVED}. A run refused on a GPU is not counted in its hours. Disk: finished runs, "
                  "merged models, and the largest run's checkpoints while it trains (decimal GB). Test questions: "
                  f"{commonsense_questions():,} commonsense, {GSM8K[0]:,} GSM8K."]
    return "\n".join(lines)


# The smallest run that can say something about claim (b): BHRA above LoRA and HiRA at one budget.
MINIMUM = dict(methods=("lora", "hira", "bhra"), seed=0, max_steps=1000, limit=200)


def minimum(profile: str = "paper", gpus=("H100", "A100", "RTX4090")) -> str:
    """The minimum viable paper run: its commands, and its cost by the same arithmetic as the notebooks'."""
    from lab.config import preset

    mv = MINIMUM
    flags = f"--profile {profile} --method {{m}} --seed {mv['seed']} --max-steps {mv['max_steps']}"
    lines = [f".venv/bin/python -m lab train {flags}".format(m=m) for m in mv["methods"]]
    lines += [f".venv/bin/python -m lab evaluate {flags} --limit {mv['limit']}".format(m=m) for m in mv["methods"]]
    cfgs = [preset(profile, method=m, seed=mv["seed"], max_steps=mv["max_steps"]) for m in mv["methods"]]
    c0 = cfgs[0]
    lines += ["", f"{len(cfgs)} runs of {mv['max_steps']} steps x {c0.batch_size} records "
                  f"({mv['max_steps'] * c0.batch_size / TRAIN_RECORDS[c0.train_file]:.2f} epoch of "
                  f"{TRAIN_RECORDS[c0.train_file]:,}), {_short(c0.model)}; evaluation on the first {mv['limit']} "
                  f"questions of each task ({commonsense_questions(mv['limit']):,} per model), "
                  f"{c0.num_beams} beams, {c0.max_new_tokens} new tokens"]
    for g in gpus:
        t = sum(train_seconds(c, _shape(c), g) for c in cfgs) / 3600
        e = sum(commonsense_seconds(c, _shape(c), g, mv["limit"]) for c in cfgs) / 3600
        lines.append(f"  {GPUS[g]['label']:16s} train {t:5.2f} h + evaluate {e:5.2f} h "
                     f"(fit: {', '.join(decision(c, _shape(c), gpu_free(g)) for c in cfgs)})")
    disk = sum(run_disk(c, _shape(c))[0] for c in cfgs) + max(run_disk(c, _shape(c))[1] for c in cfgs)
    lines.append(f"  disk {disk / 1e9:.1f} GB; {DERIVED}")
    return "\n".join(lines)
