"""Command line: the same runs as the notebooks, built the same way (a preset, then overrides).

    python -m lab train    --profile paper --method bhra            # notebook 04's run, same folder
    python -m lab evaluate --profile offline --method lora --limit 20
    python -m lab show     --profile paper --method bhra            # the resolved config and its run folder
    python -m lab budget   --profile paper --method full            # memory estimate and fit per GPU (lab.budget)
    python -m lab budget   --profile paper --notebooks              # hours, memory, disk of notebooks 04-07
    torchrun --nproc_per_node 2 -m lab train --profile paper --method bhra   # data parallel (the Trainer's)

Every RunConfig field is a flag (`--max-steps 100`, `--targets q_proj,v_proj`, `--no-bf16`); only
the flags given override the preset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from lab.config import EVAL_RANGES, PROFILES, RunConfig, check_settings, preset
from lab.finetune import RunDiverged, data_dir, evaluate_run, run_dir, train
from lab.formats import load_commonsense


def _parse(kind: str):
    def parse(v: str):
        if v.lower() == "none":
            return None
        return {"int": int, "float": float}.get(kind, str)(v)
    return parse


TABLES = {"fits": "fits", "notebooks": "notebook_table", "minimum": "minimum"}  # budget's flag -> lab.budget's table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description="Fine-tune and evaluate with the lab harness.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "evaluate", "show", "budget"):
        s = sub.add_parser(name)
        s.add_argument("--profile", choices=sorted(PROFILES), default="offline", help="the preset to start from")
        for f in dataclasses.fields(RunConfig):
            if f.name == "profile":
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.name == "r":  # --rank too: torchrun reads a bare --r as an abbreviation of its own options
                s.add_argument(flag, "--rank", dest="r", type=int, default=None)
            elif f.name == "targets":
                s.add_argument(flag, default=None, help="comma-separated nn.Linear names")
            elif f.type == "bool":
                s.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
            else:
                s.add_argument(flag, type=_parse(str(f.type).split(" ")[0]), default=None)
        s.add_argument("--fresh", action="store_true", help="delete this run's folder and train from step 0")
        s.add_argument("--limit", type=_parse("int"), default=None, help="test examples per task (evaluate)")
        if name == "budget":
            for what, fn in TABLES.items():
                s.add_argument(f"--{what}", action="store_true", help=f"print lab.budget.{fn}(profile) instead")
    return p


def config_from_args(argv=None) -> tuple[str, RunConfig, bool, int | None, str | None]:
    """(command, the run's config, --fresh, --limit, the budget table asked for or None)."""
    p = parser()
    a = vars(p.parse_args(argv))
    cmd, fresh, limit, profile = a.pop("cmd"), a.pop("fresh"), a.pop("limit"), a.pop("profile")
    asked = [t for t in TABLES if a.pop(t, False)]  # budget's whole-profile tables: no part of a run
    table = asked[0] if asked else None
    overrides = {k: v for k, v in a.items() if v is not None}
    if "targets" in overrides:
        overrides["targets"] = tuple(t for t in overrides["targets"].split(",") if t)
    try:
        cfg = preset(profile, **overrides)
        check_settings({"limit": limit}, EVAL_RANGES)
    except ValueError as e:  # a bad setting is the user's to fix: one line, no traceback
        p.error(str(e))
    return cmd, cfg, fresh, limit, table


def main(argv=None):
    cmd, cfg, fresh, limit, table = config_from_args(argv)
    try:
        dispatch(cmd, cfg, fresh, limit, table, argv)
    except (OSError, ValueError, RunDiverged) as e:  # each names its file or value and the fix
        if os.environ.get("BHRA_TRACEBACK"):
            raise
        sys.exit(f"error: {e}\n(BHRA_TRACEBACK=1 shows where it was raised)")


def dispatch(cmd, cfg, fresh, limit, table, argv):
    if cmd == "budget":
        from lab import budget

        print(getattr(budget, TABLES[table])(cfg.profile) if table else budget.report(cfg))
    elif cmd == "show":
        print(json.dumps({"config": dataclasses.asdict(cfg), "learning_rate": cfg.learning_rate,
                          "run_dir": str(run_dir(cfg))}, indent=1))
    elif cmd == "train":
        rec = train(cfg, reuse=not fresh)
        print(json.dumps({k: v for k, v in rec.items() if k != "losses"}, indent=1))
    else:
        if fresh:
            train(cfg, reuse=False)
        elif not (run_dir(cfg) / "run.json").exists():
            raise SystemExit(f"error: no finished run in {run_dir(cfg)}: train it first, with the same flags: "
                             f"python -m lab train {' '.join((argv if argv is not None else sys.argv[1:])[1:])}")
        _, tests = load_commonsense(data_dir(cfg), train_file=cfg.train_file, split="test")
        print(json.dumps(evaluate_run(cfg, tests, limit), indent=1))
