"""The per-block work of one ALS iteration, fused into a single pass over a column block.

For a block ``A_p`` (m × n_p, CSC) and the current normalised ``W`` (m × k) one call does
(docs/concepts.md, "One iteration, one pass over the data"):

    b_j   = Wᵀ a_j − L1 (+ λ t_j)          right-hand side
    h_j   = NNLS(G, b_j)                    warm-started from the previous iterate
    P    += a_j h_jᵀ                         A_p H_pᵀ  (m × k), for the W update
    Q    += h_j h_jᵀ                         H_p H_pᵀ  (k × k)
    s    += |h_j|,  s2 += h_j²               H's row sums (L1) and squared norms (L2)

in three sweeps over the block inside one task (right-hand sides, solves, partials): a block of
~10⁶ entries stays in cache between the sweeps, and keeping the gather (``W`` rows) apart from the
scatter (``P`` rows) measured faster than interleaving them per column. Samples are stored as rows
of ``Ht`` (n_p × k): each sample's factor is contiguous.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .nnls import (
    cd_from,
    cholesky_clip_batch,
    cholesky_solve,
    clip_bounds,
    nnls_cd_batch,
    nnls_workspace,
    sweep_budget,
)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "reassoc", "nsz"})
def h_step_sparse(
    indptr, indices, data, W, G, L, l1, Tt, tlam, use_chol, nonneg, ub,
    Xprev, xscale, warm, cd_maxit, cd_tol, exact, Ht, P, Q, s, s2,
):
    """One fused H half-step plus W-update partials over a CSC block.

    Parameters
    ----------
    indptr, indices, data : CSC arrays of ``A_p`` (m × n_p); int32 or int64 pointers.
    W : (m, k) current normalised W (any float dtype).
    G : (k, k) float64 Gram ``WᵀW`` with L2/target/… already folded in.
    L : (k, k) float64 lower Cholesky factor of ``G`` (used when ``use_chol``).
    l1 : float, subtracted from every right-hand side entry.
    Tt, tlam : (n_p, k) target and its weight; ``b_j += tlam·t_j`` when ``tlam != 0``.
    Xprev, xscale : warm start ``x₀ = Xprev[j] * xscale`` (n_p × k, k); used when ``warm``.
        ``Xprev`` must not be ``Ht`` itself (Ht is overwritten with the right-hand sides first).
    cd_maxit, cd_tol : coordinate-descent budget of a warm start; a cold solve (``warm`` False)
        gets at least ``COLD_CD_MAXIT`` sweeps (:func:`~.nnls.sweep_budget`).
    exact : bool, finish every coordinate-descent solve exactly on its free set
        (:func:`~.nnls.cd_solve`; the ``solver="auto"`` path).
    Ht : (n_p, k) output, the new H block (samples × k), storage dtype.
    P : (m, k) output, zeroed by the caller; receives ``A_p H_pᵀ`` accumulated in P's dtype
        (the storage dtype: float32 by default; the engine reduces blocks in float64).
    Q : (k, k) float64 output, zeroed; receives ``H_p H_pᵀ``.
    s, s2 : (k,) float64 outputs, zeroed; receive Σ|h| and Σh² per factor.

    Returns
    -------
    sweeps : int, the number of CD sweeps made (0 for Cholesky).
    """
    n = indptr.size - 1
    k = W.shape[1]
    acc = np.empty(k, dtype=W.dtype)  # products accumulate in the storage dtype (SIMD-friendly)
    b = np.empty(k, dtype=np.float64)
    x = np.empty(k, dtype=np.float64)
    r = np.empty(k, dtype=np.float64)
    ws = nnls_workspace(k)
    has_target = tlam != 0.0
    sweeps = 0
    # flat views with unsigned offsets: no negative-index wraparound checks in the hot loops
    Wf = W.ravel()
    Pf = P.ravel()
    Hf = Ht.ravel()
    uk = np.uint64(k)
    # phase 1: right-hand sides Wᵀ a_j into Ht (W's rows stay hot in cache)
    for j in range(n):
        acc[:] = 0.0
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            a = data[p]
            base = np.uint64(indices[p]) * uk
            for f in range(uk):
                acc[f] += a * Wf[base + f]
        Ht[j, :] = acc
    # phase 2: the NNLS solves, column by column, and the small partials
    for j in range(n):
        for f in range(k):
            b[f] = np.float64(Ht[j, f]) - l1
        if has_target:
            for f in range(k):
                b[f] += tlam * Tt[j, f]
        if use_chol:
            cholesky_solve(L, b, x)
            clip_bounds(x, nonneg, ub)
        else:
            sweeps += cd_from(G, b, x, r, Xprev[j if warm else 0], xscale, warm, nonneg, ub,
                              cd_maxit, cd_tol, exact, ws)
        for f in range(k):
            Ht[j, f] = x[f]
            x[f] = Ht[j, f]  # the stored (possibly float32) value feeds the partials
        for f in range(k):
            xf = x[f]
            s[f] += abs(xf)
            s2[f] += xf * xf
            for g in range(f, k):
                Q[f, g] += xf * x[g]
    for f in range(k):
        for g in range(f + 1, k):
            Q[g, f] = Q[f, g]
    # phase 3: P += a_j h_jᵀ (P's rows stay hot in cache)
    for j in range(n):
        hb = np.uint64(j) * uk
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            a = data[p]
            base = np.uint64(indices[p]) * uk
            for f in range(uk):
                Pf[base + f] += a * Hf[hb + f]
    return sweeps


def h_step_dense(A, W, G, L, l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm,
                 cd_maxit, cd_tol, exact, Ht):
    """The dense-block twin of :func:`h_step_sparse` (BLAS products, numba solves).

    Returns ``(P, Q, s, s2, sweeps)`` with the same meaning; ``Ht`` is filled in place.
    """
    A64 = np.asarray(A, dtype=np.float64)
    Bt = A64.T @ np.asarray(W, dtype=np.float64)  # n_p × k
    Bt -= l1
    if tlam != 0.0:
        Bt += tlam * np.asarray(Tt, dtype=np.float64)
    sweeps = 0
    if use_chol:
        cholesky_clip_batch(L, Bt, Ht, nonneg, ub)
    else:
        if warm:
            Ht[...] = np.asarray(Xprev, dtype=np.float64) * xscale
        sweeps = nnls_cd_batch(G, Bt, Ht, warm, nonneg, ub, sweep_budget(warm, cd_maxit),
                               cd_tol, exact)
    X = np.asarray(Ht, dtype=np.float64)
    P = A64 @ X
    Q = X.T @ X
    return P, Q, np.abs(X).sum(axis=0), (X * X).sum(axis=0), sweeps


def w_solve(G, Bt, L, use_chol, nonneg, ub, Xwarm, warm, cd_maxit, cd_tol, exact, out_dtype):
    """Solve the W half-step for a set of rows: ``Wᵀ`` rows from ``G`` (k × k) and ``Bt`` (r × k).

    Returns the (r × k) solution in ``out_dtype``.
    """
    Xt = np.empty(Bt.shape, dtype=np.float64)
    if use_chol:
        cholesky_clip_batch(L, Bt, Xt, nonneg, ub)
    else:
        if warm:
            Xt[...] = Xwarm
        nnls_cd_batch(G, Bt, Xt, warm, nonneg, ub, sweep_budget(warm, cd_maxit), cd_tol, exact)
    return Xt.astype(out_dtype, copy=False)
