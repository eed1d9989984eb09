"""The measurements behind benchmarks/README.md's statements on other offline bases: each results file is a
run of benchmarks/offline_world.py with three seeds per method, or notebook 06's results file of an earlier state.

* other pre-training seeds: where the criteria of notebook 05 hold, and where an adapter stays below its floor;
* stage 2 before the base read word problems, and at the earlier offline rates: which plasticity spans reached 20."""
import json
import re

from tests.helpers import REPO
FILES = sorted((REPO / "benchmarks" / "results").glob("offline_world-base-seed*.json"))


def test_the_readme_names_every_base_seed_result_and_no_other():
    readme = (REPO / "benchmarks" / "README.md").read_text()
    named = set(re.findall(r"results/(offline_world-base-seed\d+\.json)", readme))
    assert named and named == {f.name for f in FILES}


def test_on_other_pre_training_seeds_the_criteria_hold_where_the_readme_says_and_fail_where_it_says():
    readme = (REPO / "benchmarks" / "README.md").read_text()
    para = readme[readme.index("**The criteria belong to the committed base model"):]
    para = " ".join(para[: para.index("\n\n")].split())
    for f in FILES:
        d = json.loads(f.read_text())
        args, cs = d["args"], d["commonsense"]
        seed = int(re.search(r"seed(\d+)", f.name)[1])
        assert json.loads(args["spec"]) == {"seed": seed} and seed != 0 and args["run"] is None, f.name
        assert len(args["seeds"]) >= 3 and not args["no_commonsense"]
        floor = max(cs["chance"]["average"], cs["majority"]["average"]) + 15
        adapters = [m for m in args["methods"] if m != "full"]
        below = [m for m in adapters if cs["table"][m]["average"][0] < floor]
        said = para[para.index(f"seed {seed}"):]
        said = said[: said.index(f.name)]
        if "criteria hold too" in said:
            assert not below and all(cs["criteria"].values()), f"{f.name}: {below} below {floor:.1f}"
        else:
            assert "stays below the floor" in said, said
            assert below and cs["criteria"]["adapters beat chance and majority by 15"] is False, f.name


WORD_PROBLEMS = REPO / "benchmarks" / "results" / "offline_world-word-problems.json"
NO_WORD_PROBLEMS = REPO / "benchmarks" / "results" / "06_continual_learning-no-word-problems.json"
NAMES = {"abba": "ABBA", "hira": "HiRA", "full": "full fine-tuning", "lora": "LoRA", "gralora": "GraLoRA",
         "bhra": "BHRA", "bhra_blocknorm": "block-normalised ablation"}


def _paragraph() -> str:
    readme = (REPO / "benchmarks" / "README.md").read_text()
    para = readme[readme.index("**Stage 2 and what the base already knows.**"):]
    return para[: para.index("```")]


def test_before_the_base_read_word_problems_no_plasticity_span_reached_20():
    para = _paragraph()
    assert NO_WORD_PROBLEMS.name in para and "no method's plasticity spanned 20 points" in para
    d = json.loads(NO_WORD_PROBLEMS.read_text())
    assert d["grid"] == "full" and len(d["seeds"]) >= 3 and set(d["plasticity_span"]) == set(NAMES)
    assert all(v < 20 for v in d["plasticity_span"].values()), d["plasticity_span"]


def test_at_the_earlier_rates_the_named_methods_and_only_they_spanned_20_points():
    para = _paragraph()
    assert WORD_PROBLEMS.name in para
    d = json.loads(WORD_PROBLEMS.read_text())
    args = d["args"]
    assert json.loads(args["spec"]) == {"problem_fraction": 0.2} and args["run"] is None and args["grid"] == "full"
    assert len(args["seeds"]) >= 3 and not args["no_commonsense"] and not args["no_continual"]
    assert all(d["commonsense"]["criteria"].values()) and "the commonsense criteria held" in para
    spans = {m: v["plasticity_span"] for m, v in d["continual"].items()}
    wide = {"abba", "hira", "full"}
    narrow = {"lora", "gralora", "bhra", "bhra_blocknorm"}
    assert set(spans) == wide | narrow
    assert all(spans[m] >= 20 for m in wide) and all(spans[m] < 20 for m in narrow), spans
    said_wide = para[para.index("criteria held, ABBA"): para.index("spanned at least 20")]
    said_narrow = para[para.index("while LoRA"): para.index("stayed below 20")]
    assert all(NAMES[m] in said_wide for m in wide) and all(NAMES[m] in said_narrow for m in narrow)


def test_notebook_06_now_asserts_every_span_and_its_results_meet_it():
    assert "notebook 06 now asserts that every method's plasticity spans 20 points" in _paragraph()
    d = json.loads((REPO / "notebooks" / "results" / "06_continual_learning.json").read_text())
    assert d["grid"] == "full" and set(d["plasticity_span"]) == set(NAMES)
    assert all(v >= 20 for v in d["plasticity_span"].values()), d["plasticity_span"]
