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

from .delta import delta_decode
from .nnls import (
    batch_factor_cache,
    cd_from,
    cholesky_clip_batch,
    cholesky_solve,
    clip_bounds,
    nnls_cd_batch,
    nnls_workspace,
    sweep_budget,
)
from .simd import (
    FIXED_MAX_WIDTH,
    delta_row,
    fixed_width_kernel,
    gather_kernel,
    stored_row,
    vfma_row,
    vload,
)

#: the fast-math flags of the block kernels (the products may be fused into multiply-adds; no
#: sum is reordered across stored entries)
FASTMATH = {"contract", "arcp", "reassoc", "nsz"}

#: ranks with product kernels written out for their width (:func:`product_kernels`)
FIXED_MAX_K = FIXED_MAX_WIDTH


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def gather_rhs(indptr, indices, data, W, Ht):
    """``Ht[j] = Wᵀ a_j`` for every column ``j`` of a CSC block, accumulated in ``W``'s dtype.

    The generic kernel; :func:`product_kernels` gives the fixed-width one (same bits).
    """
    n = indptr.size - 1
    k = W.shape[1]
    acc = np.empty(k, dtype=W.dtype)  # products accumulate in the storage dtype
    # flat views with unsigned offsets: no negative-index wraparound checks in the hot loops
    Wf = W.ravel()
    uk = np.uint64(k)
    for j in range(n):
        acc[:] = 0.0
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            a = data[p]
            base = np.uint64(indices[p]) * uk
            for f in range(uk):
                acc[f] += a * Wf[base + f]
        Ht[j, :] = acc


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def scatter_partial(indptr, indices, data, Ht, P):
    """``P += A_p H_pᵀ``: ``P[i] += a_ij h_j`` for every stored entry, in ``P``'s dtype.

    The generic kernel; :func:`product_kernels` gives the fixed-width one (same bits).
    """
    n = indptr.size - 1
    k = Ht.shape[1]
    Pf = P.ravel()
    Hf = Ht.ravel()
    uk = np.uint64(k)
    for j in range(n):
        hb = np.uint64(j) * uk
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            a = data[p]
            base = np.uint64(indices[p]) * uk
            for f in range(uk):
                Pf[base + f] += a * Hf[hb + f]


_SCATTER = """
def {name}(indptr, indices, data, Ht, P):
    for j in range(indptr.size - 1):
        h = vload(Ht, j, {B})
        r = np.uint64(0)
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            r = row(r, indices[p])
            vfma_row(P, r, data[p], h)
"""

_NAMESPACE = {"np": np, "vload": vload, "vfma_row": vfma_row,
              "__name__": __name__}  # numba's cache needs __name__


def product_kernels(data, W, Ht, P, *, delta: bool = False):
    """The ``(gather, scatter)`` pair for these arrays: :func:`gather_rhs` and
    :func:`scatter_partial`, or their fixed-width twins.

    With ``delta`` the block's ``indices`` are delta-coded (the zarr scan layout's differences,
    checked by :func:`~.delta.check_delta_rows`) and ``data`` may hold narrow integer counts:
    the fixed-width kernels sum the differences and convert each count as they read them, the
    same bits as on the decoded block; None when no fixed-width pair applies (the caller then
    decodes the block, :func:`h_step_sparse`).

    With the rank ``k`` a compile-time constant a row of ``W``, ``H`` or ``P`` is one vector
    value (:mod:`.simd`): per stored entry one vector load and one multiply-add instead of ``k``
    scalar ones, rounded lane by lane exactly like the generic loops (same bits). They apply when
    ``data``, ``W``, ``Ht`` and ``P`` share one float dtype, the factors are C-contiguous and
    ``1 ≤ k ≤`` :data:`FIXED_MAX_K`; each rank compiles once (then numba's disk cache).
    Measured on pbmc3k (one thread, one pass over all blocks): k = 10 gather 8.0 → 2.5 ms,
    scatter 7.3 → 4.6 ms; k = 30 gather 16.2 → 5.4 ms, scatter 14.4 → 9.1 ms (the gather sums
    two columns side by side, :func:`~.simd.gather_kernel`).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.random(30, 20, density=0.3, format="csc", random_state=0, dtype=np.float32)
    >>> W = np.ones((30, 5), dtype=np.float32); Ht = np.empty((20, 5), dtype=np.float32)
    >>> gather, scatter = product_kernels(A.data, W, Ht, W)
    >>> gather(A.indptr, A.indices, A.data, W, Ht)
    >>> bool(np.allclose(Ht, A.T @ W))
    True
    """
    k = W.shape[1]
    dt = W.dtype
    values_fit = (np.can_cast(data.dtype, dt, "safe") and data.dtype.kind in "uif") if delta \
        else data.dtype == dt
    if (1 <= k <= FIXED_MAX_K and dt in (np.float32, np.float64) and values_fit
            and Ht.dtype == dt and P.dtype == dt
            and W.ndim == Ht.ndim == P.ndim == 2 and Ht.shape[1] == k and P.shape[1] == k
            and W.flags.c_contiguous and Ht.flags.c_contiguous and P.flags.c_contiguous):
        gather = gather_kernel(k, FASTMATH, delta=delta)
        zero = np.zeros((1, k), dtype=dt)
        return (lambda indptr, indices, data, W, Ht: gather(indptr, indices, data, W, zero, Ht),
                fixed_width_kernel(_SCATTER, f"scatter_partial{'_delta' if delta else ''}_w{k}",
                                   k, {**_NAMESPACE, "row": delta_row if delta else stored_row},
                                   __file__, fastmath=FASTMATH))
    return None if delta else (gather_rhs, scatter_partial)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def solve_block(Ht, G, L, l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm, cd_maxit,
                cd_tol, exact, Q, s, s2):
    """The NNLS solves of a block, in place of their right-hand sides, and the small partials.

    ``Ht`` (n_p × k) holds ``Wᵀ a_j`` on entry and ``h_j`` on return; ``Q``, ``s``, ``s2``
    receive ``H_p H_pᵀ``, Σ|h| and Σh². Returns the CD sweeps made (see :func:`h_step_sparse`).
    """
    n, k = Ht.shape
    b = np.empty(k, dtype=np.float64)
    x = np.empty(k, dtype=np.float64)
    r = np.empty(k, dtype=np.float64)
    ws = nnls_workspace(k)
    # the block's problems share G: each free set's factor is made once (kernels.nnls)
    cs, cf = batch_factor_cache(k, exact and not use_chol, nonneg, ub)
    has_target = tlam != 0.0
    sweeps = 0
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
                              cd_maxit, cd_tol, exact, ws, cs, cf)
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
    return sweeps


def h_step_sparse(
    indptr, indices, data, W, G, L, l1, Tt, tlam, use_chol, nonneg, ub,
    Xprev, xscale, warm, cd_maxit, cd_tol, exact, Ht, P, Q, s, s2, delta=False,
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
    delta : bool, default False
        ``indices`` hold the zarr scan layout's per-column row differences (checked by
        :func:`~.delta.check_delta_rows`) and ``data`` its stored values (narrow integer counts
        are converted exactly): the products read them as stored, with the same bits as on the
        decoded block (:func:`product_kernels`).

    Returns
    -------
    sweeps : int, the number of CD sweeps made (0 for Cholesky).

    Three sweeps over the block: the right-hand sides (a gather of ``W``'s rows), the solves,
    then ``P`` (a scatter into ``P``'s rows), by :func:`product_kernels` and
    :func:`solve_block`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.random(40, 25, density=0.3, format="csc", random_state=1, dtype=np.float32)
    >>> W = np.random.default_rng(0).random((40, 3), dtype=np.float32)
    >>> G = W.T.astype(np.float64) @ W + 1e-12 * np.eye(3)
    >>> Ht, P = np.empty((25, 3), np.float32), np.zeros((40, 3), np.float32)
    >>> Q, s, s2 = np.zeros((3, 3)), np.zeros(3), np.zeros(3)
    >>> sweeps = h_step_sparse(A.indptr, A.indices, A.data, W, G, G, 0.0, np.zeros((1, 3)),
    ...                        0.0, False, True, 0.0, np.zeros((1, 3)), np.ones(3), False, 100,
    ...                        1e-8, True, Ht, P, Q, s, s2)
    >>> bool(Ht.min() >= 0), bool(np.allclose(P, A @ Ht, atol=1e-4))
    (True, True)
    """
    kernels = product_kernels(data, W, Ht, P, delta=delta)
    if kernels is None:  # no fixed-width kernel reads this delta-coded block: decode it
        rows = np.empty(indices.size, dtype=np.int32)
        delta_decode(indptr, indices, rows)
        indices, data = rows, data.astype(W.dtype)
        kernels = product_kernels(data, W, Ht, P)
    gather, scatter = kernels
    gather(indptr, indices, data, W, Ht)
    sweeps = solve_block(Ht, G, L, l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm,
                         cd_maxit, cd_tol, exact, Q, s, s2)
    scatter(indptr, indices, data, Ht, P)
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
