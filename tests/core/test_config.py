"""AdapterConfig: the values it accepts, and refusals that name the field and the fix."""

from __future__ import annotations

import pytest

from core.bhra import AdapterConfig
from tests.helpers import METHODS, make_cfg

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# Ranks, grids, dropout, methods, targets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0, -4])
@pytest.mark.parametrize("method", METHODS)
def test_rank_must_be_positive(method, r):
    with pytest.raises(ValueError, match=rf"r must be a positive integer .*r={r}"):
        make_cfg(method, r=r)


def test_rank_must_be_an_integer():
    with pytest.raises(ValueError, match="r must be a positive integer"):
        AdapterConfig(method="lora", r=8.0)


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
def test_rank_not_divisible_by_the_grid(method, grid):
    fix = rf"pick r a multiple of {grid} \(e\.g\. r=4\)"
    with pytest.raises(ValueError, match=rf"r=6 is not divisible by {grid}=4.*{fix}"):
        AdapterConfig(method=method, r=6, **{grid: 4})


@pytest.mark.parametrize("method,grid", [("bhra", "b"), ("gralora", "k")])
@pytest.mark.parametrize("value", [0, -2])
def test_grid_must_be_positive(method, grid, value):
    with pytest.raises(ValueError, match=rf"{grid} must be a positive integer .*got {grid}={value}"):
        AdapterConfig(method=method, r=8, **{grid: value})


def test_abba_needs_an_even_rank():
    with pytest.raises(ValueError, match="r1 = r2 = r/2.*pick an even r"):
        AdapterConfig(method="abba", r=5)


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown method 'lorax'.*'lora', 'dora', 'hira', 'abba', 'gralora', 'bhra'"):
        AdapterConfig(method="lorax")


@pytest.mark.parametrize("method", ["hira", "bhra"])
def test_w0_coupled_methods_refuse_dropout(method):
    with pytest.raises(ValueError, match="set dropout=0"):
        AdapterConfig(method=method, dropout=0.1)


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_must_lie_in_unit_interval(dropout):
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
        AdapterConfig(method="lora", dropout=dropout)


def test_empty_targets_are_refused():
    with pytest.raises(ValueError, match="targets is empty: name the nn.Linear modules"):
        AdapterConfig(targets=())


# ---------------------------------------------------------------------------------------------
# Wrongly typed values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,message", [
    (dict(r=True), r"r must be a positive integer .*got r=True \(bool\)"),
    (dict(r="8"), r"r must be a positive integer .*got r='8' \(str\)"),
    (dict(dropout="0.1"), r"dropout must be a number in \[0, 1\).*got dropout='0.1' \(str\).*dropout=0.1"),
    (dict(alpha="abc"), r"alpha must be a number.*got alpha='abc' \(str\).*alpha=64.0"),
    (dict(alpha=True), r"alpha must be a number.*got alpha=True \(bool\)"),
    (dict(rslora="yes"), r"rslora must be True or False, got rslora='yes' \(str\)"),
    (dict(b=2.0), r"b must be a positive integer .*got b=2.0 \(float\)"),
    (dict(k="2"), r"k must be a positive integer .*got k='2' \(str\)"),
    (dict(targets=("q_proj", 3)), r"targets must be names of nn.Linear modules.*got 3 \(int\)"),
])
def test_config_refuses_wrongly_typed_values_naming_the_field_and_fix(kw, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(method="lora", **kw)


def test_a_single_target_string_is_refused_with_the_tuple_to_write():
    with pytest.raises(ValueError, match=r"targets must be a tuple or list of names.*targets=\('q_proj',\)"):
        AdapterConfig(targets="q_proj")


def test_targets_given_as_a_list_become_a_tuple():
    assert AdapterConfig(targets=["q_proj", "v_proj"]).targets == ("q_proj", "v_proj")
