"""Batched non-negative least squares for the ALS normal equations.

Every problem in a batch shares one ``k × k`` Gram matrix ``G`` and has its own right-hand side:
row ``j`` of ``Bt`` (shape ``n × k``) holds ``b_j`` and row ``j`` of ``Xt`` the solution ``x_j`` of

    minimise  ½ xᵀ G x − bᵀ x   subject to  0 ≤ x ≤ ub   (bounds optional)

L1 and L2 are folded into ``B`` and ``G`` by the caller (``B −= L1``, ``G_ii += L2``), exactly as
RcppML does on its main path (docs/concepts.md), so the solvers here only see bounds.

Two solvers:

* :func:`nnls_cd_batch` — coordinate descent (docs/concepts.md) with a *true residual* warm start
  ``r = b − G x₀`` (RcppML's sparse path forgets the ``G x₀`` term, ⚠ G3; we do not). With
  ``exact`` (the ``solver="auto"`` path) each problem is solved exactly (:func:`exact_solve`):
  by block principal pivoting with a cache of free-set factors up to rank :data:`CACHE_MAX_K`
  (:func:`bpp_solve`), by the active-set method with updated factors above it
  (:func:`active_set_solve`), and by coordinate descent finished on its free set when a bound
  or a singular set rules those out.
* :func:`cholesky_clip_batch` — RcppML's "cholesky": ``x = G⁻¹ b`` then clip into the bounds.
  Not an NNLS solution, but what RcppML computes, so it reproduces RcppML runs.

**Sweep budget of a cold solve.** The ALS kernels (:func:`cd_from` and the callers of
:func:`sweep_budget`) treat ``maxit`` as the budget of a *warm-started* solve: the "auto" solver's
10 sweeps are enough only because each solve starts from the previous iterate. A cold solve (no
previous iterate: the first H solve from the random W0, the first W solve) starts from zero, and
on the Gram of a uniform random W0 (columns with cosine ≈ 0.75, condition ≈ 50) 10 cyclic sweeps
leave the last coordinates almost empty: a factor comes out nearly dead, supported on a handful
of samples. L1 normalisation then makes it a sample-specific factor that overfits and, in a
cross-validated fit, drives the test loss up from iteration 3 on (issue 9, item 6: aml, k = 12,
seed 13). So a cold solve always gets at least :data:`COLD_CD_MAXIT` sweeps. The batch primitive
:func:`nnls_cd_batch` itself keeps ``maxit`` exact.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: minimum sweeps of a cold (not warm-started) coordinate-descent solve in the ALS kernels
COLD_CD_MAXIT = 100


#: rows of an exact solve's workspace beyond the k × k Cholesky factor
WS_EXTRA = 6


@njit(nogil=True, cache=True, fastmath=False)
def nnls_workspace(k):
    """Scratch space of one exact (``exact=True``) solve: a (k + 6) × k float64 array.

    >>> nnls_workspace(3).shape
    (9, 3)
    """
    return np.empty((k + WS_EXTRA, k), dtype=np.float64)


#: ranks up to which a batch sharing one Gram caches the Cholesky factor of each free set it
#: meets (:func:`factor_cache`: 2^k factors of k × k, 0.8 MB at k = 10, 4.7 MB at k = 12)
CACHE_MAX_K = 12


@njit(nogil=True, cache=True, fastmath=False)
def no_factor_cache():
    """An empty :func:`factor_cache`: the solvers factor every free set (a batch whose Gram
    varies by problem)."""
    return np.zeros((0, 1, 1)), np.zeros(0, dtype=np.int8)


@njit(nogil=True, cache=True, fastmath=False)
def factor_cache(k):
    """``(S, flags)``: room for the Cholesky factor of every free set of a rank-k problem (the
    set's bit mask indexes both; a flag is 0 until the factor is made, then 1, or −1 for a
    singular set), for a batch of problems sharing one Gram (:func:`bpp_solve`). Empty above
    :data:`CACHE_MAX_K`. The factors are the ones made per problem, so a cached solve gives
    the same bits.

    >>> S, f = factor_cache(3)
    >>> S.shape, int(f.sum()), factor_cache(CACHE_MAX_K + 1)[1].size
    ((8, 3, 3), 0, 0)
    """
    if k > CACHE_MAX_K:
        return no_factor_cache()
    return np.empty((1 << k, k, k)), np.zeros(1 << k, dtype=np.int8)


@njit(nogil=True, cache=True, fastmath=False)
def batch_factor_cache(k, exact, nonneg, ub):
    """The factor cache of a batch of rank-k problems sharing one Gram: :func:`factor_cache`
    when their solves go through :func:`bpp_solve` (``exact``, plain non-negativity), else
    empty (:func:`no_factor_cache`)."""
    if exact and nonneg and ub <= 0.0:
        return factor_cache(k)
    return no_factor_cache()


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def _free_cholesky_solve(G, pos, nf, rhs, S, z):
    """``z[:nf] = G_FF⁻¹ rhs_F`` with ``F = pos[:nf]``, by Cholesky into ``S``; False when
    ``G_FF`` is (numerically) singular."""
    if not _free_cholesky(G, pos, nf, S):
        return False
    for a in range(nf):
        z[a] = rhs[int(pos[a])]
    cholesky_solve_leading(S, nf, z)
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def _append_coordinate(G, L, pos, nf, i):
    """Grow the lower Cholesky factor ``L`` of ``G_FF`` (``F = pos[:nf]``, in that order) by
    coordinate ``i`` as its last row: O(nf²). False (``L`` unchanged) when ``G_FF ∪ {i}`` is
    numerically singular. The one factorisation step: :func:`_free_cholesky` builds a whole
    factor by appending the set's coordinates in order."""
    acc = G[i, i]
    for a in range(nf):
        v = G[i, int(pos[a])]
        for t in range(a):
            v -= L[a, t] * L[nf, t]
        v = v / L[a, a]
        L[nf, a] = v
        acc -= v * v
    if not acc > 1e-12 * G[i, i]:
        return False
    L[nf, nf] = np.sqrt(acc)
    return True


@njit(nogil=True, cache=True, inline="always")
def _solvable(G):
    """Whether every coordinate has ``G_ii > 0`` (a dead factor is not the direct solvers'
    problem: they refuse and the caller sweeps)."""
    for i in range(G.shape[0]):
        if not G[i, i] > 0.0:
            return False
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def _free_cholesky(G, pos, nf, S):
    """The Cholesky factor of ``G_FF`` (``F = pos[:nf]``) into ``S``'s leading block; False
    when it is (numerically) singular."""
    for a in range(nf):
        if not _append_coordinate(G, S, pos, a, int(pos[a])):
            return False
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def bpp_solve(G, b, x, ws, max_iter, cs, cf):
    """Exact NNLS (``x ≥ 0``, no upper bound) by block principal pivoting from ``x``'s free set.

    Kim & Park's block principal pivoting for one right-hand side: the free set ``F`` (initially
    the coordinates of ``x`` above zero) is solved by Cholesky with the others held at zero;
    every coordinate that breaks optimality (a negative free value, or a held one whose gradient
    ``(G x − b)_i`` is negative) is exchanged between the sets at once while the number of such
    coordinates falls, with the backup rule (exchange only the last one) after three steps
    without progress, which guarantees termination. On success ``x`` is the exact minimiser and
    True is returned; False (``x`` unchanged) on a (numerically) singular free set, a coordinate
    with ``G_ii ≤ 0``, or after ``max_iter`` steps. ``ws`` is a :func:`nnls_workspace` of size k.
    ``cs``, ``cf``: a :func:`factor_cache` shared by the problems of a batch with this ``G``
    (each free set is factored once per batch), or empty (:func:`no_factor_cache`).

    Examples
    --------
    >>> import numpy as np
    >>> G = np.array([[2.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> x = np.zeros(2)
    >>> bool(bpp_solve(G, b, x, nnls_workspace(2), 10, *factor_cache(2))), np.round(x, 12).tolist()
    (True, [0.5, 0.0])
    """
    k = x.size
    S = ws[:k]
    z = ws[k]
    pos = ws[k + 1]
    inF = ws[k + 3]
    bad = ws[k + 5]
    if not _solvable(G):
        return False
    for i in range(k):
        inF[i] = 1.0 if x[i] > 0.0 else 0.0
    ninf = k + 1
    p = 3
    cached = cf.size > 0
    for _ in range(max_iter):
        nf = 0
        mask = 0
        for i in range(k):
            if inF[i] > 0.0:
                pos[nf] = i
                nf += 1
                mask |= 1 << i
        if cached:  # the set's factor from the batch's cache (made on first use)
            if cf[mask] == 0:
                cf[mask] = 1 if _free_cholesky(G, pos, nf, cs[mask]) else -1
            if cf[mask] < 0:
                return False
            for a in range(nf):
                z[a] = b[int(pos[a])]
            cholesky_solve_leading(cs[mask], nf, z)
        elif not _free_cholesky_solve(G, pos, nf, b, S, z):
            return False
        xmax = 0.0
        for a in range(nf):
            xmax = max(xmax, abs(z[a]))
        nv = 0
        last = -1
        a = 0  # z[a] is the free coordinate i's value (pos ascends)
        for i in range(k):
            if inF[i] > 0.0:
                wrong = z[a] < -1e-12 * xmax
                a += 1
            else:
                y = -b[i]
                for t in range(nf):
                    y += G[i, int(pos[t])] * z[t]
                wrong = y < -1e-10 * G[i, i] * xmax
            bad[i] = 1.0 if wrong else 0.0
            if wrong:
                nv += 1
                last = i
        if nv == 0:
            a = 0
            for i in range(k):
                if inF[i] > 0.0:
                    x[i] = max(z[a], 0.0)
                    a += 1
                else:
                    x[i] = 0.0
            return True
        if nv < ninf:
            ninf = nv
            p = 3
        elif p > 0:
            p -= 1
        else:  # backup rule: exchange only the last offending coordinate
            for i in range(k):
                bad[i] = 0.0
            bad[last] = 1.0
        for i in range(k):
            if bad[i] > 0.0:
                inF[i] = 1.0 - inF[i]
    return False


@njit(nogil=True, cache=True, fastmath=False)
def _free(xi, gii, nonneg, ub):
    """Whether a coordinate is free: strictly inside its bounds and solvable (``G_ii > 0``)."""
    if gii <= 0.0:
        return False
    if nonneg and xi <= 0.0:
        return False
    if ub > 0.0 and xi >= ub:
        return False
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def free_set_finish(G, x, r, nonneg, ub, ws):
    """Finish a solve exactly: the minimiser with the coordinates at a bound held there.

    With ``F`` the free coordinates of ``x`` (strictly inside their bounds), solves
    ``G_FF δ = r_F`` by Cholesky (``r = b − G x`` on entry) and moves ``x_F += δ``. The move is
    kept only if it is feasible and the result satisfies the optimality (KKT) conditions: every
    coordinate held at 0 has ``r_i ≤ 0`` and every one held at ``ub`` has ``r_i ≥ 0`` (up to
    ``1e-10·G_ii·max|x|``). Then ``x`` is the exact NNLS solution (to rounding), ``r`` is
    updated and the function returns True; otherwise ``x`` and ``r`` are left unchanged and it
    returns False. ``ws`` is a :func:`nnls_workspace` of size k.

    Examples
    --------
    >>> import numpy as np
    >>> G = np.array([[2.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> x = np.array([0.3, 0.0]); r = b - G @ x
    >>> ok = free_set_finish(G, x, r, True, 0.0, nnls_workspace(2))
    >>> bool(ok), x.tolist()  # x₂ held at 0; x₁ = b₁ / G₁₁
    (True, [0.5, 0.0])
    """
    k = x.size
    S = ws[:k]
    z = ws[k]
    pos = ws[k + 1]
    nf = 0
    for i in range(k):
        if _free(x[i], G[i, i], nonneg, ub):
            pos[nf] = i
            nf += 1
        elif G[i, i] > 0.0 and ((nonneg and x[i] < 0.0) or (ub > 0.0 and x[i] > ub)):
            return False  # a start outside the bounds (a rescaled warm start): sweep first
    # δ = G_FF⁻¹ r_F into z (Cholesky in S)
    if not _free_cholesky_solve(G, pos, nf, r, S, z):
        return False  # (numerically) singular on the free set: keep sweeping
    xmax = 0.0
    for a in range(nf):
        ia = int(pos[a])
        xn = x[ia] + z[a]
        if (nonneg and xn < 0.0) or (ub > 0.0 and xn > ub):
            return False
        xmax = max(xmax, abs(xn))
    for i in range(k):
        xmax = max(xmax, abs(x[i]))
    # KKT on the held coordinates, with the residual after the move
    for i in range(k):
        gii = G[i, i]
        if _free(x[i], gii, nonneg, ub) or gii <= 0.0:
            continue
        ri = r[i]
        for a in range(nf):
            ri -= G[i, int(pos[a])] * z[a]
        slack = 1e-10 * gii * xmax
        if x[i] <= 0.0 and ri > slack:  # held at 0 but would rise
            return False
        if ub > 0.0 and x[i] >= ub and ri < -slack:  # held at ub but would fall
            return False
    for a in range(nf):
        ia = int(pos[a])
        x[ia] += z[a]
        za = z[a]
        for f in range(k):
            r[f] -= G[ia, f] * za
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def cd_solve(G, x, r, nonneg, ub, maxit, tol, exact, ws):
    """Coordinate-descent sweeps on one problem, in place.

    ``x`` (k,) is the start and receives the solution; ``r`` (k,) must hold ``b − G x`` on entry and
    is kept equal to it. Returns the number of sweeps made. A coordinate with ``G_ii ≤ 0`` is
    skipped. The loop stops when the mean relative step ``Σ|Δᵢ|/(|xᵢ|+1e-15) / k`` falls below
    ``tol`` or after ``maxit`` sweeps.

    With ``exact`` (the ``solver="auto"`` path; ``ws`` is a :func:`nnls_workspace`) the solve
    is finished by :func:`free_set_finish`: first from the start's own free set, then after
    every sweep in which no coordinate reached or left a bound. (:func:`exact_solve`, the entry
    of the exact path, tries block principal pivoting before any sweep.)
    """
    k = x.size
    if exact and free_set_finish(G, x, r, nonneg, ub, ws):
        return 0
    sweeps = 0
    for _ in range(maxit):
        sweeps += 1
        change = 0.0
        flips = 0
        for i in range(k):
            gii = G[i, i]
            if gii <= 0.0:
                continue
            cand = x[i] + r[i] / gii
            if nonneg and cand < 0.0:
                cand = 0.0
            if ub > 0.0 and cand > ub:
                cand = ub
            step = cand - x[i]
            if step != 0.0:
                if _free(x[i], gii, nonneg, ub) != _free(cand, gii, nonneg, ub):
                    flips += 1
                x[i] = cand
                gi = G[i]  # G is symmetric: its row is the column, contiguous
                for f in range(k):
                    r[f] -= gi[f] * step
                change += abs(step) / (abs(cand) + 1e-15)
        if exact and flips == 0 and free_set_finish(G, x, r, nonneg, ub, ws):
            break
        if change / k < tol:
            break
    return sweeps


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def _remove_coordinate(L, pos, xc, nf, r):
    """Drop position ``r`` from the lower Cholesky factor ``L`` of ``G_FF`` (and from ``pos``,
    ``xc``): the rows below ``r`` move up one and Givens rotations of their columns restore the
    triangle, O(nf²)."""
    for a in range(r, nf - 1):
        pos[a] = pos[a + 1]
        xc[a] = xc[a + 1]
        for t in range(a + 2):
            L[a, t] = L[a + 1, t]
    # row a (r ≤ a < nf − 1) now has an entry at column a + 1: rotate columns (a, a + 1)
    for a in range(r, nf - 1):
        p = L[a, a]
        q = L[a, a + 1]
        h = np.sqrt(p * p + q * q)
        c = p / h
        sn = q / h
        L[a, a] = h
        L[a, a + 1] = 0.0
        for t in range(a + 1, nf - 1):
            u = L[t, a]
            v = L[t, a + 1]
            L[t, a] = c * u + sn * v
            L[t, a + 1] = c * v - sn * u


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def active_set_solve(G, b, x, ws, max_changes):
    """Exact NNLS (``x ≥ 0``, no upper bound) by Lawson and Hanson's active-set method from the
    free set of ``x``, with the free set's Cholesky factor updated, not remade, at each change.

    The start's positive coordinates form the free set ``F`` (its factor built by appending
    them, O(nf³) once). Then, until the optimality (KKT) conditions hold: the free set's
    solution ``z = G_FF⁻¹ b_F``; if a coordinate of ``z`` is not positive, the current point
    moves toward ``z`` until the first free coordinate reaches 0 and every free coordinate at 0
    leaves ``F``; otherwise ``z`` is the current point and the held coordinate with the largest
    gradient ``(b − G x)_i`` above ``1e-10·G_ii·max|x|`` joins ``F``. Each change costs O(nf²)
    (:func:`_append_coordinate`, :func:`_remove_coordinate`) where a pivoting step refactors the
    whole set, O(nf³): the solver of large ranks, whose free sets rarely repeat across a batch
    (below :data:`CACHE_MAX_K` :func:`bpp_solve` with its cache of factors is faster).

    On success ``x`` holds the exact minimiser and True is returned; False (``x`` unchanged) on a
    (numerically) singular free set, a coordinate with ``G_ii ≤ 0``, a coordinate that would
    leave again at once after joining (rounding), or more than ``max_changes`` changes. ``ws``
    is a :func:`nnls_workspace` of size k.

    Examples
    --------
    >>> import numpy as np
    >>> G = np.array([[2.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> x = np.array([0.3, 0.2])
    >>> bool(active_set_solve(G, b, x, nnls_workspace(2), 20)), np.round(x, 12).tolist()
    (True, [0.5, 0.0])
    """
    k = x.size
    L = ws[:k]
    z = ws[k]
    pos = ws[k + 1]
    y = ws[k + 2]
    xc = ws[k + 3]
    inF = ws[k + 4]
    if not _solvable(G):
        return False
    nf = 0
    for i in range(k):
        inF[i] = 0.0
        if x[i] > 0.0:
            if not _append_coordinate(G, L, pos, nf, i):
                return False
            pos[nf] = i
            xc[nf] = x[i]
            inF[i] = 1.0
            nf += 1
    joined = -1  # the coordinate that joined F last (it must not leave at once)
    for _ in range(max_changes + 1):
        for a in range(nf):
            z[a] = b[int(pos[a])]
        cholesky_solve_leading(L, nf, z)
        alpha = 1.0
        blocking = -1
        for a in range(nf):
            if z[a] <= 0.0:
                t = xc[a] / (xc[a] - z[a])
                if blocking < 0 or t < alpha:
                    alpha = t
                    blocking = a
        if blocking >= 0:  # move toward z until a free coordinate reaches 0; drop those at 0
            if int(pos[blocking]) == joined:
                return False
            for a in range(nf):
                xc[a] += alpha * (z[a] - xc[a])
            xc[blocking] = 0.0
            a = nf - 1
            while a >= 0:
                if xc[a] <= 0.0:
                    inF[int(pos[a])] = 0.0
                    _remove_coordinate(L, pos, xc, nf, a)
                    nf -= 1
                a -= 1
            joined = -1
            continue
        xmax = 0.0
        for a in range(nf):
            xc[a] = z[a]
            xmax = max(xmax, z[a])
        # the gradient b − G x at every coordinate, along rows of the symmetric G
        for i in range(k):
            y[i] = b[i]
        for a in range(nf):
            ga = G[int(pos[a])]
            za = z[a]
            for i in range(k):
                y[i] -= ga[i] * za
        best = -1
        top = 0.0
        for i in range(k):
            if inF[i] > 0.0:
                continue
            if y[i] > 1e-10 * G[i, i] * xmax and (best < 0 or y[i] > top):
                best = i
                top = y[i]
        if best < 0:
            for i in range(k):
                x[i] = 0.0
            for a in range(nf):
                x[int(pos[a])] = xc[a]
            return True
        if not _append_coordinate(G, L, pos, nf, best):
            return False
        pos[nf] = best
        xc[nf] = 0.0
        inF[best] = 1.0
        nf += 1
        joined = best
    return False


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, inline="always")
def exact_solve(G, b, x, r, nonneg, ub, maxit, tol, ws, cs, cf):
    """One exact solve from the start in ``x`` (``r`` is scratch): for plain non-negativity
    block principal pivoting up to rank :data:`CACHE_MAX_K` (:func:`bpp_solve`, no sweep;
    ``cs``, ``cf`` its factor cache) and the active-set method with updated factors above it
    (:func:`active_set_solve`); otherwise or if that fails coordinate descent finished on its
    free set (:func:`cd_solve` with ``exact``). Returns the sweeps made.
    """
    k = x.size
    if nonneg and ub <= 0.0:
        if k > CACHE_MAX_K:
            if active_set_solve(G, b, x, ws, 3 * k + 10):
                return 0
        elif bpp_solve(G, b, x, ws, 5 * k + 10, cs, cf):
            return 0
    residual(G, b, x, r)
    return cd_solve(G, x, r, nonneg, ub, maxit, tol, True, ws)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def residual(G, b, x, r):
    """``r ← b − G x`` (all float64, length k)."""
    k = x.size
    for f in range(k):
        acc = b[f]
        for i in range(k):
            acc -= G[f, i] * x[i]
        r[f] = acc


@njit(nogil=True, cache=True, fastmath=False)
def sweep_budget(warm, maxit):
    """The sweeps allowed to one ALS solve: ``maxit`` when warm-started, else at least
    :data:`COLD_CD_MAXIT` (a solve from zero needs more than a warm start's small budget).

    >>> sweep_budget(True, 10), sweep_budget(False, 10), sweep_budget(False, 500)
    (10, 100, 500)
    """
    if warm:
        return maxit
    return max(maxit, COLD_CD_MAXIT)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def cd_from(G, b, x, r, xprev, xscale, warm, nonneg, ub, maxit, tol, exact, ws, cs, cf):
    """One problem by coordinate descent from a warm start ``x₀ = xprev ⊙ xscale`` (with the true
    residual ``b − G x₀``) or from zero; ``x`` receives the solution. Returns the sweeps made.

    ``maxit`` is the budget of a warm start; a start from zero gets
    ``sweep_budget(False, maxit)`` (at least :data:`COLD_CD_MAXIT`) sweeps. ``exact`` and ``ws``
    as in :func:`cd_solve`; ``cs``, ``cf`` as in :func:`exact_solve`.
    """
    k = x.size
    for f in range(k):
        x[f] = xprev[f] * xscale[f] if warm else 0.0
    if exact:
        return exact_solve(G, b, x, r, nonneg, ub, sweep_budget(warm, maxit), tol, ws, cs, cf)
    if warm:
        residual(G, b, x, r)
    else:
        for f in range(k):
            r[f] = b[f]
    return cd_solve(G, x, r, nonneg, ub, sweep_budget(warm, maxit), tol, False, ws)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def nnls_cd_batch(G, Bt, Xt, warm, nonneg, ub, maxit, tol, exact):
    """Solve every row of ``Bt`` (n × k) against ``G`` (k × k) by coordinate descent.

    ``Xt`` (n × k, any float dtype) holds the warm start when ``warm`` is true and receives the
    solutions. ``exact`` finishes each solve on its free set (:func:`cd_solve`). Returns the
    total number of sweeps (a cost diagnostic).
    """
    n, k = Bt.shape
    x = np.empty(k, dtype=np.float64)
    r = np.empty(k, dtype=np.float64)
    b = np.empty(k, dtype=np.float64)
    ws = nnls_workspace(k)
    cs, cf = batch_factor_cache(k, exact, nonneg, ub)
    total = 0
    for j in range(n):
        for f in range(k):
            b[f] = Bt[j, f]
            x[f] = Xt[j, f] if warm else 0.0
        if exact:
            total += exact_solve(G, b, x, r, nonneg, ub, maxit, tol, ws, cs, cf)
        else:
            if warm:
                residual(G, b, x, r)
            else:
                r[:] = b
            total += cd_solve(G, x, r, nonneg, ub, maxit, tol, False, ws)
        for f in range(k):
            Xt[j, f] = x[f]
    return total


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def cholesky_solve_leading(L, n, z):
    """Solve ``L₁ L₁ᵀ y = z[:n]`` in place, ``L₁`` the leading n × n block of ``L`` (lower).

    The one triangular solve (:func:`cholesky_solve` copies its right-hand side and calls it);
    a free set's solve takes ``n`` instead of a view of ``L`` (a few hundred flops, which a
    view and its reference counts would cost as much as).
    """
    for i in range(n):
        acc = z[i]
        for f in range(i):
            acc -= L[i, f] * z[f]
        z[i] = acc / L[i, i]
    for i in range(n - 1, -1, -1):
        acc = z[i]
        for f in range(i + 1, n):
            acc -= L[f, i] * z[f]
        z[i] = acc / L[i, i]


@njit(nogil=True, cache=True, fastmath=False)
def cholesky_solve(L, b, x):
    """Solve ``L Lᵀ x = b`` for a lower-triangular ``L`` (k × k); float64 vectors (``x`` may be
    ``b``)."""
    k = b.size
    for i in range(k):
        x[i] = b[i]
    cholesky_solve_leading(L, k, x)


@njit(nogil=True, cache=True, fastmath=False)
def clip_bounds(x, nonneg, ub):
    """Clip ``x`` in place: at 0 from below if ``nonneg``, at ``ub`` from above if ub > 0."""
    for f in range(x.size):
        if nonneg and x[f] < 0.0:
            x[f] = 0.0
        if ub > 0.0 and x[f] > ub:
            x[f] = ub


@njit(nogil=True, cache=True, fastmath=False)
def cholesky_clip_batch(L, Bt, Xt, nonneg, ub):
    """RcppML's "cholesky" solver: ``x_j = clip(G⁻¹ b_j)`` with ``G = L Lᵀ`` factored once.

    ``Bt`` is n × k, ``Xt`` (n × k) receives the result.
    """
    n, k = Bt.shape
    b = np.empty(k, dtype=np.float64)
    x = np.empty(k, dtype=np.float64)
    for j in range(n):
        for f in range(k):
            b[f] = Bt[j, f]
        cholesky_solve(L, b, x)
        clip_bounds(x, nonneg, ub)
        for f in range(k):
            Xt[j, f] = x[f]


def gram_cholesky(G: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a Gram matrix, with a tiny diagonal lift if it is singular.

    RcppML's Eigen LLT has no failure check and returns NaN on a singular Gram (gotcha 18); we lift
    the diagonal by ``1e-12·tr(G)/k`` steps until the factorisation succeeds, so dead factors give
    finite output.
    """
    G = np.asarray(G, dtype=np.float64)
    k = G.shape[0]
    lift = 0.0
    base = max(np.trace(G) / max(k, 1), 1e-30)
    for _ in range(30):
        try:
            L = np.linalg.cholesky(G + lift * np.eye(k))
            if np.all(np.isfinite(L)):
                return L
        except np.linalg.LinAlgError:
            pass
        lift = base * 1e-12 if lift == 0.0 else lift * 100.0
    return np.linalg.cholesky(G + base * np.eye(k))
