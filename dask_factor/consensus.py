"""Consensus NMF: sample co-clustering over replicate fits (RcppML's ``consensus_nmf``).

A result that does not depend on a seed, from ``reps`` replicate fits of the public
:func:`dask_factor.nmf` with seeds ``seed + 1, …, seed + reps`` (RcppML's rule), run side by side
(:func:`run_fits`: up to :data:`~dask_factor.rank.MAX_CONCURRENT_FITS` at a time on dask's
threads, all at once on a cluster), each streaming A like any fit.

:func:`consensus_nmf` (RcppML 1.0's) is for data where an n × n matrix fits. Like RcppML, which
clusters the rows of its input, every replicate fits ``A.T`` (samples × features), so the
samples are W's rows. In each replicate a sample gets a label (``"hard"``: its factor of largest
weight) or a neighbourhood (``"knn_jaccard"``: its ``knn`` nearest samples by cosine similarity);
the consensus ``C[i, j]`` is the fraction of replicates in which i and j share a label, or the
mean Jaccard index of their neighbourhoods. Average-linkage clustering of ``1 − C`` cut into k
gives the clusters, and the correlation of ``1 − C`` with the cophenetic distances the
stability. It is refused, before any fit, when the n × n matrices would not fit in memory;
:mod:`dask_factor.programs` (cNMF consensus programs, memory k × reps × m) is the scalable way.
:func:`coclustering` is the consensus step alone, for embeddings from elsewhere (graph fits).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._params import validate_params
from .engine.inputs import check_shape, open_lazy
from .rank import side_by_side

__all__ = ["ConsensusResult", "consensus_nmf", "coclustering", "consensus_bytes",
           "replicate_seeds", "run_fits", "check_nmf_kwargs"]



# --------------------------------------------------------------------------------------------
# replicate fits


def replicate_seeds(seed: int, reps: int) -> list[int]:
    """RcppML's replicate seeds: ``seed + 1, …, seed + reps``.

    Examples
    --------
    >>> replicate_seeds(10, 3)
    [11, 12, 13]
    """
    return [int(seed) + i for i in range(1, reps + 1)]


def run_fits(A, jobs: list[tuple[int, int]], client, nmf_kwargs: dict) -> dict:
    """Fit ``nmf(A, k, seed=s)`` for every ``(k, s)`` in ``jobs``, side by side.

    On a cluster every fit is submitted at once (each is a sequence of small Dask graphs, so
    their tasks interleave on the workers); with dask's threads at most ``MAX_CONCURRENT_FITS``
    run at a time. The results do not depend on the order.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Anything :func:`dask_factor.nmf` accepts (opened by every fit).
    jobs : list of (int, int)
        ``(k, seed)`` of every fit.
    client : distributed.Client or None
    nmf_kwargs : dict
        The other options of every fit (checked by :func:`check_nmf_kwargs`).

    Returns
    -------
    dict
        ``{(k, seed): NMFResult}`` (W of shape (m, k), H of shape (k, n)).

    Examples
    --------
    >>> import numpy as np
    >>> A = np.random.default_rng(0).random((20, 15))
    >>> fits = run_fits(A, [(2, 1), (3, 1)], None, {"maxit": 50, "tol": 1e-3})
    >>> sorted(fits), fits[(3, 1)].W.shape
    ([(2, 1), (3, 1)], (20, 3))
    """
    from .nmf import nmf

    def one(job):
        k, s = job
        return job, nmf(A, k, seed=s, client=client, **nmf_kwargs)

    return dict(side_by_side(one, jobs, client))


def check_nmf_kwargs(k, nmf_kwargs: dict, seed: int | None = None) -> None:
    """Check the options passed on to every replicate fit (before any fit).

    Parameters
    ----------
    k : int
        The replicates' rank.
    nmf_kwargs : dict
        Options of :func:`dask_factor.nmf` given to every replicate. Those a replicate sets
        itself (``seed``, ``client``, ``k``), cross-validation and checkpoints, and ``w_init``
        (every replicate would start from it, so the seeds would not matter) are refused.
    seed : int, optional
        The replicates' base seed, checked against ``rng`` (a negative seed needs
        ``rng="rcppml"``) with the caller's value in the message.

    Raises
    ------
    TypeError, ValueError
        ``name: ...`` for the first bad option.

    Examples
    --------
    >>> check_nmf_kwargs(3, {"maxit": 20, "L1": 0.1})
    >>> check_nmf_kwargs(3, {"w_init": None})
    Traceback (most recent call last):
        ...
    TypeError: w_init: not an option of the replicate fits here (every replicate would start ...
    >>> check_nmf_kwargs(3, {}, seed=-5)
    Traceback (most recent call last):
        ...
    ValueError: seed: expected a non-negative integer with rng='numpy' (R-style negative ...
    """
    for bad in ("seed", "client", "k", "test_fraction", "cv_seed", "resume", "checkpoint"):
        if bad in nmf_kwargs:
            raise TypeError(f"{bad}: not an option of the replicate fits here (each replicate "
                            f"has its own seed; pass seed= and client= to this function)")
    if "w_init" in nmf_kwargs:
        raise TypeError("w_init: not an option of the replicate fits here (every replicate "
                        "would start from it; they differ only by their seed)")
    validate_params({"k": k, **nmf_kwargs}, entry="fit_nmf")
    if seed is not None:  # the rule of nmf()'s seed and rng, on the caller's value
        from .nmf_fit import fit_nmf

        rng = nmf_kwargs.get("rng", inspect.signature(fit_nmf).parameters["rng"].default)
        validate_params({"seed": seed, "rng": rng}, entry="fit_nmf")


# --------------------------------------------------------------------------------------------
# sample co-clustering (RcppML's consensus_nmf)


def consensus_bytes(n: int) -> int:
    """Bytes the n × n consensus needs at its peak (``3 · 8 · n²``, an upper bound).

    The consensus itself (float64, ``8 n²``), its condensed distances (``4 n²``) and the
    condensed copy scipy's ``linkage``/``cophenet`` make (``4 n²``); the connectivities are
    added row block by row block (:data:`ROW_BLOCK_BYTES` each), never as n × n temporaries.

    Examples
    --------
    >>> consensus_bytes(1000)
    24000000
    """
    return 24 * int(n) * int(n)


#: the consensus is accumulated in row blocks of about this many bytes (b × n float64)
ROW_BLOCK_BYTES = 2**25


def _row_blocks(n: int):
    b = max(1, min(n, ROW_BLOCK_BYTES // (8 * n)))
    return [(r, min(r + b, n)) for r in range(0, n, b)]


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TiB"  # pragma: no cover


def hard_labels(H: np.ndarray) -> np.ndarray:
    """The factor of largest weight for every sample (column of H); ties go to the first.

    Examples
    --------
    >>> hard_labels(np.array([[1., 0., 2.], [0., 3., 2.]])).tolist()
    [0, 1, 0]
    """
    return np.argmax(np.asarray(H), axis=0)


def knn_sets(H: np.ndarray, knn: int) -> np.ndarray:
    """(n, min(knn, n−1)) indices of each sample's nearest other samples by cosine similarity
    of the columns of H (ties broken by the lower index), RcppML's neighbourhoods.

    Computed row block by row block (no n × n similarity matrix).

    Examples
    --------
    >>> knn_sets(np.array([[1., 1., 0., 0.1], [0., 0.1, 1., 1.]]), 1).ravel().tolist()
    [1, 0, 3, 2]
    """
    X = np.asarray(H, dtype=np.float64).T
    norms = np.sqrt((X * X).sum(axis=1))
    X = X / np.where(norms > 0, norms, 1.0)[:, None]
    n = X.shape[0]
    kk = min(int(knn), n - 1)
    out = np.empty((n, kk), dtype=np.int64)
    for r0, r1 in _row_blocks(n):
        S = X[r0:r1] @ X.T
        S[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        # stable sort on -S: equal similarities keep index order
        out[r0:r1] = np.argsort(-S, axis=1, kind="stable")[:, :kk]
    return out


def _add_connectivity(conn: np.ndarray, H: np.ndarray, method: str, knn: int) -> None:
    """``conn += `` one replicate's connectivity (n × n), in place, a row block at a time."""
    n = H.shape[1]
    if method == "hard":
        lab = hard_labels(H)
        for r0, r1 in _row_blocks(n):
            conn[r0:r1] += lab[r0:r1, None] == lab[None, :]
        return
    nb = knn_sets(H, knn)
    kk = nb.shape[1]
    M = sp.csr_matrix((np.ones(n * kk), nb.ravel(), np.arange(0, n * kk + 1, kk)),
                      shape=(n, n))
    Mt = M.T.tocsc()
    for r0, r1 in _row_blocks(n):
        inter = (M[r0:r1] @ Mt).toarray()  # |N_i ∩ N_j|, exact small integers
        J = inter / (2 * kk - inter)  # |N_i ∪ N_j| = 2kk − |N_i ∩ N_j| >= kk >= 1
        J[np.arange(r1 - r0), np.arange(r0, r1)] = 1.0
        conn[r0:r1] += J


def _condensed_distances(C: np.ndarray) -> np.ndarray:
    """``squareform(clip(1 − C, 0))`` (the upper triangle, row by row) without an n × n copy."""
    n = C.shape[0]
    dist = np.empty(n * (n - 1) // 2)
    at = 0
    for i in range(n - 1):
        np.subtract(1.0, C[i, i + 1:], out=dist[at:at + n - i - 1])
        at += n - i - 1
    return np.maximum(dist, 0.0, out=dist)


def _pearson(x: np.ndarray, y: np.ndarray, chunk: int = 2**20) -> float:
    """Pearson correlation of two long vectors, in chunks (two passes, float64)."""
    mx, my = float(np.mean(x)), float(np.mean(y))
    sxy = sxx = syy = 0.0
    for a in range(0, x.size, chunk):
        dx, dy = x[a:a + chunk] - mx, y[a:a + chunk] - my
        sxy += float(dx @ dy)
        sxx += float(dx @ dx)
        syy += float(dy @ dy)
    return float(sxy / np.sqrt(sxx * syy))


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

    p = validate_params({"k": k, "knn": knn}, entry="consensus_nmf")
    p.update(validate_params({"method": method}, entry="consensus_nmf"))
    embs = [np.asarray(H, dtype=np.float64) for H in embeddings]
    if not embs:
        raise ValueError("embeddings: expected at least one (k, n) matrix, got none")
    n = embs[0].shape[1] if embs[0].ndim == 2 else None
    for i, H in enumerate(embs):
        if H.ndim != 2 or H.shape[1] != n or H.shape[0] == 0:
            cols = "the same number of" if n is None else n
            raise ValueError(f"embeddings[{i}]: expected a 2-D (k, n) matrix with {cols} "
                             f"columns (the samples), got shape {H.shape}")
        if not np.isfinite(H).all():
            raise ValueError(f"embeddings[{i}]: expected finite values, got NaN or infinity")
    if n < 2:
        raise ValueError(f"embeddings: expected at least 2 samples (columns) to cluster, got {n}")
    if p["k"] > n:
        raise ValueError(f"k: expected an integer in [1, {n}] (the number of samples), got {k}")
    # peak memory: C (8 n²), its condensed distances and scipy's condensed copy (4 n² each);
    # consensus_bytes() states it and consensus_nmf refuses what would not fit
    C = np.zeros((n, n))
    for H in embs:
        _add_connectivity(C, H, p["method"], p["knn"])
    C /= len(embs)
    dist = _condensed_distances(C)
    Z = linkage(dist, method="average")
    coph = _pearson(dist, cophenet(Z)) if dist.max() > dist.min() else float("nan")
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
        A ``mask`` matrix is given like A (m × n; transposed for the replicates); ``w_init``
        and ``target_H`` are refused.

    Returns
    -------
    ConsensusResult
        ``consensus`` (n × n), ``clusters`` (n,), ``cophenetic``, ``linkage``, ``models`` (fits
        of ``A.T``: ``W`` is n × k, ``H`` is k × m).

    Raises
    ------
    MemoryError
        The n × n consensus would need more than ``max_memory``; the message gives the bytes and
        points to :func:`~dask_factor.programs.consensus_programs` (memory independent of n).
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
    check_nmf_kwargs(k, nmf_kwargs, seed)
    if "target_H" in nmf_kwargs:  # a replicate's H is k × m here (it fits A.T)
        raise TypeError("target_H: not an option of consensus_nmf (its replicates fit A.T, "
                        "whose H is the features' side)")
    X = open_lazy(A, "A")
    m, n = check_shape("A", X)
    if n < 2:
        raise ValueError(f"A: expected at least 2 samples (columns) to cluster, got {n}")
    if k > min(m, n):
        raise ValueError(f"k: expected an integer in [1, {min(m, n)}] (min(m, n) of A), got {k}")
    mask = nmf_kwargs.get("mask")
    if mask is not None and not isinstance(mask, str):  # given like A, (m, n): fit with A.T
        if tuple(mask.shape) != (m, n):
            raise ValueError(f"mask: expected a matrix of A's shape ({m}, {n}), got "
                             f"{tuple(mask.shape)}")
        nmf_kwargs = {**nmf_kwargs, "mask": mask.T}
    need = consensus_bytes(n)
    budget = int(max_memory) if max_memory is not None else _available_bytes() // 2
    if need > budget:
        raise MemoryError(
            f"A: the {n} × {n} consensus matrix would need about {_fmt_bytes(need)} "
            f"(consensus_bytes: 3 · 8 · n²), more than max_memory={_fmt_bytes(budget)}; use "
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
