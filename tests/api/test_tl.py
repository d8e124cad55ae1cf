"""dask_factor.tl (issue 14 item 2): scanpy-style tools on in-memory, backed and dask AnnData,
the scanpy round trip (neighbors, UMAP, embedding plot) and agreement with sc.pp.pca."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

ad = pytest.importorskip("anndata")

from dask_factor import tl  # noqa: E402


@pytest.fixture(scope="module")
def pbmc():
    """pbmc3k (cells × genes), 800 most variable genes: X log-normalised, layers['counts']."""
    from dask_factor import datasets

    A, rows, cols = datasets.load("pbmc3k")
    counts = sp.csr_matrix(A.T, dtype=np.float32)
    lib = np.asarray(counts.sum(axis=1)).ravel()
    norm = sp.diags(1e4 / lib) @ counts
    norm.data = np.log1p(norm.data)
    norm = sp.csr_matrix(norm, dtype=np.float32)
    mean = np.asarray(norm.mean(axis=0)).ravel()
    var = np.asarray(norm.multiply(norm).mean(axis=0)).ravel() - mean ** 2
    keep = np.sort(np.argsort(-var)[:800])
    adata = ad.AnnData(norm[:, keep].tocsr())
    adata.var_names = [str(v) for v in rows.index[keep]]
    adata.obs_names = [str(v) for v in cols.index]
    adata.layers["counts"] = counts[:, keep].tocsr()
    return adata


def test_nmf_keys_and_copy(pbmc):
    adata = pbmc.copy()
    assert tl.nmf(adata, 6, seed=1, maxit=15) is None
    H, W = adata.obsm["X_nmf"], adata.varm["NMF_W"]
    assert H.shape == (adata.n_obs, 6) and W.shape == (adata.n_vars, 6)
    uns = adata.uns["nmf"]
    assert uns["d"].shape == (6,) and len(uns["loss"]) == uns["iterations"]
    assert uns["params"]["k"] == 6 and uns["params"]["seed"] == 1
    out = tl.nmf(pbmc, 3, key_added="small", copy=True, seed=1, maxit=5)
    assert "X_small" in out.obsm and "SMALL_W" in out.varm and "X_small" not in pbmc.obsm


def test_layer_everywhere(pbmc):
    counts = ad.AnnData(pbmc.layers["counts"].copy())
    a = pbmc.copy()
    tl.nmf(a, 4, layer="counts", seed=2, maxit=10)
    tl.nmf(counts, 4, seed=2, maxit=10)
    np.testing.assert_allclose(a.varm["NMF_W"], counts.varm["NMF_W"], rtol=1e-5, atol=1e-8)
    assert a.uns["nmf"]["params"]["layer"] == "counts"
    tl.pca(a, 5, layer="counts")
    tl.pca(counts, 5)
    np.testing.assert_allclose(a.uns["pca"]["variance_ratio"],
                               counts.uns["pca"]["variance_ratio"], rtol=1e-8)
    tl.svd(a, 3, layer="counts")
    tl.svd(counts, 3)
    np.testing.assert_allclose(a.obsm["X_svd"], counts.obsm["X_svd"], rtol=1e-6, atol=1e-8)
    with pytest.raises(KeyError, match="layer='nope'"):
        tl.nmf(a, 2, layer="nope")
    with pytest.raises(TypeError, match="AnnData"):
        tl.nmf(a.X, 2)


def test_backed_and_dask_anndata(pbmc, tmp_path):
    import dask.array as da

    ref = pbmc.copy()
    tl.nmf(ref, 4, seed=3, maxit=10)
    path = tmp_path / "p.h5ad"
    pbmc.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    out = tl.nmf(backed, 4, seed=3, maxit=10, copy=True)
    np.testing.assert_allclose(out.varm["NMF_W"], ref.varm["NMF_W"], rtol=1e-5, atol=1e-8)
    backed.file.close()
    lazy = ad.AnnData(da.from_array(pbmc.X.toarray(), chunks=(500, 800)))
    tl.nmf(lazy, 4, seed=3, maxit=10)
    np.testing.assert_allclose(lazy.varm["NMF_W"], ref.varm["NMF_W"], rtol=1e-4, atol=1e-7)


def test_scanpy_round_trip(pbmc):
    sc = pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = pbmc.copy()
    tl.nmf(adata, 8, seed=1, maxit=20)
    sc.pp.neighbors(adata, use_rep="X_nmf", n_neighbors=10)
    sc.tl.umap(adata, random_state=0)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    ax = sc.pl.embedding(adata, basis="nmf", components="1,2", show=False)
    assert ax is not None
    ax = sc.pl.embedding(adata, basis="umap", show=False)
    assert ax is not None
    plt.close("all")


def test_pca_agrees_with_scanpy(pbmc):
    sc = pytest.importorskip("scanpy")
    ours, theirs = pbmc.copy(), pbmc.copy()
    tl.pca(ours, 20)
    sc.pp.pca(theirs, n_comps=20)
    r = np.corrcoef(ours.obsm["X_pca"][:, 0], theirs.obsm["X_pca"][:, 0])[0, 1]
    assert abs(r) > 0.999
    np.testing.assert_allclose(ours.uns["pca"]["variance_ratio"],
                               theirs.uns["pca"]["variance_ratio"], atol=1e-4)
    np.testing.assert_allclose(ours.uns["pca"]["variance"], theirs.uns["pca"]["variance"],
                               rtol=1e-3)
    for j in range(5):
        r = np.corrcoef(ours.varm["PCs"][:, j], theirs.varm["PCs"][:, j])[0, 1]
        assert abs(r) > 0.999


def test_readme_example():
    pytest.importorskip("scanpy")
    from readme_blocks import readme_block

    exec(compile(readme_block("scanpy / AnnData tools"), "README.md", "exec"), {})


def test_nmf_takes_layer(pbmc):
    """nmf(adata, k, layer=...) (issue 14: it was a TypeError), like pca(layer=)."""
    from dask_factor import nmf

    a = nmf(pbmc, 3, layer="counts", seed=4, maxit=5)
    b = nmf(ad.AnnData(pbmc.layers["counts"]), 3, seed=4, maxit=5)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="layer: only meaningful"):
        nmf(pbmc.X.T, 3, layer="counts")
    with pytest.raises(TypeError, match="^layer: expected"):
        nmf(pbmc, 3, layer=3)
