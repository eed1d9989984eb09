"""What the smol profile can afford on this CPU, from measurements: SmolLM2-135M-Instruct's zero-shot
accuracy on the offline tasks, and notebooks 04-07's grid at the smol preset costed from measured step times.

    python benchmarks/bench.py --preset smollm2-135m --methods lora,dora,hira,abba,gralora,bhra,full
    python benchmarks/smol_design.py [--limit 50]        # then this: zero-shot, and the cost of the grid

Zero-shot: the untuned base, evaluated as every run is (lab.evaluate with the smol preset's decoding) on
the first `--limit` test questions of each offline task (seed 0's data), beside chance and the majority
answer of the same questions; `unparsed` is the share of generations in which LLM-Adapters' extraction
finds no answer word at all (an instruct model that has never seen the format mostly answers in prose).

Cost: the runs notebooks 04-07 train in the smol profile (lab.budget.notebooks, charged once each) times
their optimiser steps times the step time bench.py measured for the method on this machine (micro-batch
8 x 128 tokens, r = 32 on all seven targets: an upper bound for the preset's r = 8 on five targets), plus
every evaluation's questions times the seconds per question measured here. Methods bench.py did not time
take the slowest measured one. Questions are timed on the preset's one thread, and notebooks run such work
side by side, one process per core: on 2 cores the evaluation part may halve. Writes benchmarks/results/smol_design-<isa>.json and prints a summary.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402  first: the numerical pins must be set before torch computes
from lab import budget, machine  # noqa: E402
from lab.cache import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BENCH = RESULTS / "smollm2-135m.json"  # what bench.py --preset smollm2-135m writes
BUDGET_S = 2 * 3600  # the time `BHRA_PROFILE=smol make notebooks` is to fit on a 2-core machine
BENCH_KEY = {"bhra_blocknorm": "bhra"}  # bench.py times the ablation's arithmetic as BHRA's


def zero_shot(limit: int) -> dict:
    """{task: {accuracy, chance, majority, unparsed}} of the untuned base, and the seconds per question."""
    cfg = lab.preset("smol", method="bhra")
    model, tokenizer = lab.load_base(cfg, verbose=False)
    _, tests = lab.load_commonsense(lab.data_dir(cfg), train_file=cfg.train_file, split="test")
    out, t0, n = {}, time.perf_counter(), 0
    with lab.threads(cfg.threads):
        for task, ds in tests.items():
            rows = [ds[i] for i in range(min(limit, len(ds)))]
            given, acc = lab.evaluate_task(model, tokenizer, task, rows, cfg.max_new_tokens, cfg.eval_batch_size)
            out[task] = {"accuracy": 100 * acc, "chance": 100 * lab.chance_of(rows),
                         "majority": 100 * lab.majority(r["answer"] for r in rows),
                         "unparsed": 100 * sum(not g for g in given) / len(given), "questions": len(rows)}
            n += len(rows)
    return {"tasks": out, "seconds_per_question": (time.perf_counter() - t0) / n, "threads": cfg.threads,
            "max_new_tokens": cfg.max_new_tokens, "eval_batch_size": cfg.eval_batch_size}


def step_seconds(path: Path) -> dict:
    """{method: median step seconds} from bench.py's result file, which must come from this machine."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/bench.py --preset smollm2-135m "
                                "--methods lora,dora,hira,abba,gralora,bhra,full` on this machine first")
    got = json.loads(path.read_text())
    here = machine.machine()
    if (got["machine"].get("cpu"), got["machine"].get("isa")) != (here["cpu"], here["isa"]):
        raise ValueError(f"{path} was measured on {got['machine'].get('cpu')} ({got['machine'].get('isa')}), "
                         f"not on this {here['cpu']} ({here['isa']}): run bench.py here first")
    return {r["method"]: r["step_s"] for r in got["rows"] if "step_s" in r}


TEST_SIZES = inspect.signature(lab.offline_data).parameters  # the offline test sets' sizes, as written


def questions(cfg, kind, limit, count) -> int:
    """How many questions one entry of a notebook's evaluations asks of the offline test sets."""
    if kind == "A":
        n = TEST_SIZES["n_test_per_task"].default
        return count * len(lab.COMMONSENSE_TASKS) * min(n, limit or n)
    n = TEST_SIZES["n_math_test"].default  # the arithmetic test set; its answers are longer (more tokens)
    return count * min(n, limit or n)


def cost(step_s: dict, per_question: float) -> dict:
    slowest = max(step_s.values())
    notebooks = {}
    for c in budget.notebooks("smol"):
        steps = sum(r.max_steps * r.batch_size // r.micro_batch_size for r in c.runs)  # micro-batch steps
        train = sum(r.max_steps * r.batch_size // r.micro_batch_size * step_s.get(BENCH_KEY.get(r.method, r.method),
                                                                                     slowest) for r in c.runs)
        asked = sum(questions(*e) for e in c.evals)
        notebooks[c.name] = {"runs": len(c.runs), "micro_batch_steps": steps, "train_s": train,
                             "questions": asked, "eval_s": asked * per_question}
    total = sum(v["train_s"] + v["eval_s"] for v in notebooks.values())
    runs = sum(v["runs"] for v in notebooks.values())
    steps = sum(v["micro_batch_steps"] for v in notebooks.values())
    ev = sum(v["eval_s"] for v in notebooks.values())
    mean_step = sum(v["train_s"] for v in notebooks.values()) / steps
    return {"notebooks": notebooks, "total_s": total, "runs": runs, "budget_s": BUDGET_S,
            # the optimiser steps per run (at the preset's batch) that would fit the budget, evaluation as it is
            "steps_per_run_in_budget": max(0.0, (BUDGET_S - ev) / mean_step / runs
                                           / (lab.preset("smol").batch_size // lab.preset("smol").micro_batch_size))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=50, help="test questions per task for the zero-shot accuracy")
    ap.add_argument("--bench", type=Path, default=BENCH, help="bench.py's result file for the step times")
    args = ap.parse_args(argv)
    step_s = step_seconds(args.bench)  # refuse before minutes of evaluation
    t0 = time.perf_counter()
    zs = zero_shot(args.limit)
    result = {"machine": machine.machine(), "zero_shot": zs, "step_s": step_s, "bench": args.bench.name,
              "cost": cost(step_s, zs["seconds_per_question"]), "wall_s": time.perf_counter() - t0}
    out = RESULTS / f"smol_design-{result['machine']['isa'].lower()}.json"
    write_json(out, result)
    print(f"SmolLM2-135M-Instruct zero-shot, first {args.limit} questions per offline task "
          f"({result['machine']['cpu']}, {result['machine']['isa']}):")
    for task, v in zs["tasks"].items():
        print(f"  {task:14s} {v['accuracy']:5.1f} %  chance {v['chance']:5.1f}  majority {v['majority']:5.1f}  "
              f"no answer word in {v['unparsed']:5.1f} %")
    c = result["cost"]
    print(f"\nnotebooks 04-07 at the smol preset: {c['runs']} runs, {c['total_s'] / 3600:.1f} h on this machine "
          f"(budget {BUDGET_S / 3600:.0f} h)")
    for name, v in c["notebooks"].items():
        print(f"  {name:12s} {v['runs']:3d} runs  train {v['train_s'] / 60:6.1f} min  "
              f"evaluate {v['questions']:6d} questions {v['eval_s'] / 60:6.1f} min")
    print(f"  the budget holds {c['steps_per_run_in_budget']:.1f} optimiser steps per run at this grid -> {out}")
    return result


if __name__ == "__main__":
    main()
