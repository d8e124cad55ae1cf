"""The ALS engine (dask_factor.engine) against a dense NumPy replica of RcppML's algorithm.

``fit_als`` runs real Dask graphs over column blocks; ``helpers.reference_nmf`` is a plain NumPy
implementation of docs/concepts.md (H first, then W, scale pulled into d). With the Cholesky
solver both are closed-form per iteration and must agree to float64 rounding; with coordinate
descent run to convergence the engine must agree with SciPy's exact NNLS.
"""

from __future__ import annotations

import math

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import assert_factors_close, dense, random_csc, reference_nmf

from dask_factor.engine.als import CONVERGENCE_PATIENCE, ALSConfig, compute_block_stats, fit_als
from dask_factor.engine.blocks import as_blocked
from dask_factor.engine.inputs import prepare_input
from dask_factor.engine.project import project_blocks, reconstruction_sse


def problem(seed=0, m=40, n=60, k=4, density=0.3, sparse=True):
    rng = np.random.default_rng(seed)
    A = random_csc(rng, m, n, density, empty_cols=[3])
    A = A if sparse else A.toarray()
    W0 = rng.random((m, k))
    return A, W0


def run(A, W0, *, chunks=13, dtype=np.float64, sq=None, **cfg):
    bm = as_blocked(A, dtype=dtype, chunks=chunks)
    sq = float(np.sum(dense(A) ** 2)) if sq is None else sq
    cfg.setdefault("tol", 0.0)
    state = fit_als(bm, W0, ALSConfig(k=W0.shape[1], dtype=dtype, **cfg), sq_norm=sq)
    return state, bm


def state_H(state):
    Ht = np.vstack([np.asarray(b, dtype=np.float64) for b in state.h_blocks])
    return (Ht / state.h_scale).T


def state_factors(state):
    return state.W.astype(np.float64), state.d, state_H(state)


CHOLESKY_CASES = {
    "plain": dict(),
    "L1": dict(L1=(0.01, 0.02)),
    "L2": dict(L2=(0.1, 0.3)),
    "norm-L2": dict(norm="L2"),
    "norm-none": dict(norm="none"),
    "semi-nmf": dict(nonneg=(False, True)),
    "bounded": dict(upper_bound=(0.05, 0.0)),
}


@pytest.mark.parametrize("case", sorted(CHOLESKY_CASES))
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_cholesky_engine_equals_numpy_reference(case, sparse):
    opts = CHOLESKY_CASES[case]
    A, W0 = problem(sparse=sparse)
    state, _ = run(A, W0, solver="cholesky", maxit=6, **opts)
    W, d, H, hist = reference_nmf(A, W0, 6, solver="cholesky", **opts)
    assert state.iterations == 6
    assert_factors_close(state_factors(state), (W, d, H), rtol=1e-8, match=False)
    np.testing.assert_allclose(state.d, d, rtol=1e-8)
    np.testing.assert_allclose(state.loss_history, hist, rtol=1e-8)
    if opts.get("nonneg") == (False, True):
        assert (state.W < 0).any()


CD_CASES = {
    "plain": dict(),
    "L1-L2": dict(L1=(0.01, 0.02), L2=(0.1, 0.0)),
    "bounded-H": dict(upper_bound=(0.0, 0.5), norm="none"),
    "semi-nmf": dict(nonneg=(False, True)),
}


@pytest.mark.parametrize("case", sorted(CD_CASES))
def test_cd_engine_to_convergence_equals_exact_nnls(case):
    opts = CD_CASES[case]
    A, W0 = problem(seed=1, m=30, n=40, k=3)
    state, _ = run(A, W0, solver="cd", cd_maxit=20000, cd_tol=1e-15, maxit=4, **opts)
    W, d, H, hist = reference_nmf(A, W0, 4, solver="nnls", **opts)
    assert_factors_close(state_factors(state), (W, d, H), rtol=1e-6, match=False)
    np.testing.assert_allclose(state.loss_history, hist, rtol=1e-7)


def test_target_regularisation_equals_reference():
    A, W0 = problem(seed=2)
    T = np.random.default_rng(9).random((4, A.shape[1]))
    bm = as_blocked(A, dtype=np.float64, chunks=13)
    blocks = [np.ascontiguousarray(T[:, a:b].T) for a, b in zip(bm.bounds[:-1], bm.bounds[1:])]
    cfg = ALSConfig(k=4, maxit=5, tol=0.0, solver="cholesky", target_lambda=0.7,
                    dtype=np.float64)
    state = fit_als(bm, W0, cfg, sq_norm=float(np.sum(dense(A) ** 2)), target_blocks=blocks)
    ref = reference_nmf(A, W0, 5, solver="cholesky", target_H=T, target_lambda=0.7)
    assert_factors_close(state_factors(state), ref[:3], rtol=1e-8, match=False)


def test_loss_is_the_exact_sse_of_the_returned_factors():
    """The Gram-trick loss (no extra pass) equals ‖A − W diag(d) H‖² computed densely."""
    A, W0 = problem(seed=3, k=5)
    for solver in ("cholesky", "cd"):
        state, _ = run(A, W0, solver=solver, maxit=7)
        W, d, H = state_factors(state)
        R = dense(A) - (W * d) @ H
        assert state.sse == pytest.approx(float(np.sum(R * R)), rel=1e-9)
        assert state.sse == state.loss_history[-1]


def test_chunking_changes_only_rounding():
    A, W0 = problem(seed=4, n=90)
    ref, _ = run(A, W0, chunks=90, solver="cd", maxit=8)
    for chunks in (7, 30):
        st, bm = run(A, W0, chunks=chunks, solver="cd", maxit=8)
        assert bm.n_blocks == -(-90 // chunks)
        assert_factors_close(state_factors(st), state_factors(ref), rtol=1e-9, match=False)


def test_sparse_and_dense_blocks_agree():
    A, W0 = problem(seed=5)
    s, _ = run(A, W0, solver="cd", maxit=6)
    d, _ = run(A.toarray(), W0, solver="cd", maxit=6)
    assert_factors_close(state_factors(s), state_factors(d), rtol=1e-9, match=False)


def test_graph_size_is_constant_across_iterations():
    A, W0 = problem(seed=6, n=120)
    short, _ = run(A, W0, chunks=10, maxit=3)
    long_, _ = run(A, W0, chunks=10, maxit=12)
    for st in (short, long_):
        assert len(st.graph_sizes) == st.iterations
        assert len(set(st.graph_sizes[1:])) == 1, st.graph_sizes
        assert st.graph_sizes[0] <= st.graph_sizes[1]
    assert short.graph_sizes[-1] == long_.graph_sizes[-1]


def test_graph_size_is_constant_for_a_lazy_input():
    import dask.array as da

    A, W0 = problem(seed=6, n=120)
    D = da.from_array(A.tocsr(), chunks=(20, 15), asarray=False)
    st, _ = run(D, W0, chunks=None, sq=float(A.multiply(A).sum()), maxit=6)
    assert len(set(st.graph_sizes[1:])) == 1, st.graph_sizes


def test_convergence_needs_five_consecutive_small_changes():
    A, W0 = problem(seed=7)
    tol = 1e-3
    st, _ = run(A, W0, solver="cd", maxit=200, tol=tol)
    hist = st.loss_history
    rels = [abs(hist[i - 1] - hist[i]) / (abs(hist[i - 1]) + 1e-15) for i in range(1, len(hist))]
    np.testing.assert_allclose(st.tol_history, rels, rtol=1e-12)
    # the first iteration that ends a run of CONVERGENCE_PATIENCE changes below tol
    run_len, stop = 0, None
    for i, r in enumerate(rels):
        run_len = run_len + 1 if r < tol else 0
        if run_len >= CONVERGENCE_PATIENCE:
            stop = i + 2  # rels[i] compares iterations i+1 and i+2 (1-based)
            break
    assert stop is not None and st.converged
    assert st.iterations == stop == len(hist)
    capped, _ = run(A, W0, solver="cd", maxit=4, tol=0.0)
    assert capped.iterations == 4 and not capped.converged


def test_on_iteration_reports_and_stops():
    A, W0 = problem(seed=8)
    calls = []

    def cb(t, mse, rel):
        calls.append((t, mse, rel))
        return t == 3

    bm = as_blocked(A, dtype=np.float64, chunks=13)
    m, n = A.shape
    st = fit_als(bm, W0, ALSConfig(k=4, maxit=50, tol=0.0, dtype=np.float64),
                 sq_norm=float(np.sum(dense(A) ** 2)), on_iteration=cb)
    assert st.iterations == 3 and [c[0] for c in calls] == [1, 2, 3]
    np.testing.assert_allclose([c[1] for c in calls], np.array(st.loss_history) / (m * n))
    assert math.isnan(calls[0][2])
    np.testing.assert_allclose([c[2] for c in calls[1:]], st.tol_history)


def test_synchronous_scheduler_gives_the_same_state():
    A, W0 = problem(seed=9)
    threads, _ = run(A, W0, maxit=5)
    with dask.config.set(scheduler="synchronous"):
        sync, _ = run(A, W0, maxit=5)
    assert_factors_close(state_factors(sync), state_factors(threads), rtol=0, match=False)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_reconstruction_sse_equals_dense(sparse):
    A, _ = problem(seed=10, sparse=sparse)
    rng = np.random.default_rng(0)
    Wd = rng.random((A.shape[0], 4))
    H = rng.random((4, A.shape[1]))
    bm = as_blocked(A, dtype=np.float64, chunks=11)
    h_blocks = [dask.delayed(np.ascontiguousarray(H[:, a:b].T))
                for a, b in zip(bm.bounds[:-1], bm.bounds[1:])]
    sse, sq = reconstruction_sse(bm, Wd, h_blocks)
    R = dense(A) - Wd @ H
    assert sse == pytest.approx(float(np.sum(R * R)), rel=1e-12)
    assert sq == pytest.approx(float(np.sum(dense(A) ** 2)), rel=1e-12)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_project_blocks_equals_scipy_nnls(sparse):
    from scipy.optimize import nnls

    A, _ = problem(seed=11, sparse=sparse)
    rng = np.random.default_rng(1)
    W = rng.random((A.shape[0], 4))
    bm = as_blocked(A, dtype=np.float64, chunks=17)
    cfg = ALSConfig(k=4, solver="cd", cd_maxit=20000, cd_tol=1e-15, dtype=np.float64)
    parts = dask.compute(*project_blocks(bm, W, cfg))
    Ht = np.vstack(parts)
    Ad = dense(A)
    ref = np.vstack([nnls(W, Ad[:, j])[0] for j in range(A.shape[1])])
    np.testing.assert_allclose(Ht, ref, rtol=1e-7, atol=1e-9)


def test_prepare_input_statistics():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((20, 30))
    X[X < 0.5] = 0.0
    X[0, :3] = -1.0
    Ad = np.asarray(X)
    with pytest.warns(UserWarning, match=r"3 negative"):
        prep = prepare_input(Ad, dtype=np.float64)
    assert prep.sq_norm == pytest.approx(float(np.sum(Ad**2)), rel=1e-12)
    assert prep.n_negative == 3 and prep.nnz == np.count_nonzero(Ad)
    import dask.array as da

    with pytest.warns(UserWarning, match=r"3 negative"):
        lazy = prepare_input(da.from_array(sp.csr_matrix(Ad), chunks=(7, 8), asarray=False),
                             dtype=np.float64)
    assert lazy.sq_norm == pytest.approx(prep.sq_norm, rel=1e-12)
    assert (lazy.n_negative, lazy.nnz) == (3, prep.nnz)
    np.testing.assert_allclose(compute_block_stats(lazy.bm),
                               [prep.sq_norm, 0, 3, prep.nnz], rtol=1e-12)
