"""``cross_validate_graph``: the article's aml grid, paired masks, errors before any fit, deep
graphs scored by their input's held-out reconstruction, random search and the plot helper."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dask_factor.nmf_fit as nmf_fit
from dask_factor import nmf
from dask_factor.graph import cross_validate_graph, factor_config, factor_input, nmf_layer


@pytest.fixture
def no_fit(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("a fit started")

    monkeypatch.setattr(nmf_fit, "fit_masked", boom)  # the single fit behind the nmf path


@pytest.mark.slow
def test_aml_grid_has_an_interior_minimum_in_k(aml):
    inp = factor_input(aml.matrix, name="aml")
    cv = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], L1=p["L1"], name="cv"),
                              {"k": [3, 5, 8, 12], "L1": [0, 0.01, 0.1]},
                              factor_config(test_fraction=0.1, cv_seed=42, maxit=50),
                              reps=2, seed=42, verbose=False)
    s, r = cv.summary, cv.results
    assert len(r) == 24 and len(s) == 12 and r["test_loss"].notna().all()
    assert list(s.columns) == ["k", "L1", "mean_test_loss", "se_test_loss", "mean_train_loss",
                               "n_valid"]
    assert s["mean_test_loss"].is_monotonic_increasing and (s["n_valid"] == 2).all()
    assert cv.best_params == {"k": int(s.iloc[0]["k"]), "L1": float(s.iloc[0]["L1"])}
    # paired: every combination of a repetition is scored on the same hold-out
    assert (r.groupby("rep")["cv_seed"].nunique() == 1).all()
    assert sorted(r["cv_seed"].unique()) == [42, 43]
    l0 = s[s["L1"] == 0].set_index("k")["mean_test_loss"].sort_index()
    assert min(l0[5], l0[8]) < min(l0[3], l0[12])  # RcppML: best k = 5 (L1 0.01)
    # a strong L1 costs accuracy at every rank
    l1 = s[s["L1"] == 0.1].set_index("k")["mean_test_loss"].sort_index()
    assert (l1 > l0).all()
    # the per-fit numbers are nmf()'s
    one = nmf(aml.matrix, 5, L1=0.01, seed=42, test_fraction=0.1, cv_seed=43, maxit=50)
    row = r[(r["k"] == 5) & (r["L1"] == 0.01) & (r["rep"] == 2)].iloc[0]
    assert row["test_loss"] == one.test_loss and row["train_loss"] == one.train_loss


def test_grid_errors_come_before_any_fit(aml, no_fit):
    inp = factor_input(aml.matrix, name="aml")

    def fn(p):
        return nmf_layer(inp, p["k"], name="cv")

    with pytest.raises(ValueError, match=r"params \['L2'\] name argument\(s\) layer_fn does "
                                         r"not take"):
        cross_validate_graph(inp, fn, {"k": [2, 3], "L2": [0, 0.1]}, verbose=False)
    with pytest.raises(ValueError, match="'params' must be a non-empty dict"):
        cross_validate_graph(inp, fn, {}, verbose=False)
    with pytest.raises(ValueError, match=r"params\['k'\] must be a non-empty list"):
        cross_validate_graph(inp, fn, {"k": []}, verbose=False)
    with pytest.raises(ValueError, match="layer_fn reads parameter 'L1'"):
        cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], L1=p["L1"]), {"k": [2]},
                             verbose=False)
    with pytest.raises(ValueError, match=r"layer_fn failed for parameters \{'k': 0\}"):
        cross_validate_graph(inp, fn, {"k": [2, 0]}, verbose=False)
    for f in (-0.1, 1.0, 1.2):
        with pytest.raises(ValueError, match="test_fraction"):
            cross_validate_graph(inp, fn, {"k": [2]}, factor_config(test_fraction=f))


def test_random_search_and_zero_fraction_default(aml):
    inp = factor_input(aml.matrix, name="aml")
    cv = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], L1=p["L1"], name="cv"),
                              {"k": [2, 3, 4], "L1": [0, 0.05]}, factor_config(maxit=8),
                              reps=2, strategy="random", n_random=3, seed=7, verbose=False)
    assert len(cv.summary) == 3 and len(cv.results) == 6
    fit0 = next(iter(cv.fits.values()))
    assert fit0.settings["test_loss"] > 0 and fit0.config["test_fraction"] == 0.1


def test_deep_graph_is_scored_by_its_inputs_held_out_reconstruction(aml):
    inp = factor_input(aml.matrix, name="aml")
    cfg = factor_config(test_fraction=0.1, maxit=15, seed=3)

    def deep(p):
        return nmf_layer(nmf_layer(inp, p["k"], name="fine"), 2, name="coarse")

    cv = cross_validate_graph(inp, deep, {"k": [4, 6]}, cfg, reps=1, seed=11, verbose=False)
    flat = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], name="fine"),
                                {"k": [4, 6]}, cfg, reps=1, seed=11, verbose=False)
    assert (cv.results["test_loss"] > 0).all()  # never 0 (RcppML's deep graphs report 0)
    assert np.array_equal(cv.results["test_loss"], flat.results["test_loss"])


def test_plot_helper(aml):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    summary = pd.DataFrame({"k": [2, 3, 2, 3], "L1": [0, 0, 0.1, 0.1],
                            "mean_test_loss": [1.0, 0.5, 1.2, 0.7],
                            "se_test_loss": [0.1, 0.1, np.nan, 0.2]})
    from dask_factor import plot

    ax = plot.cv_curve(summary, x="k", by="L1")
    assert len(ax.lines) >= 2 and ax.get_ylabel() == "test MSE"
    # one line per L1 value: x sorted, y the mean test loss of that group
    assert ax.lines[0].get_xdata().tolist() == [2, 3]
    assert ax.lines[0].get_ydata().tolist() == [1.0, 0.5]


def test_grid_and_rank_table_on_a_cluster_equal_threads(aml):
    distributed = pytest.importorskip("distributed")
    inp = factor_input(aml.matrix, name="aml")
    args = (inp, lambda p: nmf_layer(inp, p["k"], name="cv"), {"k": [2, 4]},
            factor_config(test_fraction=0.1, maxit=6))
    local = cross_validate_graph(*args, reps=2, verbose=False)
    ranks = nmf(aml.matrix, [2, 4], test_fraction=0.1, cv_seed=[3, 4], maxit=6)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            remote = cross_validate_graph(*args, reps=2, verbose=False, client=client)
            rranks = nmf(aml.matrix, [2, 4], test_fraction=0.1, cv_seed=[3, 4], maxit=6,
                         client=client)
    pd.testing.assert_frame_equal(remote.results, local.results)
    pd.testing.assert_frame_equal(rranks.table, ranks.table)
