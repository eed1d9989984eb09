"""lab.config: RunConfig refuses, when it is built, a config that cannot make a meaningful run (an unknown method,
a setting out of its range, a batch that micro-batches do not divide, an adapter core refuses), by field and value."""

import pytest

import lab


def test_unknown_method_and_bad_batch():
    with pytest.raises(ValueError, match="unknown method"):
        lab.RunConfig(method="loha")
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        lab.RunConfig(batch_size=10, micro_batch_size=4)


def test_a_methods_own_script_sets_its_settings_on_top_of_the_profile():
    from lab.config import for_method, preset

    assert preset("paper", method="abba").alpha == 32.0          # ABBA's train_cr.sh
    assert preset("paper", method="lora").alpha == preset("paper").alpha == 64.0
    assert preset("paper", method="abba", alpha=48.0).alpha == 48.0  # an explicit override wins
    assert for_method(preset("paper"), "abba") == preset("paper", method="abba")
    assert for_method(preset("paper", method="abba"), "hira") == preset("paper", method="hira")
    assert for_method(preset("offline"), "abba") == preset("offline", method="abba")


def test_the_paper_profile_follows_llm_adapters_recipe():
    cfg = lab.preset("paper")
    assert (cfg.epochs, cfg.batch_size, cfg.micro_batch_size, cfg.warmup_steps, cfg.cutoff_len) == (3.0, 16, 4, 100, 256)
    assert cfg.targets == ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
    assert cfg.train_on_inputs
    assert lab.preset("paper", method="lora").dropout == 0.05


@pytest.mark.parametrize("profile", sorted(lab.PROFILES))
@pytest.mark.parametrize("method", lab.METHODS_ALL + lab.ABLATIONS)
def test_every_methods_preset_builds_and_makes_an_adapter_core_accepts(profile, method):
    """HiRA and BHRA have no adapter path to drop out: their presets carry dropout 0, or core refuses them."""
    run = lab.preset(profile, method=method)
    if method == "full":
        return
    cfg = run.adapter_config()
    assert cfg.method == method
    if method in ("hira", "bhra", "bhra_blocknorm"):
        assert cfg.dropout == 0.0


BAD = [  # (field, a value that makes no meaningful run)
    ("lr", 0.0), ("lr", -5.0), ("lr", float("nan")), ("lr", float("inf")), ("alpha", 0.0), ("alpha", -1),
    ("dropout", -0.1), ("dropout", 1.0), ("epochs", -1.0),
    *[(f, v) for f in ("r", "b", "k", "batch_size", "micro_batch_size", "cutoff_len", "num_beams", "max_new_tokens",
                       "eval_batch_size", "logging_steps") for v in (0, -1)],
    ("save_steps", -1), ("warmup_steps", -1), ("seed", -1), ("seed", 2**32), ("threads", 0), ("n_train", 0),
    ("max_steps", -1), ("max_steps", 2.5), ("r", True), ("r", 8.0), ("r", "8"), ("batch_size", None),
]


@pytest.mark.parametrize("field, value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_a_setting_out_of_range_is_refused_by_field_and_value(field, value):
    with pytest.raises(ValueError) as e:
        lab.preset("offline", **{field: value})
    assert f"{field}={value!r}" in str(e.value) and "give " in str(e.value)


@pytest.mark.parametrize("method", ["bhra", "full"])
def test_the_values_at_the_ends_of_the_ranges_make_a_run(method):
    lab.preset("offline", method=method, lr=1, alpha=1, dropout=0, max_steps=0, epochs=0.5, warmup_steps=0,
               save_steps=0, seed=2**32 - 1, threads=None, n_train=1, r=1, b=1, k=1, batch_size=1, micro_batch_size=1)


def test_no_steps_no_targets_and_a_zero_micro_batch_are_refused_by_name():
    with pytest.raises(ValueError, match="max_steps=0 and epochs=0"):
        lab.preset("offline", max_steps=0, epochs=0)
    with pytest.raises(ValueError, match="micro_batch_size=0"):   # not a ZeroDivisionError
        lab.preset("offline", micro_batch_size=0)
    for targets in ((), "q_proj", ("q_proj", ""), ("q_proj", 3)):
        with pytest.raises(ValueError, match=r"targets=.*give a non-empty tuple"):
            lab.preset("offline", method="full", targets=targets)   # no adapter is built: the check is ours
    assert lab.preset("offline", targets=["q_proj"]).targets == ("q_proj",)


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ValueError) as e:
        lab.preset("offline", r=-1, b=0, lr=-5.0)
    assert all(s in str(e.value) for s in ("r=-1", "b=0", "lr=-5.0"))


@pytest.mark.parametrize("method, bad, why", [("bhra", dict(r=6), "not divisible by b=4"),
                                              ("gralora", dict(k=3), "not divisible by k=3"),
                                              ("abba", dict(r=7), "odd"),
                                              ("hira", dict(dropout=0.1), "set dropout=0")])
def test_core_refuses_an_adapter_when_the_run_is_built(method, bad, why):
    with pytest.raises(ValueError, match=why):
        lab.preset("offline", method=method, **bad)
    lab.preset("offline", method="full", **bad)   # full fine-tuning has no adapter to refuse


@pytest.mark.parametrize("keyword, value", [("limit", 0), ("limit", -1), ("max_new_tokens", 0), ("batch_size", 0),
                                            ("num_beams", 0), ("limit", True)])
def test_evaluate_refuses_its_keywords_by_name_before_it_generates(keyword, value):
    with pytest.raises(ValueError, match=f"{keyword}={value!r}"):
        lab.evaluate(None, None, {"boolq": []}, **{keyword: value})
