"""Legacy StreamPress v1 ("SparsePress", monolithic CSC) reading, per spec section 6.

v1 files are only produced by RcppML's deprecated in-memory ``sp_compress``; no exported R
function writes them.  They have no chunks, so every read decodes the whole matrix.  This
reader follows the spec's description (72-byte header, model / column counts / structure /
values sections, optional density and value prediction, CRC over bytes 72..EOF).  It was
written without RcppML-made v1 test vectors; every stream is fully bounds- and
consistency-checked, so a misread raises :class:`SpzFormatError` rather than guessing.
"""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import numpy as np
from numba import njit

from .codecs import decode_escape, decode_shuffle
from .errors import SpzFormatError
from .header import DESC_V2, Footer
from .layout import Layout, ReadFn, Section
from .rans import E_ROW_RANGE, E_TRAILING, E_VALUE_RANGE, E_VARINT, ERRORS, read_varint

__all__ = ["load_v1", "V1_HEADER"]

V1_HEADER = struct.Struct("<4sHHIIQIBHHBQIIIIII6s")
assert V1_HEADER.size == 72
_V1_TO_V2_TYPE = {0: 0, 1: 1, 2: 2, 3: 6}
_UMAX = (255, 65535, 4294967295)


@njit(nogil=True, cache=True, fastmath=False)
def _round_away(x):
    return np.floor(x + 0.5) if x >= 0 else -np.floor(-x + 0.5)


@njit(nogil=True, cache=True, fastmath=False)
def _unzigzag(u):
    return np.int64(u >> np.uint64(1)) ^ -np.int64(u & np.uint64(1))


@njit(nogil=True, cache=True, fastmath=False)
def _gaps_to_rows(syms, indptr, m, use_pred, dens, block_size, rows):
    """Structure symbols -> row indices (with optional density prediction)."""
    nb = dens.size
    for j in range(indptr.size - 1):
        cur = np.int64(0)
        for k in range(indptr[j], indptr[j + 1]):
            s = syms[k]
            if use_pred:
                if s > np.uint64(0xFFFFFFFF):
                    return E_VALUE_RANGE
                b = cur // block_size
                if b > nb - 1:
                    b = nb - 1
                d = np.float64(dens[b]) / 65535.0
                if d <= 0.0:
                    return E_VALUE_RANGE  # undefined prediction (zero density block)
                pred = np.int64(_round_away((1.0 - d) / d))
                g = _unzigzag(s) + pred
                if g < 0:
                    g = 0
            else:
                g = np.int64(s)
            r = cur + g
            if r >= m or r < cur:
                return E_ROW_RANGE
            rows[k] = r
            cur = r + 1
    return 0


@njit(nogil=True, cache=True, fastmath=False)
def _int_values(syms, indptr, rows, use_pred, rowmean, gcm_q, vmax, vals):
    for j in range(indptr.size - 1):
        col_nnz = indptr[j + 1] - indptr[j]
        for k in range(indptr[j], indptr[j + 1]):
            s = syms[k]
            if use_pred:
                if s > np.uint64(0xFFFFFFFF):
                    return E_VALUE_RANGE
                p = _round_away((rowmean[rows[k]] / 256.0) * (col_nnz / (gcm_q / 256.0)))
                pred = np.int64(p) if p > 1.0 else np.int64(1)
                v = _unzigzag(s) + pred
                if v < 0:
                    v = 0
            else:
                v = np.int64(s)
                if s > np.uint64(vmax):
                    return E_VALUE_RANGE
            if v > vmax:
                return E_VALUE_RANGE
            vals[k] = v
    return 0


@njit(nogil=True, cache=True, fastmath=False)
def _read_model(buf, pos, end, count, zig, out):
    """``count`` varints (zigzag-decoded and accumulated mod 2**16 when ``zig``)."""
    acc = np.int64(0)
    for i in range(count):
        v, pos, err = read_varint(buf, pos, end)
        if err:
            return pos, E_VARINT
        if zig:
            acc = (acc + _unzigzag(v)) & 0xFFFF
            out[i] = acc
        else:
            out[i] = np.int64(v)
    return pos, 0


def load_v1(read: ReadFn, size: int, path: str, *, verify_crc: bool = True) -> Layout:
    """Validate a v1 file and return a :class:`Layout` whose ``decode_all(dtype)`` decodes it.

    Examples
    --------
    >>> load_v1(lambda o, s: b"SPRZ\\x01\\x00", 6, "old.spz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_factor.io.spz.errors.SpzFormatError: old.spz: v1 file shorter than its 72-byte header ...
    """
    if size < 72:
        raise SpzFormatError(f"{path}: v1 file shorter than its 72-byte header ({size} bytes)")
    blob = read(0, size)
    if len(blob) != size:
        raise SpzFormatError(f"{path}: truncated v1 file")
    (magic, version, flags, m, n, nnz, _maxv, vt1, _rbs, _dblocks, _res, _seed, model_size,
     struct_size, values_size, cc_size, sk_size, crc, _zero) = V1_HEADER.unpack_from(blob, 0)
    if vt1 not in _V1_TO_V2_TYPE:
        raise SpzFormatError(f"{path}: v1 value_type code {vt1} unknown (0-3)")
    total = 72 + model_size + cc_size + sk_size + struct_size + values_size
    if total != size:
        raise SpzFormatError(f"{path}: v1 section sizes add up to {total} bytes, file has {size}")
    if verify_crc and zlib.crc32(blob[72:]) != crc:
        raise SpzFormatError(f"{path}: v1 CRC32 mismatch; the file is corrupted")
    if nnz > m * n:
        raise SpzFormatError(f"{path}: v1 header nnz {nnz} exceeds rows*cols")
    lay = Layout(1, SimpleNamespace(value_type=_V1_TO_V2_TYPE[vt1], codec=0, delta=0), m, n,
                 nnz, Section(np.zeros(1, DESC_V2), np.array([0, n], np.int64),
                              np.zeros(1, np.int64), np.zeros(1, np.int64), m, max(n, 1)),
                 None, Footer(0, crc, 1), size)
    lay.decode_all = lambda dt: _decode_v1(blob, path, flags, m, n, nnz, vt1, model_size,
                                           cc_size, sk_size, struct_size, values_size, dt)
    return lay


def _fail(path: str, what: str, err: int) -> SpzFormatError:
    return SpzFormatError(f"{path}: v1 {what}: {ERRORS.get(err, err)}")


def _decode_v1(blob, path, flags, m, n, nnz, vt1, model_size, cc_size, sk_size, struct_size,
               values_size, dt):
    buf = np.frombuffer(blob, np.uint8)
    pos = 72
    model_end = pos + model_size
    dens = np.zeros(1, np.int64)
    block_size = 1
    rowmean = np.zeros(0, np.int64)
    gcm_q = 0
    if flags & 1:
        hdr = np.zeros(2, np.int64)
        pos, err = _read_model(buf, pos, model_end, 2, False, hdr)
        if err:
            raise _fail(path, "density model", err)
        nb, block_size = int(hdr[0]), int(hdr[1])
        if nb < 1 or block_size < 1 or pos + 2 * nb > model_end:
            raise SpzFormatError(f"{path}: v1 density model is malformed")
        dens = np.frombuffer(blob, "<u2", nb, pos).astype(np.int64)
        pos += 2 * nb
    if flags & 2:
        hdr = np.zeros(2, np.int64)
        pos, err = _read_model(buf, pos, model_end, 2, False, hdr)
        if err or hdr[0] != m or hdr[1] == 0:
            raise SpzFormatError(f"{path}: v1 value model is malformed")
        gcm_q = int(hdr[1])
        rowmean = np.zeros(m, np.int64)
        pos, err = _read_model(buf, pos, model_end, m, True, rowmean)
        if err:
            raise _fail(path, "value model", err)
    if pos != model_end:
        raise SpzFormatError(f"{path}: v1 model section has {model_end - pos} unused bytes")
    counts = np.zeros(n, np.int64)
    pos, err = _read_model(buf, pos, pos + cc_size, n, False, counts)
    if err or pos != 72 + model_size + cc_size:
        raise SpzFormatError(f"{path}: v1 column counts are malformed")
    if int(counts.sum()) != nnz:
        raise SpzFormatError(f"{path}: v1 column counts add up to {int(counts.sum())}, "
                             f"header nnz is {nnz}")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    pos += sk_size
    s_end = pos + struct_size
    rows = np.empty(nnz, np.int32 if m <= 2**31 - 1 else np.int64)
    vals = np.empty(nnz, dt)
    if nnz:
        syms = np.empty(nnz, np.uint64)
        p, err = decode_escape(buf, pos, s_end, nnz, syms, False)
        if err or p != s_end:
            raise _fail(path, "structure", err or E_TRAILING)
        err = _gaps_to_rows(syms, indptr, m, bool(flags & 1), dens, block_size, rows)
        if err:
            raise _fail(path, "structure", err)
        v_end = s_end + values_size
        if vt1 == 3:
            raw = np.empty(nnz * 8, np.uint8)
            p, err = decode_shuffle(buf, s_end, v_end, nnz, 8, raw, False)
            if err or p != v_end:
                raise _fail(path, "values", err or E_TRAILING)
            bits = raw.view("<u8").copy()
            for j in range(n):  # undo the per-column XOR with the previous value
                a, b = int(indptr[j]), int(indptr[j + 1])
                if b - a > 1:
                    bits[a:b] = np.bitwise_xor.accumulate(bits[a:b])
            vals[:] = bits.view("<f8")
        else:
            syms = np.empty(nnz, np.uint64)
            p, err = decode_escape(buf, s_end, v_end, nnz, syms, False)
            if err or p != v_end:
                raise _fail(path, "values", err or E_TRAILING)
            tmp = np.empty(nnz, np.int64)
            err = _int_values(syms, indptr, rows, bool(flags & 2), rowmean.astype(np.float64),
                              float(gcm_q), _UMAX[vt1], tmp)
            if err:
                raise _fail(path, "values", err)
            vals[:] = tmp
    elif struct_size or values_size:
        raise SpzFormatError(f"{path}: v1 file without entries has non-empty streams")
    return indptr, rows, vals
