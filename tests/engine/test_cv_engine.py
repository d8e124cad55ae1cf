"""The masked (cross-validation / missing-value) engine: the hold-out hash, exact masked updates
against a NumPy reference, bitwise hold-out invariance, chunking and scheduler independence."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

from dask_factor import nmf
from dask_factor.engine.masked import cv_hash_seed
from dask_factor.kernels.masked import count_test_stored, holdout_threshold, speckled_mask_block
from dask_factor.kernels.rng import splitmix64_mix


def _mask(seed, f, m, n, j0=0):
    return speckled_mask_block(np.uint64(cv_hash_seed(seed)), np.uint64(holdout_threshold(f)),
                               m, j0, n)


def test_hash_matches_the_spec_formula():
    seed, f = 42, 0.1
    thr = int(f * 2.0**64)
    M = _mask(seed, f, 7, 5)
    for i in range(7):
        for j in range(5):
            z = (seed + i * 0x9E3779B97F4A7C15 + j * 0x6C62272E07BB0142) % 2**64
            assert M[i, j] == (int(splitmix64_mix(np.uint64(z))) < thr)
    assert cv_hash_seed(0) == 12345 and cv_hash_seed(2**32 + 5) == 5


def test_fraction_on_pbmc3k_is_within_half_a_point(pbmc3k):
    A = pbmc3k.matrix.tocsc()
    m, n = A.shape
    for f in (0.05, 0.1, 0.2):
        frac = _mask(42, f, m, n).mean()
        assert abs(frac - f) < 0.005, (f, frac)
        # mask_zeros: the fraction of the stored entries
        c = count_test_stored(np.uint64(cv_hash_seed(42)), np.uint64(holdout_threshold(f)),
                              A.indptr, A.indices, A.data, 0, True)
        assert abs(c / A.nnz - f) < 0.005


def test_mask_is_the_same_for_any_chunking(pbmc3k):
    A = pbmc3k.matrix.tocsc()[:, :600]
    m, n = A.shape
    whole = _mask(7, 0.1, m, n)
    for width in (600, 97, 250):
        parts = [_mask(7, 0.1, m, min(width, n - j0), j0) for j0 in range(0, n, width)]
        assert np.array_equal(np.hstack(parts), whole)


def _reference(A, W0, train, iters):
    """Masked ALS with exact NNLS over the train entries; returns the model after ``iters``
    H updates and ``iters - 1`` W updates (the engine scores (W_{t-1}, H_t))."""
    W, H = W0.copy(), None
    for t in range(iters):
        if t > 0:
            s = H.sum(axis=1) + 1e-15
            Hn = H / s[:, None]
            Wt = np.vstack([nnls(Hn[:, train[i]].T, A[i, train[i]])[0]
                            for i in range(A.shape[0])])
            W = Wt / (Wt.sum(axis=0) + 1e-15)
        H = np.column_stack([nnls(W[train[:, j]], A[train[:, j], j])[0]
                             for j in range(A.shape[1])])
    return W @ H


def _low_rank(m, n, k, seed, density=1.0):
    rng = np.random.default_rng(seed)
    A = rng.random((m, k)) @ rng.random((k, n)) + 0.05 * rng.random((m, n))
    if density < 1:
        A[rng.random((m, n)) > density] = 0.0
    return A


EXACT = dict(maxit=2, tol=0.0, patience=10, dtype="float64", solver="cd", cd_maxit=3000,
             cd_tol=1e-15, sort_model=False)


@pytest.mark.parametrize("case", ["dense", "sparse", "sparse-mask-zeros", "observed-only"])
def test_masked_updates_match_a_numpy_reference(case):
    m, n, k, f = 30, 40, 3, 0.2
    A = _low_rank(m, n, k, 1, density=1.0 if case == "dense" else 0.6)
    W0 = np.random.default_rng(2).random((m, k))
    T = _mask(9, f, m, n)
    kw = dict(EXACT, w_init=W0, test_fraction=f, cv_seed=9, chunks=7)
    X = A if case == "dense" else sp.csc_matrix(A)
    if case == "sparse-mask-zeros":
        kw["mask_zeros"] = True
        T = T & (A != 0)
    if case == "observed-only":
        kw["mask"] = "zeros"
        T = T & (A != 0)
        train = (A != 0) & ~T
    else:
        train = ~T
    res = nmf(X, k, **kw)
    model = (res.W * res.d) @ res.H  # the best test iteration's model
    np.testing.assert_allclose(model, _reference(A, W0, train, res.best_iter), rtol=1e-6,
                               atol=1e-9)
    # iteration 2 (after a masked W update) is scored exactly as the reference model
    R2 = (A - _reference(A, W0, train, 2)) ** 2
    assert res.train_loss_history[1] == pytest.approx(R2[train].mean(), rel=1e-8)
    assert res.test_loss_history[1] == pytest.approx(R2[T].mean(), rel=1e-8)
    # the reported losses are those of the returned model, over the right entries
    R = (A - model) ** 2
    assert res.test_loss == pytest.approx(R[T].mean(), rel=1e-9)
    assert res.train_loss == pytest.approx(R[train].mean(), rel=1e-9)
    assert res.settings["n_test"] == T.sum()


def test_nan_entries_are_missing_values():
    m, n, k = 30, 40, 3
    A = _low_rank(m, n, k, 3)
    rng = np.random.default_rng(4)
    miss = rng.random((m, n)) < 0.15
    X = A.copy()
    X[miss] = np.nan
    W0 = rng.random((m, k))
    res = nmf(X, k, w_init=W0, mask="NA", **dict(EXACT, maxit=2))
    model = (res.W * res.d) @ res.H
    np.testing.assert_allclose(model, _reference(A, W0, ~miss, 2), rtol=1e-6, atol=1e-9)
    assert res.train_loss == pytest.approx(((A - model) ** 2)[~miss].mean(), rel=1e-9)
    # the missing entries are imputed well by a converged fit of low-rank data
    full = nmf(X, k, seed=1, mask="NA", maxit=200, tol=1e-6)
    rec = (full.W * full.d) @ full.H
    assert np.sqrt(((A - rec)[miss] ** 2).mean()) < 0.1 * A.std()


@pytest.mark.parametrize("kind", ["dense", "sparse", "sparse-mask-zeros"])
def test_test_values_do_not_change_the_fit_bitwise(aml, hawaiibirds, kind):
    A = aml.matrix if kind == "dense" else hawaiibirds.matrix.toarray()
    m, n = A.shape
    kw = dict(seed=1, test_fraction=0.1, cv_seed=42, maxit=4, tol=0.0, patience=100)
    T = _mask(42, 0.1, m, n)
    if kind == "sparse-mask-zeros":
        kw["mask_zeros"] = True
        T &= A != 0
    wrap = (lambda X: X) if kind == "dense" else sp.csc_matrix
    base = nmf(wrap(A), 4, **kw)
    B = A.copy()
    B[T] *= 1.05  # other held-out values (stored entries stay stored)
    moved = nmf(wrap(B), 4, **kw)
    assert base.best_iter == moved.best_iter == 4  # still improving: the last model
    assert np.array_equal(base.train_loss_history, moved.train_loss_history)
    assert np.array_equal(base.W, moved.W) and np.array_equal(base.H, moved.H)
    assert np.array_equal(base.d, moved.d)
    # …while one training entry does change it
    i, j = np.argwhere(~T & (A != 0))[3]
    C = A.copy()
    C[i, j] *= 1.5
    other = nmf(wrap(C), 4, **kw)
    assert not np.array_equal(base.W, other.W)


def test_chunking_and_schedulers_give_the_same_mask_and_fit(hawaiibirds):
    A = hawaiibirds.matrix
    kw = dict(seed=3, test_fraction=0.15, cv_seed=5, maxit=6, tol=0.0, patience=100)
    T = _mask(5, 0.15, *A.shape)
    fits = [nmf(A, 4, chunks=c, **kw) for c in (1183, 100, 37)]
    for r in fits:
        assert r.settings["n_test"] == T.sum()
        model = (r.W * r.d).astype(np.float64) @ r.H.astype(np.float64)
        R = (A.toarray() - model) ** 2
        assert r.test_loss == pytest.approx(R[T].mean(), rel=1e-4)
    for r in fits[1:]:  # a different reduction order: equal to float32 rounding
        np.testing.assert_allclose(r.W, fits[0].W, rtol=2e-3, atol=1e-5)
    with dask.config.set(scheduler="synchronous"):
        sync = nmf(A, 4, chunks=100, **kw)
    assert np.array_equal(sync.W, fits[1].W) and np.array_equal(sync.H, fits[1].H)
    assert sync.test_loss_history == fits[1].test_loss_history


def test_local_cluster_equals_threads(hawaiibirds):
    distributed = pytest.importorskip("distributed")
    A = hawaiibirds.matrix
    kw = dict(seed=3, test_fraction=0.1, cv_seed=5, maxit=5, tol=0.0, chunks=200)
    local = nmf(A, 3, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            remote = nmf(A, 3, client=client, **kw)
            assert np.array_equal(remote.W, local.W)
            assert np.array_equal(np.asarray(remote.H), local.H)
            assert remote.test_loss_history == local.test_loss_history


def test_early_stopping_returns_the_best_test_iteration(aml):
    res = nmf(aml.matrix, 12, seed=1, test_fraction=0.3, cv_seed=1, maxit=200, tol=0.0,
              patience=3)
    hist = res.test_loss_history
    assert res.iterations < 200 and res.best_iter == int(np.argmin(hist)) + 1
    assert res.iterations - res.best_iter == 3
    assert res.test_loss == min(hist)
    assert res.train_loss == res.train_loss_history[res.best_iter - 1]


def test_mask_zeros_on_dense_input_equals_sparse_input(hawaiibirds):
    A = hawaiibirds.matrix
    kw = dict(seed=2, mask="zeros", maxit=5, tol=0.0, chunks=200)
    sparse = nmf(A, 4, **kw)
    dense = nmf(A.toarray(), 4, **kw)
    assert sparse.settings["n_train"] == dense.settings["n_train"] == A.nnz
    np.testing.assert_allclose(dense.W, sparse.W, rtol=1e-4, atol=1e-7)
    # explicitly stored zeros are missing values too
    B = A.copy()  # never write into the session fixture
    B.data[::7] = 0.0
    explicit = nmf(B, 4, **kw)
    B.eliminate_zeros()
    assert np.array_equal(explicit.W, nmf(B, 4, **kw).W)
