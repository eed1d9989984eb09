"""What an update looks like (notebook 07): per-layer spectra and block energy of ΔW.

For every adapted layer: the number of singular values of ΔW above 0.005 (HiRA's measure), the
stable rank ‖ΔW‖_F²/‖ΔW‖_2², and the Gini coefficient of the update's energy over a g×g grid of
blocks (0: spread evenly over the blocks, → 1: concentrated in a few). The per-matrix measures are
core.bhra's diagnostics; this module applies them to every layer of a model. For the smol base, whose W0 is
de-quantised from 4-bit groups along each row, `quantization_check` asks whether that grid shapes W0's blocks.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange, repeat

from core.bhra import adapted_layers, block_energy, count_singular_values, gini, stable_rank
from lab.config import TARGETS_ALL


def layer_updates(model, base=None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(layer name, ΔW, W0)] of an adapted model; for a fully fine-tuned `model`, pass the `base`
    model and get ΔW = W − W0 for the same nn.Linear layers the adapters target."""
    if base is None:
        return [(name, layer.delta_weight().detach().float(), layer.W0.detach().float())
                for name, layer in adapted_layers(model)]
    tuned = dict(model.named_modules())
    out = []
    for name, mod in target_linears(base):
        W0 = mod.weight.detach().float()
        out.append((name, tuned[name].weight.detach().float() - W0, W0))
    return out


def target_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """[(name, layer)] of a plain model's nn.Linear layers that the adapters can target (TARGETS_ALL)."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS_ALL]


def update_measures(updates, g: int, threshold: float = 0.005):
    """One row per layer: shape, singular values above `threshold`, stable rank, block-energy Gini."""
    import pandas as pd

    rows = []
    for name, dW, W0 in updates:
        m, n = dW.shape
        rows.append({"layer": name, "module": name.rsplit(".", 1)[-1], "m": m, "n": n,
                     "sv_above": count_singular_values(dW, threshold), "stable_rank": stable_rank(dW),
                     "block_gini": gini(block_energy(dW, g)), "norm": float(dW.norm())})
    return pd.DataFrame(rows)


def normalised_spectra(updates, k: int | None = None) -> np.ndarray:
    """(layers, k) singular values σ_i/σ_1 of each ΔW, padded with NaN to a common length."""
    spectra = [torch.linalg.svdvals(dW.double()).numpy() for _, dW, _ in updates]
    k = k or max(len(s) for s in spectra)
    out = np.full((len(spectra), k), np.nan)
    for i, s in enumerate(spectra):
        s = s[:k] / s[0] if s[0] > 0 else np.zeros(min(k, len(s)))
        out[i, :len(s)] = s
    return out


def q4_grid(W: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, d), each (m, n): the Q4_1 grid min + d·q of the group each weight of a de-quantised W (m, n) is on.

    Q4_1 stores each run of `group` weights along a row as d·q + min with q ∈ {0..15}, d = (max − min)/15, so a
    de-quantised group holds its own min (q = 0) and max (q = 15): the grid is read back from the weights alone."""
    g = rearrange(W.double(), "m (k s) -> m k s", s=group)                            # (m, n/group, group)
    lo, d = g.amin(-1), (g.amax(-1) - g.amin(-1)) / 15                                 # (m, n/group) each
    return tuple(repeat(x, "m k -> m (k s)", s=group) for x in (lo, d))


def q4_grid_residual(W: torch.Tensor, group: int = 32) -> float:
    """Largest distance, in steps, of a weight from its group's 4-bit grid (0: W is Q4_1 de-quantised)."""
    lo, d = q4_grid(W, group)
    q = (W.double() - lo) / d.clamp_min(1e-30)
    return float((q - q.round()).abs().max())


def unrounded_block_energy(W: torch.Tensor, g: int, group: int = 32) -> torch.Tensor:
    """(g, g) block energies of a Q4_1 de-quantised W (m, n) with the energy of the rounding taken out.

    Rounding a weight to its group's grid adds an error of variance d²/12 (uniform on ±d/2), uncorrelated with
    the weight, so a block's expected energy is its unrounded energy plus Σ d²/12 over its weights."""
    noise = q4_grid(W, group)[1].pow(2) / 12                                       # (m, n) rounding variance
    return block_energy(W.double(), g) - block_energy(noise.sqrt(), g)


def quantization_check(model, g: int, group: int = 32):
    """Per target layer of a Q4_1 de-quantised model: how exactly its weights sit on the 4-bit grid, W0's block
    Gini on a g×g grid, the share of W0's energy that rounding adds, and the block Gini with that energy taken
    out of every block. If the two Ginis agree, the 4-bit grid does not make W0's blocks."""
    import pandas as pd

    rows = []
    for name, mod in target_linears(model):
        W = mod.weight.detach().double()
        E, clean = block_energy(W, g), unrounded_block_energy(W, g, group)             # (g, g) each
        rows.append({"layer": name, "module": name.rsplit(".", 1)[-1], "m": W.shape[0], "n": W.shape[1],
                     "grid_residual": q4_grid_residual(W, group), "block_gini": gini(E),
                     "noise_share": float(1 - clean.sum() / E.sum()), "block_gini_unrounded": gini(clean)})
    return pd.DataFrame(rows)
