"""The LLM-Adapters format: data files, the Alpaca prompt, label masking, answer extraction.

commonsense_170k and the per-task test files are JSON lists of {"instruction", "input", "output",
"answer"} records; `output` reads like "the correct answer is X". The same loaders read the real files
(paper profile) and the synthetic ones (offline profile), through `datasets`, exactly alike, and check every
record first (check_records: the fields, and each answer against the task table), so that a bad record stops the
load with its file, index and field instead of training on "None" or never being scored right.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# ----------------------------------------------------------------------------------------------
# The eight commonsense tasks: one table, and the records written from it
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One commonsense task as LLM-Adapters writes it: `prefix` and the question, the options listed as
    "Solution1: ...", the answers "solution1", "solution2", ... (boolq, without `word`: true/false)."""
    prefix: str
    word: str          # the answer word ("solution"); "" for boolq
    n_options: int     # the real task's (most of its items: ARC has a few of 3 and 5)
    regex: str         # the valid answers, as LLM-Adapters extracts them (first match wins)
    between: str = " "          # between two options: one line for all but PIQA
    before_format: str = "\n\n"  # before "Answer format": WinoGrande's follows its options on their line

    @property
    def label(self) -> str:
        """How the options are listed: "Solution1: ..."."""
        return self.word.capitalize()


_ANSWER = "Please choose the correct answer to the question: "
_ANSWERS = r"answer1|answer2|answer3|answer4|answer5"

# The eight commonsense tasks of LLM-Adapters, under their folder names; the spacing is that of its
# test files and of commonsense_170k (tests/lab/fixtures/llm_adapters_records.json holds records of each).
TASKS = {
    "boolq": Task("Please answer the following question with true or false, question: ", "", 2, r"true|false"),
    "piqa": Task("Please choose the correct solution to the question: ", "solution", 2, r"solution1|solution2",
                 between="\n\n"),
    "social_i_qa": Task(_ANSWER, "answer", 3, _ANSWERS),
    "hellaswag": Task("Please choose the correct ending to complete the given sentence: ", "ending", 4,
                      r"ending1|ending2|ending3|ending4"),
    "winogrande": Task("Please choose the correct answer to fill in the blank to complete the given sentence: ",
                       "option", 2, r"option1|option2", before_format=" "),
    "ARC-Easy": Task(_ANSWER, "answer", 4, _ANSWERS),
    "ARC-Challenge": Task(_ANSWER, "answer", 4, _ANSWERS),
    "openbookqa": Task(_ANSWER, "answer", 4, _ANSWERS),
}
COMMONSENSE_TASKS = {name: t.regex for name, t in TASKS.items()}
# The answers each task can be scored right on: what extract_answer can return (ARC's 5-option items included).
LABELS = {name: tuple(t.regex.split("|")) for name, t in TASKS.items()}

# Chance accuracy of each task with its usual number of options (the offline stand-ins have as many).
# A test file's own chance, item by item, is chance_of(records): ARC's few 3- and 5-option items move it.
CHANCE = {name: 1 / t.n_options for name, t in TASKS.items()}
CHANCE["average"] = sum(CHANCE.values()) / len(CHANCE)


def commonsense_record(task: str, question: str, options, answer) -> dict:
    """One record of `task`, spaced as LLM-Adapters' files are. `answer`: the 1-based index of the
    correct option, or for boolq (no options) the truth as a bool."""
    t = TASKS[task]
    listed = "\n\n" + t.between.join(f"{t.label}{i}: {o}" for i, o in enumerate(options, 1)) if options else ""
    words = [f"{t.word}{i}" for i in range(1, len(options) + 1)] if t.word else ["true", "false"]
    answer = f"{t.word}{answer}" if t.word else ("true" if answer else "false")
    return {"instruction": f"{t.prefix}{question}{listed}{t.before_format}Answer format: {'/'.join(words)}",
            "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def chance_of(records, limit: int | None = None) -> float:
    """Chance accuracy on `records` (of one task; the first `limit`): the mean of 1/(number of options),
    each read from its instruction's "Answer format: a/b/c" line."""
    ks = [len(r["instruction"].rsplit("Answer format: ", 1)[1].split("/")) for r in records][:limit]
    return float(sum(Fraction(1, k) for k in ks) / len(ks))  # exact: k options each give 1/k, as CHANCE


# ----------------------------------------------------------------------------------------------
# Loaders: the same for the synthetic folder and the real one
# ----------------------------------------------------------------------------------------------

REQUIRED_KEYS = ("instruction", "input", "output", "answer")
TRAIN_FILE = "ft-training_set/commonsense_170k.json"  # in the data folder

DOWNLOAD_HINT = {
    "commonsense": "Run `python -m lab.data` (or `make data`) once on a machine with hub access: it writes "
                   f"{TRAIN_FILE} and dataset/<task>/test.json for the eight tasks under "
                   "data/LLM-Adapters, the paper profile's data_dir. Or copy them from a clone of the LLM-Adapters "
                   "repository (github.com/AGI-Edgerunners/LLM-Adapters) into {data_dir} in the same layout.",
    "math": "Run `python -m lab.data` (or `make data`) once on a machine with hub access: it writes "
            "ft-training_set/MetaMathQA-40K.json (meta-math/MetaMathQA, first 40k) and dataset/gsm8k/test.json "
            "(openai/gsm8k) under data/LLM-Adapters.",
}


# What a record must hold, by the kind of file (None: a training file of either kind, as lab.finetune reads it).
# Every field is a string; an arithmetic answer may also be a JSON number (is_correct reads str(answer)). Empty
# `output`s occur in LLM-Adapters' own arithmetic files (all of mawps' test set, six of gsm8k's, three records of
# math_data.json), never in its commonsense files; `input` is empty in all of them.
NOT_EMPTY = {"commonsense": ("instruction", "output"), "math": ("instruction",), None: ("instruction",)}
SHOWN = 5  # bad records a load error lists; it counts the rest
_RECORD = "{" + ", ".join(f'"{k}": "..."' for k in REQUIRED_KEYS) + "}"
_SHAPE = f"a JSON list of {_RECORD} records (strings; \"input\" may be empty)"
_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}

# The tasks an instruction's prefix tells apart (ARC-Easy, ARC-Challenge, openbookqa and social_i_qa share a prefix,
# and their labels), and the labels of each prefix.
_PREFIX_TASKS = {t.prefix: [n for n, u in TASKS.items() if u.prefix == t.prefix] for t in TASKS.values()}
_PREFIX_LABELS = {p: tuple(dict.fromkeys(w for n in names for w in LABELS[n])) for p, names in _PREFIX_TASKS.items()}
_ANY_LABEL = tuple(dict.fromkeys(w for ws in LABELS.values() for w in ws))


def _test_task(path: Path) -> str | None:
    """The folder name of a test file in LLM-Adapters' layout (dataset/<task>/test.json); None for any other file."""
    return path.parent.name if path.name == "test.json" and path.parent.parent.name == "dataset" else None


def _is_number(v) -> bool:
    """Whether is_correct can compare a generated number with `v` (a finite number; a string may have commas)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return False
    try:
        return abs(float(str(v).replace(",", ""))) < float("inf")
    except ValueError:
        return False


def _show(v) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _labels_of(record: dict, task: str | None, kind: str | None):
    """(whose, labels) a record's answer must be one of, or None: a commonsense task's test file takes that task's
    labels; elsewhere a record whose instruction opens with a task's prefix takes that task's, and in a commonsense
    file the others take any task's."""
    if task in LABELS:
        return task, LABELS[task]
    if isinstance(record.get("instruction"), str):
        for prefix, labels in _PREFIX_LABELS.items():
            if record["instruction"].startswith(prefix):
                return f"{'/'.join(_PREFIX_TASKS[prefix])} (its instruction's prefix)", labels
    return ("any commonsense task", _ANY_LABEL) if kind == "commonsense" else None


def _answer_problem(record: dict, task: str | None, kind: str | None) -> str | None:
    """What is wrong with a record's answer, or None: one of its labels (_labels_of) if it has any; else, in an
    arithmetic test file, a number is_correct can read; else (a training file) any string or number."""
    v, whose = record["answer"], _labels_of(record, task, kind)
    if whose:
        if v in whose[1]:  # labels are strings: a JSON true is none of them
            return None
        return f"{_show(v)} is not an answer of {whose[0]}: {'/'.join(whose[1])}; write one of them, as a string"
    if kind == "math" and task:
        return None if _is_number(v) else (f"{_show(v)} is not a number is_correct can read; write the number "
                                           f"alone, e.g. \"18\" or \"-2.5\"")
    return None if isinstance(v, (str, int, float)) and not isinstance(v, bool) else f"{_show(v)}: write a string"


def check_records(records, path, kind: str | None = "commonsense") -> None:
    """Raise a ValueError unless `records` (a file's parsed JSON) is a list of LLM-Adapters records for a file of
    `kind` at `path` (NOT_EMPTY, _answer_problem). The error names the file and, for the first SHOWN bad records,
    the record's index, the field and the fix; it counts the rest."""
    path = Path(path)
    if not isinstance(records, list):
        held = f"a JSON {_JSON_TYPES.get(type(records), type(records).__name__)}"
        if isinstance(records, dict):
            held = f"a JSON object with keys {sorted(records)[:6]}"
            if records and all(isinstance(v, list) for v in records.values()):
                held += ", a list per field: write one object per record instead"
        raise ValueError(f"{path} is not in the LLM-Adapters format: it holds {held}; expected {_SHAPE}")
    task, not_empty = _test_task(path), NOT_EMPTY[kind]
    bad = []
    for i, r in enumerate(records):
        if type(r) is not dict:
            bad.append(f"record {i}: {_show(r)} is not an object; write it as {_RECORD}")
            continue
        for k in REQUIRED_KEYS:
            if k not in r:
                problem = "missing; add it, a string" + (' ("" if there is no input)' if k == "input" else "")
            elif k == "answer":
                problem = _answer_problem(r, task, kind)
            elif type(r[k]) is not str:
                problem = f"{_show(r[k])} is not a string; write one"
            elif k in not_empty and not r[k].strip():
                problem = "empty; write it"
            else:
                continue
            if problem:
                bad.append(f"record {i}, field {k!r}: {problem}")
    if bad:
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise ValueError(f"{path} is not in the LLM-Adapters format ({_SHAPE}): {len(bad)} bad field(s)\n  "
                         + "\n  ".join(bad[:SHOWN]) + more)


_CHECKED = set()  # (path, size, mtime, kind) of the files checked in this process


def _check_file(path: Path, kind: str | None) -> None:
    """check_records on the file's JSON, parsed by plain json, once per version of the file and kind in a process
    (datasets then reads it again, into Arrow, which it caches on the same path and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind)
    if key in _CHECKED:
        return
    try:
        records = json.loads(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path} is not in the LLM-Adapters format ({_SHAPE}): it is not JSON: {e}") from e
    check_records(records, path, kind)
    _CHECKED.add(key)


def load_json_records(path, kind: str | None = "commonsense"):
    """Read one LLM-Adapters JSON file with `datasets`, once its records are checked (check_records). `kind`:
    "commonsense", "math", or None for a training file of either (lab.finetune's)."""
    import datasets

    path = Path(path)
    if not path.is_file():
        hint = DOWNLOAD_HINT[kind] if kind else "\n".join(DOWNLOAD_HINT.values())
        raise FileNotFoundError(f"data file not found: {path}\n" + hint.format(data_dir=path.parent))
    _check_file(path, kind)
    try:
        return datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 - whatever else datasets cannot read, named with the file
        raise ValueError(f"{path}: datasets could not read it: {type(e).__name__}: {e}") from e


def load_commonsense(data_dir, train_file: str = TRAIN_FILE,
                     tasks=tuple(COMMONSENSE_TASKS), split: str = "both"):
    """(train dataset, {task: test dataset}) from a folder in LLM-Adapters' layout."""
    data_dir = Path(data_dir)
    train = load_json_records(data_dir / train_file) if split in ("both", "train") else None
    tests = {t: load_json_records(data_dir / "dataset" / t / "test.json") for t in tasks} if split in ("both", "test") else None
    return train, tests


def math_records(ds, source: str = "dataset"):
    """A `datasets.Dataset` of MetaMathQA's {query, response} or GSM8K's {question, answer "... #### N"}
    as LLM-Adapters records (MetaMathQA's responses end "The answer is: N"); four-field records as they are."""
    cols = set(ds.column_names)
    if set(REQUIRED_KEYS) <= cols:
        return ds
    if {"query", "response"} <= cols:      # MetaMathQA
        return ds.map(lambda e: {"instruction": e["query"], "input": "", "output": e["response"],
                                 "answer": e["response"].split("The answer is:")[-1].strip()}, remove_columns=list(cols))
    if {"question", "answer"} <= cols:     # GSM8K
        return ds.map(lambda e: {"instruction": e["question"], "input": "",
                                 "output": e["answer"].split("####")[0].strip() + " The answer is " + e["answer"].split("####")[-1].strip(),
                                 "answer": e["answer"].split("####")[-1].strip().replace(",", "")}, remove_columns=list(cols))
    raise ValueError(f"{source}: unknown format with columns {sorted(cols)}; expected LLM-Adapters "
                     f"{list(REQUIRED_KEYS)}, MetaMathQA (query, response) or GSM8K (question, answer)")


# ----------------------------------------------------------------------------------------------
# The prompt and tokenisation
# ----------------------------------------------------------------------------------------------

def generate_prompt(example: dict, with_output: bool = True) -> str:
    """The Alpaca template LLM-Adapters trains and evaluates with."""
    out = example["output"] if with_output else ""
    if example.get("input"):
        return ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{example['instruction']}\n\n### Input:\n{example['input']}\n\n### Response:\n{out}")
    return ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{example['instruction']}\n\n### Response:\n{out}")


def tokenize_example(example: dict, tokenizer, cutoff_len: int = 256, train_on_inputs: bool = False) -> dict:
    """input_ids / attention_mask / labels for one example, truncated to `cutoff_len`, EOS appended.

    With train_on_inputs=False the prompt's labels are -100: the loss is on the response only."""
    ids = tokenizer(generate_prompt(example), truncation=True, max_length=cutoff_len)["input_ids"]
    if len(ids) < cutoff_len and ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    labels = list(ids)
    if not train_on_inputs:
        n_prompt = len(tokenizer(generate_prompt(example, with_output=False), truncation=True, max_length=cutoff_len)["input_ids"])
        labels[:n_prompt] = [-100] * n_prompt
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


# ----------------------------------------------------------------------------------------------
# Answer extraction
# ----------------------------------------------------------------------------------------------

def extract_answer(task: str, text: str) -> str:
    """LLM-Adapters' commonsense extraction: the first match of the task's answer words ('' if none)."""
    # exercise 5.1: re.findall with the task's pattern in COMMONSENSE_TASKS; the first match, or ''
    found = re.findall(COMMONSENSE_TASKS[task], text.strip())
    return found[0] if found else ""
    # end exercise


def extract_number(text: str) -> float:
    """LLM-Adapters' arithmetic extraction: drop commas, take the last number (inf if none)."""
    # exercise 5.2: remove the commas, find every (signed, decimal) number, return the last as a float
    found = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
    return float(found[-1]) if found else float("inf")
    # end exercise


def is_correct(task: str, generated: str, answer: str) -> bool:
    if task in COMMONSENSE_TASKS:
        return extract_answer(task, generated) == answer
    return abs(extract_number(generated) - float(str(answer).replace(",", ""))) <= 1e-3
