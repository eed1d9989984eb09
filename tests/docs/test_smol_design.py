"""benchmarks/smol_design.py: the smol grid's cost is the runs lab.budget counts times measured step times,
and step times from another machine are refused. No timing is asserted: the numbers live in its results file."""
import importlib.util
import json

import pytest

import lab
from lab import budget
from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("smol_design", REPO / "benchmarks" / "smol_design.py")
design = importlib.util.module_from_spec(spec)
spec.loader.exec_module(design)


def _bench(tmp_path, cpu, isa, steps):
    path = tmp_path / "smollm2-135m.json"
    path.write_text(json.dumps({"machine": {"cpu": cpu, "isa": isa},
                                "rows": [{"method": m, "step_s": s} for m, s in steps.items()]}))
    return path


def test_step_times_from_another_machine_are_refused_by_name(tmp_path):
    here = lab.machine.machine()
    other = _bench(tmp_path, "Some Other CPU", here["isa"], {"lora": 1.0})
    with pytest.raises(ValueError, match="Some Other CPU.*run bench.py here first"):
        design.step_seconds(other)
    with pytest.raises(FileNotFoundError, match="--preset smollm2-135m"):
        design.step_seconds(tmp_path / "missing.json")
    assert design.step_seconds(_bench(tmp_path, here["cpu"], here["isa"], {"lora": 2.5})) == {"lora": 2.5}


def test_the_cost_is_every_counted_run_times_its_steps_times_its_step_time():
    step_s = {"lora": 1.0, "bhra": 3.0}  # the other methods take the slowest measured one
    got = design.cost(step_s, per_question=0.0)
    costs = budget.notebooks("smol")
    assert got["runs"] == sum(len(c.runs) for c in costs) > 0
    for c in costs:
        want = sum(r.max_steps * r.batch_size // r.micro_batch_size * (1.0 if r.method == "lora" else 3.0)
                   for r in c.runs)
        assert got["notebooks"][c.name]["train_s"] == pytest.approx(want)
    assert got["total_s"] == pytest.approx(sum(v["train_s"] for v in got["notebooks"].values()))
    # with no evaluation cost, the steps per run that fill the budget give back the budget
    cfg = lab.preset("smol")
    per_step = got["total_s"] / sum(v["micro_batch_steps"] for v in got["notebooks"].values())
    filled = got["steps_per_run_in_budget"] * got["runs"] * (cfg.batch_size / cfg.micro_batch_size) * per_step
    assert filled == pytest.approx(design.BUDGET_S)


def test_the_committed_design_file_is_what_its_arithmetic_gives():
    files = sorted((REPO / "benchmarks" / "results").glob("smol_design-*.json"))
    assert files, "benchmarks/results/smol_design-<isa>.json is committed (python benchmarks/smol_design.py)"
    cfg = lab.preset("smol")
    _, tests = lab.load_commonsense(lab.data_dir(cfg), train_file=cfg.train_file, split="test")
    for f in files:
        d = json.loads(f.read_text())
        again = design.cost(d["step_s"], d["zero_shot"]["seconds_per_question"])
        assert again["total_s"] == pytest.approx(d["cost"]["total_s"]), f"{f.name}: the grid changed; run it again"
        for task, v in d["zero_shot"]["tasks"].items():
            rows = [tests[task][i] for i in range(v["questions"])]
            assert v["chance"] == pytest.approx(100 * lab.chance_of(rows))
            assert v["majority"] == pytest.approx(100 * lab.majority(r["answer"] for r in rows))
            assert 0 <= v["accuracy"] <= 100 and 0 <= v["unparsed"] <= 100
