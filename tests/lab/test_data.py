"""lab.data, offline: every converter on a small fixture file in its source format, and the layout
written is the one lab.formats.load_commonsense and lab.continual read. No hub is reached: the fetch
gets a loader that reads the fixtures with `datasets`, as the hub loader returns them."""
import json
from pathlib import Path

import datasets
import pytest

import lab
from lab import data
from lab.continual import check_data, continual_preset
from lab.formats import is_correct

# One or two records per source, in each hub dataset's own columns.
SOURCES = {
    ("zwhe99/commonsense_170k", None, "train"): [
        {"instruction": "Please answer the following question with true or false, question: is the sky blue?\n\n"
                        "Answer format: true/false", "input": "", "output": "the correct answer is true", "answer": "true"},
    ] * 3,
    ("google/boolq", None, "validation"): [
        {"question": "do iran and afghanistan speak the same language", "answer": True, "passage": "Persian ..."},
        {"question": "is a tomato a vegetable?", "answer": False, "passage": "..."},
    ],
    ("ybisk/piqa", None, "validation"): [
        {"goal": "To open a jar", "sol1": "twist the lid", "sol2": "hit it with a shoe", "label": 0},
    ],
    ("allenai/social_i_qa", None, "validation"): [
        {"context": "Tracy gave Sam a gift.", "question": "How would Sam feel?", "answerA": "sad",
         "answerB": "grateful", "answerC": "angry", "label": "2"},
    ],
    ("Rowan/hellaswag", None, "validation"): [
        {"activity_label": "Removing ice from car", "ctx": "Then, the man writes over the snow covering the window of a car",
         "endings": ["a", "b", "c", "d"], "label": "3"},
    ],
    ("allenai/winogrande", "winogrande_xl", "validation"): [
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
    ],
    ("allenai/ai2_arc", "ARC-Easy", "test"): [
        {"question": "Which is a mammal?", "choices": {"text": ["shark", "whale", "trout", "eel"], "label": ["A", "B", "C", "D"]},
         "answerKey": "B"},
    ],
    ("allenai/ai2_arc", "ARC-Challenge", "test"): [
        {"question": "Pick five", "choices": {"text": ["1", "2", "3", "4", "5"], "label": ["1", "2", "3", "4", "5"]},
         "answerKey": "5"},
    ],
    ("allenai/openbookqa", "main", "test"): [
        {"id": "7-980", "question_stem": "The sun is responsible for",
         "choices": {"text": ["puppies learning", "plants sprouting", "rocks", "night"], "label": ["A", "B", "C", "D"]},
         "answerKey": "B"},
    ],
    ("meta-math/MetaMathQA", None, "train"): [
        {"query": f"What is {i} + 1?", "response": f"{i} + 1 = {i + 1}. The answer is: {i + 1}",
         "type": "GSM_Rephrased", "original_question": "..."} for i in range(5)
    ],
    ("openai/gsm8k", "main", "test"): [
        {"question": "Tom has 1,000 apples and eats 1. How many are left?", "answer": "1000 - 1 = 999\n#### 999"},
    ],
}


@pytest.fixture
def fixtures(tmp_path):
    """Each source as a JSONL file, read back with datasets as the hub loader would return it."""
    files = {}
    for i, (key, rows) in enumerate(SOURCES.items()):
        path = tmp_path / "sources" / f"{i}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(json.dumps(r) for r in rows))
        files[key] = path
    calls = []

    def load(name, config, split):
        calls.append((name, config, split))
        return datasets.load_dataset("json", data_files=str(files[(name, config, split)]), split="train")
    load.calls = calls
    return load


def test_fetch_writes_the_layout_the_harness_reads(tmp_path, fixtures):
    out = data.fetch(tmp_path / "LLM-Adapters", n_math=3, load=fixtures, log=lambda *_: None)
    assert sorted(set(fixtures.calls)) == sorted(SOURCES)           # every source read, nothing else

    train, tests = lab.load_commonsense(out)                        # the paper profile's default train_file
    assert len(train) == 3 and set(tests) == set(lab.COMMONSENSE_TASKS)
    expected = {"boolq": ["true", "false"], "piqa": ["solution1"], "social_i_qa": ["answer2"], "hellaswag": ["ending4"],
                "winogrande": ["option1"], "ARC-Easy": ["answer2"], "ARC-Challenge": ["answer5"], "openbookqa": ["answer2"]}
    for task, ds in tests.items():
        assert ds["answer"] == expected[task], task
        for r in ds:
            assert r["output"] == f"the correct answer is {r['answer']}"
            assert is_correct(task, r["output"], r["answer"]), (task, r)    # the answer words extract back
            assert r["instruction"].rstrip().endswith(r["instruction"].rsplit("Answer format: ", 1)[1])

    boolq = tests["boolq"][0]["instruction"]
    assert "do iran and afghanistan speak the same language?\n\nAnswer format: true/false" in boolq
    assert "Persian" not in boolq                                   # LLM-Adapters asks without the passage
    arc_c = tests["ARC-Challenge"][0]["instruction"]
    assert "Answer5: 5" in arc_c and arc_c.endswith("answer1/answer2/answer3/answer4/answer5")
    assert "Ending4: d" in tests["hellaswag"][0]["instruction"]
    assert tests["hellaswag"][0]["instruction"].startswith(
        "Please choose the correct ending to complete the given sentence: Removing ice from car: Then, the man")

    math = lab.load_json_records(out / data.MATH_FILE, kind="math")
    assert len(math) == 3 and math[2]["answer"] == "3" and math[2]["output"].endswith("The answer is: 3")
    gsm = lab.load_json_records(out / data.GSM8K_FILE, kind="math")
    assert gsm[0]["answer"] == "999" and is_correct("gsm8k", gsm[0]["output"], gsm[0]["answer"])

    # the continual lab's paper preset finds both stages' files there (its stage-2 file is MetaMathQA-40K)
    spec = continual_preset("paper", grid="ci", run=dict(data_dir=str(out)))
    assert spec.task_b_file == data.MATH_FILE and spec.task_b_test == data.GSM8K_FILE
    check_data(spec)


def test_fetch_keeps_existing_files_unless_forced(tmp_path, fixtures):
    out = tmp_path / "d"
    data.fetch(out, groups=("math",), n_math=2, load=fixtures, log=lambda *_: None)
    (out / data.GSM8K_FILE).write_text("[]")
    data.fetch(out, groups=("math",), n_math=2, load=fixtures, log=lambda *_: None)
    assert (out / data.GSM8K_FILE).read_text() == "[]"
    data.fetch(out, groups=("math",), n_math=2, force=True, load=fixtures, log=lambda *_: None)
    assert len(json.loads((out / data.GSM8K_FILE).read_text())) == 1
    with pytest.raises(ValueError, match="unknown group"):
        data.fetch(out, groups=("nope",), load=fixtures)


def test_relative_out_follows_the_path_rule():
    assert data.fetch.__defaults__[0] == data.OUT == lab.PROFILES["paper"]["data_dir"]
    assert lab.resolve(data.OUT) == lab.REPO / "data" / "LLM-Adapters"


def test_no_hub_gives_a_message_naming_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache", raising=False)
    rc = data.main(["--out", str(tmp_path / "x"), "--only", "math"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "meta-math/MetaMathQA" in err and "hf auth login" in err and "LLM-Adapters" in err
    assert not (tmp_path / "x" / data.MATH_FILE).exists()


def test_converters_give_llm_adapters_test_records_back_whole():
    """Records of LLM-Adapters' own test files (the fixture names their source), rebuilt from their fields
    in the hub datasets' schema: the whole strings must match, spacing and answer words included."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "llm_adapters_records.json").read_text())
    assert list(fixture["tasks"]) == list(data.TESTS)
    for task, items in fixture["tasks"].items():
        convert = data.TESTS[task][3]
        for item in items:
            assert convert(item["hub"]) == item["record"], (task, item["index"])
    arc_sizes = {len(i["hub"]["choices"]["text"]) for i in fixture["tasks"]["ARC-Challenge"]}
    assert arc_sizes == {3, 4, 5}                   # the items of 3 and 5 options are listed as they are


def test_every_commonsense_task_has_a_source():
    from lab import data
    from lab.formats import COMMONSENSE_TASKS

    assert set(data.TESTS) == set(COMMONSENSE_TASKS)


