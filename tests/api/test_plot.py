"""dask_factor.plot (issue 14 item 5): every plot draws the numbers it is given, computed here
independently with numpy/pandas, returns its Axes, takes ax= and never calls plt.show()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dask_factor import datasets, nmf, plot  # noqa: E402
from dask_factor.graph import factor_config, factor_input, factor_net, fit, nmf_layer  # noqa: E402


@pytest.fixture(autouse=True)
def _headless(monkeypatch):
    def no_show(*a, **k):
        raise AssertionError("plt.show() called")

    monkeypatch.setattr(plt, "show", no_show)
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def aml():
    return datasets.load("aml")


@pytest.fixture(scope="module")
def birds_model():
    A, rows, cols = datasets.load("hawaiibirds")
    model = nmf(A, 4, seed=1, maxit=15)
    model.feature_names = list(rows.index)
    return model


def test_loss_history_draws_the_histories(birds_model, aml):
    ax = plot.loss_history(birds_model)
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_ydata(), birds_model.loss_history)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, birds_model.iterations + 1))
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "MSE"

    cv = nmf(aml.matrix, 3, seed=2, maxit=12, test_fraction=0.1)
    fig, given = plt.subplots()
    ax = plot.loss_history(cv, ax=given, log=False)
    assert ax is given and ax.get_yscale() == "linear"
    train, test = ax.lines[:2]
    np.testing.assert_array_equal(train.get_ydata(), cv.train_loss_history)
    np.testing.assert_array_equal(test.get_ydata(), cv.test_loss_history)
    assert ax.lines[2].get_xdata()[0] == cv.best_iter  # the best iteration marked

    inp = factor_input(aml.matrix, name="aml")
    res = fit(factor_net(inp, nmf_layer(nmf_layer(inp, 5, name="fine"), 2, name="coarse"),
                         factor_config(maxit=6, seed=1)))
    ax = plot.loss_history(res)
    assert [ln.get_label() for ln in ax.lines] == ["fine", "coarse"]
    for ln, name in zip(ax.lines, ["fine", "coarse"]):
        np.testing.assert_array_equal(ln.get_ydata(), res[name].loss_history)
    assert ax.get_xlabel() == "sweep"
    with pytest.raises(TypeError, match="result: expected an NMFResult"):
        plot.loss_history(np.ones(3))


def test_cv_curve_is_the_one_rank_plot(aml):
    ranks = nmf(aml.matrix, [2, 3, 5], seed=1, maxit=6)
    summary = ranks.summary
    for ax in (plot.cv_curve(ranks), ranks.plot()):  # the method draws through plot.cv_curve
        data = ax.lines[0]
        assert data.get_xdata().tolist() == [2, 3, 5]
        np.testing.assert_array_equal(data.get_ydata(), summary["mean_test_loss"].to_numpy())
        assert ax.get_ylabel() == "test MSE"
    with pytest.raises(ValueError, match="mean_test_loss"):
        plot.cv_curve(pd.DataFrame({"k": [1]}))


def test_factor_heatmap_draws_the_group_means(aml):
    A, rows, cols = aml
    model = nmf(A, 4, seed=3, maxit=10)
    H = np.asarray(model.H, dtype=float)
    labels = cols["category"].to_numpy()
    groups = sorted(set(labels))
    means = np.column_stack([H[:, labels == g].mean(axis=1) for g in groups])

    ax = plot.factor_heatmap(model, cols["category"], scale=None)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), means, rtol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == groups
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"nmf{j}" for j in range(4)]

    ax = plot.factor_heatmap(H, list(labels))  # default: rows scaled to a maximum of 1
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()),
                               means / means.max(axis=1, keepdims=True), rtol=1e-12)

    ad = pytest.importorskip("anndata")
    adata = ad.AnnData(np.ascontiguousarray(A.T), obs=cols)
    adata.obsm["X_nmf"] = H.T
    fig, given = plt.subplots()
    ax = plot.factor_heatmap(adata, "category", scale=None, ax=given)
    assert ax is given
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), means, rtol=1e-12)
    with pytest.raises(KeyError, match="labels='nope'"):
        plot.factor_heatmap(adata, "nope")
    with pytest.raises(ValueError, match="labels: expected 135"):
        plot.factor_heatmap(H, labels[:10])


def test_group_means_categorical_order_and_missing_labels():
    E = np.array([[1.0, 2.0, 3.0, 4.0]])
    cat = pd.Categorical(["y", "x", None, "y"], categories=["y", "x", "unused"])
    M, groups = plot.group_means(E, cat)
    assert groups == ["y", "x"]                       # category order, unused dropped
    np.testing.assert_array_equal(M, [[2.5, 2.0]])    # the NaN-labelled sample left out


def test_top_features_bars_are_the_weights(birds_model):
    table = birds_model.top_features(6, weights=True)
    ax = plot.top_features(birds_model, 2, n=6)
    want = table[table["factor"] == "nmf2"].sort_values("rank")
    np.testing.assert_array_equal([p.get_width() for p in ax.patches], want["weight"])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(want["feature"])
    # and they are the largest entries of W's column, in order
    np.testing.assert_array_equal(want["weight"], np.sort(birds_model.W[:, 2])[::-1][:6])

    axes = plot.top_features(birds_model, None, n=3)
    assert len(axes) == birds_model.k
    for j, a in enumerate(axes):
        np.testing.assert_array_equal([p.get_width() for p in a.patches],
                                      np.sort(birds_model.W[:, j])[::-1][:3])
    fig, given = plt.subplots(1, 2)
    out = plot.top_features(birds_model, [3, 0], n=2, ax=given)
    assert list(out) == list(given) and out[0].get_title() == "nmf3"
    with pytest.raises(ValueError, match=r"factor: expected integers in \[0, 4\)"):
        plot.top_features(birds_model, 4)


def test_bad_calls_name_the_argument(birds_model):
    with pytest.raises(ValueError, match="factor: expected an integer in \\[0, 4\\), a non-empty"):
        plot.top_features(birds_model, [])
    with pytest.raises(ValueError, match="labels: expected at least one sample with a label"):
        plot.factor_heatmap(np.ones((2, 3)), [None, np.nan, None])
    for f, kind in ((plot.consensus_heatmap, "ConsensusResult"),
                    (plot.k_selection, "KSelectionResult"), (plot.dendrogram, "DClustResult")):
        with pytest.raises(TypeError, match=f"result: expected a {kind}, got NMFResult"):
            f(birds_model)


def test_readme_example():
    from readme_blocks import readme_block

    ns: dict = {}
    exec(compile(readme_block("Plots"), "README.md", "exec"), ns)
    model, axes = ns["model"], ns["axes"]
    np.testing.assert_array_equal(axes[0].lines[0].get_ydata(), model.loss_history)
    assert np.asarray(axes[1].images[0].get_array()).shape == (6, 6)
    assert len(axes[2].patches) == 8
