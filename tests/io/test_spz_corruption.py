"""Malformed StreamPress files must raise SpzFormatError (naming the file), never crash.

With ``verify_crc=True`` every changed byte is detected.  With ``verify_crc=False`` a changed
byte either raises :class:`SpzFormatError` or decodes to a *valid* matrix of the right shape
(sorted, in-range indices); a change in an unused/reserved field decodes exactly.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_factor.io.spz import SpzFile, SpzFormatError
from dask_factor.io.spz.codecs import decode_chunk
from dask_factor.io.spz.dense import decode_panel

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "spz"
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

pytestmark = pytest.mark.filterwarnings("ignore:.*row_sort=TRUE:UserWarning")

SMALL = ["tiny_int.default", "tiny_int.chunk2", "tiny_int.obsvar", "tiny_int.rowsort",
         "tiny_empty.default", "tiny_real.quant8", "tiny_dense.quant8",
         "tiny_dense.fp16_rans", "tiny_dense.raw.transpose.chunk2"]
OTHER = ["tiny_real.fp16", "tiny_real.default", "tiny_u32.default", "tiny_int.fp64",
         "tiny_dense.fp32_rans", "tiny_dense.raw.delta"]


def read_everything(path: Path, verify_crc: bool) -> dict:
    """Decode every part of a file; returns the pieces (raises on malformed input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = SpzFile(path, verify_crc=verify_crc)
    with f:
        out = {"all": f.read_all(), "obs": f.obs, "var": f.var, "shape": f.shape}
        for c in range(f.num_chunks):
            f.read_chunk(c, dtype=np.float32)
        if f.has_transpose:
            out["t"] = [f.read_transpose_chunk(c) for c in range(f.transpose_bounds.size - 1)]
            out["rows"] = f.read_rows(0, f.shape[0])
        f.info()
    return out


def check_valid(out: dict, shape: tuple[int, int]) -> None:
    """A structurally valid decode of the right shape (the row count of a matrix without
    entries and without a transpose is only protected by the CRC)."""
    a = out["all"]
    assert a.shape == out["shape"]
    assert a.shape == shape or (a.nnz == 0 and a.shape[1] == shape[1] and "t" not in out)
    if sp.issparse(a):
        assert a.indices.size == a.nnz and (a.nnz == 0 or a.indices.max() < shape[0])
        for j in range(a.shape[1]):
            idx = a.indices[a.indptr[j] : a.indptr[j + 1]]
            assert np.all(np.diff(idx) > 0)


def _same_matrix(a, b) -> bool:
    if sp.issparse(a):
        return (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.data, b.data, equal_nan=True))
    return np.array_equal(a, b, equal_nan=True)


def same(x: dict, y: dict) -> bool:
    """Decoded pieces of two files are identical (matrix, transpose, tables)."""
    if not _same_matrix(x["all"], y["all"]) or ("t" in x) != ("t" in y):
        return False
    if "t" in x and not all(_same_matrix(p, q) for p, q in zip(x["t"], y["t"])):
        return False
    for key in ("obs", "var"):
        if (x[key] is None) != (y[key] is None):
            return False
        if x[key] is not None and not x[key].equals(y[key]):
            return False
    return True


class Scratch:
    """A copy of a file patched in place with pwrite (much faster than rewriting it)."""

    def __init__(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.path, self.data = path, data
        self.fd = os.open(path, os.O_RDWR)

    def patch(self, off: int, b: bytes) -> None:
        os.pwrite(self.fd, b, off)

    def restore(self, off: int, n: int) -> None:
        os.pwrite(self.fd, self.data[off : off + n], off)

    def close(self) -> None:
        os.close(self.fd)


def fix_crc(data: bytearray) -> bytearray:
    struct.pack_into("<I", data, len(data) - 12, zlib.crc32(bytes(data[:-16])))
    return data


def reserved_positions(data: bytes) -> set[int]:
    """Byte positions of fields that no reader uses (header and descriptors)."""
    version = struct.unpack_from("<H", data, 4)[0]
    pos: set[int] = set(range(6, 8))
    if version == 2:
        for a, b in [(32, 40), (41, 42), (43, 48), (56, 64), (88, 92), (116, 128)]:
            pos.update(range(a, b))
        vt = data[40]
        nch, data_off = struct.unpack_from("<I", data, 28)[0], struct.unpack_from("<Q", data, 64)[0]
        t_off = struct.unpack_from("<Q", data, 72)[0]
        descs = [128 + 48 * c for c in range(nch)]
        if t_off:
            t = struct.unpack_from("<I", data, t_off)[0]
            descs += [t_off + 4 + 48 * c for c in range(t)]
        for d in descs:
            pos.update(range(d + 44, d + 48))
            if vt != 5:
                pos.update(range(d + 36, d + 44))
        assert data_off >= 128
    else:
        pos.update(range(38, 40))
        pos.update(range(82, 128))
        if data[80] != 0:
            nch = struct.unpack_from("<I", data, 28)[0]
            for c in range(nch):
                pos.update(range(128 + 40 * c + 8, 128 + 40 * c + 16))
    return pos


def _original(name: str) -> tuple[bytes, dict]:
    path = DATA / f"{name}.spz"
    return path.read_bytes(), read_everything(path, True)


def _error_names_file(err: SpzFormatError, path: Path) -> None:
    assert str(path) in str(err)


def _positions(data: bytes, count: int) -> list[int]:
    """Every header/index byte (first 224) and footer byte, plus an even sample of the rest."""
    stride = max(1, -(-(len(data) - 224) // count))
    return sorted(set(range(min(len(data), 224))) | set(range(224, len(data), stride))
                  | set(range(len(data) - 16, len(data))))


@pytest.mark.parametrize("name", ["tiny_int.default", "tiny_int.obsvar", "tiny_int.rowsort",
                                  "tiny_dense.quant8", "tiny_real.fp64"])
def test_byte_flips_detected_by_crc(tmp_path, name):
    data, _ = _original(name)
    f = Scratch(tmp_path / "x.spz", data)
    for i in range(len(data)) if name == "tiny_int.default" else _positions(data, 250):
        f.patch(i, bytes([data[i] ^ 0x5A]))
        with pytest.raises(SpzFormatError) as err:
            read_everything(f.path, True)
        _error_names_file(err.value, f.path)
        f.restore(i, 1)
    f.close()


@pytest.mark.parametrize("name", SMALL + OTHER)
def test_byte_flips_without_crc_raise_or_decode_validly(tmp_path, name):
    data, orig = _original(name)
    reserved = reserved_positions(data)
    f = Scratch(tmp_path / "x.spz", data)
    rng = np.random.default_rng(len(data))
    for i in _positions(data, 200):
        f.patch(i, bytes([data[i] ^ int(rng.integers(1, 256))]))
        try:
            out = read_everything(f.path, False)
        except SpzFormatError as err:
            assert i not in reserved, f"reserved byte {i} was rejected: {err}"
            _error_names_file(err, f.path)
        else:
            check_valid(out, orig["shape"])
            if i in reserved:
                assert same(out, orig), f"reserved byte {i} changed the decoded data"
        f.restore(i, 1)
    f.close()


@pytest.mark.parametrize("name", SMALL + OTHER)
def test_every_truncation_raises(tmp_path, name):
    data, _ = _original(name)
    p = tmp_path / "x.spz"
    for n in list(range(0, min(len(data), 300))) + list(range(300, len(data), 97)):
        p.write_bytes(data[:n])
        for crc in (True, False):
            with pytest.raises(SpzFormatError):
                read_everything(p, crc)
    p.write_bytes(data + b"\0")  # an extra byte moves the footer
    with pytest.raises(SpzFormatError):
        read_everything(p, False)


HEADER_FIELDS_V2 = [(8, 4), (12, 4), (16, 8), (24, 4), (28, 4), (40, 1), (42, 1), (48, 8),
                    (64, 8), (72, 8), (80, 8), (96, 8), (104, 8), (112, 4)]
DESC_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4), (32, 4)]
HEADER_FIELDS_V3 = [(8, 4), (12, 4), (16, 8), (24, 4), (28, 4), (32, 4), (36, 1), (37, 1),
                    (40, 8), (48, 8), (56, 8), (64, 8), (72, 8), (80, 1), (81, 1)]
VALUES = st.one_of(st.integers(0, 300), st.sampled_from([2**31 - 1, 2**32 - 1, 2**63]),
                   st.integers(0, 2**64 - 1))


@SETTINGS
@given(st.sampled_from(SMALL + OTHER), st.data())
def test_header_and_descriptor_mutations(tmp_path, name, draw):
    data, orig = _original(name)
    version = struct.unpack_from("<H", data, 4)[0]
    fields = list(HEADER_FIELDS_V2 if version == 2 else HEADER_FIELDS_V3)
    if version == 2:
        nch = struct.unpack_from("<I", data, 28)[0]
        fields += [(128 + 48 * c + o, s) for c in range(nch) for o, s in DESC_FIELDS]
    off, size = draw.draw(st.sampled_from(fields))
    value = draw.draw(VALUES) % (1 << (8 * size))
    bad = bytearray(data)
    bad[off : off + size] = value.to_bytes(size, "little")
    if bytes(bad) == data:
        return
    p = tmp_path / "x.spz"
    for crc in (False, True):
        p.write_bytes(fix_crc(bytearray(bad)) if crc else bad)
        try:
            out = read_everything(p, crc)
        except SpzFormatError as err:
            _error_names_file(err, p)
            continue
        check_valid(out, out["shape"])


@SETTINGS
@given(st.sampled_from(SMALL + OTHER), st.lists(st.tuples(st.integers(0, 10**6),
                                                          st.integers(1, 255)),
                                                min_size=1, max_size=6))
def test_random_multi_byte_damage(tmp_path, name, flips):
    data, orig = _original(name)
    bad = bytearray(data)
    for pos, mask in flips:
        bad[pos % len(bad)] ^= mask
    if bytes(bad) == data:
        return
    p = tmp_path / "x.spz"
    p.write_bytes(bad)
    with pytest.raises(SpzFormatError):
        read_everything(p, True)
    try:
        out = read_everything(p, False)
    except SpzFormatError:
        return
    check_valid(out, orig["shape"])


# ------------------------------------------------------------- targeted damage, messages
def _f32(x: float) -> bytes:
    return struct.pack("<f", np.float32(x))


def _patched(tmp_path: Path, name: str, patches: dict[int, bytes], crc: bool = True) -> Path:
    data = bytearray((DATA / f"{name}.spz").read_bytes())
    for off, b in patches.items():
        data[off : off + len(b)] = b
    p = tmp_path / f"{name}.patched.spz"
    p.write_bytes(fix_crc(data) if crc else data)
    return p


@pytest.mark.parametrize(
    ("name", "patches", "match"),
    [
        ("tiny_int.default", {0: b"SPRX"}, "bad magic"),
        ("tiny_int.default", {4: b"\x07\x00"}, "unsupported StreamPress version 7"),
        ("tiny_int.default", {0xBB: b"\x8a"}, "does not sum to 16384"),
        ("tiny_int.default", {0xB4: b"\x04"}, "column counts"),
        ("tiny_int.default", {0xB4: b"\x80\x80\x80\x80\x80"}, "varint overrun"),
        ("tiny_int.default", {0xC9: b"\x31"}, "rANS stream corrupt"),
        ("tiny_int.notranspose", {8: b"\x06", 92: _f32(13 / 30)}, "row index out of range"),
        ("tiny_int.default", {128 + 12: b"\x01"}, "value stream does not follow"),
        ("tiny_int.default", {128 + 24: b"\xff\x0f"}, "past the end of the section"),
        ("tiny_int.default", {28: b"\x02"}, "num_chunks"),
        ("tiny_int.default", {16: b"\x0e", 92: _f32(14 / 35)}, "add up to 13, header nnz is 14"),
        ("tiny_int.default", {8: b"\x08"}, "density"),
        ("tiny_int.default", {40: b"\x09"}, "unknown value_type"),
        ("tiny_int.default", {80: b"\x00\x00"}, "metadata"),
        ("tiny_int.obsvar", {2206: b"XXXX"}, None),
        ("tiny_dense.raw", {128 + 16: b"\x10"}, "byte_size"),
        ("tiny_dense.raw", {80: b"\x09"}, "unknown dense codec"),
        ("tiny_dense.fp16_rans", {0xAE: b"\x00\x10"}, "does not sum to 16384"),
        ("tiny_int.rowsort", {0x5CC: b"\x01"}, "permutation"),
    ],
)
def test_targeted_damage_messages(tmp_path, name, patches, match):
    p = _patched(tmp_path, name, patches)
    with pytest.raises(SpzFormatError, match=match) as err:
        read_everything(p, True)
    _error_names_file(err.value, p)


def test_crc_mismatch_message_and_skip(tmp_path):
    p = _patched(tmp_path, "tiny_real.fp64", {3000: b"\x00\x01"}, crc=False)
    with pytest.raises(SpzFormatError, match="CRC32 mismatch"):
        SpzFile(p)
    SpzFile(p, verify_crc=False).close()  # opening without the check works


def test_not_a_file_and_tiny_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        SpzFile(tmp_path / "missing.spz")
    for blob in [b"", b"SPRZ", b"SPRZ\x02\x00" + b"\0" * 100, b"PK\x03\x04" * 50]:
        (tmp_path / "t.spz").write_bytes(blob)
        with pytest.raises(SpzFormatError, match="t.spz"):
            SpzFile(tmp_path / "t.spz")


# ------------------------------------------------------------------ kernel-level fuzzing
@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 6), st.integers(0, 40),
       st.integers(0, 200), st.integers(1, 50), st.integers(0, 300), st.booleans())
def test_decode_chunk_never_crashes(buf, vtype, ncols, nnz, m, gap, sorted_rows):
    arr = np.frombuffer(buf, np.uint8)
    gap = min(gap, arr.size)
    indptr = np.empty(ncols + 1, np.int64)
    rows = np.empty(nnz, np.int32)
    vals = np.empty(nnz, np.float64)
    err = decode_chunk(arr, gap, arr.size - gap, ncols, nnz, m, vtype, 1.0, 0.0, sorted_rows,
                       indptr, rows, vals)
    assert err <= 0
    if err == 0 and nnz:
        assert rows.min() >= 0 and rows.max() < m


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.integers(0, 4), st.booleans(),
       st.integers(0, 12), st.integers(0, 12))
def test_decode_panel_never_crashes(buf, codec, delta, rows, cols):
    from dask_factor.io.spz.dense import panel_size_ok

    arr = np.frombuffer(buf, np.uint8)
    if not panel_size_ok(codec, rows, cols, 4, arr.size):
        return
    panel, err = decode_panel(arr, codec, delta, rows, cols, 3)
    assert err < 0 or panel.shape == (rows, cols)


@SETTINGS
@given(st.binary(min_size=4, max_size=64), st.integers(0, 100))
def test_rans_streams_with_valid_tables_never_crash(stream, count):
    from dask_factor.io.spz.rans import rans_decode

    freq = np.zeros(256, np.int64)
    freq[:4] = [8192, 4096, 4095, 1]
    out = np.empty(count, np.uint8)
    arr = np.frombuffer(stream, np.uint8)
    assert rans_decode(arr, 0, arr.size, freq, count, out) <= 0
