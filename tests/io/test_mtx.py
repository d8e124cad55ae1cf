"""Matrix Market: in-memory open, bounded-memory streaming conversion, sidecar metadata."""

from __future__ import annotations

import gzip
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from dask_factor.io import matrix_info, open_matrix, read_metadata, write_matrix
from dask_factor.io.mtx import mtx_stream, read_header

DATA = Path(__file__).resolve().parents[1] / "data" / "io"

#: tiny_int from the RcppML conformance set (1-based (i, j, x)), as its MANIFEST lists it
TINY_INT = [(1, 1, 1), (3, 1, 4), (7, 1, 2), (2, 2, 9), (4, 2, 1), (1, 4, 3), (2, 4, 5),
            (3, 4, 7), (6, 4, 8), (7, 4, 6), (4, 5, 2), (6, 5, 1), (7, 5, 255)]


def _tiny_int():
    i, j, x = (np.array(v) for v in zip(*TINY_INT))
    return sp.csc_matrix((x.astype(float), (i - 1, j - 1)), shape=(7, 5))


def _stream_dense(path, **kw):
    s = mtx_stream(path, **kw)
    blocks = [blk for _, blk in s]
    if s.sparse:
        return s, sp.hstack(blocks, format="csc") if blocks else None
    return s, np.hstack(blocks)


def test_fixture_matches_manifest():
    x = open_matrix(DATA / "tiny_int.mtx")
    np.testing.assert_array_equal(x.compute().toarray(), _tiny_int().toarray())
    s, got = _stream_dense(DATA / "tiny_int.mtx", block_nnz=3)
    assert s.n_blocks > 1
    np.testing.assert_array_equal(got.toarray(), _tiny_int().toarray())


@pytest.mark.parametrize("field", ["real", "integer", "pattern"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_stream_equals_mmread(tmp_path, field, symmetric):
    A = sp.random(40, 40, density=0.1, format="coo", random_state=1)
    if symmetric:
        A = sp.triu(A) + sp.triu(A, 1).T
    if field == "integer":
        A.data = np.ceil(A.data * 50)
    scipy.io.mmwrite(tmp_path / "a.mtx", A.tocoo(), field=field,
                     symmetry="symmetric" if symmetric else "general")
    ref = sp.csc_matrix(scipy.io.mmread(tmp_path / "a.mtx"))
    s, got = _stream_dense(tmp_path / "a.mtx", block_nnz=20, slice_entries=17)
    assert s.n_blocks > 3 and s.nnz == ref.nnz
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got.toarray(), ref.toarray())
    x = open_matrix(tmp_path / "a.mtx", block_nnz=20)
    np.testing.assert_array_equal(x.compute().toarray(), ref.toarray())


def test_unsorted_entries_gz_and_convert(tmp_path):
    A = sp.random(50, 300, density=0.05, format="coo", random_state=2)
    perm = np.random.default_rng(0).permutation(A.nnz)  # entries in random order
    A = sp.coo_matrix((A.data[perm], (A.row[perm], A.col[perm])), shape=A.shape)
    scipy.io.mmwrite(tmp_path / "a.mtx", A)
    with open(tmp_path / "a.mtx", "rb") as f, gzip.open(tmp_path / "a.mtx.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    assert read_header(tmp_path / "a.mtx.gz").shape == (50, 300)
    write_matrix(tmp_path / "a.mtx.gz", tmp_path / "a.zarr", block_nnz=60)
    x = open_matrix(tmp_path / "a.zarr")
    assert x.numblocks[1] > 5
    np.testing.assert_array_equal(x.compute().toarray(), A.toarray())


def test_dense_array_layout(tmp_path):
    s, got = _stream_dense(DATA / "tiny_dense.mtx", block_nnz=14)
    ref = scipy.io.mmread(DATA / "tiny_dense.mtx")
    assert not s.sparse and s.n_blocks == 3
    np.testing.assert_array_equal(got, ref)  # exact decimal round trip
    write_matrix(DATA / "tiny_dense.mtx", tmp_path / "d.zarr", block_nnz=14)
    np.testing.assert_array_equal(open_matrix(tmp_path / "d.zarr").compute(), ref)
    assert matrix_info(DATA / "tiny_dense.mtx")["dense"]


def test_header_errors(tmp_path):
    (tmp_path / "c.mtx").write_text("%%MatrixMarket matrix coordinate complex general\n1 1 0\n")
    with pytest.raises(ValueError, match="complex"):
        read_header(tmp_path / "c.mtx")
    (tmp_path / "h.mtx").write_text("%%MatrixMarket matrix coordinate real hermitian\n1 1 0\n")
    with pytest.raises(ValueError, match="hermitian"):
        read_header(tmp_path / "h.mtx")
    (tmp_path / "bad.mtx").write_text("hello\n")
    with pytest.raises(ValueError, match="not a Matrix Market"):
        read_header(tmp_path / "bad.mtx")
    (tmp_path / "oob.mtx").write_text("%%MatrixMarket matrix coordinate real general\n"
                                      "% a comment\n2 2 1\n3 1 1.0\n")
    with pytest.raises(ValueError, match="outside the declared shape"):
        mtx_stream(tmp_path / "oob.mtx")


def test_sidecars_10x_and_rcppml(tmp_path):
    A = sp.random(6, 4, density=0.5, format="coo", random_state=0)
    tenx = tmp_path / "tenx"
    tenx.mkdir()
    scipy.io.mmwrite(tenx / "matrix.mtx", A)
    with gzip.open(tenx / "features.tsv.gz", "wt") as f:
        f.writelines(f"ENSG{i}\tGENE{i}\tGene Expression\n" for i in range(6))
    with gzip.open(tenx / "barcodes.tsv.gz", "wt") as f:
        f.writelines(f"AAAC-{i}\n" for i in range(4))
    rows, cols = read_metadata(tenx / "matrix.mtx")
    assert list(rows["gene_ids"]) == [f"ENSG{i}" for i in range(6)]
    assert list(cols.index) == [f"AAAC-{i}" for i in range(4)]
    info = matrix_info(tenx / "matrix.mtx")
    assert info["row_meta_columns"] == ["gene_ids", "gene_symbols", "feature_types"]
    r = tmp_path / "r"
    r.mkdir()
    scipy.io.mmwrite(r / "matrix.mtx", A)
    pd.DataFrame({"cell_type": list("abab")}).to_csv(r / "var.csv", index=False)
    (r / "rownames.txt").write_text("\n".join(f"g{i}" for i in range(6)) + "\n")
    rows, cols = read_metadata(r / "matrix.mtx")
    assert list(rows.index) == [f"g{i}" for i in range(6)]
    assert list(cols["cell_type"]) == list("abab")
    write_matrix(r / "matrix.mtx", tmp_path / "r.zarr")  # metadata carried along
    assert list(read_metadata(tmp_path / "r.zarr")[1]["cell_type"]) == list("abab")
    pd.DataFrame({"x": [1]}).to_csv(r / "var.csv", index=False)  # wrong length: ignored
    with pytest.warns(UserWarning, match="expected 4"):
        assert read_metadata(r / "matrix.mtx")[1] is None


def test_streaming_memory_is_bounded(tmp_path):
    """Converting 24 MB of COO entries with small blocks holds a few blocks at most."""
    m, n, nnz = 2000, 8000, 1_000_000
    rng = np.random.default_rng(0)
    rows = rng.integers(1, m + 1, nnz)
    cols = rng.integers(1, n + 1, nnz)
    vals = rng.integers(1, 100, nnz)
    with open(tmp_path / "big.mtx", "w") as f:
        f.write(f"%%MatrixMarket matrix coordinate integer general\n{m} {n} {nnz}\n")
        pd.DataFrame({"i": rows, "j": cols, "x": vals}).to_csv(f, sep=" ", header=False,
                                                                index=False)
    full_bytes = nnz * (8 + 8 + 8)  # coo triplets as mmread holds them
    tracemalloc.start()
    try:
        write_matrix(tmp_path / "big.mtx", tmp_path / "big.zarr", block_nnz=20_000,
                     chunk_nnz=8192, read_opts={"slice_entries": 16384})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full_bytes / 6, (peak, full_bytes)
    ref = sp.csc_matrix(scipy.io.mmread(tmp_path / "big.mtx"))
    ref.sum_duplicates()
    got = open_matrix(tmp_path / "big.zarr").compute()
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
