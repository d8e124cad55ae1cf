"""The zarr scan layout (``layout="scan"``): round trips against the written matrix, the value
types it picks, the previous layout's files (tests/data/io/*.csc_v1.zarr, checked against
their Matrix Market twins), and damaged or forged scan stores."""

from __future__ import annotations

import json
from pathlib import Path

import dask
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_factor import nmf
from dask_factor.engine.blocks import as_blocked
from dask_factor.io import MatrixFormatError, matrix_info, open_matrix, write_matrix
from dask_factor.io.zarr_csc import narrowest_values
from dask_factor.kernels.delta import delta_decode, delta_encode

DATA = Path(__file__).resolve().parents[1] / "data" / "io"


def _counts(m, n, density, top, seed=0, dtype=np.float32):
    A = sp.random(m, n, density=density, format="csc", random_state=seed, dtype=np.float64)
    A.data = np.floor(A.data * top) + 1
    return A.astype(dtype)


def _read(path) -> sp.csc_matrix:
    x = open_matrix(path).compute()
    assert sp.issparse(x)
    return sp.csc_matrix(x)


def _same(got, A):
    assert got.shape == A.shape and got.dtype == A.dtype
    A = sp.csc_matrix(A)
    np.testing.assert_array_equal(got.indptr, A.indptr)
    np.testing.assert_array_equal(got.indices, A.indices)
    np.testing.assert_array_equal(got.data, A.data)


@pytest.mark.parametrize(("top", "stored"), [(200, "uint8"), (60_000, "uint16"),
                                             (1e6, "float32")])
def test_scan_round_trip_and_value_type(tmp_path, top, stored):
    A = _counts(300, 700, 0.05, top)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=900)
    info = matrix_info(tmp_path / "a.zarr")
    assert info["stored_value_type"] == stored and info["value_type"] == "float32"
    assert info["encoding"].startswith("dask_factor_csc")
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert g["indices"].dtype == np.uint16 and g.attrs["dask_factor_format"] == 2
    _same(_read(tmp_path / "a.zarr"), A)


def test_scan_widens_values_mid_stream(tmp_path):
    """Small counts first, then larger ones, then fractions: the stored type widens twice and
    what was written before is rewritten exactly."""
    A = _counts(50, 600, 0.1, 100, seed=3, dtype=np.float64)
    A.data[A.indptr[200]:A.indptr[400]] *= 500  # beyond uint8
    A.data[A.indptr[500]:] += 0.25  # fractional
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=150, chunk_nnz=64)
    assert matrix_info(tmp_path / "a.zarr")["stored_value_type"] == "float64"
    _same(_read(tmp_path / "a.zarr"), A)


def test_scan_many_rows_uses_int32_differences(tmp_path):
    A = _counts(70_000, 40, 0.002, 9, seed=1)
    write_matrix(A, tmp_path / "a.zarr", layout="scan")
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["indices"].dtype == np.int32
    _same(_read(tmp_path / "a.zarr"), A)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 400), n=st.integers(1, 60), density=st.floats(0.0, 0.5),
       scale=st.sampled_from([1.0, 300.0, 70_000.0, -2.0, 0.37]),
       block_nnz=st.integers(1, 500), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_scan_round_trip_property(tmp_path_factory, m, n, density, scale, block_nnz, seed,
                                  dtype):
    """Any sparse matrix (empty columns, one row, signed or fractional values) reads back
    exactly from the scan layout, and equals what the csc layout gives."""
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=density, format="csc", random_state=seed, dtype=np.float64)
    A.data = np.round(A.data * scale) if rng.random() < 0.7 else A.data * scale
    A.data[A.data == 0] = 1.0
    A = A.astype(dtype)
    d = tmp_path_factory.mktemp("scan")
    write_matrix(A, d / "s.zarr", layout="scan", block_nnz=block_nnz)
    write_matrix(A, d / "c.zarr", block_nnz=block_nnz)
    got = _read(d / "s.zarr")
    _same(got, A)
    _same(got, _read(d / "c.zarr"))
    assert matrix_info(d / "s.zarr")["n_blocks"] == matrix_info(d / "c.zarr")["n_blocks"]


@pytest.mark.parametrize("name", ["tiny_int", "small_float"])
def test_previous_layout_files_read_back(tmp_path, name):
    """Stores written by the previous layout (dask_factor_format 1) read as their .mtx twin,
    and convert to the scan layout exactly."""
    old = DATA / f"{name}.csc_v1.zarr"
    assert zarr.open_group(str(old), mode="r").attrs["dask_factor_format"] == 1
    want = sp.csc_matrix(scipy.io.mmread(DATA / f"{name}.mtx"))
    got = _read(old)
    np.testing.assert_array_equal(got.toarray(), want.toarray().astype(got.dtype))
    write_matrix(old, tmp_path / "new.zarr", layout="scan")
    _same(_read(tmp_path / "new.zarr"), got)


def _cname(store: Path, name: str) -> str:
    meta = json.loads((store / name / "zarr.json").read_text())
    return next(c["configuration"]["cname"] for c in meta["codecs"] if c["name"] == "blosc")


@pytest.mark.parametrize("name", ["tiny_int", "small_float"])
def test_scan_stores_of_the_earlier_codecs_read_back(tmp_path, name):
    """Scan stores written before the counts were stored with lz4hc (every array blosc lz4,
    tests/data/io/*.scan_v2.zarr) read as their .mtx twin, decoded and as stored, and as the
    store this version writes from the same matrix."""
    old = DATA / f"{name}.scan_v2.zarr"
    assert _cname(old, "data") == "lz4" and _cname(old, "indices") == "lz4"
    want = sp.csc_matrix(scipy.io.mmread(DATA / f"{name}.mtx"))
    got = _read(old)
    np.testing.assert_array_equal(got.toarray(), want.toarray().astype(got.dtype))
    write_matrix(want, tmp_path / "new.zarr", layout="scan")
    counts = name == "tiny_int"  # uint8 counts: lz4hc now; float values keep lz4
    assert _cname(tmp_path / "new.zarr", "data") == ("lz4hc" if counts else "lz4")
    assert _cname(tmp_path / "new.zarr", "indices") == "lz4"
    _same(_read(tmp_path / "new.zarr"), got)
    if counts:  # as stored (the streamed fit's blocks) too
        for path in (old, tmp_path / "new.zarr"):
            bm = as_blocked(open_matrix(path, dtype="float32"))
            assert bm.delta_blocks is not None
            blocks = dask.compute(*bm.delta_blocks, scheduler="sync")
            joined = sp.hstack([b.tocsc() for b in blocks]).tocsc()
            np.testing.assert_array_equal(joined.toarray(), want.toarray().astype(np.float32))


def test_uint16_counts_are_stored_with_lz4hc_and_read_exactly(tmp_path):
    A = _counts(500, 300, 0.1, 3000, seed=4)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=2000)
    assert zarr.open_array(str(tmp_path / "a.zarr" / "data"), mode="r").dtype == np.uint16
    assert _cname(tmp_path / "a.zarr", "data") == "lz4hc"
    _same(_read(tmp_path / "a.zarr"), A)


def test_anndata_refuses_the_scan_layout(tmp_path):
    """Its indices are differences: anndata must not read them as row numbers."""
    from anndata.io import read_elem

    write_matrix(_counts(30, 40, 0.2, 5), tmp_path / "a.zarr", layout="scan")
    with pytest.raises(Exception, match="dask_factor_csc|encoding"):
        read_elem(zarr.open_group(str(tmp_path / "a.zarr"), mode="r"))


def test_bad_layout_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        write_matrix(_counts(5, 5, 0.5, 3), tmp_path / "a.zarr", layout="fast")
    assert not (tmp_path / "a.zarr").exists()


def _first_chunk(p: Path) -> Path:
    return sorted(f for f in (p / "c").rglob("*") if f.is_file())[0]


def test_damaged_scan_chunk_fails(tmp_path):
    write_matrix(_counts(100, 300, 0.1, 50), tmp_path / "a.zarr", layout="scan")
    for key in ("indices", "data"):
        f = _first_chunk(tmp_path / "a.zarr" / key)
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        f.write_bytes(bytes(raw))
        with pytest.raises(MatrixFormatError):
            open_matrix(tmp_path / "a.zarr").compute()
        raw[len(raw) // 2] ^= 0x40
        f.write_bytes(bytes(raw))
    open_matrix(tmp_path / "a.zarr").compute()  # undone: reads again


def _rewrite(path: Path, key: str, values: np.ndarray) -> None:
    """Replace an array of a store with ``values`` (same codecs), as a forger would."""
    g = zarr.open_group(str(path), mode="r+")
    arr = g[key]
    arr[:] = values.astype(arr.dtype)


def test_forged_differences_are_caught_before_a_kernel(tmp_path):
    A = _counts(100, 50, 0.2, 9)
    write_matrix(A, tmp_path / "a.zarr", layout="scan")
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    deltas = np.asarray(g["indices"][:]).copy()
    deltas[A.indptr[10] + 1] = 60_000  # a row far beyond m = 100
    _rewrite(tmp_path / "a.zarr", "indices", deltas)
    with pytest.raises(MatrixFormatError, match=r"row index .* outside \[0, 100\)"):
        open_matrix(tmp_path / "a.zarr").compute()


def test_forged_pointer_and_attributes(tmp_path):
    A = _counts(100, 50, 0.2, 9)
    write_matrix(A, tmp_path / "a.zarr", layout="scan")
    ip = A.indptr.astype(np.int64).copy()
    ip[20] = ip[21] + 5  # decreasing inside a block: checked before the differences are summed
    _rewrite(tmp_path / "a.zarr", "indptr", ip)
    with pytest.raises(MatrixFormatError, match="decreases"):
        open_matrix(tmp_path / "a.zarr").compute()
    meta = tmp_path / "a.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["index_coding"] = "rle"
    meta.write_text(json.dumps(doc))
    with pytest.raises(MatrixFormatError, match="index_coding='rle'"):
        open_matrix(tmp_path / "a.zarr")


def test_delta_kernels_against_numpy():
    A = _counts(500, 80, 0.1, 3, seed=4)
    out = np.empty(A.nnz, np.uint16)
    top = delta_encode(A.indptr.astype(np.int64), A.indices, out)
    want = np.diff(A.indices.astype(np.int64), prepend=0)
    starts = A.indptr[:-1][np.diff(A.indptr) > 0]
    want[starts] = A.indices[starts]
    np.testing.assert_array_equal(out, want)
    assert top == want.max()
    back = np.empty(A.nnz, np.int32)
    delta_decode(A.indptr.astype(np.int64), out, back)
    np.testing.assert_array_equal(back, A.indices)


def test_narrowest_values():
    assert narrowest_values(np.array([0.0, 255.0]), np.float32) == np.uint8
    assert narrowest_values(np.array([256.0]), np.float32) == np.uint16
    assert narrowest_values(np.array([65536.0]), np.float32) == np.float32
    assert narrowest_values(np.array([-1.0]), np.float64) == np.float64
    assert narrowest_values(np.array([np.nan]), np.float32) == np.float32
    assert narrowest_values(np.array([2.5]), np.float32) == np.float32


def test_streamed_scan_fit_equals_in_memory_fit(tmp_path):
    """Same seed, same column blocks: the fit streamed from the scan layout is the in-memory
    fit, bit for bit."""
    from dask_factor.datasets import simulate_counts

    simulate_counts(6_000, 200, 4, seed=2, path=tmp_path / "a.zarr", block_cols=512,
                    layout="scan")
    A = _read(tmp_path / "a.zarr")
    streamed = nmf(str(tmp_path / "a.zarr"), 4, seed=5, maxit=4, tol=0, cache="none")
    memory = nmf(A, 4, seed=5, maxit=4, tol=0, chunks=512)
    np.testing.assert_array_equal(streamed.W, memory.W)
    np.testing.assert_array_equal(streamed.H, memory.H)
    assert streamed.loss_history == memory.loss_history


# ------------------------------------------------------------------------------------------
# blocks read as stored (DeltaCSC) for the ALS kernels of streamed fits


def _reader(path):
    from dask_factor.io.blocks import reader_source

    X = open_matrix(path)
    src = reader_source(X)
    return X, src.reader, src.bounds


@pytest.mark.parametrize(("m", "top", "diffs", "values"),
                         [(300, 200, "uint16", "uint8"), (300, 60_000, "uint16", "uint16"),
                          (300, 1e6, "uint16", "float32"), (70_000, 50, "int32", "uint8")])
def test_blocks_as_stored_decode_to_the_blocks_read(tmp_path, m, top, diffs, values):
    A = _counts(m, 400, 3_000 / m / 10, top, seed=3)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=900)
    X, reader, bounds = _reader(tmp_path / "a.zarr")
    assert reader.delta_coded(np.float32) and reader.delta_coded(np.float64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        blk = reader.delta_block(int(a), int(b), np.float32)
        assert blk.deltas.dtype == diffs and blk.data.dtype == values
        assert blk.shape == (m, b - a) and blk.nnz == A[:, a:b].nnz
        _same(blk.tocsc(), A[:, a:b])
        _same(blk.tocsc(), reader(int(a), int(b)))


def test_values_that_do_not_convert_exactly_are_read_decoded(tmp_path):
    """float32 values are not served as stored to a float16 fit, nor float64 ones to float32:
    those blocks go through the decoding reader (which checks the cast)."""
    A = _counts(200, 300, 0.05, 1e6, dtype=np.float64)
    A.data += 0.25  # fractions: stored as the value dtype
    write_matrix(A, tmp_path / "a.zarr", layout="scan")
    _, reader, _ = _reader(tmp_path / "a.zarr")
    assert reader.delta_coded(np.float64) and not reader.delta_coded(np.float32)


def test_delta_blocks_refuse_what_a_kernel_must_not_see():
    from dask_factor.io.delta_csc import DeltaCSC

    ip = np.array([0, 2, 3])
    ok = DeltaCSC(ip, np.array([1, 2, 4], np.uint16), np.ones(3, np.uint8), (5, 2), np.float32,
                  where="A")
    assert ok.nnz == 3 and ok.nbytes == 3 * 8 + 3 * 2 + 3
    cases = [
        ((ip, np.array([1, 2, 5], np.uint16), np.ones(3, np.uint8)), r"column 7 reach row 5"),
        ((ip, np.array([3, -1, 0], np.int32), np.ones(3, np.uint8)), "a negative difference"),
        ((ip, np.array([1, 2, 0], np.int64), np.ones(3, np.uint8)), "row differences of type"),
        ((ip, np.array([1, 2, 0], np.uint16), np.ones(2, np.uint8)), "3 row differences but"),
        ((ip[:2], np.array([1, 2], np.uint16), np.ones(2, np.uint8)), "holds 2 entries"),
        ((np.array([0, 3, 2]), np.zeros(3, np.uint16), np.ones(3, np.uint8)), "decreases"),
        ((ip, np.zeros(3, np.uint16), np.ones(3, np.float64)), "do not convert exactly"),
        ((ip, np.zeros(3, np.uint16), np.ones(3, np.bool_)), "do not convert exactly"),
    ]
    for (indptr, deltas, data), message in cases:
        with pytest.raises(MatrixFormatError, match=message):
            DeltaCSC(indptr, deltas, data, (5, 2), np.float32, where="A", offset=6)


def test_forged_differences_stop_a_streamed_fit_before_a_kernel(tmp_path):
    """A difference that takes a column past the last row: the streamed ALS fit (which reads the
    blocks as stored) fails naming the column, before any product reads a row."""
    A = _counts(100, 50, 0.2, 9)
    write_matrix(A, tmp_path / "a.zarr", layout="scan")
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    deltas = np.asarray(g["indices"][:]).copy()
    deltas[A.indptr[10] + 1] = 60_000
    _rewrite(tmp_path / "a.zarr", "indices", deltas)
    with pytest.raises(MatrixFormatError, match=r"column 10 reach row \d+, outside \[0, 100\)"):
        dask.compute(as_blocked(open_matrix(tmp_path / "a.zarr")).delta_blocks)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_streamed_fits_read_the_blocks_as_stored(tmp_path, monkeypatch, dtype):
    """cache="none": every pass reads each block as stored (no decoded block is made), and the fit
    is the in-memory one to the bit; cache="memory" holds decoded blocks and reads none as
    stored."""
    from dask_factor.io import zarr_csc

    A = _counts(2_000, 900, 0.03, 400, seed=7)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=6_000)
    X = open_matrix(tmp_path / "a.zarr")
    n_blocks = len(X.chunks[1])
    calls = {"delta": 0, "decoded": 0}
    delta_block, read = zarr_csc.ZarrCSCReader.delta_block, zarr_csc.ZarrCSCReader._read

    def spy_delta(self, *a):
        calls["delta"] += 1
        return delta_block(self, *a)

    def spy_read(self, *a):
        calls["decoded"] += 1
        return read(self, *a)

    monkeypatch.setattr(zarr_csc.ZarrCSCReader, "delta_block", spy_delta)
    monkeypatch.setattr(zarr_csc.ZarrCSCReader, "_read", spy_read)
    streamed = nmf(X, 5, seed=2, maxit=4, tol=0, cache="none", dtype=dtype)
    assert calls["delta"] == 4 * n_blocks
    assert calls["decoded"] == n_blocks  # the validation pass only
    calls.update(delta=0, decoded=0)
    held = nmf(X, 5, seed=2, maxit=4, tol=0, cache="memory", dtype=dtype)
    assert calls == {"delta": 0, "decoded": n_blocks}
    np.testing.assert_array_equal(streamed.W, held.W)
    np.testing.assert_array_equal(streamed.H, held.H)
    assert streamed.loss_history == held.loss_history
