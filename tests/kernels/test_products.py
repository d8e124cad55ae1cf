"""Sparse × dense kernels (dask_factor.kernels.products) against SciPy sparse products.

Blocks are drawn by hypothesis: shape, density, forced empty columns, k (including 1), value dtype
(float32/float64) and index dtype (int32/int64, plus int64 pointers with int32 indices). The
reference is SciPy's product of the same values in float64; float32 inputs are compared with a
tolerance scaled by ``|A|·|W|`` (the kernels may accumulate in the storage dtype).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from helpers import random_csc
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.kernels.products import (
    column_sums,
    csc_a_ht,
    csc_a_v,
    csc_residual_parts,
    csc_row_sums,
    csc_sq_sum,
    csc_wt_a,
    dense_a_ht,
    dense_wt_a,
    gram,
    gram_rows,
)

INDEX_KINDS = {
    "int32": (np.int32, np.int32),
    "int64": (np.int64, np.int64),
    "int64-ptr": (np.int64, np.int32),  # what a >2^31-nnz matrix with few rows looks like
}


@st.composite
def blocks(draw, *, max_m=40, max_n=30):
    """A CSC block (its raw arrays, dtypes as drawn) and its float64 SciPy twin."""
    seed = draw(st.integers(0, 2**32 - 1))
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(0, max_n))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kind = draw(st.sampled_from(sorted(INDEX_KINDS)))
    rng = np.random.default_rng(seed)
    empty = [j for j in range(n) if draw(st.booleans())] if n and draw(st.booleans()) else []
    A = random_csc(rng, m, n, density, dtype=dtype, empty_cols=empty)
    ptr_t, idx_t = INDEX_KINDS[kind]
    indptr = A.indptr.astype(ptr_t)
    indices = A.indices.astype(idx_t)
    data = A.data.astype(dtype)
    A64 = sp.csc_matrix((data.astype(np.float64), indices.astype(np.int64),
                         indptr.astype(np.int64)), shape=(m, n))
    return dict(indptr=indptr, indices=indices, data=data, A64=A64, dtype=dtype, m=m, n=n,
                rng=rng, empty=empty)


def tol_for(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def assert_scaled_close(actual, expected, scale, rtol):
    """``|actual − expected| <= rtol·scale`` elementwise (scale = the product of |values|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    bound = rtol * (np.asarray(scale, dtype=np.float64) + 1e-300)
    err = np.abs(actual - expected)
    assert np.all(err <= bound), f"max error {err.max():.3g}, bound {bound.max():.3g}"


ks = st.integers(1, 7)


@settings(max_examples=80, deadline=None)
@given(blocks(), ks)
def test_csc_wt_a_equals_scipy(blk, k):
    W = blk["rng"].random((blk["m"], k)).astype(blk["dtype"])
    out = csc_wt_a(blk["indptr"], blk["indices"], blk["data"], W)
    W64 = W.astype(np.float64)
    ref = (blk["A64"].T @ W64).T
    assert out.shape == (k, blk["n"])
    scale = (abs(blk["A64"]).T @ np.abs(W64)).T
    assert_scaled_close(out, ref, scale, tol_for(blk["dtype"]))
    if blk["empty"]:
        assert np.all(np.asarray(out)[:, blk["empty"]] == 0.0)


@settings(max_examples=80, deadline=None)
@given(blocks(), ks)
def test_csc_a_ht_equals_scipy(blk, k):
    H = blk["rng"].random((k, blk["n"])).astype(blk["dtype"])
    out = csc_a_ht(blk["indptr"], blk["indices"], blk["data"], H, blk["m"])
    H64 = H.astype(np.float64)
    ref = blk["A64"] @ H64.T
    assert out.shape == (blk["m"], k)
    assert_scaled_close(out, ref, abs(blk["A64"]) @ np.abs(H64).T, tol_for(blk["dtype"]))


@settings(max_examples=60, deadline=None)
@given(blocks(), ks)
def test_csc_a_v_equals_scipy(blk, k):
    V = (blk["rng"].standard_normal((blk["n"], k))).astype(blk["dtype"])
    out = csc_a_v(blk["indptr"], blk["indices"], blk["data"], V, blk["m"])
    V64 = V.astype(np.float64)
    assert out.shape == (blk["m"], k)
    assert_scaled_close(out, blk["A64"] @ V64, abs(blk["A64"]) @ np.abs(V64),
                        tol_for(blk["dtype"]))


@settings(max_examples=60, deadline=None)
@given(blocks())
def test_squares_and_row_sums_equal_scipy(blk):
    A64 = blk["A64"]
    sq = csc_sq_sum(blk["data"])
    ref_sq = float(A64.multiply(A64).sum())
    assert abs(sq - ref_sq) <= 1e-12 * max(ref_sq, 1e-300) + 1e-300
    s, s2 = csc_row_sums(blk["indptr"], blk["indices"], blk["data"], blk["m"])
    np.testing.assert_allclose(s, np.asarray(A64.sum(axis=1)).ravel(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(s2, np.asarray(A64.multiply(A64).sum(axis=1)).ravel(),
                               rtol=1e-12, atol=0)


@settings(max_examples=40, deadline=None)
@given(blocks(max_n=20), st.data())
def test_row_sums_of_a_column_range_view(blk, data):
    """A column range of a CSC matrix passed as an ``indptr`` slice over the full arrays."""
    n = blk["n"]
    j0 = data.draw(st.integers(0, n))
    j1 = data.draw(st.integers(j0, n))
    s, s2 = csc_row_sums(blk["indptr"][j0:j1 + 1], blk["indices"], blk["data"], blk["m"])
    part = blk["A64"][:, j0:j1]
    np.testing.assert_allclose(s, np.asarray(part.sum(axis=1)).ravel(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(s2, np.asarray(part.multiply(part).sum(axis=1)).ravel(),
                               rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(blocks(), ks)
def test_residual_parts_give_the_exact_sse(blk, k):
    rng = blk["rng"]
    Wd = rng.random((blk["m"], k))
    Ht = rng.random((blk["n"], k))
    res, rec = csc_residual_parts(blk["indptr"], blk["indices"], blk["data"], Wd, Ht)
    A = blk["A64"].toarray()
    R = Wd @ Ht.T
    stored = np.zeros(A.shape, dtype=bool)
    coo = blk["A64"].tocoo()
    stored[coo.row, coo.col] = True
    ref_res = float(((A - R)[stored] ** 2).sum())
    ref_rec = float((R[stored] ** 2).sum())
    assert abs(res - ref_res) <= 1e-10 * (ref_res + (A[stored] ** 2).sum() + ref_rec) + 1e-300
    assert abs(rec - ref_rec) <= 1e-10 * ref_rec + 1e-300
    # the identity the engine relies on: SSE = Σ_stored (a − r)² + Σ_all r² − Σ_stored r²
    sse = res + float((R * R).sum()) - rec
    ref_sse = float(((A - R) ** 2).sum())
    assert abs(sse - ref_sse) <= 1e-9 * max(ref_sse, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(0, 20), ks,
       st.sampled_from([np.float32, np.float64]))
def test_dense_products_equal_numpy(seed, m, n, k, dtype):
    rng = np.random.default_rng(seed)
    A = rng.random((m, n)).astype(dtype)
    W = rng.random((m, k)).astype(dtype)
    H = rng.random((k, n)).astype(dtype)
    A64, W64, H64 = (x.astype(np.float64) for x in (A, W, H))
    wta = dense_wt_a(A, W)
    aht = dense_a_ht(A, H)
    assert wta.shape == (k, n) and aht.shape == (m, k)
    assert_scaled_close(wta, W64.T @ A64, W64.T @ A64, tol_for(dtype))
    assert_scaled_close(aht, A64 @ H64.T, A64 @ H64.T, tol_for(dtype))


def test_empty_block_and_all_empty_columns():
    """No columns, or only empty columns: zeros of the right shape."""
    W = np.ones((5, 3))
    indptr0 = np.zeros(1, dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    data = np.zeros(0)
    assert csc_wt_a(indptr0, empty, data, W).shape == (3, 0)
    assert csc_a_ht(indptr0, empty, data, np.zeros((3, 0)), 5).shape == (5, 3)
    indptr = np.zeros(4, dtype=np.int32)
    out = csc_wt_a(indptr, empty.astype(np.int32), data, W)
    assert out.shape == (3, 3) and np.all(out == 0.0)
    P = csc_a_ht(indptr, empty.astype(np.int32), data, np.ones((3, 3)), 5)
    assert P.shape == (5, 3) and np.all(P == 0.0)
    assert csc_sq_sum(data) == 0.0
    s, s2 = csc_row_sums(indptr, empty.astype(np.int32), data, 5)
    assert np.all(s == 0.0) and np.all(s2 == 0.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), r=st.integers(0, 200),
       k=st.sampled_from([1, 3, 10, 17, 64, 65]),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_gram_equals_the_row_loop_to_the_bit_and_numpy(seed, r, k, dtype):
    """The width-specific Gram sums the same products in the same order as the row loop (same
    bits, a symmetric result); float32, k > 64 and non-contiguous inputs take the row loop."""
    F = np.random.default_rng(seed).standard_normal((r, k)).astype(dtype)
    G = gram(F)
    np.testing.assert_array_equal(G, gram_rows(F))
    np.testing.assert_array_equal(G, G.T)
    F64 = F.astype(np.float64)
    np.testing.assert_allclose(G, F64.T @ F64, rtol=1e-12, atol=1e-12 * (1 + r))
    np.testing.assert_array_equal(gram(np.asfortranarray(F64)), gram_rows(F64))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 3000), ks, st.sampled_from(["f4", "f8"]),
       st.booleans())
def test_column_sums_are_the_rows_summed_in_order(seed, r, k, dtype, squares):
    """column_sums: per column Σ|F| (or ΣF²) in float64, the rows added one after another (the
    left fold; numpy's axis-0 sum switches to pairwise sums for a single column), equal to
    numpy's sum up to rounding."""
    rng = np.random.default_rng(seed)
    F = (rng.standard_normal((r, k)) * 10.0 ** rng.integers(-3, 4, (r, 1))).astype(dtype)
    got = column_sums(F, squares)
    ref = np.zeros(k)
    for row in F.astype(np.float64):
        ref += row * row if squares else np.abs(row)
    assert got.dtype == np.float64 and np.array_equal(got, ref)
    F64 = F.astype(np.float64)
    np.testing.assert_allclose(got, (F64 * F64 if squares else np.abs(F64)).sum(axis=0),
                               rtol=1e-12)
