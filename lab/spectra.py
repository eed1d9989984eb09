"""What an update looks like (notebook 07): per-layer spectra and block energy of ΔW.

For every adapted layer: the number of singular values of ΔW above 0.005 (HiRA's measure), the
stable rank ‖ΔW‖_F²/‖ΔW‖_2², and the Gini coefficient of the update's energy over a g×g grid of
blocks (0: spread evenly over the blocks, → 1: concentrated in a few). The per-matrix measures are
core.bhra's diagnostics; this module applies them to every layer of a model.
"""
from __future__ import annotations

import numpy as np
import torch

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
    for name, mod in base.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS_ALL:
            W0 = mod.weight.detach().float()
            out.append((name, tuned[name].weight.detach().float() - W0, W0))
    return out


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
