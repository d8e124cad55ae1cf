"""Reading 1-D zarr arrays from their chunk files (``dask_factor.io.zarr_chunks``): the same
entries as zarr's own read, every damage refused, unknown encodings left to zarr."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_factor.io import MatrixFormatError, open_matrix, write_matrix
from dask_factor.io.zarr_chunks import iter_decoded, plan_of, read_range

CODECS = {
    "blosc+crc": [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                  zarr.codecs.Crc32cCodec()],
    "blosc": [zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
    "zstd+checksum": [zarr.codecs.ZstdCodec(level=0, checksum=True)],
    "zstd+crc": [zarr.codecs.ZstdCodec(level=3), zarr.codecs.Crc32cCodec()],
    "none": [],
    "crc": [zarr.codecs.Crc32cCodec()],
}


def _array(root: Path, values: np.ndarray, chunk: int, codecs, name: str = "x",
           fill=0, all_written: bool = True):
    arr = zarr.create_array(str(root / name), shape=values.shape, chunks=(chunk,),
                            dtype=values.dtype, compressors=codecs, fill_value=fill,
                            config={"write_empty_chunks": all_written})
    arr[:] = values
    return zarr.open_array(str(root / name), mode="r")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 400), chunk=st.integers(1, 64),
       dtype=st.sampled_from(["uint8", "uint16", "int32", "int64", "float32", "float64"]),
       codec=st.sampled_from(sorted(CODECS)), data=st.data())
def test_ranges_equal_zarr(tmp_path_factory, size, chunk, dtype, codec, data):
    root = tmp_path_factory.mktemp("chunks")
    values = np.random.default_rng(size * chunk).integers(0, 200, size).astype(dtype)
    arr = _array(root, values, chunk, CODECS[codec])
    plan = plan_of(arr, all_written=True)
    assert plan is not None and plan.size == size and plan.chunk == chunk
    a = data.draw(st.integers(0, size))
    b = data.draw(st.integers(a, size))
    for keep in (False, True):
        got = read_range(plan, a, b, where="x", keep=keep)
        assert got.dtype == np.dtype(dtype) and got.flags.writeable
        np.testing.assert_array_equal(got, np.asarray(arr[a:b]))
    # decoded chunk by chunk: the pieces tile the range in order
    pieces = [(off, piece.copy()) for off, piece in iter_decoded(plan, a, b, where="x")]
    assert [off for off, _ in pieces] == list(np.cumsum([0] + [p.size for _, p in pieces])[:-1])
    joined = np.concatenate([p for _, p in pieces]) if pieces else np.empty(0, dtype)
    np.testing.assert_array_equal(joined, np.asarray(arr[a:b]))
    # converted as they are decoded, where every stored value converts exactly
    for to in ("float32", "float64", "int64"):
        if np.can_cast(np.dtype(dtype), np.dtype(to), "safe"):
            got = read_range(plan, a, b, where="x", dtype=to)
            assert got.dtype == np.dtype(to)
            np.testing.assert_array_equal(got, np.asarray(arr[a:b]).astype(to))
        else:
            with pytest.raises(TypeError, match="do not all convert exactly"):
                read_range(plan, a, b, where="x", dtype=to)


def test_keep_and_a_conversion_are_not_combined(tmp_path):
    plan = plan_of(_array(tmp_path, np.arange(10, dtype=np.uint16), 4, CODECS["none"]))
    with pytest.raises(ValueError, match="keep=True"):
        read_range(plan, 0, 5, where="x", keep=True, dtype="float32")


def test_a_generator_finished_in_another_thread(tmp_path):
    import threading

    plan = plan_of(_array(tmp_path, np.arange(100, dtype=np.uint16), 8, CODECS["none"]))
    gen = iter_decoded(plan, 3, 90, where="x")
    next(gen)
    err = []

    def close():
        try:
            gen.close()  # its finally runs here, where no scratch was ever taken
        except Exception as e:  # pragma: no cover - the failure this test guards against
            err.append(e)

    t = threading.Thread(target=close)
    t.start()
    t.join()
    assert not err


def test_interleaved_decodes_in_one_thread_do_not_share_a_buffer(tmp_path):
    values = np.arange(1000, dtype=np.uint16)
    plan = plan_of(_array(tmp_path, values, 64, CODECS["blosc+crc"]), all_written=True)
    one, two = iter_decoded(plan, 3, 900, where="x"), iter_decoded(plan, 100, 999, where="x")
    got_one, got_two = [], []
    for (o1, p1), (o2, p2) in zip(one, two):  # both pieces alive at once
        got_one.append((o1, p1.copy()))
        got_two.append((o2, p2.copy()))
    got_one += [(o, p.copy()) for o, p in one]
    got_two += [(o, p.copy()) for o, p in two]
    np.testing.assert_array_equal(np.concatenate([p for _, p in got_one]), values[3:900])
    np.testing.assert_array_equal(np.concatenate([p for _, p in got_two]), values[100:999])


def test_an_empty_range_reads_no_chunk(tmp_path):
    """An empty block's entries (start == stop inside a chunk) read nothing, even from a store
    whose chunk files are gone."""
    plan = plan_of(_array(tmp_path, np.arange(100, dtype=np.uint16), 8, CODECS["blosc+crc"]),
                   all_written=True)
    for f in (tmp_path / "x" / "c").iterdir():
        f.unlink()
    for keep, dtype in ((False, None), (True, None), (False, "float32")):
        got = read_range(plan, 5, 5, where="x", keep=keep, dtype=dtype)
        assert got.size == 0 and got.dtype == np.dtype(dtype or np.uint16)
    assert list(iter_decoded(plan, 5, 5, where="x")) == []


def test_outside_the_array_is_refused(tmp_path):
    plan = plan_of(_array(tmp_path, np.arange(10, dtype=np.int32), 4, CODECS["none"]))
    for a, b in ((-1, 3), (3, 11), (5, 4)):
        with pytest.raises(MatrixFormatError, match="outside the stored 10"):
            read_range(plan, a, b, where="x")


def test_unknown_encodings_get_no_plan(tmp_path):
    ok = np.arange(100, dtype=np.uint16)
    assert plan_of(zarr.create_array(str(tmp_path / "2d"), shape=(4, 4), dtype="f4")) is None
    big = zarr.create_array(str(tmp_path / "be"), shape=(100,), chunks=(10,), dtype=">u2",
                            serializer=zarr.codecs.BytesCodec(endian="big"))
    assert plan_of(big) is None
    gz = zarr.create_array(str(tmp_path / "gz"), shape=(100,), chunks=(10,), dtype="u2",
                           compressors=[zarr.codecs.GzipCodec()])
    assert plan_of(gz) is None
    sharded = zarr.create_array(str(tmp_path / "sh"), shape=(100,), chunks=(10,),
                                shards=(50,), dtype="u2")
    assert plan_of(sharded) is None
    v2 = zarr.create_array(str(tmp_path / "v2"), shape=(100,), chunks=(10,), dtype="u2",
                           zarr_format=2)
    assert plan_of(v2) is None
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=(100,), chunks=(10,), dtype="u2")
    mem[:] = ok
    assert plan_of(mem) is None
    assert plan_of(_array(tmp_path, ok, 10, CODECS["blosc+crc"])) is not None


def _chunk_file(plan, c: int) -> Path:
    return Path(plan.chunk_path(c))


@pytest.mark.parametrize("codec", ["blosc+crc", "blosc", "zstd+checksum", "zstd+crc", "none"])
def test_damage_is_refused(tmp_path, codec):
    values = np.arange(1000, dtype=np.uint16) % 97
    plan = plan_of(_array(tmp_path, values, 100, CODECS[codec]), all_written=True)
    f = _chunk_file(plan, 3)
    good = f.read_bytes()
    # a flipped byte: CRC, blosc's or zstd's own checks, or a size that no longer matches
    if codec in ("blosc+crc", "zstd+checksum", "zstd+crc"):
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x20
        f.write_bytes(bytes(bad))
        for dtype in (None, "float32"):  # in place, and chunk by chunk (iter_decoded)
            with pytest.raises(MatrixFormatError, match="chunk 3"):
                read_range(plan, 250, 450, where="x", dtype=dtype)
    # truncated
    f.write_bytes(good[: len(good) // 2])
    for dtype in (None, "float32"):
        with pytest.raises(MatrixFormatError, match="chunk 3"):
            read_range(plan, 250, 450, where="x", dtype=dtype)
    # another chunk size (the chunk of an array with 50-entry chunks)
    other = plan_of(_array(tmp_path, values[:50], 50, CODECS[codec], name="y"))
    f.write_bytes(_chunk_file(other, 0).read_bytes())
    for dtype in (None, "float32"):
        with pytest.raises(MatrixFormatError, match="chunk 3"):
            read_range(plan, 250, 450, where="x", dtype=dtype)
    # missing
    f.unlink()
    for keep, dtype in ((False, None), (True, None), (False, "float32")):
        with pytest.raises(MatrixFormatError, match="chunk 3 .* is missing"):
            read_range(plan, 250, 450, where="x", keep=keep, dtype=dtype)
    f.write_bytes(good)
    np.testing.assert_array_equal(read_range(plan, 250, 450, where="x"), values[250:450])


@pytest.mark.parametrize("fill", [0, 7])
def test_unwritten_chunks_read_as_the_fill_value(tmp_path, fill):
    """A store not written whole (zarr skips chunks equal to the fill value) reads as zarr."""
    values = np.full(100, fill, dtype=np.int32)
    values[35] = 3
    arr = _array(tmp_path, values, 10, CODECS["blosc+crc"], fill=fill, all_written=False)
    assert len(list((tmp_path / "x" / "c").iterdir())) == 1
    plan = plan_of(arr)
    assert plan.fill == fill
    for keep in (False, True):
        np.testing.assert_array_equal(read_range(plan, 5, 95, where="x", keep=keep),
                                      values[5:95])
    with pytest.raises(MatrixFormatError, match="missing from a store written whole"):
        read_range(plan_of(arr, all_written=True), 5, 95, where="x")


@pytest.mark.parametrize("keep", [True, False])
def test_kept_chunks_follow_their_files(tmp_path, keep):
    """Kept chunks (a pointer's, ``keep=True``; an edge, otherwise) are decoded again once their
    file changes."""
    values = np.arange(1000, dtype=np.int64)
    arr = _array(tmp_path, values, 500, CODECS["blosc+crc"])
    plan = plan_of(arr)
    np.testing.assert_array_equal(read_range(plan, 10, 20, where="x", keep=keep), values[10:20])
    writable = zarr.open_array(str(tmp_path / "x"), mode="r+")
    writable[:500] = values[:500] + 7  # the chunk file is rewritten
    st = os.stat(plan.chunk_path(0))
    os.utime(plan.chunk_path(0), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(read_range(plan, 10, 20, where="x", keep=keep),
                                  values[10:20] + 7)
    pieces = [p.copy() for _, p in iter_decoded(plan, 10, 20, where="x")]
    np.testing.assert_array_equal(np.concatenate(pieces), values[10:20] + 7)


@pytest.mark.parametrize("dtype", [None, "float64"])
def test_neighbouring_ranges_decode_each_chunk_once(tmp_path, monkeypatch, dtype):
    """Consecutive blocks share their edge chunks: each chunk is decompressed once for the
    whole run of reads (in place, and chunk by chunk with a conversion), however the ranges
    cut the chunks."""
    from dask_factor.io import zarr_chunks

    values = (np.arange(10_000) % 251).astype(np.uint16)
    plan = plan_of(_array(tmp_path, values, 128, CODECS["blosc+crc"]), all_written=True)
    decodes: list[int] = []
    real = zarr_chunks._decode_into
    monkeypatch.setattr(zarr_chunks, "_decode_into",
                        lambda plan, body, out, c, where: (decodes.append(c),
                                                           real(plan, body, out, c, where)))
    cuts = [0, 300, 301, 1000, 1024, 5000, 5130, 10_000]
    for a, b in zip(cuts, cuts[1:]):
        got = read_range(plan, a, b, where="x", dtype=dtype)
        np.testing.assert_array_equal(got, values[a:b].astype(dtype or np.uint16))
    assert sorted(decodes) == list(range(-(-10_000 // 128)))  # every chunk, once


@pytest.mark.parametrize("layout", ["csc", "scan"])
def test_matrix_reads_through_plans_equal_zarr(tmp_path, layout, monkeypatch):
    A = sp.random(300, 900, density=0.05, format="csc", random_state=3, dtype=np.float64)
    A.data = np.floor(A.data * 300) + 1
    A = A.astype(np.float32)
    write_matrix(A, tmp_path / "a.zarr", layout=layout, block_nnz=2000)
    fast = sp.csc_matrix(open_matrix(tmp_path / "a.zarr").compute())
    monkeypatch.setattr("dask_factor.io.zarr_csc.plan_of", lambda arr, **kw: None)
    slow = sp.csc_matrix(open_matrix(tmp_path / "a.zarr").compute())
    for got in (fast, slow):
        np.testing.assert_array_equal(got.indptr, A.indptr)
        np.testing.assert_array_equal(got.indices, A.indices)
        np.testing.assert_array_equal(got.data, A.data)
        assert got.dtype == A.dtype


def test_new_stores_chunk_the_pointer_by_blocks(tmp_path):
    A = sp.random(50, 20_000, density=0.02, format="csc", random_state=0, dtype=np.float32)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=400)
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    bounds = np.asarray(g.attrs["block_bounds"])
    assert g["indptr"].chunks[0] == max(4096, 2 * int(20_000 / (bounds.size - 1)))
    assert g["indptr"].chunks[0] < 20_001


def test_plans_name_absolute_paths(tmp_path, monkeypatch):
    """A store opened by a relative path still reads after the working directory changes (as
    on a worker started elsewhere)."""
    A = sp.random(50, 300, density=0.1, format="csc", random_state=1, dtype=np.float32)
    write_matrix(A, tmp_path / "a.zarr", layout="scan", block_nnz=300)
    monkeypatch.chdir(tmp_path)
    x = open_matrix("a.zarr")
    plan = plan_of(zarr.open_group("a.zarr", mode="r")["indices"])
    assert Path(plan.root).is_absolute()
    monkeypatch.chdir(tmp_path.parent)
    np.testing.assert_array_equal(sp.csc_matrix(x.compute()).toarray(), A.toarray())
