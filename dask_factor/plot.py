"""Plots of fitted models (matplotlib, the ``[plot]`` extra).

Every function draws on ``ax`` (a new figure when None) and returns the Axes it drew on; none
calls ``plt.show()``, so they run headless (the Agg backend) and in notebooks alike. matplotlib
is imported on the first call; without it the call raises an ``ImportError`` naming
``pip install "dask_factor[plot]"``.

* :func:`loss_history` — the loss after every iteration (and the test/train losses of a
  cross-validated fit; every layer of a graph);
* :func:`cv_curve` — mean test loss ± se against the rank (or any parameter) of a rank search
  or ``cross_validate_graph`` (what ``RankSearchResult.plot`` and ``CVResult.plot`` draw);
* :func:`factor_heatmap` — mean factor activation per group of samples (factors × groups);
* :func:`top_features` — bars of the features of largest weight in a factor;
* :func:`consensus_heatmap` — a ``consensus_nmf`` consensus matrix in dendrogram order;
* :func:`k_selection` — stability and reconstruction error of consensus programs against k;
* :func:`dendrogram` — the splits of ``dclust``, optionally with each leaf's label composition.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from dask_factor import datasets, nmf, plot
>>> A, rows, cols = datasets.load("hawaiibirds")
>>> model = nmf(A, 4, seed=1, maxit=10)
>>> ax = plot.loss_history(model)
>>> len(ax.lines[0].get_ydata()) == model.iterations
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._optional import require

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a plot is drawn
    from matplotlib.axes import Axes

__all__ = ["loss_history", "cv_curve", "factor_heatmap", "group_means", "top_features",
           "consensus_heatmap", "k_selection", "dendrogram"]


def _pyplot(what: str):
    return require("matplotlib.pyplot", f"dask_factor.plot.{what}")


def _axes(ax, what: str, figsize=(5.0, 3.5)):
    plt = _pyplot(what)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


# --------------------------------------------------------------------------- loss history


def _histories(result) -> tuple[list[tuple[str, list[float]]], str, int | None]:
    """(label, history) pairs, the x label and the best iteration to mark (or None)."""
    if hasattr(result, "layers") and hasattr(result, "loss_history"):  # GraphResult
        layers = list(result.layers.values())
        if len(layers) == 1:
            return [(layers[0].name, list(layers[0].loss_history))], "iteration", None
        return ([(lr.name, list(lr.loss_history)) for lr in layers], "sweep", None)
    if hasattr(result, "kind") and hasattr(result, "loss_history"):  # LayerResult
        return [(result.name, list(result.loss_history))], "iteration", None
    if hasattr(result, "test_loss_history") and hasattr(result, "loss_history"):  # NMFResult
        if result.test_loss_history:
            return ([("train", list(result.train_loss_history)),
                     ("test", list(result.test_loss_history))], "iteration",
                    int(result.best_iter) or None)
        return [("loss", list(result.loss_history))], "iteration", None
    raise TypeError(f"result: expected an NMFResult, GraphResult or LayerResult, got "
                    f"{type(result).__name__}")


def loss_history(result: Any, *, ax: Axes | None = None, log: bool = True) -> Axes:
    """Draw the loss (MSE) after every iteration of a fit.

    Parameters
    ----------
    result : NMFResult, GraphResult or LayerResult
        An NMF draws ``loss_history``; a cross-validated one (``test_fraction``) its
        ``train_loss_history`` and ``test_loss_history`` with the best iteration marked; a
        graph draws every layer's history (one line per layer, against the sweeps).
    ax : matplotlib.axes.Axes, optional
        Draw there; default: a new figure.
    log : bool, default True
        Logarithmic y axis.

    Returns
    -------
    matplotlib.axes.Axes
        One line per history, x = 1, 2, ... (iterations or sweeps), y = the MSE values.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_factor import datasets, nmf, plot
    >>> model = nmf(datasets.load("aml").matrix, 3, seed=1, maxit=10, test_fraction=0.1)
    >>> ax = plot.loss_history(model)
    >>> [line.get_label() for line in ax.lines[:2]]
    ['train', 'test']
    """
    series, xlabel, best = _histories(result)
    ax = _axes(ax, "loss_history")
    for label, values in series:
        ax.plot(np.arange(1, len(values) + 1), np.asarray(values, dtype=float), label=label)
    if best is not None:
        ax.axvline(best, color="0.5", linestyle=":", label=f"best ({best})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MSE")
    if len(series) > 1 or best is not None:
        ax.legend()
    return ax


# --------------------------------------------------------------------------- CV curves


def cv_curve(summary: Any, x: str = "k", *, by: str | None = None,
             ax: Axes | None = None) -> Axes:
    """Draw mean test loss against ``x`` with ±1 se error bars, one line per value of ``by``.

    Parameters
    ----------
    summary : pandas.DataFrame, RankSearchResult or CVResult
        A table with ``x``, ``mean_test_loss`` and ``se_test_loss`` columns (a result's
        ``summary``).
    x : str, default "k"
        The column on the x axis.
    by : str, optional
        One line per value of this column.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One error-bar line per group: x sorted, y = ``mean_test_loss``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_factor import datasets, nmf, plot
    >>> ranks = nmf(datasets.load("aml").matrix, [2, 4], seed=1, maxit=5)
    >>> ax = plot.cv_curve(ranks)
    >>> ax.lines[0].get_xdata().tolist()
    [2, 4]
    """
    table = getattr(summary, "summary", summary)
    for col in (x, "mean_test_loss", "se_test_loss"):
        if col not in getattr(table, "columns", ()):
            raise ValueError(f"summary: expected a table with columns {x!r}, 'mean_test_loss' "
                             f"and 'se_test_loss', got {list(getattr(table, 'columns', []))}")
    ax = _axes(ax, "cv_curve")
    groups = [(None, table)] if by is None else list(table.groupby(by))
    for key, df in groups:
        df = df.sort_values(x)
        se = df["se_test_loss"].fillna(0.0)
        ax.errorbar(df[x], df["mean_test_loss"], yerr=se, marker="o", capsize=3,
                    label=None if key is None else f"{by}={key}")
    ax.set_xlabel(x)
    ax.set_ylabel("test MSE")
    if by is not None:
        ax.legend()
    return ax


# --------------------------------------------------------------------------- factor heatmap


def _embedding(factors, basis: str | None) -> tuple[np.ndarray, list[str], Any]:
    """(factors × samples matrix, factor names, the AnnData or None)."""
    if type(factors).__name__ == "AnnData" and hasattr(factors, "obsm"):
        key = f"X_{basis or 'nmf'}"
        if key not in factors.obsm:
            raise KeyError(f"basis={basis!r}: adata.obsm has no {key!r} (has "
                           f"{list(factors.obsm)})")
        E = np.asarray(factors.obsm[key], dtype=float).T
        return E, [f"{basis or 'nmf'}{j}" for j in range(E.shape[0])], factors
    if hasattr(factors, "kind") and hasattr(factors, "embedding"):  # LayerResult
        E = np.asarray(factors.W).T if factors.embedding else np.asarray(factors.H)
        return E.astype(float), [f"{factors.name}{j}" for j in range(E.shape[0])], None
    if hasattr(factors, "H_dask"):  # NMFResult
        E = np.asarray(factors.H, dtype=float)
        return E, [f"nmf{j}" for j in range(E.shape[0])], None
    E = np.asarray(factors, dtype=float)
    if E.ndim != 2:
        raise ValueError(f"factors: expected an NMFResult, LayerResult, AnnData or an array of "
                         f"shape (k, n_samples), got shape {E.shape}")
    return E, [f"factor{j}" for j in range(E.shape[0])], None


def group_means(factors: Any, labels: Any) -> tuple[np.ndarray, list]:
    """Mean of each factor over the samples of each group: ``(k × n_groups, groups)``.

    Groups are in the order of a pandas Categorical's categories (unused ones dropped), else
    sorted. Samples whose label is missing (None/NaN) are left out.

    Examples
    --------
    >>> import numpy as np
    >>> M, groups = group_means(np.array([[1., 2., 3.], [0., 4., 8.]]), ["b", "a", "b"])
    >>> M.tolist(), groups
    ([[2.0, 2.0], [4.0, 4.0]], ['a', 'b'])
    """
    import pandas as pd

    E = np.asarray(factors, dtype=float)
    if isinstance(labels, pd.Series):
        lab = labels.reset_index(drop=True)
    elif isinstance(labels, pd.Categorical):
        lab = pd.Series(labels)
    else:
        lab = pd.Series(np.asarray(labels, dtype=object))
    if len(lab) != E.shape[1]:
        raise ValueError(f"labels: expected {E.shape[1]} labels (one per sample), got {len(lab)}")
    if isinstance(lab.dtype, pd.CategoricalDtype):
        groups = [g for g in lab.cat.categories if (lab == g).any()]
    else:
        groups = sorted(lab.dropna().unique().tolist(), key=str)
    if not groups:
        raise ValueError("labels: expected at least one sample with a label, got none (all "
                         "missing)")
    M = np.column_stack([E[:, (lab == g).to_numpy(dtype=bool)].mean(axis=1) for g in groups])
    return M, groups


def factor_heatmap(factors: Any, labels: Any, *, basis: str | None = None,
                   scale: str | None = "row", ax: Axes | None = None,
                   cmap: str = "viridis") -> Axes:
    """Heatmap of the mean factor activation per group of samples (factors × groups).

    Parameters
    ----------
    factors : NMFResult, LayerResult, AnnData or array of shape (k, n_samples)
        The sample embedding: an NMF's ``H``, a graph layer's (``H``, or ``W`` of a layer fed by
        a layer), an AnnData's ``obsm[f"X_{basis}"]`` (cells × k, transposed), or ``H`` itself.
    labels : array-like of shape (n_samples,), or str
        The group of every sample; with an AnnData, a column of ``adata.obs``.
    basis : str, optional
        The AnnData embedding (``"nmf"`` by default: ``obsm["X_nmf"]``).
    scale : {"row", None}, default "row"
        ``"row"``: each factor's means divided by its largest (rows scaled to a maximum of 1);
        None: the means themselves.
    ax : matplotlib.axes.Axes, optional
    cmap : str, default "viridis"

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.images[0].get_array()`` is the k × n_groups matrix drawn; x ticks are the groups,
        y ticks the factors.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_factor import datasets, nmf, plot
    >>> A, rows, cols = datasets.load("aml")
    >>> model = nmf(A, 4, seed=1, maxit=10)
    >>> ax = plot.factor_heatmap(model, cols["category"])
    >>> ax.images[0].get_array().shape
    (4, 6)
    """
    E, names, adata = _embedding(factors, basis)
    if isinstance(labels, str):
        if adata is None:
            raise TypeError(f"labels={labels!r}: a column name needs an AnnData; pass the "
                            f"labels themselves (one per sample)")
        if labels not in adata.obs:
            raise KeyError(f"labels={labels!r}: not a column of adata.obs (has "
                           f"{list(adata.obs.columns)})")
        labels = adata.obs[labels]
    if scale not in ("row", None):
        raise ValueError(f"scale: expected 'row' or None, got {scale!r}")
    M, groups = group_means(E, labels)
    if scale == "row":
        top = M.max(axis=1, keepdims=True)
        M = np.divide(M, top, out=np.zeros_like(M), where=top > 0)
    ax = _axes(ax, "factor_heatmap", figsize=(1.0 + 0.5 * len(groups), 1.0 + 0.35 * len(names)))
    im = ax.imshow(M, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.figure.colorbar(im, ax=ax, label="mean (row-scaled)" if scale == "row" else "mean")
    return ax


# --------------------------------------------------------------------------- top features


def top_features(result: Any, factor: int | Sequence[int] | None = 0, *, n: int = 10,
                 ax: Axes | Sequence[Axes] | None = None) -> Axes | np.ndarray:
    """Horizontal bars of the ``n`` features of largest weight (``W``) in a factor.

    Parameters
    ----------
    result : NMFResult
        Anything with ``top_features(n, weights=True)`` (feature names from the result).
    factor : int, sequence of int or None, default 0
        The factor (0-based), several factors, or None for all of them.
    n : int, default 10
    ax : matplotlib.axes.Axes, or a sequence of them (one per factor), optional

    Returns
    -------
    matplotlib.axes.Axes, or ndarray of Axes (one per factor) when ``factor`` is not an int
        Bar ``i`` (top to bottom) is the ``i``-th feature of ``result.top_features(n)``; its
        width is that feature's weight in W.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dask_factor import datasets, nmf, plot
    >>> A, rows, cols = datasets.load("hawaiibirds")
    >>> model = nmf(A, 3, seed=1, maxit=10)
    >>> model.feature_names = list(rows.index)
    >>> ax = plot.top_features(model, 0, n=5)
    >>> len(ax.patches)
    5
    """
    if not hasattr(result, "top_features"):
        raise TypeError(f"result: expected an NMFResult (with top_features), got "
                        f"{type(result).__name__}")
    table = result.top_features(n, weights=True)
    names = list(dict.fromkeys(table["factor"]))
    single = isinstance(factor, (int, np.integer)) and not isinstance(factor, bool)
    factors = [factor] if single else (list(range(len(names))) if factor is None
                                       else list(factor))
    if not factors:
        raise ValueError(f"factor: expected an integer in [0, {len(names)}), a non-empty "
                         f"sequence of them or None, got {factor!r}")
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not \
                0 <= f < len(names):
            raise ValueError(f"factor: expected integers in [0, {len(names)}), got {factor!r}")
    if ax is None:
        plt = _pyplot("top_features")
        cols = min(len(factors), 4)
        rows = -(-len(factors) // cols)
        _, grid = plt.subplots(rows, cols, figsize=(3.2 * cols, 0.3 * min(n, 50) * rows + 1.0),
                               squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[len(factors):]:
            extra.set_visible(False)
    else:
        _pyplot("top_features")
        axes = [ax] if single else list(ax)
        if len(axes) < len(factors):
            raise ValueError(f"ax: expected {len(factors)} Axes (one per factor), got "
                             f"{len(axes)}")
    for a, f in zip(axes, factors):
        rows_f = table[table["factor"] == names[f]].sort_values("rank")
        y = np.arange(len(rows_f))
        a.barh(y, rows_f["weight"].to_numpy(dtype=float))
        a.set_yticks(y, [str(v) for v in rows_f["feature"]])
        a.invert_yaxis()  # the largest weight on top
        a.set_title(names[f])
        a.set_xlabel("weight in W")
    return axes[0] if single else np.asarray(axes[:len(factors)], dtype=object)


# --------------------------------------------------------------------------- consensus, dclust


def _expect(result, kind: str, attributes: tuple[str, ...]) -> None:
    if not all(hasattr(result, a) for a in attributes):
        raise TypeError(f"result: expected a {kind}, got {type(result).__name__}")


def consensus_heatmap(result, *, ax=None, cmap: str = "Reds"):
    """Heat map of a consensus matrix, samples in dendrogram order, cluster borders drawn.

    Parameters
    ----------
    result : dask_factor.ConsensusResult
    ax : matplotlib Axes, optional
    cmap : str, default "Reds"

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> from dask_factor import coclustering, plot
    >>> H = np.array([[1., 1., 0., 0.], [0., 0., 1., 1.]])
    >>> ax = plot.consensus_heatmap(coclustering([H, H], 2))
    >>> ax.images[0].get_array().shape
    (4, 4)
    """
    from scipy.cluster.hierarchy import leaves_list

    _expect(result, "ConsensusResult", ("consensus", "clusters", "linkage"))
    ax = _axes(ax, "consensus_heatmap", figsize=(5.0, 4.5))
    order = leaves_list(result.linkage)
    C = result.consensus[np.ix_(order, order)]
    im = ax.imshow(C, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    for b in np.flatnonzero(np.diff(result.clusters[order])) + 0.5:
        ax.axhline(b, color="black", lw=0.8)
        ax.axvline(b, color="black", lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("sample")
    ax.set_ylabel("sample")
    ax.set_title(f"consensus ({result.reps} replicates, k={result.k}), "
                 f"cophenetic {result.cophenetic:.3f}")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def k_selection(result, *, ax=None):
    """Stability (left axis) and reconstruction MSE (right axis, ``ax.right_ax``) against k.

    Parameters
    ----------
    result : dask_factor.KSelectionResult
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        The stability axes.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from dask_factor import datasets, k_selection, plot
    >>> sel = k_selection(datasets.load("hawaiibirds").matrix, [2, 3], reps=3, maxit=10)
    >>> plot.k_selection(sel).right_ax.get_ylabel()
    'reconstruction MSE'
    """
    _expect(result, "KSelectionResult", ("table", "best_k"))
    ax = _axes(ax, "k_selection")
    t = result.table.sort_values("k")
    ax.plot(t["k"], t["stability"], "o-", color="tab:blue")
    ax.axvline(result.best_k, color="grey", ls=":", lw=1)
    ax.set_xlabel("k")
    ax.set_ylabel("stability (silhouette)")
    right = ax.twinx()
    right.plot(t["k"], t["mse"], "s--", color="tab:red")
    right.set_ylabel("reconstruction MSE")
    ax.right_ax = right
    ax.set_xticks(list(t["k"]))
    return ax


def dendrogram(result, labels=None, *, ax=None):
    """The splits of a divisive clustering; with ``labels``, each leaf's composition below it.

    Parameters
    ----------
    result : dask_factor.DClustResult
    labels : sequence of length n, optional
        A label per sample (e.g. cell types): stacked bars of each leaf's composition.
    ax : matplotlib Axes, optional
        The dendrogram's axes (the composition goes in an inset axes below it).

    Returns
    -------
    matplotlib.axes.Axes
        The dendrogram's axes (RcppML's heights: a leaf 0, a split one more than its taller
        half).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> from dask_factor import dclust, plot
    >>> rng = np.random.default_rng(0)
    >>> A = rng.poisson(1.0, (30, 80)) + np.kron(np.eye(2), np.ones((15, 40))) * 4
    >>> tree = dclust(A, min_samples=10)
    >>> plot.dendrogram(tree, labels=np.repeat(["a", "b"], 40)).get_ylabel()
    'split depth'
    """
    from scipy.cluster.hierarchy import dendrogram as scipy_dendrogram

    _expect(result, "DClustResult", ("clusters", "linkage", "n"))
    plt = _pyplot("dendrogram")
    leaves = result.clusters
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(leaves)), 4.0))
    names = [f"{c.id or 'root'} (n={c.size})" for c in leaves]
    if labels is not None:  # missing labels (None/NaN) are left out of the composition
        from .divisive import label_codes

        codes, levels = label_codes(labels, result.n)
    ax.set_ylabel("split depth")
    if len(leaves) < 2:
        ax.text(0.5, 0.5, names[0], ha="center", va="center", transform=ax.transAxes)
        return ax
    dn = scipy_dendrogram(result.linkage(), ax=ax, labels=names, leaf_rotation=90,
                          color_threshold=0, above_threshold_color="black",
                          no_labels=labels is not None)
    if labels is None:
        return ax
    bar = ax.inset_axes([0.0, -0.75, 1.0, 0.6])  # below the tree, in its axes' fractions
    colors = plt.get_cmap("tab20")(np.arange(len(levels)) % 20)
    xs = 5.0 + 10.0 * np.arange(len(dn["leaves"]))  # scipy's leaf positions
    for x, leaf in zip(xs, dn["leaves"]):
        own = codes[leaves[leaf].samples]
        own = own[own >= 0]
        frac = np.bincount(own, minlength=len(levels)) / max(own.size, 1)
        bar.bar(x, frac, bottom=np.cumsum(frac) - frac, width=8.0, color=colors)
    bar.set_xlim(ax.get_xlim())
    bar.set_xticks(xs)
    bar.set_xticklabels([names[i] for i in dn["leaves"]], rotation=90, fontsize=7)
    bar.set_ylabel("composition")
    bar.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in colors], list(levels),
               bbox_to_anchor=(1.01, 1.0), loc="upper left", fontsize=7)
    return ax
