"""NNLS kernels (dask_factor.kernels.nnls) against SciPy/NumPy references.

Problems are least-squares problems ``min ‖Mx − y‖`` handed to the kernels in normal-equation form
(``G = MᵀM``, ``b = Mᵀy``), so ``scipy.optimize.nnls``/``lsq_linear`` solve the very same problem.
M is Gaussian with ``p >= 3k`` rows, which keeps ``cond(G)`` small (well-conditioned).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import nnls_gram
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import lsq_linear, nnls

from dask_factor.kernels.nnls import (
    CACHE_MAX_K,
    _append_coordinate,
    _remove_coordinate,
    active_set_solve,
    bpp_solve,
    cd_solve,
    cholesky_clip_batch,
    factor_cache,
    free_set_finish,
    gram_cholesky,
    nnls_cd_batch,
    nnls_workspace,
    no_factor_cache,
)

CONVERGE = dict(maxit=20000, tol=1e-15)


def ls_problem(seed, k, n, *, scale=1.0, zero_col=None):
    """``M`` (p × k), ``Y`` (p × n), and the normal equations ``G``, ``Bt`` (n × k)."""
    rng = np.random.default_rng(seed)
    p = 3 * k + 4
    M = rng.standard_normal((p, k))
    if zero_col is not None:
        M[:, zero_col] = 0.0
    # true solutions with mixed signs, so some constraints are active and some are not
    Xtrue = rng.standard_normal((k, n))
    Y = scale * (M @ Xtrue + 0.3 * rng.standard_normal((p, n)))
    G = M.T @ M
    Bt = np.ascontiguousarray((M.T @ Y).T)
    return M, Y, G, Bt


def cd(G, Bt, *, nonneg=True, ub=0.0, warm=None, maxit=20000, tol=1e-15, out_dtype=np.float64,
       exact=False):
    Xt = np.zeros(Bt.shape, dtype=out_dtype) if warm is None else warm.astype(out_dtype)
    sweeps = nnls_cd_batch(G, Bt, Xt, warm is not None, nonneg, ub, maxit, tol, exact)
    return Xt, sweeps


problems = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(1, 10),  # k
    st.integers(1, 6),  # number of right-hand sides
)


@settings(max_examples=60, deadline=None)
@given(problems, st.sampled_from([1e-3, 1.0, 1e3]))
def test_cd_to_convergence_equals_scipy_nnls(problem, scale):
    seed, k, n = problem
    M, Y, G, Bt = ls_problem(seed, k, n, scale=scale)
    Xt, _ = cd(G, Bt)
    for j in range(n):
        ref = nnls(M, Y[:, j], maxiter=50 * k)[0]
        np.testing.assert_allclose(Xt[j], ref, rtol=1e-7, atol=1e-8 * scale)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_cd_solution_satisfies_kkt(problem):
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    Xt, _ = cd(G, Bt)
    tol = 1e-8 * (1.0 + np.abs(Bt).max())
    for j in range(n):
        x = Xt[j]
        grad = G @ x - Bt[j]
        assert np.all(x >= 0)
        assert np.all(grad[x == 0] >= -tol), grad[x == 0]
        assert np.all(np.abs(grad[x > 0]) <= tol), grad[x > 0]


@settings(max_examples=50, deadline=None)
@given(problems, st.floats(0.05, 2.0), st.booleans())
def test_cd_with_upper_bound_equals_lsq_linear(problem, ub, nonneg):
    seed, k, n = problem
    M, Y, G, Bt = ls_problem(seed, k, n)
    Xt, _ = cd(G, Bt, nonneg=nonneg, ub=ub)
    lo = 0.0 if nonneg else -np.inf
    for j in range(n):
        ref = lsq_linear(M, Y[:, j], bounds=(lo, ub), method="bvls", tol=1e-14).x
        np.testing.assert_allclose(Xt[j], ref, rtol=1e-7, atol=1e-8)
        assert np.all(Xt[j] <= ub)
        if nonneg:
            assert np.all(Xt[j] >= 0)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_cd_unconstrained_equals_solve(problem):
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    Xt, _ = cd(G, Bt, nonneg=False)
    ref = np.linalg.solve(G, Bt.T).T
    np.testing.assert_allclose(Xt, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    assert (Xt < 0).any() or (ref >= 0).all()


@settings(max_examples=50, deadline=None)
@given(problems, st.booleans(), st.sampled_from([0.0, 0.1, 1.0]),
       st.sampled_from([np.float32, np.float64]))
def test_cholesky_clip_equals_clipped_solve(problem, nonneg, ub, out_dtype):
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    L = gram_cholesky(G)
    Xt = np.empty(Bt.shape, dtype=out_dtype)
    cholesky_clip_batch(L, Bt, Xt, nonneg, ub)
    ref = np.linalg.solve(G, Bt.T).T
    if nonneg:
        ref = np.maximum(ref, 0.0)
    if ub > 0:
        ref = np.minimum(ref, ub)
    rtol = 1e-6 if out_dtype == np.float32 else 1e-9
    np.testing.assert_allclose(Xt, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@settings(max_examples=50, deadline=None)
@given(problems, st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from([0.0, 0.5]))
def test_warm_start_with_true_residual_equals_cold_start(problem, start_seed, nonneg, ub):
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    start = np.random.default_rng(start_seed).random((n, k)) * 3.0
    cold, _ = cd(G, Bt, nonneg=nonneg, ub=ub)
    warm, _ = cd(G, Bt, nonneg=nonneg, ub=ub, warm=start)
    np.testing.assert_allclose(warm, cold, rtol=1e-7, atol=1e-9 * (1 + np.abs(cold).max()))


@settings(max_examples=30, deadline=None)
@given(problems)
def test_warm_start_at_the_solution_stays_there(problem):
    """The residual is b − Gx₀ (not RcppML's raw b, ⚠ G3): starting at x* must not move."""
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    sol = np.vstack([nnls_gram(G, Bt[j]) for j in range(n)])
    polished, _ = cd(G, Bt, warm=sol)
    np.testing.assert_allclose(polished, sol, rtol=1e-8, atol=1e-10 * (1 + np.abs(sol).max()))
    # one more solve from its own output makes a single sweep with no change
    again, sweeps = cd(G, Bt, warm=polished, tol=1e-8)
    assert sweeps <= 2 * n
    np.testing.assert_allclose(again, polished, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_zero_gram_diagonal_is_skipped_and_finite(problem):
    seed, k, n = problem
    zero = k // 2
    M, Y, G, Bt = ls_problem(seed, k, n, zero_col=zero)
    assert G[zero, zero] == 0.0
    Xt, _ = cd(G, Bt)
    assert np.all(np.isfinite(Xt))
    assert np.all(Xt[:, zero] == 0.0)  # never touched from a cold start
    keep = [i for i in range(k) if i != zero]
    for j in range(n):
        if keep:
            ref = nnls(M[:, keep], Y[:, j], maxiter=50 * k)[0]
            np.testing.assert_allclose(Xt[j, keep], ref, rtol=1e-7, atol=1e-9)
    # Cholesky on a singular Gram: the lifted factor is finite and the clip result finite too
    L = gram_cholesky(G)
    assert np.all(np.isfinite(L))
    Xc = np.empty_like(Bt)
    cholesky_clip_batch(L, Bt, Xc, True, 0.0)
    assert np.all(np.isfinite(Xc))


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(-1e3, 1e3), st.booleans(), st.sampled_from([0.0, 0.7]))
def test_k1_is_the_clipped_ratio(g, b, nonneg, ub):
    G = np.array([[g]])
    Bt = np.array([[b]])
    Xt, _ = cd(G, Bt, nonneg=nonneg, ub=ub)
    ref = b / g
    if nonneg:
        ref = max(ref, 0.0)
    if ub > 0:
        ref = min(ref, ub)
    assert Xt[0, 0] == pytest.approx(ref, rel=1e-12, abs=1e-300)


def _one_sweep_reference(G, b, x, nonneg, ub):
    """One coordinate-descent sweep exactly as docs/concepts.md states it (pure Python)."""
    x = x.astype(np.float64).copy()
    r = b - G @ x
    for i in range(len(x)):
        if G[i, i] <= 0:
            continue
        cand = x[i] + r[i] / G[i, i]
        if nonneg and cand < 0:
            cand = 0.0
        if ub > 0 and cand > ub:
            cand = ub
        step = cand - x[i]
        x[i] = cand
        r -= G[:, i] * step
    return x


@settings(max_examples=30, deadline=None)
@given(problems, st.integers(1, 4), st.booleans())
def test_cd_sweep_budget_is_respected(problem, maxit, warm):
    """``maxit`` sweeps of RcppML's update, no more (the "auto" solver relies on a small budget)."""
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    start = np.random.default_rng(seed + 1).random((n, k)) if warm else None
    Xt, sweeps = cd(G, Bt, warm=start, maxit=maxit, tol=0.0)
    assert sweeps == maxit * n
    for j in range(n):
        x = np.zeros(k) if start is None else start[j]
        for _ in range(maxit):
            x = _one_sweep_reference(G, Bt[j], x, True, 0.0)
        np.testing.assert_allclose(Xt[j], x, rtol=1e-10, atol=1e-12 * (1 + np.abs(x).max()))


def test_cd_solve_keeps_the_residual_true():
    """``cd_solve`` updates x and r in place and leaves r = b − Gx."""
    _, _, G, Bt = ls_problem(7, 5, 1)
    b = Bt[0].copy()
    x = np.zeros(5)
    r = b.copy()
    sweeps = cd_solve(G, x, r, True, 0.0, 1000, 1e-14, False, nnls_workspace(5))
    assert 1 <= sweeps <= 1000
    np.testing.assert_allclose(r, b - G @ x, atol=1e-10 * np.abs(b).max())
    np.testing.assert_allclose(x, nnls_gram(G, b), rtol=1e-8, atol=1e-10)


def test_float32_output_is_the_rounded_float64_solution():
    _, _, G, Bt = ls_problem(3, 6, 5)
    X64, _ = cd(G, Bt)
    X32, _ = cd(G, Bt, out_dtype=np.float32)
    assert X32.dtype == np.float32
    np.testing.assert_allclose(X32, X64.astype(np.float32), rtol=2e-7, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(problems)
def test_gram_cholesky_of_a_positive_definite_gram_is_exact(problem):
    seed, k, _ = problem
    _, _, G, _ = ls_problem(seed, k, 1)
    L = gram_cholesky(G)
    np.testing.assert_allclose(L, np.linalg.cholesky(G), rtol=1e-12, atol=1e-12)
    assert np.allclose(np.triu(L, 1), 0.0)


def test_gram_cholesky_of_a_singular_gram_is_a_small_lift():
    G = np.zeros((3, 3))
    G[0, 0] = 4.0
    G[2, 2] = 1.0  # G[1, 1] = 0: a dead factor
    L = gram_cholesky(G)
    assert np.all(np.isfinite(L))
    np.testing.assert_allclose(L @ L.T, G, atol=1e-6)
    assert np.all(np.isfinite(gram_cholesky(np.zeros((2, 2)))))


# ---- exact solves (solver="auto"): coordinate descent finished on the free set -----------------


@settings(max_examples=80, deadline=None)
@given(problems, st.sampled_from([1e-3, 1.0, 1e3]), st.booleans(), st.sampled_from([0.0, 0.4]))
def test_exact_solve_equals_scipy_with_few_sweeps(problem, scale, nonneg, ub):
    """``exact=True`` reaches the reference optimum (scipy's nnls / lsq_linear) to rounding, from
    zero and with tol = 0 (sweeps never stop on their own), in a handful of sweeps."""
    seed, k, n = problem
    M, Y, G, Bt = ls_problem(seed, k, n, scale=scale)
    Xt, sweeps = cd(G, Bt, nonneg=nonneg, ub=ub * scale, maxit=500, tol=0.0, exact=True)
    lb = 0.0 if nonneg else -np.inf
    hb = ub * scale if ub > 0 else np.inf
    for j in range(n):
        ref = lsq_linear(M, Y[:, j], bounds=(lb, hb), tol=1e-14, method="bvls").x
        np.testing.assert_allclose(Xt[j], ref, rtol=1e-7, atol=1e-8 * scale)
    assert sweeps < 500 * n  # finished exactly, not stopped by the budget


@settings(max_examples=60, deadline=None)
@given(problems)
def test_exact_solve_from_the_solution_needs_no_sweep(problem):
    """A warm start at the optimum (the case of a settled ALS iteration) is accepted by the
    free-set check alone: zero sweeps, same point."""
    seed, k, n = problem
    _, _, G, Bt = ls_problem(seed, k, n)
    X, _ = cd(G, Bt)
    X2, sweeps = cd(G, Bt, warm=X, maxit=10, tol=1e-4, exact=True)
    assert sweeps == 0
    np.testing.assert_allclose(X2, X, rtol=1e-9, atol=1e-10 * (1 + np.abs(X).max()))


def test_free_set_finish_refuses_a_wrong_free_set():
    """Starting with x₂ > 0 when its optimum is at 0: the free-set solution is infeasible, so x
    and r are left as they were."""
    G = np.array([[2.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])
    x = np.array([0.5, 0.2])
    r = b - G @ x
    x0, r0 = x.copy(), r.copy()
    assert not free_set_finish(G, x, r, True, 0.0, nnls_workspace(2))
    assert np.array_equal(x, x0) and np.array_equal(r, r0)
    # held at 0 while it should rise (r₁ > 0): the KKT check refuses too
    x = np.array([0.0, 0.0])
    r = b - G @ x
    assert not free_set_finish(G, x, r, True, 0.0, nnls_workspace(2))
    assert np.array_equal(x, [0.0, 0.0])


def test_free_set_finish_singular_free_set_falls_back_to_sweeps():
    """Two identical columns: G_FF is singular, the finish refuses and CD still converges."""
    M = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    G = M.T @ M
    b = M.T @ np.array([1.0, 2.0, 0.0])
    x = np.array([0.3, 0.3])
    r = b - G @ x
    assert not free_set_finish(G, x, r, True, 0.0, nnls_workspace(2))
    Xt, _ = cd(G, b[None, :], maxit=2000, tol=1e-15, exact=True)
    np.testing.assert_allclose(G @ Xt[0], b, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(problems, st.integers(0, 2**32 - 1))
def test_bpp_from_any_start_equals_scipy_nnls(problem, start_seed):
    """Block principal pivoting from an arbitrary free set (random start, some coordinates at
    zero) reaches scipy's NNLS optimum without a sweep."""
    seed, k, n = problem
    M, Y, G, Bt = ls_problem(seed, k, n)
    rng = np.random.default_rng(start_seed)
    cache = factor_cache(k)  # the problems share G: one factor per free set for all of them
    for j in range(n):
        start = rng.random(k) * (rng.random(k) < 0.5)
        x = start.copy()
        assert bpp_solve(G, Bt[j], x, nnls_workspace(k), 5 * k + 10, *no_factor_cache())
        ref = nnls(M, Y[:, j], maxiter=50 * k)[0]
        np.testing.assert_allclose(x, ref, rtol=1e-7, atol=1e-9 * (1 + np.abs(ref).max()))
        xc = start.copy()
        assert bpp_solve(G, Bt[j], xc, nnls_workspace(k), 5 * k + 10, *cache)
        assert np.array_equal(xc, x)  # a cached factor is the one made per problem


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, CACHE_MAX_K), st.integers(1, 300))
def test_factor_cache_fills_once_per_free_set(seed, k, n):
    """A batch sharing one Gram (nnls_cd_batch with exact): the cache holds one factor per free
    set met (flag 1, or −1 for a singular one), each equal to numpy's Cholesky factor of G_FF;
    the solutions equal the uncached solver's, to the bit."""
    rng = np.random.default_rng(seed)
    M = rng.random((k + 3, k)) * (rng.random(k) < 0.9)  # some dead columns: singular sets
    G = M.T @ M
    Bt = rng.standard_normal((n, k))
    Xt = np.zeros((n, k))
    nnls_cd_batch(G, Bt, Xt, False, True, 0.0, 100, 1e-10, True)
    cs, cf = factor_cache(k)
    x, ws = np.zeros(k), nnls_workspace(k)
    solved = False
    for j in range(n):
        x[:] = 0.0
        xu = x.copy()
        okc = bpp_solve(G, Bt[j], x, ws, 5 * k + 10, cs, cf)
        oku = bpp_solve(G, Bt[j], xu, ws, 5 * k + 10, *no_factor_cache())
        assert okc == oku and np.array_equal(x, xu)
        if okc:
            assert np.array_equal(x, Xt[j])
            solved = True
    assert set(np.unique(cf)) <= {-1, 0, 1} and (not solved or (cf == 1).any())
    for mask in np.flatnonzero(cf == 1):
        F = [i for i in range(k) if mask >> i & 1]
        L = np.tril(cs[mask][:len(F), :len(F)])
        np.testing.assert_allclose(L, np.linalg.cholesky(G[np.ix_(F, F)]), rtol=1e-9,
                                   atol=1e-12 * np.abs(G).max())


def test_bpp_refuses_a_dead_coordinate():
    """``G_ii = 0`` (a dead factor): not BPP's problem; x and r untouched."""
    G = np.diag([1.0, 0.0])
    x = np.array([0.5, 0.0])
    assert not bpp_solve(G, np.array([0.6, 0.0]), x, nnls_workspace(2), 10, *factor_cache(2))
    assert x.tolist() == [0.5, 0.0]


# ---- the active-set solver of large ranks (k > CACHE_MAX_K) -------------------------------------

large_problems = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(1, 40),  # k, across CACHE_MAX_K
    st.integers(1, 4),  # number of right-hand sides
)


@settings(max_examples=80, deadline=None)
@given(large_problems, st.integers(0, 2**32 - 1), st.sampled_from([1e-3, 1.0, 1e3]))
def test_active_set_from_any_start_equals_scipy_nnls(problem, start_seed, scale):
    """Lawson–Hanson with updated factors, from a random free set (a warm start) or from zero,
    reaches scipy's NNLS optimum; ``x`` is written only on success."""
    seed, k, n = problem
    M, Y, G, Bt = ls_problem(seed, k, n, scale=scale)
    rng = np.random.default_rng(start_seed)
    for j in range(n):
        start = rng.random(k) * (rng.random(k) < 0.5) if rng.random() < 0.8 else np.zeros(k)
        x = start.copy()
        assert active_set_solve(G, Bt[j], x, nnls_workspace(k), 3 * k + 10)
        ref = nnls(M, Y[:, j], maxiter=50 * k)[0]
        np.testing.assert_allclose(x, ref, rtol=1e-7, atol=1e-9 * (1 + np.abs(ref).max()))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(CACHE_MAX_K + 1, 40), st.integers(1, 20))
def test_exact_batch_above_the_cache_equals_scipy(seed, k, n):
    """``nnls_cd_batch(exact=True)`` above CACHE_MAX_K (the active-set path), warm-started from
    a perturbed solution as in an ALS iteration, equals scipy's NNLS."""
    M, Y, G, Bt = ls_problem(seed, k, n)
    ref = np.array([nnls(M, Y[:, j], maxiter=50 * k)[0] for j in range(n)])
    rng = np.random.default_rng(seed + 1)
    warm = np.maximum(ref * rng.uniform(0.5, 1.5, ref.shape)
                      + 0.1 * rng.standard_normal(ref.shape) * (ref.max() + 1e-12), 0.0)
    Xt, sweeps = cd(G, Bt, warm=warm, maxit=10, tol=1e-8, exact=True)
    assert sweeps == 0  # solved by the active-set method, no coordinate-descent fallback
    np.testing.assert_allclose(Xt, ref, rtol=1e-7, atol=1e-9 * (1 + np.abs(ref).max()))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 60))
def test_factor_updates_keep_the_free_sets_cholesky(seed, k, changes):
    """Random joins and leaves of coordinates: the updated factor is always a Cholesky factor of
    the free set's Gram, in its current order."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((k + 5, k))
    G = M.T @ M
    ws = nnls_workspace(k)
    L, pos, xc = ws[:k], ws[k + 1], ws[k + 3]
    free: list[int] = []
    for _ in range(changes):
        out = [i for i in range(k) if i not in free]
        if out and (not free or rng.random() < 0.6):
            i = int(rng.choice(out))
            assert _append_coordinate(G, L, pos, len(free), i)
            pos[len(free)] = i
            xc[len(free)] = float(i)
            free.append(i)
        else:
            r = int(rng.integers(len(free)))
            _remove_coordinate(L, pos, xc, len(free), r)
            free.pop(r)
        nf = len(free)
        assert [int(v) for v in pos[:nf]] == free and [int(v) for v in xc[:nf]] == free
        Lf = np.tril(L[:nf, :nf])
        np.testing.assert_allclose(Lf @ Lf.T, G[np.ix_(free, free)], rtol=1e-10,
                                   atol=1e-10 * np.abs(G).max())
        assert np.all(np.diag(Lf) > 0)


def test_active_set_refuses_a_dead_coordinate_and_a_singular_start():
    """``G_ii = 0``, or a start whose free set is singular: False and ``x`` untouched (the
    caller falls back to coordinate descent)."""
    x = np.array([0.5, 0.0])
    assert not active_set_solve(np.diag([1.0, 0.0]), np.array([0.6, 0.0]), x,
                                nnls_workspace(2), 20)
    assert x.tolist() == [0.5, 0.0]
    G = np.ones((2, 2))  # two identical columns
    x = np.array([0.3, 0.3])
    assert not active_set_solve(G, np.array([1.0, 1.0]), x, nnls_workspace(2), 20)
    assert x.tolist() == [0.3, 0.3]
    Xt, _ = cd(G, np.array([[1.0, 1.0]]), warm=np.array([[0.3, 0.3]]), maxit=2000, tol=1e-15,
               exact=True)
    np.testing.assert_allclose(G @ Xt[0], [1.0, 1.0], atol=1e-9)
