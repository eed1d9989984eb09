"""The README's measured run times are quoted from notebooks/results/timings.json (written by
`make notebooks` on a fresh clone, via notebooks/execute.py); a test keeps quote and file together."""
import json
import re

from tests.helpers import REPO


def test_the_readme_quotes_the_recorded_times():
    t = json.loads((REPO / "notebooks" / "results" / "timings.json").read_text())
    readme = (REPO / "README.md").read_text()
    (line,) = [l for l in readme.splitlines() if l.startswith("make notebooks")]
    assert f"{t['total_seconds'] / 60:.0f} min" in line, line
    (line,) = [l for l in readme.splitlines() if l.startswith("make test ")]
    assert f"{t['make_test_seconds'] / 60:.0f} min" in line, line
    (line,) = [l for l in readme.splitlines() if l.startswith("make test-core ")]
    assert f"{t['make_test_core_seconds']:.0f} s" in line, line
    assert re.search(r"\bcores\b", readme) and str(t["cores"]) in readme


def run_time(seconds: float) -> str:
    """How the syllabus writes a notebook's run time."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def test_the_syllabus_quotes_each_notebooks_recorded_time():
    t = json.loads((REPO / "notebooks" / "results" / "timings.json").read_text())["seconds"]
    syllabus = (REPO / "course" / "README.md").read_text()
    rows = [r.split("|") for r in syllabus.splitlines() if re.match(r"\| [1-7] \| ", r)]
    assert len(rows) == 7
    for row in rows:
        (stem,) = [s for s in t if s.startswith(f"0{row[1].strip()}_")]
        assert row[6].strip() == run_time(t[stem]), (stem, row[6])


def test_the_readme_says_which_budget_the_recorded_times_miss():
    t = json.loads((REPO / "notebooks" / "results" / "timings.json").read_text())
    (line,) = [l for l in (REPO / "README.md").read_text().split("\n\n") if "The project's budgets" in l]
    assert ("`make test` (missed" in line) == (t["make_test_seconds"] > 20 * 60), line
    assert ("`make notebooks` (missed" in line) == (t["total_seconds"] > 20 * 60), line
    assert ("`make test-core` (missed" in line) == (t["make_test_core_seconds"] > 60), line


def test_the_readme_quotes_what_the_pins_changed():
    """The README's reason for comparing training results exactly: how far the committed outputs of Intel's own
    AVX-512 path (benchmarks/results/*-avx512.json) lie from the pinned ones of the same base and records
    (benchmarks/results/*-avx2-pinned.json, notebooks/results/ as committed before the records took LLM-Adapters'
    spacing and the base was rebuilt for it)."""
    def load(folder, name):
        return json.loads((REPO / folder / f"{name}.json").read_text())

    native = load("benchmarks/results", "05_evaluation-avx512")
    pinned = load("benchmarks/results", "05_evaluation-avx2-pinned")
    assert "machine" not in native and pinned["machine"]["isa"] == "AVX2"  # the old file predates the record
    adapters = [m for m in pinned["accuracy"] if m != "full"]
    moved = max(abs(native["accuracy"][m]["average"]["mean"] - pinned["accuracy"][m]["average"]["mean"]) for m in adapters)
    changed = sum(native["paired_average"][k]["verdict"] != v["verdict"] for k, v in pinned["paired_average"].items())
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"adapter averages differ by up to {moved:.1f} points" in readme
    assert f"{words[changed]} of its {words[len(pinned['paired_average'])]} paired verdicts differs" in readme
    native6 = load("benchmarks/results", "06_continual_learning-avx512")
    pinned6 = load("benchmarks/results", "06_continual_learning-avx2-pinned")
    assert f'claim (a) read "{native6["claim_a"]}" where the pinned run reads "{pinned6["claim_a"]}"' in readme
