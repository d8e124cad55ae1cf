"""Count-data losses in graphs: a graph of one NMF layer on one input fits exactly like
``nmf(loss=)`` (bitwise), ``cross_validate_graph`` compares losses on the same held-out entries,
and every graph that cannot fit a count-data loss refuses it before any work, naming the
argument and the supported alternative."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dask_factor import factor_config, nmf
from dask_factor.datasets import simulate_counts
from dask_factor.graph import (
    H,
    cross_validate_graph,
    factor_input,
    factor_net,
    fit,
    nmf_layer,
    svd_layer,
)


@pytest.fixture(scope="module")
def counts():
    return simulate_counts(200, 60, k=3, density=0.25, seed=8).compute()


@pytest.mark.parametrize("where", ["layer", "config"])
def test_one_layer_graph_fits_exactly_like_nmf(counts, where):
    inp = factor_input(counts, name="x")
    if where == "layer":
        layer, cfg = nmf_layer(inp, 3, name="f", loss="nb"), factor_config(4, 0, seed=3)
    else:
        layer, cfg = nmf_layer(inp, 3, name="f"), factor_config(4, 0, "nb", seed=3)
    res = fit(factor_net(inp, layer, cfg))
    ref = nmf(counts, 3, seed=3, maxit=4, tol=0, loss="nb")
    f = res["f"]
    assert np.array_equal(f.W, ref.W) and np.array_equal(f.d, ref.d)
    assert np.array_equal(f.H, ref.H)
    assert res.settings["loss"] == "nb" and res.settings["objective"] == ref.objective
    assert res.settings["objective_history"] == ref.objective_history


def test_graphs_that_cannot_fit_a_loss_refuse_it(counts):
    inp = factor_input(counts, name="x")
    with pytest.raises(ValueError, match="loss: expected one of"):
        nmf_layer(inp, 3, loss="poisson")
    deep = nmf_layer(nmf_layer(inp, 3, name="fine", loss="kl"), 2, name="coarse")
    with pytest.raises(NotImplementedError, match=r"nmf_layer 'fine': loss='kl'.*nmf\(A, k"):
        factor_net(inp, deep)
    with pytest.raises(NotImplementedError, match="svd_layer 'p' fits least squares only"):
        factor_net(inp, svd_layer(inp, 2, name="p"), factor_config(loss="kl"))
    regular = nmf_layer(inp, 3, name="g", loss="nb", H=H(L21=0.1))
    with pytest.raises(NotImplementedError, match="nmf_layer 'g': loss='nb'"):
        factor_net(inp, regular)
    # least squares everywhere else is unaffected; an SVD layer with an MSE config compiles
    assert factor_net(inp, svd_layer(inp, 2, name="p")).layers[0].kind == "svd"


def test_cross_validate_graph_compares_losses_on_the_same_held_out_entries(counts):
    inp = factor_input(counts, name="x")
    cfg = factor_config(maxit=4, tol=0, seed=5, test_fraction=0.2)
    cv = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], name="f", loss=p["loss"]),
                              {"loss": ["mse", "kl", "nb"], "k": [2, 3]}, cfg, reps=1,
                              seed=11, verbose=False)
    t = cv.results
    assert len(t) == 6 and t["test_loss"].notna().all()
    assert t.loc[t["loss"] == "mse", "test_objective"].isna().all()
    assert t.loc[t["loss"] != "mse", "test_objective"].notna().all()
    # every fit is nmf(test_fraction=, cv_seed=, loss=) on the same hold-out (cv_seed = seed)
    for _, row in t.iterrows():
        ref = nmf(counts, int(row["k"]), seed=5, maxit=4, tol=0, test_fraction=0.2, cv_seed=11,
                  loss=row["loss"])
        assert row["test_loss"] == ref.test_loss, (row["loss"], row["k"])
        if row["loss"] != "mse":
            assert row["test_objective"] == ref.test_objective
    best = cv.summary.iloc[0]
    assert best["mean_test_loss"] == t["test_loss"].min()
    assert not math.isnan(best["mean_test_loss"])
