"""The delta decoding kernels of the zarr scan layout against a per-column numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.kernels.delta import delta_decode, delta_decode_piece

I32 = (-(2**31), 2**31 - 1)


def _reference(indptr, deltas):
    """Per-column running sums in exact integers, clamped to int32 (what the check sees)."""
    out = np.empty(deltas.size, np.int64)
    for j in range(indptr.size - 1):
        a, b = indptr[j], indptr[j + 1]
        out[a:b] = np.cumsum(deltas[a:b].astype(object)).astype(np.float64).clip(*I32) \
            if b > a else []
    return out.astype(np.int32)


@st.composite
def _columns(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.uint32]))
    info = np.iinfo(dtype)
    counts = draw(st.lists(st.integers(0, 40), min_size=1, max_size=12))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    big = draw(st.booleans())  # values that overflow int32 within a column
    lo, hi = (info.min, info.max) if big else (max(info.min, -3), min(info.max, 300))
    deltas = np.array(draw(st.lists(st.integers(lo, hi), min_size=int(indptr[-1]),
                                    max_size=int(indptr[-1]))), dtype=dtype)
    cuts = sorted(draw(st.lists(st.integers(0, int(indptr[-1])), max_size=5)))
    return indptr, deltas, cuts


@settings(max_examples=300, deadline=None)
@given(_columns())
def test_pieces_equal_whole_and_reference(case):
    indptr, deltas, cuts = case
    want = _reference(indptr, deltas)
    whole = np.empty(deltas.size, np.int32)
    delta_decode(indptr, deltas, whole)
    np.testing.assert_array_equal(whole, want)
    out = np.full(deltas.size, 7, np.int32)
    state = np.zeros(2, np.int64)
    bounds = [0, *cuts, deltas.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        delta_decode_piece(indptr, deltas[a:b], a, out, state)
    np.testing.assert_array_equal(out, want)


def test_writes_nothing_past_the_pointer_or_the_output():
    indptr = np.array([0, 2], np.int64)
    out = np.full(4, -5, np.int32)
    delta_decode_piece(indptr, np.array([1, 2, 3, 4], np.uint16), 0, out, np.zeros(2, np.int64))
    np.testing.assert_array_equal(out, [1, 3, -5, -5])  # entries past indptr[-1] untouched
    short = np.full(1, -5, np.int32)
    delta_decode_piece(indptr, np.array([1, 2], np.uint16), 0, short, np.zeros(2, np.int64))
    np.testing.assert_array_equal(short, [1])


def test_a_negative_offset_or_column_is_refused():
    indptr, out = np.array([0, 2], np.int64), np.zeros(2, np.int32)
    with pytest.raises(ValueError, match="offset and state"):
        delta_decode_piece(indptr, np.ones(2, np.uint16), -3, out, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="offset and state"):
        delta_decode_piece(indptr, np.ones(2, np.uint16), 0, out, np.array([-5, 0]))
