"""Tests for the lab harness (lab/): data, prompts, extraction, errors, training, resume.

The training tests use a one-layer Llama and a tokenizer built in a temporary folder, so they run
in seconds and never touch the offline base model in .cache/.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lab
from core_helpers import save_tiny_llama
from lab.cache import write_json

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-layer Llama (widths divisible by 8 and 32) and a data folder in LLM-Adapters' layout."""
    root = tmp_path_factory.mktemp("tiny")
    records = lab.make_commonsense(12, seed=5)
    save_tiny_llama(root / "model", records)
    data = root / "LLM-Adapters"
    write_json(data / "ft-training_set" / "commonsense_170k.json", records)
    for task in lab.COMMONSENSE_TASKS:
        write_json(data / "dataset" / task / "test.json", [r for r in records if _task_of(r) == task][:3])
    return root


def _task_of(record):
    """Which family a synthetic record belongs to, read from its answer format line."""
    fmt = record["instruction"].rsplit("Answer format: ", 1)[1]
    return {"true/false": "boolq", "solution1/solution2": "piqa", "answer1/answer2/answer3": "social_i_qa",
            "ending1/ending2/ending3/ending4": "hellaswag", "option1/option2": "winogrande",
            "answer1/answer2/answer3/answer4/answer5": "ARC-Challenge"}.get(
        fmt, "openbookqa" if "kept in the" in record["instruction"] else "ARC-Easy")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def test_generators_are_deterministic_in_the_seed():
    assert lab.make_commonsense(5, seed=3) == lab.make_commonsense(5, seed=3)
    assert lab.make_commonsense(5, seed=3) != lab.make_commonsense(5, seed=4)
    assert lab.make_arithmetic(20, seed=1) == lab.make_arithmetic(20, seed=1)


def test_the_synthetic_answers_follow_from_the_facts_of_the_world():
    from lab.offline import CATEGORY_OF, WORLD, make_arithmetic, make_commonsense, world_corpus

    recs = make_commonsense(60, seed=0)
    by_task = {t: recs[i * 60:(i + 1) * 60] for i, t in enumerate(lab.COMMONSENSE_TASKS)}
    verb_of = {verb: c for c, (_, verb, _) in WORLD.items()}
    for r in by_task["boolq"]:  # "is it true that you can <verb> a <category>?": true when the verb is the category's
        verb, asked = r["instruction"].split("you can ")[1].split("?")[0].rsplit(" a ", 1)
        assert r["answer"] == ("true" if verb_of[verb] == asked else "false"), r["instruction"]
    assert {r["answer"] for r in by_task["boolq"]} == {"true", "false"}
    for r in by_task["winogrande"]:  # names a thing; the answer is the option holding its category's place
        thing = r["instruction"].split("keep the ")[1].split(" in the _")[0]
        options = [line.split(": ", 1)[1] for line in r["instruction"].split("\n") if line.startswith("Option")]
        assert options[int(r["answer"][-1]) - 1] == WORLD[CATEGORY_OF[thing]][2]
    # the worked step of task B is a sentence of the pre-training corpus's form, and its number is the answer
    form = re.compile(r"^(\w+) has (\d+) (\w+)s and (gets (\d+) more|gives away (\d+)), so \1 has (\d+) \3s\.$")
    assert {m[4].split()[0] for m in map(form.match, world_corpus(2000, seed=0)) if m} == {"gets", "gives"}
    for r in make_arithmetic(40, seed=0):
        m = form.match(r["output"].split(" The answer is ")[0])
        assert m and r["output"].endswith(f"The answer is {r['answer']}") and m[7] == r["answer"], r["output"]
        a, b = int(m[2]), int(m[5] or m[6])
        assert int(r["answer"]) == (a + b if m[5] else a - b)


def test_offline_data_layout_disjoint_and_every_answer_format(tmp_path):
    sizes = dict(n_train_per_task=60, n_test_per_task=20, n_math_train=50, n_math_test=10, seed=0, cache=tmp_path)
    folder = lab.offline_data(**sizes)
    assert folder.parent == tmp_path / "data" and lab.offline_data(**sizes) == folder
    train, tests = lab.load_commonsense(folder, train_file="ft-training_set/commonsense_synthetic.json")
    assert len(train) == 8 * 60 and all(len(d) == 20 for d in tests.values())
    train_instr = set(train["instruction"])
    for task, ds in tests.items():
        assert not train_instr & set(ds["instruction"]), task           # disjoint
        for r in ds:
            assert r["output"] == f"the correct answer is {r['answer']}"
            assert lab.extract_answer(task, r["output"]) == r["answer"]  # the format of the real task
    seen = set(train["answer"])
    wanted = {"true", "false", "solution1", "solution2", "option1", "option2"} | {f"answer{i}" for i in range(1, 6)} \
        | {f"ending{i}" for i in range(1, 5)}
    assert wanted <= seen
    math_test = lab.load_json_records(folder / "dataset" / "gsm8k" / "test.json")
    math_train = lab.load_json_records(folder / "ft-training_set" / "math_synthetic.json", kind="math")
    assert not set(math_test["instruction"]) & set(math_train["instruction"])
    for r in math_test:
        assert r["output"].endswith(f"The answer is {r['answer']}")
        assert lab.is_correct("gsm8k", r["output"], r["answer"])


def test_json_round_trip_through_datasets(tmp_path):
    records = lab.make_commonsense(2, seed=1) + [{"instruction": "i", "input": "ctx", "output": "o", "answer": "a"}]
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


# ---------------------------------------------------------------------------------------------
# extraction
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
    assert lab.extract_answer(task, text) == want


@pytest.mark.exercise5
@pytest.mark.parametrize("text,want", [
    ("The answer is 42", 42.0),
    ("3 + 4 = 7. The answer is 7", 7.0),
    ("costs 1,234.5 dollars", 1234.5),
    ("from -3 to -8", -8.0),
    ("no number", float("inf")),
])
def test_number_extraction(text, want):
    assert lab.extract_number(text) == want


@pytest.mark.exercise5
def test_arithmetic_correctness_tolerance():
    assert lab.is_correct("gsm8k", "The answer is 7.0005", "7")
    assert not lab.is_correct("gsm8k", "The answer is 7.01", "7")
    assert not lab.is_correct("gsm8k", "I cannot say", "7")


# ---------------------------------------------------------------------------------------------
# prompts and tokenisation
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


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_missing_data_file_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="LLM-Adapters"):
        lab.load_commonsense(tmp_path)
    with pytest.raises(FileNotFoundError, match="MetaMathQA"):
        lab.load_json_records(tmp_path / "MetaMathQA-395K.json", kind="math")


def test_wrong_format_is_named(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"question": "q", "label": 1}]))
    with pytest.raises(ValueError, match="lack .*instruction"):
        lab.load_json_records(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("this is not json")
    with pytest.raises(ValueError, match="not in the LLM-Adapters format"):
        lab.load_json_records(tmp_path / "b.json")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not load the model"):
        lab.load_model(str(tmp_path / "no-such-model"))


def test_unknown_method_and_bad_batch():
    with pytest.raises(ValueError, match="unknown method"):
        lab.RunConfig(method="loha")
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        lab.RunConfig(batch_size=10, micro_batch_size=4)


# ---------------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_paper_shaped_config_runs_the_same_harness(tiny, tmp_path, one_thread):
    """The paper profile with only model, data folder, step count and CPU-friendly batch changed."""
    paper = lab.preset("paper")
    assert (paper.r, paper.b, paper.cutoff_len, paper.targets) == (32, 8, 256, lab.TARGETS_ALL)
    cfg = lab.preset("paper", method="bhra", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                     max_steps=2, micro_batch_size=2, batch_size=4, warmup_steps=0, bf16=False, save_steps=1,
                     num_beams=1, max_new_tokens=4, progress=False, cache=str(tmp_path))
    rec = lab.train(cfg, verbose=False)
    assert rec["steps"] == 2 and rec["config"]["r"] == 32 and rec["config"]["b"] == 8
    out = lab.run_dir(cfg)
    assert out.parent == tmp_path / "runs" / "paper"
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "run.json").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["b"] == 8
    assert lab.train(cfg) == rec                                    # a finished run is reused
    _, tests = lab.load_commonsense(cfg.data_dir, train_file=cfg.train_file, split="test")
    acc = lab.evaluate_run(cfg, tests, limit=2)                      # merged, with the merged==unmerged check
    assert set(acc) == set(lab.COMMONSENSE_TASKS) | {"average"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


@pytest.mark.slow
def test_merged_model_reloads_with_plain_transformers(tiny, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.bhra import adapted_layers

    cfg = lab.RunConfig(method="lora", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", r=8, max_steps=3, batch_size=4,
                        micro_batch_size=4, lr=5e-2, cache=str(tmp_path))
    lab.train(cfg, verbose=False)
    model, tok = lab.load_trained(cfg)
    probe = lab.make_commonsense(1, seed=9)
    with torch.no_grad():                      # the trained adapter must change the model
        for _, layer in adapted_layers(model):
            assert layer.delta_weight().abs().max() > 0
    same, texts = lab.merged_equals_unmerged(model, tok, probe, max_new_tokens=6)
    assert same
    folder = lab.save_merged(model, tok, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert not adapted_layers(plain)
    assert lab.generate(plain, AutoTokenizer.from_pretrained(folder), probe, max_new_tokens=6) == texts


@pytest.mark.slow
def test_cli_run_killed_after_a_checkpoint_resumes_to_the_same_step_count(tiny, tmp_path):
    env = {**os.environ, "BHRA_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lab", "train", "--method", "lora", "--model", str(tiny / "model"),
           "--data-dir", str(tiny / "LLM-Adapters"), "--train-file", "ft-training_set/commonsense_170k.json",
           "--r", "8", "--max-steps", "300", "--save-steps", "5", "--batch-size", "4", "--micro-batch-size", "4"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    runs = tmp_path / "runs" / "offline"
    deadline = time.time() + 120
    while not list(runs.glob("*/trainer/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = list(runs.iterdir())
    assert not (run / "run.json").exists(), "the run finished before it could be killed"
    assert not (run / "adapter").exists()
    for ckpt in (run / "trainer").glob("checkpoint-*"):  # the factors and the optimiser state, not the model
        assert (ckpt / "trainable.safetensors").exists() and not list(ckpt.glob("model*.safetensors"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rec = json.loads((run / "run.json").read_text())
    assert rec["resumed_from"] is not None and "checkpoint-" in rec["resumed_from"]
    assert rec["steps"] == 300
    assert rec["losses"][0][0] == 5 and rec["losses"][-1][0] == 300   # the log spans both parts


def test_run_folder_follows_the_learning_rate_used():
    cfg = lab.RunConfig(method="bhra")
    assert lab.identity(cfg)["learning_rate"] == lab.LEARNING_RATES["bhra"]["offline"]  # the table's rate is the key
    other = lab.run_dir(dataclasses.replace(cfg, lr=2 * cfg.learning_rate))
    assert other != lab.run_dir(cfg) and other.parent == lab.run_dir(cfg).parent  # a new rate is a new run


# ---------------------------------------------------------------------------------------------
# run identity, the path rule, the CLI = the notebook
# ---------------------------------------------------------------------------------------------

def _python(code: str, cwd: Path, env: dict | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _notebook_cell(path: Path, needle: str) -> str:
    import nbformat
    (cell,) = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and needle in c.source]
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["offline", "paper"])
def test_cli_and_notebook_04_use_the_same_run_folder(profile, tmp_path):
    """Notebook 04's own parameters cell, run in notebooks/, against `python -m lab show` at the root."""
    env = {"BHRA_PROFILE": profile, "BHRA_CACHE": str(tmp_path)}
    cell = _notebook_cell(REPO / "notebooks" / "04_finetune_llama.ipynb", "cfgs = lab.configs(")
    from_notebook = _python(cell + "\nprint(lab.run_dir(cfgs['bhra']))", REPO / "notebooks", env)
    shown = subprocess.run([sys.executable, "-m", "lab", "show", "--profile", profile, "--method", "bhra"], cwd=REPO,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout)["run_dir"] == from_notebook
    assert from_notebook.startswith(str(tmp_path / "runs" / profile / "bhra-"))


@pytest.mark.slow
def test_relative_paths_resolve_the_same_from_notebooks_and_the_root(tmp_path):
    code = ("import lab; from lab import cache, finetune; "
            "print([str(lab.resolve('data/x')), str(cache.root()), str(lab.data_dir(lab.preset('paper'))), "
            "finetune.model_path('tests')])")
    env = {"BHRA_CACHE": "cache-relative"}
    seen = {where: _python(code, where, env) for where in (REPO, REPO / "notebooks", tmp_path)}
    assert len(set(seen.values())) == 1, seen
    assert f"'{REPO / 'data' / 'x'}'" in seen[REPO] and f"'{REPO / 'cache-relative'}'" in seen[REPO]
    assert f"'{REPO / 'tests'}'" in seen[REPO]                     # a folder under the root is a folder ...
    assert lab.finetune.model_path("meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"  # ... a hub id is not


@pytest.mark.slow
def test_fresh_starts_from_step_zero(tiny, tmp_path, one_thread):
    cfg = lab.RunConfig(method="lora", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", max_steps=3, batch_size=4,
                        micro_batch_size=4, save_steps=1, logging_steps=1, cache=str(tmp_path))
    first = lab.train(cfg, verbose=False)
    again = lab.train(cfg, reuse=False, verbose=False)
    assert again["resumed_from"] is None and again["steps"] == 3
    assert [s for s, _ in again["losses"]] == [1, 2, 3]
    assert again["losses"] == first["losses"]                        # the same run, from scratch


def test_a_change_of_base_model_changes_the_run_folder(tiny, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny / "model", other)
    cfg = lab.RunConfig(method="bhra", model=str(tiny / "model"))
    moved = lab.run_dir(lab.RunConfig(method="bhra", model=str(other)))
    assert moved != lab.run_dir(cfg)                                 # another folder
    conf = json.loads((other / "config.json").read_text())
    before = lab.run_dir(lab.RunConfig(method="bhra", model=str(other)))
    (other / "config.json").write_text(json.dumps({**conf, "rms_norm_eps": 1e-5}))
    assert lab.run_dir(lab.RunConfig(method="bhra", model=str(other))) != before   # same folder, new config



def test_two_runs_that_differ_only_in_the_base_model_get_two_run_folders(tmp_path):
    """The base model is a field of the run: another offline recipe is another run, with no patching."""
    default, other = lab.BaseSpec(), lab.BaseSpec(pretrain_steps=lab.BaseSpec().pretrain_steps + 1)
    runs = [lab.preset("offline", method="bhra", model=m, cache=str(tmp_path)) for m in ("offline", default, other)]
    assert runs[0] == runs[1]                                        # the default base has one spelling
    assert lab.run_dir(runs[0]) == lab.run_dir(runs[1]) != lab.run_dir(runs[2])
    assert lab.identity(runs[2])["base"] == {"offline": dataclasses.asdict(other)}


def test_the_synthetic_data_is_part_of_a_run_identity(tmp_path):
    """The synthetic folder's name (which hashes its recipe and sizes) is in the key; a folder by its path."""
    cfg = lab.RunConfig(method="lora", cache=str(tmp_path))
    assert lab.identity(cfg)["data"] == lab.data_dir(cfg).name
    resized = lab.offline_data(n_test_per_task=299, cache=tmp_path)
    assert resized.name != lab.data_dir(cfg).name
    assert lab.run_dir(dataclasses.replace(cfg, data_dir=str(resized))) != lab.run_dir(cfg)


@pytest.mark.slow
def test_the_ablation_trains_saves_and_reloads_as_itself(tiny, tmp_path, one_thread):
    from core.bhra import LAYERS, adapted_layers

    kw = dict(model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"), train_file="ft-training_set/commonsense_170k.json",
              max_steps=2, batch_size=4, micro_batch_size=4, cache=str(tmp_path))
    ablation, bhra = (lab.RunConfig(method=m, **kw) for m in ("bhra_blocknorm", "bhra"))
    assert lab.run_dir(ablation) != lab.run_dir(bhra)
    lab.train(ablation, verbose=False)
    saved = json.loads((lab.run_dir(ablation) / "adapter" / "adapter_config.json").read_text())
    assert saved["method"] == "bhra_blocknorm"
    model, _ = lab.load_trained(ablation)
    kinds = {type(layer) for _, layer in adapted_layers(model)}
    assert kinds == {LAYERS["bhra_blocknorm"]}


@pytest.mark.slow
def test_a_finished_run_keeps_only_the_factors(tiny, tmp_path, one_thread):
    cfg = lab.RunConfig(method="bhra", model=str(tiny / "model"), data_dir=str(tiny / "LLM-Adapters"),
                        train_file="ft-training_set/commonsense_170k.json", max_steps=2, batch_size=4,
                        micro_batch_size=4, save_steps=1, cache=str(tmp_path))
    rec = lab.train(cfg, verbose=False)
    out = lab.run_dir(cfg)
    factors = rec["trainable"] * 4                                   # float32 bytes
    files = [f for f in out.rglob("*") if f.is_file()]
    assert {f.relative_to(out).parts[0] for f in files} == {"adapter", "run.json"}
    assert max(f.stat().st_size for f in files) <= factors + 64 * 1024, {str(f): f.stat().st_size for f in files}
    model_bytes = sum(f.stat().st_size for f in (tiny / "model").glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) < model_bytes / 4


@pytest.mark.slow
def test_in_parallel_keeps_the_jobs_order_and_refuses_a_bad_worker_count(monkeypatch):
    import operator

    from lab.pool import in_parallel, workers

    monkeypatch.setenv("BHRA_WORKERS", "2")
    assert in_parallel(operator.pow, [(2, 3), (3, 2), (5, 1)]) == [8, 9, 5]  # two spawned processes
    monkeypatch.setenv("BHRA_WORKERS", "two")
    with pytest.raises(ValueError, match="BHRA_WORKERS=1"):
        workers()


def test_the_stories_end_with_what_their_first_sentence_implies():
    """Each story's last sentence follows from its first (a verb, place or category -> a thing of that category;
    a thing -> its category's place), with unrelated sentences between them."""
    from lab.offline import CATEGORY_OF, STORY_FRACTION, WORLD, world_corpus

    n = 500
    stories = world_corpus(n, seed=0)[n - int(n * STORY_FRACTION):]
    cat_of_word = {w: c for c, (_, verb, place) in WORLD.items() for w in (verb, place, c)}
    openers = {"verb": r"(\w+) wants to (.+) something", "place": r"(\w+) goes to the (.+)",
               "category": r"(\w+) is looking for a (.+)", "thing": r"(\w+) sees a (.+)"}
    closers = {"verb": r"so {} takes the (\w+)", "place": r"there {} finds a (\w+)", "category": r"{} finds the (\w+)",
               "thing": r"{} keeps it in the (.+)"}
    kinds = []
    for s in stories:
        first, last = s.split(". ")[0], s.rstrip(".").rsplit(". ", 1)[-1]
        kind, m = next((k, re.fullmatch(o, first)) for k, o in openers.items() if re.fullmatch(o, first))
        name, word = m[1], m[2]
        end = re.fullmatch(closers[kind].format(name), last)
        assert end, s
        if kind == "thing":
            assert end[1] == WORLD[CATEGORY_OF[word]][2], s
        else:
            assert CATEGORY_OF[end[1]] == cat_of_word[word], s
        kinds.append(kind)
    assert len(stories) == 200 and set(kinds) == set(openers)
    assert max(s.count(". ") for s in stories) >= 4  # some carry unrelated sentences between the two


def test_word_problems_state_what_their_question_implies():
    """BaseSpec.problem_fraction of the corpus's documents (0 leaves none) is a word problem followed by its
    worked step, which restates the question and gives the right sum or difference."""
    from lab.offline import BaseSpec, world_corpus

    assert 0 < BaseSpec().problem_fraction < 1
    n = 500
    assert not any("how many" in d for d in world_corpus(n, seed=0))
    docs = world_corpus(n, seed=0, problem_fraction=0.2)
    problems = [d for d in docs if "how many" in d]
    assert len(problems) == 100 and docs[-100:] == problems
    form = re.compile(r"(\w+) has (\d+) (\w+)s and (gets|gives away) (\d+)(?: more)?\. how many (\w+)s does (\w+) have now\? "
                      r"(\w+) has (\d+) (\w+)s and (gets|gives away) (\d+)(?: more)?, so (\w+) has (\d+) (\w+)s\.")
    ops = set()
    for d in problems:
        m = form.fullmatch(d)
        assert m, d
        name, a, x, op, b = m[1], int(m[2]), m[3], m[4], int(m[5])
        assert (m[6], m[7]) == (x, name) and (m[8], int(m[9]), m[10], m[11], int(m[12])) == (name, a, x, op, b), d
        assert (m[13], m[15]) == (name, x) and int(m[14]) == (a + b if op == "gets" else a - b), d
        ops.add(op)
    assert ops == {"gets", "gives away"}


def test_no_arithmetic_test_question_was_read_in_pre_training():
    """Task B's test questions lie outside the word problems of the base's corpus (which share their generator):
    plasticity measures what stage 2 taught. Drawn without that filter, some of them would be."""
    from lab.offline import BaseSpec, make_arithmetic, pretraining_questions, world_corpus

    spec = BaseSpec()
    seen = pretraining_questions(spec)
    corpus = world_corpus(spec.corpus_sentences, spec.seed, spec.problem_fraction)
    assert len(seen) > 1000 and {d[: d.index("?") + 1] for d in corpus if "how many" in d} == seen
    folder = lab.offline_data(n_train_per_task=60, n_test_per_task=20, n_math_train=50, n_math_test=200, seed=0)
    test = {r["instruction"] for r in json.loads((folder / "dataset" / "gsm8k" / "test.json").read_text())}
    train = {r["instruction"] for r in json.loads((folder / "ft-training_set" / "math_synthetic.json").read_text())}
    assert len(test) == 200 and not test & seen and not test & train
    assert train & seen  # the training set is drawn from the whole family: the filter is what keeps test apart
    assert {r["instruction"] for r in make_arithmetic(200, 99)} & seen  # the first 200, unfiltered
