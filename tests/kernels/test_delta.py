"""The delta decoding kernels of the zarr scan layout against a per-column numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.kernels.als import FIXED_MAX_K, h_step_sparse, product_kernels
from dask_factor.kernels.delta import (
    check_delta_rows,
    delta_decode,
    delta_decode_piece,
    delta_encode,
)

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


# ------------------------------------------------------------------------------------------
# kernels that read the differences as stored (the ALS products of a DeltaCSC block)


def _check_reference(indptr, deltas, m):
    for j in range(indptr.size - 1):
        col = deltas[indptr[j]:indptr[j + 1]].astype(object)
        if col.size and (min(col) < 0 or sum(col) >= m):
            return j
    return -1


@settings(max_examples=300, deadline=None)
@given(_columns(), st.integers(1, 70_000))
def test_check_delta_rows_against_exact_sums(case, m):
    indptr, deltas, _ = case
    assert check_delta_rows(indptr, deltas, m) == _check_reference(indptr, deltas, m)


def _delta_block(rng, m, n, density, value_dtype):
    A = sp.random(m, n, density=density, format="csc", random_state=rng)
    A.sum_duplicates()
    top = {np.uint8: 255, np.uint16: 60_000}.get(value_dtype, 1e4)
    A.data = np.floor(A.data * top) + 1 if value_dtype is not np.float32 else A.data * 7
    deltas = np.empty(A.nnz, np.uint16 if m <= 2**16 else np.int32)
    assert delta_encode(A.indptr.astype(np.int64), A.indices, deltas) >= 0
    return A, deltas, A.data.astype(value_dtype)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 300), st.integers(1, 40),
       st.sampled_from([1, 2, 3, 7, 10, 20, 33, 64, 65]),
       st.sampled_from([np.uint8, np.uint16, np.float32]),
       st.sampled_from([np.float32, np.float64]))
def test_products_on_stored_differences_are_the_decoded_products_to_the_bit(
        seed, m, n, k, value_dtype, dtype):
    """gather (Wᵀ a_j) and scatter (A Hᵀ) reading uint16 differences and narrow counts give the
    bits of the same kernels on the decoded block (int32 rows, values in W's dtype)."""
    rng = np.random.default_rng(seed)
    A, deltas, values = _delta_block(rng, m, n, 0.2, value_dtype)
    indptr = A.indptr.astype(np.int64)
    W = rng.random((m, k)).astype(dtype)
    Ht = rng.random((n, k)).astype(dtype)
    plain = product_kernels(values.astype(dtype), W, Ht, W)
    coded = product_kernels(values, W, Ht, W, delta=True)
    assert (coded is None) == (k > FIXED_MAX_K)
    if coded is None:
        return
    want, got = np.empty_like(Ht), np.empty_like(Ht)
    plain[0](indptr, A.indices, values.astype(dtype), W, want)
    coded[0](indptr, deltas, values, W, got)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(want, A.T @ W.astype(np.float64), rtol=1e-4, atol=1e-3)
    P0, P1 = np.zeros_like(W), np.zeros_like(W)
    plain[1](indptr, A.indices, values.astype(dtype), Ht, P0)
    coded[1](indptr, deltas, values, Ht, P1)
    np.testing.assert_array_equal(P1, P0)


@pytest.mark.parametrize("k", [5, 70])
def test_h_step_on_stored_differences_equals_the_decoded_block(k):
    """The fused H step (gather, solves, scatter) on a delta-coded block of uint16 counts,
    including a rank without fixed-width kernels (decoded inside the step), against the same
    step on the decoded float32 block: every output to the bit."""
    rng = np.random.default_rng(3)
    A, deltas, values = _delta_block(rng, 120, 90, 0.15, np.uint16)
    W = rng.random((120, k)).astype(np.float32)
    G = W.T.astype(np.float64) @ W + 1e-12 * np.eye(k)

    def step(indices, data, delta):
        Ht, P = np.empty((90, k), np.float32), np.zeros((120, k), np.float32)
        Q, s, s2 = np.zeros((k, k)), np.zeros(k), np.zeros(k)
        sweeps = h_step_sparse(A.indptr.astype(np.int64), indices, data, W, G, G, 0.0,
                               np.zeros((1, k)), 0.0, False, True, 0.0, np.zeros((1, k)),
                               np.ones(k), False, 100, 1e-8, True, Ht, P, Q, s, s2,
                               delta=delta)
        return Ht, P, Q, s, s2, sweeps

    want = step(A.indices, values.astype(np.float32), False)
    got = step(deltas, values, True)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
