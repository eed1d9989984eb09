"""The measurements behind benchmarks/README.md's statements on other offline bases: each results file is a
run of benchmarks/offline_world.py with three seeds per method.

* other pre-training seeds: on each, at least one adapter's average stays below the floor of notebook 05;
* word problems in pre-training: the commonsense criteria hold, and which methods' plasticity spans 20 points."""
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "benchmarks" / "results").glob("offline_world-base-seed*.json"))


def test_the_readme_names_every_base_seed_result_and_no_other():
    readme = (REPO / "benchmarks" / "README.md").read_text()
    named = set(re.findall(r"results/(offline_world-base-seed\d+\.json)", readme))
    assert named and named == {f.name for f in FILES}


def test_on_other_pre_training_seeds_some_adapter_stays_below_the_floor():
    for f in FILES:
        d = json.loads(f.read_text())
        args, cs = d["args"], d["commonsense"]
        seed = int(re.search(r"seed(\d+)", f.name)[1])
        assert json.loads(args["spec"]) == {"seed": seed} and seed != 0 and args["run"] is None, f.name
        assert len(args["seeds"]) >= 3
        floor = max(cs["chance"]["average"], cs["majority"]["average"]) + 15
        adapters = [m for m in args["methods"] if m != "full"]
        below = [m for m in adapters if cs["table"][m]["average"][0] < floor]
        assert below, f"{f.name}: every adapter clears {floor:.1f}"
        assert cs["criteria"]["adapters beat chance and majority by 15"] is False


WORD_PROBLEMS = REPO / "benchmarks" / "results" / "offline_world-word-problems.json"


def test_with_word_problems_in_pre_training_the_named_methods_and_only_they_span_20_points():
    readme = (REPO / "benchmarks" / "README.md").read_text()
    para = readme[readme.index("**Stage 2 and what the base already knows.**"):]
    para = para[: para.index("```")]
    assert WORD_PROBLEMS.name in para
    # the paragraph's statement about the committed base, against notebook 06's results
    assert "in notebook 06 no method's plasticity spans 20 points" in para
    committed = json.loads((REPO / "notebooks" / "results" / "06_continual_learning.json").read_text())
    assert committed["grid"] == "full" and all(v < 20 for v in committed["plasticity_span"].values())
    d = json.loads(WORD_PROBLEMS.read_text())
    args = d["args"]
    assert json.loads(args["spec"]) == {"problem_fraction": 0.2} and args["run"] is None and args["grid"] == "full"
    assert len(args["seeds"]) >= 3 and not args["no_commonsense"] and not args["no_continual"]
    assert all(d["commonsense"]["criteria"].values())
    spans = {m: v["plasticity_span"] for m, v in d["continual"].items()}
    wide = {"abba", "hira", "full"}
    narrow = {"lora", "gralora", "bhra", "bhra_blocknorm"}
    assert set(spans) == wide | narrow
    assert all(spans[m] >= 20 for m in wide) and all(spans[m] < 20 for m in narrow), spans
    names = {"abba": "ABBA", "hira": "HiRA", "full": "full fine-tuning", "lora": "LoRA", "gralora": "GraLoRA",
             "bhra": "BHRA", "bhra_blocknorm": "block-normalised ablation"}
    said_wide = para[para.index("and ABBA"): para.index("span at least 20")]
    said_narrow = para[para.index("while LoRA"): para.index("stay below 20")]
    assert all(names[m] in said_wide for m in wide) and all(names[m] in said_narrow for m in narrow)
