"""Does the offline world let the methods differ? Measures the criteria that notebooks 05 and 06 assert.

    python benchmarks/offline_world.py                      # 7 methods x seeds 0,1,2, then the continual grid
    python benchmarks/offline_world.py --seeds 0 --methods lora bhra --no-continual

Criteria (printed as PASS/FAIL, the table as JSON with --out):
  * every adapter's average accuracy beats chance AND the majority-answer baseline by >= 15 points;
  * no degenerate task: none where every method scores >= 98 %, none where every method answers one constant;
  * per-task test sets with a standard error <= 3 points (n >= 278 at p = 0.5);
  * continual lab: every method's stage-2 plasticity spans >= 20 points across its learning-rate sweep.
It runs on one torch thread, in the cache of BHRA_CACHE (default .cache), so finished runs are reused
by the notebooks (and vice versa).
"""
from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np

import lab  # first: the numerical pins (lab/machine.py) must be set before torch computes
import torch  # noqa: E402


def commonsense(methods, seeds, run: dict):
    import lab
    from core.bhra import adapted_layers, merge

    rows = []  # one per (method, seed, task): accuracy, the answers given
    info = {}
    for seed in seeds:
        cfgs = lab.configs("offline", methods, seed=seed, **run)
        first = next(iter(cfgs.values()))
        _, tests = lab.load_commonsense(lab.data_dir(first), split="test")
        for t, ds in tests.items():
            info.setdefault(t, []).append({"n": len(ds), "majority": lab.majority(ds["answer"])})
        for m, cfg in cfgs.items():
            t0 = time.time()
            lab.train(cfg, verbose=False)
            t1 = time.time()
            model, tok = lab.load_trained(cfg)
            if adapted_layers(model):
                merge(model)
            for t, ds in tests.items():
                with lab.threads(cfg.threads):
                    given, acc = lab.evaluate_task(model, tok, t, ds, cfg.max_new_tokens, cfg.eval_batch_size)
                rows.append({"method": m, "seed": seed, "task": t, "acc": 100 * acc,
                             "answers": dict(collections.Counter(given))})
            print(f"seed {seed} {m:8s} train {t1 - t0:5.1f} s  eval {time.time() - t1:5.1f} s  "
                  f"avg {np.mean([r['acc'] for r in rows if r['method'] == m and r['seed'] == seed]):5.1f}", flush=True)
    return rows, info


def report(rows, info, methods):
    import lab
    from lab.stats import mean_ci

    tasks = list(lab.COMMONSENSE_TASKS)
    chance = {t: 100 * lab.CHANCE[t] for t in tasks}
    major = {t: 100 * float(np.mean([i["majority"] for i in info[t]])) for t in tasks}
    n = {t: min(i["n"] for i in info[t]) for t in tasks}
    chance["average"], major["average"] = np.mean(list(chance.values())), np.mean(list(major.values()))
    table = {}
    for m in methods:
        table[m] = {}
        for t in tasks + ["average"]:
            if t == "average":
                by_seed = collections.defaultdict(list)
                for r in rows:
                    if r["method"] == m:
                        by_seed[r["seed"]].append(r["acc"])
                vals = [np.mean(v) for _, v in sorted(by_seed.items())]
            else:
                vals = [r["acc"] for r in sorted(rows, key=lambda r: r["seed"]) if r["method"] == m and r["task"] == t]
            table[m][t] = mean_ci(vals)
    print(f"\n{'':10s}" + "".join(f"{t[:10]:>15s}" for t in tasks + ['average']))
    for m in methods:
        print(f"{m:10s}" + "".join(f"{table[m][t].mean:7.1f} ± {table[m][t].half:4.1f} " for t in tasks + ["average"]))
    print(f"{'chance':10s}" + "".join(f"{chance[t]:15.1f}" for t in tasks + ["average"]))
    print(f"{'majority':10s}" + "".join(f"{major[t]:15.1f}" for t in tasks + ["average"]))
    ok = {}
    adapters = [m for m in methods if m != "full"]
    ok["adapters beat chance and majority by 15"] = all(
        table[m]["average"].mean >= max(chance["average"], major["average"]) + 15 for m in adapters)
    ok["no task where every method >= 98"] = not any(all(table[m][t].mean >= 98 for m in methods) for t in tasks)
    const = {t: all(len(r["answers"]) == 1 for r in rows if r["task"] == t) for t in tasks}
    ok["no task where every method answers one constant"] = not any(const.values())
    ok["per-task SE <= 3 points"] = all(50 / np.sqrt(n[t]) <= 3.0 for t in tasks)
    for k, v in ok.items():
        print(f"{'PASS' if v else 'FAIL'}  {k}")
    return {"table": {m: {t: [round(c.mean, 1), round(c.half, 1)] for t, c in d.items()} for m, d in table.items()},
            "chance": chance, "majority": major, "n": n, "criteria": ok}


def continual(methods, seeds, grid, run: dict):
    from lab.continual import continual_preset, run_grid

    spec = continual_preset("offline", grid=grid, run=run, methods=tuple(methods), seeds=tuple(seeds))
    t0 = time.time()
    recs = run_grid(spec)
    print(f"continual grid: {len(recs)} stage-2 runs in {time.time() - t0:.0f} s")
    out = {}
    for m in methods:
        by_lr = collections.defaultdict(list)
        for r in recs:
            if r["method"] == m:
                by_lr[r["lr_multiplier"]].append((r["acc_B_stage2"], r["acc_A_stage2"], r["acc_A_stage1"]))
        means = {k: np.mean(v, axis=0).round(1).tolist() for k, v in sorted(by_lr.items())}
        span = max(v[0] for v in means.values()) - min(v[0] for v in means.values())
        out[m] = {"per_multiplier (P, R, stage1)": means, "plasticity_span": round(float(span), 1)}
        print(f"{m:15s} span {span:5.1f}  " + "  ".join(f"x{k:g}: P {v[0]:5.1f} R {v[1]:5.1f} S1 {v[2]:5.1f}" for k, v in means.items()))
    print(f"{'PASS' if all(v['plasticity_span'] >= 20 for v in out.values()) else 'FAIL'}  every plasticity span >= 20")
    return out


def main():
    import lab
    from lab.continual import ABLATION

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(lab.METHODS_ALL))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--no-commonsense", action="store_true")
    p.add_argument("--no-continual", action="store_true")
    p.add_argument("--continual-methods", nargs="+", default=["lora", "gralora", "abba", "hira", "bhra", ABLATION, "full"])
    p.add_argument("--grid", default="full")
    p.add_argument("--out", default=None, help="write the measurements as JSON here")
    p.add_argument("--spec", default=None, help='BaseSpec overrides as JSON, e.g. \'{"pretrain_steps": 800}\' (to try a recipe)')
    p.add_argument("--run", default=None, help='RunConfig overrides for every run as JSON, e.g. \'{"max_steps": 200}\'')
    a = p.parse_args()
    run = json.loads(a.run) if a.run else {}  # RunConfig overrides of every run, the base model among them
    if a.spec:
        run["model"] = lab.BaseSpec(**json.loads(a.spec))
    torch.set_num_threads(1)
    lab.quiet()
    t0 = time.time()
    res = {}
    if not a.no_commonsense:
        rows, info = commonsense(a.methods, a.seeds, run)
        res["commonsense"] = report(rows, info, a.methods)
        print(f"commonsense: {time.time() - t0:.0f} s")
    if not a.no_continual:
        res["continual"] = continual(a.continual_methods, a.seeds, a.grid, run)
    print(f"total {time.time() - t0:.0f} s")
    res["args"] = vars(a)  # what was measured: methods, seeds, base-model and run overrides
    res["machine"] = lab.machine.machine()  # the CPU, the ISA torch computed with, the pins
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
