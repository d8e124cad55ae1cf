"""consensus_nmf (RcppML's sample co-clustering), consensus_programs and k_selection (cNMF).

References: brute-force loops over samples and replicates (consensus matrices, local densities,
cluster medians), the planted factors of the simulator, RcppML 1.0's ``consensus_nmf`` clusters on
aml (``tests/data/rcppml``, produced by ``make_fixtures.R`` there), and the same call on a
threaded scheduler against a 2-worker LocalCluster (identical results).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import cophenet, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score

import dask_factor
from dask_factor import coclustering, consensus_nmf, consensus_programs, k_selection
from dask_factor.consensus import consensus_bytes
from dask_factor.datasets import simulate_counts

RCPPML = Path(__file__).resolve().parents[1] / "data" / "rcppml"
PLANTED_K = 4


@pytest.fixture(scope="module")
def planted():
    """2,000 cells × 200 genes with 4 planted programs (the simulator), in memory."""
    A, W, H = simulate_counts(2000, 200, k=PLANTED_K, seed=3, density=0.3, return_factors=True)
    return A.compute(), W, H.compute()


def _best_abs_r(X, Y):
    """For every column of X, the largest |Pearson r| with a column of Y."""
    k = X.shape[1]
    r = np.corrcoef(np.hstack([X, Y]).T)[:k, k:]
    return np.abs(r).max(axis=1)


# ---- the co-clustering itself, against brute force ---------------------------------------------


def _brute_consensus(embeddings, method, knn):
    n = embeddings[0].shape[1]
    C = np.zeros((n, n))
    for H in embeddings:
        if method == "hard":
            lab = [int(np.argmax(H[:, j])) for j in range(n)]
            for i in range(n):
                for j in range(n):
                    C[i, j] += lab[i] == lab[j]
        else:
            X = H.T / np.linalg.norm(H.T, axis=1, keepdims=True)
            S = X @ X.T
            sets = []
            for i in range(n):
                others = sorted((j for j in range(n) if j != i), key=lambda j: (-S[i, j], j))
                sets.append(set(others[:knn]))
            for i in range(n):
                for j in range(n):
                    C[i, j] += 1.0 if i == j else len(sets[i] & sets[j]) / len(sets[i] | sets[j])
    return C / len(embeddings)


@pytest.mark.parametrize("method", ["hard", "knn_jaccard"])
def test_coclustering_matches_brute_force(method):
    rng = np.random.default_rng(0)
    embs = [rng.random((3, 25)) for _ in range(4)]
    res = coclustering(embs, 3, method=method, knn=5)
    ref = _brute_consensus(embs, method, 5)
    np.testing.assert_allclose(res.consensus, ref, atol=1e-12)
    dist = squareform(1.0 - ref, checks=False)
    Z = linkage(dist, "average")
    assert res.cophenetic == pytest.approx(cophenet(Z, dist)[0], abs=1e-12)
    assert sorted(set(res.clusters.tolist())) == [0, 1, 2]
    # clusters numbered in order of first appearance (R's cutree), from 0
    firsts = [int(np.flatnonzero(res.clusters == c)[0]) for c in range(3)]
    assert firsts == sorted(firsts)


def test_consensus_nmf_models_and_seeds(aml):
    A = aml.matrix
    res = consensus_nmf(A, 3, reps=4, seed=10, maxit=20)
    assert res.seeds == [11, 12, 13, 14]  # RcppML: seed + 1, ..., seed + reps
    assert res.consensus.shape == (135, 135) and np.allclose(np.diag(res.consensus), 1.0)
    assert [mod.W.shape for mod in res.models] == [(135, 3)] * 4  # fits of A.T, like RcppML
    ref = _brute_consensus([mod.W.T for mod in res.models], "hard", 10)
    np.testing.assert_allclose(res.consensus, ref, atol=1e-12)


# ---- RcppML 1.0 ------------------------------------------------------------------------------


def test_consensus_nmf_aml_agrees_with_rcppml(aml):
    """RcppML: consensus_nmf(t(aml), k = 3, reps = 20, seed = 1) (make_fixtures.R)."""
    ref = pd.read_csv(RCPPML / "aml_consensus_k3_reps20_seed1.csv")
    assert list(ref["sample"]) == list(range(135))  # 0-based column of aml
    ours = consensus_nmf(aml.matrix, 3, reps=20, seed=1)
    assert adjusted_rand_score(ref["cluster"], ours.clusters) >= 0.9
    # RcppML's replicates exactly (R's runif start, solve-then-clip, float64): the same clusters
    same = consensus_nmf(aml.matrix, 3, reps=20, seed=1, rng="rcppml", solver="cholesky",
                         dtype="float64")
    assert adjusted_rand_score(ref["cluster"], same.clusters) == pytest.approx(1.0)
    np.testing.assert_array_equal(same.clusters, ref["cluster"].to_numpy() - 1)


# ---- refusal -----------------------------------------------------------------------------------


def _exploding(shape):
    def boom(block_info=None):
        raise AssertionError("a block of A was read")

    return da.map_blocks(boom, chunks=((shape[0],), (shape[1],)), dtype=np.float64,
                         meta=np.empty((0, 0)))


def test_too_large_consensus_is_refused_before_any_fit(monkeypatch):
    A = _exploding((50, 40_000))  # reading any block fails the test
    with pytest.raises(MemoryError) as err:
        consensus_nmf(A, 3, reps=5, seed=1, max_memory=10**9)
    msg = str(err.value)
    assert "40000 × 40000" in msg and "35.8 GiB" in msg and "consensus_programs" in msg
    assert consensus_bytes(40_000) == 24 * 40_000**2
    # the default budget: half the memory available now
    import dask_factor.consensus as mod

    monkeypatch.setattr(mod, "_available_bytes", lambda: 2 * 10**6)
    with pytest.raises(MemoryError, match="max_memory=976.6 KiB"):
        consensus_nmf(_exploding((50, 1000)), 3, reps=5, seed=1)


@pytest.mark.parametrize("method", ["hard", "knn_jaccard"])
def test_consensus_memory_stays_within_consensus_bytes(monkeypatch, method):
    """The bytes consensus_nmf budgets before any fit bound what the consensus step allocates
    (it used to hold about 6.5 n × n float64 arrays at once against the 3 it budgets)."""
    import tracemalloc

    import dask_factor.consensus as mod

    # row blocks small beside n², as at scale
    monkeypatch.setattr(mod, "ROW_BLOCK_BYTES", 2**20, raising=False)
    n = 2500
    rng = np.random.default_rng(0)
    embs = [rng.random((4, n)) for _ in range(2)]
    tracemalloc.start()
    try:
        res = coclustering(embs, 4, method=method, knn=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= consensus_bytes(n)
    assert res.consensus.shape == (n, n)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(method="soft"), ValueError, "method: expected one of"),
    (dict(reps=0), ValueError, "reps: expected an integer >= 1"),
    (dict(knn=1.5), TypeError, "knn: expected an integer"),
    (dict(client=3), TypeError, "client"),
    (dict(maxit=0), ValueError, "maxit: expected an integer >= 1"),
    (dict(test_fraction=0.1), TypeError, "test_fraction: not an option"),
])
def test_bad_arguments_fail_before_work(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        consensus_nmf(_exploding((30, 40)), 3, **kwargs)


def test_side_by_side_keeps_order_and_caps_threads():
    """The one runner of replicates, rank-search fits and dclust splits: results in input
    order, at most MAX_CONCURRENT_FITS at a time without a cluster, up to MAX_CLUSTER_FITS
    with one."""
    import threading
    import time

    from dask_factor.rank import MAX_CLUSTER_FITS, MAX_CONCURRENT_FITS, side_by_side

    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(x):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return -x

    assert side_by_side(slow, range(10)) == [-x for x in range(10)]
    assert state["peak"] == MAX_CONCURRENT_FITS
    state["peak"] = 0
    assert side_by_side(slow, range(7), client=object()) == [-x for x in range(7)]
    assert state["peak"] == 7
    state["peak"] = 0
    assert side_by_side(slow, range(40), client=object()) == [-x for x in range(40)]
    assert state["peak"] == MAX_CLUSTER_FITS
    assert side_by_side(slow, []) == []


def test_replicate_options_given_like_a():
    """consensus_nmf fits A.T: options shaped like A are turned, or refused, before any fit."""
    rng = np.random.default_rng(0)
    A = rng.poisson(3.0, (30, 20)).astype(np.float64)
    # a negative seed with rng='numpy' names the caller's seed, not a replicate's seed + r
    with pytest.raises(ValueError, match=r"seed: expected a non-negative .* got -10$"):
        consensus_nmf(_exploding((30, 40)), 3, reps=3, seed=-10)
    res = consensus_nmf(A, 2, reps=2, seed=-10, maxit=2, rng="rcppml")  # R-style seeds
    assert res.seeds == [-9, -8]
    # w_init: every replicate would be the same fit
    with pytest.raises(TypeError, match="w_init: not an option"):
        consensus_nmf(_exploding((30, 40)), 3, w_init=np.ones((30, 3)))
    with pytest.raises(TypeError, match="w_init: not an option"):
        consensus_programs(_exploding((30, 40)), 3, w_init=np.ones((30, 3)))
    with pytest.raises(TypeError, match="target_H: not an option of consensus_nmf"):
        consensus_nmf(_exploding((30, 40)), 3, target_H=np.ones((3, 40)), target_lambda=1.0)
    with pytest.raises(ValueError, match=r"mask: expected a matrix of A's shape \(30, 40\)"):
        consensus_nmf(_exploding((30, 40)), 3, mask=np.zeros((40, 30), dtype=bool))
    # a mask like A (m × n): replicate r is nmf(A.T, mask=mask.T)
    mask = np.zeros((30, 20), dtype=bool)
    mask[:, :4] = rng.random((30, 4)) < 0.5
    res = consensus_nmf(A, 2, reps=2, seed=1, maxit=5, mask=mask)
    ref = dask_factor.nmf(A.T, 2, seed=2, maxit=5, mask=mask.T)
    np.testing.assert_array_equal(res.models[0].W, ref.W)  # seeds 2, 3


def test_one_sample_or_one_dimensional_embedding_named():
    with pytest.raises(ValueError, match="A: expected at least 2 samples"):
        consensus_nmf(_exploding((30, 1)), 1, reps=2)
    with pytest.raises(ValueError, match="embeddings: expected at least 2 samples"):
        coclustering([np.ones((2, 1))], 1)
    with pytest.raises(ValueError, match=r"embeddings\[0\]: expected a 2-D \(k, n\) matrix"):
        coclustering([np.ones(4)], 2)
    with pytest.raises(ValueError, match=r"embeddings\[1\]: expected finite values"):
        coclustering([np.ones((2, 4)), np.full((2, 4), np.nan)], 2)


def test_programs_never_nan_when_kmeans_leaves_a_cluster_empty():
    """All-zero replicate programs fall in one cluster: refused, not NaN programs."""
    with pytest.raises(ValueError, match="k: the 4 kept programs form only 1 distinct"):
        consensus_programs(np.zeros((10, 8)), 2, reps=2, maxit=3, density_threshold=2.0)


def test_bad_programs_arguments(planted):
    X = planted[0]
    with pytest.raises(ValueError, match="reps: expected an integer >= 2"):
        consensus_programs(X, 3, reps=1)
    with pytest.raises(ValueError, match="density_threshold: expected"):
        consensus_programs(X, 3, density_threshold=0.0)
    with pytest.raises(ValueError, match="ks: expected"):
        k_selection(X, [])
    with pytest.raises(ValueError, match=r"density_threshold: only \d+ of 12 programs"):
        consensus_programs(X, 4, reps=3, seed=0, density_threshold=1e-9)


# ---- consensus programs (cNMF) -----------------------------------------------------------------


def _local_density_brute(P, nn):
    out = []
    for i in range(len(P)):
        d = sorted(np.linalg.norm(P[i] - P[j]) for j in range(len(P)) if j != i)
        out.append(np.mean(d[:nn]))
    return np.array(out)


def test_consensus_programs_recover_planted_and_match_on_a_cluster(planted):
    from distributed import Client, LocalCluster

    X, W_true, _ = planted
    res = consensus_programs(X, PLANTED_K, reps=6, seed=0)
    # the planted programs, each recovered
    assert _best_abs_r(W_true, res.W).min() >= 0.95
    # the recipe, step by step, against brute force
    Ws = [m.W.T.astype(np.float64) for m in res.models]
    P = np.vstack([w / np.linalg.norm(w, axis=1, keepdims=True) for w in Ws])
    np.testing.assert_allclose(res.programs, P, atol=1e-12)
    np.testing.assert_allclose(res.density, _local_density_brute(P, 2), atol=1e-10)  # 0.3·6
    assert np.array_equal(res.kept, res.density <= 0.5)
    for c in range(PLANTED_K):
        med = np.median(P[res.labels == c], axis=0)
        np.testing.assert_allclose(res.W[:, c], med / med.sum(), atol=1e-10)
    # H solved against the fixed W: NNLS column by column, and the exact MSE
    from scipy.optimize import nnls

    Wd = res.W.astype(np.float32).astype(np.float64)
    Xd = X.toarray()
    for j in (0, 777, 1999):
        h, _ = nnls(Wd, Xd[:, j])
        np.testing.assert_allclose(res.H[:, j] * res.d, h, rtol=2e-3, atol=1e-3 * h.max())
    recon = (res.W * res.d) @ res.H
    assert res.mse == pytest.approx(np.mean((Xd - recon) ** 2), rel=1e-5)
    assert np.all(np.diff(res.d) <= 0) and np.allclose(res.H.sum(axis=1), 1.0)
    # the same on a 2-worker cluster: identical, to the bit
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        again = consensus_programs(X, PLANTED_K, reps=6, seed=0, client=client)
    for name in ("W", "d", "H", "programs", "labels", "density"):
        np.testing.assert_array_equal(getattr(again, name), getattr(res, name), err_msg=name)
    assert again.mse == res.mse and again.stability == res.stability


def test_lazy_input_streams(planted):
    """A dask array (read in tasks) gives what the in-memory matrix gives."""
    X = planted[0]
    lazy = da.from_array(X, chunks=(200, 250), asarray=False)
    a = consensus_programs(X, 3, reps=3, seed=2, maxit=30, chunks=250)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = consensus_programs(lazy, 3, reps=3, seed=2, maxit=30)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-5, atol=1e-7)
    assert a.mse == pytest.approx(b.mse, rel=1e-5)


def test_consensus_nmf_lazy_input():
    """A dask array (its transpose read lazily in the tasks) gives the in-memory consensus."""
    A = simulate_counts(300, 120, k=3, seed=3, density=0.2, block_cols=256)
    lazy = consensus_nmf(A, 3, reps=3, seed=1, maxit=15)
    eager = consensus_nmf(A.compute(), 3, reps=3, seed=1, maxit=15)
    np.testing.assert_array_equal(lazy.clusters, eager.clusters)
    np.testing.assert_allclose(lazy.consensus, eager.consensus)


def test_k_selection_picks_the_planted_k(planted):
    X = planted[0]
    with dask.config.set(scheduler="threads"):
        sel = k_selection(X, [2, 3, 4, 5, 6], reps=6, seed=0)
    t = sel.table.set_index("k")
    assert sel.best_k == PLANTED_K
    assert t["stability"].idxmax() == PLANTED_K  # here the planted k is the peak itself
    # stable up to the planted k, then a drop; the error keeps falling, ever more slowly
    assert t.loc[PLANTED_K, "stability"] > 0.98
    assert t.loc[[5, 6], "stability"].max() < t.loc[PLANTED_K, "stability"] - 0.05
    assert t["mse"].is_monotonic_decreasing
    assert list(t.columns) == ["stability", "mse", "replicate_mse", "n_kept"]


def test_graph_layer_embeddings(aml):
    """coclustering over a shared layer's H from graph fits with several seeds."""
    from dask_factor import factor_config, factor_input, factor_net, factor_shared, fit, nmf_layer

    A = aml.matrix
    Hs = []
    for s in (1, 2, 3):
        x1, x2 = factor_input(A[:400], name="top"), factor_input(A[400:], name="bottom")
        net = factor_net([x1, x2], nmf_layer(factor_shared(x1, x2), k=3, name="shared"),
                         factor_config(seed=s, maxit=30))
        Hs.append(np.asarray(fit(net)["shared"].H))
    res = coclustering(Hs, 3)
    np.testing.assert_allclose(res.consensus, _brute_consensus(Hs, "hard", 10), atol=1e-12)


def test_readme_example():
    from readme_blocks import readme_block

    exec(compile(readme_block("Consensus NMF and divisive clustering"), "README.md", "exec"), {})
