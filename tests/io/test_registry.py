"""The format registry: detection, open_matrix on every source, graphs, atomic writes."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from dask_factor.io import (
    BlockStream,
    MatrixFormatError,
    atomic_path,
    detect_format,
    iter_column_blocks,
    matrix_info,
    open_matrix,
    read_metadata,
    write_matrix,
    zarr_csc,
)
from dask_factor.io.registry import format_from_suffix

DATA = Path(__file__).resolve().parents[1] / "data" / "io"


def _sparse(m=60, n=300, density=0.08, seed=0, dtype=np.float32):
    return sp.random(m, n, density=density, format="csc", random_state=seed, dtype=dtype)


def _assert_blocks_normalised(x):
    """Every block: one row chunk, CSC with sorted indices (or C-contiguous numpy)."""
    assert len(x.chunks[0]) == 1
    for c in range(x.numblocks[1]):
        blk = x.blocks[0, c].compute()
        if sp.issparse(x._meta):
            assert isinstance(blk, sp.csc_matrix)
            assert blk.has_sorted_indices
        else:
            assert isinstance(blk, np.ndarray) and blk.flags["C_CONTIGUOUS"]
        assert blk.shape == (x.shape[0], x.chunks[1][c])


def _dense(x):
    x = x.compute() if isinstance(x, da.Array) else x
    return x.toarray() if sp.issparse(x) else np.asarray(x)


# --------------------------------------------------------------------------- detection


def test_detect_format_by_content(tmp_path):
    A = _sparse()
    write_matrix(A, tmp_path / "a.zarr")
    shutil.copytree(tmp_path / "a.zarr", tmp_path / "renamed")  # no suffix: zarr.json decides
    scipy.io.mmwrite(tmp_path / "m.mtx", A)
    os.replace(tmp_path / "m.mtx", tmp_path / "m.txt")  # no suffix: the banner decides
    shutil.copy(DATA / "tiny_int.chunk2.spz", tmp_path / "noext")
    assert detect_format(tmp_path / "a.zarr") == "zarr"
    assert detect_format(tmp_path / "renamed") == "zarr"
    assert detect_format(tmp_path / "m.txt") == "mtx"
    assert detect_format(tmp_path / "noext") == "spz"
    write_matrix(A, tmp_path / "a.h5ad")
    assert detect_format(tmp_path / "a.h5ad") == "h5ad"


def test_detect_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        detect_format(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="unrecognised"):
        detect_format(tmp_path / "x.bin")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a zarr store"):
        detect_format(tmp_path / "d")


def test_format_from_suffix():
    assert format_from_suffix("a/b.zarr") == "zarr"
    assert format_from_suffix("b.zarr/") == "zarr"
    assert format_from_suffix("b.spz") == "spz"
    assert format_from_suffix("b.h5ad") == "h5ad"
    with pytest.raises(ValueError, match="format="):
        format_from_suffix("b.mtx")


# --------------------------------------------------------------------------- in-memory sources


@pytest.mark.parametrize("block_nnz", [None, 50, 400, 10**9])
def test_open_in_memory_sparse(block_nnz):
    A = _sparse()
    x = open_matrix(A, block_nnz=block_nnz)
    assert isinstance(x._meta, sp.csc_matrix) and x.dtype == np.float32
    np.testing.assert_array_equal(_dense(x), A.toarray())
    _assert_blocks_normalised(x)
    if block_nnz == 50:
        assert x.numblocks[1] > 10


def test_open_in_memory_other_sparse_types_and_unsorted():
    A = _sparse()
    B = sp.csc_matrix((A.data[::-1].copy(), A.indices[::-1].copy(), A.indptr), shape=A.shape)
    B.has_sorted_indices = False  # reversed within columns: unsorted
    for src in (A.tocoo(), A.tocsr(), sp.csc_array(A), B.copy()):
        x = open_matrix(src, block_nnz=100)
        _assert_blocks_normalised(x)
    np.testing.assert_array_equal(_dense(open_matrix(A.tocoo())), A.toarray())


def test_open_in_memory_dense_and_dtype():
    D = np.random.default_rng(0).random((20, 50))
    x = open_matrix(D, block_nnz=200, dtype=np.float32)
    assert isinstance(x._meta, np.ndarray) and x.dtype == np.float32
    assert x.chunks == ((20,), (10,) * 5)
    np.testing.assert_array_equal(x.compute(), D.astype(np.float32))
    _assert_blocks_normalised(x)


def test_open_dask_array_with_row_chunks():
    A = _sparse(40, 90)
    parts = [[da.from_array(A[r : r + 20, c : c + 30].tocsc(), chunks=(20, 30),
                            asarray=False, meta=sp.csc_matrix((0, 0), dtype=A.dtype))
              for c in range(0, 90, 30)] for r in range(0, 40, 20)]
    x2d = da.block(parts)
    assert x2d.numblocks == (2, 3)
    x = open_matrix(x2d)
    assert x.numblocks == (1, 3)
    np.testing.assert_array_equal(_dense(x), A.toarray())
    _assert_blocks_normalised(x)
    y = open_matrix(x2d, block_nnz=30)  # recut by non-zeros after one counting pass
    assert y.numblocks[1] > 3
    np.testing.assert_array_equal(_dense(y), A.toarray())
    dense = open_matrix(da.from_array(A.toarray(), chunks=(15, 40)), dtype=np.float64)
    assert dense.dtype == np.float64
    np.testing.assert_array_equal(dense.compute(), A.toarray())


def test_open_matrix_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="block_nnz"):
        open_matrix(_sparse(), block_nnz=0)
    with pytest.raises(TypeError, match="source"):
        open_matrix(42)
    with pytest.raises(TypeError, match="layer"):
        open_matrix(_sparse(), layer="x")
    write_matrix(_sparse(), tmp_path / "a.zarr")
    with pytest.raises(TypeError, match=r"\['layer'\] for reading format 'zarr'"):
        open_matrix(tmp_path / "a.zarr", layer="x")
    with pytest.raises(ValueError, match="2-D"):
        open_matrix(np.ones(3))
    with pytest.raises(FileNotFoundError):
        open_matrix(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="format="):
        open_matrix(tmp_path, format="parquet")


def test_read_metadata_in_memory_is_empty():
    assert read_metadata(_sparse()) == (None, None)


# --------------------------------------------------------------------------- graphs


def test_file_graph_holds_no_data(tmp_path):
    A = _sparse(500, 4000, density=0.05)  # 100,000 entries, 800 kB of CSC
    write_matrix(A, tmp_path / "a.zarr", block_nnz=5000)
    x = open_matrix(tmp_path / "a.zarr")
    graph = dict(x.__dask_graph__())
    size = len(pickle.dumps(graph))
    assert x.numblocks[1] >= 15
    assert size < 400 * x.numblocks[1], size  # a few hundred bytes per task
    # and a memory source, by contrast, carries its data
    assert len(pickle.dumps(dict(open_matrix(A).__dask_graph__()))) > 100_000


def test_nothing_read_on_client(tmp_path):
    """Opening a zarr store reads attributes (and lists its chunk files) only: overwrite every
    data chunk with garbage and it still opens; the damage shows when a task reads a block."""
    A = _sparse(200, 1000)
    write_matrix(A, tmp_path / "a.zarr", block_nnz=2000)
    for arr in ("data", "indices", "indptr"):
        for chunk in (tmp_path / "a.zarr" / arr / "c").iterdir():
            chunk.write_bytes(b"garbage")
    x = open_matrix(tmp_path / "a.zarr")
    assert x.shape == A.shape and x.numblocks[1] > 1
    assert matrix_info(tmp_path / "a.zarr")["nnz"] == A.nnz
    with pytest.raises(MatrixFormatError, match="a.zarr"):  # now the reader runs
        x.blocks[0, 0].compute()
    # chunks lost (a partial copy) would read as zeros: a store we wrote whole says so at open
    shutil.rmtree(tmp_path / "a.zarr" / "indices" / "c")
    with pytest.raises(MatrixFormatError, match="chunks were lost"):
        open_matrix(tmp_path / "a.zarr")


def test_same_source_same_keys(tmp_path):
    write_matrix(_sparse(), tmp_path / "a.zarr")
    assert open_matrix(tmp_path / "a.zarr").name == open_matrix(tmp_path / "a.zarr").name
    assert open_matrix(tmp_path / "a.zarr").name != open_matrix(tmp_path / "a.zarr",
                                                                 block_nnz=10).name


def test_processes_scheduler_reads_in_tasks(tmp_path):
    A = _sparse(50, 400)
    write_matrix(A, tmp_path / "a.zarr", block_nnz=300)
    x = open_matrix(tmp_path / "a.zarr")
    with dask.config.set(scheduler="processes", num_workers=2):
        got = x.compute()
    np.testing.assert_array_equal(got.toarray(), A.toarray())


def test_iter_column_blocks_order_and_prefetch():
    A = _sparse(30, 200)
    x = open_matrix(A, block_nnz=60)
    for prefetch in (0, 1, 3):
        blocks = list(iter_column_blocks(x, prefetch=prefetch))
        assert len(blocks) == x.numblocks[1]
        np.testing.assert_array_equal(sp.hstack(blocks).toarray(), A.toarray())


# --------------------------------------------------------------------------- atomic writes


def _entries(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def test_atomic_path_success_and_failure(tmp_path):
    with atomic_path(tmp_path / "f.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".f.bin.tmp-")
        tmp.write_bytes(b"new")
    assert (tmp_path / "f.bin").read_bytes() == b"new"
    with pytest.raises(FileExistsError):
        with atomic_path(tmp_path / "f.bin"):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "f.bin", overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert (tmp_path / "f.bin").read_bytes() == b"new"  # old content intact
    assert _entries(tmp_path) == ["f.bin"]
    with atomic_path(tmp_path / "f.bin", overwrite=True) as tmp:  # replace a file
        tmp.write_bytes(b"newer")
    assert (tmp_path / "f.bin").read_bytes() == b"newer"
    assert _entries(tmp_path) == ["f.bin"]


def test_overwrite_directory_swaps(tmp_path):
    A, B = _sparse(seed=1), _sparse(seed=2)
    write_matrix(A, tmp_path / "a.zarr")
    write_matrix(B, tmp_path / "a.zarr", overwrite=True)
    np.testing.assert_array_equal(_dense(open_matrix(tmp_path / "a.zarr")), B.toarray())
    assert _entries(tmp_path) == ["a.zarr"]


@pytest.mark.parametrize("fmt", ["zarr", "h5ad"])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, fmt):
    A = _sparse(100, 2000)
    calls = {"n": 0}
    original = BlockStream.__iter__

    def failing_iter(self):
        for item in original(self):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("disk full (injected)")
            yield item

    monkeypatch.setattr(BlockStream, "__iter__", failing_iter)
    with pytest.raises(OSError, match="injected"):
        write_matrix(A, tmp_path / f"a.{fmt}", block_nnz=500)
    assert calls["n"] == 3  # it really was mid-write
    assert _entries(tmp_path) == []


def test_failure_mid_write_keeps_old_version(tmp_path, monkeypatch):
    A = _sparse(seed=1)
    write_matrix(A, tmp_path / "a.zarr")

    def boom(self, values):
        raise OSError("injected")

    monkeypatch.setattr(zarr_csc._ChunkAlignedAppender, "append", boom)
    with pytest.raises(OSError, match="injected"):
        write_matrix(_sparse(seed=2), tmp_path / "a.zarr", overwrite=True)
    monkeypatch.undo()
    assert _entries(tmp_path) == ["a.zarr"]
    np.testing.assert_array_equal(_dense(open_matrix(tmp_path / "a.zarr")), A.toarray())


def test_bad_input_rejected_before_anything_is_created(tmp_path):
    A = _sparse()
    cases = [
        (dict(path=tmp_path / "a.mtx"), ValueError, "format"),
        (dict(path=tmp_path / "a.zarr", format="mtx"), ValueError, "cannot be written"),
        (dict(path=tmp_path / "a.zarr", chunk_nnz=-1), ValueError, "chunk_nnz"),
        (dict(path=tmp_path / "a.zarr", frobnicate=1), TypeError, "valid options: .'chunk_nnz'"),
        (dict(path=tmp_path / "a.zarr", value_type="uint8"), TypeError, "value_type"),
        (dict(path=tmp_path / "a.spz", value_type="int7"), ValueError, "value_type"),
        (dict(path=tmp_path / "a.h5ad", compression="zip"), ValueError, "compression"),
        (dict(path=tmp_path / "a.zarr", col_meta=pd.DataFrame({"x": [1, 2]})), ValueError,
         "col_meta has 2 rows"),
        (dict(path=tmp_path / "no" / "a.zarr"), FileNotFoundError, "parent"),
    ]
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            write_matrix(A, **kw)
        assert _entries(tmp_path) == [], kw
    with pytest.raises(ValueError, match="block_nnz"):
        write_matrix(A, tmp_path / "a.zarr", block_nnz=-3)
    assert _entries(tmp_path) == []
    write_matrix(A, tmp_path / "a.zarr")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_matrix(A, tmp_path / "a.zarr")


def test_matrix_info_common_keys(tmp_path):
    A = _sparse()
    write_matrix(A, tmp_path / "a.zarr", block_nnz=400)
    write_matrix(A, tmp_path / "a.h5ad")
    scipy.io.mmwrite(tmp_path / "a.mtx", A)
    for p in ("a.zarr", "a.h5ad", "a.mtx"):
        info = matrix_info(tmp_path / p)
        for key in ("path", "format", "shape", "nnz", "dense", "value_type", "version",
                    "chunking", "row_meta_columns", "col_meta_columns"):
            assert key in info, (p, key)
        assert tuple(info["shape"]) == A.shape and info["nnz"] == A.nnz, p
