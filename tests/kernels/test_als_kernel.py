"""The fused ALS block kernel (dask_factor.kernels.als) against its parts and SciPy.

``h_step_sparse`` must equal, on hypothesis-drawn blocks (empty columns, k = 1, int32/int64 indices,
float32/float64 storage, L1, target, bounds, warm starts, Cholesky or CD):

    Bt = Aᵀ W − L1 + λ T        (SciPy sparse product)
    H  = batched NNLS(G, Bt)     (nnls_cd_batch / clip(solve), and scipy.optimize.nnls when
                                  CD is run to convergence)
    P = A Hᵀ, Q = H Hᵀ, s = Σ|h|, s2 = Σh²   (NumPy, from the stored H)

and ``h_step_dense`` must equal ``h_step_sparse`` on the same data. Kernels are called with
keyword arguments so that new optional parameters do not break these tests.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from helpers import nnls_gram, random_csc
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.kernels.als import (
    FIXED_MAX_K,
    gather_rhs,
    h_step_dense,
    h_step_sparse,
    product_kernels,
    scatter_partial,
    w_solve,
)
from dask_factor.kernels.nnls import gram_cholesky, nnls_cd_batch, sweep_budget

INDEX_KINDS = {"int32": (np.int32, np.int32), "int64": (np.int64, np.int64)}


@st.composite
def h_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, 6))
    m = draw(st.integers(k, 40))
    n = draw(st.integers(0, 25))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    ptr_t, idx_t = INDEX_KINDS[draw(st.sampled_from(sorted(INDEX_KINDS)))]
    empty = [j for j in range(n) if draw(st.booleans())] if n and draw(st.booleans()) else []
    density = draw(st.sampled_from([0.1, 0.4, 1.0]))
    A = random_csc(rng, m, n, density, dtype=dtype, empty_cols=empty)
    # a well-conditioned non-negative W: every row leans on one factor
    W = 0.2 * rng.random((m, k))
    W[np.arange(m), np.arange(m) % k] += 1.0
    W = np.ascontiguousarray(W.astype(dtype))
    W64 = W.astype(np.float64)
    l2 = draw(st.sampled_from([0.0, 0.5]))
    tlam = draw(st.sampled_from([0.0, 0.3]))
    G = W64.T @ W64 + (l2 + tlam + 1e-15) * np.eye(k)
    use_chol = draw(st.booleans())
    nonneg = draw(st.booleans())
    return dict(
        A=A, indptr=A.indptr.astype(ptr_t), indices=A.indices.astype(idx_t), data=A.data,
        W=W, G=G, L=np.linalg.cholesky(G), dtype=dtype, m=m, n=n, k=k, empty=empty,
        l1=draw(st.sampled_from([0.0, 0.05])),
        Tt=np.ascontiguousarray(rng.random((n, k))), tlam=tlam,
        use_chol=use_chol, nonneg=nonneg,
        ub=draw(st.sampled_from([0.0, 0.4])),
        Xprev=np.ascontiguousarray(rng.random((n, k)).astype(dtype)),
        xscale=rng.uniform(0.5, 2.0, k),
        warm=draw(st.booleans()) and not use_chol,
        cd_maxit=draw(st.sampled_from([1, 3, 5000])),
        cd_tol=1e-15,
        exact=draw(st.booleans()),
    )


def run_sparse(pb):
    n, k, m = pb["n"], pb["k"], pb["m"]
    Ht = np.empty((n, k), dtype=pb["dtype"])
    P = np.zeros((m, k), dtype=np.float64)
    Q = np.zeros((k, k), dtype=np.float64)
    s = np.zeros(k)
    s2 = np.zeros(k)
    sweeps = h_step_sparse(
        indptr=pb["indptr"], indices=pb["indices"], data=pb["data"], W=pb["W"], G=pb["G"],
        L=pb["L"], l1=pb["l1"], Tt=pb["Tt"], tlam=pb["tlam"], use_chol=pb["use_chol"],
        nonneg=pb["nonneg"], ub=pb["ub"], Xprev=pb["Xprev"], xscale=pb["xscale"],
        warm=pb["warm"], cd_maxit=pb["cd_maxit"], cd_tol=pb["cd_tol"], exact=pb["exact"], Ht=Ht,
        P=P, Q=Q, s=s, s2=s2,
    )
    return Ht, P, Q, s, s2, sweeps


def run_dense(pb):
    Ht = np.empty((pb["n"], pb["k"]), dtype=pb["dtype"])
    P, Q, s, s2, sweeps = h_step_dense(
        A=np.ascontiguousarray(pb["A"].toarray()), W=pb["W"], G=pb["G"], L=pb["L"], l1=pb["l1"],
        Tt=pb["Tt"], tlam=pb["tlam"], use_chol=pb["use_chol"], nonneg=pb["nonneg"], ub=pb["ub"],
        Xprev=pb["Xprev"], xscale=pb["xscale"], warm=pb["warm"], cd_maxit=pb["cd_maxit"],
        cd_tol=pb["cd_tol"], exact=pb["exact"], Ht=Ht,
    )
    return Ht, P, Q, s, s2, sweeps


def separate_solve(pb):
    """Products by SciPy, then the batched solver on its own (float64)."""
    A64 = pb["A"].astype(np.float64)
    W64 = pb["W"].astype(np.float64)
    Bt = np.ascontiguousarray((A64.T @ W64) - pb["l1"] + pb["tlam"] * pb["Tt"])
    if pb["use_chol"]:
        X = np.linalg.solve(pb["G"], Bt.T).T
        if pb["nonneg"]:
            X = np.maximum(X, 0.0)
        if pb["ub"] > 0:
            X = np.minimum(X, pb["ub"])
        return Bt, X
    X = (pb["Xprev"].astype(np.float64) * pb["xscale"]) if pb["warm"] else np.zeros(Bt.shape)
    X = np.ascontiguousarray(X)
    # the kernels' budget: cd_maxit for a warm start, at least COLD_CD_MAXIT from zero
    nnls_cd_batch(pb["G"], Bt, X, pb["warm"], pb["nonneg"], pb["ub"],
                  sweep_budget(pb["warm"], pb["cd_maxit"]), pb["cd_tol"], pb["exact"])
    return Bt, X


def rtol(dtype):
    return 1e-4 if dtype == np.float32 else 1e-9


@settings(max_examples=120, deadline=None)
@given(h_problems())
def test_h_step_sparse_equals_products_nnls_and_partials(pb):
    Ht, P, Q, s, s2, sweeps = run_sparse(pb)
    Bt, X = separate_solve(pb)
    tol = rtol(pb["dtype"])
    scale = 1.0 + np.abs(X).max(initial=0.0)
    assert Ht.dtype == pb["dtype"] and Ht.shape == (pb["n"], pb["k"])
    np.testing.assert_allclose(Ht, X, rtol=tol, atol=tol * scale)
    if pb["use_chol"]:
        assert sweeps == 0
    elif pb["n"] and not pb["exact"]:
        assert sweeps >= pb["n"]  # (an exact solve whose start is optimal makes no sweep)
    # bounds hold exactly on what is stored
    if pb["nonneg"]:
        assert np.all(Ht >= 0)
    if pb["ub"] > 0:
        assert np.all(Ht <= pb["ub"])
    # the partials are those of the stored H
    H64 = Ht.astype(np.float64)
    A64 = pb["A"].astype(np.float64)
    ptol = 1e-5 if pb["dtype"] == np.float32 else 1e-12
    pscale = abs(A64) @ np.abs(H64) + 1e-300
    assert np.all(np.abs(P - A64 @ H64) <= ptol * pscale)
    np.testing.assert_allclose(Q, H64.T @ H64, rtol=1e-12, atol=1e-12 * scale**2)
    np.testing.assert_allclose(Q, Q.T, rtol=0, atol=0)
    np.testing.assert_allclose(s, np.abs(H64).sum(axis=0), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(s2, (H64 * H64).sum(axis=0), rtol=1e-12, atol=1e-300)
    if pb["empty"] and not pb["warm"] and pb["l1"] == 0 and pb["tlam"] == 0:
        # an empty column has b = 0: its solution is 0
        assert np.all(Ht[pb["empty"]] == 0)


@settings(max_examples=60, deadline=None)
@given(h_problems())
def test_h_step_cd_to_convergence_equals_scipy_nnls(pb):
    pb.update(use_chol=False, nonneg=True, cd_maxit=20000, cd_tol=1e-15)
    Ht, *_ = run_sparse(pb)
    A64 = pb["A"].astype(np.float64)
    Bt = A64.T @ pb["W"].astype(np.float64) - pb["l1"] + pb["tlam"] * pb["Tt"]
    tol = rtol(pb["dtype"])
    for j in range(pb["n"]):
        ref = nnls_gram(pb["G"], Bt[j], pb["ub"])
        np.testing.assert_allclose(Ht[j], ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))


@settings(max_examples=80, deadline=None)
@given(h_problems())
def test_h_step_dense_equals_sparse(pb):
    sparse_out = run_sparse(pb)
    dense_out = run_dense(pb)
    tol = rtol(pb["dtype"])
    scale = 1.0 + np.abs(sparse_out[0].astype(np.float64)).max(initial=0.0)
    np.testing.assert_allclose(dense_out[0], sparse_out[0], rtol=tol, atol=tol * scale)
    for a, b in zip(dense_out[1:5], sparse_out[1:5]):
        b = np.asarray(b, dtype=np.float64)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1.0 + np.abs(b).max(initial=0)))


def test_h_step_zero_gram_diagonal_is_finite():
    """A dead factor (all-zero column of W): CD skips it, Cholesky lifts it; nothing is NaN."""
    rng = np.random.default_rng(5)
    A = random_csc(rng, 30, 12, 0.3)
    W = rng.random((30, 3))
    W[:, 1] = 0.0
    G = W.T @ W
    assert G[1, 1] == 0.0
    for use_chol, exact in ((False, False), (False, True), (True, False)):
        pb = dict(A=A, indptr=A.indptr, indices=A.indices, data=A.data, W=W, G=G,
                  L=gram_cholesky(G), dtype=np.float64, m=30, n=12, k=3, l1=0.0,
                  Tt=np.zeros((12, 3)), tlam=0.0, use_chol=use_chol, nonneg=True, ub=0.0,
                  Xprev=np.zeros((12, 3)), xscale=np.ones(3), warm=False, cd_maxit=100,
                  cd_tol=1e-8, exact=exact)
        Ht, P, Q, s, s2, _ = run_sparse(pb)
        for x in (Ht, P, Q, s, s2):
            assert np.all(np.isfinite(x))
        if not use_chol:
            assert np.all(Ht[:, 1] == 0.0)
        dense_Ht, *_ = run_dense(pb)
        assert np.all(np.isfinite(dense_Ht))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 30), st.booleans(),
       st.booleans(), st.sampled_from([0.0, 0.3]), st.booleans(),
       st.sampled_from([np.float32, np.float64]), st.booleans())
def test_w_solve_equals_references(seed, k, r, use_chol, nonneg, ub, warm, out_dtype, exact):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((3 * k + 4, k))
    G = M.T @ M
    Bt = np.ascontiguousarray(rng.standard_normal((r, k)) * 2.0)
    Xwarm = rng.random((r, k)) if warm else None
    out = w_solve(G=G, Bt=Bt, L=np.linalg.cholesky(G), use_chol=use_chol, nonneg=nonneg, ub=ub,
                  Xwarm=Xwarm, warm=warm and not use_chol, cd_maxit=20000, cd_tol=1e-15,
                  exact=exact, out_dtype=out_dtype)
    assert out.shape == (r, k) and out.dtype == np.dtype(out_dtype)
    if use_chol:
        ref = np.linalg.solve(G, Bt.T).T
        if nonneg:
            ref = np.maximum(ref, 0.0)
        if ub > 0:
            ref = np.minimum(ref, ub)
    else:
        ref = np.vstack([nnls_gram(G, Bt[j], ub, nonneg) for j in range(r)])
    tol = 1e-6 if out_dtype == np.float32 else 1e-8
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))


def test_h_step_sparse_accepts_a_scipy_block_with_int64_indices():
    """int64 indices as SciPy keeps them for huge matrices; same answer as int32."""
    rng = np.random.default_rng(1)
    A = random_csc(rng, 25, 10, 0.3)
    A64i = sp.csc_matrix((A.data, A.indices.astype(np.int64), A.indptr.astype(np.int64)),
                         shape=A.shape)
    W = rng.random((25, 4))
    G = W.T @ W + 1e-15 * np.eye(4)
    base = dict(W=W, G=G, L=np.linalg.cholesky(G), dtype=np.float64, m=25, n=10, k=4, l1=0.0,
                Tt=np.zeros((10, 4)), tlam=0.0, use_chol=False, nonneg=True, ub=0.0,
                Xprev=np.zeros((10, 4)), xscale=np.ones(4), warm=False, cd_maxit=100,
                cd_tol=1e-8, exact=False)
    out32 = run_sparse(dict(base, A=A, indptr=A.indptr, indices=A.indices, data=A.data))
    out64 = run_sparse(dict(base, A=A64i, indptr=A64i.indptr.astype(np.int64),
                            indices=A64i.indices.astype(np.int64), data=A64i.data))
    for a, b in zip(out32[:5], out64[:5]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


#: ranks around the vector pieces' edges (one lane; 2 + 1; 8 + 2; 16 + 1; 16 + 8 + 4 + 2 float32
#: lanes, 8 + 8 + 1 and 8 + 8 + 8 + 4 + 2 float64), and past the largest (each compiles once)
FIXED_RANKS = [1, 3, 10, 17, 30, 65]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]),
       density=st.sampled_from([0.05, 0.3, 1.0]), wide=st.booleans())
def test_fixed_width_products_equal_the_generic_loops_to_the_bit(seed, dtype, density, wide):
    """The fixed-width gather and scatter round every lane like the generic loops: same bits for
    every rank (k = 65 is the generic kernel itself), int32 and int64 pointers, empty columns,
    repeated rows across columns; and both equal SciPy's products to rounding."""
    rng = np.random.default_rng(seed)
    m, n = (300, 40) if wide else (25, 12)
    A = random_csc(rng, m, n, density, dtype=dtype, empty_cols=[0, n // 2])
    for k in FIXED_RANKS if dtype == np.float32 else [3, 17, 65]:  # float32: the default
        W = np.ascontiguousarray(rng.standard_normal((m, k)).astype(dtype))
        Ht, Ht_ref = np.empty((n, k), dtype), np.empty((n, k), dtype)
        P = np.ascontiguousarray(rng.standard_normal((m, k)).astype(dtype))
        P_ref = P.copy()
        gather, scatter = product_kernels(A.data, W, Ht, P)
        assert (gather is gather_rhs) == (k > FIXED_MAX_K)
        for indptr in (A.indptr.astype(np.int32), A.indptr.astype(np.int64)):
            gather(indptr, A.indices, A.data, W, Ht)
            gather_rhs(indptr, A.indices, A.data, W, Ht_ref)
            np.testing.assert_array_equal(Ht, Ht_ref)
        scatter(A.indptr, A.indices, A.data, Ht, P)
        scatter_partial(A.indptr, A.indices, A.data, Ht, P_ref)
        np.testing.assert_array_equal(P, P_ref)
        A64 = A.astype(np.float64)
        tol = 1e-4 if dtype == np.float32 else 1e-12
        scale = 1 + np.abs(A64).sum() * np.abs(W).max()
        np.testing.assert_allclose(Ht, A64.T @ W.astype(np.float64), atol=tol * scale)


def test_product_kernels_fall_back_to_the_generic_loops():
    """Mixed dtypes or a non-contiguous factor take the generic kernels (the fixed ones convert
    ``a`` to the factor's dtype, which the scalar loops do not)."""
    A = random_csc(np.random.default_rng(0), 20, 10, 0.3, dtype=np.float64)
    W32 = np.ones((20, 4), np.float32)
    Ht32 = np.empty((10, 4), np.float32)
    generic = (gather_rhs, scatter_partial)
    assert product_kernels(A.data, W32, Ht32, W32) == generic  # float64 data, float32 factors
    assert product_kernels(A.data.astype(np.float32), W32, Ht32,
                           np.zeros((20, 4))) == generic  # a float64 P
    assert product_kernels(A.data.astype(np.float32), np.ones((20, 8), np.float32)[:, :4],
                           Ht32, W32) == generic  # a column slice of W
    assert product_kernels(A.data.astype(np.float32), W32, Ht32, W32) != generic
