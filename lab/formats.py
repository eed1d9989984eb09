"""The LLM-Adapters format: data files, the Alpaca prompt, label masking, answer extraction.

commonsense_170k and the per-task test files are JSON lists of {"instruction", "input", "output",
"answer"} records; `output` reads like "the correct answer is X". The same loaders read the real files
(paper profile) and the synthetic ones (offline profile), through `datasets`, exactly alike.
"""
from __future__ import annotations

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


def load_json_records(path, kind: str = "commonsense"):
    """Read one LLM-Adapters JSON file with `datasets`, checking that it has the four fields."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}\n" + DOWNLOAD_HINT[kind].format(data_dir=path.parent))
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as e:  # not JSON, or not a list of records
        raise ValueError(f"{path} is not in the LLM-Adapters format (a JSON list of {{{', '.join(REQUIRED_KEYS)}}} "
                         f"records): {type(e).__name__}: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in ds.column_names]
    if missing:
        raise ValueError(f"{path} is not in the LLM-Adapters format: records lack {missing} "
                         f"(found columns {ds.column_names}; expected {list(REQUIRED_KEYS)})")
    return ds


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
