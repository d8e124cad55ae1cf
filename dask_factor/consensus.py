"""Consensus NMF: sample co-clustering over replicate fits, and consensus programs at atlas scale.

Two ways to get a result that does not depend on a seed, both built on ``reps`` replicate fits of
the public :func:`dask_factor.nmf` with seeds ``seed + 1, …, seed + reps`` (RcppML's rule), run
side by side (up to :data:`~dask_factor.rank.MAX_CONCURRENT_FITS` at a time without a cluster, all
at once on one), each streaming A like any fit:

:func:`consensus_nmf` — RcppML's ``consensus_nmf()`` (SPEC-nmf.md §6), for data where an n × n
    matrix fits. In every replicate each sample j gets a label (``"hard"``: the factor of largest
    weight in column j of H) or a neighbourhood (``"knn_jaccard"``: its ``knn`` nearest samples by
    cosine similarity of the columns of H); the consensus ``C[i, j]`` is the fraction of
    replicates in which i and j share a label (or the mean Jaccard index of their neighbourhoods).
    Average-linkage clustering of ``1 − C`` cut into k clusters gives the clusters, and the
    correlation of ``1 − C`` with the cophenetic distances the stability. Refused, before any
    fit, when the n × n matrices would not fit in memory.

:func:`consensus_programs` — the cNMF recipe (Kotliar et al. 2019), which needs memory only in
    k × reps × m: the k·reps programs (columns of W) scaled to unit L2 norm, the outliers dropped
    (mean distance to their nearest neighbours above ``density_threshold``), k-means into k
    clusters, each consensus program the median of its cluster; H is then solved against the
    fixed consensus W in one more pass over A (the engine's projection, as ``predict``).
    :func:`k_selection` tabulates stability (silhouette of the k-means) and the reconstruction
    error of the consensus model over a range of k.

Orientation: A is features × samples (genes × cells), so RcppML's ``consensus_nmf(data)``, which
clusters the rows of ``data``, corresponds to ``consensus_nmf(data.T)`` here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._params import validate_params
from .engine.als import ALSConfig
from .engine.inputs import check_shape, open_lazy, prepare_input
from .engine.project import project_blocks, reconstruction_sse
from .rank import MAX_CONCURRENT_FITS

__all__ = ["ConsensusResult", "ConsensusPrograms", "KSelectionResult", "consensus_nmf",
           "consensus_programs", "k_selection", "coclustering", "consensus_bytes"]



# --------------------------------------------------------------------------------------------
# replicate fits


def replicate_seeds(seed: int, reps: int) -> list[int]:
    """RcppML's replicate seeds: ``seed + 1, …, seed + reps``."""
    return [int(seed) + i for i in range(1, reps + 1)]


def run_fits(A, jobs: list[tuple[int, int]], client, nmf_kwargs: dict) -> dict:
    """Fit ``nmf(A, k, seed=s)`` for every ``(k, s)`` in ``jobs``, side by side.

    On a cluster every fit is submitted at once (each is a sequence of small Dask graphs, so
    their tasks interleave on the workers); with dask's threads at most ``MAX_CONCURRENT_FITS``
    run at a time. Returns ``{(k, s): NMFResult}``; the results do not depend on the order.
    """
    from .nmf import nmf

    def one(job):
        k, s = job
        return job, nmf(A, k, seed=s, client=client, **nmf_kwargs)

    if len(jobs) == 1:
        return dict([one(jobs[0])])
    workers = len(jobs) if client is not None else min(MAX_CONCURRENT_FITS, len(jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, jobs))


def _check_nmf_kwargs(k, nmf_kwargs: dict) -> None:
    for bad in ("seed", "client", "k", "test_fraction", "cv_seed", "resume", "checkpoint"):
        if bad in nmf_kwargs:
            raise TypeError(f"{bad}: not an option of the replicate fits here (each replicate "
                            f"has its own seed; pass seed= and client= to this function)")
    validate_params({"k": k, **nmf_kwargs}, entry="fit_nmf")


# --------------------------------------------------------------------------------------------
# sample co-clustering (RcppML's consensus_nmf)


def consensus_bytes(n: int) -> int:
    """Bytes the n × n consensus needs at its peak: the running sum, the consensus and the
    condensed distances, float64 each (``3 · 8 · n²``)."""
    return 24 * int(n) * int(n)


def _available_bytes() -> int:
    import psutil  # a dependency of distributed

    return int(psutil.virtual_memory().available)


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TiB"  # pragma: no cover


def hard_labels(H: np.ndarray) -> np.ndarray:
    """The factor of largest weight for every sample (column of H); ties go to the first."""
    return np.argmax(np.asarray(H), axis=0)


def knn_sets(H: np.ndarray, knn: int) -> np.ndarray:
    """(n, min(knn, n−1)) indices of each sample's nearest other samples by cosine similarity
    of the columns of H (ties broken by the lower index), RcppML's neighbourhoods."""
    X = np.asarray(H, dtype=np.float64).T
    norms = np.sqrt((X * X).sum(axis=1))
    X = X / np.where(norms > 0, norms, 1.0)[:, None]
    S = X @ X.T
    n = S.shape[0]
    kk = min(int(knn), n - 1)
    np.fill_diagonal(S, -np.inf)
    # stable sort on -S: equal similarities keep index order
    return np.argsort(-S, axis=1, kind="stable")[:, :kk]


def _connectivity(H: np.ndarray, method: str, knn: int) -> np.ndarray:
    n = H.shape[1]
    if method == "hard":
        lab = hard_labels(H)
        P = np.zeros((n, int(lab.max()) + 1))
        P[np.arange(n), lab] = 1.0
        return P @ P.T
    nb = knn_sets(H, knn)
    kk = nb.shape[1]
    M = np.zeros((n, n))
    M[np.repeat(np.arange(n), kk), nb.ravel()] = 1.0
    inter = M @ M.T
    with np.errstate(invalid="ignore", divide="ignore"):
        J = np.where(2 * kk - inter > 0, inter / (2 * kk - inter), 0.0)
    np.fill_diagonal(J, 1.0)
    return J


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Relabel 0, 1, … in the order labels first appear (R's ``cutree`` numbering, from 0)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    remap = np.empty(order.size, dtype=np.int64)
    remap[order] = np.arange(order.size)
    return remap[np.searchsorted(np.unique(labels), labels)]


@dataclass
class ConsensusResult:
    """Sample co-clustering over replicate NMF fits (RcppML's ``consensus_nmf`` list).

    Attributes
    ----------
    consensus : ndarray of shape (n, n)
        ``C[i, j]`` in [0, 1]: the fraction of replicates that put samples i and j in the same
        cluster (``"hard"``), or the mean Jaccard index of their neighbourhoods
        (``"knn_jaccard"``); 1 on the diagonal.
    clusters : ndarray of int64, shape (n,)
        Average-linkage clustering of ``1 − C`` cut into ``k`` clusters, numbered from 0 in the
        order they first appear (R's ``cutree`` labels minus 1).
    cophenetic : float
        Pearson correlation of ``1 − C`` with the cophenetic distances (1: perfectly stable).
    linkage : ndarray of shape (n − 1, 4)
        The average-linkage tree (scipy's format; RcppML's ``hclust``).
    models : list of NMFResult
        The replicate fits of ``A.T`` (samples on the W side), in seed order (empty from
        :func:`coclustering`).
    k, reps : int
    method : str
    knn : int or None
        The neighbourhood size (``"knn_jaccard"`` only).
    seeds : list of int
        The replicates' seeds.
    """

    consensus: np.ndarray = field(repr=False)
    clusters: np.ndarray = field(repr=False)
    cophenetic: float
    linkage: np.ndarray = field(repr=False)
    models: list = field(repr=False)
    k: int
    reps: int
    method: str
    knn: int | None
    seeds: list = field(repr=False)

    def plot(self, ax=None, *, cmap: str = "Reds"):
        """Heat map of the consensus matrix (:func:`dask_factor.plot.consensus_heatmap`).

        Examples
        --------
        >>> import matplotlib; matplotlib.use("Agg")
        >>> from dask_factor import consensus_nmf, datasets
        >>> res = consensus_nmf(datasets.load("aml").matrix, 3, reps=3, seed=1, maxit=10)
        >>> res.plot().get_title()
        'consensus (3 replicates, k=3), cophenetic 0.9...'
        """
        from .plot import consensus_heatmap

        return consensus_heatmap(self, ax=ax, cmap=cmap)


def coclustering(embeddings, k: int, *, method: str = "hard", knn: int = 10) -> ConsensusResult:
    """Consensus of several embeddings of the same n samples (e.g. H of replicate fits).

    What :func:`consensus_nmf` computes once its replicates are fitted; call it directly for
    embeddings from elsewhere, such as a shared layer's H from graph fits over several seeds
    (``[res.layer("shared").H for res in results]``).

    Parameters
    ----------
    embeddings : sequence of array-like of shape (k_r, n)
        One per replicate; rows are factors, columns samples (``k_r`` may differ). Each row
        should be normalised (as NMF factors are) so that ``"hard"`` compares like with like.
    k : int
        Clusters to cut the consensus tree into.
    method : {"hard", "knn_jaccard"}, default "hard"
    knn : int, default 10
        Neighbourhood size of ``"knn_jaccard"`` (at most n − 1 is used).

    Returns
    -------
    ConsensusResult
        With ``models`` empty.

    Examples
    --------
    >>> import numpy as np
    >>> H1 = np.array([[1., 1., 0., 0.], [0., 0., 1., 1.]])
    >>> res = coclustering([H1, H1[::-1]], 2)
    >>> res.consensus[0].tolist(), res.clusters.tolist()
    ([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1])
    """
    from scipy.cluster.hierarchy import cophenet, cut_tree, linkage
    from scipy.spatial.distance import squareform

    p = validate_params({"k": k, "knn": knn}, entry="consensus_nmf")
    p.update(validate_params({"method": method}, entry="consensus_nmf"))
    embs = [np.asarray(H, dtype=np.float64) for H in embeddings]
    if not embs:
        raise ValueError("embeddings: expected at least one (k, n) matrix, got none")
    n = embs[0].shape[1]
    for i, H in enumerate(embs):
        if H.ndim != 2 or H.shape[1] != n:
            raise ValueError(f"embeddings[{i}]: expected a 2-D matrix with {n} columns (the "
                             f"samples), got shape {H.shape}")
    if n < 2 or p["k"] > n:
        raise ValueError(f"k: expected an integer in [1, {n}] (the number of samples), got {k}")
    conn = np.zeros((n, n))
    for H in embs:
        conn += _connectivity(H, p["method"], p["knn"])
    C = conn / len(embs)
    D = np.clip(1.0 - C, 0.0, None)
    np.fill_diagonal(D, 0.0)
    dist = squareform(D, checks=False)
    Z = linkage(dist, method="average")
    coph = float(cophenet(Z, dist)[0]) if np.ptp(dist) > 0 else float("nan")
    labels = _first_appearance(cut_tree(Z, n_clusters=p["k"]).ravel())
    return ConsensusResult(C, labels, coph, Z, [], p["k"], len(embs), p["method"],
                           p["knn"] if p["method"] == "knn_jaccard" else None, [])


def consensus_nmf(
    A,
    k: int,
    *,
    reps: int = 50,
    method: str = "hard",
    knn: int = 10,
    seed: int | None = None,
    client=None,
    max_memory: int | None = None,
    **nmf_kwargs,
) -> ConsensusResult:
    """Consensus clustering of the samples over ``reps`` NMF fits (RcppML's ``consensus_nmf``).

    Replicate r is ``nmf(A.T, k, seed=seed + r, **nmf_kwargs)``: like RcppML, the samples are
    the rows of the fitted matrix, so W (n × k) holds them and is what the seed initialises (a
    lazy A stays lazy: its transpose is a lazy view). The replicates run side by side (on
    ``client`` if given). Each gives every sample a cluster (``"hard"``: its factor of largest
    weight in W's row) or a neighbourhood (``"knn_jaccard"``: its ``knn`` nearest samples by
    cosine similarity of W's rows); ``C[i, j]`` is the fraction of replicates in which samples
    i and j share a cluster, or the mean Jaccard index of their neighbourhoods. The clusters cut
    the average-linkage tree of ``1 − C`` into k; the cophenetic correlation measures stability.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples; anything :func:`dask_factor.nmf` accepts. The samples (columns) are
        clustered: RcppML's ``consensus_nmf(X)`` clusters the rows of X, i.e. ``A = Xᵀ``.
    k : int
        Rank of every replicate and number of clusters.
    reps : int, default 50
        Replicate fits.
    method : {"hard", "knn_jaccard"}, default "hard"
    knn : int, default 10
        Neighbourhood size of ``"knn_jaccard"``.
    seed : int, optional
        Replicate r uses ``seed + r`` (r = 1..reps); None draws ``seed`` (then recorded in
        ``seeds``).
    client : distributed.Client, optional
        Run the replicates on this cluster (default: the active client, else dask's threads).
    max_memory : int, optional
        Bytes the n × n matrices may take (:func:`consensus_bytes`); default half the memory
        available now. Larger inputs are refused before any fit.
    **nmf_kwargs
        Passed to every replicate (``tol``, ``maxit``, ``L1``, ``solver``, ``dtype``, …).
        ``rng="rcppml", solver="cholesky", dtype="float64"`` reproduce RcppML's replicates.

    Returns
    -------
    ConsensusResult
        ``consensus`` (n × n), ``clusters`` (n,), ``cophenetic``, ``linkage``, ``models`` (fits
        of ``A.T``: ``W`` is n × k, ``H`` is k × m).

    Raises
    ------
    MemoryError
        The n × n consensus would need more than ``max_memory``; the message gives the bytes and
        points to :func:`consensus_programs`, whose memory does not grow with n².
    TypeError, ValueError
        A bad argument, before any fit.

    Examples
    --------
    >>> from dask_factor import consensus_nmf, datasets
    >>> A = datasets.load("aml").matrix          # 824 regions × 135 samples
    >>> res = consensus_nmf(A, 3, reps=5, seed=1, maxit=20)
    >>> res.consensus.shape, res.clusters.shape, len(res.models)
    ((135, 135), (135,), 5)
    >>> 0.9 < res.cophenetic <= 1.0
    True
    """
    p = validate_params({"k": k, "reps": reps, "knn": knn, "seed": seed, "client": client,
                         "max_memory": max_memory}, entry="consensus_nmf")
    p.update(validate_params({"method": method}, entry="consensus_nmf"))
    _check_nmf_kwargs(k, nmf_kwargs)
    X = open_lazy(A, "A")
    m, n = check_shape("A", X)
    if k > min(m, n):
        raise ValueError(f"k: expected an integer in [1, {min(m, n)}] (min(m, n) of A), got {k}")
    need = consensus_bytes(n)
    budget = int(max_memory) if max_memory is not None else _available_bytes() // 2
    if need > budget:
        raise MemoryError(
            f"A: the {n} × {n} consensus matrix would need about {_fmt_bytes(need)} "
            f"(3 float64 n × n arrays), more than max_memory={_fmt_bytes(budget)}; use "
            f"dask_factor.consensus_programs(A, k, reps=...) (cNMF: consensus programs from "
            f"k × reps × m, memory independent of n) instead, or raise max_memory")
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1 - reps))
    seeds = replicate_seeds(seed, p["reps"])
    # RcppML fits its input with the samples as rows (W side, initialised from the seed): the
    # same problem as A's, but ALS reaches RcppML's optima only from that side (aml: adjusted
    # Rand 1.0 against 0.85 when fitting A itself)
    # in-memory sparse: transposed to CSC once, not in every replicate; a dask array's
    # transpose is lazy (each feature block then stacks the sample chunks inside its task)
    Xt = sp.csc_matrix(X.T) if sp.issparse(X) else X.T
    fits = run_fits(Xt, [(k, s) for s in seeds], client, nmf_kwargs)
    models = [fits[(k, s)] for s in seeds]
    res = coclustering([mod.W.T for mod in models], k, method=p["method"], knn=p["knn"])
    res.models, res.seeds = models, seeds
    return res


# --------------------------------------------------------------------------------------------
# consensus programs (cNMF)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.sqrt((X * X).sum(axis=1))
    return X / np.where(norms > 0, norms, 1.0)[:, None]


def _sq_dists(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    d = (X * X).sum(1)[:, None] - 2.0 * (X @ Y.T) + (Y * Y).sum(1)[None, :]
    return np.maximum(d, 0.0)


def local_density(X: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Mean Euclidean distance of each row of X to its ``n_neighbors`` nearest other rows."""
    D = np.sqrt(_sq_dists(X, X))
    np.fill_diagonal(D, np.inf)
    nn = min(int(n_neighbors), X.shape[0] - 1)
    return np.sort(D, axis=1)[:, :nn].mean(axis=1)


def kmeans(X: np.ndarray, k: int, seed: int, *, n_init: int = 10, max_iter: int = 300):
    """Lloyd's k-means with k-means++ starts, ``n_init`` restarts, the lowest inertia kept.

    Deterministic for a seed (numpy's ``default_rng(seed)``; distance ties go to the lower
    centre). Returns ``(labels, centres, inertia)``.
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
    """Mean silhouette width (Euclidean) of the rows of X; 0 when there is one cluster."""
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


def _finish(A, Wc, diag, models, k, seeds, dtype, client) -> ConsensusPrograms:
    Hd, mse = _solve_h(A, Wc, dtype, client)
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
    _check_nmf_kwargs(k, nmf_kwargs)
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
    return _finish(A, Wc, diag, models, k, seeds, nmf_kwargs.get("dtype", "float32"), client)


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
        _check_nmf_kwargs(kk, nmf_kwargs)
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
        res = _finish(A, Wc, diag, models, kk, seeds, nmf_kwargs.get("dtype", "float32"),
                      client)
        results[kk] = res
        rows.append(dict(k=kk, stability=res.stability, mse=res.mse,
                         replicate_mse=res.replicate_mse, n_kept=int(res.kept.sum())))
    table = pd.DataFrame(rows)
    stable = table["stability"] >= table["stability"].max() - p["stability_tol"]
    best = int(table.loc[stable, "k"].max())
    return KSelectionResult(table, results, best)
