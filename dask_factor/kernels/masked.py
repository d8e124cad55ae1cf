"""Masked (missing values, cross-validation) ALS kernels: the speckled hold-out, per-entry Grams.

The hold-out is a pure function of ``(seed, i, j)`` (docs/cross_validation.md, with our
threshold): entry (i, j), 0-based, is a **test** entry iff

    mix(seed + i·0x9e3779b97f4a7c15 + j·0x6c62272e07bb0142) < ⌊f·2⁶⁴⌋        (uint64, wrapping)

so a block task regenerates the mask of its own columns from its global column offset; nothing is
stored, and any chunking, scheduler or worker count gives the same mask.

Two ways an entry leaves the fit:

* **excluded** ("subtract" mode, ``observed_only=False``): every entry is observed except the test
  entries and NaN values. Per column ``G_j = G − Σ_{i∈E_j} w_i w_iᵀ``, ``b_j = Wᵀa_j − Σ_{i∈E_j}
  w_i a_ij`` (NaN counted as 0), and per row ``G_i = Q − Σ_{j∈E_i} h_j h_jᵀ``. With
  ``all_rows=True`` (sparse input, zeros can be test entries) every row of a column is hashed:
  O(m) hashes per column per iteration; with ``mask_zeros`` only stored non-zeros are candidates:
  O(nnz).
* **observed only** (``observed_only=True``, ``mask="zeros"``): only stored entries are observed,
  so the Grams are built from the training entries directly, ``G_j = Σ_{train i} w_i w_iᵀ``.

One call per block does the whole masked H half-step plus the W-update partials: the new H, the
partials ``P`` (train entries only), ``Q``, ``s``, ``s2``, the per-row Gram terms ``C``
(m × k(k+1)/2, upper triangles packed row-major: corrections in subtract mode, the train Gram
in observed mode), and the losses of the model ``(W, H_new)``: test SSE, train SSE, and the counts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .nnls import cd_from, nnls_workspace, no_factor_cache
from .rng import splitmix64_mix

GOLDEN_ROW = 0x9E3779B97F4A7C15
GOLDEN_COL = 0x6C62272E07BB0142


def holdout_threshold(test_fraction: float) -> int:
    """``⌊f·2⁶⁴⌋`` as an integer in [0, 2⁶⁴) (0 → nothing held out)."""
    f = float(test_fraction)
    if f <= 0.0:
        return 0
    return min(int(f * 2.0**64), 2**64 - 1)


def cv_hash_seed(cv_seed: int) -> int:
    """The hash seed of a CV seed: ``uint32(cv_seed)``, 0 → 12345 (docs/cross_validation.md)."""
    s = int(cv_seed) & 0xFFFFFFFF
    return s if s else 12345


def speckled_mask(m: int, n: int, test_fraction: float, cv_seed: int, j0: int = 0):
    """The (m × n) boolean hold-out of columns ``j0:j0+n`` for a CV seed (True = test entry).

    For checking and small inputs only: fits never materialise it.

    Examples
    --------
    >>> round(float(speckled_mask(1000, 1000, 0.1, 42).mean()), 3)
    0.1
    """
    return speckled_mask_block(np.uint64(cv_hash_seed(cv_seed)),
                               np.uint64(holdout_threshold(test_fraction)), int(m), int(j0),
                               int(n))


@njit(nogil=True, cache=True, inline="always")
def is_held_out(seed, i, j, thr):
    """True when entry (i, j) is held out (``seed``, ``thr`` uint64; i, j non-negative ints)."""
    z = seed + np.uint64(i) * np.uint64(GOLDEN_ROW) + np.uint64(j) * np.uint64(GOLDEN_COL)
    return splitmix64_mix(z) < thr


@njit(nogil=True, cache=True, fastmath=False)
def speckled_mask_block(seed, thr, m, j0, n_p):
    """The dense test mask (m × n_p, bool) of columns ``j0:j0+n_p`` (for tests and small inputs)."""
    out = np.zeros((m, n_p), dtype=np.bool_)
    for jl in range(n_p):
        for i in range(m):
            out[i, jl] = is_held_out(seed, i, j0 + jl, thr)
    return out


@njit(nogil=True, cache=True, fastmath=False)
def count_test_stored(seed, thr, indptr, indices, data, j0, mask_zeros):
    """Number of stored entries of a CSC block that are test entries."""
    c = 0
    for jl in range(indptr.size - 1):
        for p in range(indptr[jl], indptr[jl + 1]):
            if mask_zeros and data[p] == 0.0:
                continue
            if is_held_out(seed, indices[p], j0 + jl, thr):
                c += 1
    return c


@njit(nogil=True, cache=True, fastmath=False)
def column_excluded(indptr, indices, data, jl, jg, m, seed, thr, all_rows, mask_zeros,
                    mptr, midx, ex_row, ex_val, ex_test, transposed=False):
    """Fill the excluded entries of column ``jl`` (global ``jg``), by increasing row; returns
    their count.

    Test entries (hashed over every row when ``all_rows``, else over the stored entries), NaN
    entries and the rows of the user's mask column (``midx[mptr[jl]:mptr[jl+1]]``, sorted; an
    empty ``mptr`` means no mask) are excluded; the last two are missing values (``ex_test``
    False, value 0), whether stored or not.

    With ``transposed`` the block is a block of Aᵀ: column ``jl`` is row ``jg`` of A and the
    block's rows are A's columns, so entry (i, jl) is hashed as A's entry (jg, i).
    """
    ne = 0
    p0 = indptr[jl]
    p1 = indptr[jl + 1]
    q = 0
    q1 = 0
    if mptr.size > 0:
        q = mptr[jl]
        q1 = mptr[jl + 1]
    if all_rows:
        p = p0
        for i in range(m):
            a = 0.0
            stored = False
            if p < p1 and indices[p] == i:
                a = data[p]
                stored = True
                p += 1
            while q < q1 and midx[q] < i:
                q += 1
            if (q < q1 and midx[q] == i) or (stored and np.isnan(a)):
                ex_row[ne] = i
                ex_val[ne] = 0.0
                ex_test[ne] = False
                ne += 1
                continue
            if thr != 0 and (is_held_out(seed, jg, i, thr) if transposed
                             else is_held_out(seed, i, jg, thr)):
                if mask_zeros and a == 0.0:
                    continue
                ex_row[ne] = i
                ex_val[ne] = a
                ex_test[ne] = True
                ne += 1
    else:
        p = p0
        while p < p1 or q < q1:
            ip = indices[p] if p < p1 else m
            iq = midx[q] if q < q1 else m
            if iq <= ip:  # a masked entry (stored or not): missing
                ex_row[ne] = iq
                ex_val[ne] = 0.0
                ex_test[ne] = False
                ne += 1
                q += 1
                if iq == ip:
                    p += 1
                continue
            a = data[p]
            i = ip
            p += 1
            if np.isnan(a):
                ex_row[ne] = i
                ex_val[ne] = 0.0
                ex_test[ne] = False
                ne += 1
                continue
            if mask_zeros and a == 0.0:
                continue
            if thr != 0 and (is_held_out(seed, jg, i, thr) if transposed
                             else is_held_out(seed, i, jg, thr)):
                ex_row[ne] = i
                ex_val[ne] = a
                ex_test[ne] = True
                ne += 1
    return ne


@njit(nogil=True, cache=True, inline="always")
def _add_penalties(G, b, Gx, Bx, row):
    """``G += Gx`` and ``b += Bx[row]`` (per-factor penalties; empty arrays: none)."""
    k = b.size
    if Gx.shape[0] > 0:
        for f in range(k):
            for g in range(k):
                G[f, g] += Gx[f, g]
    if Bx.shape[0] > 0:
        for f in range(k):
            b[f] += Bx[row, f]


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "reassoc", "nsz"})
def masked_h_step(
    indptr, indices, data, j0, m, W, G, l1, nonneg, ub, Xprev, xscale, warm, cd_maxit, cd_tol,
    exact, seed, thr, all_rows, mask_zeros, observed_only, l2_eps,
    Ht, P, Q, C, s, s2, stats, mptr, midx, Gx, Bx, fixed=False,
):
    """The masked H half-step on one CSC block (columns ``j0 …`` of A) and its partials.

    Parameters
    ----------
    indptr, indices, data : CSC of the block (m × n_p); NaN values are missing entries.
    j0 : global index of the block's first column.
    W : (m, k) current W; G : (k, k) float64 ``WᵀW + (L2 + ε)I``; ``l2_eps`` = that L2 + ε.
    l1, nonneg, ub, cd_maxit, cd_tol : H-side options; coordinate descent is the solver
        (``cd_maxit`` bounds a warm start; a cold solve gets at least ``COLD_CD_MAXIT`` sweeps,
        see :func:`dask_factor.kernels.nnls.sweep_budget`).
    exact : finish each solve exactly on its free set (:func:`dask_factor.kernels.nnls.cd_solve`).
    Xprev, xscale, warm : warm start ``x₀ = Xprev[j]·xscale``.
    seed, thr : uint64 hash seed and threshold (thr 0: no test entries).
    all_rows : hash every row of a column (zeros can be test entries) rather than the stored ones.
    mask_zeros : only non-zero entries can be test entries.
    observed_only : only stored entries are observed (``mask="zeros"``).
    Ht : (n_p, k) output H (samples × k).
    P : (m, k) float64, zeroed: Σ_train a_ij h_j per row.  Q : (k, k) float64, zeroed: Σ h hᵀ.
    C : (m, k(k+1)/2) float64, zeroed: per-row packed Σ h hᵀ over the excluded entries
        (subtract mode) or over the train entries (observed mode).
    s, s2 : (k,) float64 zeroed.
    stats : (4,) float64 zeroed: test SSE, train SSE, n_test, n_train of the model (W, H_new).
    mptr, midx : the user's mask of the block as CSC (``indptr``, sorted ``indices``): masked
        entries are missing values. Empty arrays: no mask.
    Gx : (k, k) float64 added to every column's Gram (penalties: graph, L21, target), or (0, 0).
    Bx : (n_p, k) float64 added to the columns' right-hand sides (a target), or (0, k).
    fixed : no solve: H is ``Xprev`` as given (the second phase of an angular step), only the
        partials and losses are computed.

    Returns
    -------
    sweeps : int
    """
    n_p = indptr.size - 1
    k = W.shape[1]
    kk = k * (k + 1) // 2
    b = np.empty(k, dtype=np.float64)
    x = np.empty(k, dtype=np.float64)
    r = np.empty(k, dtype=np.float64)
    wi = np.empty(k, dtype=np.float64)
    xx = np.empty(kk, dtype=np.float64)  # packed x xᵀ of the current column
    Gj = np.empty((k, k), dtype=np.float64)
    ws = nnls_workspace(k)
    cs, cf = no_factor_cache()  # each column has its own Gram
    cap = m if all_rows else 1
    for jl in range(n_p):
        c = indptr[jl + 1] - indptr[jl]
        if mptr.size > 0:
            c += mptr[jl + 1] - mptr[jl]
        if c > cap:
            cap = c
    ex_row = np.empty(cap, dtype=np.int64)
    ex_val = np.empty(cap, dtype=np.float64)
    ex_test = np.empty(cap, dtype=np.bool_)
    sweeps = 0
    for jl in range(n_p):
        jg = j0 + jl
        p0 = indptr[jl]
        p1 = indptr[jl + 1]
        ne = column_excluded(indptr, indices, data, jl, jg, m, seed, thr,
                             all_rows and not observed_only, mask_zeros, mptr, midx,
                             ex_row, ex_val, ex_test)
        # ---- normal equations of this column
        if observed_only:
            for f in range(k):
                b[f] = 0.0
                for g in range(k):
                    Gj[f, g] = 0.0
            e = 0
            for p in range(p0, p1):
                i = indices[p]
                a = data[p]
                while e < ne and ex_row[e] < i:  # excluded rows that are not stored
                    e += 1
                if e < ne and ex_row[e] == i:
                    e += 1
                    continue
                for f in range(k):
                    wi[f] = W[i, f]
                for f in range(k):
                    wf = wi[f]
                    b[f] += wf * a
                    for g in range(k):
                        Gj[f, g] += wf * wi[g]
        else:
            for f in range(k):
                for g in range(k):
                    Gj[f, g] = G[f, g]
                b[f] = 0.0
            # train entries only: skip the excluded ones (never add-then-subtract a test
            # value, so the fit does not depend on held-out values even by rounding)
            e = 0
            for p in range(p0, p1):
                i = indices[p]
                while e < ne and ex_row[e] < i:
                    e += 1
                if e < ne and ex_row[e] == i:
                    continue
                a = data[p]
                for f in range(k):
                    b[f] += W[i, f] * a
            for e in range(ne):
                i = ex_row[e]
                for f in range(k):
                    wi[f] = W[i, f]
                for f in range(k):
                    wf = wi[f]
                    for g in range(k):
                        Gj[f, g] -= wf * wi[g]
        for f in range(k):
            for g in range(f + 1, k):  # exact symmetry whatever the summation order
                Gj[g, f] = Gj[f, g]
            b[f] -= l1
        if observed_only:
            for f in range(k):
                Gj[f, f] += l2_eps
        _add_penalties(Gj, b, Gx, Bx, jl)
        # ---- solve (coordinate descent, true-residual warm start)
        if fixed:
            for f in range(k):
                x[f] = Xprev[jl, f]
        else:
            sweeps += cd_from(Gj, b, x, r, Xprev[jl if warm else 0], xscale, warm, nonneg, ub,
                              cd_maxit, cd_tol, exact, ws, cs, cf)
        for f in range(k):
            Ht[jl, f] = x[f]
            x[f] = Ht[jl, f]
        # ---- partials and losses
        q = 0
        for f in range(k):
            xf = x[f]
            s[f] += abs(xf)
            s2[f] += xf * xf
            for g in range(f, k):
                Q[f, g] += xf * x[g]
                xx[q] = xf * x[g]
                q += 1
        if observed_only:
            e = 0
            for p in range(p0, p1):
                i = indices[p]
                a = data[p]
                pred = 0.0
                for f in range(k):
                    pred += W[i, f] * x[f]
                res = a - pred
                while e < ne and ex_row[e] < i:
                    e += 1
                if e < ne and ex_row[e] == i:
                    e += 1
                    if ex_test[e - 1]:
                        stats[0] += res * res
                        stats[2] += 1.0
                    continue
                stats[1] += res * res
                stats[3] += 1.0
                for f in range(k):
                    P[i, f] += a * x[f]
                for q in range(kk):
                    C[i, q] += xx[q]
        else:
            # train SSE by the Gram trick over the train entries:
            # Σ_train a² − 2 Σ_train a·ŵᵢ + xᵀ(WᵀW)x − Σ_excluded ŵᵢ²,  ŵᵢ = w_iᵀx
            asq = 0.0
            cross = 0.0
            e = 0
            for p in range(p0, p1):
                i = indices[p]
                while e < ne and ex_row[e] < i:
                    e += 1
                if e < ne and ex_row[e] == i:
                    continue
                a = data[p]
                asq += a * a
                pred = 0.0
                for f in range(k):
                    pred += W[i, f] * x[f]
                cross += a * pred
                for f in range(k):
                    P[i, f] += a * x[f]
            quad = 0.0
            for f in range(k):
                acc = G[f, f] - l2_eps
                acc *= x[f]
                for g in range(k):
                    if g != f:
                        acc += G[f, g] * x[g]
                quad += x[f] * acc
            full = asq - 2.0 * cross + quad
            for e in range(ne):
                i = ex_row[e]
                a = ex_val[e]
                pred = 0.0
                for f in range(k):
                    pred += W[i, f] * x[f]
                res = a - pred
                full -= pred * pred
                if ex_test[e]:
                    stats[0] += res * res
                    stats[2] += 1.0
                for q in range(kk):
                    C[i, q] += xx[q]
            stats[1] += full
            stats[3] += m - ne
    for f in range(k):
        for g in range(f + 1, k):
            Q[g, f] = Q[f, g]
    return sweeps


@njit(nogil=True, cache=True, fastmath=False)
def masked_w_rows(Qn, C, dh, Pn, l1, l2_eps, observed_only, nonneg, ub, Xwarm, warm,
                  cd_maxit, cd_tol, exact, Xt, Gx, Bx):
    """Solve rows of W, each against its own Gram.

    ``G_i = Qn − C_i/(dh dhᵀ)`` (subtract mode) or ``C_i/(dh dhᵀ)`` (observed mode), plus
    ``l2_eps`` on the diagonal; ``b_i = Pn_i − l1``. ``C`` rows are packed upper triangles of the
    raw-H products; ``Xt`` (r × k, float64) receives the solutions. Without ``warm`` (the first
    W solve) each row gets at least ``COLD_CD_MAXIT`` sweeps (:func:`~.nnls.sweep_budget`).
    ``Gx`` (k × k, or 0 × 0) is added to every row's Gram and ``Bx`` (r × k, or 0 × k) to the
    right-hand sides (penalties and targets of W).
    """
    r_, k = Pn.shape
    Gi = np.empty((k, k), dtype=np.float64)
    b = np.empty(k, dtype=np.float64)
    x = np.empty(k, dtype=np.float64)
    r = np.empty(k, dtype=np.float64)
    unit = np.ones(k, dtype=np.float64)  # the warm start is used as given
    ws = nnls_workspace(k)
    cs, cf = no_factor_cache()  # each row has its own Gram
    for i in range(r_):
        q = 0
        for f in range(k):
            for g in range(f, k):
                cij = C[i, q] / (dh[f] * dh[g])
                q += 1
                v = cij if observed_only else Qn[f, g] - cij
                Gi[f, g] = v
                Gi[g, f] = v
            Gi[f, f] += l2_eps
            b[f] = Pn[i, f] - l1
        _add_penalties(Gi, b, Gx, Bx, i)
        cd_from(Gi, b, x, r, Xwarm[i if warm else 0], unit, warm, nonneg, ub, cd_maxit, cd_tol,
                exact, ws, cs, cf)
        for f in range(k):
            Xt[i, f] = x[f]
