"""kernels.irls: per-column IRLS against scipy.optimize on the true objective, the per-entry
losses against scipy/scikit-learn, and the dispersion estimates against closed forms on data with
known parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy.optimize import minimize, minimize_scalar
from scipy.special import gammaln
from scipy.stats import nbinom

from dask_factor.kernels import irls as K

LOSSES = ["kl", "nb", "gamma", "inverse_gaussian", "tweedie"]


def solve_block(A, F, disp, code, X, *, l1=0.0, l2=0.0, ub=0.0, cd_tol=1e-14, irls_maxit=300,
                irls_tol=1e-13, mk=K.NO_HOLDOUT, delta=0.0, zpi=K.NO_PI):
    """``K.irls_block`` from a cold start (the solutions into ``X``), every argument given in
    the types of the engine's float64 fits: the suite compiles the kernel once for all these
    tests and the fits (each further signature costs ~10 s of compilation)."""
    K.irls_block(A.indptr, A.indices, A.data, np.ascontiguousarray(F, dtype=np.float64),
                 np.asarray(disp, dtype=np.float64), False, int(code), 1.5, float(l1), float(l2),
                 True, float(ub), X, np.ones(X.shape[1]), False, 200, float(cd_tol),
                 int(irls_maxit), float(irls_tol), X, mk, K.NO_MASK, K.NO_MASK, float(delta),
                 zpi, False, K.NO_PI, 0.0)


def test_scale_start_matches_the_column_sums():
    """A cold solve's start: the constant x whose model sums to the column's total over the
    kept entries (all rows when zeros are fitted, the stored rows when not), capped at the
    upper bound; nothing to scale leaves x at 0."""
    rng = np.random.default_rng(3)
    F = rng.uniform(size=(30, 4))
    col = np.zeros(30)
    col[[2, 5, 11, 17, 29]] = [3.0, 1.0, 4.0, 1.0, 5.0]
    A = sp.csc_matrix(col[:, None])
    ex = np.array([5, 8, 20], dtype=np.int64)
    kept = np.setdiff1d(np.arange(30), ex)
    stored = np.setdiff1d([2, 11, 17, 29], ex)
    Fsum = F.sum(0)
    for zeros, rows in ((True, kept), (False, stored)):
        x = np.zeros(4)
        assert K.scale_start(A.indptr, A.indices, A.data, 0, F, Fsum, ex, ex.size, zeros, 0.0, x)
        np.testing.assert_allclose(x, np.full(4, col[stored].sum() / F[rows].sum()), rtol=1e-14)
        assert np.allclose((F[rows] @ x).sum(), col[stored].sum())
    x = np.zeros(4)
    assert K.scale_start(A.indptr, A.indices, A.data, 0, F, Fsum, ex, 0, True, 0.01, x)
    np.testing.assert_array_equal(x, np.full(4, 0.01))
    empty = sp.csc_matrix(np.zeros((30, 1)))
    x = np.zeros(4)
    assert not K.scale_start(empty.indptr, empty.indices, empty.data, 0, F, Fsum, ex, 0, True,
                             0.0, x)
    assert not x.any()


def update_rows(At, H, disp_old, code, estimate, bounds, Wrows, out_disp, st, mk=K.NO_HOLDOUT,
                zpi=K.NO_PI, zpi_by_col=False):
    """``K.row_update`` with every argument given (one compiled signature, as
    :func:`solve_block`); the block's objective is scored with the new dispersion exactly when
    it is estimated (``score_new = estimate``, as in every call here)."""
    K.row_update(At.indptr, At.indices, At.data, np.ascontiguousarray(H, dtype=np.float64),
                 np.asarray(disp_old, dtype=np.float64), int(code), 1.5, bool(estimate),
                 bool(estimate), np.asarray(bounds, dtype=np.float64), Wrows, out_disp, st, mk,
                 K.NO_MASK, K.NO_MASK, 0.0, zpi, bool(zpi_by_col), K.NO_PI)


def column_loss_np(loss, y, mu, r=5.0, q=1.5):
    """The objective of one column, written with numpy only (independent of the kernel)."""
    mu = np.maximum(mu, 1e-10)
    pos = y > 0
    if loss == "kl":
        return np.sum(y[pos] * np.log(y[pos] / mu[pos])) - y.sum() + mu.sum()
    if loss == "nb":
        return -nbinom.logpmf(y, r, r / (r + mu)).sum()
    yp, mp = y[pos], mu[pos]  # Gamma / inverse Gaussian: zeros are outside the support
    if loss == "gamma":
        return np.sum(2 * (-np.log(yp / mp) + (yp - mp) / mp))
    if loss == "inverse_gaussian":
        return np.sum((yp - mp) ** 2 / (mp ** 2 * yp))
    # Tweedie, 1 < q < 2: zeros observed
    t1 = np.where(pos, np.maximum(y, 1e-300) ** (2 - q) / ((1 - q) * (2 - q)), 0.0)
    return np.sum(2 * (t1 - y * mu ** (1 - q) / (1 - q) + mu ** (2 - q) / (2 - q)))


def draw(loss, mu, rng, r=5.0):
    if loss == "nb":
        return rng.negative_binomial(r, r / (r + mu)).astype(float)
    if loss in ("gamma", "inverse_gaussian"):
        y = rng.gamma(2.0, mu / 2.0)
        y[rng.random(y.size) < 0.3] = 0.0  # zeros: outside the support, left out
        return y
    return rng.poisson(mu).astype(float)


@pytest.mark.parametrize("loss", LOSSES)
def test_column_irls_reaches_the_scipy_optimum(loss):
    rng = np.random.default_rng(3)
    m, k = 80, 3
    F = rng.gamma(1.0, 1.0, (m, k))
    mu = F @ np.array([2.0, 0.3, 1.0])
    y = draw(loss, mu, rng)
    A = sp.csc_matrix(y[:, None])
    X = np.zeros((1, k))
    solve_block(A, F, np.full(m, 5.0), K.LOSS_CODES[loss], X)
    ref = minimize(lambda x: column_loss_np(loss, y, F @ x), np.ones(k), method="L-BFGS-B",
                   bounds=[(0, None)] * k,
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=20000, maxfun=100000))
    ours = column_loss_np(loss, y, F @ X[0])
    assert ours <= ref.fun + 1e-9 * abs(ref.fun)
    np.testing.assert_allclose(X[0], ref.x, rtol=2e-4, atol=2e-5)


def test_column_irls_with_penalties_and_bound():
    """L1/L2 and an upper bound act on the objective being minimised (KL here)."""
    rng = np.random.default_rng(5)
    m, k = 60, 3
    F = rng.gamma(1.0, 1.0, (m, k))
    y = rng.poisson(F @ np.array([3.0, 0.5, 1.5])).astype(float)
    A = sp.csc_matrix(y[:, None])
    l1, l2, ub = 0.7, 2.0, 2.0
    X = np.zeros((1, k))
    solve_block(A, F, np.zeros(m), K.KL, X, l1=l1, l2=l2, ub=ub)

    def obj(x):
        return column_loss_np("kl", y, F @ x) + l1 * x.sum() + 0.5 * l2 * (x ** 2).sum()

    ref = minimize(obj, np.ones(k), method="L-BFGS-B", bounds=[(0, ub)] * k,
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=20000))
    np.testing.assert_allclose(X[0], ref.x, rtol=2e-4, atol=2e-5)
    assert X[0].max() <= ub


def test_unit_losses_against_scipy_and_sklearn():
    from sklearn.metrics import mean_tweedie_deviance

    rng = np.random.default_rng(0)
    mu = rng.gamma(2.0, 2.0, 500)
    y = rng.poisson(mu).astype(float)
    ypos = y.copy()
    ypos[ypos == 0] = 0.5

    def total(code, yy, disp=0.0, q=1.5):
        return sum(K.unit_loss(code, a, b, disp, q) for a, b in zip(yy, mu))

    # Poisson deviance = 2 × generalised KL; Tweedie / Gamma / inverse Gaussian unit deviances
    assert total(K.KL, y) == pytest.approx(mean_tweedie_deviance(y, mu, power=1) * y.size / 2,
                                           rel=1e-10)
    assert total(K.TWEEDIE, y) == pytest.approx(
        mean_tweedie_deviance(y, mu, power=1.5) * y.size, rel=1e-10)
    assert total(K.GAMMA, ypos) == pytest.approx(
        mean_tweedie_deviance(ypos, mu, power=2) * y.size, rel=1e-10)
    assert total(K.INVERSE_GAUSSIAN, ypos) == pytest.approx(
        mean_tweedie_deviance(ypos, mu, power=3) * y.size, rel=1e-10)
    # NB: the full negative log-likelihood
    assert total(K.NB, y, 2.5) == pytest.approx(-nbinom.logpmf(y, 2.5, 2.5 / (2.5 + mu)).sum(),
                                                rel=1e-10)
    # GP (λ = μ/(1+θ), ξ = θ/(1+θ)): the log-pmf written out, including y = 0
    th = 0.4
    lam, xi = mu / (1 + th), th / (1 + th)
    logp = np.log(lam) + (y - 1) * np.log(lam + xi * y) - lam - xi * y - gammaln(y + 1)
    assert total(K.GP, y, th) == pytest.approx(-logp.sum(), rel=1e-10)


def test_gp_pmf_is_normalised():
    """The GP likelihood the kernel uses is a distribution (sums to 1, mean μ)."""
    mu, th = 3.0, 0.3
    ys = np.arange(0, 400, dtype=float)
    p = np.exp([-K.unit_loss(K.GP, yy, mu, th, 1.5) for yy in ys])
    assert p.sum() == pytest.approx(1.0, rel=1e-9)
    assert (ys * p).sum() == pytest.approx(mu, rel=1e-9)


@pytest.mark.parametrize("loss", ["kl", "nb", "gamma", "tweedie", "gp"])
def test_block_objective_is_the_dense_sum(loss):
    rng = np.random.default_rng(1)
    m, n, k = 40, 30, 3
    W = rng.gamma(1.0, 1.0, (m, k))
    H = rng.gamma(1.0, 1.0, (k, n))
    mu = W @ H
    Y = rng.poisson(mu).astype(float)
    disp = rng.uniform(0.5, 4.0, m)
    A = sp.csc_matrix(Y)
    obj, sse = K.block_objective(A.indptr, A.indices, A.data, W, np.ascontiguousarray(H.T),
                                 disp, False, K.LOSS_CODES[loss], 1.5, 0.0, K.NO_PI, False)
    code = K.LOSS_CODES[loss]
    ref = sum(K.unit_loss(code, Y[i, j], mu[i, j], disp[i], 1.5)
              for i in range(m) for j in range(n)
              if Y[i, j] > 0 or K.zeros_observed(code, 1.5))
    assert obj == pytest.approx(ref, rel=1e-10)
    assert sse == pytest.approx(((Y - mu) ** 2).sum(), rel=1e-10)


@pytest.mark.parametrize("loss", ["kl", "nb", "gamma", "inverse_gaussian", "tweedie", "gp",
                                  "mse"])
@pytest.mark.parametrize("by_col", [False, True])
def test_column_objective_vectorised_equals_entry_by_entry(loss, by_col):
    """column_objective with its scratch ``ms`` (the stored entries' losses in vectorised
    passes) and without (entry by entry) equals the sum of unit_loss over the kept entries,
    with and without excluded rows."""
    rng = np.random.default_rng(7)
    p, n, k = 300, 12, 4
    F = rng.gamma(1.0, 1.0, (p, k))
    X = rng.gamma(1.0, 0.5, (n, k))
    Y = rng.poisson(F @ X.T * (rng.random((p, n)) < 0.3)).astype(np.float32)
    A = sp.csc_matrix(Y)
    code = K.LOSS_CODES[loss]
    disp = rng.uniform(0.3, 6.0, n if by_col else p)
    Fsum, Q = F.sum(axis=0), F.T @ F
    # Fᵀ as the callers pass it: for the losses whose zeros are summed row by row
    Ft = np.ascontiguousarray(F.T) if loss in ("nb", "tweedie") else np.empty((k, 0))
    for j in range(n):
        for ex in (np.zeros(0, dtype=np.int64), np.sort(rng.choice(p, 9, replace=False))):
            args = (A.indptr, A.indices, A.data, j, F, X[j].copy(), Fsum, disp, by_col, code,
                    1.5, ex, ex.size, False, 0.0, K.NO_PI, False, Ft)
            mu = F @ X[j]
            ref = math.fsum(K.unit_loss(code, float(Y[i, j]), mu[i], disp[j if by_col else i],
                                        1.5)
                            for i in sorted(set(range(p)) - set(ex.tolist()))
                            if Y[i, j] > 0 or K.zeros_observed(code, 1.5))
            for ms in (K.NO_FT, np.empty((6, p))):
                got = K.column_objective(*args, np.empty(p), Q, ms)
                assert got == pytest.approx(ref, rel=1e-12)


@given(v=st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=70))
def test_lane_sum_is_the_sum(v):
    a = np.array(v, dtype=np.float64)
    assert K.lane_sum(a) == pytest.approx(math.fsum(v), rel=1e-12, abs=1e-6)
    lanes = [0.0] * K.LANES  # the order, by hand
    for t, x in enumerate(v):
        lanes[t % K.LANES] += x
    assert K.lane_sum(a) == sum(lanes)  # term t into lane t mod LANES, lanes added in order


@njit(fastmath={"contract"})
def _lanes_by_scalars(u, v, n, L):
    acc = np.zeros(L)
    for t in range(n):
        acc[t % L] += u[t] * v[t]
    return acc


@njit(fastmath={"contract"})
def _lanes_by_kernel(u, v, n, runs):
    """K.lanes_fma over ``runs`` consecutive runs (each a multiple of LANES long but the last),
    as the tiles of zero_pull call it."""
    acc = np.zeros(K.LANES)
    step = max(n // runs, 1)
    step -= step % K.LANES
    step = max(step, K.LANES)
    for i0 in range(0, n, step):
        m = min(step, n - i0)
        K.lanes_fma(acc, u[i0:i0 + m], v[i0:i0 + m], m)
    return acc


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 150), st.integers(1, 4), st.integers(0, 2**31))
def test_lanes_fma_is_the_scalar_lane_order(n, runs, seed):
    """Each lane is the scalar loop's fused sum of its terms, to the bit, however the terms
    are split into runs; the lanes' total is the dot product."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=n) * 1e3, rng.normal(size=n)
    got = _lanes_by_kernel(u, v, n, runs)
    assert np.array_equal(got, _lanes_by_scalars(u, v, n, K.LANES))
    assert K.lanes_total(got) == pytest.approx(float(u @ v), rel=1e-9, abs=1e-9)


@njit(fastmath={"contract"})
def _means_by_scalars(Ft, x):
    k, p = Ft.shape
    out = np.empty(p)
    for i in range(p):
        s = 0.0
        for f in range(k):
            s += x[f] * Ft[f, i]
        out[i] = s
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 140), st.integers(1, 13), st.integers(0, 2**31))
def test_all_means_is_the_scalar_dot_product(p, k, seed):
    """μ = F x by tiles of vector lanes: every row the scalar loop's fused chain, to the bit."""
    rng = np.random.default_rng(seed)
    Ft = np.ascontiguousarray(rng.uniform(size=(k, p)))
    x = rng.uniform(size=k) * 10
    mu = np.empty(p)
    K.all_means(Ft, x, mu)
    assert np.array_equal(mu, _means_by_scalars(Ft, x))
    assert np.allclose(mu, x @ Ft, rtol=1e-13)


@pytest.mark.parametrize("k", [1, 3, 4, 7, 10])
def test_weighted_gram_is_the_numpy_product(k):
    """The IRLS step's G (lower triangle), b and slope from the gathered entries against numpy
    on the same entries (k below, at and above the four-column pass)."""
    rng = np.random.default_rng(k)
    n, p = 37, 50
    Fs = np.empty((k + 4, p))
    Fs[:k, :n] = rng.uniform(size=(k, n))
    h, t, s = rng.uniform(size=n), rng.normal(size=n), rng.normal(size=n)
    Fs[k, :n], Fs[k + 1, :n], Fs[k + 2, :n] = h, t, s
    G, b, gs = np.full((k, k), np.nan), np.empty(k), np.empty(k)
    K.weighted_gram(Fs, n, G, b, gs, np.empty(4 * K.LANES))
    X = Fs[:k, :n]
    assert np.allclose(np.tril(G), np.tril((X * h) @ X.T), rtol=1e-13)
    assert np.isnan(G[np.triu_indices(k, 1)]).all()  # the upper triangle is left to the caller
    assert np.allclose(b, X @ t, rtol=1e-12, atol=1e-13)
    assert np.allclose(gs, X @ s, rtol=1e-12, atol=1e-13)


def test_nb_size_by_moments_matches_the_closed_form_and_the_truth():
    """Rows of NB counts with known means and sizes: the kernel's moments estimate equals
    Σμ² / Σ[(y−μ)² − μ] and is close to the true size."""
    rng = np.random.default_rng(7)
    n, k = 20000, 2
    H = rng.gamma(2.0, 1.0, (n, k))  # F (the samples) × k
    Wrows = np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]])
    r_true = np.array([2.0, 5.0, 0.8])
    mu = Wrows @ H.T
    Y = rng.negative_binomial(r_true[:, None], r_true[:, None] / (r_true[:, None] + mu))
    At = sp.csc_matrix(Y.T.astype(float))  # columns of Aᵀ are the rows
    out_disp, st = np.empty(3), np.zeros(len(K.ROW_STATS))
    update_rows(At, H, np.full(3, 10.0), K.NB, True, [0.01, 1e6], Wrows, out_disp, st)
    closed = (mu ** 2).sum(1) / (((Y - mu) ** 2) - mu).sum(1)
    np.testing.assert_allclose(out_disp, closed, rtol=1e-9)
    np.testing.assert_allclose(out_disp, r_true, rtol=0.1)
    # the block's objective is scored with the new sizes
    ref = -nbinom.logpmf(Y, out_disp[:, None], out_disp[:, None] / (out_disp[:, None] + mu)).sum()
    assert st[0] == pytest.approx(ref, rel=1e-9)


def gp_sample(mu, th, rng, size):
    lam, xi = mu / (1 + th), th / (1 + th)
    ys = np.arange(0, 2000, dtype=float)
    logp = np.log(lam) + (ys - 1) * np.log(lam + xi * ys) - lam - xi * ys - gammaln(ys + 1)
    cdf = np.cumsum(np.exp(logp))
    return np.searchsorted(cdf, rng.random(size) * cdf[-1]).astype(float)


def test_gp_theta_mm_reaches_the_likelihood_maximum():
    """GP counts with known mean and θ: iterating RcppML's MM step converges to the θ that
    maximises the likelihood (found by scipy), which is close to the true θ."""
    rng = np.random.default_rng(11)
    n = 20000
    F = np.ones((n, 1))
    th_true, mu = 0.5, 4.0
    y = gp_sample(mu, th_true, rng, n)
    At = sp.csc_matrix(y[:, None])
    x = np.array([mu])

    def nll(th):
        lam, xi = mu / (1 + th), th / (1 + th)
        return -(np.log(lam) + (y - 1) * np.log(lam + xi * y) - lam - xi * y).sum()

    best = minimize_scalar(nll, bounds=(0.0, 5.0), method="bounded",
                           options=dict(xatol=1e-10)).x
    th = K.gp_theta_mm(At.indptr, At.indices, At.data, 0, F, x, F.sum(0), 0.1, 0.0, 5.0, 500)
    assert th == pytest.approx(best, rel=1e-4)
    assert th == pytest.approx(th_true, rel=0.05)


@pytest.mark.parametrize("loss", LOSSES + ["gp"])
@pytest.mark.parametrize("transposed", [False, True])
def test_held_out_rows_are_as_if_deleted(loss, transposed):
    """A column solved with a hold-out equals the same column solved with the held-out rows
    deleted (zeros included: they can be held out), for every loss and either orientation of
    the hash; the held-out statistics of row_update are the NumPy sums over the mask."""
    from dask_factor.kernels.masked import cv_hash_seed, holdout_threshold, speckled_mask

    rng = np.random.default_rng(5)
    p, n, k = 120, 4, 3
    F = rng.gamma(1.0, 1.0, (p, k))
    Y = np.column_stack([draw(loss, F @ rng.uniform(0.2, 2.0, k), rng) for _ in range(n)])
    A = sp.csc_matrix(Y)
    g0, f, seed = 11, 0.25, 9
    # entry (i, j) of this block is A's (i, g0 + j), or A's (g0 + j, i) for a block of Aᵀ
    held = (speckled_mask(g0 + n, p, f, seed)[g0:].T if transposed
            else speckled_mask(p, n, f, seed, j0=g0))
    mk = (True, np.uint64(cv_hash_seed(seed)), np.uint64(holdout_threshold(f)), True,
          False, False, transposed, np.int64(g0))
    disp = np.full(p, 2.0 if loss == "nb" else 0.3)
    code = K.LOSS_CODES[loss]
    X = np.zeros((n, k))
    solve_block(A, F, disp, code, X, cd_tol=1e-12, irls_maxit=20, irls_tol=1e-10, mk=mk)
    for j in range(n):
        keep = ~held[:, j]
        Aj = sp.csc_matrix(Y[keep, j][:, None])
        x = np.zeros((1, k))
        solve_block(Aj, F[keep], disp[keep], code, x, cd_tol=1e-12, irls_maxit=20,
                    irls_tol=1e-10)
        np.testing.assert_allclose(X[j], x[0], rtol=1e-5, atol=1e-8)
    # the held-out scores of the solution (dispersion kept: estimate=False)
    out_disp, st = np.empty(n), np.zeros(len(K.ROW_STATS))
    dcol = np.full(n, disp[0])
    update_rows(A, F, dcol, code, False, [0.0, 1e6], X, out_disp, st, mk)
    mu = F @ X.T
    cover = (Y > 0) | bool(K.zeros_observed(code, 1.5))
    # the per-entry loss is checked against scipy above: here, which entries are scored
    ell = np.array([[K.unit_loss(code, Y[i, j], mu[i, j], disp[0], 1.5) if cover[i, j] else 0.0
                     for j in range(n)] for i in range(p)])
    stats = dict(zip(K.ROW_STATS, st))
    assert stats["n_test"] == held.sum() and stats["n_train"] == (~held).sum()
    assert stats["n_test_loss"] == (held & cover).sum()
    assert stats["test_objective"] == pytest.approx(ell[held & cover].sum(), rel=1e-9)
    assert stats["objective"] == pytest.approx(ell[~held & cover].sum(), rel=1e-9)
    assert stats["test_sse"] == pytest.approx(((Y - mu) ** 2)[held].sum(), rel=1e-9)
    assert stats["sse"] == pytest.approx(((Y - mu) ** 2)[~held].sum(), rel=1e-9)


def robust_np(loss, y, mu, delta, r=5.0):
    """The robust objective written with numpy: ℓ − s·max(√dev − δ, 0)² (docs/losses.md); NB
    with size ``r``, Tweedie with q = 1.5."""
    mu = np.maximum(mu, 1e-10)
    if loss == "mse":
        ell, s = (y - mu) ** 2, 1.0
    elif loss == "kl":
        ell = np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / mu), 0.0) - y + mu
        s = 0.5
    elif loss == "nb":  # the deviance: the NLL less its value at μ = y
        ell = -nbinom.logpmf(y, r, r / (r + mu))
        sat = np.where(y > 0, -nbinom.logpmf(y, r, r / (r + np.maximum(y, 1e-300))), 0.0)
        rt = np.sqrt(np.maximum(2 * (ell - sat), 0.0))
        return np.sum(ell - 0.5 * np.maximum(rt - delta, 0.0) ** 2)
    elif loss == "tweedie":  # q = 1.5: 2(y^½/(−¼) + 2y μ^−½ + 2μ^½), 4√μ at y = 0
        ell, s = 2 * (-4 * np.sqrt(y) + 2 * y / np.sqrt(mu) + 2 * np.sqrt(mu)), 1.0
    else:  # gamma: zeros left out
        y, mu = y[y > 0], mu[y > 0]
        ell, s = 2 * (-np.log(y / mu) + (y - mu) / mu), 1.0
    rt = np.sqrt(np.maximum(ell / s, 0.0))
    return np.sum(ell - s * np.maximum(rt - delta, 0.0) ** 2)


@pytest.mark.parametrize("loss,delta", [("mse", 1.345), ("kl", 1.0), ("kl", 0.2),
                                        ("nb", 1.0), ("tweedie", 0.5), ("gamma", 0.5)])
def test_robust_column_reaches_the_scipy_optimum(loss, delta):
    """robust=δ: a column's IRLS solution minimises the Huber-robustified objective (scipy on
    the NumPy objective), and robust_parts is that objective entry by entry. (KL, NB and
    Tweedie take their zeros by their pull and a step test: at δ = 0.2 most zeros are beyond
    δ, where their robust loss is concave.)"""
    rng = np.random.default_rng(4)
    m, k = 90, 3
    F = rng.gamma(1.0, 1.0, (m, k))
    mu = F @ np.array([2.0, 0.3, 1.0])
    y = rng.poisson(mu).astype(float) if loss != "gamma" else rng.gamma(4.0, mu / 4.0)
    y[:6] += 40.0  # outliers
    code = K.LOSS_CODES[loss]
    disp = np.full(m, 5.0)  # NB's size
    ent = sum(K.robust_parts(code, y[i], mu[i], 5.0, 1.5, delta)[0] for i in range(m)
              if y[i] > 0 or loss != "gamma")
    assert ent == pytest.approx(robust_np(loss, y, mu, delta), rel=1e-10)
    A = sp.csc_matrix(y[:, None])
    X = np.zeros((1, k))
    solve_block(A, F, disp, code, X, irls_maxit=500, delta=delta)
    ref = minimize(lambda x: robust_np(loss, y, F @ x, delta), np.ones(k), method="L-BFGS-B",
                   bounds=[(0, None)] * k,
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=20000, maxfun=100000))
    ours = robust_np(loss, y, F @ X[0], delta)
    assert ours <= ref.fun * (1 + 1e-7) + 1e-9
    np.testing.assert_allclose(X[0], ref.x, rtol=2e-3, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["kl", "gp", "nb", "gamma", "inverse_gaussian", "tweedie"]),
       st.integers(0, 40), st.floats(0.01, 50.0), st.floats(0.3, 20.0))
def test_unit_slope_is_the_derivative_of_unit_loss(loss, y, mu, disp):
    """unit_slope (the backtracking's directional derivative) is ∂ℓ/∂μ of unit_loss, by a
    central difference, for every loss (GP: KL's, whose objective its factor updates fit)."""
    code = K.LOSS_CODES[loss]
    y = float(y) if loss not in ("gamma", "inverse_gaussian") else float(y) + 0.5
    search = K.KL if code == K.GP else code
    h = 1e-6 * mu
    num = (K.unit_loss(search, y, mu + h, disp, 1.5)
           - K.unit_loss(search, y, mu - h, disp, 1.5)) / (2 * h)
    got = K.unit_slope(code, y, mu, disp, 1.5)
    assert got == pytest.approx(num, rel=1e-5, abs=1e-7 * (1 + abs(num)))


@pytest.mark.parametrize("loss", ["mse", "kl", "gp", "nb", "gamma", "inverse_gaussian",
                                  "tweedie"])
def test_robust_parts_of_an_exact_fit(loss):
    """An entry fitted exactly (y = μ: a zero deviance) has its plain loss and Huber factor 1;
    no division by its zero residual (an all-zero row of A fits μ = 0 exactly; there the means'
    floor leaves Tweedie a deviance of 4·10⁻⁵, within δ = 1.345)."""
    code = K.LOSS_CODES[loss]
    for y in ([0.0, 2.0] if loss not in ("gamma", "inverse_gaussian") else [2.0]):
        for delta in ((1e-4, 1.345) if y > 0 else (1.345,)):
            ent, h = K.robust_parts(code, y, y, 5.0, 1.5, delta)
            assert h == 1.0
            assert ent == pytest.approx(K.unit_loss(code, y, y, 5.0, 1.5), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("loss", ["kl", "nb", "tweedie"])
@pytest.mark.parametrize("delta", [0.2, 1.345, 50.0])
def test_robust_block_objective_is_the_numpy_objective(loss, delta):
    """block_objective under robust=δ (the scoring of every iteration and of evaluate) is the
    NumPy objective over every entry, zeros included: at δ = 0.2 most zeros' means lie beyond
    the Huber threshold, at δ = 50 none do (the plain loss)."""
    rng = np.random.default_rng(11)
    p, n, k = 70, 40, 3
    F = rng.gamma(1.0, 1.0, (p, k))
    X = rng.gamma(1.0, 1.0, (n, k))
    mu = F @ X.T
    Y = rng.poisson(mu).astype(float)
    Y[rng.random(Y.shape) < 0.3] = 0.0
    Y[:3, :4] += 30.0
    A = sp.csc_matrix(Y)
    A.sort_indices()
    code = K.LOSS_CODES[loss]
    obj, _ = K.block_objective(A.indptr, A.indices, A.data, F, X, np.full(p, 5.0), False, code,
                               1.5, delta, K.NO_PI, False)
    assert obj == pytest.approx(robust_np(loss, Y.ravel(), mu.ravel(), delta), rel=1e-10)
    # the fit's own pass (robust_column, entry by entry) agrees
    per = sum(K.robust_column(A.indptr, A.indices, A.data, j, F, X[j], np.full(p, 5.0), False,
                              code, 1.5, delta, K.NO_MASK, 0, False, np.empty((0, 0)),
                              np.empty(0), False) for j in range(n))
    assert obj == pytest.approx(per, rel=1e-12)
    # a masked fit's training objective (row_update, held-out entries left out)
    from dask_factor.kernels.masked import cv_hash_seed, holdout_threshold, speckled_mask

    held = speckled_mask(p, n, 0.3, 7)
    mk = (True, np.uint64(cv_hash_seed(7)), np.uint64(holdout_threshold(0.3)), True, False,
          False, False, np.int64(0))
    st = np.zeros(len(K.ROW_STATS))
    K.row_update(A.indptr, A.indices, A.data, F, np.full(n, 5.0), code, 1.5, False, False,
                 np.array([0.0, 1e6]), X, np.empty(n), st, mk, K.NO_MASK, K.NO_MASK, delta,
                 K.NO_PI, False, K.NO_PI)
    keep = ~held
    assert held.any() and keep.any()
    assert st[0] == pytest.approx(robust_np(loss, Y[keep], mu[keep], delta), rel=1e-10)


@pytest.mark.parametrize("loss", ["kl", "nb", "tweedie"])
def test_robust_zero_pull_and_change_are_the_per_entry_sums(loss):
    """zero_pull and robust_zero_change with δ > 0 (which take the Huber factor only where a
    zero's mean can reach δ) equal the sums of the per-entry robust slope and loss change
    (robust_parts at y = 0, a numerical derivative for the slope)."""
    rng = np.random.default_rng(12)
    p, k = 300, 4
    F = rng.gamma(1.0, 1.0, (p, k)) * rng.choice([0.01, 1.0], (p, 1))
    x = rng.gamma(1.0, 0.5, k)
    x2 = x * rng.uniform(0.5, 1.5, k)
    zmask = (rng.random(p) < 0.7).astype(float)
    disp = rng.uniform(0.5, 8.0, p)
    code = K.LOSS_CODES[loss]
    delta = 1.0
    mu, mu2 = F @ x, F @ x2
    assert (mu[zmask > 0] > K.huber_flat_mean(code, 1.5, delta)).any()
    assert (mu[zmask > 0] < K.huber_flat_mean(code, 1.5, delta)).any()
    Ft = np.ascontiguousarray(F.T)
    cz, cb, m = np.zeros(k), np.zeros(k), np.empty(p)
    K.zero_pull(F, Ft, x, 0, disp, False, code, 1.5, zmask, m, K.pull_scratch(k), cz, cb, delta)
    np.testing.assert_allclose(m, mu, rtol=1e-13)

    def rho(i, v):
        return K.robust_parts(code, 0.0, v, disp[i], 1.5, delta)[0]

    slope = np.array([(rho(i, mu[i] * (1 + 1e-6)) - rho(i, mu[i] * (1 - 1e-6))) / (2e-6 * mu[i])
                      for i in range(p)])
    np.testing.assert_allclose(cb, F.T @ (zmask * slope), rtol=1e-5)
    change = K.robust_zero_change(mu, mu2, zmask, 0, disp, False, code, 1.5, delta)
    ref = sum(zmask[i] * (rho(i, mu2[i]) - rho(i, mu[i])) for i in range(p))
    assert change == pytest.approx(ref, rel=1e-10)


def test_zero_inflation_em_reaches_the_closed_form_and_the_truth():
    """Zero-inflated NB counts with a known π and mean: iterating the kernel's EM step for π
    (μ fixed) converges to the maximum-likelihood π̂ = (n₀/N − P₀)/(1 − P₀), close to the true
    π."""
    rng = np.random.default_rng(12)
    N, mu, r, pi_true = 20000, 4.0, 3.0, 0.3
    y = rng.negative_binomial(r, r / (r + mu), N).astype(float)
    y[rng.random(N) < pi_true] = 0.0
    A = sp.csc_matrix(y[:, None])
    F, x = np.ones((N, 1)), np.array([mu])
    p0 = (r / (r + mu)) ** r
    closed = ((y == 0).mean() - p0) / (1 - p0)
    pi = 0.1
    for _ in range(400):
        pi = K.zi_pi_step(A.indptr, A.indices, 0, F, x, np.full(N, r), False, K.NB, 1.5, pi,
                          K.NO_MASK, 0)
    assert pi == pytest.approx(closed, rel=1e-6)
    assert pi == pytest.approx(pi_true, abs=0.02)


def _zi_rows(code, r_true, pi_true, rng, n=20000):
    """Rows of NB (or GP) counts with known dispersions and extra zeros at a known π per row,
    as columns of Aᵀ: (At, F, W rows, μ, Y)."""
    k = 2
    H = rng.gamma(2.0, 1.0, (n, k))
    Wrows = np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]])
    mu = Wrows @ H.T
    if code == K.NB:
        Y = rng.negative_binomial(r_true[:, None], r_true[:, None] / (r_true[:, None] + mu))
    else:
        Y = np.stack([gp_sample_each(mu[i], r_true[i], rng) for i in range(3)])
    Y = Y.astype(float)
    Y[rng.random(Y.shape) < pi_true[:, None]] = 0.0
    return sp.csc_matrix(Y.T), H, Wrows, mu, Y


def gp_sample_each(mu, th, rng):
    """GP counts with means ``mu`` (a vector) and dispersion θ, by inversion per entry."""
    lam, xi = mu / (1 + th), th / (1 + th)
    ys = np.arange(0, 400, dtype=float)
    logp = (np.log(lam[:, None]) + (ys - 1) * np.log(lam[:, None] + xi * ys) - lam[:, None]
            - xi * ys - gammaln(ys + 1))
    cdf = np.cumsum(np.exp(logp), axis=1)
    u = rng.random(mu.size) * cdf[:, -1]
    return (cdf < u[:, None]).sum(axis=1).astype(float)


@pytest.mark.parametrize("code", [K.NB, K.GP])
def test_zero_inflated_dispersion_counts_zeros_by_their_count_share(code):
    """Zero-inflated NB/GP rows with known dispersion and π: each zero enters the dispersion
    estimate weighted by its posterior share of the count model (NB: the moments estimate equals
    the weighted closed form), which recovers the true dispersion; counting every zero as a
    count lands further from it on every row."""
    rng = np.random.default_rng(21)
    r_true = np.array([2.0, 5.0, 0.8]) if code == K.NB else np.array([0.3, 0.6, 0.2])
    pi_true = np.array([0.3, 0.2, 0.4])
    At, H, Wrows, mu, Y = _zi_rows(code, r_true, pi_true, rng)
    bounds = np.array([0.01, 1e6]) if code == K.NB else np.array([0.0, 5.0])

    def estimate(zpi):
        out, st = np.empty(3), np.zeros(len(K.ROW_STATS))
        update_rows(At, H, r_true.copy(), code, True, bounds, Wrows, out, st, zpi=zpi,
                    zpi_by_col=True)
        return out

    weighted, naive = estimate(pi_true.copy()), estimate(K.NO_PI)
    if code == K.NB:
        p0 = (r_true[:, None] / (r_true[:, None] + mu)) ** r_true[:, None]
        w = np.where(Y > 0, 1.0, (1 - pi_true[:, None]) * p0
                     / (pi_true[:, None] + (1 - pi_true[:, None]) * p0))
        closed = (w * mu ** 2).sum(1) / (w * ((Y - mu) ** 2 - mu)).sum(1)
        np.testing.assert_allclose(weighted, closed, rtol=1e-9)
        np.testing.assert_allclose(weighted, r_true, rtol=0.15)
    else:
        np.testing.assert_allclose(weighted, r_true, rtol=0.2, atol=0.03)
    err_w, err_n = np.abs(np.log(weighted / r_true)), np.abs(np.log(naive / r_true))
    assert np.all(err_w < err_n) and err_n.max() > 0.15, (weighted, naive)


def test_zero_inflated_column_reaches_the_scipy_optimum():
    """zi: a column's IRLS solution with π fixed minimises the zero-inflated NB negative
    log-likelihood (scipy on a NumPy objective)."""
    rng = np.random.default_rng(13)
    m, k, r, pi = 200, 3, 4.0, 0.25
    F = rng.gamma(1.0, 1.0, (m, k))
    mu = F @ np.array([2.0, 0.5, 1.0])
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    y[rng.random(m) < pi] = 0.0

    def nll(x):
        mu = np.maximum(F @ x, 1e-10)
        p0 = (r / (r + mu)) ** r
        pos = y > 0
        return (-np.log(pi + (1 - pi) * p0[~pos]).sum()
                - (np.log1p(-pi) + nbinom.logpmf(y[pos], r, r / (r + mu[pos]))).sum())

    A = sp.csc_matrix(y[:, None])
    X = np.zeros((1, k))
    solve_block(A, F, np.full(m, r), K.NB, X, irls_maxit=500, zpi=np.full(m, pi))
    ref = minimize(nll, np.ones(k), method="L-BFGS-B", bounds=[(0, None)] * k,
                   options=dict(ftol=1e-15, gtol=1e-12, maxiter=20000, maxfun=100000))
    assert nll(X[0]) <= ref.fun * (1 + 1e-8) + 1e-9
    np.testing.assert_allclose(X[0], ref.x, rtol=2e-3, atol=1e-4)


# --------------------------------------------------------------------------------------------
# the pieces of an IRLS step: curvature, the stored entries' loss up to a constant, the zeros'
# change, each against the per-entry loss (finite differences, numpy's own formulas)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

STEP_CASES = [("kl", K.KL, 1.5), ("nb", K.NB, 1.5), ("gamma", K.GAMMA, 2.0),
              ("inverse_gaussian", K.INVERSE_GAUSSIAN, 3.0), ("tweedie", K.TWEEDIE, 1.5),
              ("tweedie", K.TWEEDIE, 1.3)]


@pytest.mark.parametrize("loss,code,q", STEP_CASES)
@settings(max_examples=40, deadline=None)
@given(y=st.integers(1, 60), mu=st.floats(0.05, 80.0), r=st.floats(0.05, 50.0))
def test_step_curvature_is_the_larger_of_fisher_and_observed(loss, code, q, y, mu, r):
    """h = max(w, ℓ''(μ)) (capped at W_CAP) with ℓ'' by central differences of the numpy
    loss, in the IRLS subproblem's units (the deviances are twice those: ½ of their ℓ'')."""
    y = float(y)
    scale = 0.5 if loss in ("gamma", "inverse_gaussian", "tweedie") else 1.0

    def ell(m):
        return scale * column_loss_np(loss, np.array([y]), np.array([m]), r=r, q=q)

    step = 1e-4 * mu
    obs = (ell(mu + step) - 2 * ell(mu) + ell(mu - step)) / step ** 2
    w = K.irls_weight(code, mu, r, q)
    h = K.step_curvature(code, y, mu, r, q, w)
    assert h >= w
    assert h == pytest.approx(min(max(w, obs), K.W_CAP), rel=1e-4, abs=1e-9 * w)


@settings(max_examples=60, deadline=None)
@given(y=st.integers(1, 200), m1=st.floats(1e-3, 100.0), m2=st.floats(1e-3, 100.0),
       r=st.sampled_from([0.02, 0.5, 10.0, 1e6]))
def test_nb_stored_value_changes_as_the_full_loss(y, m1, m2, r):
    """stored_value drops NB's μ-free terms: its changes are the full loss's, also at r = 1e6
    where a form with r·log r inside would lose them to rounding."""
    col = sp.csc_matrix(np.array([[float(y)]]))
    ms = np.empty((6, 1))

    def sv(m):
        return K.stored_value(col.indptr, col.indices, col.data, 0, np.array([[m]]),
                              np.array([1.0]), np.array([r]), True, K.NB, 1.5, K.NO_MASK, 0, ms)

    full = column_loss_np("nb", np.array([float(y)]), np.array([m2]), r=r) - column_loss_np(
        "nb", np.array([float(y)]), np.array([m1]), r=r)
    assert sv(m2) - sv(m1) == pytest.approx(full, rel=1e-7, abs=1e-9)
    assert ms[0, 0] == m1  # the μ of the last evaluation
    # a small step (what the step test compares), against the change in its accurate form
    # (r + y)·log1p(Δ/(r + μ1)) − y·log1p(Δ/μ1)
    m3 = m1 * (1 + 1e-7)
    exact = (r + y) * np.log1p((m3 - m1) / (r + m1)) - y * np.log1p((m3 - m1) / m1)
    assert sv(m3) - sv(m1) == pytest.approx(exact, rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("loss,code,q", [("nb", K.NB, 1.5), ("tweedie", K.TWEEDIE, 1.5),
                                         ("tweedie", K.TWEEDIE, 1.2)])
def test_zero_change_and_the_concave_bound(loss, code, q):
    """zero_change sums ℓ(0, μ2) − ℓ(0, μ1) over the masked rows (numpy's loss); zero_pull's
    ``cb·Δx`` bounds it from above (ℓ(0, ·) concave) and its ``cz`` is Σ zero_slope·F."""
    rng = np.random.default_rng(3)
    p, k = 200, 4
    F = rng.uniform(0, 1, (p, k))
    x1, x2 = rng.uniform(0, 2, k), rng.uniform(0, 2, k)
    r = rng.uniform(0.05, 20, p)
    zmask = (rng.uniform(size=p) < 0.7).astype(float)
    mu1, mu2 = F @ x1, F @ x2
    Ft = np.ascontiguousarray(F.T)
    got = K.zero_change(mu1, mu2, zmask, 0, r, False, code, q)
    z = zmask > 0
    ref = sum(column_loss_np(loss, np.zeros(1), np.array([mu2[i]]), r=r[i], q=q)
              - column_loss_np(loss, np.zeros(1), np.array([mu1[i]]), r=r[i], q=q)
              for i in np.flatnonzero(z))
    assert got == pytest.approx(ref, rel=1e-9)
    if code == K.TWEEDIE:  # the start's powers given (irls_column's halvings): the same sum
        base = np.empty(p)
        K._powers(mu1, 2.0 - q, base)
        assert K.zero_change(mu1, mu2, zmask, 0, r, False, code, q, base) == got
    mu, cz, cb = np.empty(p), np.empty(k), np.empty(k)
    K.zero_pull(F, Ft, x1, 0, r, False, code, q, zmask, mu, K.pull_scratch(k), cz, cb)
    np.testing.assert_allclose(mu, mu1, rtol=1e-12)
    assert cb @ (x2 - x1) >= got
    slope = np.array([K.zero_slope(code, m, ri, q) for m, ri in zip(mu1, r)])
    np.testing.assert_allclose(cz, F.T @ (slope * zmask), rtol=1e-10)


def _column_case(seed, p=150, k=3, n_ex=0):
    """One CSC column of counts against F (p × k) with zeros at large means, and ``n_ex``
    excluded rows (sorted)."""
    rng = np.random.default_rng(seed)
    F = rng.gamma(1.0, 1.0, (p, k))
    x = rng.gamma(1.0, 1.0, k)
    y = rng.poisson(F @ x) * (rng.random(p) < 0.6)
    y[rng.random(p) < 0.05] += 30  # outliers
    A = sp.csc_matrix(y.astype(float)[:, None])
    ex = np.sort(rng.choice(p, n_ex, replace=False)).astype(np.int64)
    return rng, F, x, y.astype(float), A, ex


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), by_col=st.booleans(),
       code=st.sampled_from([K.NB, K.GP, K.KL]), n_ex=st.integers(0, 6))
def test_zero_inflated_sums_equal_the_row_by_row_mixture(seed, by_col, code, n_ex):
    """zi_entries and zero_shares (every row scored as a zero in vectorised passes, the stored
    and excluded rows taken back out) equal the mixture's terms summed row by row in numpy
    (P₀ = (r/(r+μ))^r for NB, e^{−μ/(1+θ)} for GP, e^{−μ} for KL), over tiles and a remainder
    (p = 150) and with excluded rows."""
    rng, F, x, y, A, ex = _column_case(seed, n_ex=n_ex)
    p, k = F.shape
    disp = rng.uniform(0.2, 5.0, p)
    zpi = rng.uniform(0.0, 0.6, 1 if by_col else p)
    pis = np.full(p, zpi[0]) if by_col else zpi
    mu = F @ x
    if code == K.NB:
        p0 = (disp / (disp + mu)) ** disp
        slope = disp / (disp + mu)
    else:
        p0 = np.exp(-mu / (1.0 + disp)) if code == K.GP else np.exp(-mu)
        slope = np.ones(p)
    mix = pis + (1 - pis) * p0
    keep = (1 - pis) * p0 / mix
    kept = np.ones(p, bool)
    kept[ex] = False
    zero = kept & (y == 0)
    ref = (-np.log1p(-pis[kept & (y > 0)])).sum() - np.log(mix[zero]).sum()
    ref_cz = ((keep * slope)[zero, None] * F[zero]).sum(0)
    cz = np.zeros(k)
    got = K.zi_entries(A.indptr, A.indices, 0, F, np.ascontiguousarray(F.T), x, disp, False,
                       code, zpi, by_col, ex, n_ex, np.empty(p), cz, True)
    assert got == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(cz, ref_cz, rtol=1e-11)
    # without Fᵀ it is made inside, to the same value
    assert K.zi_entries(A.indptr, A.indices, 0, F, K.NO_FT, x, disp, False, code, zpi, by_col,
                        ex, n_ex, K.NO_PI, cz, False) == got
    n_kept, tz, s1, s2 = K.zero_shares(A.indptr, A.indices, 0, F, x, disp, False, code, 1.5,
                                       zpi[0] if by_col else 0.0, K.NO_PI if by_col else zpi,
                                       ex, n_ex)
    assert n_kept == kept.sum()
    assert tz == pytest.approx((1 - keep[zero]).sum(), rel=1e-10, abs=1e-10)
    assert s1 == pytest.approx((keep * mu)[zero].sum(), rel=1e-10, abs=1e-10)
    assert s2 == pytest.approx((keep * mu ** 2)[zero].sum(), rel=1e-10, abs=1e-10)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ex=st.integers(0, 6),
       delta=st.sampled_from([1e-4, 0.5, 1.345, 4.0]))
def test_robust_least_squares_from_the_gram_equals_the_dense_pass(seed, n_ex, delta):
    """Robust least squares from FᵀF (corrected at the stored, excluded and outlying zero rows)
    gives the dense pass's objective and weighted normal equations, and the objective is
    Huber's loss of the kept residuals (numpy)."""
    rng, F, x, y, A, ex = _column_case(seed, n_ex=n_ex)
    p, k = F.shape
    args = (A.indptr, A.indices, A.data, 0, F, x, np.zeros(p), False, K.MSE, 1.5, delta, ex,
            n_ex, False)
    G1, b1 = np.zeros((k, k)), np.zeros(k)
    dense = K.robust_column(*args, G1, b1, True)
    G2, b2 = np.zeros((k, k)), np.zeros(k)
    fast = K.robust_column(*args, G2, b2, True, np.ascontiguousarray(F.T), F.T @ F, np.empty(p))
    kept = np.ones(p, bool)
    kept[ex] = False
    r = np.abs(y - F @ x)[kept]
    huber = np.where(r <= delta, r ** 2, 2 * delta * r - delta ** 2).sum()
    assert dense == pytest.approx(huber, rel=1e-10)
    assert fast == pytest.approx(huber, rel=1e-10)
    # Q minus the corrections: rounding relative to FᵀF (at δ = 1e-4 nearly every row is an
    # outlier and the weighted Gram is ~δ times smaller than FᵀF)
    scale = np.abs(F.T @ F).max()
    np.testing.assert_allclose(np.tril(G2), np.tril(G1), rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(b2, b1, rtol=1e-12, atol=1e-12 * np.abs(b1).max())


@pytest.mark.parametrize("by_col", [False, True])
def test_nb_log_gamma_sum_is_the_scipy_sum(by_col):
    """NB's μ-free terms summed over a column's kept entries (small counts from the column's
    running sum of logarithms, large and fractional ones by lgamma) against scipy's gammaln."""
    rng = np.random.default_rng(5)
    p = 200
    y = np.concatenate([rng.integers(1, 17, 120), rng.integers(17, 400, 30), [2.5, 0.75]])
    rows = np.sort(rng.choice(p, y.size, replace=False))
    A = sp.csc_matrix((y, (rows, np.zeros(y.size, dtype=int))), shape=(p, 1))
    disp = rng.uniform(0.05, 50.0, p) if not by_col else np.array([3.7])
    ex = np.sort(rng.choice(rows, 20, replace=False)).astype(np.int64)
    keep = ~np.isin(A.indices, ex)
    yk, rk = A.data[keep], (disp[A.indices[keep]] if not by_col else disp[0])
    want = np.sum(gammaln(yk + 1) + gammaln(rk) - gammaln(yk + rk))
    got = K.nb_log_gamma_sum(A.indptr, A.indices, A.data, 0, disp, by_col, ex, ex.size)
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("case", [("nb", 0.0, False), ("tweedie", 0.0, False),
                                  ("nb", 1.345, False), ("nb", 0.0, True)])
def test_float32_transpose_gives_the_same_solutions(case):
    """Fᵀ handed over in float32 (F's values are float32) streams half the bytes and changes
    nothing: the solutions are the float64 transpose's to the bit (NB, Tweedie, robust NB, zero
    inflation)."""
    loss, delta, zi = case
    rng = np.random.default_rng(11)
    p, n, k = 70, 12, 3
    F = rng.uniform(0.1, 2.0, (p, k)).astype(np.float32).astype(np.float64)
    A = sp.csc_matrix(rng.poisson(F @ rng.uniform(0.2, 1.5, (k, n))).astype(np.float64))
    code = K.LOSS_CODES[loss]
    zpi = np.full(p, 0.2) if zi else K.NO_PI
    out = []
    for Ft in (K.NO_FT, np.ascontiguousarray(F.T, dtype=np.float32)):
        X = np.zeros((n, k))  # the H step's argument types (a cold start's float32 Xprev)
        K.irls_block(A.indptr, A.indices, A.data, F, np.full(p, 2.0), False, code, 1.5, 0.0,
                     0.0, True, 0.0, np.zeros((1, k), dtype=np.float32), np.ones(k), False,
                     100, 1e-10, 20, 1e-8, X,
                     K.NO_HOLDOUT, K.NO_MASK, K.NO_MASK, delta, zpi, False, K.NO_PI, 0.0, Ft)
        out.append(X)
    assert K.row_passes(code, 1.5, delta, zi)
    assert out[0].max() > 0.1 and np.array_equal(out[0], out[1])
