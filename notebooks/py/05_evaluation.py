# %% [markdown]
# # 05 · Evaluation: accuracy per task, over seeds, against chance and the majority answer
#
# **Learning objectives**
# - evaluate fine-tuned models the LLM-Adapters way: greedy generation on the Alpaca prompt, batched with left padding, and the first regex match per task (`true|false`, `solution1|2`, `answer1-5`, `ending1-4`, `option1|2`);
# - evaluate **merged**: after `merge`, every adapted layer is a plain `nn.Linear(W0 + ΔW)`, so inference costs exactly what the base model costs — and check that merged and unmerged generations agree;
# - save a merged model with `save_pretrained` and load it back with plain `transformers`;
# - read an accuracy table the way a referee does: a mean over seeds with a 95 % interval, next to two baselines that need no model at all (chance and the majority answer), and compare two methods by a difference **paired by seed**.
#
# This notebook uses the runs of notebook 04 (`.cache/runs/...`, one per method and seed); if they are missing it trains them with the same harness function, so it also runs on its own.

# %%
# Parameters. A profile is a preset of one RunConfig (lab/config.py, PROFILES); OVERRIDES go on top.
# The cell prints every setting of both profiles (lab.describe): paper is Llama-3.2-1B on LLM-Adapters'
# data, one GPU; offline is the small Llama of lab.offline on synthetic tasks in the same format, CPU.
# SEEDS: the grid's seeds (BHRA_GRID=full: 0, 1, 2, the committed outputs; ci: 0 only, a quick look that
# prints "too few seeds" instead of a verdict). Each seed draws its own data, initialisation and batch order.
import json
import os
import sys
from pathlib import Path

# import the core and lab of the copy this notebook sits in (the repo, or a student's copy made by course/exercises.py)
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "core" / "bhra.py").is_file()), None)
if ROOT is not None:  # else: the installed package (a notebook copied elsewhere)
    sys.path.insert(0, str(ROOT))
import lab  # first: the numerical pins (lab/machine.py) must be set before torch computes
import time

import numpy as np
import torch

from lab.continual import GRIDS, grid_from_env
from lab.stats import MIN_SEEDS, mean_ci, paired_diff, verdict

PROFILE = os.environ.get("BHRA_PROFILE", "offline")
OVERRIDES = {}          # e.g. {"model": "/path/to/Llama-3.2-1B", "data_dir": "/path/to/LLM-Adapters"}
METHODS = lab.METHODS_ALL  # the six adapters and full fine-tuning
GRID_NAME, _grid = grid_from_env()
SEEDS = _grid["seeds"]
if PROFILE == "offline":
    torch.set_num_threads(1)  # the offline results depend on the thread count: one, everywhere
torch.manual_seed(0)
lab.quiet()
print(f"grid {GRID_NAME}: seeds {SEEDS}")
for name in lab.PROFILES:
    print(f"{name:8s}", lab.describe(name))

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.time()
cfgs = {s: lab.configs(PROFILE, METHODS, seed=s, **OVERRIDES) for s in SEEDS}   # {seed: {method: RunConfig}}
runs = {s: lab.train_all(cfgs[s]) for s in SEEDS}   # reuses notebook 04's runs; trains the missing ones
print(f"runs ready in {time.time() - t0:.0f} s")

# %% [markdown]
# ## 1. Answer extraction
#
# The rules are LLM-Adapters': commonsense tasks take the first match of the task's answer words; arithmetic strips commas and takes the last number, correct within 1e-3.

# %%
# NBVAL_CHECK_OUTPUT
print(lab.extract_answer("boolq", "the correct answer is false, not true"))
print(lab.extract_answer("hellaswag", "ending5 is not valid, the correct answer is ending2"))
print(repr(lab.extract_answer("piqa", "no idea")))
print(lab.extract_number("so 1,250 + 4 = 1,254. The answer is 1,254"))
print(lab.is_correct("gsm8k", "The answer is 7.0", "7"), lab.is_correct("gsm8k", "The answer is 8", "7"))

# %% [markdown]
# ## 2. Merged inference: the same model, at the base model's cost
#
# Load BHRA's adapter onto the base model, generate, merge in place, generate again. Greedy decoding makes any difference in the weights that matters visible as a different token.

# %%
# NBVAL_CHECK_OUTPUT
from core.bhra import adapted_layers
_, tests = lab.load_commonsense(lab.data_dir(cfgs[SEEDS[0]]["bhra"]), train_file=cfgs[SEEDS[0]]["bhra"].train_file, split="test")
probe = [tests[t][i] for t in tests for i in range(4)]
model, tokenizer = lab.load_trained(cfgs[SEEDS[0]]["bhra"])
n_adapted = len(adapted_layers(model))
same, merged_texts = lab.merged_equals_unmerged(model, tokenizer, probe)
print("adapted layers before merge:", n_adapted, "| after:", len(adapted_layers(model)))
print("merged == unmerged generations on", len(probe), "prompts:", same)
assert same

# %%
# NBVAL_CHECK_OUTPUT
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = lab.save_merged(model, tokenizer, lab.run_dir(cfgs[SEEDS[0]]["bhra"]) / "merged")
plain = AutoModelForCausalLM.from_pretrained(folder)
plain_tok = AutoTokenizer.from_pretrained(folder)
print(type(plain).__name__, "| any adapter modules:", any("Adapted" in type(m).__name__ for m in plain.modules()))
print("reloaded == merged generations:", lab.generate(plain, plain_tok, probe) == merged_texts)
assert lab.generate(plain, plain_tok, probe) == merged_texts

# %% [markdown]
# ## 3. The metric, and the two baselines that need no model
#
# For task $t$ with test items $(x_i, y_i)_{i=1}^{n_t}$, a method's accuracy is the share of items whose extracted answer equals the
# label, and its average is the plain mean over the eight tasks:
#
# $$
# \mathrm{acc}_t = \frac{1}{n_t} \sum_{i=1}^{n_t} \mathbf 1\big[\operatorname{extract}_t(\operatorname{generate}(x_i)) = y_i\big],
# \qquad
# \mathrm{avg} = \frac{1}{8} \sum_{t} \mathrm{acc}_t .
# $$
#
# Every number below is a mean over the seeds $s = 1..S$, with a 95 % Student-$t$ interval over seeds (each seed draws its own
# data, adapter initialisation and batch order, so the interval covers all three):
#
# $$
# \bar a = \frac{1}{S}\sum_s a_s, \qquad \bar a \pm t_{0.975,\,S-1}\,\frac{\hat\sigma}{\sqrt S}, \qquad
# \hat\sigma^2 = \frac{1}{S-1}\sum_s (a_s - \bar a)^2 .
# $$
#
# Two methods are compared **paired by seed**: $d_s = a_s^{\text{BHRA}} - a_s^{\text{LoRA}}$, then the same interval on $\bar d$
# (`lab.stats.paired_diff`). The verdict is "above" or "below" only when the whole interval is; with fewer than three seeds it is
# "too few seeds". The baselines: **chance** $= 1/K_t$ for a task with $K_t$ options, and **majority** $=$ the share of the most
# frequent label in the test set — the accuracy of a model that always gives that one answer. A model that learned the format but
# not the task sits at one of the two; it must clear both.
#
# Test-set size: one task's standard error at $p = 0.5$ is $\sqrt{p(1-p)/n_t}$, at most 3 points when $n_t \ge 278$.

# %%
# NBVAL_IGNORE_OUTPUT
# Every method, merged (lab.evaluate_run checks merged == unmerged on a few prompts first), on every seed's test sets.
# The answers are kept, so a model that gives one constant answer can be told from one that learned the task.
from core.bhra import adapted_layers, merge

t0 = time.time()
acc, given, tests_of = {}, {}, {}   # acc[(method, seed, task)] in %, given[(method, seed, task)] = extracted answers
for s in SEEDS:
    _, tests = lab.load_commonsense(lab.data_dir(cfgs[s]["bhra"]), split="test")
    tests_of[s] = tests
    for m, cfg in cfgs[s].items():
        model, tokenizer = lab.load_trained(cfg)
        if adapted_layers(model):
            merge(model)
        for t, ds in tests.items():
            with lab.threads(cfg.threads):
                given[(m, s, t)], correct = lab.evaluate_task(model, tokenizer, t, ds, cfg.max_new_tokens,
                                                              cfg.eval_batch_size, cfg.num_beams)
            acc[(m, s, t)] = 100 * correct
print(f"evaluation: {len(SEEDS) * len(METHODS)} models in {time.time() - t0:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
TASKS = list(lab.COMMONSENSE_TASKS)
n_test = {t: min(len(tests_of[s][t]) for s in SEEDS) for t in TASKS}
chance = {t: float(np.mean([100 * lab.chance_of(tests_of[s][t]) for s in SEEDS])) for t in TASKS}  # from the options
majority = {t: float(np.mean([100 * lab.majority(tests_of[s][t]["answer"]) for s in SEEDS])) for t in TASKS}
chance["average"], majority["average"] = np.mean([chance[t] for t in TASKS]), np.mean([majority[t] for t in TASKS])
average = {(m, s): float(np.mean([acc[(m, s, t)] for t in TASKS])) for m in METHODS for s in SEEDS}
table = {m: {t: mean_ci([acc[(m, s, t)] for s in SEEDS]) for t in TASKS} for m in METHODS}
for m in METHODS:
    table[m]["average"] = mean_ci([average[(m, s)] for s in SEEDS])
cols = TASKS + ["average"]
print(f"mean ± 95 % half-width over {len(SEEDS)} seed(s), accuracy in %; test items per task and seed: "
      + ", ".join(f"{t} {n_test[t]}" for t in TASKS))
print(f"{'':9s}" + "".join(f"{t[:11]:>13s}" for t in cols))
for m in METHODS:
    print(f"{m:9s}" + "".join(f"{table[m][t].fmt(1):>13s}" for t in cols))
for name, base in (("chance", chance), ("majority", majority)):
    print(f"{name:9s}" + "".join(f"{base[t]:13.1f}" for t in cols))

# %%
import matplotlib.pyplot as plt

from lab.stats import bounded_errorbars

# One panel per task and one for the average. In each, per method: the mean over seeds with its 95 % interval
# (drawn within 0-100 %, left), and beside it every seed's own accuracy (one dot per seed, right), so a task that
# some seeds learned outright and others missed shows as two clusters instead of one wide bar.
per_seed = {(m, t): [acc[(m, s, t)] for s in SEEDS] for m in METHODS for t in TASKS}
per_seed |= {(m, "average"): [average[(m, s)] for s in SEEDS] for m in METHODS}
COLOR = {m: f"C{j}" for j, m in enumerate(METHODS)}
x = np.arange(len(METHODS))
fig, axes = plt.subplots(3, 3, figsize=(12, 10), sharey=True)
for ax, t in zip(axes.flat, cols):
    for j, m in enumerate(METHODS):
        c = table[m][t]
        ax.errorbar(j - 0.15, c.mean, yerr=bounded_errorbars([c.mean], [c.half]), fmt="_", ms=14, mew=2.5,
                    color=COLOR[m], elinewidth=1.5, capsize=4, zorder=3)
        offsets = 0.15 + 0.09 * (np.arange(len(SEEDS)) - (len(SEEDS) - 1) / 2)   # the seeds side by side
        ax.scatter(j + offsets, per_seed[(m, t)], s=16, color=COLOR[m], edgecolor="k", lw=0.4, zorder=4)
    ax.axhline(chance[t], color="k", ls="--", lw=0.9)
    ax.axhline(majority[t], color="tab:red", ls=":", lw=1.2)
    ax.set_title(t if t != "average" else "average of the eight tasks", fontsize=10,
                 fontweight="bold" if t == "average" else None)
    ax.set_xticks(x, METHODS, rotation=40, fontsize=8)
    ax.set_ylim(-4, 104)
    ax.grid(axis="y", alpha=0.3)
for ax in axes[:, 0]:
    ax.set_ylabel("accuracy (%)")
handles = [plt.Line2D([], [], color="0.3", marker="_", ms=12, mew=2.5, lw=1.5, label="mean ± 95 % interval over seeds"),
           plt.Line2D([], [], color="0.6", marker="o", mec="k", mew=0.4, ls="", ms=5, label="one seed"),
           plt.Line2D([], [], color="k", ls="--", lw=0.9, label="chance"),
           plt.Line2D([], [], color="tab:red", ls=":", lw=1.2, label="majority answer")]
fig.legend(handles=handles, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.965))
fig.suptitle(f"{PROFILE} profile, evaluated merged, {len(SEEDS)} seed(s): accuracy per task and method", y=0.995)
fig.tight_layout(rect=(0, 0, 1, 0.94))
plt.show()

# %% [markdown]
# ## 4. The criteria this offline world was built to meet
#
# Asserted here, so a change of the world, the recipe or the harness that breaks one fails this notebook:
#
# 1. full fine-tuning and the best adapter beat chance **and** the majority answer by at least 15 points on average, and every
#    adapter beats both; an adapter below the +15 line is named under the checks: it learned little in this world;
# 2. no task is degenerate: none where every method is at 98 % or more, none where every method gives one constant answer;
# 3. each task's test set is large enough that one task's standard error is at most 3 points;
# 4. (full grid only) at least three seeds per mean; a reduced grid prints criterion 1 without asserting it.
#
# Criterion 1 asked, until the offline tasks were written in LLM-Adapters' exact spacing, that *every* adapter clear the +15
# line. On the base pre-trained for that format an adapter may not: the line printed under the checks names it, as a finding about
# this small world, rather than a retuned rate or another draw of the base hiding it.
#
# What is *not* asserted is any ranking between the methods: that is what the next section measures. The criteria are asserted for this base model, which is one draw of its pre-training (seed 0): `benchmarks/README.md` (section `offline_world.py`) shows what bases pre-trained from other seeds give.

# %%
# NBVAL_CHECK_OUTPUT
ADAPTERS = [m for m in METHODS if m != "full"]
floor = max(chance["average"], majority["average"]) + 15
baseline = max(chance["average"], majority["average"])
AVERAGE = "full fine-tuning and the best adapter average >= max(chance, majority) + 15"  # claims about means over >= 3 seeds
ABOVE = "every adapter's average > max(chance, majority)"
below = [m for m in ADAPTERS if table[m]["average"].mean < floor]
checks = {
    AVERAGE: bool(min(table["full"]["average"].mean, max(table[m]["average"].mean for m in ADAPTERS)) >= floor),
    ABOVE: bool(all(table[m]["average"].mean > baseline for m in ADAPTERS)),
    "no task where every method is >= 98 %": not any(all(table[m][t].mean >= 98 for m in METHODS) for t in TASKS),
    "no task where every method answers one constant": not any(
        all(len(set(given[(m, s, t)])) == 1 for m in METHODS for s in SEEDS) for t in TASKS),
    "one task's standard error <= 3 points (n >= 278)": all(50 / np.sqrt(n_test[t]) <= 3 for t in TASKS),
}
for k, v in checks.items():
    print(f"{'holds' if v else 'FAILS'}: {k}")
for m in below:
    print(f"{m}: average {table[m]['average'].fmt(1)} < {floor:.1f} (max(chance, majority) + 15): learned little here")
# All are asserted on the full grid; a reduced grid only prints the two claims about means.
assert all(v for k, v in checks.items() if GRID_NAME == "full" or k not in (AVERAGE, ABOVE)), checks
if GRID_NAME == "full":
    assert len(SEEDS) >= MIN_SEEDS
base_acc = {}  # the untuned base answers in no format at all: it scores below every baseline
model, tokenizer = lab.load_base(cfgs[SEEDS[0]]["bhra"])  # the device and dtype its runs are evaluated in
with lab.threads(1):
    base_acc = lab.evaluate(model, tokenizer, tests_of[SEEDS[0]], limit=50)
print(f"untuned base model, first 50 items per task: average {100 * base_acc['average']:.0f} %")
assert all(table[m]["average"].mean > 100 * base_acc["average"] for m in METHODS)

# %% [markdown]
# ### Task by task: learned, missed, or cannot tell
#
# The average hides what the figure shows: on some tasks a method's seeds land at the top or at a baseline, not in
# between. A model must clear the higher of the two baselines, $\max(\text{chance}, \text{majority})$. Two readings
# per (method, task), both printed by `lab.stats`:
#
# * **over seeds** (`against`): the mean's 95 % interval lies above that line ("beats it"), contains it ("cannot tell
#   apart from it"), or lies below it;
# * **per seed** (`one_seed_clears`): one seed's accuracy passes the line by more than 1.96 binomial standard errors
#   of its test set at the baseline's rate (the line a seed must pass is printed for each task). A seed that passes
#   learned the task; one that does not missed it.
#
# A task is "not learned" by an adapter when none of its seeds passes; "learned in some seeds" when the seeds split.

# %%
from lab.stats import against, one_seed_clears, seed_line

ADAPTERS = [m for m in METHODS if m != "full"]
bar = {t: max(chance[t], majority[t]) for t in cols}   # the line to clear: the higher of the two baselines
WORDS = {"above": "beats", "inconclusive": "cannot tell apart from", "below": "below", "too few seeds": "too few seeds for"}
over = {(m, t): against(table[m][t], bar[t]) for m in METHODS for t in cols}                # over seeds
seeds_in = {(m, t): sum(one_seed_clears(v, bar[t], n_test[t]) for v in per_seed[(m, t)])     # per seed
            for m in METHODS for t in TASKS}
S = len(SEEDS)
for t in TASKS:
    base_name = "majority" if majority[t] >= chance[t] else "chance"
    print(f"{t}: chance {chance[t]:.1f} %, majority {majority[t]:.1f} %; a seed must pass {seed_line(bar[t], n_test[t]):.1f} %")
    for verdict_word in ("above", "inconclusive", "below", "too few seeds"):
        ms = [m for m in METHODS if over[(m, t)] == verdict_word]
        if ms:
            print(f"  {WORDS[verdict_word]} the {base_name} line: "
                  + ", ".join(f"{m} {table[m][t].fmt(1)} ({seeds_in[(m, t)]}/{S} seeds)" for m in ms))
    shown = [m for m in ADAPTERS if over[(m, t)] == "above"]
    some = [m for m in ADAPTERS if 0 < seeds_in[(m, t)] < S]
    if not any(seeds_in[(m, t)] for m in ADAPTERS):
        lo, hi = min(table[m][t].mean for m in ADAPTERS), max(table[m][t].mean for m in ADAPTERS)
        print(f"  -> not learned by any adapter: no seed of any adapter passes the line "
              f"(adapter means {lo:.1f}-{hi:.1f} % against {base_name} {bar[t]:.1f} %)")
    elif not shown:
        print(f"  -> no adapter is shown to beat the {base_name} line over seeds; learned in some seeds only: "
              + ", ".join(f"{m} {seeds_in[(m, t)]}/{S}" for m in some))
    else:
        print(f"  -> adapters that beat it over seeds: {', '.join(shown)}"
              + (f"; the seeds split for {', '.join(f'{m} {seeds_in[(m, t)]}/{S}' for m in some)}" if some else ""))
not_learned = [t for t in TASKS if not any(seeds_in[(m, t)] for m in ADAPTERS)]
not_shown = [t for t in TASKS if t not in not_learned and not any(over[(m, t)] == "above" for m in ADAPTERS)]
by_all = [t for t in TASKS if all(over[(m, t)] == "above" for m in ADAPTERS)]
split = [(m, t) for m in ADAPTERS for t in TASKS if 0 < seeds_in[(m, t)] < S]
print(f"\ntasks no adapter learned (no seed passes): {', '.join(not_learned) or 'none'}")
print(f"tasks no adapter is shown to beat over seeds, though some seeds learned them: {', '.join(not_shown) or 'none'}")
print(f"tasks every adapter beats over seeds: {', '.join(by_all) or 'none'}")
print(f"(adapter, task) pairs whose seeds split, some learning the task and some missing it: {len(split)} of "
      f"{len(ADAPTERS) * len(TASKS)}")

# %% [markdown]
# ## 5. Paired comparisons: BHRA against LoRA and against HiRA
#
# The paper's comparisons, on the average over the eight tasks, paired by seed. The interval is on the difference; the verdict is
# printed by `lab.stats.verdict` from it, never typed.

# %%
# NBVAL_CHECK_OUTPUT
comparisons = {}
for a, b in (("bhra", "lora"), ("bhra", "hira"), ("hira", "lora"), ("bhra", "full")):
    d = paired_diff({s: average[(a, s)] for s in SEEDS}, {s: average[(b, s)] for s in SEEDS})
    comparisons[f"{a} - {b}"] = d
    reading = {"above": f"{a} better than {b}", "below": f"{a} worse than {b}",
               "inconclusive": "no clear difference (the interval contains 0)"}.get(verdict(d), verdict(d))
    print(f"{a:5s} − {b:5s}: {d.fmt(1):>13s} points (n = {d.n} seeds)  ->  {reading}")
best = max(ADAPTERS, key=lambda m: table[m]["average"].mean)
print(f"highest adapter mean: {best} (a ranking of means; only the paired intervals above say whether a gap is real)")

# %%
# The paper's accuracy claim (claim (b) of course/paper_profile.md; claim (a), retention, is notebook 06's):
# at the same budget BHRA is more accurate than LoRA and HiRA. Read here from the two paired differences above,
# on the eight-task average.
v_lora, v_hira = verdict(comparisons["bhra - lora"]), verdict(comparisons["bhra - hira"])
if "too few seeds" in (v_lora, v_hira):
    claim_b = "too few seeds"
elif v_lora == v_hira == "above":
    claim_b = "consistent with it here"
elif "below" in (v_lora, v_hira):
    claim_b = "contradicted here"
else:
    claim_b = "neither confirmed nor refuted here"
apart = [f"{b} ({comparisons['bhra - ' + b].fmt(1)} points)" for b, v in (("lora", v_lora), ("hira", v_hira))
         if v == "inconclusive"]
print("claim (b), BHRA more accurate than LoRA and HiRA at the same budget:", claim_b.upper())
print(f"  bhra − lora: {v_lora};  bhra − hira: {v_hira}")
if apart:
    print(f"  this run cannot tell BHRA apart from {' nor from '.join(apart)}: the interval contains 0")

# %% [markdown]
# The headline numbers go to `notebooks/results/05_evaluation.json` (rounded to one decimal, the precision the intervals
# allow). Lessons, the guide and the README quote results only from there.

# %%
# NBVAL_CHECK_OUTPUT
results = {
    "grid": GRID_NAME, "seeds": list(SEEDS), "profile": PROFILE,
    "test_items_per_task": n_test,
    "chance": {t: round(v, 1) for t, v in chance.items()},
    "majority": {t: round(v, 1) for t, v in majority.items()},
    "accuracy": {m: {t: {"mean": round(c.mean, 1), "ci95": None if np.isnan(c.half) else round(c.half, 1)}
                     for t, c in table[m].items()} for m in METHODS},
    "paired_average": {k: {"mean": round(d.mean, 1), "ci95": None if np.isnan(d.half) else round(d.half, 1),
                           "verdict": verdict(d)} for k, d in comparisons.items()},
    "criteria": checks,
    "claim_b": claim_b,  # the printed reading of the paper's claim (b): BHRA above LoRA and HiRA at one budget
    "tasks_not_learned": not_learned,  # no seed of any adapter passes max(chance, majority) by its binomial error
    "tasks_not_shown_learned": not_shown,  # some seeds learned them, no adapter's interval clears the baseline
    "machine": lab.machine.machine(),  # the CPU, the ISA torch computed with, the pins
}
if PROFILE == "offline" and GRID_NAME == "full" and not OVERRIDES:   # only the committed configuration writes the file
    out = Path("results") / "05_evaluation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print("wrote", out)
print(json.dumps(results["paired_average"], sort_keys=True))

# %% [markdown]
# ## Conclusions
#
# Printed from this run's results by the cell below, not typed: what the offline run shows, what it cannot show,
# and how it bears on the paper's claims. The paper's claim about accuracy (claim (b) in `course/paper_profile.md`:
# BHRA more accurate than LoRA and HiRA at the same budget) is the one this notebook can test; its retention claim
# is notebook 06's.

# %%
S, avg_bar = len(SEEDS), bar["average"]
print(f"Offline profile, {S} seeds, accuracy as mean ± 95 % interval over seeds, next to chance and the majority answer.\n")
print("What this run shows:")
print(f"- merged inference: merged and unmerged generations {'agree' if same else 'DIFFER'} on {len(probe)} prompts, and the "
      f"merged model reloads as a plain {type(plain).__name__} that generates the same text.")
above_avg = [m for m in METHODS if over[(m, "average")] == "above"]
rest_avg = ", ".join(f"{m} ({WORDS[over[(m, 'average')]]} it)" for m in METHODS if m not in above_avg)
print(f"- on the eight-task average, {', '.join(above_avg) or 'no method'} beat max(chance, majority) = {avg_bar:.1f} % "
      f"over seeds" + (f"; {rest_avg}" if rest_avg else "") + ".")
if by_all:
    print(f"- every adapter beats the higher baseline over seeds on {', '.join(by_all)}.")
if not_learned:
    print(f"- not learned by any adapter in any seed: {', '.join(not_learned)} "
          f"({'; '.join(f'{t}: adapters {min(table[m][t].mean for m in ADAPTERS):.1f}-{max(table[m][t].mean for m in ADAPTERS):.1f} % against {bar[t]:.1f} %' for t in not_learned)}).")
if not_shown:
    print(f"- not shown learned by any adapter over seeds, though some seeds learned them: {', '.join(not_shown)}.")
print(f"- the seeds split in {len(split)} of {len(ADAPTERS) * len(TASKS)} (adapter, task) pairs, some seeds learning the task "
      "and others missing it" + (": there an interval is wide because whole tasks were won or lost by seed, not because of "
      "the test sets' sampling error (at most 3 points per task and seed, criterion 3)." if split else "."))
print("\nWhat it cannot show:")
print(f"- claim (b), BHRA above LoRA and HiRA at the same budget: {claim_b}"
      + (f"; this run cannot tell BHRA apart from {' nor from '.join(apart)}." if apart else "."))
print(f"- a ranking: {best} has the highest adapter mean, but {sum(verdict(d) == 'inconclusive' for d in comparisons.values())} "
      f"of the {len(comparisons)} paired differences contain 0; a ranking of means is not a result.")
print("- the paper's numbers: this is a small Llama pre-trained briefly on a synthetic world, on synthetic tasks in LLM-Adapters' format; "
      "the method and the statistics carry over to the paper profile, the accuracies do not.")

# %% [markdown]
# **Questions**
# 1. The untuned base model scores below chance. Why is "chance" not a lower bound for a model that has not learned the answer format?
# 2. Merged and unmerged generations agree here in float32. What could make them differ in bf16, and which check from PEFT's test suite guards against it?
# 3. Two methods' intervals can overlap in the table while their paired difference is clear of zero. How can that be, and which of the two comparisons should you trust? Does this run's table show such a pair?
# 4. With three seeds, $t_{0.975,2} = 4.30$. How many seeds would halve the interval of a difference whose spread stays the same?
