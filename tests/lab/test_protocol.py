"""The protocol table (lab.protocol, notebook 04): renders for both presets, sourced, filled from the cfg."""
import dataclasses

import pytest

from lab.config import preset
from lab.protocol import COLUMNS, SETTINGS, settings_table


@pytest.mark.parametrize("profile", ["paper", "offline"])
def test_table_renders_with_sources_and_no_empty_cells(profile):
    table = settings_table(preset(profile))
    assert list(table.columns) == COLUMNS and len(table) == len(SETTINGS)
    assert table.map(lambda v: isinstance(v, str) and v.strip() != "").all().all()
    assert table["source"].str.len().min() > 10  # every row names the file it was read from


def test_this_profile_follows_the_cfg():
    cfg = preset("paper")
    row = lambda t, name: t.set_index("setting").loc[name]  # noqa: E731
    beam = row(settings_table(cfg), "decoding")
    greedy = row(settings_table(dataclasses.replace(cfg, num_beams=1)), "decoding")
    assert "4-beam" in beam["this profile"] and beam["departs, and why"] == "no"
    assert "greedy" in greedy["this profile"] and "speed" in greedy["departs, and why"]
    assert row(settings_table(dataclasses.replace(preset("offline"), max_steps=123)), "epochs")["this profile"] == "123 steps"
    assert row(settings_table(cfg), "epochs")["this profile"] == "3 epochs"
    assert row(settings_table(cfg), "epochs")["departs, and why"] == "no"
    lora = preset("paper", method="lora")
    assert row(settings_table(lora), "adapter dropout")["departs, and why"].startswith("no: ")
    assert row(settings_table(dataclasses.replace(lora, dropout=0.0)), "adapter dropout")["departs, and why"].startswith("0 vs")
    assert row(settings_table(cfg), "adapter dropout")["departs, and why"].startswith("0 for bhra: it has no separate")
    assert row(settings_table(cfg), "target modules")["departs, and why"] == "no"
    abba = row(settings_table(preset("paper", method="abba")), "learning rate")["departs, and why"]
    assert abba.startswith("no; ") and "13.5x as many optimiser steps" in abba  # (3/16) / (2/144)


def test_abba_scale_row_compares_with_abbas_own_script(monkeypatch):
    # the paper profile's ABBA takes its own script's alpha (32), whatever method the table is shown for
    for method in ("bhra", "abba", "lora"):
        cell = settings_table(preset("paper", method=method)).set_index("setting").loc["ABBA scale s", "departs, and why"]
        assert cell.startswith("s as ABBA's script"), method
    offline = settings_table(preset("offline")).set_index("setting").loc["ABBA scale s"]
    assert offline["this profile"].startswith("s = 16 ") and offline["departs, and why"].startswith("0.5x ABBA's")
    import lab.protocol as protocol
    monkeypatch.setattr(protocol, "scaling", lambda acfg: 2 * acfg.alpha**2 / acfg.r)  # the old alpha^2/sqrt(r1 r2)
    cell = settings_table(preset("paper")).set_index("setting").loc["ABBA scale s", "departs, and why"]
    assert cell.startswith("2x")
