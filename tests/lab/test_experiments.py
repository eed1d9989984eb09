"""The course's open-ended experiments (lab/experiments.py), graded by what each design shows.

Every `check_*` below measures a design with the core's own functions and returns the problems it finds, as
sentences (none: the design passes). The tests marked exerciseN grade the design in lab/experiments.py (the
student's, in the student copy); the unmarked tests show that each check fails a design that does not show
what the experiment asks, so a pass means something.
"""
import re

import pytest
import torch

import lab  # noqa: F401  (the numerical pins, before torch computes)
from core.bhra import (bhra_delta, block_energy, block_hadamard_linear, count_singular_values, gini, hira_delta,
                       lora_delta, numeric_rank, stable_rank)
from lab import experiments
from lab.continual import _bracket
from lab.formats import COMMONSENSE_TASKS, LABELS, extract_answer

SIZE, GRID = experiments.SIZE, experiments.GRID


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _matrix(value, name: str, shape=(SIZE, SIZE)) -> list[str]:
    """Problems with `value` as a finite tensor of `shape`."""
    if not isinstance(value, torch.Tensor):
        return [f"{name} should be a torch.Tensor, got {type(value).__name__}"]
    if tuple(value.shape) != tuple(shape):
        return [f"{name} should have shape {tuple(shape)}, got {tuple(value.shape)}"]
    if not torch.isfinite(value).all():
        return [f"{name} holds non-finite values"]
    return []


# --- Experiment 1 (Exercise 1.4): a W0 on which BHRA's rank falls below HiRA's -------------------------------

def check_little_block_room(W0) -> list[str]:
    problems = _matrix(W0, "W0")
    if problems:
        return problems
    W0 = W0.double()
    energy = block_energy(W0, GRID)
    if energy.min() < 0.01 * energy.mean():
        problems.append(f"a block of W0 holds {float(energy.min() / energy.mean()):.2g} of the mean block energy; "
                        "every block must keep at least 1 % (an empty block is the easy way out)")
    if numeric_rank(W0) < 8:
        problems.append(f"W0 has rank {numeric_rank(W0)}; it must have rank ≥ 8, or HiRA's ceiling is low anyway")
    h = SIZE // GRID
    bhra = max(numeric_rank(bhra_delta(W0, torch.randn(GRID, GRID, h, 1, generator=_gen(s), dtype=W0.dtype),
                                       torch.randn(GRID, GRID, 1, h, generator=_gen(s + 10), dtype=W0.dtype), 1.0))
               for s in range(3))
    hira = min(numeric_rank(hira_delta(W0, torch.randn(SIZE, GRID, generator=_gen(s), dtype=W0.dtype),
                                       torch.randn(GRID, SIZE, generator=_gen(s + 10), dtype=W0.dtype), 1.0))
               for s in range(3))
    if bhra >= hira:
        problems.append(f"random BHRA updates (b = 4, r_b = 1) reach rank {bhra}, random HiRA updates (r = 4) {hira}: "
                        "BHRA should stay below HiRA on this W0")
    return problems


@pytest.mark.exercise1
def test_experiment_1_a_weight_on_which_bhra_reaches_a_lower_rank_than_hira():
    problems = check_little_block_room(experiments.weight_with_little_block_room())
    assert not problems, "Exercise 1.4's W0 does not pass: " + "; ".join(problems)


def test_experiment_1_check_refuses_a_gaussian_weight_and_an_empty_block():
    W0 = torch.randn(SIZE, SIZE, generator=_gen(0), dtype=torch.float64)
    assert any("should stay below HiRA" in p for p in check_little_block_room(W0))
    W0[:8, :8] = 0
    assert any("1 %" in p for p in check_little_block_room(W0))


# --- Experiment 2 (Exercise 2.2): a low-rank target neither Hadamard method can write -----------------------

def check_target_only_lora_fits(design) -> list[str]:
    if not (isinstance(design, tuple) and len(design) == 2):
        return ["the experiment should return a pair (W0, target)"]
    W0, target = design
    problems = _matrix(W0, "W0") + _matrix(target, "target")
    if problems:
        return problems
    W0, target = W0.double(), target.double()
    if torch.linalg.norm(target) == 0:
        return ["the target is zero"]
    if W0.abs().min() < 0.25 * W0.pow(2).mean().sqrt():
        problems.append("W0 has an entry below a quarter of its root-mean-square: no entry may be near zero")
    if experiments.fit("lora", W0, target) > 1e-6:
        problems.append(f"the target has rank {numeric_rank(target)}; LoRA at r = 4 must fit it exactly (rank ≤ 4)")
    for method in ("hira", "bhra"):
        residual = experiments.fit(method, W0, target)
        if residual < 0.3:
            problems.append(f"{method} fits the target to a relative residual of {residual:.3f}; it should stay ≥ 0.3")
    return problems


@pytest.mark.exercise2
def test_experiment_2_a_low_rank_target_that_neither_hadamard_method_can_write():
    problems = check_target_only_lora_fits(experiments.target_only_lora_fits())
    assert not problems, "Exercise 2.2's design does not pass: " + "; ".join(problems)


def test_experiment_2_check_refuses_a_target_hira_can_write():
    W0 = 1 + torch.rand(SIZE, SIZE, generator=_gen(0), dtype=torch.float64)
    target = hira_delta(W0, torch.randn(SIZE, 4, generator=_gen(1), dtype=torch.float64),
                        torch.randn(4, SIZE, generator=_gen(2), dtype=torch.float64), 1.0)
    problems = check_target_only_lora_fits((W0, target))
    assert any(p.startswith("hira fits") for p in problems), problems


# --- Experiment 3 (Exercise 3.2): a batch that leaves block (0, 0)'s factors without gradient ---------------

def block_gradients(x: torch.Tensor, g: torch.Tensor, seed: int) -> torch.Tensor:
    """(4, 4) norms of each block's factor gradients for a random W0 (no zero entry) and random factors."""
    W0 = torch.randn(SIZE, SIZE, generator=_gen(seed), dtype=torch.float64)
    W0 = W0.sign() * (W0.abs() + 0.1)
    h = SIZE // GRID
    B = torch.randn(GRID, GRID, h, 2, generator=_gen(seed + 1), dtype=torch.float64).requires_grad_()
    A = torch.randn(GRID, GRID, 2, h, generator=_gen(seed + 2), dtype=torch.float64).requires_grad_()
    block_hadamard_linear(x.double(), W0, None, B, A, 1.0).backward(g.double())
    return B.grad.pow(2).sum((-1, -2)).add(A.grad.pow(2).sum((-1, -2))).sqrt()


def check_batch_that_skips_one_block(design) -> list[str]:
    if not (isinstance(design, tuple) and len(design) == 2):
        return ["the experiment should return a pair (x, g)"]
    x, g = design
    if not (isinstance(x, torch.Tensor) and isinstance(g, torch.Tensor) and x.ndim == g.ndim == 2):
        return ["x and g should be 2-d tensors (tokens, 32)"]
    T = x.shape[0]
    problems = _matrix(x, "x", (T, SIZE)) + _matrix(g, "g", (T, SIZE))
    if problems:
        return problems
    if not 1 <= T <= 8:
        problems.append(f"the batch has {T} tokens; use 1 to 8")
    if (x.abs().sum(1) == 0).any() or (g.abs().sum(1) == 0).any():
        problems.append("a token has an all-zero input or output gradient: every token must take part")
    for seed in (0, 100):
        norms = block_gradients(x, g, seed)
        others = norms.flatten()[1:]
        if norms[0, 0] > 1e-12 * norms.max():
            problems.append(f"block (0, 0)'s factors get a gradient of norm {float(norms[0, 0]):.3g}; it should be zero")
        if others.min() < 1e-3 * norms.max():
            problems.append("some block other than (0, 0) gets (almost) no gradient; every other block should")
    return sorted(set(problems))


@pytest.mark.exercise3
def test_experiment_3_a_batch_that_leaves_block_0_0_without_gradient():
    problems = check_batch_that_skips_one_block(experiments.batch_that_skips_one_block())
    assert not problems, "Exercise 3.2's batch does not pass: " + "; ".join(problems)


def test_experiment_3_check_refuses_a_batch_that_reaches_every_block():
    x, g = torch.ones(2, SIZE), torch.ones(2, SIZE)
    assert any("should be zero" in p for p in check_batch_that_skips_one_block((x, g)))
    x[:, :8], g[:, :8] = 0, 0  # misses the whole first block row and column, not block (0, 0) alone
    assert any("every other block" in p for p in check_batch_that_skips_one_block((x, g)))


# --- Experiment 4 (Exercise 4.2): an adapter of one's own at LoRA's budget -----------------------------------

def check_my_adapter(make) -> list[str]:
    r, (m, n) = 8, (48, 32)
    W0 = torch.randn(m, n, generator=_gen(0), dtype=torch.float64)
    W0[0], W0[:, 5] = 0, 0  # a dead row and a dead column, as pruned or quantised weights have
    given = W0.clone()
    torch.manual_seed(0)
    params, delta = make(W0, r)
    if not torch.equal(W0, given):
        return ["the adapter changed W0: it is frozen"]
    if not (isinstance(params, dict) and params and all(isinstance(v, torch.Tensor) for v in params.values())):
        return ["params should be a non-empty dict of tensors"]
    count = sum(v.numel() for v in params.values())
    problems = [] if count <= r * (m + n) else [f"the adapter trains {count} numbers; LoRA's budget is r (m + n) = {r * (m + n)}"]
    p = {k: v.detach().double().requires_grad_() for k, v in params.items()}
    start = delta(p, W0)
    if _matrix(start, "delta(params, W0)", (m, n)):
        return problems + _matrix(start, "delta(params, W0)", (m, n))
    if start.abs().max() > 1e-12:
        problems.append(f"ΔW at initialisation is {float(start.abs().max()):.3g} at most; it should be 0 (the base model)")
    target = torch.randn(m, n, generator=_gen(1), dtype=torch.float64)
    (W0 + start - target).pow(2).sum().backward()
    if not any(v.grad is not None and v.grad.abs().max() > 1e-8 for v in p.values()):
        problems.append("no parameter has a gradient at initialisation: training could never leave the base")
    moved = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=_gen(2), dtype=torch.float64) for k, v in p.items()}
    D = delta(moved, W0).detach()
    if numeric_rank(D) <= r:
        problems.append(f"a perturbed ΔW has rank {numeric_rank(D)}, no more than LoRA's r = {r}")
    if D[W0 == 0].abs().max() <= 1e-6 * D.abs().max():
        problems.append("ΔW stays zero wherever W0 is zero: the update should not be tied to W0 entry by entry")
    return problems


@pytest.mark.exercise4
def test_experiment_4_an_adapter_of_ones_own():
    problems = check_my_adapter(experiments.my_adapter)
    assert not problems, "Exercise 4.2's adapter does not pass: " + "; ".join(problems)


def test_experiment_4_check_refuses_lora_and_hira():
    def lora(W0, r):
        return {"B": torch.zeros(W0.shape[0], r), "A": torch.randn(r, W0.shape[1])}, lambda p, W0: lora_delta(p["B"], p["A"], 1.0)

    def hira(W0, r):
        return ({"B": torch.zeros(W0.shape[0], r), "A": torch.randn(r, W0.shape[1])},
                lambda p, W0: hira_delta(W0, p["B"], p["A"], 1.0))

    assert any("no more than LoRA's" in p for p in check_my_adapter(lora))
    assert any("wherever W0 is zero" in p for p in check_my_adapter(hira))


# --- Experiment 5 (Exercise 5.3): right answers that first-match extraction scores wrong ---------------------

def check_first_match_misreads(items) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(i, tuple) and len(i) == 3 for i in items):
        return ["the experiment should return a list of (task, text, label) triples"]
    problems = []
    tasks = {task for task, _, _ in items}
    if len(tasks) < 3:
        problems.append(f"the outputs cover {len(tasks)} task(s); use at least three")
    for task, text, label in items:
        if task not in COMMONSENSE_TASKS:
            problems.append(f"{task!r} is not a commonsense task ({sorted(COMMONSENSE_TASKS)})")
            continue
        if label not in LABELS[task]:
            problems.append(f"{label!r} is not an answer of {task} ({LABELS[task]})")
        if len(text) > 300:
            problems.append(f"the {task} output is {len(text)} characters; keep it to a plausible 300")
        named = re.findall(COMMONSENSE_TASKS[task], text.strip())
        if not named or named[-1] != label:
            problems.append(f"the {task} output's final answer is {named[-1] if named else None!r}, not its label {label!r}")
        if extract_answer(task, text) == label:
            problems.append(f"first-match extraction scores the {task} output right; it should misread it")
    return problems


@pytest.mark.exercise5
def test_experiment_5_right_answers_that_first_match_scores_wrong():
    problems = check_first_match_misreads(experiments.generations_first_match_misreads())
    assert not problems, "Exercise 5.3's outputs do not pass: " + "; ".join(problems)


def test_experiment_5_check_refuses_outputs_scored_right():
    plain = [("boolq", "the answer is true", "true"), ("piqa", "solution1", "solution1"),
             ("ARC-Easy", "answer2", "answer2")]
    assert sum("should misread it" in p for p in check_first_match_misreads(plain)) == 3


# --- Experiment 6 (Exercise 6.3): ahead at every learning rate, behind at matched plasticity ----------------

def retention_at(points, level: float) -> float | None:
    """Retention interpolated along a frontier [(lr, P, R)] at plasticity `level` (None off the frontier)."""
    P = torch.tensor([p for _, p, _ in points], dtype=torch.float64).numpy()
    R = [r for _, _, r in points]
    where = _bracket(P, level)
    return None if where is None else (1 - where[2]) * R[where[0]] + where[2] * R[where[1]]


def check_frontiers_that_reverse(frontiers) -> list[str]:
    if not (isinstance(frontiers, dict) and set(frontiers) == {"x", "y"}):
        return ['the experiment should return {"x": [...], "y": [...]}']
    problems = []
    for name, points in frontiers.items():
        if len(points) != 3 or not all(len(p) == 3 for p in points):
            return [f"{name} should be three (lr, plasticity, retention) points"]
        if not all(0 <= v <= 100 for _, p, r in points for v in (p, r)):
            problems.append(f"{name} has a value outside [0, 100]")
    x, y = (sorted(frontiers[k]) for k in ("x", "y"))
    if [lr for lr, _, _ in x] != [lr for lr, _, _ in y] or len({lr for lr, _, _ in x}) != 3:
        return problems + ["x and y should share three distinct learning rates"]
    for name, points in (("x", x), ("y", y)):
        if not all(a[1] < b[1] for a, b in zip(points, points[1:])):
            problems.append(f"{name}'s plasticity should rise with the learning rate")
    if problems:
        return problems
    if not all(a[2] > b[2] for a, b in zip(x, y)):
        problems.append("x should retain more than y at every learning rate")
    level = min(x[-1][1], y[-1][1])
    rx, ry = retention_at(x, level), retention_at(y, level)
    if rx is None or ry is None:
        problems.append(f"a frontier does not reach down to P* = {level}: matched retention is not defined there")
    elif not rx < ry:
        problems.append(f"at P* = {level}, x retains {rx:.1f} and y {ry:.1f}: x should retain less")
    return problems


@pytest.mark.exercise6
def test_experiment_6_frontiers_on_which_equal_rates_and_matched_plasticity_disagree():
    problems = check_frontiers_that_reverse(experiments.frontiers_that_reverse())
    assert not problems, "Exercise 6.3's frontiers do not pass: " + "; ".join(problems)


def test_experiment_6_check_refuses_a_method_ahead_at_matched_plasticity_too():
    same = {"x": [(1e-4, 10.0, 95.0), (3e-4, 30.0, 85.0), (1e-3, 60.0, 60.0)],
            "y": [(1e-4, 10.0, 90.0), (3e-4, 30.0, 80.0), (1e-3, 60.0, 50.0)]}
    assert any("x should retain less" in p for p in check_frontiers_that_reverse(same))


# --- Experiment 7 (Exercise 7.2): an update on which the three measures disagree ---------------------------

def check_measures_disagree(delta) -> list[str]:
    problems = _matrix(delta, "ΔW")
    if problems:
        return problems
    if torch.linalg.norm(delta.double()) == 0:
        return ["ΔW is zero"]
    D = delta.double() / torch.linalg.norm(delta.double())
    srank, count, g = stable_rank(D), count_singular_values(D, 0.005), gini(block_energy(D, GRID))
    if srank > 2:
        problems.append(f"stable rank {srank:.2f}; it should be ≤ 2")
    if count < 16:
        problems.append(f"{count} singular values above 0.005; there should be at least 16")
    if not g >= 0.5:
        problems.append(f"block Gini {g:.3f}; it should be ≥ 0.5")
    return problems


@pytest.mark.exercise7
def test_experiment_7_an_update_the_three_measures_disagree_on():
    problems = check_measures_disagree(experiments.update_the_measures_disagree_on())
    assert not problems, "Exercise 7.2's update does not pass: " + "; ".join(problems)


def test_experiment_7_check_refuses_an_update_on_which_the_measures_agree():
    gaussian = torch.randn(SIZE, SIZE, generator=_gen(0), dtype=torch.float64)
    problems = check_measures_disagree(gaussian)
    assert any("stable rank" in p for p in problems) and any("block Gini" in p for p in problems), problems
    rank_one = torch.randn(SIZE, 1, generator=_gen(1), dtype=torch.float64) @ torch.randn(1, SIZE, generator=_gen(2), dtype=torch.float64)
    assert any("singular values above 0.005" in p for p in check_measures_disagree(rank_one))
