"""Consensus programs over replicate NMF fits (the cNMF recipe) and choosing k, at any scale.

:func:`consensus_programs` needs memory only in k × reps × m: the replicates' k·reps programs
(columns of W) scaled to unit L2 norm, the outliers dropped (mean distance to their nearest
neighbours above ``density_threshold``), k-means into k clusters, each consensus program the
median of its cluster; H is then solved against the fixed consensus W in one more pass over A
(the engine's projection, as ``NMFResult.predict``). :func:`k_selection` tabulates stability
(silhouette of the k-means) and the reconstruction error of the consensus model over a range of
k. The replicate fits are those of :mod:`dask_factor.consensus` (seeds ``seed + 1, …``, run side
by side on the cluster, each streaming A).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._params import validate_params
from .consensus import check_nmf_kwargs, replicate_seeds, run_fits
from .engine.als import ALSConfig
from .engine.inputs import check_shape, open_lazy, prepare_input
from .engine.project import project_blocks, reconstruction_sse

__all__ = ["ConsensusPrograms", "KSelectionResult", "consensus_programs", "k_selection",
           "kmeans", "silhouette", "local_density"]


# --------------------------------------------------------------------------------------------
# consensus programs (cNMF)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.sqrt((X * X).sum(axis=1))
    return X / np.where(norms > 0, norms, 1.0)[:, None]


def _sq_dists(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ Y.T) + (Y * Y).sum(1)[None, :]
    return np.maximum(d, 0.0)


def local_density(X: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Mean Euclidean distance of each row of X to its ``n_neighbors`` nearest other rows.

    Parameters
    ----------
    X : ndarray of shape (p, m)
    n_neighbors : int
        At most ``p − 1`` are used.

    Returns
    -------
    ndarray of shape (p,)

    Examples
    --------
    >>> import numpy as np
    >>> local_density(np.array([[0.0], [1.0], [3.0]]), 1).tolist()
    [1.0, 1.0, 2.0]
    """
    D = np.sqrt(_sq_dists(X, X))
    np.fill_diagonal(D, np.inf)
    nn = min(int(n_neighbors), X.shape[0] - 1)
    return np.sort(D, axis=1)[:, :nn].mean(axis=1)


def kmeans(X: np.ndarray, k: int, seed: int, *, n_init: int = 10, max_iter: int = 300):
    """Lloyd's k-means with k-means++ starts, ``n_init`` restarts, the lowest inertia kept.

    Deterministic for a seed (numpy's ``default_rng(seed)``; distance ties go to the lower
    centre).

    Parameters
    ----------
    X : ndarray of shape (p, m)
    k : int
    seed : int
    n_init, max_iter : int

    Returns
    -------
    labels : ndarray of shape (p,)
    centres : ndarray of shape (k, m)
    inertia : float
        Sum of squared distances to the assigned centres.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> labels, centres, inertia = kmeans(X, 2, seed=0)
    >>> bool(labels[0] == labels[1] != labels[2] == labels[3]), round(inertia, 6)
    (True, 0.01)
    """
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    best = None
    for _ in range(n_init):
        C = np.empty((k, X.shape[1]))
        C[0] = X[rng.integers(n)]
        d2 = _sq_dists(X, C[:1]).ravel()
        for c in range(1, k):
            tot = d2.sum()
            i = int(rng.choice(n, p=d2 / tot)) if tot > 0 else int(rng.integers(n))
            C[c] = X[i]
            d2 = np.minimum(d2, _sq_dists(X, C[c:c + 1]).ravel())
        labels = np.full(n, -1)
        for _ in range(max_iter):
            new = np.argmin(_sq_dists(X, C), axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = X[labels == c]
                if len(members):
                    C[c] = members.mean(axis=0)
        inertia = float(_sq_dists(X, C)[np.arange(n), labels].sum())
        if best is None or inertia < best[2]:
            best = (labels.copy(), C.copy(), inertia)
    return best


def silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette width (Euclidean) of the rows of X; 0 when there is one cluster.

    Parameters
    ----------
    X : ndarray of shape (p, m)
    labels : ndarray of shape (p,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> round(silhouette(np.array([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1])), 4)
    0.8997
    """
    labs = np.unique(labels)
    if labs.size < 2:
        return 0.0
    D = np.sqrt(_sq_dists(X, X))
    s = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        own = labels == labels[i]
        if own.sum() <= 1:
            continue  # a singleton's silhouette is 0 (Rousseeuw)
        a = D[i, own].sum() / (own.sum() - 1)
        b = min(D[i, labels == c].mean() for c in labs if c != labels[i])
        s[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(s.mean())


@dataclass
class ConsensusPrograms:
    """Consensus NMF programs over replicate fits (cNMF) and the model solved against them.

    Attributes
    ----------
    W : ndarray of shape (m, k)
        Consensus programs: the median of each k-means cluster of unit-L2 replicate programs,
        then scaled so each column sums to 1; ordered by decreasing ``d``.
    d : ndarray of shape (k,)
        Scale of each program in the final model.
    H : ndarray of shape (k, n)
        Sample activities solved against the fixed W (NNLS, one pass over A); rows sum to 1, so
        ``A ≈ W diag(d) H``.
    mse : float
        Mean squared error of ``W diag(d) H`` against A (exact, float64).
    stability : float
        Silhouette width of the k-means clustering of the kept programs (Euclidean, unit-L2
        programs): near 1 when every replicate finds the same k programs.
    programs : ndarray of shape (k · reps, m)
        Every replicate's programs (unit L2 norm), replicate by replicate.
    labels : ndarray of shape (k · reps,)
        The k-means cluster of each program (the consensus program's index), −1 for outliers.
    density : ndarray of shape (k · reps,)
        Mean distance of each program to its ``n_neighbors`` nearest programs.
    kept : ndarray of bool, shape (k · reps,)
        ``density <= density_threshold``.
    models : list of NMFResult
        The replicate fits in seed order.
    k, reps : int
    seeds : list of int
    """

    W: np.ndarray = field(repr=False)
    d: np.ndarray
    H: np.ndarray = field(repr=False)
    mse: float
    stability: float
    programs: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    kept: np.ndarray = field(repr=False)
    models: list = field(repr=False)
    k: int
    reps: int
    seeds: list = field(repr=False)
    replicate_mse: float = float("nan")


def _programs_from_fits(models, k, seed, density_threshold, n_neighbors):
    """Cluster the replicates' programs; returns (W (m × k, columns sum 1), the diagnostics)."""
    P = _unit_rows(np.vstack([np.asarray(mod.W, dtype=np.float64).T for mod in models]))
    nn = max(1, round(n_neighbors * len(models))) if n_neighbors < 1 else int(n_neighbors)
    dens = local_density(P, nn)
    kept = dens <= density_threshold
    if kept.sum() < k:
        raise ValueError(
            f"density_threshold: only {int(kept.sum())} of {len(P)} programs have a local "
            f"density <= {density_threshold} (fewer than k={k}); the densities range over "
            f"[{dens.min():.3g}, {dens.max():.3g}], raise the threshold")
    labels_kept, _, _ = kmeans(P[kept], k, seed)
    sizes = np.bincount(labels_kept, minlength=k)
    if (sizes == 0).any():  # k-means left a cluster empty: its median would be NaN
        raise ValueError(
            f"k: the {int(kept.sum())} kept programs form only {int((sizes > 0).sum())} "
            f"distinct clusters, fewer than k={k} (replicates that found the same or all-zero "
            f"programs); choose a smaller k")
    Wc = np.column_stack([np.median(P[kept][labels_kept == c], axis=0) for c in range(k)])
    Wc = np.maximum(Wc, 0.0)
    Wc = Wc / np.where(Wc.sum(0) > 0, Wc.sum(0), 1.0)
    labels = np.full(len(P), -1)
    labels[kept] = labels_kept
    stab = silhouette(P[kept], labels_kept)
    return Wc, P, labels, dens, kept, stab


def _solve_h(A, W: np.ndarray, dtype, client):
    """H against a fixed W in one pass (the engine's projection), then the exact MSE."""
    import dask

    prep = prepare_input(A, name="A", dtype=np.dtype(dtype), client=client, warn_negative=False)
    k = W.shape[1]
    cfg = ALSConfig(k=k, solver="cd", cd_maxit=100, cd_tol=1e-8, dtype=np.dtype(dtype))
    blocks = project_blocks(prep.bm, W, cfg, client)
    blocks = list(client.persist(blocks) if client is not None else dask.persist(*blocks))
    parts = client.gather(client.compute(blocks)) if client is not None else dask.compute(*blocks)
    Hd = np.vstack([np.asarray(p_, dtype=np.float64) for p_ in parts]).T  # diag(d) H, k × n
    sse, _ = reconstruction_sse(prep.bm, np.asarray(W, dtype=np.float64), blocks, client)
    m, n = prep.shape
    return Hd, sse / (m * n)


def _finish(A, Wc, diag, models, k, seeds, client) -> ConsensusPrograms:
    # the replicates' dtype, as NMFResult.predict solves against a model
    Hd, mse = _solve_h(A, Wc, models[0].settings["dtype"], client)
    d = Hd.sum(axis=1)
    order = np.argsort(-d, kind="stable")
    P, labels, dens, kept, stab = diag
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    labels = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    H = Hd[order] / np.where(d[order] > 0, d[order], 1.0)[:, None]
    rep_mse = float(np.mean([mod.mse for mod in models]))
    return ConsensusPrograms(Wc[:, order], d[order], H, float(mse), float(stab), P, labels,
                             dens, kept, models, k, len(models), seeds, rep_mse)


def consensus_programs(
    A,
    k: int,
    *,
    reps: int = 20,
    seed: int = 0,
    density_threshold: float = 0.5,
    n_neighbors: float = 0.3,
    client=None,
    **nmf_kwargs,
) -> ConsensusPrograms:
    """Consensus programs over ``reps`` NMF fits (the cNMF recipe), for inputs of any size.

    1. ``reps`` fits ``nmf(A, k, seed=seed + r)`` run side by side as independent Dask fits
       (all submitted at once on ``client``), each streaming A.
    2. Their k · reps programs (columns of W) are scaled to unit L2 norm; a program whose mean
       distance to its nearest ``n_neighbors`` programs exceeds ``density_threshold`` is an
       outlier and dropped.
    3. k-means (k-means++ starts from ``seed``, 10 restarts) clusters the rest; each consensus
       program is the median of its cluster, clipped at 0 and scaled to sum 1.
    4. H is solved against the fixed consensus W in one more pass over A (NNLS, as
       ``NMFResult.predict``), and the exact MSE of the model is computed.

    Memory: k · reps · m on the client, never n × n; every pass over A is a Dask pass.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Anything :func:`dask_factor.nmf` accepts (paths and dask arrays are read in tasks).
    k : int
    reps : int, default 20
    seed : int, default 0
        Replicate r uses ``seed + r`` (r = 1..reps); k-means uses ``seed``.
    density_threshold : float, default 0.5
        Largest local density kept (distances between unit vectors lie in [0, 2]; 2 keeps all).
    n_neighbors : float, default 0.3
        Neighbours of the local density: a fraction (< 1) of ``reps`` or a count (>= 1).
    client : distributed.Client, optional
    **nmf_kwargs
        Passed to every replicate fit (``tol``, ``maxit``, ``L1``, ``dtype``, …).

    Returns
    -------
    ConsensusPrograms
        ``W`` (m × k), ``d`` (k,), ``H`` (k × n), ``mse``, ``stability`` and the diagnostics.

    Examples
    --------
    >>> from dask_factor import consensus_programs, datasets
    >>> A = datasets.load("hawaiibirds").matrix      # 183 species × 1,183 grid cells
    >>> res = consensus_programs(A, 4, reps=4, seed=1, maxit=20)
    >>> res.W.shape, res.H.shape, int(res.kept.sum()) <= 16
    ((183, 4), (4, 1183), True)
    """
    p = validate_params({"k": k, "reps": reps, "seed": seed, "client": client,
                         "density_threshold": density_threshold, "n_neighbors": n_neighbors},
                        entry="consensus_programs")
    check_nmf_kwargs(k, nmf_kwargs)
    m, n = check_shape("A", open_lazy(A, "A"))
    if k > min(m, n):
        raise ValueError(f"k: expected an integer in [1, {min(m, n)}] (min(m, n) of A), got {k}")
    if p["reps"] < 2:
        raise ValueError(f"reps: expected an integer >= 2 (programs are clustered across "
                         f"replicates), got {reps}")
    seeds = replicate_seeds(p["seed"], p["reps"])
    fits = run_fits(A, [(k, s) for s in seeds], client, nmf_kwargs)
    models = [fits[(k, s)] for s in seeds]
    Wc, *diag = _programs_from_fits(models, k, p["seed"], p["density_threshold"],
                                    p["n_neighbors"])
    return _finish(A, Wc, diag, models, k, seeds, client)


# --------------------------------------------------------------------------------------------
# choosing k


@dataclass
class KSelectionResult:
    """Stability and reconstruction error of consensus programs over a range of k.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per k: ``k``, ``stability`` (silhouette of the programs' k-means), ``mse``
        (the consensus model's), ``replicate_mse`` (mean over the replicates), ``n_kept``
        (programs not filtered as outliers).
    results : dict k → ConsensusPrograms
    best_k : int
        The largest k whose stability is within ``stability_tol`` of the highest: stability is
        near 1 for every k up to the number of programs the data hold (fewer programs are found
        the same way every time) and drops beyond it (replicates split programs differently).
    """

    table: Any
    results: dict = field(repr=False)
    best_k: int

    def plot(self, ax=None):
        """Stability and reconstruction error against k (:func:`dask_factor.plot.k_selection`).

        Examples
        --------
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from dask_factor import k_selection, datasets
        >>> sel = k_selection(datasets.load("hawaiibirds").matrix, [2, 3], reps=3, maxit=10)
        >>> sel.plot().get_ylabel()
        'stability (silhouette)'
        """
        from .plot import k_selection as k_selection_plot

        return k_selection_plot(self, ax=ax)


def k_selection(
    A,
    ks,
    *,
    reps: int = 20,
    seed: int = 0,
    density_threshold: float = 0.5,
    n_neighbors: float = 0.3,
    client=None,
    stability_tol: float = 0.02,
    **nmf_kwargs,
) -> KSelectionResult:
    """:func:`consensus_programs` for every k in ``ks``, all replicate fits side by side.

    Parameters
    ----------
    A : array-like of shape (m, n)
    ks : list of int
        Ranks to compare.
    reps, seed, density_threshold, n_neighbors, client, **nmf_kwargs
        As in :func:`consensus_programs` (the same replicate seeds for every k).
    stability_tol : float, default 0.02
        ``best_k`` is the largest k with stability >= (highest stability − ``stability_tol``).

    Returns
    -------
    KSelectionResult
        ``table`` (k, stability, mse, replicate_mse, n_kept), ``results``, ``best_k``, ``plot()``.

    Examples
    --------
    >>> from dask_factor import k_selection, datasets
    >>> sel = k_selection(datasets.load("hawaiibirds").matrix, [2, 3], reps=3, maxit=10)
    >>> list(sel.table.columns)
    ['k', 'stability', 'mse', 'replicate_mse', 'n_kept']
    """
    import pandas as pd

    p = validate_params({"ks": ks, "reps": reps, "seed": seed, "client": client,
                         "density_threshold": density_threshold, "n_neighbors": n_neighbors,
                         "stability_tol": stability_tol}, entry="consensus_programs")
    for kk in p["ks"]:
        check_nmf_kwargs(kk, nmf_kwargs)
    m, n = check_shape("A", open_lazy(A, "A"))
    if max(p["ks"]) > min(m, n):
        raise ValueError(f"ks: expected ranks in [1, {min(m, n)}] (min(m, n) of A), got "
                         f"{max(p['ks'])}")
    if p["reps"] < 2:
        raise ValueError(f"reps: expected an integer >= 2, got {reps}")
    seeds = replicate_seeds(p["seed"], p["reps"])
    ks = sorted(set(p["ks"]))
    fits = run_fits(A, [(kk, s) for kk in ks for s in seeds], client, nmf_kwargs)
    results, rows = {}, []
    for kk in ks:
        models = [fits[(kk, s)] for s in seeds]
        Wc, *diag = _programs_from_fits(models, kk, p["seed"], p["density_threshold"],
                                        p["n_neighbors"])
        res = _finish(A, Wc, diag, models, kk, seeds, client)
        results[kk] = res
        rows.append(dict(k=kk, stability=res.stability, mse=res.mse,
                         replicate_mse=res.replicate_mse, n_kept=int(res.kept.sum())))
    table = pd.DataFrame(rows)
    stable = table["stability"] >= table["stability"].max() - p["stability_tol"]
    best = int(table.loc[stable, "k"].max())
    return KSelectionResult(table, results, best)
