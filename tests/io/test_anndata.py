"""AnnData sources (.h5ad, zarr stores, objects) and sinks (h5ad, NMF results)."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

ad = pytest.importorskip("anndata")

from dask_factor.io import (  # noqa: E402
    matrix_info,
    open_matrix,
    read_metadata,
    write_matrix,
    write_nmf_to_anndata,
)

N_CELLS, N_GENES = 120, 45


@pytest.fixture
def adata():
    X = sp.random(N_CELLS, N_GENES, density=0.15, format="csr", random_state=3, dtype=np.float32)
    X.data = np.ceil(X.data * 20)
    obs = pd.DataFrame({"cell_type": pd.Categorical(["T", "B", "NK"] * 40)},
                       index=[f"cell{i}" for i in range(N_CELLS)])
    var = pd.DataFrame({"symbol": [f"S{i}" for i in range(N_GENES)]},
                       index=[f"gene{i}" for i in range(N_GENES)])
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.layers["counts"] = X * 3
    a.raw = a.copy()
    a.X = X * 0.5
    return a


def _write(a, tmp_path, kind):
    path = tmp_path / ("a.h5ad" if kind == "h5ad" else "a.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path) if kind == "h5ad" else a.write_zarr(path)
    return path


def _check(x, M_cells_by_genes):
    got = x.compute()
    want = M_cells_by_genes.T
    want = want.toarray() if sp.issparse(want) else np.asarray(want)
    assert x.shape == want.shape
    np.testing.assert_array_equal(got.toarray() if sp.issparse(got) else got, want)
    return got


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
@pytest.mark.parametrize("block_nnz", [None, 30, 200])
def test_x_layers_raw_equal_in_memory(tmp_path, adata, kind, block_nnz):
    path = _write(adata, tmp_path, kind)
    x = open_matrix(path, block_nnz=block_nnz)
    assert isinstance(x._meta, sp.csc_matrix)
    got = _check(x, adata.X)
    assert isinstance(got, sp.csc_matrix) and got.has_sorted_indices
    if block_nnz == 30:
        assert x.numblocks[1] > 10
    _check(open_matrix(path, layer="counts", block_nnz=block_nnz), adata.layers["counts"])
    _check(open_matrix(path, raw=True, block_nnz=block_nnz), adata.raw.X)
    with pytest.raises(KeyError, match="nope"):
        open_matrix(path, layer="nope")
    with pytest.raises(ValueError, match="not both"):
        open_matrix(path, layer="counts", raw=True)


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
def test_dense_and_csc_x(tmp_path, adata, kind):
    dense = ad.AnnData(X=adata.X.toarray(), obs=adata.obs, var=adata.var)
    x = open_matrix(_write(dense, tmp_path, kind), block_nnz=N_GENES * 16)
    assert isinstance(x._meta, np.ndarray) and x.chunks[1][0] == 16
    _check(x, dense.X)
    assert x.blocks[0, 0].compute().flags["C_CONTIGUOUS"]
    csc = ad.AnnData(X=sp.csc_matrix(adata.X), obs=adata.obs, var=adata.var)
    (tmp_path / "csc").mkdir()
    path = _write(csc, tmp_path / "csc", kind)
    with pytest.warns(UserWarning, match="scans the whole"):
        y = open_matrix(path, block_nnz=50)
    assert y.numblocks[1] > 1
    _check(y, csc.X)


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
def test_graph_carries_only_reader_descriptions(tmp_path, kind):
    import pickle

    X = sp.random(4000, 300, density=0.1, format="csr", random_state=0, dtype=np.float32)
    path = _write(ad.AnnData(X=X), tmp_path, kind)  # 120,000 entries, ~1 MB
    x = open_matrix(path, block_nnz=5_000)
    graph = dict(x.__dask_graph__())
    assert len(graph) == x.numblocks[1] > 20
    assert len(pickle.dumps(graph)) < 400 * len(graph)


def test_anndata_objects(tmp_path, adata):
    _check(open_matrix(adata, block_nnz=40), adata.X)
    _check(open_matrix(adata, layer="counts"), adata.layers["counts"])
    path = _write(adata, tmp_path, "h5ad")
    backed = ad.read_h5ad(path, backed="r")
    x = open_matrix(backed)
    assert "open-anndata" in x.name  # read from the file by the tasks, not from memory
    _check(x, adata.X)
    with pytest.raises(ValueError, match="view"):
        open_matrix(backed[:10])
    backed.file.close()


@pytest.mark.parametrize("kind", ["h5ad", "zarr"])
def test_read_metadata_orientation(tmp_path, adata, kind):
    path = _write(adata, tmp_path, kind)
    rows, cols = read_metadata(path)
    assert len(rows) == N_GENES and len(cols) == N_CELLS  # rows = genes = var
    pd.testing.assert_frame_equal(rows, adata.var)
    pd.testing.assert_frame_equal(cols, adata.obs)
    r_obj, c_obj = read_metadata(adata)
    pd.testing.assert_frame_equal(r_obj, adata.var)
    info = matrix_info(path)
    assert info["shape"] == (N_GENES, N_CELLS) and info["nnz"] == adata.X.nnz
    assert info["layers"] == ["counts"] and info["has_raw"]
    assert info["row_meta_columns"] == ["symbol"] and info["col_meta_columns"] == ["cell_type"]


def test_write_h5ad_round_trip_with_metadata(tmp_path, adata):
    src = _write(adata, tmp_path, "zarr")
    write_matrix(src, tmp_path / "b.h5ad", block_nnz=60, read_opts={"layer": "counts"})
    b = ad.read_h5ad(tmp_path / "b.h5ad")
    assert b.shape == adata.shape
    np.testing.assert_array_equal(b.X.toarray(), adata.layers["counts"].toarray())
    pd.testing.assert_frame_equal(b.obs, adata.obs)
    pd.testing.assert_frame_equal(b.var, adata.var)
    with h5py.File(tmp_path / "b.h5ad") as f:
        assert f["X"].attrs["encoding-type"] == "csr_matrix"
        assert f["X/data"].maxshape == (None,)  # appended block by block


def test_write_h5ad_from_arrays(tmp_path):
    A = sp.random(30, 80, density=0.1, format="csc", random_state=0, dtype=np.float64)
    write_matrix(A, tmp_path / "a.h5ad", block_nnz=50)
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    assert a.shape == (80, 30) and list(a.obs_names[:2]) == ["cell0", "cell1"]
    np.testing.assert_array_equal(a.X.toarray(), A.T.toarray())
    D = np.random.default_rng(0).random((12, 33))
    write_matrix(D, tmp_path / "d.h5ad", block_nnz=12 * 5)
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "d.h5ad").X, D.T)
    np.testing.assert_array_equal(open_matrix(tmp_path / "d.h5ad").compute(), D)


def test_write_nmf_in_memory(adata):
    k = 4
    rng = np.random.default_rng(0)
    W, d, H = rng.random((N_GENES, k)), np.arange(k, 0, -1.0), rng.random((k, N_CELLS))
    out = write_nmf_to_anndata(adata, W, d, H, loss=[3.0, 2.0, 1.5],
                               params={"k": k, "seed": 1, "L1": (0.0, 0.0), "init": None})
    assert out is adata
    np.testing.assert_array_equal(adata.obsm["X_nmf"], H.T)
    np.testing.assert_array_equal(adata.varm["NMF_W"], W)
    np.testing.assert_array_equal(adata.uns["nmf"]["d"], d)
    assert adata.uns["nmf"]["params"]["k"] == k and "init" not in adata.uns["nmf"]["params"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_nmf_to_anndata(adata, W, d, H)
    write_nmf_to_anndata(adata, W, d, H, overwrite=True)
    with pytest.raises(ValueError, match="genes x k"):
        write_nmf_to_anndata(adata, W[:-1], d, H, overwrite=True)
    with pytest.raises(ValueError, match="k=4"):
        write_nmf_to_anndata(adata, W, d[:2], H, overwrite=True)


def test_write_nmf_to_h5ad_file_in_place(tmp_path, adata):
    path = _write(adata, tmp_path, "h5ad")
    k = 3
    rng = np.random.default_rng(1)
    W, d, H = rng.random((N_GENES, k)), np.ones(k), rng.random((k, N_CELLS))
    write_nmf_to_anndata(path, W, d, H, loss=np.array([1.0, 0.5]), params={"k": k})
    b = ad.read_h5ad(path)
    np.testing.assert_allclose(b.obsm["X_nmf"], H.T)
    np.testing.assert_allclose(b.varm["NMF_W"], W)
    np.testing.assert_allclose(b.uns["nmf"]["loss"], [1.0, 0.5])
    np.testing.assert_array_equal(b.X.toarray(), adata.X.toarray())  # X untouched
    with pytest.raises(FileExistsError):
        write_nmf_to_anndata(path, W, d, H)
    with h5py.File(path) as f:
        assert not [key for key in f["obsm"] if ".tmp-" in key]


def test_in_place_write_that_fails_leaves_the_file_as_it_was(tmp_path):
    """write_h5ad_elements: an element that cannot be written (here, an object anndata cannot
    store) fails the call, and the elements written before it are not left behind under their
    temporary keys (anndata would read them as obsm/uns entries)."""
    from dask_factor.io.anndata_io import write_h5ad_elements

    path = tmp_path / "cells.h5ad"
    ad.AnnData(np.ones((5, 3), dtype=np.float32)).write_h5ad(path)
    with h5py.File(path, "r") as f:
        before = {g: sorted(f[g]) for g in f if isinstance(f[g], h5py.Group)}
    with pytest.raises(Exception, match="No method registered"):
        write_h5ad_elements(path, [("obsm", "X_a", np.ones((5, 2))),
                                   ("layers2", "x", np.ones((5, 3))),
                                   ("uns", "bad", object())], overwrite=False)
    with h5py.File(path, "r") as f:
        after = {g: sorted(f[g]) for g in f if isinstance(f[g], h5py.Group)}
    assert after == before
    back = ad.read_h5ad(path)
    assert list(back.obsm) == [] and list(back.uns) == []
