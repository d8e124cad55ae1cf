"""The fast path of a ``.spz`` chunk with integer values decodes what the one-by-one path does.

:func:`~dask_factor.io.spz.codecs.decode_chunk` decodes the gap and value streams of a chunk with
integer values side by side (:func:`~dask_factor.io.spz.rans.rans_decode_pair`) and falls back to
decoding them one after the other when anything is wrong, so that the error named is the first
one in stream order.  These tests hold the two paths to the same output and the same error code
on chunks written by our encoder (with escapes: gaps and values of 255 and more) and on every
kind of damage to them, and the pair decoder to the single-stream one.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.io.spz.codecs import _fast_int_streams, decode_chunk, encode_chunk
from dask_factor.io.spz.rans import normalize_freqs, rans_decode, rans_decode_pair, rans_encode

VMAX = {0: 255, 1: 65535, 2: 4294967295}


@st.composite
def int_chunks(draw):
    """(indptr, rows, values, m, vtype) of a chunk with integer values, escapes likely."""
    m = draw(st.integers(1, 3000))
    ncols = draw(st.integers(1, 12))
    vtype = draw(st.integers(0, 2))
    cols_rows, counts = [], [0]
    for _ in range(ncols):
        rows = draw(st.lists(st.integers(0, m - 1), max_size=min(m, 60), unique=True))
        cols_rows.append(sorted(rows))
        counts.append(len(rows))
    nnz = sum(counts)
    vals = draw(st.lists(st.one_of(st.integers(1, 3), st.integers(250, VMAX[vtype])),
                         min_size=nnz, max_size=nnz))
    indptr = np.cumsum(counts).astype(np.int64)
    rows = np.array([r for c in cols_rows for r in c], np.int64)
    return indptr, rows, np.array(vals, np.float64), m, vtype


def _decode(buf, gap, nnz, ncols, m, vtype, fast, sorted_rows=True, rows_dtype=np.int64,
            vals_dtype=np.float64):
    indptr = np.zeros(ncols + 1, np.int64)
    rows = np.zeros(nnz, rows_dtype)
    vals = np.zeros(nnz, vals_dtype)
    err = decode_chunk(buf, gap, buf.size - gap, ncols, nnz, m, vtype, 1.0, 0.0, sorted_rows,
                       indptr, rows, vals, fast)
    return err, indptr, rows, vals


def _same(buf, gap, nnz, ncols, m, vtype):
    """Both paths, with the row order checked (every file but row-sorted ones) and not, into
    int64/float64 and int32/float32 outputs: the same error code, the same output."""
    first = None
    for sorted_rows, rdt, vdt in [(True, np.int64, np.float64), (False, np.int32, np.float32)]:
        a = _decode(buf, gap, nnz, ncols, m, vtype, True, sorted_rows, rdt, vdt)
        b = _decode(buf, gap, nnz, ncols, m, vtype, False, sorted_rows, rdt, vdt)
        assert a[0] == b[0]
        if a[0] == 0:
            for x, y in zip(a[1:], b[1:]):
                np.testing.assert_array_equal(x, y)
        first = first or a
    return first


def _encoded(chunk):
    indptr, rows, vals, m, vtype = chunk
    g, v, _, _ = encode_chunk(indptr, rows, vals, vtype)
    return np.concatenate([g, v]).astype(np.uint8), g.size


@settings(max_examples=150, deadline=None)
@given(int_chunks())
def test_written_chunks_take_the_fast_path_and_decode_exactly(chunk):
    indptr, rows, vals, m, vtype = chunk
    buf, gap = _encoded(chunk)
    nnz, ncols = rows.size, indptr.size - 1
    err, ip, r, v = _same(buf, gap, nnz, ncols, m, vtype)
    assert err == 0
    np.testing.assert_array_equal(ip, indptr)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(v, vals)
    if nnz:  # the fast path itself accepted it (not the fallback)
        # the column counts end where the gap block starts: re-read them to find the position
        from dask_factor.io.spz.rans import read_u32

        cc_len, pos, _ = read_u32(buf, 0, gap)
        ip2 = indptr.copy()
        r2, v2 = np.zeros(nnz, np.int64), np.zeros(nnz, np.float64)
        assert _fast_int_streams(buf, pos + cc_len, gap, buf.size, ncols, nnz, m, vtype, True,
                                ip2, r2, v2)
        np.testing.assert_array_equal(r2, rows)
        np.testing.assert_array_equal(v2, vals)


@settings(max_examples=300, deadline=None)
@given(int_chunks(), st.data())
def test_damaged_chunks_give_the_one_by_one_error(chunk, data):
    indptr, rows, vals, m, vtype = chunk
    buf, gap = _encoded(chunk)
    nnz, ncols = rows.size, indptr.size - 1
    buf = buf.copy()
    kind = data.draw(st.sampled_from(["flip", "truncate", "gap", "m", "vtype", "extend"]))
    if kind == "flip" and buf.size:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, buf.size - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, buf.size))]
        gap = min(gap, buf.size)
    elif kind == "gap":
        gap = data.draw(st.integers(0, buf.size))
    elif kind == "m":
        m = data.draw(st.integers(1, m))
    elif kind == "vtype":
        vtype = data.draw(st.integers(0, 2))
    else:
        tail = data.draw(st.binary(min_size=1, max_size=8))
        buf = np.concatenate([buf, np.frombuffer(tail, np.uint8)])
    _same(buf, gap, nnz, ncols, m, vtype)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 7), max_size=300), st.lists(st.integers(0, 255), max_size=300),
       st.data())
def test_pair_decoder_matches_the_single_stream_decoder(sa, sb, data):
    streams = []
    n = min(len(sa), len(sb))
    for syms in (np.array(sa[:n], np.uint8), np.array(sb[:n], np.uint8)):
        nsym = int(syms.max()) + 1 if n else 1
        freq = np.zeros(256, np.int64)
        freq[:nsym] = normalize_freqs(np.bincount(syms, minlength=nsym).astype(np.int64), nsym)
        out = np.zeros(2 * n + 8, np.uint8)
        end = rans_encode(syms, freq, out, 0)
        streams.append((out[:end].copy(), freq))
    buf = np.concatenate([streams[0][0], streams[1][0]])
    if data.draw(st.booleans()) and buf.size:  # damage one byte
        i = data.draw(st.integers(0, buf.size - 1))
        buf[i] ^= data.draw(st.integers(1, 255))
    a1 = streams[0][0].size
    fa, fb = streams[0][1], streams[1][1]
    single_a, single_b = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    ea = rans_decode(buf, 0, a1, fa, n, single_a)
    eb = rans_decode(buf, a1, buf.size, fb, n, single_b)
    pa, pb = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    ep = rans_decode_pair(buf, 0, a1, fa, a1, buf.size, fb, n, pa, pb)
    assert (ep == 0) == (ea == 0 and eb == 0)
    if ep == 0:
        np.testing.assert_array_equal(pa, single_a)
        np.testing.assert_array_equal(pb, single_b)


def test_pair_decoder_refuses_a_table_that_is_not_one():
    buf = np.zeros(16, np.uint8)
    out = np.zeros(4, np.uint8)
    short = np.full(3, 5000, np.int64)  # not 256 entries
    bad_sum = np.zeros(256, np.int64)
    bad_sum[0] = 20000  # sums past 16384: would write past the slot table
    negative = np.zeros(256, np.int64)
    negative[:2] = [16385, -1]
    good = np.zeros(256, np.int64)
    good[0] = 16384
    for t in (short, bad_sum, negative):
        assert rans_decode_pair(buf, 0, 8, t, 8, 16, good, 4, out, out.copy()) == 1
        assert rans_decode_pair(buf, 0, 8, good, 8, 16, t, 4, out, out.copy()) == 1
    # streams outside the buffer, or outputs too small
    assert rans_decode_pair(buf, 0, 8, good, 8, 17, good, 4, out, out.copy()) == 1
    assert rans_decode_pair(buf, 0, 8, good, 8, 16, good, 5, out, out.copy()) == 1
