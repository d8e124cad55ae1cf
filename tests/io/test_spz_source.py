"""``.spz`` files as dask arrays (the glue in io/spz_source.py, not the codec)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

spz = pytest.importorskip("dask_factor.io.spz")

from dask_factor.io import matrix_info, open_matrix, read_metadata, write_matrix  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "io"
TINY_INT = [(1, 1, 1), (3, 1, 4), (7, 1, 2), (2, 2, 9), (4, 2, 1), (1, 4, 3), (2, 4, 5),
            (3, 4, 7), (6, 4, 8), (7, 4, 6), (4, 5, 2), (6, 5, 1), (7, 5, 255)]


def _tiny_int() -> np.ndarray:
    A = np.zeros((7, 5))
    for i, j, x in TINY_INT:
        A[i - 1, j - 1] = x
    return A


def _writer_available(tmp_path) -> bool:
    try:
        spz.write_spz(sp.csc_matrix(np.eye(2)), str(tmp_path / "probe.spz"))
    except NotImplementedError:
        return False
    os.remove(tmp_path / "probe.spz")
    return True


@pytest.mark.parametrize("block_nnz", [None, 1, 5, 100])
def test_fixture_equals_manifest(block_nnz):
    x = open_matrix(DATA / "tiny_int.chunk2.spz", block_nnz=block_nnz)
    assert isinstance(x._meta, sp.csc_matrix) and x.dtype == np.float32  # uint8 -> float32
    got = x.compute()
    assert got.has_sorted_indices
    np.testing.assert_array_equal(got.toarray(), _tiny_int())
    bounds = set(np.concatenate([[0], np.cumsum(x.chunks[1])]).tolist())
    assert bounds <= {0, 2, 4, 5}  # whole chunks of 2 columns, never split
    if block_nnz in (None, 100):  # runs of ~2 M entries by default: one block of 5 columns
        assert x.numblocks[1] == 1
    if block_nnz == 1:
        assert x.numblocks[1] == 3  # one chunk a block


def test_default_blocks_are_runs_of_whole_chunks(tmp_path):
    """Narrow chunks (RcppML writes 100 columns at 20,000 genes) are grouped into blocks of
    about ``block_nnz`` entries, never split, at least 8 of them (the engine's minimum, which
    it would otherwise make by slicing); ``block_nnz=1`` keeps one chunk a block, empty ones
    included."""
    A = sp.random(300, 30000, density=0.005, format="csc", random_state=3, dtype=np.float64)
    A.data = np.ceil(A.data * 20)  # counts: stored as integers
    A[:, 200:300] = 0  # an empty chunk
    A.eliminate_zeros()
    path = tmp_path / "narrow.spz"
    spz.write_spz(A, str(path), chunk_cols=100)
    chunks = set(range(0, 30001, 100))
    per_chunk = int(A.nnz / 300)
    for block_nnz, expect in [(None, 8), (1, 300), (10 * per_chunk, 30)]:
        x = open_matrix(path, block_nnz=block_nnz)
        bounds = np.concatenate([[0], np.cumsum(x.chunks[1])])
        assert set(bounds.tolist()) <= chunks  # whole chunks
        if block_nnz == 1:
            assert x.numblocks[1] == expect
        else:
            assert abs(x.numblocks[1] - expect) <= 1, (block_nnz, x.chunks[1])
        got = x.compute()
        np.testing.assert_array_equal(got.toarray(), A.toarray())
        assert got.has_sorted_indices and got.indices.dtype == np.int32


def test_dtype_option():
    x = open_matrix(DATA / "tiny_int.chunk2.spz", dtype=np.float64)
    assert x.dtype == np.float64 and x.compute().dtype == np.float64
    y = open_matrix(DATA / "tiny_int.chunk2.spz", dtype=np.int32)
    np.testing.assert_array_equal(y.compute().toarray(), _tiny_int().astype(np.int32))


def test_dense_v3():
    x = open_matrix(DATA / "tiny_dense.raw.transpose.chunk2.spz", block_nnz=1)
    ref = scipy.io.mmread(DATA / "tiny_dense.mtx")
    assert isinstance(x._meta, np.ndarray) and x.chunks == ((7,), (2, 2, 1))
    assert open_matrix(DATA / "tiny_dense.raw.transpose.chunk2.spz").chunks == ((7,), (5,))
    blk = x.blocks[0, 0].compute()
    assert blk.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x.compute(), ref, rtol=1e-7)
    assert matrix_info(DATA / "tiny_dense.raw.transpose.chunk2.spz")["dense"]


def test_metadata_orientation_obs_rows_var_cols():
    rows, cols = read_metadata(DATA / "tiny_int.obsvar.spz")
    assert len(rows) == 7 and len(cols) == 5  # RcppML: obs per row, var per column
    info = matrix_info(DATA / "tiny_int.obsvar.spz")
    assert info["row_meta_columns"] == [str(c) for c in rows.columns]
    assert info["col_meta_columns"] == [str(c) for c in cols.columns]


def test_only_header_read_on_client(monkeypatch):
    """Building the array decodes no chunk; with verify_crc the CRC pass is the only read."""
    calls = []

    def no_decode(self, *a, **k):
        calls.append(a)
        raise AssertionError("a chunk was read on the client")

    monkeypatch.setattr(spz.SpzFile, "read_columns", no_decode)
    monkeypatch.setattr(spz.SpzFile, "read_chunk", no_decode)
    monkeypatch.setattr(spz.SpzFile, "_chunk_bytes", no_decode)
    read = {"bytes": 0}
    real_pread = os.pread

    def counting_pread(fd, n, off):
        out = real_pread(fd, n, off)
        read["bytes"] += len(out)
        return out

    monkeypatch.setattr(os, "pread", counting_pread)
    path = DATA / "tiny_int.chunk2.spz"
    x = open_matrix(path, verify_crc=False, block_nnz=1)
    header_and_index = 128 + 48 * 3 + 4 + 48 * 4 + 16  # + transpose index, footer
    assert read["bytes"] <= header_and_index + 64, read
    assert x.numblocks == (1, 3) and not calls
    monkeypatch.undo()
    np.testing.assert_array_equal(x.compute().toarray(), _tiny_int())


def test_graph_small_and_picklable():
    x = open_matrix(DATA / "tiny_int.chunk2.spz", verify_crc=False, block_nnz=1)
    graph = dict(x.__dask_graph__())
    assert len(pickle.dumps(graph)) < 400 * len(graph)
    clone = pickle.loads(pickle.dumps(x))
    np.testing.assert_array_equal(clone.compute().toarray(), _tiny_int())


def test_corrupt_and_truncated_rejected_before_work(tmp_path):
    bad = tmp_path / "bad.spz"
    shutil.copy(DATA / "tiny_int.chunk2.spz", bad)
    os.chmod(bad, 0o644)
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the chunk data
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        open_matrix(bad)
    open_matrix(bad, verify_crc=False)  # opted out: the header is fine
    short = tmp_path / "short.spz"
    short.write_bytes(bytes(raw[:100]))
    with pytest.raises(ValueError):
        open_matrix(short, verify_crc=False)


def test_process_scheduler_reads_in_workers():
    import dask

    x = open_matrix(DATA / "tiny_int.chunk2.spz")
    with dask.config.set(scheduler="processes", num_workers=2):
        got = x.compute()
    np.testing.assert_array_equal(got.toarray(), _tiny_int())


def test_write_spz_round_trip(tmp_path):
    if not _writer_available(tmp_path):
        pytest.skip("the .spz writer is not implemented yet")
    A = sp.random(60, 700, density=0.05, format="csc", random_state=0)
    A.data = np.ceil(A.data * 300)
    rows = pd.DataFrame({"gene": [f"g{i}" for i in range(60)]})
    cols = pd.DataFrame({"batch": np.arange(700) % 3})
    write_matrix(A, tmp_path / "a.spz", block_nnz=200, row_meta=rows, col_meta=cols)
    for block_nnz in (None, 300, 10**6):
        x = open_matrix(tmp_path / "a.spz", block_nnz=block_nnz)
        np.testing.assert_array_equal(x.compute().toarray(), A.toarray())
    r, c = read_metadata(tmp_path / "a.spz")
    assert list(r["gene"]) == list(rows["gene"]) and len(c) == 700
    # .spz -> zarr -> .spz keeps the values
    write_matrix(tmp_path / "a.spz", tmp_path / "a.zarr")
    write_matrix(tmp_path / "a.zarr", tmp_path / "b.spz", value_type="uint16",
                 include_transpose=False)
    np.testing.assert_array_equal(open_matrix(tmp_path / "b.spz").compute().toarray(),
                                  A.toarray())
    D = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    write_matrix(D, tmp_path / "d.spz")
    np.testing.assert_array_equal(open_matrix(tmp_path / "d.spz").compute(), D)


def test_write_spz_failure_leaves_nothing(tmp_path, monkeypatch):
    from dask_factor.io import spz_source

    def half_then_fail(source, path, **kw):
        Path(path).write_bytes(b"SPRZ partial")
        raise OSError("injected")

    monkeypatch.setattr(spz, "write_spz", half_then_fail)
    assert spz_source._codec().write_spz is half_then_fail
    with pytest.raises(OSError, match="injected"):
        write_matrix(sp.random(5, 5, density=0.5, format="csc"), tmp_path / "a.spz")
    assert os.listdir(tmp_path) == []
