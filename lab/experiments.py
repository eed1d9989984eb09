"""The course's open-ended experiments: one per session, graded by its tests (tests/lab/test_experiments.py).

Each experiment is a function that returns a *design*: a weight, a target, a batch, an adapter, model outputs,
a pair of frontiers or an update. Many designs pass; the tests check what the design must show, measured with
the core's own functions (never by comparing with the solution here). In the student copy the function's body
is a stub, as an exercise's is; `make check-exercise N=N` grades session N's experiment with its exercises.

The one tool the tests share with the student is `fit`: how well an update of a given parameterization can
reproduce a target (session 2).
"""
from __future__ import annotations

import math

import torch

from core.bhra import bhra_delta, hira_delta, khatri_rao

SIZE, GRID = 32, 4  # sessions 1-3 and 7 work on 32×32 matrices cut into a 4×4 grid of 8×8 blocks


def fit(method: str, W0: torch.Tensor, target: torch.Tensor, r: int = 4, b: int = GRID,
        steps: int = 1500, lr: float = 0.02, seed: int = 0) -> float:
    """‖ΔW − target‖_F / ‖target‖_F after fitting `method`'s factors (r, or r_b = r/b per block) with Adam.

    LoRA's best fit is the truncated SVD (Eckart–Young), so it is computed, not trained. HiRA's and BHRA's are
    weighted low-rank problems with no closed form; `steps` of Adam from a small random start (float64, seeded)
    give an upper bound on their best residual, the same for every design that is graded.
    """
    W0, target = W0.double(), target.double()
    m, n = W0.shape
    if method == "lora":
        U, S, Vh = torch.linalg.svd(target)
        best = (U[:, :r] * S[:r]) @ Vh[:r]
        return float(torch.linalg.norm(best - target) / torch.linalg.norm(target))
    rng = torch.Generator().manual_seed(seed)
    shapes = {"hira": ((m, r), (r, n)), "bhra": ((b, b, m // b, r // b), (b, b, r // b, n // b))}[method]
    B, A = (torch.randn(*shape, generator=rng, dtype=torch.float64).mul_(0.1).requires_grad_() for shape in shapes)
    delta = {"hira": hira_delta, "bhra": bhra_delta}[method]
    opt = torch.optim.Adam([B, A], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (delta(W0, B, A, 1.0) - target).pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(torch.linalg.norm(delta(W0, B, A, 1.0) - target) / torch.linalg.norm(target))


def weight_with_little_block_room() -> torch.Tensor:
    """Experiment 1 — a W0 (32, 32) on which BHRA (b = 4, r_b = 1) reaches a lower rank than HiRA at the same
    budget (r = 4), although no block of W0 is (nearly) empty and W0 itself has rank ≥ 8."""
    # exercise 1.4: open-ended: build a (32, 32) W0 whose 8×8 blocks each have low rank while W0 as a whole does not
    # (BHRA's ceiling is Σ_ij rank(W0_ij)·r_b, HiRA's rank(W0)·r); every block must keep at least 1 % of the mean
    # block energy. Check yourself with numeric_rank of bhra_delta and hira_delta on random factors.
    rng = torch.Generator().manual_seed(0)
    u = torch.randn(GRID, GRID, SIZE // GRID, 1, generator=rng, dtype=torch.float64)
    v = torch.randn(GRID, GRID, 1, SIZE // GRID, generator=rng, dtype=torch.float64)
    rank_one_blocks = u @ v  # (4, 4, 8, 8): every block u_ij v_ijᵀ, each pair drawn on its own
    return rank_one_blocks.permute(0, 2, 1, 3).reshape(SIZE, SIZE)
    # end exercise


def target_only_lora_fits() -> tuple[torch.Tensor, torch.Tensor]:
    """Experiment 2 — (W0, target), both (32, 32): a target of rank ≤ 4 (LoRA at r = 4 fits it exactly) that
    neither HiRA (r = 4) nor BHRA (b = 4, r_b = 1) gets within 30 % of, on a W0 with no entry below a quarter of
    its root-mean-square (no zero to hide behind)."""
    # exercise 2.2: open-ended: a Hadamard method can only write W0 ⊙ (something low-rank, per block for BHRA);
    # pick a low-rank target that W0's pattern does not help to write, and measure yourself with lab.experiments.fit
    rng = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (SIZE, SIZE), generator=rng, dtype=torch.float64).mul_(2).sub_(1)
    W0 = signs * (1 + torch.rand(SIZE, SIZE, generator=rng, dtype=torch.float64))  # |W0| in [1, 2), random signs
    target = torch.randn(SIZE, 4, generator=rng, dtype=torch.float64) @ torch.randn(4, SIZE, generator=rng, dtype=torch.float64)
    return W0, target
    # end exercise


def batch_that_skips_one_block() -> tuple[torch.Tensor, torch.Tensor]:
    """Experiment 3 — (x, g), both (T, 32) with T ≤ 8 tokens and no all-zero row: inputs and output gradients for
    which BHRA's factors of block (0, 0) get no gradient at all while every other block's factors do, whatever
    W0 (without zeros) and the factors are."""
    # exercise 3.2: open-ended: the factors of block (i, j) see only W0_ij ⊙ G_ij with G = Σ_t g_tᵀ x_t; choose
    # tokens whose outer products cancel, or miss, on block (0, 0) only
    w = SIZE // GRID
    x = torch.zeros(2, SIZE, dtype=torch.float64)
    g = torch.zeros(2, SIZE, dtype=torch.float64)
    g[0, :w], x[0, w:] = 1.0, 1.0  # token 0: output rows of block row 0, inputs of block columns 1-3
    g[1, w:], x[1, :] = 1.0, 1.0   # token 1: output rows of block rows 1-3, every input
    return x, g
    # end exercise


def my_adapter(W0: torch.Tensor, r: int):
    """Experiment 4 — an adapter of your own for W0 (m, n) at LoRA's budget r: returns (params, delta), a dict of
    trainable tensors with at most r·(m + n) numbers in all and a function delta(params, W0) -> ΔW (m, n).
    Graded: ΔW = 0 at initialisation (the model starts as the base), some parameter has a non-zero gradient
    there (it can leave it), a perturbed ΔW has a higher rank than LoRA's r, and it can change entries where
    W0 is zero (it is not HiRA or BHRA in disguise)."""
    # exercise 4.2: open-ended: any parameterization within the budget; one factor at zero gives the identity,
    # and a product of low-rank matrices whose ranks multiply (lesson 1) lifts the rank without W0
    m, n = W0.shape
    half = r // 2
    params = {"B1": torch.zeros(m, half), "A1": torch.randn(half, n) / math.sqrt(n),
              "B2": torch.randn(m, half) / math.sqrt(half), "A2": torch.randn(half, n) / math.sqrt(n)}

    def delta(p, W0):  # (B1 A1) ⊙ (B2 A2) = (B1 ⊙ᵣ B2)(A1ᵀ ⊙ᵣ A2ᵀ)ᵀ: rank up to (r/2)², for r (m + n) numbers
        return khatri_rao(p["B1"], p["B2"]) @ khatri_rao(p["A1"].T, p["A2"].T).T

    return params, delta
    # end exercise


def generations_first_match_misreads() -> list[tuple[str, str, str]]:
    """Experiment 5 — [(task, generated text, label)], at least three tasks: plausible model outputs whose final
    answer is the label, which LLM-Adapters' first-match extraction nevertheless scores wrong."""
    # exercise 5.3: open-ended: an output that names another answer word before committing to its own (a
    # comparison, a correction, an option read aloud) is scored on the first word it names
    return [
        ("boolq", "At first glance the answer seems false, but the passage says it happened, so the answer is true", "true"),
        ("piqa", "solution1 would spill the water, so solution2 is correct", "solution2"),
        ("ARC-Easy", "answer1 is a gas and answer2 a liquid at room temperature; the answer is answer3", "answer3"),
    ]
    # end exercise


def frontiers_that_reverse() -> dict[str, list[tuple[float, float, float]]]:
    """Experiment 6 — {"x": [(lr, plasticity, retention), ...], "y": [...]}, the same three learning rates for both,
    plasticity rising with the rate, every value in [0, 100]: x retains more than y at every learning rate, yet
    less at the common plasticity level P* = min over methods of max plasticity (the protocol of session 6)."""
    # exercise 6.3: open-ended: comparing at equal learning rates rewards a method that learns less; make x
    # learn little at each rate (high retention) and y reach P* already at a lower rate with more left of task A
    return {"x": [(1e-4, 10.0, 90.0), (3e-4, 20.0, 80.0), (1e-3, 40.0, 50.0)],
            "y": [(1e-4, 30.0, 85.0), (3e-4, 40.0, 75.0), (1e-3, 60.0, 40.0)]}
    # end exercise


def update_the_measures_disagree_on() -> torch.Tensor:
    """Experiment 7 — a ΔW (32, 32), read at unit Frobenius norm: stable rank ≤ 2 (one direction carries the
    energy), at least 16 singular values above HiRA's 0.005 (many directions are there), and a block Gini of at
    least 0.5 on the 4×4 grid (the energy sits in a few blocks)."""
    # exercise 7.2: open-ended: one strong direction confined to one block, plus a faint spread-out part that
    # adds singular values above 0.005 without adding much energy
    rng = torch.Generator().manual_seed(0)
    w = SIZE // GRID
    delta = 0.003 * torch.randn(SIZE, SIZE, generator=rng, dtype=torch.float64)
    delta[:w, :w] += torch.randn(w, 1, generator=rng, dtype=torch.float64) @ torch.randn(1, w, generator=rng, dtype=torch.float64) / w
    return delta / torch.linalg.norm(delta)
    # end exercise
