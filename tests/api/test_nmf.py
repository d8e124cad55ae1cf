"""``nmf()`` end to end: fidelity to RcppML, the loss it reports, input kinds, and every option.

Reference numbers are RcppML 1.0.0's ("Reference results" of its exported data), copied here so
the suite runs without the shared directory.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401 - sp.linalg.svds
from helpers import assert_factors_close, dense, dense_mse, reference_nmf
from scipy.optimize import nnls

from dask_factor import nmf
from dask_factor.nmf import initial_w

# ------------------------------------------------------------------------------------------
# fidelity to RcppML

RCPPML_AML_SEED42 = dict(
    iterations=48,
    mse=0.02139761,
    d=[20343.79, 18425.82, 7681.766, 6648.534, 4197.572, 4008.619],
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reproduces_rcppml_run_on_aml(aml, dtype):
    """rng="rcppml" + solver="cholesky" is RcppML's own algorithm from R's W0."""
    A = aml.matrix
    model = nmf(A, 6, seed=42, maxit=100, rng="rcppml", solver="cholesky", dtype=dtype)
    ref = RCPPML_AML_SEED42
    assert abs(model.iterations - ref["iterations"]) <= 2
    assert model.converged
    assert model.mse == pytest.approx(ref["mse"], rel=1e-4)
    assert model.evaluate(A) == pytest.approx(ref["mse"], rel=1e-4)
    np.testing.assert_allclose(model.d, ref["d"], rtol=1e-3)


def test_rcppml_mode_equals_numpy_replica(hawaiibirds):
    """Iteration by iteration, the Dask fit equals a dense NumPy replica started from R's W0."""
    A = hawaiibirds.matrix
    k, it = 5, 8
    model = nmf(A, k, seed=7, rng="rcppml", solver="cholesky", dtype="float64", tol=0,
                maxit=it, sort_model=False)
    W, d, H, hist = reference_nmf(A, initial_w(A.shape[0], k, 7, "rcppml"), it)
    assert_factors_close(model, (W, d, H), rtol=1e-7, match=False)
    np.testing.assert_allclose(model.loss_history, np.array(hist) / np.prod(A.shape), rtol=1e-7)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_defaults_reach_rcppml_loss_on_aml(aml, seed):
    model = nmf(aml.matrix, k=6, maxit=100, seed=seed)
    assert model.mse <= 0.02161  # RcppML: 0.02139761 at seed 42 (its best seeds: ~0.0214)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_defaults_reach_rcppml_loss_on_hawaiibirds(hawaiibirds, seed):
    model = nmf(hawaiibirds.matrix, k=8, seed=seed)
    assert model.mse <= 0.00409  # RcppML: 0.00404552 at seed 42


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_defaults_reach_rcppml_loss_on_pbmc3k(pbmc3k, seed):
    model = nmf(pbmc3k.matrix, k=10, maxit=50, tol=0, seed=seed)
    assert model.iterations == 50
    assert model.mse <= 0.4392  # RcppML: 0.43480839


# ------------------------------------------------------------------------------------------
# the reported loss


@pytest.mark.parametrize("name", ["aml", "hawaiibirds"])
def test_evaluate_equals_dense_mse_and_loss_is_consistent(request, name):
    A = request.getfixturevalue(name).matrix
    model = nmf(A, 5, seed=1, maxit=15)
    truth = dense_mse(A, model.W, model.d, model.H)
    m, n = A.shape
    assert model.evaluate(A) == pytest.approx(truth, rel=1e-6)
    assert model.mse == pytest.approx(truth, rel=1e-6)  # the Gram-trick loss is the real one
    assert model.mse == pytest.approx(model.sse / (m * n), rel=1e-12)
    assert model.loss_history[-1] == pytest.approx(model.mse, rel=1e-12)
    assert len(model.loss_history) == model.iterations
    assert len(model.tol_history) == model.iterations - 1
    # evaluate accepts any input kind
    assert model.evaluate(da.from_array(dense(A), chunks=(m, 50))) == pytest.approx(truth,
                                                                                    rel=1e-6)


def test_evaluate_rejects_a_matrix_of_another_shape(hawaiibirds):
    model = nmf(hawaiibirds.matrix, 3, seed=1, maxit=3)
    with pytest.raises(ValueError, match=r"A: expected shape"):
        model.evaluate(hawaiibirds.matrix[:, :10])


def test_loss_history_decreases_with_exact_solves(hawaiibirds):
    model = nmf(hawaiibirds.matrix, 6, seed=2, maxit=20, tol=0, solver="cd", dtype="float64")
    h = np.array(model.loss_history)
    assert np.all(np.diff(h) <= 1e-7 * h[:-1])


# ------------------------------------------------------------------------------------------
# every input kind gives the same factors (same seed, same column chunks)

KW = dict(seed=3, maxit=8, tol=0, dtype="float64")


def test_sparse_input_kinds_agree(hawaiibirds):
    A = hawaiibirds.matrix
    ref = nmf(A, 5, chunks=150, **KW)
    wide = A.copy()  # int64 index arrays, as SciPy keeps them past 2**31 stored entries
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    kinds = {
        "csc-int64": wide,
        "csr": A.tocsr(), "coo": A.tocoo(), "csc_array": sp.csc_array(A),
        "csr_array": sp.csr_array(A),
        "dask-1d": da.from_array(A, chunks=(A.shape[0], 150), asarray=False),
        "dask-2d": da.from_array(A.tocsr(), chunks=(50, 150), asarray=False),
    }
    for name, X in kinds.items():
        chunks = None if name.startswith("dask") else 150
        model = nmf(X, 5, chunks=chunks, **KW)
        assert model.settings["chunks"] == ref.settings["chunks"], name
        assert_factors_close(model, ref, rtol=1e-12, match=False)


def test_dense_input_kinds_agree(hawaiibirds):
    A = hawaiibirds.matrix.toarray()
    ref = nmf(A, 5, chunks=150, **KW)
    for X in (da.from_array(A, chunks=(A.shape[0], 150)), da.from_array(A, chunks=(61, 150))):
        assert_factors_close(nmf(X, 5, **KW), ref, rtol=1e-12, match=False)
    # dense and sparse storage of the same matrix: the same fit up to rounding
    assert_factors_close(nmf(hawaiibirds.matrix, 5, chunks=150, **KW), ref, rtol=1e-9,
                         match=False)


def test_float32_and_float64_agree(hawaiibirds):
    A = hawaiibirds.matrix
    f32 = nmf(A, 6, seed=1, maxit=30)
    f64 = nmf(A, 6, seed=1, maxit=30, dtype="float64")
    assert f32.W.dtype == np.float32 and f32.H.dtype == np.float32
    assert f64.W.dtype == np.float64 and f64.H.dtype == np.float64
    assert_factors_close(f32, f64, rtol=1e-4)
    assert f32.mse == pytest.approx(f64.mse, rel=1e-5)


def test_seed_none_is_recorded_and_reproducible(hawaiibirds):
    A = hawaiibirds.matrix
    a = nmf(A, 4, maxit=5)
    b = nmf(A, 4, maxit=5, seed=a.settings["seed"])
    assert_factors_close(a, b, rtol=0, match=False)


def test_w_init_equals_the_seeded_start(hawaiibirds):
    A = hawaiibirds.matrix
    W0 = initial_w(A.shape[0], 4, 11, "rcppml")
    seeded = nmf(A, 4, seed=11, rng="rcppml", maxit=6, dtype="float64")
    for init in (W0, W0.T):  # (m, k) or (k, m)
        given = nmf(A, 4, w_init=init, maxit=6, dtype="float64")
        assert_factors_close(given, seeded, rtol=1e-12, match=False)


# ------------------------------------------------------------------------------------------
# model utilities and options


def test_predict_equals_scipy_nnls(hawaiibirds):
    A = hawaiibirds.matrix
    model = nmf(A, 6, seed=1, maxit=20, dtype="float64")
    Ad = dense(A)
    Hp = model.predict(A[:, :60])
    assert Hp.shape == (6, 60)
    ref = np.column_stack([nnls(model.W * model.d, Ad[:, j])[0] for j in range(60)])
    np.testing.assert_allclose(Hp, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max())


def test_predict_on_training_data_recovers_h(hawaiibirds):
    A = hawaiibirds.matrix
    model = nmf(A, 4, seed=1, maxit=300, tol=1e-7, solver="cd", dtype="float64")
    assert model.converged
    H = model.H
    Hp = model.predict(A)
    rel = np.linalg.norm(Hp - H, axis=0) / np.maximum(np.linalg.norm(H, axis=0), 1e-12)
    assert np.median(rel) < 1e-3
    assert rel.max() < 2e-2


@pytest.mark.parametrize("name", ["aml", "hawaiibirds"])
def test_sort_model_sorts_d(request, name):
    A = request.getfixturevalue(name).matrix
    sorted_ = nmf(A, 6, seed=1, maxit=15)
    assert np.all(np.diff(sorted_.d) <= 0)
    unsorted = nmf(A, 6, seed=1, maxit=15, sort_model=False)
    np.testing.assert_array_equal(np.sort(unsorted.d)[::-1], sorted_.d)
    assert_factors_close(unsorted, sorted_, rtol=0)


def test_norms(hawaiibirds):
    A = hawaiibirds.matrix
    l1 = nmf(A, 5, seed=1, maxit=10)
    np.testing.assert_allclose(l1.W.sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(l1.H.sum(axis=1), 1.0, rtol=1e-5)
    l2 = nmf(A, 5, seed=1, maxit=10, norm="L2")
    np.testing.assert_allclose(np.linalg.norm(l2.W.astype(float), axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(l2.H.astype(float), axis=1), 1.0, rtol=1e-5)
    none = nmf(A, 5, seed=1, maxit=10, norm="none")
    np.testing.assert_array_equal(none.d, np.ones(5))
    # the model is the same whatever the norm; only the split of scale differs
    for model in (l2, none):
        assert model.mse == pytest.approx(l1.mse, rel=1e-3)


def test_semi_nmf_allows_negative_w(hawaiibirds):
    A = hawaiibirds.matrix
    model = nmf(A, 6, seed=1, maxit=20, nonneg=(False, True))
    assert model.W.min() < 0
    assert model.H.min() >= 0


def test_upper_bound_caps_the_factors(hawaiibirds):
    """With norm="none" the factors are returned in the solver's scale, where the cap applies."""
    A = hawaiibirds.matrix
    free = nmf(A, 6, seed=1, maxit=15, norm="none")
    ub = 0.05
    assert free.H.max() > ub and free.W.max() > ub
    capped = nmf(A, 6, seed=1, maxit=15, norm="none", upper_bound=ub)
    assert capped.H.max() <= ub * (1 + 1e-6)
    assert capped.W.max() <= ub * (1 + 1e-6)
    h_only = nmf(A, 6, seed=1, maxit=15, norm="none", upper_bound=(0, ub))
    assert h_only.H.max() <= ub * (1 + 1e-6) and h_only.W.max() > ub


def test_l1_makes_h_sparser(hawaiibirds):
    A = hawaiibirds.matrix
    zeros = [float(np.mean(nmf(A, 6, seed=1, maxit=20, L1=(0, l1)).H == 0))
             for l1 in (0.0, 0.05, 0.2)]
    assert zeros[0] < zeros[1] < zeros[2], zeros


def test_target_h_pulls_h_towards_the_target(hawaiibirds):
    A = hawaiibirds.matrix
    island = hawaiibirds.cols["island"].to_numpy()
    base = nmf(A, 6, seed=1, maxit=20, norm="none")
    T = np.zeros_like(base.H, dtype=np.float64)
    for c in np.unique(island):
        T[:, island == c] = base.H[:, island == c].mean(axis=1, keepdims=True)
    dist0 = np.linalg.norm(base.H - T)
    dists = [np.linalg.norm(nmf(A, 6, seed=1, maxit=20, norm="none", target_H=T,
                                target_lambda=lam).H - T) for lam in (1.0, 10.0)]
    assert dists[0] < dist0 and dists[1] < dists[0], (dist0, dists)


def test_progress_bar_runs_and_changes_nothing(hawaiibirds, capsys):
    A = hawaiibirds.matrix
    quiet = nmf(A, 4, seed=1, maxit=5)
    shown = nmf(A, 4, seed=1, maxit=5, progress=True)
    assert_factors_close(shown, quiet, rtol=0, match=False)
    assert "nmf" in capsys.readouterr().err


def test_on_iteration_can_stop_the_fit(hawaiibirds):
    calls = []

    def cb(it, mse, rel):
        calls.append((it, mse))
        return it >= 3

    model = nmf(hawaiibirds.matrix, 4, seed=1, maxit=50, tol=0, on_iteration=cb)
    assert model.iterations == 3 and not model.converged
    assert [c[0] for c in calls] == [1, 2, 3]
    np.testing.assert_allclose([c[1] for c in calls], model.loss_history)


def test_graph_size_does_not_grow(hawaiibirds):
    model = nmf(hawaiibirds.matrix, 4, seed=1, maxit=10, tol=0)
    sizes = model.graph_sizes
    assert len(sizes) == 10
    assert max(sizes[1:]) == min(sizes[1:]) >= sizes[0], sizes


@pytest.mark.parametrize("solver", ["auto", "cd", "cholesky"])
def test_rank_one_equals_the_leading_singular_pair(hawaiibirds, solver):
    """For non-negative A the best rank-1 approximation is non-negative (Perron–Frobenius), so
    NMF with k = 1 must reach the SVD's loss ‖A‖² − σ₁²."""
    A = hawaiibirds.matrix
    model = nmf(A, 1, seed=1, maxit=200, tol=1e-12, solver=solver, dtype="float64")
    sigma1 = sp.linalg.svds(A, k=1, return_singular_vectors=False)[0]
    want = (A.multiply(A).sum() - sigma1**2) / np.prod(A.shape)
    assert model.W.shape == (A.shape[0], 1) and model.H.shape == (1, A.shape[1])
    assert model.mse == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------------------------
# awkward but valid data


@pytest.mark.parametrize("solver", ["auto", "cd", "cholesky"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rank_deficient_data_with_more_factors_than_rank(solver, dtype):
    """k = 8 on an exactly rank-2 matrix: surplus factors die (d → 0) without NaN, and the fit
    explains the data. (Such a problem has many stationary points, and which one a fit reaches
    can turn on last-bit rounding: one suite run's float64 Cholesky fit stopped at 8 % of the
    mean square, where the same test alone reached 1e-4; so the bound is 10 %.)"""
    rng = np.random.default_rng(0)
    R = rng.random((40, 2)) @ rng.random((2, 50))
    model = nmf(R, 8, seed=1, maxit=30, solver=solver, dtype=dtype)
    for x in (model.W, model.d, model.H):
        assert np.all(np.isfinite(x))
    assert model.mse < 0.1 * np.mean(R**2)


@pytest.mark.parametrize("solver", ["auto", "cd", "cholesky"])
@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_all_zero_rows_and_columns(hawaiibirds, solver, kind):
    Z = hawaiibirds.matrix.tolil()
    Z[5, :] = 0
    Z[:, 7] = 0
    Z = sp.csc_matrix(Z)
    Z.eliminate_zeros()
    X = Z if kind == "sparse" else Z.toarray()
    model = nmf(X, 5, seed=1, maxit=15, solver=solver)
    for x in (model.W, model.d, model.H):
        assert np.all(np.isfinite(x))
    assert np.isfinite(model.mse)
    np.testing.assert_allclose(model.W[5], 0.0, atol=1e-6)
    np.testing.assert_allclose(model.H[:, 7], 0.0, atol=1e-6)
    assert model.evaluate(X) == pytest.approx(dense_mse(X, model.W, model.d, model.H), rel=1e-5)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_all_zero_matrix_is_finite(kind):
    X = sp.csc_matrix((10, 12)) if kind == "sparse" else np.zeros((10, 12))
    model = nmf(X, 2, seed=1, maxit=5)
    for x in (model.W, model.d, model.H):
        assert np.all(np.isfinite(x))
    assert model.mse == 0.0


@pytest.mark.parametrize("kind", ["sparse", "dense", "dask"])
def test_negative_entries_warn_with_their_count(hawaiibirds, kind):
    N = hawaiibirds.matrix.copy()
    N.data[:3] *= -1
    X = {"sparse": N, "dense": N.toarray(),
         "dask": da.from_array(N.toarray(), chunks=(183, 200))}[kind]
    with pytest.warns(UserWarning, match=r"\b3 negative"):
        model = nmf(X, 3, seed=1, maxit=3)
    assert model.settings["n_negative"] == 3
    assert np.all(np.isfinite(model.H))
