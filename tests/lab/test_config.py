"""lab.config: RunConfig refuses an unknown method and a batch that micro-batches do not divide."""

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
@pytest.mark.parametrize("method", lab.METHODS + lab.ABLATIONS)
def test_every_methods_preset_makes_an_adapter_core_accepts(profile, method):
    """HiRA and BHRA have no adapter path to drop out: their presets carry dropout 0, or core refuses them."""
    cfg = lab.preset(profile, method=method).adapter_config()
    assert cfg.method == method
    if method in ("hira", "bhra", "bhra_blocknorm"):
        assert cfg.dropout == 0.0
