"""bipartition and dclust (RcppML's divisive clustering by rank-2 NMF).

References: RcppML 1.0's ``bipartition`` on aml and ``dclust`` on pbmc3k (``tests/data/rcppml``,
produced by ``make_fixtures.R`` there), the centres and RcppML's relative cosine distance computed
with numpy from the definitions, planted groups of the simulator, and the same call on a 2-worker
LocalCluster and on a lazy (dask) input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from dask_factor import bipartition, dclust, purity
from dask_factor.datasets import simulate_counts

RCPPML = Path(__file__).resolve().parents[1] / "data" / "rcppml"


def _rel_cosine(X, s1, s2):
    """RcppML's relative cosine distance, from its definition (dense numpy)."""
    c1, c2 = X[:, s1].mean(axis=1), X[:, s2].mean(axis=1)
    n1, n2 = np.linalg.norm(c1), np.linalg.norm(c2)
    t1 = sum(np.sqrt(X[:, j] @ c2) * n1 / (np.sqrt(X[:, j] @ c1) * n2) for j in s1)
    t2 = sum(np.sqrt(X[:, j] @ c1) * n2 / (np.sqrt(X[:, j] @ c2) * n1) for j in s2)
    return (t1 + t2) / (2 * X.shape[0]), c1, c2


def test_bipartition_matches_rcppml_on_aml(aml):
    """RcppML: bipartition(aml, tol = 1e-5, seed = 0, calc_dist = TRUE)."""
    X = aml.matrix
    v_ref = pd.read_csv(RCPPML / "aml_bipartition_v.csv")["v"].to_numpy()
    stats = pd.read_csv(RCPPML / "aml_bipartition_stats.csv").iloc[0]
    bp = bipartition(X)
    np.testing.assert_array_equal(bp.v > 0, v_ref > 0)
    np.testing.assert_allclose(bp.v, v_ref, atol=2e-3)
    assert (bp.size1, bp.size2) == (stats["size1"], stats["size2"])
    assert bp.dist == pytest.approx(stats["dist"], rel=1e-6)
    # centres and distance from their definitions
    dist, c1, c2 = _rel_cosine(X, bp.samples1, bp.samples2)
    assert bp.dist == pytest.approx(dist, rel=1e-10)
    np.testing.assert_allclose(bp.center1, c1, rtol=1e-12)
    np.testing.assert_allclose(bp.center2, c2, rtol=1e-12)


def test_bipartition_recovers_two_planted_groups():
    """Cells of two planted programs (the simulator's W), each cell drawn from one of them."""
    _, W, _ = simulate_counts(10, 300, k=2, seed=5, return_factors=True)
    rng = np.random.default_rng(0)
    group = np.repeat([0, 1], [120, 80])
    rng.shuffle(group)
    A = rng.poisson(W[:, group] * 600.0).astype(np.float64)
    bp = bipartition(A, calc_dist=False)
    found = np.zeros(200, dtype=int)
    found[bp.samples2] = 1
    assert adjusted_rand_score(group, found) == 1.0
    assert bp.dist == -1.0 and bp.center1.size == 0


def test_bipartition_subset_and_arguments(aml):
    X = aml.matrix
    idx = np.arange(0, 135, 2)
    bp = bipartition(X, samples=idx)
    full = bipartition(X[:, idx])
    np.testing.assert_array_equal(bp.samples1, idx[full.samples1])
    np.testing.assert_allclose(bp.v, full.v, rtol=1e-10)
    with pytest.raises(ValueError, match=r"samples: expected indices in \[0, 134\]"):
        bipartition(X, samples=[0, 135])
    with pytest.raises(ValueError, match="samples: expected distinct"):
        bipartition(X, samples=[1, 1, 2])
    with pytest.raises(TypeError, match="nonneg: expected a bool"):
        bipartition(X, nonneg=(True, True))
    with pytest.raises(ValueError, match="min_samples: expected an integer >= 1"):
        dclust(X, 0)


def test_too_few_features_or_samples_name_a():
    """A rank-2 split of a 1-row matrix (or of one sample) blames A, not a k never given."""
    row = np.ones((1, 12))
    with pytest.raises(ValueError, match=r"A: a rank-2 split needs at least 2 features"):
        bipartition(row)
    with pytest.raises(ValueError, match=r"A: a rank-2 split needs at least 2 features"):
        dclust(row, 2)
    assert dclust(row, 7).ids == [""]  # no split tried: one leaf, as before
    with pytest.raises(ValueError, match=r"A: expected at least 2 samples"):
        bipartition(np.ones((5, 1)))


def _check_tree(res, X, min_samples):
    n = X.shape[1]
    allsamp = np.sort(np.concatenate([c.samples for c in res]))
    np.testing.assert_array_equal(allsamp, np.arange(n))  # a partition of the samples
    ids = set(res.ids)
    for c in res:
        assert set(c.id) <= {"0", "1"} and c.size == c.samples.size
        ref = np.asarray(X[:, c.samples].astype(np.float64).mean(axis=1)).ravel()
        np.testing.assert_allclose(c.center, ref,
                                   rtol=1e-10, atol=1e-12)
        # the leaves form a full binary tree: every sibling path exists or is split further
        if c.id:
            sib = c.id[:-1] + ("1" if c.id[-1] == "0" else "0")
            assert sib in ids or any(i.startswith(sib) for i in ids)
        if len(res) > 1:
            assert c.size >= min_samples


def test_dclust_on_pbmc3k_matches_rcppml(pbmc3k):
    """RcppML: dclust(A, min_samples = 100, seed = 0): the same tree, leaves and purity."""
    A, _, cols = pbmc3k
    ref_leaf = pd.read_csv(RCPPML / "pbmc3k_dclust_min100_leaf.csv")["leaf"].to_numpy()
    ref_ids = pd.read_csv(RCPPML / "pbmc3k_dclust_min100_ids.csv", dtype={"id": str})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few rank-2 fits stop at maxit
        res = dclust(A, min_samples=100)
    assert res.ids == ref_ids["id"].tolist()  # the same splits, in RcppML's order
    assert adjusted_rand_score(ref_leaf, res.labels) >= 0.9
    labels = cols["cell_type"].to_numpy()
    ref_purity = sum(pd.Series(labels[ref_leaf == i]).value_counts().iloc[0]
                     for i in np.unique(ref_leaf)) / labels.size
    ours = purity(res, labels)
    assert abs(ours - ref_purity) < 0.02 and ours > 0.6
    _check_tree(res, A, 100)


def test_dclust_min_dist_and_cluster_identity():
    from distributed import Client, LocalCluster

    A, W, H = simulate_counts(600, 150, k=3, seed=11, density=0.3, return_factors=True)
    X = A.compute()
    res = dclust(X, min_samples=40, min_dist=0.0)
    _check_tree(res, X, 40)
    # every split of the unrestricted tree, measured by bipartition of its node's samples
    nodes = {c.id[:i] for c in res for i in range(len(c.id))}
    tried = nodes | {c.id for c in res if c.size >= 2 * 40}  # leaves refused for size
    members = {p: np.sort(np.concatenate([c.samples for c in res if c.id.startswith(p)]))
               for p in nodes | set(res.ids)}
    dist = {p: bipartition(X, samples=members[p]).dist for p in tried}
    # a threshold between the split distances: the root split is kept, some split refused
    min_dist = float(np.median([dist[p] for p in nodes]))
    assert dist[""] >= min_dist and any(d < min_dist for d in dist.values())
    # the expected tree: the unrestricted one, cut at the first split below min_dist
    expected, stack = {}, [""]
    while stack:
        p = stack.pop()
        if p in nodes and dist[p] >= min_dist:
            stack += [p + "0", p + "1"]
        else:
            expected[p] = dist.get(p, 0.0)  # a refused split keeps its distance, else 0
    strict = dclust(X, min_samples=40, min_dist=min_dist)
    assert sorted(strict.ids) == sorted(expected) and len(strict) < len(res)
    for c in strict:
        np.testing.assert_array_equal(np.sort(c.samples), members[c.id])
        assert c.dist == pytest.approx(expected[c.id], rel=1e-12, abs=0)
        if c.id in nodes:  # refused for its distance
            assert c.dist < min_dist
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        again = dclust(X, min_samples=40, min_dist=min_dist, client=client)
    assert again.ids == strict.ids
    for a, b in zip(again, strict):
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(a.center, b.center)
        assert a.dist == b.dist


def test_dclust_streams_a_lazy_input():
    """Column subsets of a dask array (read inside the tasks) split like the in-memory matrix."""
    A = simulate_counts(400, 100, k=3, seed=4, density=0.3, block_cols=256)
    X = A.compute()
    lazy = dclust(A, min_samples=80)
    eager = dclust(X, min_samples=80)
    assert len(eager) >= 3
    assert lazy.ids == eager.ids
    np.testing.assert_array_equal(lazy.labels, eager.labels)
    for a, b in zip(lazy, eager):
        np.testing.assert_allclose(a.center, b.center, rtol=1e-12)
    assert isinstance(A, da.Array)


def test_missing_labels_are_left_out():
    """Unannotated cells (None/NaN labels, common in cell-type columns) used to crash purity
    and the dendrogram's composition ('<' between float and str); they are left out."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    from dask_factor import DClustResult
    from dask_factor.divisive import Cluster

    leaves = [Cluster("0", np.array([0, 1, 2]), np.zeros(1), 3),
              Cluster("1", np.array([3, 4, 5]), np.zeros(1), 3)]
    res = DClustResult(leaves, 6)
    lab = pd.Series(pd.Categorical(["a", "a", None, "b", "a", None]))
    # labelled samples: leaf 0 has a, a (2 hits); leaf 1 has b, a (1 hit) -> 3 of 4
    assert purity(res, lab) == 0.75
    assert purity(res, ["a", "a", np.nan, "b", "a", None]) == 0.75
    assert purity(res, [1, 1, 2, 2, 2, 2]) == 5 / 6
    with pytest.raises(ValueError, match="labels: expected at least one sample with a label"):
        purity(res, [None] * 6)
    ax = res.plot(labels=lab)
    bars = [p for p in ax.child_axes[0].patches]
    heights = sorted(round(p.get_height(), 6) for p in bars if p.get_height() > 0)
    assert heights == [0.5, 0.5, 1.0]  # leaf 0: all a; leaf 1: half a, half b


def test_dendrogram_plot(aml):
    import matplotlib

    matplotlib.use("Agg")
    res = dclust(aml.matrix, min_samples=15)
    Z = res.linkage()
    assert Z.shape == (len(res) - 1, 4) and Z[-1, 2] >= 1
    ax = res.plot(labels=aml.cols["category"].to_numpy())
    assert ax.get_ylabel() == "split depth"
    with pytest.raises(ValueError, match="labels: expected 135 labels"):
        res.plot(labels=["a"] * 3)
