"""lab.offline: the synthetic world's tasks, its pre-training corpus and the offline data folder."""

import json
import re

import lab


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
        options = re.findall(r"Option\d: (.*?)(?= Option\d: | Answer format: )", r["instruction"])  # one line
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
    wanted = {"true", "false", "solution1", "solution2", "option1", "option2"} | {f"answer{i}" for i in range(1, 5)} \
        | {f"ending{i}" for i in range(1, 5)}
    assert wanted <= seen
    math_test = lab.load_json_records(folder / "dataset" / "gsm8k" / "test.json", kind="math")
    math_train = lab.load_json_records(folder / "ft-training_set" / "math_synthetic.json", kind="math")
    assert not set(math_test["instruction"]) & set(math_train["instruction"])
    for r in math_test:
        assert r["output"].endswith(f"The answer is {r['answer']}")
        assert lab.is_correct("gsm8k", r["output"], r["answer"])


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
