"""lab.formats: the LLM-Adapters format: task table, loaders and their errors, prompt and labels, answer extraction."""

import json
from fractions import Fraction
from pathlib import Path

import pytest

import lab


# ---------------------------------------------------------------------------------------------
# The task table and records
# ---------------------------------------------------------------------------------------------


def test_the_task_table_keeps_answer_words_and_chance():
    from lab.formats import CHANCE, COMMONSENSE_TASKS, TASKS

    answers = r"answer1|answer2|answer3|answer4|answer5"
    assert COMMONSENSE_TASKS == {
        "boolq": r"true|false", "piqa": r"solution1|solution2", "social_i_qa": answers,
        "hellaswag": r"ending1|ending2|ending3|ending4", "winogrande": r"option1|option2",
        "ARC-Easy": answers, "ARC-Challenge": answers, "openbookqa": answers}
    assert list(TASKS) == list(COMMONSENSE_TASKS)
    per_task = {"boolq": 1 / 2, "piqa": 1 / 2, "social_i_qa": 1 / 3, "hellaswag": 1 / 4, "winogrande": 1 / 2,
                "ARC-Easy": 1 / 4, "ARC-Challenge": 1 / 4, "openbookqa": 1 / 4}
    assert CHANCE == {**per_task, "average": sum(per_task.values()) / 8}


def test_commonsense_record_writes_the_llm_adapters_format():
    from lab.formats import commonsense_record

    assert commonsense_record("piqa", "To open a jar", ["twist the lid", "hit it"], 2) == {
        "instruction": "Please choose the correct solution to the question: To open a jar\n\n"
                       "Solution1: twist the lid\n\nSolution2: hit it\n\nAnswer format: solution1/solution2",
        "input": "", "output": "the correct answer is solution2", "answer": "solution2"}
    assert commonsense_record("social_i_qa", "Who?", ["a", "b", "c"], 1)["instruction"] == (
        "Please choose the correct answer to the question: Who?\n\nAnswer1: a Answer2: b Answer3: c\n\n"
        "Answer format: answer1/answer2/answer3")
    assert commonsense_record("winogrande", "_ won.", ["Ann", "Bo"], 2)["instruction"].endswith(
        "_ won.\n\nOption1: Ann Option2: Bo Answer format: option1/option2")
    assert commonsense_record("boolq", "is the sky blue?", [], True) == {
        "instruction": "Please answer the following question with true or false, question: is the sky blue?\n\n"
                       "Answer format: true/false",
        "input": "", "output": "the correct answer is true", "answer": "true"}
    assert commonsense_record("boolq", "is it?", [], False)["answer"] == "false"


def test_chance_of_counts_each_items_options():
    from lab.formats import chance_of, commonsense_record

    arc = [commonsense_record("ARC-Challenge", "q", ["x"] * k, 1) for k in (4, 4, 3, 5)]
    assert chance_of(arc) == float(Fraction(1, 4) + Fraction(1, 4) + Fraction(1, 3) + Fraction(1, 5)) / 4


def test_chance_of_the_offline_test_sets_is_the_tasks_chance():
    from lab.formats import CHANCE, chance_of

    _, tests = lab.load_commonsense(lab.offline_data(), split="test")
    assert {t: chance_of(ds) for t, ds in tests.items()} == {t: CHANCE[t] for t in tests}


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def test_json_round_trip_through_datasets(tmp_path):
    records = lab.make_commonsense(2, seed=1) + [{"instruction": "i", "input": "ctx", "output": "o", "answer": "true"}]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(records))
    ds = lab.load_json_records(path)
    assert [dict(r) for r in ds] == records


def test_math_loader_converts_metamath_and_gsm8k(tmp_path):
    (tmp_path / "mm.json").write_text(json.dumps([{"query": "q?", "response": "2+2=4. The answer is: 4", "type": "x",
                                                   "original_question": "q"}]))
    (tmp_path / "gsm.jsonl").write_text(json.dumps({"question": "q?", "answer": "so 1,000+1=1,001\n#### 1,001"}) + "\n")
    import datasets

    from lab.formats import math_records

    def load(name):
        return math_records(datasets.load_dataset("json", data_files=str(tmp_path / name), split="train"))

    mm = load("mm.json")[0]
    assert mm["answer"] == "4" and mm["instruction"] == "q?"
    g = load("gsm.jsonl")[0]
    assert g["answer"] == "1001" and g["output"].endswith("The answer is 1,001")
    assert lab.is_correct("gsm8k", g["output"], g["answer"])


def test_missing_data_file_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="LLM-Adapters"):
        lab.load_commonsense(tmp_path)
    with pytest.raises(FileNotFoundError, match="MetaMathQA"):
        lab.load_json_records(tmp_path / "MetaMathQA-395K.json", kind="math")


TRAIN = "ft-training_set/commonsense_170k.json"
GSM8K = "dataset/gsm8k/test.json"
PIQA = lab.formats.commonsense_record("piqa", "To open a jar", ["twist the lid", "hit it"], 1)
BOOLQ = lab.formats.commonsense_record("boolq", "is the sky blue?", [], True)
SUM = {"instruction": "Sam has 3 dogs and gets 4 more. how many dogs does Sam have now?", "input": "",
       "output": "Sam has 3 dogs and gets 4 more, so Sam has 7 dogs. The answer is 7", "answer": "7"}


def _without(record, field):
    return {k: v for k, v in record.items() if k != field}


# One kind of bad record each: (file in the data folder, kind, its records, the index and field the error names)
BAD_RECORDS = {
    "missing field": (TRAIN, "commonsense", [PIQA, _without(PIQA, "output")], 1, "output"),
    "missing field, either kind": (TRAIN, None, [SUM, SUM, _without(SUM, "instruction")], 2, "instruction"),
    "non-string field": (TRAIN, "commonsense", [{**PIQA, "input": None}], 0, "input"),
    "empty instruction": (GSM8K, "math", [SUM, {**SUM, "instruction": " "}], 1, "instruction"),
    "record not an object": (TRAIN, "commonsense", [PIQA, "solution1"], 1, None),
    "answer outside the test task's labels": ("dataset/piqa/test.json", "commonsense",  # winogrande's; no prefix
                                              [PIQA, {**SUM, "answer": "option1"}], 1, "answer"),
    "JSON true, not the label": ("dataset/boolq/test.json", "commonsense", [{**BOOLQ, "answer": True}], 0, "answer"),
    "answer of another task than its instruction's": (TRAIN, None, [SUM, {**PIQA, "answer": "true"}], 1, "answer"),
    "answer of no task": (TRAIN, "commonsense", [PIQA, {**SUM, "answer": "yes"}], 1, "answer"),
    "arithmetic answer not a number": (GSM8K, "math", [SUM, SUM, {**SUM, "answer": "$7"}], 2, "answer"),
    "arithmetic answer a list": ("dataset/SVAMP/test.json", "math", [{**SUM, "answer": [7.0]}], 0, "answer"),
}


def _write(folder: Path, rel: str, obj) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_bad_record_is_named_with_its_file_index_and_field(tmp_path, case):
    rel, kind, records, index, field = BAD_RECORDS[case]
    path = _write(tmp_path, rel, records)
    with pytest.raises(ValueError) as e:
        lab.load_json_records(path, kind)
    where = f"record {index}, field {field!r}: " if field else f"record {index}: "
    named = [line.split(where, 1)[1] for line in str(e.value).splitlines() if where in line]
    assert str(path) in str(e.value) and len(named) == 1 and "; " in named[0], str(e.value)  # "<what is wrong>; <fix>"


@pytest.mark.parametrize("content,held", [
    ({k: [v, v] for k, v in BOOLQ.items()}, "a list per field"),
    ("a string", "a JSON string"),
    (3, "a JSON number"),
])
def test_a_file_that_is_no_list_of_records_says_what_it_holds(tmp_path, content, held):
    path = _write(tmp_path, TRAIN, content)
    with pytest.raises(ValueError, match="expected a JSON list of {\"instruction\"") as e:
        lab.load_json_records(path)
    assert str(path) in str(e.value) and held in str(e.value)


def test_a_file_that_is_not_json_is_named(tmp_path):
    (tmp_path / "b.json").write_text("this is not json")
    with pytest.raises(ValueError, match=f"{tmp_path / 'b.json'} is not in the LLM-Adapters format.*not JSON"):
        lab.load_json_records(tmp_path / "b.json")


def test_the_error_lists_the_first_bad_records_and_counts_the_rest(tmp_path):
    from lab.formats import SHOWN

    path = _write(tmp_path, "dataset/boolq/test.json", [{**BOOLQ, "answer": "yes"}] * (SHOWN + 3))
    with pytest.raises(ValueError, match=f"{SHOWN + 3} bad field") as e:
        lab.load_json_records(path)
    assert f"record {SHOWN - 1}, field 'answer'" in str(e.value) and f"record {SHOWN}," not in str(e.value)
    assert str(e.value).endswith("... and 3 more")


def test_a_file_is_checked_again_once_rewritten(tmp_path):
    path = _write(tmp_path, TRAIN, [PIQA])
    assert len(lab.load_json_records(path)) == 1
    _write(tmp_path, TRAIN, [_without(PIQA, "output")])
    with pytest.raises(ValueError, match="record 0, field 'output'"):
        lab.load_json_records(path)


def test_llm_adapters_records_pass():
    """The fixture's verbatim records as each task's test file and as one training file, and the answers of
    LLM-Adapters' arithmetic files in every form they take ("480.0", "7", "0.75", a negative; AQuA's letters and
    MetaMathQA's LaTeX in training files, which only train on `output`; an empty `output`, as in mawps), and the
    answer5 of ARC's 5-option items."""
    from lab.formats import check_records, commonsense_record

    fixture = json.loads((Path(__file__).parent / "fixtures" / "llm_adapters_records.json").read_text())
    tests = {task: [item["record"] for item in items] for task, items in fixture["tasks"].items()}
    for task, records in tests.items():
        check_records(records, f"data/dataset/{task}/test.json", "commonsense")
    for kind in ("commonsense", None):
        check_records([r for records in tests.values() for r in records], f"data/{TRAIN}", kind)
    check_records([{**SUM, "answer": a} for a in ("480.0", "7", "0.75", "-2", "1,001", 18)] + [{**SUM, "output": ""}],
                  f"data/{GSM8K}", "math")
    for kind in ("math", None):
        check_records([{**SUM, "answer": a} for a in ("A", "\\frac{1}{4}", "", 7)], "data/math_10k.json", kind)
    five = commonsense_record("ARC-Easy", "Which?", list("abcde"), 5)
    check_records([five], "data/dataset/ARC-Easy/test.json", "commonsense")


def test_download_hints_name_the_command():
    assert "python -m lab.data" in lab.formats.DOWNLOAD_HINT["commonsense"]
    assert "python -m lab.data" in lab.formats.DOWNLOAD_HINT["math"]
    with pytest.raises(FileNotFoundError, match="python -m lab.data"):
        lab.load_json_records("/nonexistent/dataset/boolq/test.json")


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


@pytest.mark.exercise5
@pytest.mark.parametrize("task,text,want", [
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "false. no wait, true", "false"),             # first match wins
    ("boolq", "True", ""),                                   # case-sensitive, as LLM-Adapters
    ("piqa", "solution3 solution2", "solution2"),
    ("social_i_qa", "the correct answer is answer5", "answer5"),
    ("ARC-Challenge", "answer12", "answer1"),               # the regex has no word boundary
    ("hellaswag", "ending5 ending4", "ending4"),
    ("winogrande", "option 1", ""),
    ("openbookqa", "", ""),
])
def test_commonsense_extraction(task, text, want):
    got = lab.extract_answer(task, text)
    assert got == want, (f"extract_answer({task!r}, {text!r}) should be {want!r} (the first match of the task's "
                         f"pattern in COMMONSENSE_TASKS, '' if none), got {got!r}")


@pytest.mark.exercise5
@pytest.mark.parametrize("text,want", [
    ("The answer is 42", 42.0),
    ("3 + 4 = 7. The answer is 7", 7.0),
    ("costs 1,234.5 dollars", 1234.5),
    ("from -3 to -8", -8.0),
    ("no number", float("inf")),
])
def test_number_extraction(text, want):
    got = lab.extract_number(text)
    assert got == want, (f"extract_number({text!r}) should be {want!r} (commas removed, the last signed or decimal "
                         f"number, inf if none), got {got!r}")


@pytest.mark.exercise5
def test_arithmetic_correctness_tolerance():
    assert lab.is_correct("gsm8k", "The answer is 7.0005", "7"), "7.0005 is within 1e-3 of 7: it should count as correct"
    assert not lab.is_correct("gsm8k", "The answer is 7.01", "7"), "7.01 is 0.01 from 7: it should count as wrong"
    assert not lab.is_correct("gsm8k", "I cannot say", "7"), (
        "a text without a number should count as wrong (extract_number gives inf when it finds none)")


# ---------------------------------------------------------------------------------------------
# Prompts and tokenisation
# ---------------------------------------------------------------------------------------------


def test_prompt_template_and_label_masking(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny / "model")
    ex = lab.make_commonsense(1, seed=2)[0]
    prompt = lab.generate_prompt(ex, with_output=False)
    assert prompt.startswith("Below is an instruction that describes a task.") and prompt.endswith("### Response:\n")
    assert "### Input:" in lab.generate_prompt({**ex, "input": "ctx"})
    t = lab.tokenize_example(ex, tok, cutoff_len=256, train_on_inputs=False)
    assert t["input_ids"][0] == tok.bos_token_id and t["input_ids"][-1] == tok.eos_token_id
    trained = [i for i, l in zip(t["input_ids"], t["labels"]) if l != -100]
    assert tok.decode(trained, skip_special_tokens=True) == ex["output"]
    assert trained[-1] == tok.eos_token_id
    assert t["labels"][:len(tok(prompt)["input_ids"])] == [-100] * len(tok(prompt)["input_ids"])
    full = lab.tokenize_example(ex, tok, cutoff_len=256, train_on_inputs=True)
    assert full["labels"] == full["input_ids"]
    cut = lab.tokenize_example(ex, tok, cutoff_len=20, train_on_inputs=False)
    assert len(cut["input_ids"]) == 20 and all(l == -100 for l in cut["labels"])  # prompt longer than cutoff
