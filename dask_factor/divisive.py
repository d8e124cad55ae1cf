"""Bipartition and divisive clustering by rank-2 NMF (RcppML's ``bipartition()``/``dclust()``).

:func:`bipartition` splits a set of samples in two by the sign of ``v = h_a − h_b``, the
difference of the two rows of H of a rank-2 NMF of those samples (``a`` the factor of larger
``d``), and optionally measures the split (the cluster centres and RcppML's relative cosine
distance). :func:`dclust` splits recursively: a cluster is split when it has at least
``2 · min_samples`` samples, both halves have at least ``min_samples`` and (when ``min_dist > 0``)
the split's distance is at least ``min_dist``; otherwise it is a leaf. Leaves carry a binary path
id (``"01"``: the root's first half, then that cluster's second half), their samples, centre and
size, in RcppML's order (a depth-first walk that visits a cluster's second half first).

Every rank-2 fit is :func:`dask_factor.nmf` on the column subset (RcppML's solve-then-clip,
``solver="cholesky"``, from RcppML's SplitMix64 initial W for ``seed``), so a split runs on the
engine and streams a lazy A (a dask array, a path) from where it lives: the subset is a column
selection of the dask array, read inside the tasks. The splits of one level of the tree run side
by side. The centres and distances are passes of Dask tasks over the subset's column blocks.

Differences from RcppML (documented, deliberate): a rank-2 fit stops by ``nmf``'s rule (relative
change of the loss below ``tol`` for 5 iterations) rather than on the correlation of successive
W; factors are computed in float64 by default, like RcppML's clustering code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import numpy as np
import scipy.sparse as sp

from ._params import validate_params
from .engine.als import compute_on
from .engine.blocks import as_blocked
from .engine.inputs import check_shape, open_lazy
from .kernels.rng import splitmix64_uniform
from .rank import side_by_side

__all__ = ["Bipartition", "Cluster", "DClustResult", "bipartition", "dclust", "purity",
           "label_codes", "rcppml_w0"]


def rcppml_w0(m: int, seed: int) -> np.ndarray:
    """RcppML's initial W of a bipartition (m × 2): SplitMix64(seed) uniforms, factor by factor.

    Examples
    --------
    >>> rcppml_w0(3, 0).shape
    (3, 2)
    """
    return splitmix64_uniform(np.uint64(seed), 2 * m).reshape(2, m).T.copy()


@dataclass
class Bipartition:
    """One split of a sample set (RcppML's ``bipartition()`` list).

    Attributes
    ----------
    v : ndarray of shape (n_s,)
        ``h_a − h_b`` for each sample of the set, in the order of ``samples``; ``a`` is the
        factor of larger ``d``. ``v > 0`` puts a sample in the first cluster.
    dist : float
        RcppML's relative cosine distance of the split (−1 when not computed)::

            (Σ_{j∈1} √(x_j·c₂)‖c₁‖ / (√(x_j·c₁)‖c₂‖)
             + Σ_{j∈2} √(x_j·c₁)‖c₂‖ / (√(x_j·c₂)‖c₁‖)) / (2m)

        with x_j the sample's column of A, c₁, c₂ the centres and m the number of features
        (RcppML divides by m, not by the number of samples; kept so thresholds carry over).
    size1, size2 : int
    samples1, samples2 : ndarray of int64
        The samples (indices into A's columns) of each cluster, in the order of ``samples``.
    center1, center2 : ndarray of shape (m,)
        Mean column of each cluster (empty when not computed).
    """

    v: np.ndarray = field(repr=False)
    dist: float
    size1: int
    size2: int
    samples1: np.ndarray = field(repr=False)
    samples2: np.ndarray = field(repr=False)
    center1: np.ndarray = field(repr=False)
    center2: np.ndarray = field(repr=False)


def _subset(X, idx: np.ndarray, n: int):
    if idx.size == n and np.array_equal(idx, np.arange(n)):
        return X
    if sp.issparse(X):
        return sp.csc_matrix(X)[:, idx]
    return X[:, idx]


def _group_sums(block, groups, n_groups: int):
    """(m, n_groups) float64 sums of the block's columns by group (−1: none)."""
    m = block.shape[0]
    out = np.zeros((m, n_groups))
    g = np.asarray(groups)
    sel = g >= 0
    if not sel.any():
        return out
    P = sp.csr_matrix((np.ones(int(sel.sum())), (np.flatnonzero(sel), g[sel])),
                      shape=(g.size, n_groups))
    prod = block @ P if sp.issparse(block) else np.asarray(block, dtype=np.float64) @ P
    return np.asarray(prod.todense() if sp.issparse(prod) else prod, dtype=np.float64)


def _col_dots(block, C):
    """(n_b, 2) dot products of the block's columns with the two centres (float64)."""
    if sp.issparse(block):
        return np.asarray((block.T @ C), dtype=np.float64)
    return np.asarray(block, dtype=np.float64).T @ C


def _sum(*parts):
    out = np.array(parts[0], dtype=np.float64, copy=True)
    for p_ in parts[1:]:
        out += p_
    return out


def group_means(X, groups: np.ndarray, n_groups: int, client=None) -> np.ndarray:
    """(m, n_groups) mean column of each group of X's columns, in one pass of Dask tasks.

    ``groups[j]`` is column j's group (−1: none). Partial sums are added in block order.
    """
    bm = as_blocked(X, dtype=np.float64, name="A")
    parts = [dask.delayed(_group_sums, pure=True)(b, groups[a:c], n_groups)
             for b, a, c in zip(bm.blocks, bm.bounds[:-1], bm.bounds[1:])]
    sums = compute_on(dask.delayed(_sum, pure=True)(*parts), client)
    counts = np.bincount(groups[groups >= 0], minlength=n_groups).astype(np.float64)
    return sums / np.where(counts > 0, counts, 1.0)


def relative_cosine(X, in1: np.ndarray, c1: np.ndarray, c2: np.ndarray, client=None) -> float:
    """RcppML's relative cosine distance of a split of X's columns (see :class:`Bipartition`)."""
    bm = as_blocked(X, dtype=np.float64, name="A")
    C = np.column_stack([c1, c2])
    parts = [dask.delayed(_col_dots, pure=True)(b, C) for b in bm.blocks]
    dots = compute_on(dask.delayed(np.vstack, pure=True)(parts), client)
    n1, n2 = np.sqrt(c1 @ c1), np.sqrt(c2 @ c2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.sqrt(dots[in1, 1]) * n1 / (np.sqrt(dots[in1, 0]) * n2)
        r2 = np.sqrt(dots[~in1, 0]) * n2 / (np.sqrt(dots[~in1, 1]) * n1)
    return float((r1.sum() + r2.sum()) / (2 * X.shape[0]))


def _bipartition(X, idx, *, tol, maxit, nonneg, seed, calc_dist, client, dtype) -> Bipartition:
    from .nmf import nmf

    n = X.shape[1]
    sub = _subset(X, idx, n)
    model = nmf(sub, 2, tol=tol, maxit=maxit, nonneg=nonneg, solver="cholesky",
                w_init=rcppml_w0(X.shape[0], seed), dtype=dtype, client=client)
    H = model.H
    v = H[0] - H[1]  # model sorted by decreasing d: factor 0 is the dominant one
    in1 = v > 0
    s1, s2 = idx[in1], idx[~in1]
    dist, c1, c2 = -1.0, np.zeros(0), np.zeros(0)
    if calc_dist and s1.size and s2.size:
        C = group_means(sub, np.where(in1, 0, 1), 2, client)
        c1, c2 = C[:, 0], C[:, 1]
        dist = relative_cosine(sub, in1, c1, c2, client)
    return Bipartition(v, dist, int(s1.size), int(s2.size), s1, s2, c1, c2)


def _open(A):
    X = open_lazy(A, "A")
    m, n = check_shape("A", X)
    return X, m, n


def _check_splittable(m: int, n: int) -> None:
    """A rank-2 fit needs 2 features (else nmf would blame a k the caller never gave)."""
    if m < 2:
        raise ValueError(f"A: a rank-2 split needs at least 2 features (rows), got shape "
                         f"({m}, {n})")


def bipartition(
    A,
    *,
    tol: float = 1e-5,
    maxit: int = 100,
    nonneg: bool = True,
    samples=None,
    seed: int = 0,
    calc_dist: bool = True,
    client=None,
    dtype: str = "float64",
) -> Bipartition:
    """Split samples in two by a rank-2 NMF (RcppML's ``bipartition``).

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples; anything :func:`dask_factor.nmf` accepts. Lazy inputs stay lazy:
        the fit and the centres stream the selected columns.
    tol : float, default 1e-5
        Tolerance of the rank-2 fit (``nmf``'s rule).
    maxit : int, default 100
    nonneg : bool, default True
        Non-negative rank-2 factors.
    samples : sequence of int, optional
        Indices (0-based) of the samples to split, default all. RcppML's are 1-based.
    seed : int, default 0
        Seed of RcppML's SplitMix64 initial W (RcppML's default 0 → 12345).
    calc_dist : bool, default True
        Compute the centres and the relative cosine distance (two more passes).
    client : distributed.Client, optional
    dtype : {"float64", "float32"}, default "float64"

    Returns
    -------
    Bipartition
        ``v``, ``dist``, ``size1``, ``size2``, ``samples1``, ``samples2``, ``center1``,
        ``center2``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_factor import bipartition
    >>> rng = np.random.default_rng(0)
    >>> A = np.hstack([rng.poisson(np.r_[5.0 * np.ones(20), np.ones(20)][:, None], (40, 30)),
    ...                rng.poisson(np.r_[np.ones(20), 5.0 * np.ones(20)][:, None], (40, 30))])
    >>> split = bipartition(A)
    >>> sorted([np.unique(split.samples1 // 30).tolist(), np.unique(split.samples2 // 30).tolist()])
    [[0], [1]]
    """
    p = validate_params({"tol": tol, "maxit": maxit, "nonneg": nonneg, "samples": samples,
                         "seed": seed, "calc_dist": calc_dist, "client": client,
                         "dtype": dtype}, entry="bipartition")
    X, m, n = _open(A)
    _check_splittable(m, n)
    if samples is None:
        idx = np.arange(n, dtype=np.int64)
        if n < 2:
            raise ValueError(f"A: expected at least 2 samples (columns) to split, got {n}")
    else:
        idx = np.asarray(p["samples"], dtype=np.int64)
        if idx.max() >= n:
            raise ValueError(f"samples: expected indices in [0, {n - 1}] (A has {n} columns), "
                             f"got {int(idx.max())}")
        if np.unique(idx).size != idx.size:
            raise ValueError("samples: expected distinct sample indices")
        if idx.size < 2:
            raise ValueError(f"samples: expected at least 2 samples to split, got {idx.size}")
    return _bipartition(X, idx, tol=p["tol"], maxit=p["maxit"], nonneg=p["nonneg"],
                        seed=p["seed"], calc_dist=p["calc_dist"], client=client,
                        dtype=p["dtype"])


# --------------------------------------------------------------------------------------------
# divisive clustering


@dataclass
class Cluster:
    """A leaf of :func:`dclust` (an element of RcppML's ``dclust`` list).

    Attributes
    ----------
    id : str
        Binary path from the root: ``""`` for the root, ``"0"``/``"1"`` its halves, …
    samples : ndarray of int64
        0-based column indices of A.
    center : ndarray of shape (m,)
        Mean column of the cluster.
    size : int
    dist : float
        Relative cosine distance of the split that was rejected (0 when no split was tried or
        ``min_dist`` is 0, like RcppML's internal radius).
    """

    id: str
    samples: np.ndarray = field(repr=False)
    center: np.ndarray = field(repr=False)
    size: int
    dist: float = 0.0


@dataclass
class DClustResult:
    """The leaves of a divisive clustering, in RcppML's order.

    Attributes
    ----------
    clusters : list of Cluster
    n : int
        Number of samples of A.
    """

    clusters: list
    n: int

    def __len__(self) -> int:
        return len(self.clusters)

    def __iter__(self):
        return iter(self.clusters)

    def __getitem__(self, i) -> Cluster:
        return self.clusters[i]

    @property
    def ids(self) -> list[str]:
        """The leaves' binary path ids, in order.

        Examples
        --------
        >>> DClustResult([Cluster("0", np.array([0]), np.zeros(1), 1),
        ...               Cluster("1", np.array([1]), np.zeros(1), 1)], 2).ids
        ['0', '1']
        """
        return [c.id for c in self.clusters]

    @property
    def labels(self) -> np.ndarray:
        """(n,) index of each sample's cluster in ``clusters``.

        Examples
        --------
        >>> DClustResult([Cluster("0", np.array([0, 2]), np.zeros(1), 2),
        ...               Cluster("1", np.array([1]), np.zeros(1), 1)], 3).labels.tolist()
        [0, 1, 0]
        """
        out = np.full(self.n, -1, dtype=np.int64)
        for i, c in enumerate(self.clusters):
            out[c.samples] = i
        return out

    def linkage(self) -> np.ndarray:
        """The tree as a scipy linkage matrix over the leaves (height: levels of splits below).

        Leaf i is ``clusters[i]``; RcppML's dendrogram heights (a leaf 0, a split one more than
        its taller half). Needs at least two leaves.

        Returns
        -------
        ndarray of shape (n_leaves − 1, 4)

        Examples
        --------
        >>> leaf = lambda path, j: Cluster(path, np.array([j]), np.zeros(1), 1)
        >>> tree = DClustResult([leaf("1", 0), leaf("01", 1), leaf("00", 2)], 3)
        >>> tree.linkage().tolist()
        [[2.0, 1.0, 1.0, 2.0], [3.0, 0.0, 2.0, 3.0]]
        """
        if len(self.clusters) < 2:
            raise ValueError("linkage: a single cluster has no tree")
        index = {c.id: i for i, c in enumerate(self.clusters)}
        size = {c.id: 1 for c in self.clusters}  # scipy counts the leaves below a node
        height = {c.id: 0.0 for c in self.clusters}
        rows: list[list[float]] = []
        nxt = len(self.clusters)

        def build(path: str) -> str:
            nonlocal nxt
            if path in index:
                return path
            a, b = build(path + "0"), build(path + "1")
            height[path] = max(height[a], height[b]) + 1.0
            size[path] = size[a] + size[b]
            rows.append([index[a], index[b], height[path], size[path]])
            index[path] = nxt
            nxt += 1
            return path

        build("")
        return np.array(rows, dtype=np.float64)

    def plot(self, labels=None, ax=None):
        """Dendrogram of the splits, with ``labels`` each leaf's composition
        (:func:`dask_factor.plot.dendrogram`).

        Examples
        --------
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import numpy as np
        >>> from dask_factor import dclust
        >>> rng = np.random.default_rng(0)
        >>> A = rng.poisson(1.0, (30, 80)) + np.kron(np.eye(2), np.ones((15, 40))) * 4
        >>> tree = dclust(A, min_samples=10)
        >>> tree.plot().get_ylabel()
        'split depth'
        """
        from .plot import dendrogram

        return dendrogram(self, labels=labels, ax=ax)


def label_codes(labels, n: int) -> tuple[np.ndarray, list]:
    """``(codes, levels)`` of one label per sample: ``levels[codes[j]]`` is sample j's label,
    −1 where it is missing (None/NaN). Levels in a pandas Categorical's order, else sorted.

    Examples
    --------
    >>> codes, levels = label_codes(["b", None, "a", "b"], 4)
    >>> codes.tolist(), levels
    ([1, -1, 0, 1], ['a', 'b'])
    """
    import pandas as pd

    lab = labels.reset_index(drop=True) if isinstance(labels, pd.Series) else (
        pd.Series(labels) if isinstance(labels, pd.Categorical) else
        pd.Series(np.asarray(labels, dtype=object)))
    if len(lab) != n:
        raise ValueError(f"labels: expected {n} labels (one per sample), got {len(lab)}")
    if isinstance(lab.dtype, pd.CategoricalDtype):
        codes = lab.cat.codes.to_numpy(dtype=np.int64)
        return codes, list(lab.cat.categories)
    codes, levels = pd.factorize(lab, sort=False)
    try:
        order = sorted(range(len(levels)), key=lambda i: levels[i])
    except TypeError:  # labels of mixed types
        order = sorted(range(len(levels)), key=lambda i: str(levels[i]))
    remap = np.empty(len(levels) + 1, dtype=np.int64)
    remap[np.asarray(order, dtype=np.int64)] = np.arange(len(levels))
    remap[-1] = -1  # factorize's missing code
    return remap[codes], [levels[i] for i in order]


def purity(result: DClustResult, labels) -> float:
    """Fraction of the labelled samples carrying their leaf's most common label.

    Samples whose label is missing (None/NaN) are left out.

    Examples
    --------
    >>> import numpy as np
    >>> res = DClustResult([Cluster("0", np.array([0, 1]), np.zeros(1), 2),
    ...                     Cluster("1", np.array([2, 3]), np.zeros(1), 2)], 4)
    >>> purity(res, ["a", "a", "a", "b"])
    0.75
    >>> purity(res, ["a", "a", None, "b"])
    1.0
    """
    codes, levels = label_codes(labels, result.n)
    labelled = int((codes >= 0).sum())
    if not labelled:
        raise ValueError("labels: expected at least one sample with a label, got none")
    hit = 0
    for c in result.clusters:
        own = codes[c.samples]
        own = own[own >= 0]
        hit += int(np.bincount(own).max()) if own.size else 0
    return hit / labelled


def dclust(
    A,
    min_samples: int,
    min_dist: float = 0.0,
    *,
    tol: float = 1e-5,
    maxit: int = 100,
    nonneg: bool = True,
    seed: int = 0,
    client=None,
    dtype: str = "float64",
    verbose: bool = False,
) -> DClustResult:
    """Divisive clustering by recursive rank-2 NMF bipartitions (RcppML's ``dclust``).

    A cluster of fewer than ``2 · min_samples`` samples is a leaf. Otherwise it is bipartitioned
    (:func:`bipartition`, the same ``seed`` every time); the split is kept when both halves have
    at least ``min_samples`` samples and, if ``min_dist > 0``, its relative cosine distance is at
    least ``min_dist``; otherwise the cluster is a leaf. The splits of one level run side by
    side (on ``client`` if given); each streams its columns of A.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples; anything :func:`dask_factor.nmf` accepts.
    min_samples : int
        Smallest cluster allowed.
    min_dist : float, default 0
        Smallest relative cosine distance of a kept split; 0 skips the distances.
    tol, maxit, nonneg, seed, dtype
        Of every rank-2 fit, as in :func:`bipartition`.
    client : distributed.Client, optional
    verbose : bool, default False
        Print each level's number of splits.

    Returns
    -------
    DClustResult
        ``clusters``: leaves with ``id`` (binary path), ``samples`` (0-based), ``center`` (m,),
        ``size``; ``labels``, ``linkage()``, ``plot()``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_factor import dclust
    >>> rng = np.random.default_rng(0)
    >>> M = np.zeros((30, 120))                  # group 0 apart; groups 1 and 2 related
    >>> M[:10, :40] = 8; M[10:20, 40:] = 8; M[20:25, 40:80] = 4; M[25:, 80:] = 4
    >>> tree = dclust(rng.poisson(1.0 + M), min_samples=20)
    >>> sorted((c.id, c.size) for c in tree)
    [('00', 40), ('01', 40), ('1', 40)]
    """
    p = validate_params({"min_samples": min_samples, "min_dist": min_dist, "tol": tol,
                         "maxit": maxit, "nonneg": nonneg, "seed": seed, "client": client,
                         "dtype": dtype, "verbose": verbose}, entry="dclust")
    X, m, n = _open(A)
    ms = p["min_samples"]
    if n >= 2 * ms:  # the root is split
        _check_splittable(m, n)
    calc_dist = p["min_dist"] > 0
    opts = dict(tol=p["tol"], maxit=p["maxit"], nonneg=p["nonneg"], seed=p["seed"],
                calc_dist=calc_dist, client=client, dtype=p["dtype"])
    leaves: dict[str, tuple[np.ndarray, float]] = {}
    level = [("", np.arange(n, dtype=np.int64))]
    depth = 0
    while level:
        todo = [(path, idx) for path, idx in level if idx.size >= 2 * ms]
        for path, idx in level:
            if idx.size < 2 * ms:
                leaves[path] = (idx, 0.0)

        def split(item):
            return _bipartition(X, item[1], **opts)

        models = side_by_side(split, todo, client)
        nxt = []
        for (path, idx), mod in zip(todo, models):
            ok = mod.size1 >= ms and mod.size2 >= ms
            if ok and calc_dist and not mod.dist >= p["min_dist"]:
                ok = False
            if ok:
                nxt += [(path + "0", mod.samples1), (path + "1", mod.samples2)]
            else:
                leaves[path] = (idx, mod.dist if calc_dist else 0.0)
        if p["verbose"]:
            print(f"dclust: depth {depth}: {len(todo)} split(s) tried, {len(nxt) // 2} kept")
        level = nxt
        depth += 1
    order = _stack_order(set(leaves))
    groups = np.full(n, -1, dtype=np.int64)
    for i, path in enumerate(order):
        groups[leaves[path][0]] = i
    centers = group_means(X, groups, len(order), client)
    clusters = [Cluster(path, leaves[path][0], centers[:, i], int(leaves[path][0].size),
                        float(leaves[path][1])) for i, path in enumerate(order)]
    return DClustResult(clusters, n)


def _stack_order(leaf_ids: set[str]) -> list[str]:
    """Leaves in the order RcppML's stack emits them: depth first, the "1" half first."""
    out, stack = [], [""]
    while stack:
        path = stack.pop()
        if path in leaf_ids:
            out.append(path)
        else:
            stack += [path + "0", path + "1"]
    return out
