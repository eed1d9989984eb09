# %% [markdown]
# # 01 · The Hadamard rank inequality: why a W0-coupled update can be high-rank on a LoRA budget
#
# **Learning objectives.** After this notebook you can
#
# 1. state and prove (in two lines) the inequality $\operatorname{rank}(P \odot Q) \le \operatorname{rank}(P)\,\operatorname{rank}(Q)$;
# 2. compute the rank bound of LoRA, HiRA, ABBA, GraLoRA and BHRA at the **same** number of trainable parameters;
# 3. check each bound against the measured rank of random updates, and say when $W_0$'s own rank is the limit;
# 4. count the parameters of every method and see that BHRA's $b \cdot r_b (m+n)$ is LoRA's $r(m+n)$.
#
# **What it shows.** On a $512 \times 512$ layer at the budget of a rank-32 LoRA, LoRA's update stays at rank $r$,
# ABBA's reaches $r^2/4$ and GraLoRA's $k\,r$, while HiRA and BHRA reach full rank when $W_0$ is full rank, so on a full-rank $W_0$
# rank cannot tell HiRA and BHRA apart.
# When $W_0$ itself has low rank $r_0$, HiRA collapses to $r_0 \cdot r$, but BHRA keeps up to $b \cdot r_0 \cdot r$:
# the blocks, not only the Hadamard product, carry the rank. A plot of every bound against the budget $r$ and the grid $b$ closes the
# argument. Each formula is shown next to the core's own code for it (`core/bhra.py`), and each table is measured, not typed.
#
# **Notation (as for LoRA).** A frozen layer computes $y = x W_0^\top$ with $W_0 \in \mathbb{R}^{m \times n}$ (out × in, like `nn.Linear.weight`).
# An adapter learns small factors that define an update $\Delta W$, and the adapted layer computes $y = x (W_0 + \Delta W)^\top$.
# $\odot$ is the elementwise (Hadamard) product. Everything we call "the method" is imported from `core/bhra.py`.

# %%
import inspect
import sys
from pathlib import Path

from IPython.display import Markdown, display

# import the core and lab of the copy this notebook sits in (the repo, or a student's copy made by course/exercises.py)
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "core" / "bhra.py").is_file()), None)
if ROOT is not None:  # else: the installed package (a notebook copied elsewhere)
    sys.path.insert(0, str(ROOT))
import lab  # first: the numerical pins (lab/machine.py) must be set before torch computes

import math

import matplotlib.pyplot as plt
import torch
from torch import nn

from core.bhra import (
    LAYERS, METHODS, AdapterConfig, bhra_delta, block_product, blocks, gralora_delta,
    hira_delta, khatri_rao, lora_delta, numeric_rank, rank_bound, stable_rank,
)

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # ranks are decided at round-off level: float64 keeps them unambiguous
torch.set_num_threads(1)                # small SVDs: one thread is fastest, and results do not depend on the machine's cores


def show(*objects):
    # display the core's own source of each function or class next to the prose (never a copy)
    display(Markdown("\n\n".join(f"```python\n{inspect.getsource(o)}```" for o in objects)))


def low_rank(m, n, rank, gen):
    # a random m×n matrix of exactly the given rank
    return torch.randn(m, rank, generator=gen) @ torch.randn(rank, n, generator=gen)


# %% [markdown]
# ## 1. The inequality and its proof
#
# **Claim.** For any $P, Q \in \mathbb{R}^{m \times n}$: $\operatorname{rank}(P \odot Q) \le \operatorname{rank}(P)\cdot\operatorname{rank}(Q)$.
#
# **Proof sketch.** The Kronecker product $P \otimes Q$ is the $m^2 \times n^2$ matrix with entries
# $(P \otimes Q)_{(i,k),(j,l)} = P_{ij} Q_{kl}$, and $\operatorname{rank}(P \otimes Q) = \operatorname{rank}(P)\operatorname{rank}(Q)$
# (its singular values are all products $\sigma_a(P)\sigma_b(Q)$). Keep only the rows with $k = i$ and the columns with $l = j$:
# what is left has entries $P_{ij} Q_{ij}$, i.e. it *is* $P \odot Q$. A submatrix never has a larger rank than the matrix it
# comes from. $\square$
#
# A second way to see it, which is the one ABBA computes with: if $P = B_1 A_1$ and $Q = B_2 A_2$ with inner ranks $r_1, r_2$, then
# $$
# P \odot Q = (B_1 \odot_r B_2)\,(A_1^\top \odot_r A_2^\top)^\top,
# $$
# where $\odot_r$ is the row-wise Kronecker (Khatri–Rao) product, $(B_1 \odot_r B_2)_{i,(a,c)} = (B_1)_{ia} (B_2)_{ic}$.
# The middle dimension is $r_1 r_2$, so the rank is at most $r_1 r_2$.
#
# The core computes $\odot_r$ with one `einsum` and one `rearrange` (this is Exercise 1.2 of the course):

# %%
show(khatri_rao)

# %% [markdown]
# Let us check both statements numerically: $P \odot Q$ is the $(i,i),(j,j)$ submatrix of $P \otimes Q$, and the Khatri–Rao factors reproduce $P \odot Q$.

# %%
gen = torch.Generator().manual_seed(1)
m, n = 12, 10
P, Q = low_rank(m, n, 2, gen), low_rank(m, n, 3, gen)

K = torch.kron(P, Q)                                  # (m², n²)
rows = torch.arange(m) * m + torch.arange(m)          # row index (i, k=i) in the Kronecker product
cols = torch.arange(n) * n + torch.arange(n)          # column index (j, l=j)
assert torch.equal(K[rows][:, cols], P * Q), "P ⊙ Q is the (i,i),(j,j) submatrix of P ⊗ Q"

B1, A1, B2, A2 = (torch.randn(s, generator=gen) for s in [(m, 2), (2, n), (m, 3), (3, n)])
lhs = (B1 @ A1) * (B2 @ A2)
rhs = khatri_rao(B1, B2) @ khatri_rao(A1.T, A2.T).T   # (m, 6) @ (6, n)
assert torch.allclose(lhs, rhs, atol=1e-12), "Khatri–Rao identity"

# %%
# NBVAL_CHECK_OUTPUT
print("rank P, rank Q, rank P⊗Q, rank P⊙Q :", numeric_rank(P), numeric_rank(Q), numeric_rank(K), numeric_rank(P * Q))
print("Khatri-Rao factor shapes:", tuple(khatri_rao(B1, B2).shape), tuple(khatri_rao(A1.T, A2.T).shape))

# %% [markdown]
# ### Is the bound reached?
#
# For random (generic) low-rank $P$ and $Q$ the bound is reached, up to the size of the matrix:
# $\operatorname{rank}(P \odot Q) = \min(pq,\ m,\ n)$. But it is not reached when $P$ and $Q$ share structure. The extreme case is
# $P \odot P$: with $P = \sum_a u_a v_a^\top$, $P \odot P = \sum_{a,c} (u_a \odot u_c)(v_a \odot v_c)^\top$, and the terms $(a,c)$ and $(c,a)$ are
# equal, so only $p(p+1)/2$ of the $p^2$ terms are distinct. Keep this in mind: the bound is a ceiling, and the factors must be
# "different enough" to reach it.

# %%
# NBVAL_CHECK_OUTPUT
N = 64
gen = torch.Generator().manual_seed(2)
print(f"{'p':>3} {'q':>3} {'p*q':>5} {'min(pq,N)':>10} {'rank(P⊙Q)':>10} {'rank(P⊙P)':>10} {'p(p+1)/2':>9}")
for p, q in [(1, 1), (2, 3), (3, 5), (4, 4), (6, 8), (8, 8), (10, 10)]:
    P, Q = low_rank(N, N, p, gen), low_rank(N, N, q, gen)
    rk, rk_pp = numeric_rank(P * Q), numeric_rank(P * P)
    assert rk <= p * q and rk == min(p * q, N)               # the inequality, and tight for generic factors
    assert rk_pp == min(p * (p + 1) // 2, N)                 # shared structure: strictly below p²
    print(f"{p:>3} {q:>3} {p*q:>5} {min(p*q, N):>10} {rk:>10} {rk_pp:>10} {p*(p+1)//2:>9}")

# %% [markdown]
# ## 2. Same budget, six parameterizations
#
# All methods below train the parameters of a rank-$r$ LoRA. With $W_0 \in \mathbb{R}^{m\times n}$:
#
# | method | update $\Delta W$ | trainable factors | rank bound |
# |---|---|---|---|
# | LoRA | $s\,BA$ | $B \in \mathbb{R}^{m\times r}$, $A \in \mathbb{R}^{r\times n}$ | $r$ |
# | DoRA | $\mathrm{mag} \odot \frac{W_0 + sBA}{\lVert W_0 + sBA\rVert_\text{row}} - W_0$ | LoRA's + $\mathrm{mag} \in \mathbb{R}^m$ | $\operatorname{rank}(W_0) + r$ |
# | HiRA | $s\,W_0 \odot (BA)$ | as LoRA | $\operatorname{rank}(W_0)\cdot r$ |
# | ABBA | $s\,(B_1A_1)\odot(B_2A_2)$ | $r_1 = r_2 = r/2$ | $r_1 r_2 = r^2/4$ |
# | GraLoRA | block $(i,j)$ of a $k\times k$ grid: $s\,B_{ij}A_{ij}$ | $B_{ij} \in \mathbb{R}^{\frac{m}{k}\times\frac{r}{k}}$, $A_{ij} \in \mathbb{R}^{\frac{r}{k}\times\frac{n}{k}}$ | $k\,r$ |
# | BHRA | block $(i,j)$ of a $b\times b$ grid: $s\,W_{0,ij}\odot(B_{ij}A_{ij})$ | $B_{ij} \in \mathbb{R}^{\frac{m}{b}\times r_b}$, $A_{ij} \in \mathbb{R}^{r_b\times\frac{n}{b}}$, $r_b = r/b$ | $\sum_{ij}\operatorname{rank}(W_{0,ij})\,r_b$, capped per block, per block row ($\tfrac{m}{b}$) and per block column ($\tfrac{n}{b}$) |
#
# **Parameter counts.** LoRA: $r(m+n)$. BHRA has $b^2$ blocks, each with $r_b(\frac{m}{b} + \frac{n}{b})$ parameters:
# $$
# b^2 \cdot r_b\Big(\frac{m}{b}+\frac{n}{b}\Big) = b\,r_b\,(m+n) = r\,(m+n).
# $$
# GraLoRA is the same computation with $k$ and $r/k$.
#
# The updates in the core, one pure function each. The grid methods cut a matrix into its blocks,
# $$
# \texttt{blocks}(W, g)_{ijpq} = W_{\,i\frac{m}{g}+p,\; j\frac{n}{g}+q}, \qquad \texttt{block\_product}(B, A)_{ij} = B_{ij}A_{ij},
# $$
# and BHRA is HiRA's formula with the one product $BA$ replaced by the per-block products:

# %%
show(lora_delta, hira_delta, blocks, block_product, bhra_delta)


# %% [markdown]
# We do not trust the parameter-count formula: we build the real layers from `core.bhra.LAYERS` and count their trainable (non-base) parameters.

# %%
# NBVAL_CHECK_OUTPUT
def trainable(layer):
    return sum(p.numel() for name, p in layer.named_parameters() if not name.startswith("base."))

r, b, k = 32, 8, 2
print(f"{'(m, n)':>12} " + " ".join(f"{meth:>8}" for meth in METHODS) + f" {'r(m+n)':>8}")
for m, n in [(512, 512), (2048, 512), (512, 2048)]:
    counts = {}
    for meth in METHODS:
        layer = LAYERS[meth](nn.Linear(n, m, bias=False), AdapterConfig(meth, r=r, b=b, k=k))
        counts[meth] = trainable(layer)
        assert counts[meth] == r * (m + n) + (m if meth == "dora" else 0), meth
    print(f"{str((m, n)):>12} " + " ".join(f"{counts[meth]:>8}" for meth in METHODS) + f" {r*(m+n):>8}")

# %% [markdown]
# Every method trains exactly $r(m+n)$ parameters; DoRA adds its $m$ magnitudes. In particular BHRA with $b = 8$, $r_b = 4$ has
# 64 blocks of rank 4 and still costs the same as a rank-32 LoRA.
#
# ## 3. Rank bounds versus measured ranks
#
# We take a realistic shape, $512 \times 512$, with $r = 32$, $b = 8$ ($r_b = 4$) for BHRA, and GraLoRA with $k = 2$ (its default) and $k = 8$.
# `rank_bound(cfg, W0)` from the core gives each method's ceiling on this $W_0$ (its code is below). To measure what a *trained* update could reach, we fill
# every factor with random numbers (a trained adapter's factors are no longer at their zero init) and compute the numeric rank of
# $\Delta W$, i.e. the number of singular values above the round-off level.
#
# Three base weights:
# * a Gaussian $W_0$ (full rank 512, like a pre-trained layer whose spectrum does not vanish);
# * $W_0$ of rank 4;
# * $W_0$ of rank 1 (an extreme case that isolates what the blocks contribute).

# %%
show(rank_bound)

# %%
m = n = 512
gen = torch.Generator().manual_seed(3)
W0s = {"gaussian": torch.randn(m, n, generator=gen), "rank 4": low_rank(m, n, 4, gen), "rank 1": low_rank(m, n, 1, gen)}
variants = [("lora", {}), ("dora", {}), ("hira", {}), ("abba", {}), ("gralora", {"k": 2}), ("gralora", {"k": 8}), ("bhra", {})]


def random_update(meth, extra, W0, seed):
    # ΔW of a layer whose factors are all random (the zero init is replaced): a generic point of the method's update set
    torch.manual_seed(seed)
    base = nn.Linear(n, m, bias=False)
    with torch.no_grad():
        base.weight.copy_(W0)
    cfg = AdapterConfig(meth, r=32, b=8, **extra)
    layer = LAYERS[meth](base, cfg)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "mag":
                p.mul_(1 + 0.1 * torch.randn_like(p))      # DoRA: perturb the magnitudes around ‖W0‖_row
            elif not name.startswith("base."):
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
    return cfg, layer.delta_weight().detach()


results, spectra, stable = {}, {}, {}
for wname, W0 in W0s.items():
    for meth, extra in variants:
        label = meth + (f" k={extra['k']}" if extra else "")
        cfg, dW = random_update(meth, extra, W0, seed=4)
        results[wname, label] = (rank_bound(cfg, W0), numeric_rank(dW))
        spectra[wname, label] = torch.linalg.svdvals(dW)
        stable[wname, label] = stable_rank(dW)       # ‖ΔW‖_F² / ‖ΔW‖_2²
labels = [meth + (f" k={extra['k']}" if extra else "") for meth, extra in variants]

# %%
# NBVAL_CHECK_OUTPUT
print("rank(W0):", {w: numeric_rank(W0) for w, W0 in W0s.items()})
print(f"{'method':>11} | " + " | ".join(f"{w + ': bound / measured':>25}" for w in W0s))
for label in labels:
    print(f"{label:>11} | " + " | ".join(f"{results[w, label][0]:>15} / {results[w, label][1]:>7}" for w in W0s))

# %%
# every measured rank respects its bound; for these generic factors every bound is reached exactly
for (w, label), (bound, measured) in results.items():
    assert measured <= bound, (w, label)
    assert measured == bound, (w, label, bound, measured)

# where W0 limits: HiRA's rank is rank(W0)·r; with a rank-1 W0 HiRA is no richer than LoRA
assert results["rank 1", "hira"][1] == 32 == results["rank 1", "lora"][1]
assert results["rank 4", "hira"][1] == 4 * 32
# BHRA with a rank-r0 W0 reaches the paper's b·r0·r (capped by the matrix size)
assert results["rank 1", "bhra"][1] == 8 * 1 * 32
assert results["rank 4", "bhra"][1] == min(8 * 4 * 32, 512)

# %% [markdown]
# **Reading the table.**
#
# * **The bounds are tight.** For random factors every method's measured rank equals `rank_bound` exactly. A trained adapter need not
#   use the whole ceiling (its spectrum may decay, see the plot below), but nothing in the parameterization stops it.
# * **LoRA** is stuck at $r = 32$ whatever $W_0$ is; **GraLoRA** multiplies this by its grid side $k$ (64 for $k=2$, 256 for $k=8$);
#   **ABBA** reaches $r^2/4 = 256$, also independently of $W_0$.
# * **HiRA** and **BHRA** reach full rank 512 on a full-rank $W_0$. DoRA's measured rank is also full on the Gaussian $W_0$, but for a
#   different reason: its update contains a row rescaling of $W_0$ itself, $\operatorname{diag}(\cdot)\,W_0$, which is not a "new direction".
# * **Where $W_0$ is the limit.** HiRA's ceiling is $\operatorname{rank}(W_0)\cdot r$: with a rank-1 $W_0 = u v^\top$,
#   $W_0 \odot BA = \operatorname{diag}(u)\,BA\,\operatorname{diag}(v)$ has rank $r$, exactly LoRA's. BHRA applies the Hadamard product per block:
#   each of the $b^2$ blocks has rank $\operatorname{rank}(W_{0,ij})\,r_b = r_b$, a block row of $b$ such blocks has rank up to $b\,r_b = r$,
#   and the $b$ block rows stack to $b\cdot r_0\cdot r$, the paper's bound (the table's rank-1 column). With a rank-4 $W_0$ the same count exceeds the
#   matrix size, and BHRA is full rank where HiRA is not.
#
# **The practical consequence.** On a full-rank $W_0$, the usual case for a pre-trained layer whose spectrum does not vanish,
# HiRA and BHRA reach the same ceiling, $\min(m, n)$: **rank cannot tell HiRA from BHRA there**. Whatever separates the two on such a
# layer must be something other than rank: *which* full-rank updates each can reach (notebook 02) and how training moves the factors
# (notebook 03). The rank argument separates them only where the blocks of $W_0$ have low rank.
#
# Numeric rank counts every direction with a non-zero singular value, however small. The **stable rank**
# $\lVert\Delta W\rVert_F^2 / \lVert\Delta W\rVert_2^2$ (the core's `stable_rank`) counts how many directions carry the energy, so it asks the same
# question less generously. It is printed here, not asserted: it depends on the random draw.

# %%
# NBVAL_CHECK_OUTPUT
print("stable rank of W0:", {w: round(stable_rank(W0), 1) for w, W0 in W0s.items()})
print(f"{'method':>11} | " + " | ".join(f"{w + ': numeric / stable':>23}" for w in W0s))
for label in labels:
    print(f"{label:>11} | " + " | ".join(f"{results[w, label][1]:>13} / {stable[w, label]:>7.1f}" for w in W0s))

# %% [markdown]
# The spectra make the same point visually (singular values normalised by the largest one; the curves drop to round-off at the rank):

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
for ax, w in zip(axes, W0s):
    for label in labels:
        s = spectra[w, label]
        ax.semilogy(torch.arange(1, len(s) + 1), (s / s[0]).clamp_min(1e-18), label=label, lw=1.4)
    ax.set_title(f"W0 {w} (rank {numeric_rank(W0s[w])})")
    ax.set_xlabel("index k")
    ax.set_ylim(1e-18, 2)
axes[0].set_ylabel(r"$\sigma_k(\Delta W)\,/\,\sigma_1(\Delta W)$")
axes[-1].legend(fontsize=7, loc="lower left")
fig.suptitle("Singular-value spectra of random updates at the same budget (512×512, r = 32, b = 8)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3b. The bound against the budget $r$ and the grid $b$
#
# The table fixed $r = 32$ and $b = 8$. Now vary them, on a $256 \times 256$ $W_0$ of rank $r_0 = 2$ (low enough that $W_0$ limits HiRA).
# At grid side $b$ (GraLoRA: $k$) and budget $r$ the bounds are
# $$
# \text{LoRA: } r, \qquad \text{HiRA: } r_0\,r, \qquad \text{ABBA: } \tfrac{r^2}{4}, \qquad \text{GraLoRA: } k\,r, \qquad
# \text{BHRA: } \sum_{i}\min\Big(\sum_j \operatorname{rank}(W_{0,ij})\,\tfrac{r}{b},\ \tfrac{m}{b}\Big) \;\to\; b\,r_0\,r \text{ when no cap binds},
# $$
# all capped at $\min(m, n)$. BHRA with $b = 1$ is HiRA, so at $b = 1$ the two coincide; each doubling of $b$ doubles BHRA's bound at the same
# number of parameters, until a block row is full. Every point below is `rank_bound` (line) and the numeric rank of a random update of the real
# layer (marker).

# %%
m = n = 256
W0_sweep = low_rank(m, n, 2, torch.Generator().manual_seed(6))
sweep_methods = ["lora", "hira", "abba", "gralora", "bhra"]
budgets, grids = [4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32]


def bound_and_measured(meth, W0, **cfg):
    # rank_bound of the config, and the numeric rank of ΔW when every factor is random (a generic point)
    config = AdapterConfig(meth, **cfg)
    base = nn.Linear(W0.shape[1], W0.shape[0], bias=False)
    with torch.no_grad():
        base.weight.copy_(W0)
    layer = LAYERS[meth](base, config)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith("base."):
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
        return rank_bound(config, W0), numeric_rank(layer.delta_weight())


torch.manual_seed(7)
by_budget = {(meth, r_): bound_and_measured(meth, W0_sweep, r=r_, b=4, k=4) for meth in sweep_methods for r_ in budgets}
by_grid = {(meth, g): bound_and_measured(meth, W0_sweep, r=32, b=g, k=g) for meth in sweep_methods for g in grids}
assert all(measured == bound for bound, measured in [*by_budget.values(), *by_grid.values()])

# %%
# NBVAL_CHECK_OUTPUT
print(f"rank(W0) = {numeric_rank(W0_sweep)};  bound = measured at every point below")
print(f"{'method':>8} | {'against r (b = k = 4): r = ' + ', '.join(map(str, budgets)):<44} | against b (r = 32): b = {', '.join(map(str, grids))}")
for meth in sweep_methods:
    print(f"{meth:>8} | {', '.join(str(by_budget[meth, r_][0]) for r_ in budgets):<44} | {', '.join(str(by_grid[meth, g][0]) for g in grids)}")

# %%
from matplotlib.lines import Line2D

fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
for ax, data, xs, xlabel in [(axes[0], by_budget, budgets, "budget r (LoRA-equivalent rank); b = k = 4"),
                             (axes[1], by_grid, grids, "grid side b (BHRA) = k (GraLoRA); budget r = 32")]:
    for c, meth in enumerate(sweep_methods):
        ax.plot(xs, [data[meth, x][0] for x in xs], "-", color=f"C{c}", lw=2, alpha=0.6)
        ax.plot(xs, [data[meth, x][1] for x in xs], "o", color=f"C{c}", ms=7, mfc="none", mew=1.6)
    ax.axhline(min(m, n), color="grey", ls=":", lw=1)
    ax.text(xs[-1], min(m, n) * 1.1, "full rank, min(m, n)", color="grey", fontsize=8, ha="right")
    ax.set(xscale="log", yscale="log", xlabel=xlabel, xticks=xs, xticklabels=[str(x) for x in xs], ylim=(3, 500))
    ax.set_xticks([], minor=True)
    ax.grid(alpha=0.2)
handles = [Line2D([], [], color=f"C{c}", lw=2, label=meth) for c, meth in enumerate(sweep_methods)]
handles += [Line2D([], [], color="k", lw=2, alpha=0.6, label="rank_bound"),
            Line2D([], [], color="k", marker="o", mfc="none", ls="", label="measured rank")]
for ax in axes:
    ax.legend(handles=handles, fontsize=8, loc="lower right", ncol=2)
axes[0].set_ylabel("rank of ΔW  (256×256 layer, rank(W0) = 2)")
axes[0].set_title("Against the budget: HiRA stays at rank(W0)·r,\nBHRA gains a factor b over it", fontsize=10)
axes[1].set_title("Against the grid, same parameters: BHRA's bound\ndoubles with b until the matrix is full; HiRA's is flat", fontsize=10)
fig.suptitle("Rank bound (lines) and measured rank of random updates (circles): every circle sits on its line")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Reading the plot.** Against the budget, every bound grows: LoRA like $r$, HiRA like $r_0\,r$ (here only twice LoRA), GraLoRA like $k\,r$,
# ABBA like $r^2/4$ (the fastest, and independent of $W_0$), BHRA like $b\,r_0\,r$ until it is full. Against the grid at a fixed budget, LoRA,
# HiRA and ABBA do not depend on $b$; GraLoRA and BHRA both gain with the grid, BHRA starting from HiRA's value at $b = 1$ and gaining the factor
# $r_0$ over GraLoRA while $W_0$'s blocks carry rank. The circles sit on the lines: the bounds are reached by generic factors.

# %% [markdown]
# ## 4. Why blocks and not only the Hadamard product (a preview)
#
# Two identities connect the family and are cheap to check: BHRA with $b = 1$ *is* HiRA, and BHRA with $W_0$ replaced by the all-ones
# matrix *is* GraLoRA with $k = b$. BHRA is "GraLoRA's grid, with HiRA's $W_0$-coupling inside each cell".

# %%
gen = torch.Generator().manual_seed(5)
m = n = 64
W0 = torch.randn(m, n, generator=gen)
B, A = torch.randn(m, 4, generator=gen), torch.randn(4, n, generator=gen)
# b = 1: one block, the whole matrix
assert torch.allclose(bhra_delta(W0, B[None, None], A[None, None], 1.0), hira_delta(W0, B, A, 1.0), atol=1e-12)
# W0 = ones: BHRA on a b×b grid equals GraLoRA on a k = b grid
Bg, Ag = torch.randn(4, 4, m // 4, 2, generator=gen), torch.randn(4, 4, 2, n // 4, generator=gen)
assert torch.allclose(bhra_delta(torch.ones(m, n), Bg, Ag, 1.0), gralora_delta(Bg, Ag, 1.0), atol=1e-12)
print("BHRA(b=1) == HiRA and BHRA(W0=1) == GraLoRA(k=b): ok")


# %% [markdown]
# ## Conclusions
#
# Written by the next cell from the measurements of sections 1 to 4, so that no number here is typed by hand.

# %%
def conclusions():
    # the closing sentences, each from a measurement above; nothing typed in by hand
    full = min(W0s["gaussian"].shape)
    num = {key: measured for key, (_, measured) in results.items()}
    h, bh = num["gaussian", "hira"], num["gaussian", "bhra"]
    sh, sbh = stable["gaussian", "hira"], stable["gaussian", "bhra"]
    close = abs(sh - sbh) <= 0.1 * max(sh, sbh)
    # the sentences below rely on these measurements
    assert all(len({num[w, lab] for w in W0s}) == 1 for lab in ("lora", "gralora k=2", "gralora k=8", "abba"))
    assert by_grid["bhra", 1][0] == by_grid["hira", 1][0]
    assert num["rank 1", "hira"] == num["rank 1", "lora"]
    out = ["**What the rank argument shows.** Every measured rank equalled the core's `rank_bound`, on the three $W_0$ of section 3 "
           f"and at all {len(by_budget) + len(by_grid)} points of the sweep: the bounds are ceilings that generic factors reach. "
           f"At the budget of a rank-32 LoRA on a {full}×{full} layer, LoRA stayed at {num['gaussian', 'lora']}, GraLoRA reached "
           f"{num['gaussian', 'gralora k=2']} ($k = 2$) and {num['gaussian', 'gralora k=8']} ($k = 8$), ABBA {num['gaussian', 'abba']}, "
           "whatever $W_0$ was."]
    if h == bh == full:
        out.append(f"**On a full-rank $W_0$, rank cannot tell HiRA and BHRA apart.** On the Gaussian $W_0$ both reached full rank, {h} of {full}; "
                   f"their stable ranks were {sh:.0f} (HiRA) and {sbh:.0f} (BHRA), "
                   + ("within 10% of each other, so the softer measure cannot tell them apart either." if close else
                      f"{'BHRA' if sbh > sh else 'HiRA'}'s the higher, for these random factors.")
                   + " On such a layer, a difference between the two must come from something other than rank.")
    else:
        out.append(f"On the Gaussian $W_0$ HiRA reached rank {h} and BHRA {bh}, of {full}.")
    out.append(f"**Where $W_0$ limits, the blocks matter.** With a rank-1 $W_0$, HiRA fell to {num['rank 1', 'hira']}, LoRA's "
               f"{num['rank 1', 'lora']}, while BHRA kept {num['rank 1', 'bhra']} = $b \cdot r_0 \cdot r$; with a rank-4 $W_0$, HiRA "
               f"{num['rank 4', 'hira']} and BHRA {num['rank 4', 'bhra']}. In the sweep, BHRA's bound equalled HiRA's at $b = 1$ "
               f"({by_grid['bhra', 1][0]}) and reached {max(by_grid['bhra', g][0] for g in grids)} as $b$ grew, at the same parameter count. "
               "The paper's rank claim for BHRA over HiRA holds, and it is a claim about low-rank blocks of $W_0$.")
    out.append("**What cannot be concluded here.** The factors are random, not trained: a ceiling says what an update *could* reach, not what "
               "training uses (notebook 07 measures trained updates), and a full-rank update set is still a thin set of dimension at most "
               "$r(m + n)$, so rank says nothing about whether the update a task needs is in it (notebook 02). Every method trained the same "
               "$r(m + n)$ parameters (DoRA its $m$ magnitudes more), so none of these differences is bought with parameters.")
    return "\n\n".join(out)


display(Markdown(conclusions()))

# %% [markdown]
# ## Questions for the reader
#
# 1. A pre-trained layer has a fast-decaying spectrum: its numeric rank is full, but its stable rank may be 10. Which of the bounds above
#    would you expect to matter in practice, numeric or stable, and how would you measure it on a real checkpoint?
# 2. Why does $\operatorname{rank}(P\odot P)$ stop at $p(p+1)/2$? What does this say about ABBA if training drives $B_1A_1$ and $B_2A_2$ towards
#    the same matrix?
# 3. For BHRA with a rank-1 $W_0$, the measured rank was $b\cdot r = 256$. What happens with $b = 16$, $r_b = 2$ at the same $r = 32$? Predict, then
#    change one line and check.
