"""What can be checked about a v2 chunk before it is decoded (no per-entry allocation).

:func:`preflight_chunk` reads a chunk's column counts and the headers of its gap and value
streams — frequency tables, stream lengths, overflow lists — and checks that each rANS stream is
long enough for the symbols it must hold (:func:`~dask_factor.io.spz.rans.rans_capacity_ok`).
The reader runs it before allocating the chunk's arrays, so a corrupt value stream is refused
before gigabytes of gaps are decoded, and a stream declaring more symbols than its bytes can
code is refused before its symbols are allocated.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codecs import I0, I256, NO, WIDTH, YES, varint_minimal
from .rans import (
    E_CAPACITY,
    E_COLCOUNT,
    E_ESCAPE,
    E_LANES,
    E_NSYM,
    E_QUANT,
    E_TABLE_LEN,
    E_TRAILING,
    E_TRUNCATED,
    E_VARINT,
    E_VARINT_FORM,
    rans_capacity_ok,
    read_freq_table,
    read_u32,
    read_varint,
)

__all__ = ["preflight_chunk"]


@njit(nogil=True, cache=True, fastmath=False)
def _skim_rans(buf, pos, end, count, freq, want_nsym, with_len):
    """``[u32 table_len] table u32 enc_len bytes``: checks, returns ``(pos after, nsym, err)``."""
    tl = np.int64(0)
    if with_len:
        tl, pos, err = read_u32(buf, pos, end)
        if err:
            return pos, 0, err
    nsym, pos, err = read_freq_table(buf, pos, end, freq)
    if err:
        return pos, 0, err
    if with_len and tl != 2 + 2 * nsym:
        return pos, 0, E_TABLE_LEN
    if want_nsym and nsym != want_nsym:
        return pos, 0, E_NSYM
    enc_len, pos, err = read_u32(buf, pos, end)
    if err:
        return pos, 0, err
    if pos + enc_len > end or enc_len < 4:
        return pos, 0, E_TRUNCATED
    if not rans_capacity_ok(freq, count, enc_len):
        return pos, 0, E_CAPACITY
    return pos + enc_len, nsym, 0


@njit(nogil=True, cache=True, fastmath=False)
def _skim_escape(buf, pos, end, count, freq):
    pos, nsym, err = _skim_rans(buf, pos, end, count, freq, I0, NO)
    if err:
        return pos, err
    ov_len, pos, err = read_u32(buf, pos, end)
    if err:
        return pos, err
    if pos + ov_len > end:
        return pos, E_TRUNCATED
    if (ov_len > 0) != (nsym == 256) or ov_len > 10 * count:
        return pos, E_ESCAPE
    return pos + ov_len, 0


@njit(nogil=True, cache=True, fastmath=False)
def preflight_chunk(buf, gap_size, value_size, num_cols, nnz, m, vtype, qscale):
    """Check one v2 chunk's structure without decoding it (and without allocating per entry).

    Column counts (shortest-form varints, each <= m, adding up to nnz), then the headers of
    the gap and value streams: tables, stream lengths, and that each rANS stream is long enough
    for its symbols.  quant8 scale must be finite and positive.  Returns 0 or an error code.
    """
    gend = gap_size
    vend = gap_size + value_size
    if vend > buf.size:
        return E_TRUNCATED
    cc_len, pos, err = read_u32(buf, I0, gend)
    if err:
        return err
    cc_end = pos + cc_len
    if cc_end > gend:
        return E_TRUNCATED
    if cc_len == 0 and nnz == 0:
        return 0 if (gap_size == 4 and value_size == 0) else E_TRAILING
    total = np.int64(0)
    for _ in range(num_cols):
        start = pos
        c, pos, err = read_varint(buf, pos, cc_end)
        if err:
            return E_VARINT
        if not varint_minimal(buf, start, pos):
            return E_VARINT_FORM
        if c > np.uint64(nnz) or c > np.uint64(m):
            return E_COLCOUNT
        total += np.int64(c)
        if total > nnz:
            return E_COLCOUNT
    if pos != cc_end:
        return E_TRAILING
    if total != nnz:
        return E_COLCOUNT
    freq = np.empty(256, np.int64)
    if nnz == 0:
        if pos != gend:
            return E_TRAILING
        return 0 if value_size == 0 else E_TRAILING
    pos, err = _skim_escape(buf, pos, gend, nnz, freq)
    if err:
        return err
    if pos != gend:
        return E_TRAILING
    if vtype <= 2:
        pos, err = _skim_escape(buf, pos, vend, nnz, freq)
        if err:
            return err
    elif vtype == 5:
        if not (np.isfinite(qscale) and qscale >= 0.0):
            return E_QUANT
        pos, nsym, err = _skim_rans(buf, pos, vend, nnz, freq, I256, NO)
        if err:
            return err
    else:
        w = WIDTH[vtype]
        if pos + 1 > vend:
            return E_TRUNCATED
        if np.int64(buf[pos]) != w:
            return E_LANES
        pos += 1
        for _ in range(w):
            pos, nsym, err = _skim_rans(buf, pos, vend, nnz, freq, I256, YES)
            if err:
                return err
    if pos != vend:
        return E_TRAILING
    return 0
