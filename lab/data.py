"""Fetch the paper profile's data once and write it in the LLM-Adapters layout (hub access needed).

    python -m lab.data                         # everything -> data/LLM-Adapters (the paper profile's data_dir)
    make data                                  # the same
    python -m lab.data --only math --force     # one group again (commonsense, tests, math)
    python -m lab.data --out /scratch/LLM-Adapters

What it writes (the layout lab.formats.load_commonsense and lab.continual read):

    <out>/ft-training_set/commonsense_170k.json   zwhe99/commonsense_170k: a hub copy of LLM-Adapters'
                                                  file, already {instruction, input, output, answer}
    <out>/dataset/<task>/test.json                the eight test sets, converted from their original
                                                  hub datasets into LLM-Adapters' prompts (TESTS below)
    <out>/ft-training_set/MetaMathQA-40K.json     meta-math/MetaMathQA, its first 40k records
    <out>/dataset/gsm8k/test.json                 openai/gsm8k ("main", test: 1319 problems)

Relative `--out` paths follow the harness's path rule (lab.cache.resolve: from the repository root).
A file already there is kept (use --force to rewrite it). The test sets are built from the original
datasets with LLM-Adapters' instruction templates and answer words; LLM-Adapters' own files
(github.com/AGI-Edgerunners/LLM-Adapters, dataset/<task>/test.json) are the reference the papers used:
to evaluate on exactly those, copy them over the converted ones.
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

from lab.cache import resolve, write_json
from lab.formats import REQUIRED_KEYS, TRAIN_FILE, commonsense_record, math_records

OUT = "data/LLM-Adapters"  # the paper profile's data_dir (lab.config.PROFILES["paper"])
MATH_FILE = "ft-training_set/MetaMathQA-40K.json"  # lab.continual's paper preset reads this one
GSM8K_FILE = "dataset/gsm8k/test.json"
N_MATH = 40_000

# ----------------------------------------------------------------------------------------------
# Converters: one record of each source format -> LLM-Adapters' four fields
# ----------------------------------------------------------------------------------------------


def boolq(e: dict) -> dict:
    """google/boolq {question, answer: bool, passage} (super_glue's {label: 0/1} too). LLM-Adapters asks
    the question alone, without the passage."""
    q = e["question"].strip()
    return commonsense_record("boolq", q if q.endswith("?") else q + "?", [], e["answer"] if "answer" in e else e["label"])


def piqa(e: dict) -> dict:
    """ybisk/piqa {goal, sol1, sol2, label: 0/1}."""
    return commonsense_record("piqa", e["goal"], [e["sol1"], e["sol2"]], int(e["label"]) + 1)


def social_i_qa(e: dict) -> dict:
    """allenai/social_i_qa {context, question, answerA/B/C, label: "1".."3"}."""
    return commonsense_record("social_i_qa", f"{e['context']} {e['question']}", [e["answerA"], e["answerB"], e["answerC"]],
                              int(e["label"]))


def hellaswag(e: dict) -> dict:
    """Rowan/hellaswag {activity_label, ctx, endings[4], label: "0".."3"}."""
    return commonsense_record("hellaswag", f"{e['activity_label']}: {e['ctx']}", e["endings"], int(e["label"]) + 1)


def winogrande(e: dict) -> dict:
    """allenai/winogrande {sentence with "_", option1, option2, answer: "1"/"2"}."""
    return commonsense_record("winogrande", e["sentence"], [e["option1"], e["option2"]], int(e["answer"]))


def multiple_choice(e: dict, task: str) -> dict:
    """allenai/ai2_arc {question, choices: {text, label}, answerKey} and allenai/openbookqa (question_stem)."""
    labels = list(e["choices"]["label"])
    return commonsense_record(task, e.get("question_stem") or e["question"], e["choices"]["text"],
                              labels.index(e["answerKey"]) + 1)


# task folder -> (hub dataset, config, split, converter). The splits LLM-Adapters evaluates on:
# BoolQ, PIQA, SIQA, HellaSwag, WinoGrande have no public test labels, so their validation sets.
TESTS = {
    "boolq":         ("google/boolq", None, "validation", boolq),                  # 3270
    "piqa":          ("ybisk/piqa", None, "validation", piqa),                     # 1838
    "social_i_qa":   ("allenai/social_i_qa", None, "validation", social_i_qa),     # 1954
    "hellaswag":     ("Rowan/hellaswag", None, "validation", hellaswag),           # 10042
    "winogrande":    ("allenai/winogrande", "winogrande_xl", "validation", winogrande),  # 1267
    "ARC-Easy":      ("allenai/ai2_arc", "ARC-Easy", "test", partial(multiple_choice, task="ARC-Easy")),            # 2376
    "ARC-Challenge": ("allenai/ai2_arc", "ARC-Challenge", "test", partial(multiple_choice, task="ARC-Challenge")),  # 1172
    "openbookqa":    ("allenai/openbookqa", "main", "test", partial(multiple_choice, task="openbookqa")),         # 500
}
TRAIN = ("zwhe99/commonsense_170k", None, "train")
MATH = ("meta-math/MetaMathQA", None, "train")
GSM8K = ("openai/gsm8k", "main", "test")
GROUPS = ("commonsense", "tests", "math")


# ----------------------------------------------------------------------------------------------
# Reading from the hub
# ----------------------------------------------------------------------------------------------


class HubUnavailable(RuntimeError):
    pass


def hub_load(name: str, config: str | None, split: str):
    """datasets.load_dataset(name, config, split); a dataset still built by a loading script (which
    datasets >= 4 refuses) is read from the hub's Parquet conversion (revision refs/convert/parquet)."""
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as first:  # noqa: BLE001 - one retry on the parquet branch, then a clear message
        try:
            return datasets.load_dataset(name, config or "default", split=split, revision="refs/convert/parquet")
        except Exception:  # noqa: BLE001
            raise HubUnavailable(
                f"could not load {name}{'/' + config if config else ''} (split {split}) from the Hugging Face hub: "
                f"{type(first).__name__}: {str(first).splitlines()[0][:300] if str(first) else ''}\n"
                "  - this needs network access to huggingface.co (or HF_ENDPOINT set to a mirror), and "
                "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE unset;\n"
                "  - log in once with `hf auth login` if the hub asks for a token;\n"
                "  - without hub access: copy LLM-Adapters' files (github.com/AGI-Edgerunners/LLM-Adapters: "
                f"{TRAIN_FILE}, dataset/<task>/test.json) into {OUT}, and MetaMathQA / GSM8K as "
                f"{MATH_FILE} / {GSM8K_FILE}, in the same layout.") from first


def _records(ds, convert=None) -> list[dict]:
    rows = [convert(dict(e)) if convert else {k: e[k] for k in REQUIRED_KEYS} for e in ds]
    bad = [r for r in rows[:5] if any(not isinstance(r[k], str) for k in REQUIRED_KEYS)]
    if bad:
        raise ValueError(f"converted records are not four strings: {bad[0]}")
    return rows


# ----------------------------------------------------------------------------------------------
# The fetch
# ----------------------------------------------------------------------------------------------


def fetch(out=OUT, groups=GROUPS, force: bool = False, n_math: int = N_MATH, load=hub_load, log=print) -> Path:
    """Write every file of `groups` under `out` (the path rule); `load(name, config, split)` returns a
    `datasets.Dataset` (the hub by default; the tests pass fixture files). Returns the folder."""
    out = resolve(out)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}: choose from {GROUPS}")

    def write(rel: str, make) -> None:
        path = out / rel
        if path.is_file() and not force:
            log(f"  kept     {rel} (exists; --force rewrites it)")
            return
        t0 = time.time()
        rows = make()
        write_json(path, rows)
        log(f"  wrote    {rel}: {len(rows)} records ({time.time() - t0:.0f} s)")

    log(f"writing the paper profile's data under {out}")
    if "commonsense" in groups:
        write(TRAIN_FILE, lambda: _records(load(*TRAIN)))
    if "tests" in groups:
        for task, (name, config, split, convert) in TESTS.items():
            write(f"dataset/{task}/test.json", lambda: _records(load(name, config, split), convert))
    if "math" in groups:
        def metamath():
            ds = load(*MATH)
            return _records(math_records(ds.select(range(min(n_math, len(ds)))), MATH[0]))
        write(MATH_FILE, metamath)
        write(GSM8K_FILE, lambda: _records(math_records(load(*GSM8K), GSM8K[0])))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.data", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=OUT, help=f"target folder (default {OUT}, relative to the repo root)")
    p.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {','.join(GROUPS)}")
    p.add_argument("--force", action="store_true", help="rewrite files that exist")
    p.add_argument("--n-math", type=int, default=N_MATH, help="MetaMathQA records to keep (the first n)")
    a = p.parse_args(argv)
    try:
        fetch(a.out, tuple(g for g in a.only.split(",") if g), a.force, a.n_math)
    except HubUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
