"""The five examples of RcppML's factor-graph article, on the bundled data.

1. a one-layer graph is ``nmf()``, to the bit;
2. hawaiibirds + the signed, scaled geography view through ``factor_shared``;
3. deep NMF on aml, 10 → 3;
4. target regularisation on hawaiibirds islands (λ = 0.3 raises separability, λ < 0 lowers it);
5. ``cross_validate_graph`` over a k × L1 grid (its engine is pending: a clear error).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dask_factor import nmf
from dask_factor.graph import (
    H,
    compute_target,
    cross_validate_graph,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    nmf_layer,
    separability,
)

# ------------------------------------------------------------------------------------------
# 1. graph ≡ nmf()


@pytest.mark.parametrize("k, L1, solver", [(6, 0.0, "auto"), (6, 0.05, "auto"),
                                           (12, 0.01, "auto"), (4, 0.0, "cd"),
                                           (6, 0.1, "cholesky")])
def test_one_layer_graph_is_nmf_bitwise(aml, k, L1, solver):
    A = aml.matrix
    direct = nmf(A, k, seed=42, maxit=40, L1=L1, solver=solver)
    inp = factor_input(A, name="methylation")
    net = factor_net(inp, nmf_layer(inp, k, L1=L1, name="nmf1"),
                     factor_config(maxit=40, seed=42, solver=solver))
    res = fit(net)
    layer = res["nmf1"]
    assert np.array_equal(layer.W, direct.W)
    assert np.array_equal(layer.H, direct.H)
    assert np.array_equal(layer.d, direct.d)
    assert layer.iterations == direct.iterations
    assert layer.converged == direct.converged
    assert layer.loss == direct.mse and layer.sse == direct.sse
    assert res.loss_history == direct.loss_history
    assert res.settings["path"] == "nmf"


def test_one_layer_graph_reproduces_rcppml_reference(aml):
    """RcppML: nmf(aml, k=6, seed=42, maxit=100) → MSE 0.02139761 in 48 iterations, and a
    one-layer factor_net gives the same (RcppML 1.0 reference run)."""
    inp = factor_input(aml.matrix, name="methylation")
    res = fit(factor_net(inp, nmf_layer(inp, 6, name="nmf1"),
                         factor_config(maxit=100, seed=42, rng="rcppml", solver="cholesky")))
    assert res.nmf1.iterations == 48
    assert res.nmf1.mse == pytest.approx(0.02139761, rel=1e-5)


# ------------------------------------------------------------------------------------------
# 2. shared factorization: species (sparse) + geography (dense, signed)


def _shared_fit(A, geo, maxit=100):
    species = factor_input(A, name="species")
    geography = factor_input(geo, name="geography")
    layer = nmf_layer(factor_shared(species, geography), 8, name="joint")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "input 'geography': contains", UserWarning)
        return fit(factor_net([species, geography], layer, factor_config(maxit=maxit, seed=42)))


def test_shared_species_and_geography(hawaiibirds, geography):
    A, _, cols = hawaiibirds
    res = _shared_fit(A, geography)
    joint = res["joint"]
    # per-input W blocks in input order, one shared H
    assert list(joint.W) == ["species", "geography"]
    assert joint.W["species"].shape == (183, 8)
    assert joint.W["geography"].shape == (2, 8)
    assert joint.H.shape == (8, 1183) and joint.d.shape == (8,)
    assert joint.input == "shared:species,geography"
    # both inputs are used: the geography rows are fitted (RcppML drops every input but the
    # first when all are sparse)
    assert np.abs(joint.W["geography"]).sum() > 0
    # most shared factors look like a species-only fit (RcppML: 6 of 8 above 0.9)
    species_only = nmf(A, 8, seed=42, maxit=100)
    cross = np.corrcoef(joint.H, species_only.H)[:8, 8:]
    best = np.abs(cross).max(axis=1)
    assert (best > 0.9).sum() >= 5, best
    # the geography view reshapes at least one factor
    assert best.min() < 0.9
    # the loss covers both views: the exact SSE of [A; geo] ≈ W diag(d) H
    Wd = joint.W_stacked * joint.d
    full = np.vstack([A.toarray(), geography])
    sse = float(((full - Wd @ joint.H) ** 2).sum())
    assert joint.sse == pytest.approx(sse, rel=1e-6)


def test_shared_warns_on_the_signed_view(hawaiibirds, geography):
    species = factor_input(hawaiibirds.matrix, name="species")
    geo = factor_input(geography, name="geography")
    net = factor_net([species, geo], nmf_layer(factor_shared(species, geo), 3, name="j"),
                     factor_config(maxit=3, seed=1))
    with pytest.warns(UserWarning, match="geography.*negative"):
        fit(net)


def test_shared_dense_or_sparse_views_give_the_same_fit(hawaiibirds, geography):
    import scipy.sparse as sp

    A = hawaiibirds.matrix
    dense = _shared_fit(A, geography, maxit=15)
    sparse = _shared_fit(A, sp.csc_matrix(geography), maxit=15)
    for key in ("species", "geography"):
        np.testing.assert_allclose(sparse.joint.W[key], dense.joint.W[key], rtol=1e-5,
                                   atol=1e-7)
    np.testing.assert_allclose(sparse.joint.H, dense.joint.H, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------
# 3. deep NMF, aml 10 → 3


@pytest.fixture(scope="module")
def deep(aml):
    inp = factor_input(aml.matrix, name="methylation")
    fine = nmf_layer(inp, 10, name="fine")
    coarse = nmf_layer(fine, 3, name="coarse")
    return fit(factor_net(inp, coarse, factor_config(maxit=100, seed=42)))


def test_deep_shapes_and_order(deep):
    assert list(deep) == ["fine", "coarse"]  # graph order, not alphabetical
    assert deep["fine"].W.shape == (824, 10)
    assert deep["fine"].H.shape == (10, 135)
    assert deep.coarse.W.shape == (135, 3)  # per-sample embedding
    assert deep.coarse.H.shape == (3, 10)  # connecting matrix
    assert deep.coarse.input == "layer:fine"
    assert deep.fine.iterations == deep.coarse.iterations == deep.iterations
    assert deep.warmup == 10


def test_deep_coarse_input_is_fine_h_transposed(deep):
    """The coarse layer factorises t(H_fine) (normalised H, d not applied): its reported loss is
    the exact reconstruction error of that matrix."""
    X = deep.fine.H.T
    rec = deep.coarse.W @ np.diag(deep.coarse.d) @ deep.coarse.H
    assert deep.coarse.mse == pytest.approx(float(((X - rec) ** 2).mean()), rel=1e-6)
    assert deep.fine.mse > 100 * deep.coarse.mse  # the fine layer's loss is that of A
    # the whole-graph history is the sum of the layers' MSE, every sweep
    np.testing.assert_allclose(deep.loss_history,
                               np.add(deep.fine.loss_history, deep.coarse.loss_history))


def test_deep_assignment_tables(deep, aml):
    """The article's coarse/fine assignment × category tables (reported in docs/graphs.md).

    No biological claim is asserted: RcppML's own run does not cleanly split AML from control
    at the coarse level either. Only the bookkeeping: every sample is assigned once per level.
    """
    cat = aml.cols["category"].to_numpy()
    coarse = pd.crosstab(deep.coarse.W.argmax(axis=1), cat)
    fine = pd.crosstab(deep.fine.H.argmax(axis=0), cat)
    assert coarse.to_numpy().sum() == fine.to_numpy().sum() == 135
    assert len(coarse.index) <= 3 and len(fine.index) <= 10


# ------------------------------------------------------------------------------------------
# 4. target regularisation


@pytest.fixture(scope="module")
def islands(hawaiibirds):
    A, _, cols = hawaiibirds
    baseline = nmf(A, 8, seed=42, maxit=50)
    target = compute_target(baseline.H, cols["island"].to_numpy())
    return A, cols["island"].to_numpy(), target


def _guided(A, target, lam):
    inp = factor_input(A, name="birds")
    layer = nmf_layer(inp, 8, name="guided", H=H(target=target, target_lambda=lam))
    return fit(factor_net(inp, layer, factor_config(maxit=100, seed=42)))["guided"]


def test_target_raises_and_negative_lambda_lowers_separability(islands):
    A, island, target = islands
    unguided = _guided(A, target, 0.0)
    pulled = _guided(A, target, 0.3)
    pushed = _guided(A, target, -0.3)
    s0, s_pos, s_neg = (separability(x.H, island) for x in (unguided, pulled, pushed))
    assert s_pos > 5 * s0  # measured: 14.8 vs 0.424
    assert s_neg < s0  # measured: 0.412 vs 0.424
    # the target is honoured, not silently dropped (RcppML 1.0's graph returns the unguided H)
    assert not np.allclose(pulled.H, unguided.H)
    assert not np.allclose(pushed.H, unguided.H)


# ------------------------------------------------------------------------------------------
# 5. cross-validation over a k × L1 grid


def test_cross_validate_graph_runs_the_articles_grid_small(aml):
    # the full k × L1 grid of the article is tests/graph/test_cv_graph.py (marked slow)
    inp = factor_input(aml.matrix, name="aml")

    def layer_fn(p):
        return nmf_layer(inp, k=p["k"], L1=p["L1"], name="cv")

    params = {"k": [3, 5], "L1": [0, 0.01]}
    config = factor_config(test_fraction=0.1, cv_seed=42, maxit=10)
    cv = cross_validate_graph(inp, layer_fn, params, config, reps=1, seed=42, verbose=False)
    assert len(cv.results) == 4 and cv.summary["mean_test_loss"].is_monotonic_increasing
