"""lab.spectra: per-layer updates and their measures (singular values, stable rank, block-energy Gini, spectra)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from core.bhra import merge_and_unload
from lab.spectra import layer_updates, normalised_spectra, update_measures
from tests.helpers import adapted, make_llama


class _Attention(nn.Module):
    """Two target layers (q_proj 8×8, v_proj 4×8) and one that is not a target (head)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleDict({"q_proj": nn.Linear(8, 8), "v_proj": nn.Linear(8, 4), "head": nn.Linear(8, 2)})


def _hand_made():
    """A base and a fully fine-tuned copy whose q_proj moved by ΔW = 4·e_0 e_0ᵀ + 3·e_7 e_7ᵀ (singular values 4
    and 3, ‖ΔW‖_F = 5), whose v_proj did not move, and whose head (not a target) moved by 1 everywhere."""
    base = _Attention()
    tuned = copy.deepcopy(base)
    dW = torch.zeros(8, 8)
    dW[0, 0], dW[7, 7] = 4.0, 3.0
    with torch.no_grad():
        tuned.attn["q_proj"].weight += dW
        tuned.attn["head"].weight += 1.0
    return base, tuned, dW


def test_a_hand_made_update_has_its_known_measures():
    base, tuned, dW = _hand_made()
    updates = layer_updates(tuned, base=base)
    assert [name for name, _, _ in updates] == ["attn.q_proj", "attn.v_proj"]  # the head is no target
    (_, dq, w0q), (_, dv, _) = updates
    torch.testing.assert_close(dq, dW, rtol=0, atol=1e-6)
    assert torch.equal(w0q, base.attn["q_proj"].weight) and torch.count_nonzero(dv) == 0

    rows = update_measures(updates, g=2).set_index("layer")
    q, v = rows.loc["attn.q_proj"], rows.loc["attn.v_proj"]
    assert (q["module"], q["m"], q["n"], v["m"], v["n"]) == ("q_proj", 8, 8, 4, 8)
    assert q["sv_above"] == 2 and q["norm"] == pytest.approx(5.0)
    assert q["stable_rank"] == pytest.approx(25 / 16)  # (4² + 3²) / 4²
    # g = 2: block energies 16 (block 0,0) and 9 (block 1,1) among four; sorted 0, 0, 9, 16:
    # Gini = (1·9 + 3·16) / (4 · 25) = 0.57
    assert q["block_gini"] == pytest.approx(0.57)
    assert (v["sv_above"], v["stable_rank"], v["block_gini"], v["norm"]) == (0, 0.0, 0.0, 0.0)  # no update: all 0
    # g = 4: the same two entries among 16 blocks; Gini = (13·9 + 15·16) / (16 · 25) = 0.8925
    assert update_measures(updates, g=4).set_index("layer").loc["attn.q_proj", "block_gini"] == pytest.approx(0.8925)
    # the threshold is the one given: only σ = 4 lies above 3.5
    assert update_measures(updates, g=2, threshold=3.5).set_index("layer").loc["attn.q_proj", "sv_above"] == 1


def test_normalised_spectra_divide_by_the_largest_singular_value_and_pad_with_nan():
    base, tuned, _ = _hand_made()
    spectra = normalised_spectra(layer_updates(tuned, base=base))
    assert spectra.shape == (2, 8)
    assert spectra[0] == pytest.approx([1.0, 0.75, 0, 0, 0, 0, 0, 0], abs=1e-7)
    assert spectra[1, :4].tolist() == [0.0] * 4 and all(math.isnan(x) for x in spectra[1, 4:])  # v_proj: 4 values
    first3 = normalised_spectra(layer_updates(tuned, base=base), k=3)
    np.testing.assert_allclose(first3, [[1.0, 0.75, 0.0], [0.0, 0.0, 0.0]], rtol=0, atol=1e-7)


def test_an_adapter_and_its_merged_model_give_the_same_updates(single_thread):
    """The two ways in: ΔW from the adapter's factors, and W − W0 of the merged model against the base."""
    model = adapted("bhra", "llama")
    from_factors = layer_updates(model)
    from_weights = layer_updates(merge_and_unload(model), base=make_llama())
    assert len(from_factors) == 14
    assert [name for name, _, _ in from_weights] == [name for name, _, _ in from_factors]
    for (name, d_factors, w_factors), (_, d_weights, w_weights) in zip(from_factors, from_weights):
        assert d_factors.abs().max() > 1e-4, f"{name}: the update is too small for a meaningful check"
        assert torch.equal(w_weights, w_factors), name
        torch.testing.assert_close(d_weights, d_factors, rtol=0, atol=1e-6, msg=name)


def _q4_1(W: torch.Tensor, group: int = 32) -> torch.Tensor:
    """W rounded as Q4_1 rounds it: each run of `group` weights along a row to min + d·q, d = (max − min)/15."""
    g = W.double().reshape(W.shape[0], -1, group)
    lo, d = g.amin(-1, keepdim=True), (g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15
    return (lo + d * ((g - lo) / d).round()).reshape(W.shape)


def test_the_q4_step_and_grid_are_read_back_from_the_weights_alone():
    from lab.spectra import q4_grid, q4_grid_residual

    W = torch.randn(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    Q = _q4_1(W)
    lo, steps = q4_grid(Q)
    assert torch.equal(lo[:, :32], W[:, :32].amin(1, keepdim=True).expand(6, 32))
    assert steps.shape == Q.shape and torch.equal(steps[:, :32], steps[:, :1].expand(6, 32))
    assert torch.allclose(steps[:, 0], (W[:, :32].amax(1) - W[:, :32].amin(1)) / 15)
    assert q4_grid_residual(Q) < 1e-9       # on the grid
    assert q4_grid_residual(W) > 0.3        # a matrix that was never rounded is not


def test_the_rounding_energy_is_taken_out_of_each_block():
    """Rounding adds about 0.6 % to every block's energy; taking d²/12 per weight out leaves a small fraction of that."""
    from core.bhra import block_energy
    from lab.spectra import unrounded_block_energy

    W = torch.randn(256, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W[:128, :128] *= 3                                      # one loud block of the 2×2 grid
    Q = _q4_1(W)
    true, rounded, clean = block_energy(W, 2), block_energy(Q, 2), unrounded_block_energy(Q, 2)
    assert ((rounded - true) / true > 0.003).all()          # rounding adds energy to every block
    assert ((clean - true).abs() < (rounded - true) / 3).all()


def test_the_quantization_check_reads_a_rounded_model_layer_by_layer():
    from lab.spectra import quantization_check

    W = torch.randn(64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W[:32] *= 4
    model = nn.ModuleDict({"q_proj": nn.Linear(64, 64, bias=False).double(), "head": nn.Linear(64, 2)})
    model.q_proj.weight.data = _q4_1(W)
    (row,) = quantization_check(model, g=2).to_dict("records")  # the head is not a target
    assert row["module"] == "q_proj" and (row["m"], row["n"]) == (64, 64) and row["grid_residual"] < 1e-9
    assert 0.003 < row["noise_share"] < 0.02 and row["block_gini"] > 0.3
    assert abs(row["block_gini_unrounded"] - row["block_gini"]) < 0.01
