"""Stream codecs of sparse (v2) chunks: escape-rANS blocks, byte-shuffle blocks, gap streams,
value streams of every value type, and RcppML's float16 / quant8 conversions.

Decoding happens in one numba call per chunk (:func:`decode_chunk`), encoding in a few calls
per chunk (:func:`encode_chunk`).  Kernels return negative error codes from
:data:`dask_factor.io.spz.rans.ERRORS` and never read or write out of bounds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rans import (
    E_CAPACITY,
    E_COLCOUNT,
    E_ESCAPE,
    E_ESCAPE_VALUE,
    E_HALF,
    E_LANES,
    E_QUANT,
    E_ROW_ORDER,
    E_ROW_RANGE,
    E_TABLE_LEN,
    E_TRAILING,
    E_TRUNCATED,
    E_VALUE_RANGE,
    E_VARINT,
    E_VARINT_FORM,
    check_table,
    encode_stream,
    rans_capacity_ok,
    rans_decode,
    rans_decode_pair,
    read_freq_table,
    read_u32,
    read_varint,
    write_varint,
)

__all__ = [
    "decode_chunk",
    "half_possible",
    "quant8_possible",
    "sort_within_columns",
    "first_invalid",
    "scan_values",
    "encode_chunk",
    "half_bits_to_f64",
    "f32_to_half_bits",
    "quantize8_v2",
    "UINT_MAX",
]

#: largest value of the uint value types (codes 0, 1, 2)
UINT_MAX = {0: 255, 1: 65535, 2: 4294967295}
WIDTH = (1, 2, 4, 4, 2, 1, 8)
_U32 = np.uint64(0xFFFFFFFF)
# non-literal constants: passing Python literals to inner njit calls would compile extra
# literal-specialised copies of the callees (slower cold start)
I0 = np.int64(0)
I256 = np.int64(256)
YES = np.bool_(True)
NO = np.bool_(False)
_F32_TINY = np.float32(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------- decoding


@njit(nogil=True, cache=True, fastmath=False)
def varint_minimal(buf, start, stop):
    """Whether the varint in ``buf[start:stop]`` is in its shortest form (no zero top group)."""
    return stop - start == 1 or buf[stop - 1] != 0


@njit(nogil=True, cache=True, fastmath=False)
def escape_symbols_header(buf, pos, end, count, freq):
    """The head of an escape-rANS block: its table into ``freq`` (length 256), then the length
    of its rANS bytes, checked against ``end`` and against what ``count`` symbols need
    (:func:`rans_capacity_ok`, before anything is allocated for them).  Returns ``(nsym,
    enc_start, enc_end, err)``.

    >>> out = np.zeros(4096, np.uint8)  # room for a 256-symbol table
    >>> end = encode_escape(np.array([1, 2, 300], np.uint64), out, 0)
    >>> nsym, a, b, err = escape_symbols_header(out, 0, end, 3, np.empty(256, np.int64))
    >>> int(nsym), int(err)
    (256, 0)
    """
    nsym, pos, err = read_freq_table(buf, pos, end, freq)
    if err:
        return 0, pos, pos, err
    enc_len, pos, err = read_u32(buf, pos, end)
    if err:
        return 0, pos, pos, err
    if pos + enc_len > end:
        return 0, pos, pos, E_TRUNCATED
    if not rans_capacity_ok(freq, count, enc_len):
        return 0, pos, pos, E_CAPACITY
    return nsym, pos, pos + enc_len, 0


@njit(nogil=True, cache=True, fastmath=False)
def escape_overflow_list(buf, pos, end, nsym, strict):
    """The tail of an escape-rANS block at ``pos`` (after its rANS bytes): ``(ov_start, ov_end,
    err)`` of its overflow list, which must fit before ``end`` and, with ``strict`` (v2), be
    non-empty exactly when the table has an escape symbol (``nsym == 256``)."""
    ov_len, pos, err = read_u32(buf, pos, end)
    if err:
        return pos, pos, err
    if pos + ov_len > end:
        return pos, pos, E_TRUNCATED
    if strict and (ov_len > 0) != (nsym == 256):
        return pos, pos, E_ESCAPE
    return pos, pos + ov_len, 0


@njit(nogil=True, cache=True, fastmath=False)
def decode_escape(buf, pos, end, count, out, strict):
    """Escape-rANS block -> ``out[:count]`` (uint64).  Returns ``(new_pos, err)``.

    ``strict`` (v2) adds what the v2 writer guarantees: the table covers exactly the symbols
    seen (:func:`check_table`), symbol 255 (an escape) occurs iff the overflow list is
    non-empty, and every escaped value is >= 255 in shortest varint form.  v1 files allow a
    literal 255 without an overflow list, so legacy reads pass False.
    """
    freq = np.empty(256, np.int64)
    nsym, pos, enc_end, err = escape_symbols_header(buf, pos, end, count, freq)
    if err:
        return pos, err
    syms = np.empty(count, np.uint8)
    err = rans_decode(buf, pos, enc_end, freq, count, syms)
    if err:
        return pos, err
    if strict:
        err = check_table(freq, nsym, syms, count, I0)
        if err:
            return pos, err
    pos, ov_end, err = escape_overflow_list(buf, enc_end, end, nsym, strict)
    if err:
        return pos, err
    ov_len = ov_end - pos
    if ov_len > 0:
        for i in range(count):
            s = syms[i]
            if s == 255:
                start = pos
                v, pos, err = read_varint(buf, pos, ov_end)
                if err:
                    return pos, E_ESCAPE
                if strict:
                    if v < np.uint64(255):
                        return pos, E_ESCAPE_VALUE
                    if not varint_minimal(buf, start, pos):
                        return pos, E_VARINT_FORM
                out[i] = v
            else:
                out[i] = s
        if pos != ov_end:
            return pos, E_ESCAPE
    else:
        for i in range(count):
            out[i] = syms[i]
    return pos, 0


@njit(nogil=True, cache=True, fastmath=False)
def decode_shuffle(buf, pos, end, count, width, out_bytes, strict):
    """Byte-shuffle block -> ``out_bytes`` (count*width, value-major).  Returns (pos, err).

    ``strict``: every lane's table spans 256 symbols and is the writer's (:func:`check_table`).
    """
    if pos + 1 > end:
        return pos, E_TRUNCATED
    lanes = np.int64(buf[pos])
    pos += 1
    if lanes != width:
        return pos, E_LANES
    freq = np.empty(256, np.int64)
    syms = np.empty(count, np.uint8)
    for lane in range(width):
        tl, pos, err = read_u32(buf, pos, end)
        if err:
            return pos, err
        nsym, pos, err = read_freq_table(buf, pos, end, freq)
        if err:
            return pos, err
        if tl != 2 + 2 * nsym:
            return pos, E_TABLE_LEN
        enc_len, pos, err = read_u32(buf, pos, end)
        if err:
            return pos, err
        if pos + enc_len > end:
            return pos, E_TRUNCATED
        err = rans_decode(buf, pos, pos + enc_len, freq, count, syms)
        if err:
            return pos, err
        if strict:
            err = check_table(freq, nsym, syms, count, I256)
            if err:
                return pos, err
        pos += enc_len
        for i in range(count):
            out_bytes[i * width + lane] = syms[i]
    return pos, 0


@njit(nogil=True, cache=True, fastmath=False)
def half_bits_to_f64(h):
    """IEEE-754 half bit pattern (int) -> float64 (exact, subnormals included)."""
    sign = (h >> 15) & 1
    e = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if e == 0:
        v = np.float64(mant) * 5.9604644775390625e-08  # 2**-24
    elif e == 31:
        v = np.inf if mant == 0 else np.nan
    else:
        v = np.float64(1024 + mant) * math.ldexp(1.0, e - 25)
    return -v if sign else v


@njit(nogil=True, cache=True, fastmath=False)
def half_possible(h):
    """Whether RcppML's float->half converter can produce the half ``h``: never NaN (NaN
    becomes Inf) and never subnormal (flushed to zero)."""
    e = (h >> 10) & 0x1F
    mant = h & 0x3FF
    return mant == 0 or (e != 0 and e != 31)


@njit(nogil=True, cache=True, fastmath=False)
def quant8_possible(sc, off, q, nnz):
    """Whether a v2 quant8 chunk can come from the writer (spec 3.5): offset = the chunk's
    minimum (code 0), scale = f32(max - min) / 255 (code 255 for the maximum), or 1.0 with every
    code 0 when all values are equal; both finite.  A subnormal (or zero) scale rounds too much
    for the code of the maximum to be known."""
    if not (np.isfinite(sc) and sc >= 0 and np.isfinite(off)):
        return False
    if sc < _F32_TINY:
        return True
    qmin = np.uint8(255)
    qmax = np.uint8(0)
    for k in range(nnz):
        qmin = min(qmin, q[k])
        qmax = max(qmax, q[k])
    return qmin == 0 and (qmax == 255 or (qmax == 0 and sc == np.float32(1.0)))


@njit(nogil=True, cache=True, fastmath=False)
def _escape_header(buf, pos, end, count, freq):
    """An escape-rANS block's positions before its symbols are decoded: ``(nsym, enc_start,
    enc_end, ov_start, ov_end)``, or ``nsym = 0`` when something is wrong (the caller's
    one-by-one path names it): :func:`escape_symbols_header` then
    :func:`escape_overflow_list`, as :func:`decode_escape` reads them."""
    nsym, enc_start, enc_end, err = escape_symbols_header(buf, pos, end, count, freq)
    if err:
        return 0, 0, 0, 0, 0
    ov_start, ov_end, err = escape_overflow_list(buf, enc_end, end, nsym, YES)
    if err:
        return 0, 0, 0, 0, 0
    return nsym, enc_start, enc_end, ov_start, ov_end


@njit(nogil=True, cache=True, fastmath=False)
def _fast_int_streams(buf, pos, gend, vend, num_cols, nnz, m, vtype, sorted_rows, indptr,
                      rows, vals):
    """The gap and value streams of a chunk with integer values (types 0, 1, 2) in one pass.

    The common case of :func:`decode_chunk` (``indptr`` already filled, ``pos`` at the gap
    block): both escape-rANS blocks are decoded side by side (:func:`rans_decode_pair`), then
    each entry's row (its gap, or the escaped one from the overflow list) and value are
    checked and stored in one loop, with no per-entry temporaries beyond the two symbol
    arrays.  It accepts exactly what the one-by-one path accepts and gives the same output;
    on anything wrong it returns False (``rows``/``vals`` partly written) and the caller's
    one-by-one path finds and names the error.
    """
    fg = np.empty(256, np.int64)
    fv = np.empty(256, np.int64)
    ng, g0, g1, og, og_end = _escape_header(buf, pos, gend, nnz, fg)
    if ng == 0 or og_end != gend:
        return False
    nv, v0, v1, ov, ov_end = _escape_header(buf, gend, vend, nnz, fv)
    if nv == 0 or ov_end != vend:
        return False
    sg = np.empty(nnz, np.uint8)
    sv = np.empty(nnz, np.uint8)
    if rans_decode_pair(buf, g0, g1, fg, v0, v1, fv, nnz, sg, sv):
        return False
    if check_table(fg, ng, sg, nnz, I0) or check_table(fv, nv, sv, nnz, I0):
        return False
    vmax = np.uint64(255) if vtype == 0 else (
        np.uint64(65535) if vtype == 1 else np.uint64(4294967295))
    u255 = np.uint64(255)
    # the escape reads of gaps and values are written out twice on purpose: a shared helper
    # returning (value, position, ok) made this loop 3.4x slower (1.0 -> 3.5 ms a chunk)
    for j in range(num_cols):
        prev = np.uint64(0)
        for k in range(indptr[j], indptr[j + 1]):
            g = np.uint64(sg[k])
            if g == u255:  # an escaped gap: the next varint of the overflow list
                start = og
                g, og, err = read_varint(buf, og, og_end)
                if err or g < u255 or not varint_minimal(buf, start, og):
                    return False
            if g > _U32:
                return False
            r = (prev + g) & _U32
            if r >= np.uint64(m) or (sorted_rows and r < prev):
                return False
            rows[k] = r
            prev = (r + np.uint64(1)) & _U32
            v = np.uint64(sv[k])
            if v == u255:
                start = ov
                v, ov, err = read_varint(buf, ov, ov_end)
                if err or v < u255 or not varint_minimal(buf, start, ov):
                    return False
            if v > vmax:
                return False
            vals[k] = v
    return og == og_end and ov == ov_end


@njit(nogil=True, cache=True, fastmath=False)
def decode_chunk(buf, gap_size, value_size, num_cols, nnz, m, vtype, qscale, qoffset,
                 sorted_rows, indptr, rows, vals, fast=True):
    """Decode one chunk (gap stream then value stream, adjacent in ``buf``).

    Fills ``indptr[:num_cols+1]`` (local, from 0), ``rows[:nnz]`` and ``vals[:nnz]``.
    With ``sorted_rows`` the rows must strictly increase within each column (every file
    except row-sorted ones); rows always have to be ``< m``.  Returns 0 or an error code.

    Integer values (types 0, 1, 2) take :func:`_fast_int_streams` first (both streams decoded
    side by side, 1.6x the speed of decoding them in turn); anything it does not accept is
    decoded again one stream after the other, which finds and names the first error.
    ``fast=False`` skips the fast path (tests compare the two).
    """
    gend = gap_size
    vend = gap_size + value_size
    if vend > buf.size:
        return E_TRUNCATED
    # ---- structure
    cc_len, pos, err = read_u32(buf, I0, gend)
    if err:
        return err
    cc_end = pos + cc_len
    if cc_end > gend:
        return E_TRUNCATED
    total = 0
    indptr[0] = 0
    if cc_len == 0 and nnz == 0:
        # an empty chunk is stored as just ``cc_len = 0`` (no per-column counts)
        for j in range(num_cols):
            indptr[j + 1] = 0
        return 0 if (gap_size == 4 and value_size == 0) else E_TRAILING
    for j in range(num_cols):
        start = pos
        c, pos, err = read_varint(buf, pos, cc_end)
        if err:
            return E_VARINT
        if not varint_minimal(buf, start, pos):
            return E_VARINT_FORM
        if c > np.uint64(nnz):
            return E_COLCOUNT
        total += np.int64(c)
        if total > nnz:
            return E_COLCOUNT
        indptr[j + 1] = total
    if pos != cc_end:
        return E_TRAILING
    if total != nnz:
        return E_COLCOUNT
    if fast and vtype <= 2 and nnz > 0 and pos < gend and _fast_int_streams(
            buf, pos, gend, vend, num_cols, nnz, m, vtype, sorted_rows, indptr, rows, vals):
        return 0
    # the one-by-one decoding: every error found in the order of the streams
    if nnz > 0:
        gaps = np.empty(nnz, np.uint64)
        pos, err = decode_escape(buf, pos, gend, nnz, gaps, YES)
        if err:
            return err
        for j in range(num_cols):
            prev = np.uint64(0)
            for k in range(indptr[j], indptr[j + 1]):
                g = gaps[k]
                if g > _U32:
                    return E_ROW_RANGE
                r = (prev + g) & _U32
                if r >= np.uint64(m):
                    return E_ROW_RANGE
                if sorted_rows and r < prev:
                    return E_ROW_ORDER
                rows[k] = r
                prev = (r + np.uint64(1)) & _U32
    if pos != gend:
        return E_TRAILING
    # ---- values
    pos = gend
    if nnz == 0:
        return 0 if value_size == 0 else E_TRAILING
    if vtype <= 2:
        iv = np.empty(nnz, np.uint64)
        pos, err = decode_escape(buf, pos, vend, nnz, iv, YES)
        if err:
            return err
        vmax = np.uint64(255) if vtype == 0 else (
            np.uint64(65535) if vtype == 1 else np.uint64(4294967295))
        for k in range(nnz):
            if iv[k] > vmax:
                return E_VALUE_RANGE
            vals[k] = iv[k]
    elif vtype == 5:
        freq = np.empty(256, np.int64)
        nsym, pos, err = read_freq_table(buf, pos, vend, freq)
        if err:
            return err
        enc_len, pos, err = read_u32(buf, pos, vend)
        if err:
            return err
        if pos + enc_len > vend:
            return E_TRUNCATED
        q = np.empty(nnz, np.uint8)
        err = rans_decode(buf, pos, pos + enc_len, freq, nnz, q)
        if err:
            return err
        err = check_table(freq, nsym, q, nnz, I256)
        if err:
            return err
        pos += enc_len
        sc = np.float32(qscale)
        off = np.float32(qoffset)
        if not quant8_possible(sc, off, q, nnz):
            return E_QUANT
        for k in range(nnz):
            vals[k] = off + sc * np.float32(q[k])
    else:
        w = WIDTH[vtype]
        raw = np.empty(nnz * w, np.uint8)
        pos, err = decode_shuffle(buf, pos, vend, nnz, w, raw, YES)
        if err:
            return err
        if vtype == 3:
            f32 = raw.view(np.float32)
            for k in range(nnz):
                vals[k] = f32[k]
        elif vtype == 6:
            f64 = raw.view(np.float64)
            for k in range(nnz):
                vals[k] = f64[k]
        else:
            for k in range(nnz):
                h = np.int64(raw[2 * k]) | (np.int64(raw[2 * k + 1]) << 8)
                if not half_possible(h):
                    return E_HALF
                vals[k] = half_bits_to_f64(h)
    if pos != vend:
        return E_TRAILING
    return 0


@njit(nogil=True, cache=True, fastmath=False)
def sort_within_columns(indptr, rows, vals):
    """Sort ``rows`` (and ``vals`` alongside) within each column, in place.

    Returns 1 if a column holds a duplicate row index, else 0.
    """
    for j in range(indptr.size - 1):
        s = indptr[j]
        e = indptr[j + 1]
        if e - s > 1:
            order = np.argsort(rows[s:e], kind="mergesort")
            r = rows[s:e][order]
            v = vals[s:e][order]
            for k in range(e - s):
                rows[s + k] = r[k]
                vals[s + k] = v[k]
                if k > 0 and r[k] == r[k - 1]:
                    return 1
    return 0


# ----------------------------------------------------------------------------- encoding


@njit(nogil=True, cache=True, fastmath=False)
def first_invalid(vals, kind, limit):
    """Index of the first value a value type cannot hold, or -1 (no temporaries).

    kind 0: integers in [0, limit]; 1: finite values must satisfy |v| <= limit (float32);
    2: no NaN and finite |v| < limit (float16); 3: finite values only (quant8).
    """
    for i in range(vals.size):
        v = vals[i]
        if kind == 0:
            if not (v >= 0.0 and v <= limit and v == np.floor(v)):
                return i
        elif kind == 1:
            if np.isfinite(v) and abs(v) > limit:
                return i
        elif kind == 2:
            if np.isnan(v) or (np.isfinite(v) and abs(v) >= limit):
                return i
        elif not np.isfinite(v):
            return i
    return -1


@njit(nogil=True, cache=True, fastmath=False)
def scan_values(vals):
    """One pass for value_type="auto": (all non-negative integers, max, float32-lossy)."""
    all_uint = True
    lossy = False
    vmax = -np.inf
    for i in range(vals.size):
        v = vals[i]
        if not (v >= 0.0 and v == np.floor(v)):
            all_uint = False
        if v > vmax:
            vmax = v
        if not lossy and not np.isnan(v) and np.float64(np.float32(v)) != v:
            lossy = True
    return all_uint, vmax, lossy



@njit(nogil=True, cache=True, fastmath=False)
def encode_escape(vals, out, pos):
    """Escape-rANS block of uint64 ``vals`` at ``out[pos:]``; returns the new position
    (:func:`decode_escape` reads it back).

    Examples
    --------
    >>> vals = np.array([1, 2, 3, 300], dtype=np.uint64)
    >>> out = np.zeros(4096, np.uint8)
    >>> end = encode_escape(vals, out, 0)
    >>> back = np.zeros(4, np.uint64)
    >>> _ = decode_escape(out, 0, end, 4, back, True)
    >>> back.tolist()
    [1, 2, 3, 300]
    """
    n = vals.size
    syms = np.empty(n, np.uint8)
    escaped = False
    mx = 0
    for i in range(n):
        v = np.uint64(vals[i])  # vals may be float64 (validated integers) or uint64
        if v < np.uint64(255):
            syms[i] = np.uint8(v)
            if np.int64(v) > mx:
                mx = np.int64(v)
        else:
            syms[i] = 255
            escaped = True
    nsym = 256 if escaped else mx + 1
    pos = encode_stream(syms, np.int64(nsym), out, pos, NO)
    len_pos = pos
    pos += 4
    if escaped:
        for i in range(n):
            v = np.uint64(vals[i])
            if v >= np.uint64(255):
                pos = write_varint(out, pos, v)
    ov_len = pos - len_pos - 4
    for b in range(4):
        out[len_pos + b] = (ov_len >> (8 * b)) & 0xFF
    return pos


@njit(nogil=True, cache=True, fastmath=False)
def _encode_gaps(indptr, rows):
    num_cols = indptr.size - 1
    nnz = rows.size
    out = np.zeros(4 + 10 * num_cols + 530 + 4 + 2 * nnz + 8 + 4 + 10 * nnz, np.uint8)
    if nnz == 0:
        return out[:4].copy()  # RcppML stores an empty chunk as just cc_len = 0
    pos = 4
    for j in range(num_cols):
        pos = write_varint(out, pos, np.uint64(indptr[j + 1] - indptr[j]))
    cc_len = pos - 4
    for b in range(4):
        out[b] = (cc_len >> (8 * b)) & 0xFF
    if nnz > 0:
        gaps = np.empty(nnz, np.uint64)
        for j in range(num_cols):
            prev = np.uint64(0)
            for k in range(indptr[j], indptr[j + 1]):
                r = np.uint64(rows[k])
                gaps[k] = (r - prev) & _U32
                prev = (r + np.uint64(1)) & _U32
        pos = encode_escape(gaps, out, pos)
    return out[:pos].copy()


@njit(nogil=True, cache=True, fastmath=False)
def _encode_uint_values(vals):
    n = vals.size
    out = np.empty(530 + 8 + 2 * n + 4 + 10 * n, np.uint8)
    pos = encode_escape(vals, out, I0)
    return out[:pos].copy()


@njit(nogil=True, cache=True, fastmath=False)
def encode_shuffle(raw, width):
    """Byte-shuffle block over ``raw`` (count*width bytes, value-major); the encoded bytes
    (:func:`decode_shuffle` reads them back).

    Examples
    --------
    >>> raw = np.arange(12, dtype=np.uint8)           # 3 values of 4 bytes
    >>> enc = encode_shuffle(raw, 4)
    >>> back = np.zeros(12, np.uint8)
    >>> decode_shuffle(enc, 0, enc.size, 3, 4, back, True)[1], back.tolist() == raw.tolist()
    (0, True)
    """
    n = raw.size // width
    out = np.empty(1 + width * (4 + 514 + 4 + 2 * n + 4), np.uint8)
    out[0] = width
    pos = 1
    lane = np.empty(n, np.uint8)
    for s in range(width):
        for i in range(n):
            lane[i] = raw[i * width + s]
        pos = encode_stream(lane, I256, out, pos, YES)
    return out[:pos].copy()


@njit(nogil=True, cache=True, fastmath=False)
def _encode_q8(q):
    out = np.empty(514 + 4 + 2 * q.size + 4, np.uint8)
    pos = encode_stream(q, I256, out, I0, NO)
    return out[:pos].copy()


@njit(nogil=True, cache=True, fastmath=False)
def _f32bits_to_half(bits):
    sign = (bits >> 16) & 0x8000
    e = ((bits >> 23) & 0xFF) - 127
    mant = bits & 0x7FFFFF
    if e > 15:
        return sign | 0x7C00
    if e < -14:
        return sign
    he = e + 15
    hm = mant >> 13
    rnd = (mant >> 12) & 1
    sticky = mant & 0xFFF
    if rnd and (sticky or (hm & 1)):
        hm += 1
        if hm == 0x400:
            hm = 0
            he += 1
    return sign | (he << 10) | hm


@njit(nogil=True, cache=True, fastmath=False)
def _f32_to_half_arr(bits, out):
    for i in range(bits.size):
        out[i] = _f32bits_to_half(np.int64(bits[i]))


def f32_to_half_bits(values: np.ndarray) -> np.ndarray:
    """RcppML's float -> half converter (not IEEE: NaN -> Inf, subnormals flushed to 0).

    Parameters
    ----------
    values : ndarray
        Any float array; converted to float32 first, like RcppML does.

    Returns
    -------
    ndarray of uint16
        Half bit patterns, same shape.

    Examples
    --------
    >>> f32_to_half_bits(np.array([1.0, 65504.0, 1e-8]))
    array([15360, 31743,     0], dtype=uint16)
    """
    v = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(v.shape, np.uint16)
    _f32_to_half_arr(v.reshape(-1).view(np.uint32), out.reshape(-1))
    return out


def quantize8_v2(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """v2 quant8 of one chunk, in float32 arithmetic (spec 3.5).

    Returns ``(q uint8, scale, offset)`` with ``offset = min``, ``scale = (max - min) / 255``
    (1.0 when max == min); decoding is ``offset + scale * q`` in float32, so the error is at
    most about ``scale / 2`` plus float32 rounding.

    Examples
    --------
    >>> q, scale, offset = quantize8_v2(np.array([0.0, 1.0, 255.0]))
    >>> q.tolist(), scale, offset
    ([0, 1, 255], 1.0, 0.0)
    """
    v = np.asarray(values, dtype=np.float32)
    if v.size == 0:
        return np.zeros(0, np.uint8), 0.0, 0.0
    mn = v.min()
    mx = v.max()
    with np.errstate(over="ignore"):
        scale = np.float32((mx - mn) / np.float32(255.0)) if mx != mn else np.float32(1.0)
    if not np.isfinite(scale):
        raise ValueError(f"quant8: the chunk's values span [{float(mn):g}, {float(mx):g}], a "
                         f"range float32 cannot hold; use value_type='float32' or 'float64'")
    with np.errstate(over="ignore", invalid="ignore"):
        t = (v - mn) / scale + np.float32(0.5)
    q = np.clip(t, np.float32(0), np.float32(255)).astype(np.uint8)
    return q, float(scale), float(mn)


def encode_chunk(
    indptr: np.ndarray, rows: np.ndarray, values: np.ndarray, vtype: int
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Encode one chunk's gap stream and value stream.

    Parameters
    ----------
    indptr : ndarray of int64, shape (num_cols + 1,)
        Local column pointer starting at 0.
    rows : ndarray of int64
        Row indices, strictly increasing within each column.
    values : ndarray of float64
        Values already validated for ``vtype``.
    vtype : int
        v2 value_type code.

    Returns
    -------
    gap_stream, value_stream : ndarray of uint8
    quant_scale, quant_offset : float
        Non-zero only for quant8.

    Examples
    --------
    >>> g, v, s, o = encode_chunk(np.array([0, 1]), np.array([3]), np.array([2.0]), 0)
    >>> int(g[4]), int(v.size) > 0
    (1, True)
    """
    if rows.dtype != np.int32 and (rows.size == 0 or rows.max() <= 2**31 - 1):
        rows = rows.astype(np.int32)  # one kernel specialisation for the common case
    gaps = _encode_gaps(np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(rows))
    nnz = rows.size
    if nnz == 0:
        return gaps, np.zeros(0, np.uint8), 0.0, 0.0
    qs = qo = 0.0
    if vtype <= 2:
        vs = _encode_uint_values(np.ascontiguousarray(values, dtype=np.float64))
    elif vtype == 5:
        q, qs, qo = quantize8_v2(values)
        vs = _encode_q8(q)
    else:
        if vtype == 3:
            raw = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
        elif vtype == 6:
            raw = np.ascontiguousarray(values, dtype="<f8").view(np.uint8)
        else:
            raw = f32_to_half_bits(values).astype("<u2").view(np.uint8)
        vs = encode_shuffle(raw, WIDTH[vtype])
    return gaps, vs, qs, qo
