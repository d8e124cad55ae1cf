"""Public ``svd()``/``pca()``: inputs, outputs, validation, AnnData, out-of-core sources."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import WORKER_BASELINE

from dask_factor.svd import SVDResult, pca, svd

VAR_FLOOR = 100 * np.finfo(np.float64).eps


def dense_transform(D, center=False, scale=False):
    X = np.asarray(D, dtype=np.float64)
    if center or scale:
        X = X - X.mean(axis=1, keepdims=True)
    if scale:
        X = X / np.sqrt(np.maximum(X.var(axis=1), VAR_FLOOR))[:, None]
    return X


def cosines(X, Y):
    return np.abs(np.sum(X * Y, axis=0)) / (np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=0))


def assert_matches_numpy(res: SVDResult, D, *, center=False, scale=False, rtol=1e-10):
    X = dense_transform(D, center, scale)
    U, d, Vt = np.linalg.svd(X, full_matrices=False)
    k = res.k
    np.testing.assert_allclose(res.d, d[:k], rtol=rtol, atol=rtol * d[0])
    assert cosines(res.U, U[:, :k]).min() > 1 - 1e-9
    assert cosines(res.V, Vt[:k].T).min() > 1 - 1e-9
    # the sign convention ties U and V together: Ã V = U diag(d)
    np.testing.assert_allclose(X @ res.V, res.U * res.d, atol=1e-8 * d[0])


@pytest.fixture(scope="module")
def counts():
    """400 × 700 sparse counts (rank-10 signal + noise) with all-zero rows and columns."""
    rng = np.random.default_rng(11)
    W = sp.random(400, 10, density=0.12, random_state=rng,
                  data_rvs=lambda s: rng.gamma(2.0, 1.0, s))
    H = sp.random(10, 700, density=0.12, random_state=rng,
                  data_rvs=lambda s: rng.gamma(2.0, 1.0, s))
    N = sp.random(400, 700, density=0.05, random_state=rng,
                  data_rvs=lambda s: rng.poisson(1.0, s) + 1.0)
    A = sp.lil_matrix(np.round(3 * (W @ H).toarray() + N.toarray()))
    A[10:20, :] = 0
    A[:, 100:130] = 0
    return sp.csc_matrix(A)


# --------------------------------------------------------------------------------------------
# results


def test_result_shapes_and_diagnostics(counts):
    res = svd(counts, 6)
    assert isinstance(res, SVDResult)
    assert res.U.shape == (400, 6) and res.d.shape == (6,) and res.V.shape == (700, 6)
    assert res.method == "lanczos" and res.converged and res.passes >= 2
    assert np.all(np.diff(res.d) <= 0)
    assert res.residuals.shape == (6,) and res.residuals.max() <= 1e-8
    np.testing.assert_allclose(res.total_sq, (counts.toarray() ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(res.variance_ratio, res.d ** 2 / res.total_sq)
    np.testing.assert_allclose(res.explained_variance, res.d ** 2 / 699)
    np.testing.assert_allclose(res.scores, res.V * res.d)
    assert res.settings["method"] == "auto" and res.settings["method_used"] == "lanczos"
    assert "lanczos" in repr(res) and "k=6" in repr(res)
    assert_matches_numpy(res, counts.toarray())


@pytest.mark.parametrize("center,scale", [(True, False), (False, True)])
def test_centered_scaled_equal_dense_transform(counts, center, scale):
    res = svd(counts, 5, center=center, scale=scale, block_size=8)
    assert res.centered and res.scaled == scale
    assert_matches_numpy(res, counts.toarray(), center=True, scale=scale)
    np.testing.assert_allclose(res.row_means, counts.toarray().mean(axis=1), rtol=1e-12)
    assert np.isfinite(res.U).all() and np.isfinite(res.V).all()  # zero-variance rows


def test_sign_convention(counts):
    res = svd(counts, 6, center=True)
    idx = np.argmax(np.abs(res.U), axis=0)
    assert np.all(res.U[idx, np.arange(6)] > 0)
    other = svd(counts, 6, center=True, seed=123, method="lanczos", block_size=12)
    np.testing.assert_allclose(other.U, res.U, atol=1e-7)
    np.testing.assert_allclose(other.V, res.V, atol=1e-7)


def test_pca_is_centered_svd_and_matches_sklearn(hawaiibirds):
    skd = pytest.importorskip("sklearn.decomposition")
    A = hawaiibirds.matrix
    res = pca(A, 4)
    ref = skd.PCA(n_components=4, svd_solver="full").fit(A.T.toarray())  # samples × features
    np.testing.assert_allclose(res.explained_variance, ref.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(res.variance_ratio, ref.explained_variance_ratio_, rtol=1e-9)
    assert cosines(res.U, ref.components_.T).min() > 1 - 1e-9
    np.testing.assert_allclose(np.abs(res.scores), np.abs(ref.transform(A.T.toarray())),
                               atol=1e-8)


def test_pca_anndata_fields(hawaiibirds):
    ad = pytest.importorskip("anndata")
    A = hawaiibirds.matrix
    adata = ad.AnnData(sp.csr_matrix(A.T))  # cells × species
    out = pca(adata, 3)
    assert out is adata
    assert adata.obsm["X_pca"].shape == (1183, 3) and adata.varm["PCs"].shape == (183, 3)
    uns = adata.uns["pca"]
    ref = pca(A, 3)  # in memory: another block size, so equal to tolerance, not bitwise
    np.testing.assert_allclose(adata.varm["PCs"], ref.U, atol=1e-7)
    np.testing.assert_allclose(adata.obsm["X_pca"], ref.scores, atol=1e-7 * ref.d[0])
    np.testing.assert_allclose(uns["variance_ratio"], ref.variance_ratio, rtol=1e-12)
    np.testing.assert_allclose(uns["variance"], ref.explained_variance, rtol=1e-12)
    assert uns["params"]["center"] is True
    copy = pca(ad.AnnData(sp.csr_matrix(A.T)), 3, copy=True, scale=True)
    assert copy is not adata and "X_pca" in copy.obsm
    layered = ad.AnnData(np.zeros(adata.shape), layers={"counts": sp.csr_matrix(A.T)})
    pca(layered, 3, layer="counts")
    np.testing.assert_allclose(layered.varm["PCs"], adata.varm["PCs"], atol=1e-7)
    assert layered.uns["pca"]["params"]["layer"] == "counts"
    with pytest.raises(ValueError, match="overwrite"):
        ref.to_anndata(adata, overwrite=False)
    with pytest.raises(ValueError, match="copy"):
        pca(A, 3, copy=True)
    with pytest.raises(TypeError, match="center"):
        pca(A, 3, center=False)


# --------------------------------------------------------------------------------------------
# inputs


def test_dense_sparse_and_chunked_dask_inputs_agree(counts):
    D = counts.toarray()
    ref = svd(counts, 4, center=True)
    for A in (D, sp.csr_matrix(counts), counts.astype(np.float32),
              da.from_array(D, chunks=(150, 200)),
              da.from_array(counts, chunks=(150, 200), asarray=False)):
        res = svd(A, 4, center=True)
        np.testing.assert_allclose(res.d, ref.d, rtol=1e-10)
        np.testing.assert_allclose(res.U, ref.U, atol=1e-8)
        np.testing.assert_allclose(res.V, ref.V, atol=1e-8)


def test_float32_storage_and_randomized(counts):
    res = svd(counts, 4, dtype="float32")
    ref = svd(counts, 4)
    np.testing.assert_allclose(res.d, ref.d, rtol=1e-6)  # integer counts: exact in float32
    rnd = svd(counts, 4, method="randomized", maxit=8)
    assert rnd.method == "randomized" and rnd.settings["power_iters"] == 8
    np.testing.assert_allclose(rnd.d, ref.d, rtol=5e-2)


def test_every_io_format(tmp_path, hawaiibirds):
    import scipy.io

    from dask_factor.io import write_matrix

    A = hawaiibirds.matrix
    ref = svd(A, 5, center=True)
    paths = [write_matrix(A, tmp_path / name, block_nnz=4000, **opts)
             for name, opts in (("birds.zarr", {}), ("birds.spz", {"value_type": "float64"}),
                                ("birds.h5ad", {}))]
    scipy.io.mmwrite(tmp_path / "birds.mtx", A)
    paths.append(tmp_path / "birds.mtx")
    for path in paths:
        res = svd(str(path), 5, center=True, cache="memory" if path.suffix == ".h5ad" else "auto")
        np.testing.assert_allclose(res.d, ref.d, rtol=1e-10, err_msg=str(path))
        np.testing.assert_allclose(res.U, ref.U, atol=1e-7, err_msg=str(path))
        np.testing.assert_allclose(np.abs(res.V), np.abs(ref.V), atol=1e-7, err_msg=str(path))


def test_pbmc3k_api_matches_rcppml_reference(pbmc3k):
    d_ref = np.array([8562.01887, 3461.46926, 1690.64627, 1317.72756, 1193.38888, 1109.63154,
                      860.07512, 792.67720, 602.83235, 565.62955])
    res = svd(pbmc3k.matrix, 10)
    np.testing.assert_allclose(res.d, d_ref, rtol=1e-5)
    rnd = svd(pbmc3k.matrix, 10, method="randomized")  # RcppML's 3 power iterations
    np.testing.assert_allclose(rnd.d, d_ref, rtol=2e-2)


# --------------------------------------------------------------------------------------------
# validation: clear errors before any work


def _exploding(shape):
    """A dask array whose every chunk raises when computed: proves no work started."""
    def boom(x):
        raise AssertionError("work started")
    return da.zeros(shape, chunks=(shape[0], 10)).map_blocks(boom, dtype=float)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(k=0), ValueError, "k"),
    (dict(k=30), ValueError, "k: expected 1 <= k < min"),
    (dict(k=40), ValueError, "k"),
    (dict(k=2.5), TypeError, "k"),
    (dict(k="5"), TypeError, "k"),
    (dict(k=3, method="deflation"), ValueError, "method"),
    (dict(k=3, tol=-1.0), ValueError, "tol"),
    (dict(k=3, tol=float("nan")), ValueError, "tol"),
    (dict(k=3, maxit=0), ValueError, "maxit"),
    (dict(k=3, center="yes"), TypeError, "center"),
    (dict(k=3, scale=1), TypeError, "scale"),
    (dict(k=3, seed=-1), ValueError, "seed"),
    (dict(k=3, seed=1.5), TypeError, "seed"),
    (dict(k=3, dtype="int32"), TypeError, "dtype"),
    (dict(k=3, block_size=0), ValueError, "block_size"),
    (dict(k=3, method="randomized", block_size=8), ValueError, "block_size"),
    (dict(k=3, client="localhost"), TypeError, "client"),
])
def test_bad_arguments_fail_before_work(kwargs, exc, match):
    A = _exploding((30, 50))
    with pytest.raises(exc, match=match):
        svd(A, **kwargs)


def test_bad_matrices():
    with pytest.raises(ValueError, match="2-D"):
        svd(np.ones(10), 1)
    with pytest.raises(ValueError, match="2-D"):
        svd(np.ones((4, 5, 6)), 1)
    with pytest.raises(ValueError, match="2-D"):
        svd(da.ones((4, 5, 6)), 1)
    with pytest.raises(TypeError, match="A"):
        svd({"a": 1}, 1)
    D = np.ones((20, 30))
    D[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        svd(D, 2)
    with pytest.raises(ValueError, match="NaN"):
        svd(sp.csc_matrix(D), 2)
    with pytest.raises(ValueError, match="NaN"):
        svd(da.from_array(D, chunks=(20, 10)), 2)
    D[3, 4] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        svd(D, 2, center=True)
    with pytest.raises(ValueError, match="k"):
        svd(np.ones((3, 30)), 3)


def test_not_converged_warns(counts):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = svd(counts, 5, maxit=2, block_size=4)
    assert not res.converged
    assert any(issubclass(x.category, RuntimeWarning) and "maxit" in str(x.message) for x in w)


def test_negative_values_are_fine_and_silent():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((80, 60))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = svd(D, 4)
    assert_matches_numpy(res, D)


def test_synchronous_scheduler_same_result(counts):
    a = svd(counts, 4, center=True)
    with dask.config.set(scheduler="synchronous"):
        b = svd(counts, 4, center=True)
    np.testing.assert_array_equal(a.d, b.d)
    np.testing.assert_array_equal(a.U, b.U)


# --------------------------------------------------------------------------------------------
# out of core on a cluster, in bounded memory (the NMF test's protocol, tests/io)


@pytest.mark.slow
@pytest.mark.cluster
def test_out_of_core_svd_on_cluster_in_bounded_memory(tmp_path):
    import os
    import sys
    import threading

    psutil = pytest.importorskip("psutil")
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    from dask_factor.datasets import simulate_counts
    from dask_factor.io import matrix_info, open_matrix

    full = os.environ.get("DASK_FACTOR_SCALE", "").lower() == "full"
    n, m, density, block_cols = (600_000, 6_000, 0.06, 2_048) if full else \
        (60_000, 2_000, 0.05, 2_048)
    path = simulate_counts(n, m, 8, density=density, seed=5, path=tmp_path / "A.zarr",
                           block_cols=block_cols)
    nnz = matrix_info(path)["nnz"]
    decoded = nnz * 8 + (n + 1) * 8
    ref = svd(open_matrix(path).compute(), 6, center=True, chunks=block_cols)

    class PeakRSS(distributed.WorkerPlugin):
        name = "svd-peak-rss"

        def setup(self, worker):
            self.proc, self.peak = psutil.Process(), 0
            self.stop = threading.Event()
            threading.Thread(target=self.run, daemon=True).start()

        def run(self):
            while not self.stop.wait(0.005):
                self.peak = max(self.peak, self.proc.memory_info().rss)

        def teardown(self, worker):
            self.stop.set()

    def reset(dask_worker):
        p = dask_worker.plugins["svd-peak-rss"]
        p.peak = psutil.Process().memory_info().rss
        return p.peak

    def peak(dask_worker):
        return dask_worker.plugins["svd-peak-rss"].peak

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    budget = decoded // 8 if full else decoded // 3
    limit = WORKER_BASELINE + budget
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=limit, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        client.register_plugin(PeakRSS())
        # warm up the kernels and readers
        svd(open_matrix(path), 3, client=client, method="randomized", maxit=1)
        base = client.run(reset)
        res = svd(open_matrix(path), 6, center=True, client=client)
        peaks = client.run(peak)
        V = res.V
    growth = max(peaks[w] - base[w] for w in peaks)
    print(f"\nsvd out of core: nnz {nnz:,}, decoded {decoded / 2**20:.0f} MiB, worker limit "
          f"{limit / 2**20:.0f} MiB, largest growth {growth / 2**20:.1f} MiB, budget "
          f"{budget / 2**20:.1f} MiB, {res.passes} passes")
    assert growth < budget, (peaks, growth, budget)  # the bound is on the growth (helpers.py)
    np.testing.assert_allclose(res.d, ref.d, rtol=1e-9)
    assert cosines(res.U, ref.U).min() > 1 - 1e-9 and cosines(V, ref.V).min() > 1 - 1e-9
