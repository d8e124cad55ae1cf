"""Engine of the truncated SVD: per-block kernels, the Krylov/randomized drivers and fit_svd.

References are independent: NumPy/SciPy products, ``numpy.linalg.svd`` of the explicitly
centred/scaled dense matrix, and for pbmc3k ARPACK (``scipy.sparse.linalg.svds`` at tol=0) on a
SciPy LinearOperator of ``Ã`` plus RcppML's double-precision singular values.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given
from hypothesis import strategies as st

from dask_factor.engine.blocks import as_blocked
from dask_factor.engine.svd import (
    GramPasses,
    fit_svd,
    resolve_method,
    row_statistics,
    sign_flips,
    svd_config,
)
from dask_factor.engine.svd_krylov import block_lanczos, orthonormalize, randomized_range
from dask_factor.kernels.svd import (
    csc_gram_apply,
    csc_row_moments,
    csc_to_csr,
    csr_gram_apply,
    dense_gram_apply,
    dense_row_moments,
    gram_kernel,
    merge_moments,
)

#: double-precision reference of RcppML's data/README.md: sqrt(eig(AᵀA)) of pbmc3k, top 10
PBMC3K_D = np.array([8562.01887, 3461.46926, 1690.64627, 1317.72756, 1193.38888, 1109.63154,
                     860.07512, 792.67720, 602.83235, 565.62955])
VAR_FLOOR = 100 * np.finfo(np.float64).eps


def dense_transform(D, center=False, scale=False):
    """The explicitly centred / scaled dense matrix (population SD, floored variance)."""
    X = np.asarray(D, dtype=np.float64)
    if center or scale:
        X = X - X.mean(axis=1, keepdims=True)
    if scale:
        X = X / np.sqrt(np.maximum(X.var(axis=1), VAR_FLOOR))[:, None]
    return X


def random_sparse(m, n, density, seed, *, offset=0.0):
    """A sparse matrix with non-trivial row means (so centring matters)."""
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=density, format="csc", random_state=rng,
                  data_rvs=lambda s: rng.poisson(3.0, s) + 1.0)
    rows = rng.random(m) < 0.5
    A = sp.diags(np.where(rows, 4.0, 1.0) + offset) @ A
    return sp.csc_matrix(A)


def structured_counts(m, n, seed, *, rank=10, density=0.05):
    """Sparse counts = rounded sparse rank-``rank`` signal + sparse noise (about 18 % dense at
    600 × 900): a decaying spectrum, so the Krylov methods converge in a few passes."""
    rng = np.random.default_rng(seed)
    W = sp.random(m, rank, density=0.12, random_state=rng,
                  data_rvs=lambda s: rng.gamma(2.0, 1.0, s))
    H = sp.random(rank, n, density=0.12, random_state=rng,
                  data_rvs=lambda s: rng.gamma(2.0, 1.0, s))
    N = sp.random(m, n, density=density, format="csc", random_state=rng,
                  data_rvs=lambda s: rng.poisson(1.0, s) + 1.0)
    A = sp.csc_matrix(3 * (W @ H) + N)
    A.data = np.round(A.data)
    A.eliminate_zeros()
    return A


def cosines(X, Y):
    """|cos| between matching columns."""
    return np.abs(np.sum(X * Y, axis=0)) / (np.linalg.norm(X, axis=0) * np.linalg.norm(Y, axis=0))


def assert_svd_matches(state_or_res, U, d, V, *, rtol=1e-10, cos=1 - 1e-9):
    k = d.size
    got_d = state_or_res.d
    np.testing.assert_allclose(got_d, d, rtol=rtol, atol=rtol * d[0])
    Vg = state_or_res.V() if callable(state_or_res.V) else state_or_res.V
    assert cosines(state_or_res.U, U[:, :k]).min() >= cos
    assert cosines(Vg, V[:, :k]).min() >= cos


# --------------------------------------------------------------------------------------------
# kernels


@pytest.mark.parametrize("b", [1, 3, 8, 16])
def test_gram_apply_kernels_match_numpy(b):
    A = random_sparse(60, 45, 0.2, 1)
    rng = np.random.default_rng(b)
    Q = rng.standard_normal((60, b))
    c = rng.standard_normal(b)
    Y_ref = A.T @ Q - c
    Z_ref = A @ Y_ref
    Y, Z, s = csc_gram_apply(A.indptr, A.indices, A.data, Q, c, 60)
    np.testing.assert_allclose(Y, Y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z, Z_ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(s, Y_ref.sum(axis=0), rtol=1e-12, atol=1e-10)
    rp, ci, cv = csc_to_csr(A.indptr, A.indices, A.data, 60)
    R = A.tocsr()
    R.sort_indices()
    np.testing.assert_array_equal(rp, R.indptr)
    np.testing.assert_array_equal(ci, R.indices)
    np.testing.assert_array_equal(cv, R.data)
    Y2, Z2, s2 = csr_gram_apply(rp, ci, cv, Q, c, 45)
    np.testing.assert_allclose(Y2, Y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z2, Z_ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(s2, s, rtol=1e-12, atol=1e-10)
    Y3, Z3, s3 = dense_gram_apply(A.toarray(), Q, c)
    np.testing.assert_allclose(Z3, Z_ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("b", [1, 4, 12, 16, 17])
def test_fixed_width_kernels_equal_generic_to_the_bit(b):
    """The vector kernels round every lane like the scalar loops: same bits, both layouts, with
    and without the Z sweep, float64 and float32 data; b = 17 falls back to the generic ones."""
    A = random_sparse(60, 45, 0.2, 4)
    rng = np.random.default_rng(b)
    Q = rng.standard_normal((60, b))
    c = rng.standard_normal(b)
    for data_dtype in (np.float64, np.float32):
        Ad = sp.csc_matrix(A, dtype=data_dtype)
        rp, ci, cv = csc_to_csr(Ad.indptr, Ad.indices, Ad.data, 60)
        for layout, args, generic in (
                ("csc", (Ad.indptr, Ad.indices, Ad.data, Q, c, 60), csc_gram_apply),
                ("csr", (rp, ci, cv, Q, c, 45), csr_gram_apply)):
            Yg, Zg, sg = generic(*args)
            Y, Z, s = gram_kernel(layout, b)(*args)
            np.testing.assert_array_equal(Y, Yg)
            np.testing.assert_array_equal(Z, Zg)
            np.testing.assert_array_equal(s, sg)
            Y1, _, _ = gram_kernel(layout, b, with_z=False)(*args)
            np.testing.assert_array_equal(Y1, Yg)
        A64 = Ad.astype(np.float64)
        np.testing.assert_allclose(Zg, A64 @ (A64.T @ Q - c), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("b", [3, 10])
def test_passes_between_fixed_widths_are_padded_without_changing_a_bit(b):
    """A pass of 3 (10) vectors runs the 4- (12-) wide kernels on zero-padded columns: every
    lane on its own, so Y, Z and s are the generic kernels' to the bit, in both layouts."""
    from dask_factor.engine.svd_passes import GramPack, RowMajorBlock, gram_apply

    A = random_sparse(60, 45, 0.2, 5)
    rng = np.random.default_rng(b)
    Q = rng.standard_normal((60, b))
    c = rng.standard_normal(b)
    pack = GramPack(Q, c)
    rp, ci, cv = csc_to_csr(A.indptr, A.indices, A.data, 60)
    for block, ref in ((A, csc_gram_apply(A.indptr, A.indices, A.data, Q, c, 60)),
                       (RowMajorBlock(rp, ci, cv, A.shape), csr_gram_apply(rp, ci, cv, Q, c, 45))):
        got = gram_apply(block, pack)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            np.testing.assert_array_equal(g, r)


def test_gram_apply_float32_data_and_empty_block():
    A = random_sparse(30, 20, 0.3, 2)
    A32 = sp.csc_matrix(A, dtype=np.float32)
    Q = np.random.default_rng(0).standard_normal((30, 4))
    c = np.zeros(4)
    _, Z, _ = csc_gram_apply(A32.indptr, A32.indices, A32.data, Q, c, 30)
    np.testing.assert_allclose(Z, A @ (A.T @ Q), rtol=1e-12)
    E = sp.csc_matrix((30, 0))
    Y, Z, s = csc_gram_apply(E.indptr, E.indices, E.data, Q, c, 30)
    assert Y.shape == (0, 4) and not Z.any() and not s.any()


def test_row_moments_stable_and_mergeable():
    rng = np.random.default_rng(3)
    D = rng.standard_normal((25, 40)) * 1e-3 + 1e6  # large offset: Σa² − n·mean² would cancel
    D[rng.random(D.shape) < 0.5] = 0.0
    A = sp.csc_matrix(D)
    mean, m2, sq, bad = csc_row_moments(A.indptr, A.indices, A.data, 25)
    np.testing.assert_allclose(mean, D.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(m2, ((D - D.mean(1, keepdims=True)) ** 2).sum(1), rtol=1e-10)
    assert bad == 0 and np.isclose(sq, (D ** 2).sum())
    # merging two halves (Chan) equals the whole
    a, b = sp.csc_matrix(D[:, :13]), sp.csc_matrix(D[:, 13:])
    ma = csc_row_moments(a.indptr, a.indices, a.data, 25)
    mb = csc_row_moments(b.indptr, b.indices, b.data, 25)
    n, mu, M2 = merge_moments(13, ma[0], ma[1], 27, mb[0], mb[1])
    assert n == 40
    np.testing.assert_allclose(mu, mean, rtol=1e-14)
    np.testing.assert_allclose(M2, m2, rtol=1e-9)
    dm = dense_row_moments(D)
    np.testing.assert_allclose(dm[1], m2, rtol=1e-9)


def test_row_moments_count_nonfinite():
    D = np.ones((4, 5))
    D[1, 2] = np.nan
    D[3, 0] = np.inf
    A = sp.csc_matrix(D)
    assert csc_row_moments(A.indptr, A.indices, A.data, 4)[3] == 2
    assert dense_row_moments(D)[3] == 2


# --------------------------------------------------------------------------------------------
# drivers (plain NumPy operators)


def test_orthonormalize_reconstructs_and_handles_rank_deficiency():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((50, 6)))[0]
    Z = rng.standard_normal((50, 4))
    Z[:, 3] = Z[:, 0] + basis[:, 1]  # dependent on the basis and the other columns
    Q, B, C = orthonormalize(Z, basis, rng, scale=10.0)
    np.testing.assert_allclose(Q.T @ Q, np.eye(4), atol=1e-13)
    assert np.abs(basis.T @ Q).max() < 1e-13
    np.testing.assert_allclose(basis @ C + Q @ B, Z, atol=1e-12)
    assert np.abs(B[3]).max() == 0.0  # the replaced direction carries no coupling


def test_block_lanczos_on_known_spectrum_with_restarts_and_multiplicity():
    rng = np.random.default_rng(1)
    m = 300
    ev = np.concatenate([[10.0, 10.0, 9.0], np.linspace(6.0, 0.0, m - 3)])  # σ₁ = σ₂
    Qm = np.linalg.qr(rng.standard_normal((m, m)))[0]
    M = (Qm * ev) @ Qm.T
    res = block_lanczos(lambda X: M @ X, m, 5, block_size=4, basis_size=24, keep=8, tol=1e-10,
                        maxit=400, rng=rng)
    assert res.converged and res.restarts > 0
    np.testing.assert_allclose(res.theta, np.sort(ev)[::-1][:5], rtol=1e-12)
    np.testing.assert_allclose(res.X.T @ res.X, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(M @ res.X, res.X * res.theta, atol=1e-8)


def test_block_lanczos_small_space_is_exact_in_one_pass():
    rng = np.random.default_rng(2)
    M = rng.standard_normal((20, 20))
    M = M @ M.T
    calls = []
    res = block_lanczos(lambda X: calls.append(X.shape) or M @ X, 20, 3, block_size=8,
                        basis_size=40, keep=6, tol=1e-8, maxit=10, rng=rng)
    assert calls == [(20, 20)] and res.passes == 1
    np.testing.assert_allclose(res.theta, np.linalg.eigvalsh(M)[::-1][:3], rtol=1e-12)


def test_block_lanczos_maxit_reports_not_converged():
    rng = np.random.default_rng(3)
    m = 400
    ev = 1.0 + np.arange(m) * 1e-3  # no gap: slow
    M = np.diag(ev)
    res = block_lanczos(lambda X: M @ X, m, 3, block_size=2, basis_size=10, keep=4, tol=1e-12,
                        maxit=3, rng=rng)
    assert not res.converged and res.passes == 3 and res.X.shape == (m, 3)


def test_randomized_range_spans_dominant_subspace():
    rng = np.random.default_rng(4)
    m = 200
    Qm = np.linalg.qr(rng.standard_normal((m, m)))[0]
    ev = np.concatenate([[100.0, 50.0, 20.0], np.full(m - 3, 0.01)])
    M = (Qm * ev) @ Qm.T
    X, passes = randomized_range(lambda Y: M @ Y, m, 8, 3, rng=rng)
    assert passes == 3
    np.testing.assert_allclose(X.T @ X, np.eye(8), atol=1e-12)
    proj = np.linalg.norm(X.T @ Qm[:, :3], axis=0)
    assert proj.min() > 1 - 1e-9


def test_sign_flips_largest_entry_positive():
    U = np.array([[0.1, -0.9, 0.5], [-0.8, 0.2, -0.5], [0.3, 0.1, 0.0]])
    f = sign_flips(U)
    np.testing.assert_array_equal(f, [-1.0, -1.0, 1.0])  # ties: the first entry wins


def test_resolve_method_follows_rcppml_cpu_rule():
    assert resolve_method("auto", 10, 13714, 2638) == "lanczos"
    assert resolve_method("auto", 63, 13714, 2638) == "lanczos"
    assert resolve_method("auto", 64, 13714, 2638) == "irlba"
    assert resolve_method("auto", 10, 30, 5000) == "irlba"  # min(m, n) < 4k
    assert resolve_method("randomized", 100, 10, 10) == "randomized"
    cfg = svd_config(10, 13714, 2638)
    assert cfg.block_size % 4 == 0 and cfg.keep >= 10 and cfg.basis_size >= cfg.keep + 16
    assert svd_config(10, 13714, 2638, method="randomized").power_iters == 3


def test_row_statistics_scale_floors_constant_rows():
    mom = (4, np.array([1.0, 2.0]), np.array([0.0, 8.0]), 0.0, 0)
    mu, sd, sq = row_statistics(mom, 2, 4, center=True, scale=True, dtype_eps=2.2e-16)
    np.testing.assert_allclose(mu, [1.0, 2.0])
    assert sd[0] > 0 and np.isclose(sd[1], np.sqrt(2.0))
    assert np.isclose(sq, 4.0)  # the constant row contributes nothing


# --------------------------------------------------------------------------------------------
# fit_svd


@pytest.fixture(scope="module")
def mid_matrix():
    """600 × 900 sparse counts: big enough for the Krylov path with restarts."""
    return structured_counts(600, 900, 7)


@pytest.mark.parametrize("center,scale", [(False, False), (True, False), (True, True)])
def test_fit_svd_equals_dense_svd_of_transformed_matrix(mid_matrix, center, scale):
    X = dense_transform(mid_matrix.toarray(), center, scale)
    U, d, Vt = np.linalg.svd(X, full_matrices=False)
    bm = as_blocked(mid_matrix, dtype=np.float64)
    cfg = svd_config(6, 600, 900, center=center, scale=scale, block_size=8, basis_size=24)
    st = fit_svd(bm, 6, config=cfg)
    assert st.converged and st.restarts > 0 and st.method == "lanczos"
    assert_svd_matches(st, U, d[:6], Vt.T)
    np.testing.assert_allclose(st.sq_norm, (X ** 2).sum(), rtol=1e-10)
    assert st.residuals.max() <= 1e-8
    # the residuals come from the Krylov passes' products, rotated through the restarts: they
    # are the true ‖X v − σ u‖ = ‖X Xᵀ u / σ − σ u‖ (V = Xᵀ U / σ by construction)
    for state in (st, fit_svd(bm, 6, center=center, scale=scale)):  # 8- and 4-wide passes
        true = np.linalg.norm(X @ (X.T @ state.U) / state.d - state.U * state.d, axis=0)
        np.testing.assert_allclose(state.residuals, true / state.d[0], rtol=0, atol=1e-13)
    if center:
        np.testing.assert_allclose(st.row_means, mid_matrix.toarray().mean(axis=1), rtol=1e-12)


def test_fit_svd_randomized_and_irlba(mid_matrix):
    X = mid_matrix.toarray()
    d = np.linalg.svd(X, compute_uv=False)
    bm = as_blocked(mid_matrix, dtype=np.float64)
    st = fit_svd(bm, 5, config=svd_config(5, 600, 900, method="irlba", block_size=8,
                                          basis_size=24))
    np.testing.assert_allclose(st.d, d[:5], rtol=1e-10)
    st = fit_svd(bm, 5, method="randomized", maxit=6)
    assert st.passes == 1 + 6 + 1 and st.iterations == 6
    # approximate: only the well separated top values are exact
    np.testing.assert_allclose(st.d[0], d[0], rtol=1e-10)
    np.testing.assert_allclose(st.d, d[:5], rtol=1e-2)


def test_fit_svd_uses_given_statistics_without_extra_pass(mid_matrix):
    bm = as_blocked(mid_matrix, dtype=np.float64)
    mom = GramPasses(bm, row_major=False).prepare(True)
    # 4-wide passes read the column-major blocks: the given moments save the statistics pass
    st1 = fit_svd(bm, 4, center=True)
    st2 = fit_svd(bm, 4, center=True, moments=mom)
    assert st1.config.block_size == 4 and st2.passes == st1.passes - 1
    np.testing.assert_array_equal(st1.d, st2.d)
    # 8-wide passes copy in-memory blocks to row-major form first: that pass remains
    st1 = fit_svd(bm, 4, center=True, block_size=8)
    st2 = fit_svd(bm, 4, center=True, block_size=8, moments=mom)
    assert st2.passes == st1.passes
    np.testing.assert_array_equal(st1.d, st2.d)


def test_fit_svd_rank_deficient_and_zero_matrix():
    rng = np.random.default_rng(5)
    L = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 400))
    st = fit_svd(as_blocked(L, dtype=np.float64), 5, block_size=None)
    d = np.linalg.svd(L, compute_uv=False)
    np.testing.assert_allclose(st.d[:3], d[:3], rtol=1e-10)
    assert np.all(st.d[3:] <= 1e-12 * st.d[0])
    V = st.V()
    assert np.isfinite(V).all() and not V[:, 3:].any()  # null directions: zero columns of V
    Z = fit_svd(as_blocked(sp.csc_matrix((300, 400)), dtype=np.float64), 3, center=True)
    assert not Z.d.any() and np.isfinite(Z.U).all() and not Z.V().any()


@given(m=st.integers(5, 40), n=st.integers(5, 40), density=st.floats(0.05, 1.0),
       seed=st.integers(0, 2**16), center=st.booleans())
def test_property_singular_values_equal_numpy(m, n, density, seed, center):
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=density, format="csc", random_state=rng)
    k = int(rng.integers(1, min(m, n)))
    X = dense_transform(A.toarray(), center)
    d = np.linalg.svd(X, compute_uv=False)
    st = fit_svd(as_blocked(A, dtype=np.float64, chunks=7), k, center=center)
    scale = max(d[0], 1e-300)
    np.testing.assert_allclose(st.d, d[:k], atol=1e-10 * scale, rtol=1e-10)
    # sign convention holds for every vector with a non-zero singular value
    idx = np.argmax(np.abs(st.U), axis=0)
    assert np.all(st.U[idx, np.arange(k)] >= 0)


# --------------------------------------------------------------------------------------------
# pbmc3k against the Gram-matrix reference


@pytest.fixture(scope="module")
def pbmc(pbmc3k):
    return sp.csc_matrix(pbmc3k.matrix, dtype=np.float64)


def arpack_reference(A, k, center, scale):
    """Top-k (U, d, V) of Ã = D⁻¹(A − μ1ᵀ) by ARPACK (``scipy.sparse.linalg.svds``, tol=0) on a
    LinearOperator that applies the centring/scaling as rank-one corrections with SciPy."""
    m, n = A.shape
    mu = np.asarray(A.mean(axis=1)).ravel() if (center or scale) else np.zeros(m)
    if scale:
        var = np.asarray(A.multiply(A).mean(axis=1)).ravel() - mu ** 2
        sd = np.sqrt(np.maximum(var, VAR_FLOOR))
    else:
        sd = np.ones(m)
    AT = sp.csr_matrix(A.T)

    def mv(v):
        v = np.asarray(v).reshape(n, -1)
        return ((A @ v) - np.outer(mu, v.sum(axis=0))) / sd[:, None]

    def rmv(u):
        u = np.asarray(u).reshape(m, -1) / sd[:, None]
        return (AT @ u) - (mu @ u)[None, :]

    op = spla.LinearOperator((m, n), matvec=mv, rmatvec=rmv, matmat=mv, rmatmat=rmv,
                             dtype=np.float64)
    U, d, Vt = spla.svds(op, k=k, tol=0, random_state=0)
    order = np.argsort(d)[::-1]
    return U[:, order], d[order], Vt[order].T


@pytest.mark.parametrize("center,scale", [(False, False), (True, False), (True, True)])
def test_pbmc3k_k10_matches_reference(pbmc, center, scale):
    A = pbmc
    U, d, V = arpack_reference(A, 10, center, scale)
    st = fit_svd(as_blocked(A, dtype=np.float64), 10, center=center, scale=scale)
    assert st.converged
    np.testing.assert_allclose(st.d, d, rtol=1e-5)
    assert cosines(st.U, U).min() >= 1 - 1e-6
    assert cosines(st.V(), V).min() >= 1 - 1e-6
    if not (center or scale):
        np.testing.assert_allclose(st.d, PBMC3K_D, rtol=1e-5)  # RcppML's double reference


# --------------------------------------------------------------------------------------------
# determinism


def test_same_result_threads_and_synchronous(mid_matrix):
    bm = as_blocked(mid_matrix, dtype=np.float64)
    with dask.config.set(scheduler="threads"):
        a = fit_svd(bm, 5, center=True, seed=3, block_size=8)
    with dask.config.set(scheduler="synchronous"):
        b = fit_svd(bm, 5, center=True, seed=3, block_size=8)
    np.testing.assert_array_equal(a.d, b.d)
    np.testing.assert_array_equal(a.U, b.U)
    np.testing.assert_array_equal(a.V(), b.V())


def test_result_independent_of_seed_and_chunking_to_tolerance(mid_matrix):
    a = fit_svd(as_blocked(mid_matrix, dtype=np.float64), 5, seed=1)
    b = fit_svd(as_blocked(mid_matrix, dtype=np.float64, chunks=77), 5, seed=2)
    np.testing.assert_allclose(a.d, b.d, rtol=1e-12)
    assert cosines(a.U, b.U).min() > 1 - 1e-10
    np.testing.assert_allclose(a.U, b.U, atol=1e-6)  # same signs: the convention


@pytest.mark.cluster
def test_same_result_on_local_cluster(mid_matrix):
    distributed = pytest.importorskip("distributed")
    bm = as_blocked(mid_matrix, dtype=np.float64)
    ref = fit_svd(bm, 5, center=True, seed=3, block_size=8)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        got = fit_svd(as_blocked(mid_matrix, dtype=np.float64), 5, center=True, seed=3,
                      block_size=8, client=client)
        V = got.V()
        assert not isinstance(got.v_blocks[0], np.ndarray)  # V stays on the workers
    np.testing.assert_allclose(got.d, ref.d, rtol=1e-13)
    np.testing.assert_allclose(got.U, ref.U, atol=1e-12)
    np.testing.assert_allclose(V, ref.V(), atol=1e-12)


@pytest.mark.parametrize(("k", "center"), [(3, False), (5, True), (20, False)])
def test_streamed_scan_store_reads_blocks_as_stored_with_the_decoded_bits(tmp_path, monkeypatch,
                                                                          k, center):
    """From a scan-layout store every pass reads its blocks as stored (DeltaCSC; width 20 has
    no fixed-width kernel and is decoded in the task) and gives, to the bit, what the same
    matrix gives from a csc-layout store cut into the same blocks (decoded blocks)."""
    from dask_factor import svd
    from dask_factor.io import open_matrix, write_matrix, zarr_csc

    A = sp.random(1_500, 700, density=0.05, format="csc", random_state=8, dtype=np.float64)
    A.data = np.floor(A.data * 600) + 1
    A = A.astype(np.float32)
    write_matrix(A, tmp_path / "scan.zarr", layout="scan", block_nnz=7_000)
    write_matrix(A, tmp_path / "csc.zarr", layout="csc", block_nnz=7_000)
    calls = []
    real = zarr_csc.ZarrCSCReader.delta_block
    monkeypatch.setattr(zarr_csc.ZarrCSCReader, "delta_block",
                        lambda self, *a: calls.append(a) or real(self, *a))
    kw = dict(center=center, seed=3, cache="none", method="lanczos")
    coded = svd(open_matrix(tmp_path / "scan.zarr"), k, **kw)
    n_blocks = len(open_matrix(tmp_path / "scan.zarr").chunks[1])
    assert len(calls) == n_blocks * (coded.passes + 1)  # and the validation (moments) read
    calls.clear()
    decoded = svd(open_matrix(tmp_path / "csc.zarr"), k, **kw)
    assert calls == [] and coded.passes == decoded.passes
    np.testing.assert_array_equal(coded.d, decoded.d)
    np.testing.assert_array_equal(coded.U, decoded.U)
    np.testing.assert_array_equal(coded.V, decoded.V)


def test_streamed_passes_read_each_block_inside_its_one_user(tmp_path, monkeypatch):
    """A pass over a store runs no block read as a task of its own: each read runs inside the
    task that uses it (as in the ALS steps), so no worker can read blocks ahead of their users
    and hold them (out-of-core SVD on a cluster once held half a worker's blocks at once)."""
    from dask_factor import svd
    from dask_factor.engine.blocks import is_read
    from dask_factor.engine.executor import Executor
    from dask_factor.io import open_matrix, write_matrix

    A = sp.random(900, 600, density=0.05, format="csc", random_state=3, dtype=np.float64)
    write_matrix(A, tmp_path / "A.zarr", block_nnz=1_000)
    X = open_matrix(tmp_path / "A.zarr")
    bm = as_blocked(X)
    assert bm.n_blocks == len(X.chunks[1])  # blocks read by the store's reader, not rechunked
    assert all(blk.key.startswith("block-") for blk in bm.blocks)
    graphs = []
    real = Executor.run
    monkeypatch.setattr(Executor, "run", lambda self, dsk, *a, **kw:
                        graphs.append(dsk) or real(self, dsk, *a, **kw))
    res = svd(X, 4, center=True, seed=1, cache="none", method="lanczos")
    assert len(graphs) >= res.passes
    for dsk in graphs:
        reads = {k for k, v in dsk.items() if str(k).startswith("block-") and is_read(v)}
        used = set().union(*(dask.core.get_dependencies(dsk, k) for k in dsk))
        assert not reads & used, sorted(reads & used)[:3]
    ref = np.linalg.svd(A.toarray() - A.toarray().mean(axis=1, keepdims=True),
                        compute_uv=False)[:4]
    np.testing.assert_allclose(res.d, ref, rtol=1e-8)
