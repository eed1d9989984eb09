"""The mathematics of notebooks 01-03: identities between the methods, BHRA's gradients, rank bounds, diagnostics,
and the update of the block-normalised ablation.

Everything here works on single matrices and layers (no model), mostly in float64 so that exact
identities can be checked at round-off level.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from einops import rearrange
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from core.bhra import (
    LAYERS,
    AdapterConfig,
    BHRABlockNormLinear,
    BHRALinear,
    abba_delta,
    abba_linear,
    bhra_blocknorm_delta,
    bhra_delta,
    block_energy,
    block_gains,
    block_hadamard_linear,
    block_hadamard_linear_reference,
    blocks,
    count_singular_values,
    dora_delta,
    gini,
    gralora_delta,
    gralora_linear,
    hira_delta,
    inject,
    khatri_rao,
    lora_delta,
    numeric_rank,
    rank_bound,
    scaling,
    stable_rank,
    unblocks,
)

pytestmark = pytest.mark.usefixtures("single_thread")

f64 = dict(dtype=torch.float64)


F64 = dict(rtol=1e-10, atol=1e-12)  # float64 round-off on values of order 1-100


def _layer(method: str, m: int, n: int, dtype=torch.float64, weight=None, bias=None, **cfg):
    """One adapted nn.Linear(n, m) with random non-zero factors (and the given W0 / bias, if any)."""
    base = nn.Linear(n, m, dtype=dtype)
    with torch.no_grad():
        if weight is not None:
            base.weight.copy_(weight)
        if bias is not None:
            base.bias.copy_(bias)
    layer = LAYERS[method](base, AdapterConfig(method=method, targets=("x",), **cfg))
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith("base."):
                p.copy_(torch.randn_like(p))
    return layer


def expect_close(actual, expected, what: str, mistakes=(), **tol):
    """assert_close for the exercises, failing with a sentence instead of raw numbers.

    `what` says what was expected; `mistakes` are (description, the value that mistake produces):
    the first one `actual` equals is named in the message.
    """
    tol = tol or F64
    if tuple(actual.shape) != tuple(expected.shape):
        named = [d for d, wrong in mistakes if tuple(wrong.shape) == tuple(actual.shape)]
        pytest.fail(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}"
                    + (f". Likely mistake: {named[0]}." if named else "."), pytrace=False)
    if torch.allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"]):
        return
    for description, wrong in mistakes:
        if tuple(wrong.shape) == tuple(actual.shape) and torch.allclose(actual, wrong, rtol=1e-8, atol=1e-10):
            pytest.fail(f"{what}, but the result is off. Likely mistake: {description}.", pytrace=False)
    worst = (actual - expected).abs().max().item()
    pytest.fail(f"{what}, but the values differ (largest difference {worst:.3g}).", pytrace=False)


# ---------------------------------------------------------------------------------------------
# Identities between the methods
# ---------------------------------------------------------------------------------------------


@pytest.mark.exercise1
def test_blocks_and_unblocks_are_inverse_and_cut_a_grid():
    W = torch.arange(6 * 8, **f64).reshape(6, 8)
    Wb = blocks(W, 2)  # (2, 2, 3, 4)
    expected = torch.stack([torch.stack([W[:3, :4], W[:3, 4:]]), torch.stack([W[3:, :4], W[3:, 4:]])])
    expect_close(Wb, expected, "blocks(W, 2) of a 6×8 W should be (2, 2, 3, 4) with block (1, 0) = W[3:, :4] "
                 "(rows 3-5, columns 0-3)", mistakes=[
        ("the grid index is the inner factor, '(p i) (q j)': an interleaved grid; write '(i p) (j q)'",
         rearrange(W, "(p i) (q j) -> i j p q", i=2, j=2)),
        ("the grid axes are swapped, '-> j i p q': block (i, j) lands at [j, i]", rearrange(W, "(i p) (j q) -> j i p q", i=2, j=2)),
        ("the block axes are swapped, '-> i j q p': each block is transposed", rearrange(W, "(i p) (j q) -> i j q p", i=2, j=2)),
    ])
    assert torch.equal(unblocks(Wb), W), "unblocks(blocks(W, 2)) should give W back: blocks is the inverse of unblocks"


@pytest.mark.exercise1
def test_bhra_with_one_block_is_hira():
    m, n, r = 12, 8, 4
    hira = _layer("hira", m, n, r=r)
    bhra = _layer("bhra", m, n, r=r, b=1, weight=hira.W0, bias=hira.base.bias)
    with torch.no_grad():
        bhra.B.copy_(rearrange(hira.B, "m r -> 1 1 m r"))
        bhra.A.copy_(rearrange(hira.A, "r n -> 1 1 r n"))
    assert torch.equal(bhra.W0, hira.W0), "the test builds both layers on the same W0, but their W0 differ"
    expect_close(bhra.delta_weight(), hira.delta_weight(), "BHRA with b = 1 should equal HiRA, ΔW = s·W0 ⊙ (B A) "
                 "(check bhra_delta: W0 times block_product(B, A), times s; and block_product: B_ij @ A_ij per block)",
                 mistakes=[("bhra_delta leaves out W0: it returns s·B A, LoRA's update", (hira.B @ hira.A).detach())])
    x = torch.randn(5, n, **f64)
    expect_close(bhra(x), hira(x), "the BHRA layer with b = 1 should compute the same output as the HiRA layer")


@pytest.mark.exercise1
def test_bhra_on_all_ones_is_gralora_with_k_equal_b():
    """W0 = 1 removes the Hadamard coupling: each block is a plain low-rank B_ij A_ij (GraLoRA)."""
    m, n, r, b = 12, 8, 4, 2
    ones = torch.ones(m, n, **f64)
    bhra = _layer("bhra", m, n, r=r, b=b, weight=ones)
    # α = r makes GraLoRA's s = 1, BHRA's scale
    gra = _layer("gralora", m, n, r=r, k=b, alpha=float(r), weight=ones, bias=bhra.base.bias)
    with torch.no_grad():
        gra.B.copy_(bhra.B)
        gra.A.copy_(bhra.A)
    assert scaling(bhra.cfg) == scaling(gra.cfg) == 1.0, (
        f"BHRA's scale and GraLoRA's with α = r should both be 1, got {scaling(bhra.cfg)} and {scaling(gra.cfg)}")
    expect_close(bhra.delta_weight(), gra.delta_weight(), "BHRA on an all-ones W0 should equal GraLoRA with k = b "
                 "(every block a plain B_ij A_ij)")
    expect_close(bhra_delta(ones, bhra.B, bhra.A, 0.7), gralora_delta(bhra.B, bhra.A, 0.7),
                 "bhra_delta(ones, B, A, s = 0.7) should be 0.7 · B_ij A_ij in every block", mistakes=[
        ("the scale s is forgotten in bhra_delta (the result is 1/0.7 too large)", gralora_delta(bhra.B, bhra.A, 1.0))])
    x = torch.randn(5, n, **f64)
    expect_close(bhra(x), gra(x), "the BHRA layer on an all-ones W0 should compute the same output as GraLoRA")


@pytest.mark.exercise1
def test_gralora_blocks_are_low_rank_products():
    """Block (i, j) of GraLoRA's ΔW is s · B_ij A_ij, each of rank r/k."""
    B, A = torch.randn(3, 3, 4, 2, **f64), torch.randn(3, 3, 2, 6, **f64)
    dW = gralora_delta(B, A, 0.5)
    expected = torch.cat([torch.cat([0.5 * B[i, j] @ A[i, j] for j in range(3)], dim=1) for i in range(3)])
    swapped = torch.cat([torch.cat([0.5 * B[j, i] @ A[j, i] for j in range(3)], dim=1) for i in range(3)])
    expect_close(dW, expected, "block_product(B, A) should put B_ij @ A_ij at block (i, j) of a (12, 18) matrix", mistakes=[
        ("the grid is transposed: block (i, j) holds B_ji A_ji (check the unblocks / einsum axis order)", swapped),
        ("the scale s is applied twice or forgotten", expected / 0.5)])


@pytest.mark.exercise1
def test_khatri_rao_turns_a_hadamard_product_into_one_low_rank_product():
    m, n, r1, r2 = 7, 5, 3, 2
    B1, B2 = torch.randn(m, r1, **f64), torch.randn(m, r2, **f64)
    A1, A2 = torch.randn(r1, n, **f64), torch.randn(r2, n, **f64)
    KB, KA = khatri_rao(B1, B2), khatri_rao(A1.T, A2.T)
    assert KB.shape == (m, r1 * r2) and KA.shape == (n, r1 * r2), (
        f"khatri_rao of (m, r1) and (m, r2) should be (m, r1·r2) = {(m, r1 * r2)}, got {tuple(KB.shape)}: "
        "one row per row of the inputs, the r1·r2 products of that row's entries")
    expect_close(KB @ KA.T, (B1 @ A1) * (B2 @ A2), "khatri_rao(B1, B2) @ khatri_rao(A1ᵀ, A2ᵀ)ᵀ should equal (B1 A1) ⊙ (B2 A2)")


@pytest.mark.exercise1
def test_khatri_rao_is_the_row_wise_kronecker_product():
    P, Q = torch.randn(4, 3, **f64), torch.randn(4, 2, **f64)
    expected = torch.stack([torch.kron(P[i], Q[i]) for i in range(4)])
    expect_close(khatri_rao(P, Q), expected, "row i of khatri_rao(P, Q) should be torch.kron(P[i], Q[i])", mistakes=[
        ("the two factor axes are flattened in the wrong order, '(t r)': P's index must be the outer one, '(r t)'",
         torch.stack([torch.kron(Q[i], P[i]) for i in range(4)]))])


@pytest.mark.exercise1
def test_abba_linear_equals_x_times_delta_transposed():
    m, n, r1 = 12, 8, 3
    B1, B2 = torch.randn(m, r1, **f64), torch.randn(m, r1, **f64)
    A1, A2 = torch.randn(r1, n, **f64), torch.randn(r1, n, **f64)
    x = torch.randn(2, 5, n, **f64)
    expect_close(abba_linear(x, B1, A1, B2, A2, 0.3), x @ abba_delta(B1, A1, B2, A2, 0.3).T,
                 "ABBA's cheap forward, built on khatri_rao, should equal x ΔWᵀ (check khatri_rao's output shape (m, r1·r2))")


@pytest.mark.parametrize("k", [1, 2, 4])
def test_gralora_linear_equals_x_times_delta_transposed(k):
    m, n, rk = 16, 8, 2
    B, A = torch.randn(k, k, m // k, rk, **f64), torch.randn(k, k, rk, n // k, **f64)
    x = torch.randn(2, 5, n, **f64)
    torch.testing.assert_close(gralora_linear(x, B, A, 0.3), x @ gralora_delta(B, A, 0.3).T, **F64)


@pytest.mark.parametrize("method", ["lora", "dora", "hira", "abba", "gralora", "bhra"])
def test_layer_forward_equals_x_times_merged_weight(method):
    """Each layer's cheap forward computes x (W0 + ΔW)ᵀ + bias, with ΔW from the method's pure function."""
    layer = _layer(method, 16, 8, r=4, b=2, k=2)
    x = torch.randn(3, 8, **f64)
    expected = x @ (layer.W0 + layer.delta_weight()).T + layer.base.bias
    torch.testing.assert_close(layer(x), expected, **F64)


@pytest.mark.exercise1
def test_pure_updates_match_their_formulas():
    """The einops functions against plain matmuls written out by hand."""
    m, n, r = 6, 4, 2
    W0, B, A = torch.randn(m, n, **f64), torch.randn(m, r, **f64), torch.randn(r, n, **f64)
    mag, s = torch.rand(m, **f64) + 0.5, 0.7
    expect_close(lora_delta(B, A, s), s * B @ A, "lora_delta(B, A, s = 0.7) should be s · B @ A, shape (m, n)", mistakes=[
        ("the scale s is forgotten (the result is 1/0.7 too large)", B @ A),
        ("a transposed result, Aᵀ Bᵀ", s * (B @ A).T)])
    expect_close(hira_delta(W0, B, A, s), s * W0 * (B @ A), "hira_delta(W0, B, A, s = 0.7) should be s · W0 ⊙ (B @ A)", mistakes=[
        ("the scale s is forgotten (the result is 1/0.7 too large)", W0 * (B @ A)),
        ("W0 is left out: that is LoRA's update s·B A", s * B @ A)])
    V = W0 + s * B @ A
    expect_close(dora_delta(W0, B, A, mag, s), mag[:, None] * V / V.norm(dim=1, keepdim=True) - W0,
                 "dora_delta should be mag ⊙ V/‖V‖_row − W0 with V = W0 + s·B A (it calls lora_delta, Exercise 1.1)")


@pytest.mark.parametrize(
    "method,extra", [("lora", {}), ("lora", {"rslora": True}), ("dora", {}), ("gralora", {"k": 2})]
)
def test_scaling_is_alpha_over_r_or_sqrt_r(method, extra):
    cfg = AdapterConfig(method=method, r=16, alpha=8.0, **extra)
    assert scaling(cfg) == pytest.approx(8.0 / (4.0 if extra.get("rslora") else 16.0))


def test_scaling_of_abba_and_the_w0_coupled_methods():
    assert scaling(AdapterConfig(method="abba", r=8, alpha=3.0)) == pytest.approx(3.0)  # √α1·√α2, α1 = α2 = α
    assert scaling(AdapterConfig(method="hira", r=8, alpha=3.0)) == 1.0
    assert scaling(AdapterConfig(method="bhra", r=8, b=4, alpha=3.0)) == 1.0


# ---------------------------------------------------------------------------------------------
# Parameter budget: every method trains r (m + n) at the same r (DoRA adds m)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,n,r,b", [(64, 32, 8, 4), (32, 64, 16, 8), (48, 96, 12, 3), (16, 16, 4, 2), (64, 64, 8, 1)])
@pytest.mark.parametrize("method", ["lora", "dora", "hira", "abba", "gralora", "bhra"])
def test_trainable_count_equals_lora_budget(method, m, n, r, b):
    base = nn.Linear(n, m)
    layer = LAYERS[method](base, AdapterConfig(method=method, r=r, b=b, k=b, targets=("x",)))
    count = sum(p.numel() for name, p in layer.named_parameters() if not name.startswith("base."))
    assert count == r * (m + n) + (m if method == "dora" else 0)


# ---------------------------------------------------------------------------------------------
# BHRA's gradients: localised to each block's slice of W0 (notebook 03)
# ---------------------------------------------------------------------------------------------


def _bhra_inputs(b=2, m=8, n=6, rb=2, T=(2, 3), bias=True, requires_grad=True):
    g = torch.Generator().manual_seed(5)
    t = dict(generator=g, **f64)
    x = torch.randn(*T, n, **t)
    W0, B, A = torch.randn(m, n, **t), torch.randn(b, b, m // b, rb, **t), torch.randn(b, b, rb, n // b, **t)
    bias_ = torch.randn(m, **t) if bias else None
    inputs = [x, W0, bias_, B, A]
    return [v.requires_grad_(requires_grad) if v is not None else None for v in inputs]


@pytest.mark.parametrize("b", [1, 2, 3])
def test_bhra_factor_gradients_match_the_closed_form(b):
    """∂L/∂A_ij = s B_ijᵀ (W0_ij ⊙ G_ij) and ∂L/∂B_ij = s (W0_ij ⊙ G_ij) A_ijᵀ with G = gᵀ x."""
    s = 0.7
    x, W0, bias, B, A = _bhra_inputs(b=b, m=6 * b, n=3 * b)
    y = block_hadamard_linear_reference(x, W0, bias, B, A, s)
    g = torch.randn_like(y)
    gB, gA = torch.autograd.grad(y, (B, A), g)
    G = rearrange(g, "... m -> (...) m").T @ rearrange(x, "... n -> (...) n")  # (m, n)
    Wb, Gb = blocks(W0, b), blocks(G, b)
    for i, j in itertools.product(range(b), range(b)):
        local = Wb[i, j] * Gb[i, j]  # only this block's W0 enters
        torch.testing.assert_close(gA[i, j], s * B[i, j].T @ local, **F64)
        torch.testing.assert_close(gB[i, j], s * local @ A[i, j].T, **F64)


def test_bhra_block_gradient_ignores_the_other_blocks_of_w0():
    """Changing W0 outside block (0, 0) leaves block (0, 0)'s factor gradients unchanged."""
    x, W0, bias, B, A = _bhra_inputs(b=2, m=8, n=6)
    g = torch.randn(*x.shape[:-1], 8, **f64)
    grads = lambda W: torch.autograd.grad(block_hadamard_linear(x, W, bias, B, A, 1.0), (B, A), g)
    W1 = W0.detach().clone()
    W1[4:] *= 3.0
    W1[:, 3:] += 1.0
    (gB0, gA0), (gB1, gA1) = grads(W0), grads(W1)
    torch.testing.assert_close(gB0[0, 0], gB1[0, 0], **F64)
    torch.testing.assert_close(gA0[0, 0], gA1[0, 0], **F64)
    assert not torch.allclose(gB0[1, 1], gB1[1, 1])


@pytest.mark.exercise3
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("b", [1, 2])
def test_lean_block_hadamard_linear_passes_gradcheck(b, bias):
    """The custom backward (x, W0, bias, B, A) against finite differences in float64."""
    inputs = _bhra_inputs(b=b, m=4 * b, n=2 * b, rb=2, T=(2, 3), bias=bias)
    ok = torch.autograd.gradcheck(lambda *t: block_hadamard_linear(*t, 0.6), tuple(inputs), eps=1e-6, atol=1e-7,
                                  raise_exception=False)
    assert ok, ("the lean backward's gradients differ from finite differences. Expected, with dC_ij = W0_ij ⊙ G_ij: "
                "∂L/∂B_ij = s·dC_ij A_ijᵀ and ∂L/∂A_ij = s·B_ijᵀ dC_ij. Likely mistakes: a forgotten scale s (here 0.6), "
                "G instead of W0 ⊙ G, or a transposed block (A_ij where A_ijᵀ belongs)")


@pytest.mark.exercise3
@pytest.mark.parametrize("T", [(5,), (2, 3)])
@pytest.mark.parametrize("b", [1, 2, 4])
def test_lean_block_hadamard_linear_matches_the_autograd_reference(b, T):
    """Same outputs and the same gradients for every input as the plain-autograd reference."""
    lean = _bhra_inputs(b=b, m=4 * b, n=2 * b, T=T)
    ref = [v.detach().clone().requires_grad_() for v in lean]
    y_lean, y_ref = block_hadamard_linear(*lean, 0.6), block_hadamard_linear_reference(*ref, 0.6)
    expect_close(y_lean, y_ref, "the lean forward should equal the reference forward (the forward is not the exercise: "
                 "check blocks and block_product, Exercises 1.3 and 1.5)")
    g = torch.randn_like(y_ref)
    y_lean.backward(g)
    y_ref.backward(g)
    for name, a, r in zip(["x", "W0", "bias", "B", "A"], lean, ref):
        assert a.grad is not None and a.grad.shape == r.grad.shape, (
            f"the lean backward should return a gradient of {name} with shape {tuple(r.grad.shape)}, got "
            f"{None if a.grad is None else tuple(a.grad.shape)} (a transposed block? gB is (b, b, m/b, r_b), gA (b, b, r_b, n/b))")
        if name in ("B", "A") and torch.allclose(a.grad, r.grad / 0.6, rtol=1e-8, atol=1e-10):
            pytest.fail(f"the gradient of {name} is 1/s too large: the scale s (here 0.6) is forgotten", pytrace=False)
        expect_close(a.grad, r.grad, f"the lean backward's gradient of {name} should equal autograd's through the "
                     "reference forward (∂L/∂B_ij = s·(W0_ij ⊙ G_ij) A_ijᵀ, ∂L/∂A_ij = s·B_ijᵀ (W0_ij ⊙ G_ij))")


def test_lean_backward_skips_inputs_that_need_no_gradient():
    """Frozen x, W0 and bias (as inside a model) get no gradient; the factors still do."""
    x, W0, bias, B, A = _bhra_inputs(b=2, m=8, n=6)
    x, W0, bias = x.detach(), W0.detach(), bias.detach()
    block_hadamard_linear(x, W0, bias, B, A, 1.0).sum().backward()
    assert x.grad is None and W0.grad is None and bias.grad is None
    assert B.grad is not None and A.grad is not None


@pytest.mark.parametrize("method", ["hira", "bhra"])
def test_lean_and_reference_layers_train_identically(method):
    """The layer switch `lean` changes memory, not numbers."""
    layer = _layer(method, 16, 8, r=4, b=2)
    x = torch.randn(4, 8, **f64)
    grads = []
    for lean in (True, False):
        layer.lean = lean
        layer.zero_grad()
        layer(x).pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and {"B", "A"} <= grads[0].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], **F64)


# ---------------------------------------------------------------------------------------------
# Cheap forwards: no (m, n) matrix built (LoRA, GraLoRA, ABBA) or kept for backward (HiRA, BHRA)
# ---------------------------------------------------------------------------------------------


class _Shapes(TorchDispatchMode):
    """Records the shape of every new tensor an op returns (views of its inputs left out)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = lambda tree: [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors((args, kwargs))}
        self.shapes += [tuple(t.shape) for t in tensors(out) if t.untyped_storage().data_ptr() not in inputs]
        return out


@pytest.mark.parametrize("method", ["lora", "abba", "gralora"])
def test_additive_forwards_never_build_the_update_matrix(method):
    m, n = 24, 40
    layer = _layer(method, m, n, r=4, k=2)
    x = torch.randn(3, n, **f64)
    with _Shapes() as seen:
        layer(x)
    assert not [s for s in seen.shapes if math.prod(s) >= m * n], "an (m, n)-sized tensor was built"
    with _Shapes() as seen:
        layer.delta_weight()  # the control: the merge path does build it
    assert (m, n) in seen.shapes


@pytest.mark.parametrize("method", ["hira", "bhra"])
def test_lean_forward_keeps_no_update_matrix_for_backward(method):
    """The custom Function saves x, W0 (the parameter itself) and the factors; the reference saves W_eff."""
    m, n = 24, 40
    layer = _layer(method, m, n, r=4, b=2)
    x = torch.randn(3, n, **f64)
    for lean, expected in ((True, 0), (False, 1)):
        layer.lean = lean
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            layer(x)
        w0 = layer.W0.untyped_storage().data_ptr()
        big = [t for t in saved if t.numel() >= m * n and t.untyped_storage().data_ptr() != w0]
        assert len(big) == expected, f"lean={lean}: {len(big)} extra (m, n) tensors kept for backward"


# ---------------------------------------------------------------------------------------------
# Ranks: the bound is never exceeded and is reached by generic factors
# ---------------------------------------------------------------------------------------------


def _low_rank(m, n, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, rank, generator=g, **f64) @ torch.randn(rank, n, generator=g, **f64)


# (method, config, rank of W0 or None for full rank, expected bound); m = 48, n = 32
RANK_CASES = {
    "lora": ("lora", dict(r=4), None, 4),
    "dora": ("dora", dict(r=4), 2, 6),  # a row rescaling of W0 (rank 2) plus rank r
    "hira_rank1_w0": ("hira", dict(r=4), 1, 4),
    "hira_rank2_w0": ("hira", dict(r=4), 2, 8),
    "hira_full_w0": ("hira", dict(r=4), None, 32),
    "abba": ("abba", dict(r=8), None, 16),
    "gralora_k2": ("gralora", dict(r=4, k=2), None, 8),
    "gralora_k4": ("gralora", dict(r=4, k=4), None, 16),
    "bhra_rank1_w0": ("bhra", dict(r=4, b=2), 1, 8),  # 4 blocks · rank 1 · r_b 2
    "bhra_rank1_w0_b4": ("bhra", dict(r=4, b=4), 1, 16),  # 16 blocks · 1 · 1
    "bhra_full_w0": ("bhra", dict(r=4, b=2), None, 32),
}


def _rank_hint(method, cfg, w0_rank, expected, got) -> str:
    """The sentence a wrong rank bound fails with: what was expected, and the likely mistake."""
    r, k, w0 = cfg["r"], cfg.get("k"), w0_rank or 32
    said = (f"the rank bound of {method} ({', '.join(f'{a}={v}' for a, v in cfg.items())}) on a 48×32 W0 of rank {w0} "
            f"should be {expected}, got {got}")
    likely = {
        ("gralora", r): "a bound of r instead of k·r (k² blocks of rank r/k each)",
        ("gralora", r // k if k else None): "the rank of one block, r/k, instead of the k² blocks' k·r",
        ("hira", r): "LoRA's r instead of rank(W0)·r (the Hadamard inequality)",
        ("hira", w0 + r): "DoRA's rank(W0) + r instead of HiRA's rank(W0)·r",
        ("dora", r): "r alone: DoRA's update also holds a row rescaling of W0, rank(W0) + r",
        ("dora", w0 * r): "HiRA's rank(W0)·r instead of DoRA's rank(W0) + r",
        ("abba", r): "r instead of r1·r2 = (r/2)² (the Hadamard inequality with r1 = r2 = r/2)",
        ("abba", r * r): "r² instead of (r/2)²: each factor pair has rank r/2",
    }.get((method, got))
    return said + (f". Likely mistake: {likely}." if likely else ".")


def _rank_params():
    """Every bound is lesson 1's: Exercise 1.2 (the bounds), with 1.3 (the blocks) for the grid methods."""
    return [pytest.param(case, marks=pytest.mark.exercise1) for case in RANK_CASES]


@pytest.mark.parametrize("case", _rank_params())
def test_rank_bound_of_each_method(case):
    method, cfg, w0_rank, expected = RANK_CASES[case]
    W0 = _low_rank(48, 32, w0_rank) if w0_rank else torch.randn(48, 32, **f64)
    got = rank_bound(AdapterConfig(method=method, targets=("x",), **cfg), W0)
    assert got == expected, _rank_hint(method, cfg, w0_rank, expected, got)


@pytest.mark.parametrize("case", _rank_params())
def test_random_updates_reach_but_never_exceed_the_rank_bound(case):
    method, cfg, w0_rank, _ = RANK_CASES[case]
    W0 = _low_rank(48, 32, w0_rank) if w0_rank else torch.randn(48, 32, **f64)
    bound = rank_bound(AdapterConfig(method=method, targets=("x",), **cfg), W0)
    ranks = []
    for seed in range(3):
        torch.manual_seed(seed)
        layer = _layer(method, 48, 32, weight=W0, **cfg)
        with torch.no_grad():
            ranks.append(numeric_rank(layer.delta_weight()))
    assert max(ranks) <= bound, (
        f"{method}: random updates reach rank {max(ranks)}, above rank_bound's {bound}: the bound is too low "
        + ("(a bound of r instead of k·r?)" if method == "gralora" else "(check the formula in the table of lesson 01)"))
    assert min(ranks) == bound, (
        f"{method}: generic factors should reach the bound {bound}, got ranks {ranks}: the bound is too high "
        "(or the update itself is wrong: check the method's delta function)")


@pytest.mark.exercise1
def test_bhra_rank_bound_uses_the_rank_of_each_block():
    """A W0 whose blocks have different ranks: the bound is Σ_ij rank(W0_ij) · r_b."""
    W0 = torch.zeros(32, 32, **f64)
    W0[:16, :16] = _low_rank(16, 16, 1)  # block (0, 0): rank 1, the other three are zero
    W0[16:, 16:] = _low_rank(16, 16, 2, seed=1)  # block (1, 1): rank 2
    cfg = AdapterConfig(method="bhra", r=8, b=2, targets=("x",))  # r_b = 4
    got = rank_bound(cfg, W0)
    assert got == 1 * 4 + 2 * 4, (f"a W0 with blocks of rank 1, 0, 0, 2 and r_b = 4 should have the BHRA bound "
                                  f"Σ rank(W0_ij)·r_b = 12, got {got} (rank_bound's BHRA branch uses blocks, Exercise 1.3)")
    got = numeric_rank(_layer("bhra", 32, 32, weight=W0, r=8, b=2).delta_weight())
    assert got == 12, f"a random BHRA update on this W0 should have rank 12, got {got} (check blocks, block_product, bhra_delta)"


def test_bhra_rank_bound_caps_each_block_at_its_size():
    """One full-rank 16×16 block and r_b = 4: rank(W0_00)·r_b = 64, but a block holds rank ≤ 16."""
    W0 = torch.zeros(32, 32, **f64)
    W0[:16, :16] = torch.randn(16, 16, **f64)
    assert rank_bound(AdapterConfig(method="bhra", r=8, b=2, targets=("x",)), W0) == 16
    assert numeric_rank(_layer("bhra", 32, 32, weight=W0, r=8, b=2).delta_weight()) == 16


def test_bhra_rank_bound_caps_each_block_row_at_its_height():
    """W0 32×32, b=2, r=4 (r_b=2): a random top block-row, rank-1 blocks below.

    Each top block could add 16, but the top block-row holds only 16 rows; each bottom block adds
    1·r_b = 2. Attainable: 16 + 2 + 2 = 20 (the old per-block sum said min(32, 16+16+2+2) = 32)."""
    g = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W0 = torch.randn(32, 32, **g)
    for j in range(2):
        W0[16:, 16 * j:16 * (j + 1)] = torch.randn(16, 1, **g) @ torch.randn(1, 16, **g)
    cfg = AdapterConfig(method="bhra", r=4, b=2, targets=("x",))
    assert rank_bound(cfg, W0) == 20
    base = nn.Linear(32, 32, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = inject(nn.Sequential(base), AdapterConfig(method="bhra", r=4, b=2, targets=("0",)), verbose=False)[0]
    ranks = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            layer.A.normal_()
            layer.B.normal_()
            ranks.append(numeric_rank(layer.delta_weight()))
    assert ranks == [20, 20, 20]


def test_bhra_rank_bound_caps_each_block_column_at_its_width():
    """The transpose of the case above: a random left block-column, rank-1 blocks to its right."""
    g = dict(generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W0 = torch.randn(32, 32, **g)
    for i in range(2):
        W0[16 * i:16 * (i + 1), 16:] = torch.randn(16, 1, **g) @ torch.randn(1, 16, **g)
    assert rank_bound(AdapterConfig(method="bhra", r=4, b=2, targets=("x",)), W0) == 20


def test_hadamard_rank_inequality():
    P, Q = _low_rank(40, 30, 3), _low_rank(40, 30, 4, seed=1)
    assert numeric_rank(P * Q) <= numeric_rank(P) * numeric_rank(Q) == 12
    assert numeric_rank(P * Q) == 12


# ---------------------------------------------------------------------------------------------
# Diagnostics with known answers
# ---------------------------------------------------------------------------------------------


def test_numeric_rank_counts_independent_directions():
    assert numeric_rank(_low_rank(20, 10, 3)) == 3
    assert numeric_rank(torch.zeros(5, 4)) == 0
    assert numeric_rank(torch.eye(6, dtype=torch.bfloat16)) == 6
    batched = torch.stack([_low_rank(8, 8, 1), _low_rank(8, 8, 5)])
    assert numeric_rank(batched).tolist() == [1, 5]


def test_stable_rank_known_values():
    assert stable_rank(torch.eye(7)) == pytest.approx(7.0)
    assert stable_rank(_low_rank(9, 6, 1)) == pytest.approx(1.0)
    assert stable_rank(torch.diag(torch.tensor([4.0, 3.0]))) == pytest.approx(25.0 / 16.0)
    assert stable_rank(torch.zeros(3, 3)) == 0.0


def test_stable_rank_is_frobenius_over_spectral_norm():
    M = torch.randn(12, 7, **f64)
    assert stable_rank(M) == pytest.approx(float(M.norm() ** 2 / torch.linalg.matrix_norm(M, ord=2) ** 2), rel=1e-12)


def test_count_singular_values_above_threshold():
    U, _ = torch.linalg.qr(torch.randn(6, 6, **f64))
    V, _ = torch.linalg.qr(torch.randn(5, 5, **f64))
    S = torch.tensor([2.0, 0.5, 0.006, 0.004, 0.0], **f64)
    M = U[:, :5] @ torch.diag(S) @ V.T
    assert count_singular_values(M) == 3  # HiRA's default threshold 0.005
    assert count_singular_values(M, threshold=0.1) == 2
    assert count_singular_values(M, threshold=10.0) == 0


@pytest.mark.exercise2
def test_block_energy_sums_squares_per_block():
    M = torch.zeros(4, 6)
    M[0, 0], M[1, 2] = 3.0, 4.0  # block (0, 0) of a 2×2 grid
    M[3, 5] = 1.0  # block (1, 1)
    expect_close(block_energy(M, 2), torch.tensor([[25.0, 0.0], [0.0, 1.0]]),
                 "block_energy(M, 2) should be the (2, 2) grid of ‖M_ij‖²_F: 3² + 4² = 25 in block (0, 0), 1 in block (1, 1)",
                 mistakes=[("the norm, not its square (‖M_ij‖ instead of ‖M_ij‖²)", torch.tensor([[5.0, 0.0], [0.0, 1.0]])),
                           ("the squares are summed over the grid axes (0, 1) instead of each block's axes (-2, -1)",
                            blocks(M, 2).pow(2).sum(dim=(0, 1)))], rtol=1e-6, atol=1e-6)
    assert torch.equal(block_energy(torch.ones(6, 6), 3), torch.full((3, 3), 4.0)), \
        "block_energy(ones(6, 6), 3) should be a (3, 3) grid of 4s (each 2×2 block holds four ones)"


@pytest.mark.exercise2
def test_block_energy_adds_up_to_the_squared_frobenius_norm():
    M = torch.randn(12, 8, **f64)
    assert float(block_energy(M, 4).sum()) == pytest.approx(float(M.norm() ** 2), rel=1e-12), \
        "the block energies should add up to ‖M‖²_F: every entry's square counted once (squares, not norms)"


@pytest.mark.exercise7
def test_gini_of_equal_values_is_zero():
    assert gini(torch.full((10,), 3.0)) == pytest.approx(0.0, abs=1e-12), "equal values should have Gini 0"
    assert gini(torch.zeros(4)) == 0.0, "an all-zero input should give 0 (not nan): return 0 when the sum is 0"


@pytest.mark.exercise7
@pytest.mark.parametrize("n", [2, 5, 16])
def test_gini_of_one_hot_is_n_minus_one_over_n(n):
    x = torch.zeros(n)
    x[n // 2] = 7.0
    assert gini(x) == pytest.approx((n - 1) / n, rel=1e-12), (
        f"one non-zero value among {n} should have Gini (n − 1)/n = {(n - 1) / n:.3f}, got {gini(x):.3f}: "
        "are the values sorted ascending before the weights (2i − n − 1) are applied?")


@pytest.mark.exercise7
def test_gini_equals_the_mean_absolute_difference_formula():
    """G = Σ_ij |x_i − x_j| / (2 n² mean), on a (3, 3) grid as block_energy returns it."""
    x = torch.rand(3, 3, **f64)
    v = x.flatten()
    expected = (v[:, None] - v[None, :]).abs().sum() / (2 * v.numel() ** 2 * v.mean())
    assert gini(x) == pytest.approx(float(expected), rel=1e-12), (
        f"gini should equal Σ|x_i − x_j| / (2 n² mean) = {float(expected):.4f}, got {gini(x):.4f}: "
        "sort ascending, use i = 1..n, and divide by n·Σ v")
    assert gini(x) == pytest.approx(gini(x[torch.randperm(3)] * 5.0), rel=1e-12), "gini should not depend on order or scale"



# ---------------------------------------------------------------------------------------------
# The block-normalised ablation's update: BHRA's blocks scaled by block_gains
# ---------------------------------------------------------------------------------------------


def test_the_gains_give_every_block_the_mean_magnitude_of_w0():
    W0 = torch.randn(48, 32, dtype=torch.float64) * torch.rand(48, 1, dtype=torch.float64) * 10
    g = block_gains(W0, 4)  # (4, 4)
    per_block = (blocks(W0, 4).abs().mean(dim=(-1, -2)) * g).float()
    torch.testing.assert_close(per_block, torch.full((4, 4), W0.abs().mean().item()), rtol=1e-6, atol=0)


def _wrap_w0(cls, W0, **cfg):
    """A layer of class `cls` on a copy of W0 with random B (A as the layer initialises it)."""
    base = nn.Linear(W0.shape[1], W0.shape[0], dtype=W0.dtype)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = cls(base, AdapterConfig(targets=("x",), **cfg))
    with torch.no_grad():
        layer.B.normal_()
    return layer


def test_the_ablation_equals_bhra_when_every_block_has_the_same_mean_magnitude():
    W0 = torch.randn(32, 32, dtype=torch.float64)
    Wb = blocks(W0, 2)  # a view: normalise each block to mean |entry| 1 in place
    Wb /= Wb.abs().mean(dim=(-1, -2), keepdim=True)
    torch.manual_seed(0)
    ablation = _wrap_w0(BHRABlockNormLinear, W0, method="bhra_blocknorm", r=4, b=2)
    torch.manual_seed(0)
    bhra = _wrap_w0(BHRALinear, W0, method="bhra", r=4, b=2)
    x = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(ablation(x), bhra(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ablation.delta_weight(), bhra.delta_weight(), rtol=1e-12, atol=1e-12)


def test_the_ablation_scales_block_ij_of_bhra_by_its_gain():
    W0 = torch.randn(32, 16, dtype=torch.float64) * torch.linspace(0.1, 3, 32, dtype=torch.float64)[:, None]
    B, A = torch.randn(2, 2, 16, 2, dtype=torch.float64), torch.randn(2, 2, 2, 8, dtype=torch.float64)
    g = block_gains(W0, 2).double()
    expected = blocks(bhra_delta(W0, B, A, 1.0), 2) * g[:, :, None, None]
    torch.testing.assert_close(blocks(bhra_blocknorm_delta(W0, B, A, 1.0), 2), expected, rtol=1e-6, atol=1e-9)
    layer = _wrap_w0(BHRABlockNormLinear, W0, method="bhra_blocknorm", r=4, b=2)
    x = torch.randn(3, 16, dtype=torch.float64)
    y = x @ (layer.W0 + layer.delta_weight()).T + layer.base.bias
    torch.testing.assert_close(layer(x), y, rtol=1e-10, atol=1e-10)
    assert rank_bound(layer.cfg, W0) == rank_bound(AdapterConfig(method="bhra", r=4, b=2, targets=("x",)), W0)
