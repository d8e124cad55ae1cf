"""Our zarr CSC layout: round trips, block bounds, metadata, AnnData compatibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_factor.io import matrix_info, open_matrix, read_metadata, write_matrix
from dask_factor.io.chunking import column_bounds_by_nnz


def _sparse(m=80, n=500, density=0.05, seed=0, dtype=np.float32):
    return sp.random(m, n, density=density, format="csc", random_state=seed, dtype=dtype)


def _equal(x, A):
    got = x.compute()
    assert got.shape == A.shape
    if sp.issparse(A):
        assert sp.issparse(got)
        np.testing.assert_array_equal(got.toarray(), A.toarray())
    else:
        np.testing.assert_array_equal(got, A)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_round_trip_sparse_dtypes(tmp_path, dtype):
    A = (_sparse() * 100).astype(dtype)
    write_matrix(A, tmp_path / "a.zarr", block_nnz=300)
    x = open_matrix(tmp_path / "a.zarr")
    assert x.dtype == dtype
    _equal(x, A)


@pytest.mark.parametrize("block_nnz", [1, 40, 333, 2000, 10**8])
def test_open_with_block_nnz_merges_or_splits(tmp_path, block_nnz):
    A = _sparse()
    write_matrix(A, tmp_path / "a.zarr", block_nnz=500)
    stored = zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["block_bounds"]
    x = open_matrix(tmp_path / "a.zarr", block_nnz=block_nnz)
    _equal(x, A)
    bounds = np.concatenate([[0], np.cumsum(x.chunks[1])])
    if block_nnz >= 500:  # merging keeps stored boundaries
        assert set(bounds) <= set(stored)
        assert len(bounds) <= len(stored)
    else:
        assert len(bounds) > len(stored)
        expect = column_bounds_by_nnz(A.indptr, block_nnz)
        np.testing.assert_array_equal(bounds, expect)


def test_layout_attributes_and_chunks(tmp_path):
    A = _sparse(100, 3000, density=0.05)
    write_matrix(A, tmp_path / "a.zarr", block_nnz=2000)
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    attrs = dict(g.attrs)
    assert attrs["encoding-type"] == "csc_matrix"
    assert attrs["encoding-version"] == "0.1.0"
    assert attrs["shape"] == [100, 3000] and attrs["dtype"] == "float32"
    assert attrs["nnz"] == A.nnz
    bounds, offsets = np.array(attrs["block_bounds"]), np.array(attrs["block_indptr"])
    np.testing.assert_array_equal(offsets, A.indptr[bounds])
    assert g["indptr"].dtype == np.int64 and g["indices"].dtype == np.int32
    # a block read touches few data chunks
    chunk = g["data"].chunks[0]
    touched = (offsets[1:] - 1) // chunk - offsets[:-1] // chunk + 1
    assert touched.max() <= 6


def test_anndata_reads_our_layout(tmp_path):
    from anndata.io import read_elem

    A = _sparse()
    write_matrix(A, tmp_path / "a.zarr")
    B = read_elem(zarr.open_group(str(tmp_path / "a.zarr"), mode="r"))
    assert isinstance(B, sp.csc_matrix | sp.csc_array)
    np.testing.assert_array_equal(B.toarray(), A.toarray())


def test_metadata_round_trip(tmp_path):
    A = _sparse(30, 50)
    rows = pd.DataFrame({"symbol": [f"G{i}" for i in range(30)]},
                        index=[f"g{i}" for i in range(30)])
    cols = pd.DataFrame({"cell_type": pd.Categorical(["T", "B"] * 25), "umi": np.arange(50.0)},
                        index=[f"c{i}" for i in range(50)])
    write_matrix(A, tmp_path / "a.zarr", row_meta=rows, col_meta=cols)
    r, c = read_metadata(tmp_path / "a.zarr")
    pd.testing.assert_frame_equal(r, rows)
    pd.testing.assert_frame_equal(c, cols)
    info = matrix_info(tmp_path / "a.zarr")
    assert info["row_meta_columns"] == ["symbol"]
    assert info["col_meta_columns"] == ["cell_type", "umi"]
    # metadata follow a conversion
    write_matrix(tmp_path / "a.zarr", tmp_path / "b.zarr")
    pd.testing.assert_frame_equal(read_metadata(tmp_path / "b.zarr")[1], cols)


def test_dense_round_trip_and_bare_array(tmp_path):
    D = np.random.default_rng(1).random((25, 70))
    write_matrix(D, tmp_path / "d.zarr", block_nnz=25 * 16)
    x = open_matrix(tmp_path / "d.zarr")
    assert isinstance(x._meta, np.ndarray) and x.chunks[1][0] == 16
    _equal(x, D)
    info = matrix_info(tmp_path / "d.zarr")
    assert info["dense"] and info["nnz"] is None and info["shape"] == (25, 70)
    zarr.create_array(str(tmp_path / "bare.zarr"), data=D, chunks=(25, 7))
    y = open_matrix(tmp_path / "bare.zarr", block_nnz=25 * 20)
    assert y.chunks[1][0] == 20
    _equal(y, D)


def test_empty_columns_and_empty_matrix(tmp_path):
    A = _sparse(40, 100).tolil()
    A[:, 10:60] = 0
    A = A.tocsc()
    A.eliminate_zeros()
    write_matrix(A, tmp_path / "a.zarr", block_nnz=20)
    _equal(open_matrix(tmp_path / "a.zarr"), A)
    Z = sp.csc_matrix((7, 5), dtype=np.float32)
    write_matrix(Z, tmp_path / "z.zarr")
    _equal(open_matrix(tmp_path / "z.zarr"), Z)
    assert matrix_info(tmp_path / "z.zarr")["nnz"] == 0


def test_rejects_foreign_zarr(tmp_path):
    g = zarr.open_group(str(tmp_path / "csr.zarr"), mode="w")
    g.attrs.update({"encoding-type": "csr_matrix", "shape": [2, 2]})
    with pytest.raises(ValueError, match="CSR"):
        open_matrix(tmp_path / "csr.zarr")
    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    g.attrs.update({"encoding-type": "dataframe"})
    with pytest.raises(ValueError, match="encoding-type"):
        open_matrix(tmp_path / "other.zarr")


def test_chunk_nnz_option(tmp_path):
    A = _sparse()
    write_matrix(A, tmp_path / "a.zarr", chunk_nnz=128)
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["data"].chunks == (128,)
    _equal(open_matrix(tmp_path / "a.zarr"), A)


@st.composite
def _matrices(draw):
    m = draw(st.integers(1, 40))
    n = draw(st.integers(1, 60))
    density = draw(st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**16))
    A = sp.random(m, n, density=density, format="csc", random_state=seed, dtype=np.float64)
    A.data = np.round(A.data * 1000) - 300  # negatives and explicit zeros allowed
    return A


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(A=_matrices(), write_nnz=st.integers(1, 500), read_nnz=st.one_of(st.none(),
       st.integers(1, 500)), chunk_nnz=st.one_of(st.none(), st.integers(1, 64)))
def test_property_round_trip(tmp_path_factory, A, write_nnz, read_nnz, chunk_nnz):
    path = tmp_path_factory.mktemp("prop") / "a.zarr"
    write_matrix(A, path, block_nnz=write_nnz, chunk_nnz=chunk_nnz)
    x = open_matrix(path, block_nnz=read_nnz)
    got = x.compute()
    assert got.dtype == A.dtype and got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, A.indptr)
    np.testing.assert_array_equal(got.indices, A.indices)
    np.testing.assert_array_equal(got.data, A.data)
