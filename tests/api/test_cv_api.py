"""``nmf()`` cross-validation API: argument checks, consistent best-iteration models, multi-rank
tables and ``k="auto"``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import dask_factor.engine.masked as engine_masked
from dask_factor import nmf
from dask_factor.rank import RankSearchResult, auto_search


@pytest.fixture
def no_fit(monkeypatch):
    """Any masked fit reaching the engine fails the test: errors must come first."""

    def boom(*a, **kw):
        raise AssertionError("a fit started")

    monkeypatch.setattr(engine_masked, "fit_masked", boom)
    import dask_factor.nmf_fit as nmf_fit  # the single fit every nmf() and rank search runs

    monkeypatch.setattr(nmf_fit, "fit_masked", boom)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(test_fraction=-0.1), ValueError, r"test_fraction: expected a number in \(0, 1\)"),
    (dict(test_fraction=1.0), ValueError, "test_fraction"),
    (dict(test_fraction=1.5), ValueError, "test_fraction"),
    (dict(test_fraction="0.1"), TypeError, "test_fraction"),
    (dict(test_fraction=0.1, patience=0), ValueError, "patience"),
    (dict(test_fraction=0.1, cv_seed=-1), ValueError, "cv_seed"),
    (dict(test_fraction=0.1, cv_seed=[1, 2]), TypeError, "list of ranks"),
    (dict(mask="ones"), ValueError, "mask"),
    (dict(mask_zeros=True), ValueError, "mask_zeros"),
])
def test_cv_argument_errors_come_first(aml, no_fit, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nmf(aml.matrix, 3, **kwargs)


@pytest.mark.parametrize("k,exc,match", [
    ([], ValueError, "non-empty"), ([3, 0], ValueError, "k"), ("best", TypeError, "auto"),
])
def test_rank_argument_errors_come_first(aml, no_fit, k, exc, match):
    with pytest.raises(exc, match=match):
        nmf(aml.matrix, k, test_fraction=0.1)


def test_cv_fit_returns_a_consistent_best_model(aml):
    A = aml.matrix
    res = nmf(A, 6, seed=42, test_fraction=0.1, cv_seed=42, maxit=40)
    assert res.settings["test_fraction"] == 0.1 and res.settings["cv_seed"] == 42
    assert 1 <= res.best_iter <= res.iterations
    assert res.test_loss == pytest.approx(min(res.test_loss_history))
    # consistent: W diag(d) H reproduces the reported train loss (no double-counted d)
    from dask_factor.kernels.masked import speckled_mask

    T = speckled_mask(*A.shape, 0.1, 42)
    R = (A - (res.W.astype(float) * res.d) @ res.H.astype(float)) ** 2
    assert R[~T].mean() == pytest.approx(res.train_loss, rel=1e-4)
    assert R[T].mean() == pytest.approx(res.test_loss, rel=1e-4)
    assert np.allclose(res.W.sum(axis=0), 1, atol=1e-5)
    assert np.all(np.diff(res.d) <= 0)
    # the test loss is above the train loss, and not far from an unmasked fit's loss
    assert res.test_loss > res.train_loss
    assert res.train_loss < 1.1 * nmf(A, 6, seed=42, maxit=40).mse


def test_mask_zeros_only_stored_entries_are_scored(hawaiibirds):
    A = hawaiibirds.matrix
    res = nmf(A, 5, seed=1, test_fraction=0.2, mask_zeros=True, cv_seed=3, maxit=10)
    assert abs(res.settings["n_test"] / A.nnz - 0.2) < 0.01
    assert res.settings["n_train"] == A.shape[0] * A.shape[1] - res.settings["n_test"]


def test_mask_zeros_as_missing_values(hawaiibirds):
    A = sp.csc_matrix(hawaiibirds.matrix)
    res = nmf(A, 5, seed=1, mask="zeros", maxit=30)
    model = (res.W.astype(float) * res.d) @ res.H.astype(float)
    stored = A.toarray() != 0
    R = (A.toarray() - model) ** 2
    assert res.settings["n_train"] == A.nnz
    assert res.train_loss == pytest.approx(R[stored].mean(), rel=1e-4)
    # zeros are not fitted: the stored entries are fitted better than by the ordinary fit
    plain = nmf(A, 5, seed=1, maxit=30)
    Rp = (A.toarray() - (plain.W * plain.d) @ plain.H) ** 2
    assert res.train_loss < Rp[stored].mean()


def test_rank_list_returns_a_table_and_models(aml):
    out = nmf(aml.matrix, [2, 4, 6], test_fraction=0.1, cv_seed=[1, 2], maxit=15)
    assert isinstance(out, RankSearchResult)
    t = out.table
    assert isinstance(t, pd.DataFrame) and len(t) == 6
    assert list(t.columns[:7]) == ["k", "rep", "cv_seed", "train_mse", "test_mse", "best_iter",
                                   "total_iter"]
    assert set(out.models) == {(k, r) for k in (2, 4, 6) for r in (0, 1)}
    assert (t["train_mse"].groupby(t["k"]).mean().diff().dropna() < 0).all()
    m = out.models[(4, 1)]
    assert m.settings["cv_seed"] == 2 and m.settings["seed"] == (2 + 4)
    assert out.best_k == int(t.groupby("k")["test_mse"].mean().idxmin())
    s = out.summary
    assert list(s.columns) == ["k", "mean_test_loss", "se_test_loss", "mean_train_loss",
                               "n_valid"]
    # the same fit run alone gives the same numbers (concurrency changes nothing)
    alone = nmf(aml.matrix, 4, seed=6, test_fraction=0.1, cv_seed=2, maxit=15)
    assert np.array_equal(alone.W, m.W) and alone.test_loss == m.test_loss


def test_auto_search_finds_the_minimum_of_a_unimodal_curve():
    calls = []

    def score(k):
        calls.append(k)
        return (k - 13) ** 2 + 1.0

    assert auto_search(score, 2, 50) == 13
    assert max(calls) == 16 + 16  # 2, 4, 8, 16, 32: stops at the first rise


def test_auto_rank_on_a_rank_4_matrix():
    rng = np.random.default_rng(0)
    A = rng.random((120, 4)) @ rng.random((4, 200)) + 0.3 * rng.random((120, 200))
    out = nmf(A, "auto", test_fraction=0.1, cv_seed=1, maxit=60, cv_k_range=(2, 16))
    assert out.best_k in (4, 5)  # the positive noise adds a mean: 4 or 5
    # exponential phase 2, 4, 8 (stops at the rise at 8), then golden section inside [2, 8]
    tried = set(out.table["k"])
    assert {2, 4, 8} <= tried <= set(range(2, 9))
    assert out.model.k == out.best_k
