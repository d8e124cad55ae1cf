"""engine.irls (count-data losses on the driver): a whole fit against a dense NumPy/SciPy replica
of the same alternating IRLS, monotone objectives, determinism across schedulers and worker
counts, out-of-core equals in-memory."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls
from scipy.special import gammaln

from dask_factor import nmf
from dask_factor.datasets import simulate_counts

# --------------------------------------------------------------------------------------------
# a dense NumPy replica of the alternating IRLS (docs/losses.md), written without the kernels


def unit(loss, y, mu, r):
    mu = np.maximum(mu, 1e-10)
    if loss == "kl":
        return np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / mu), 0.0) - y + mu
    lg = gammaln
    return (-lg(y + r) + lg(r) + lg(y + 1) - r * np.log(r / (r + mu))
            - y * np.log(mu / (r + mu)))


def weight(loss, mu, r):
    if loss == "kl":
        return 1.0 / np.maximum(mu, 1e-4)
    m = np.maximum(mu, 1e-10)
    return np.minimum(r / (m * (r + m)), 1e6)


def zero_slope(loss, mu, r):
    return np.ones_like(mu) if loss == "kl" else r / (r + np.maximum(mu, 0.0))


def curvature(loss, y, mu, r, w):
    """The curvature of a stored entry in an IRLS step: max(Fisher weight, observed)."""
    if loss == "kl":
        obs = y / np.maximum(mu, 1e-4) ** 2
    else:
        m = np.maximum(mu, 1e-10)
        obs = y / m ** 2 - (y + r) / (r + m) ** 2
    return np.minimum(np.maximum(w, obs), 1e6)


def relative_change(x, xold):
    return np.max(np.abs(x - xold) / (np.abs(xold) + 1e-12))


def solve_column(loss, y, F, x, r, maxit=5, tol=1e-4, keep=None, cold=False, gain_tol=0.0):
    """IRLS for one column with an exact NNLS per step (scipy) and the same step halving;
    entries outside ``keep`` (held out or missing) take no part. Each step's quadratic has
    the true gradient and, per stored entry, the larger of the Fisher weight and the observed
    curvature. A cold start begins at ``x = c·1`` with ``c`` matching the model's sum over the
    kept entries to the column's (Σμ = Σy), as the kernel does. A step's
    change of the objective is measured as the kernel's step test does: the stored entries'
    change plus the zeros' tangent (their slope at the step's start times the change of μ),
    or the exact change where that bound is positive; with ``gain_tol`` the IRLS stops at a
    step that lowers it by at most ``gain_tol`` times the steps' decrease so far."""
    keep = np.ones(y.size, bool) if keep is None else keep
    nz = (y > 0) & keep
    zero = (y == 0) & keep
    obj = lambda v: unit(loss, y, F @ v, r)[keep].sum()  # noqa: E731
    stored = lambda v: unit(loss, y, F @ v, r)[nz].sum()  # noqa: E731
    if cold:
        num, den = y[nz].sum(), F[keep].sum()
        if num > 0 and den > 0:
            x = np.full(F.shape[1], num / den)
    f_old = obj(x)
    gain = 0.0
    for step in range(maxit):
        mu = F @ x
        w = weight(loss, mu, r) * nz
        h = w if (cold and step == 0 and not x.any()) else curvature(loss, y, mu, r, w) * nz
        G = (F * h[:, None]).T @ F + 1e-15 * np.eye(F.shape[1])
        b = F.T @ (h * mu - w * (mu - y)) - F.T @ (zero_slope(loss, mu, r) * zero)
        L = np.linalg.cholesky(G)
        xnew, _ = nnls(L.T, np.linalg.solve(L, b), maxiter=1000)
        xold = x
        f_new = obj(xnew)
        tries = 0
        while not f_new <= f_old and tries < 10 and relative_change(xnew, xold) >= tol:
            xnew = xold + 0.5 * (xnew - xold)
            f_new = obj(xnew)
            tries += 1
        if not f_new <= f_old:
            return xold
        change = stored(xnew) - stored(xold) + zero_slope(loss, mu, r)[zero] @ (
            F[zero] @ (xnew - xold))
        if change > 0:
            change = f_new - f_old
        gain -= change
        x, f_old = xnew, f_new
        if relative_change(x, xold) < tol or -change <= gain_tol * gain:
            break
    return x


def reference_fit(loss, A, W0, iters, r0=10.0, keep=None, gain_tol=0.05):
    """H then W each iteration, L1 normalisation, d from W, warm starts; NB size per row by
    moments after the W update; only the entries in ``keep`` (m × n bool) are fitted."""
    m, n = A.shape
    keep = np.ones(A.shape, bool) if keep is None else keep
    A = np.where(keep, A, 0.0)
    k = W0.shape[1]
    W = W0.copy()
    r = np.full(m, r0)
    Hn = d = None
    for t in range(iters):
        H = np.zeros((k, n))
        for j in range(n):
            x0 = np.zeros(k) if t == 0 else Hn[:, j] * d
            H[:, j] = solve_column(loss, A[:, j], W, x0, r, keep=keep[:, j], cold=t == 0,
                                   gain_tol=gain_tol)
        dh = np.abs(H).sum(1) + 1e-15
        Hn = H / dh[:, None]
        Wr = np.zeros((m, k))
        for i in range(m):
            x0 = np.zeros(k) if t == 0 else W[i] * dh
            Wr[i] = solve_column(loss, A[i], Hn.T, x0, np.full(n, r[i]), keep=keep[i],
                                 cold=t == 0, gain_tol=gain_tol)
        d = np.abs(Wr).sum(0) + 1e-15
        W = Wr / d
        if loss == "nb":
            mu = Wr @ Hn
            num = (mu ** 2 * keep).sum(1)
            den = (((A - mu) ** 2 - mu) * keep).sum(1)
            r = np.where((den > 1e-10) & (num > 1e-10), np.clip(num / den, 0.01, 1e6), 1e6)
    return W, d, Hn, r


@pytest.fixture(scope="module")
def small_counts():
    A = simulate_counts(36, 24, k=3, density=0.7, seed=5).compute().toarray().astype(np.float64)
    # every row and column has more non-zeros than the rank: each weighted Gram is definite,
    # so each IRLS step has one solution for both implementations to find
    assert (A > 0).sum(0).min() > 3 and (A > 0).sum(1).min() > 3
    return A


@pytest.mark.parametrize("gain_tol", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("loss", ["kl", "nb"])
def test_whole_fit_matches_the_dense_reference(small_counts, loss, gain_tol):
    """The whole fit against the dense reference, with RcppML's stop rule alone (gain_tol 0),
    the default irls_gain_tol and a large one (which stops most solves after a step or two)."""
    A = small_counts
    rng = np.random.default_rng(0)
    W0 = rng.uniform(size=(A.shape[0], 3))
    iters = 4
    W, d, H, r = reference_fit(loss, A, W0, iters, gain_tol=gain_tol)
    model = nmf(sp.csc_matrix(A), 3, w_init=W0, maxit=iters, tol=0, loss=loss, dtype="float64",
                cd_maxit=1000, cd_tol=1e-14, sort_model=False, chunks=7,
                irls_gain_tol=gain_tol)
    np.testing.assert_allclose(model.W, W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.d, d, rtol=1e-5)
    np.testing.assert_allclose(model.H, H, rtol=1e-5, atol=1e-8)
    ref_obj = unit(loss, A, (W * d) @ H, r[:, None]).sum()
    assert model.objective == pytest.approx(ref_obj, rel=1e-6)
    if loss == "nb":
        np.testing.assert_allclose(model.dispersion, r, rtol=1e-5)


@pytest.mark.parametrize("loss,extra", [("kl", {}), ("nb", {"dispersion": "none"}),
                                        ("gamma", {}), ("inverse_gaussian", {}),
                                        ("tweedie", {"tweedie_power": 1.3})])
def test_objective_decreases_monotonically(loss, extra):
    A = simulate_counts(300, 80, k=4, density=0.2, seed=2).compute()
    model = nmf(A, 4, seed=3, maxit=12, tol=0, loss=loss, **extra)
    h = np.asarray(model.objective_history)
    assert np.all(np.isfinite(h)) and h.size == 12
    # every column and row solve starts from the previous model and backtracks until its part
    # of the objective does not rise: the total falls (float32 storage of W rounds it)
    assert np.all(np.diff(h) <= 1e-6 * np.abs(h[1:])), np.diff(h)
    assert h[-1] < h[0]


@pytest.fixture(scope="module")
def counts_small():
    return simulate_counts(400, 60, k=3, density=0.2, seed=9).compute()


def test_every_loss_is_the_same_on_threads_and_a_two_worker_cluster(counts_small):
    from distributed import Client, LocalCluster

    losses = ["kl", "nb", "gp", "gamma", "inverse_gaussian", "tweedie"]
    local = {loss: nmf(counts_small, 3, seed=4, maxit=4, tol=0, loss=loss) for loss in losses}
    cv = dict(seed=4, maxit=4, tol=0, loss="nb", test_fraction=0.2, cv_seed=1, patience=10)
    local_cv = nmf(counts_small, 3, **cv)
    rob = dict(seed=4, maxit=3, tol=0, loss="kl", robust=True)
    local_rob = nmf(counts_small, 3, **rob)
    zis = {zi: nmf(counts_small, 3, seed=4, maxit=3, tol=0, loss="nb", zi=zi)
           for zi in ("row", "col")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as lc, Client(lc) as client:
        for loss in losses:
            other = nmf(counts_small, 3, seed=4, maxit=4, tol=0, loss=loss, client=client)
            assert np.array_equal(other.W, local[loss].W), loss
            assert np.array_equal(other.d, local[loss].d), loss
            assert np.array_equal(other.H, local[loss].H), loss
            assert other.objective_history == local[loss].objective_history, loss
        other = nmf(counts_small, 3, client=client, **cv)  # a cross-validated fit too
        assert np.array_equal(other.W, local_cv.W) and np.array_equal(other.H, local_cv.H)
        assert other.test_objective_history == local_cv.test_objective_history
        other = nmf(counts_small, 3, client=client, **rob)  # and a robust one
        assert np.array_equal(other.W, local_rob.W) and np.array_equal(other.H, local_rob.H)
        assert other.objective_history == local_rob.objective_history
        for zi, ref in zis.items():  # zero inflation, π by row and by column
            other = nmf(counts_small, 3, seed=4, maxit=3, tol=0, loss="nb", zi=zi, client=client)
            assert np.array_equal(other.W, ref.W) and np.array_equal(other.pi, ref.pi), zi
            assert other.objective_history == ref.objective_history, zi


def test_out_of_core_equals_in_memory(tmp_path, counts_small):
    from dask_factor.io import open_matrix, write_matrix

    path = tmp_path / "a.zarr"
    write_matrix(counts_small, path)
    lazy = open_matrix(path)
    for loss in ("nb", "tweedie"):
        mem = nmf(counts_small, 3, seed=1, maxit=3, tol=0, loss=loss, chunks=64)
        ooc = nmf(lazy, 3, seed=1, maxit=3, tol=0, loss=loss, chunks=64, cache="none")
        assert np.array_equal(mem.W, ooc.W) and np.array_equal(mem.H, ooc.H), loss
        assert mem.objective == ooc.objective
        assert ooc.evaluate(path, loss=loss) == pytest.approx(ooc.objective, rel=1e-9)


# --------------------------------------------------------------------------------------------
# masked fits and cross-validation (held-out and missing entries get zero IRLS weight)


@pytest.mark.parametrize("loss", ["kl", "nb"])
def test_cross_validated_fit_matches_the_dense_reference(small_counts, loss):
    """test_fraction: the returned (best held-out) model equals the dense replica fitted on the
    training entries only for the same number of iterations; the held-out loss (own and MSE)
    and the training objective equal NumPy sums over the speckled mask."""
    from dask_factor.kernels.masked import speckled_mask

    A = small_counts
    m, n = A.shape
    W0 = np.random.default_rng(1).uniform(size=(m, 3))
    model = nmf(sp.csc_matrix(A), 3, w_init=W0, maxit=4, tol=0, loss=loss, dtype="float64",
                cd_maxit=1000, cd_tol=1e-14, sort_model=False, chunks=7, test_fraction=0.2,
                cv_seed=3, patience=10)
    test = speckled_mask(m, n, 0.2, 3)
    assert 0.1 < test.mean() < 0.3 and (test & (A == 0)).any()  # zeros are held out too
    W, d, H, r = reference_fit(loss, A, W0, model.best_iter, keep=~test)
    np.testing.assert_allclose(model.W, W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.H, H, rtol=1e-5, atol=1e-8)
    mu = (W * d) @ H
    ell = unit(loss, A, mu, r[:, None])
    assert model.objective == pytest.approx(ell[~test].sum(), rel=1e-6)
    assert model.test_objective == pytest.approx(ell[test].mean(), rel=1e-6)
    assert model.train_objective == pytest.approx(ell[~test].mean(), rel=1e-6)
    assert model.test_loss == pytest.approx(((A - mu) ** 2)[test].mean(), rel=1e-6)
    assert model.train_loss == pytest.approx(((A - mu) ** 2)[~test].mean(), rel=1e-6)
    assert model.test_objective_history[model.best_iter - 1] == model.test_objective
    assert model.test_objective == min(model.test_objective_history)
    if loss == "nb":
        np.testing.assert_allclose(model.dispersion, r, rtol=1e-5)


def test_user_mask_and_mask_zeros_match_the_dense_reference(small_counts):
    """mask=<matrix>: the masked entries are missing (NB); mask="zeros": only the non-zero
    entries are observed (KL)."""
    A = small_counts
    m, n = A.shape
    W0 = np.random.default_rng(2).uniform(size=(m, 3))
    M = np.random.default_rng(3).random((m, n)) < 0.15
    kw = dict(w_init=W0, maxit=3, tol=0, dtype="float64", cd_maxit=1000, cd_tol=1e-14,
              sort_model=False, chunks=7)
    model = nmf(sp.csc_matrix(A), 3, loss="nb", mask=sp.csc_matrix(M), **kw)
    W, d, H, r = reference_fit("nb", A, W0, 3, keep=~M)
    np.testing.assert_allclose(model.W, W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.H, H, rtol=1e-5, atol=1e-8)
    assert model.objective == pytest.approx(
        unit("nb", A, (W * d) @ H, r[:, None])[~M].sum(), rel=1e-6)
    model = nmf(sp.csc_matrix(A), 3, loss="kl", mask="zeros", **kw)
    W, d, H, _ = reference_fit("kl", A, W0, 3, keep=A > 0)
    np.testing.assert_allclose(model.W, W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.H, H, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("loss", ["kl", "nb", "gp", "gamma", "inverse_gaussian", "tweedie"])
def test_held_out_values_do_not_influence_the_fit(counts_small, loss):
    """Changing the values of the held-out entries leaves the fit bitwise the same (only the
    held-out scores change)."""
    from dask_factor.kernels.masked import speckled_mask

    A = counts_small.toarray().astype(np.float64)
    test = speckled_mask(*A.shape, 0.1, 7)
    B = A.copy()
    B[test] = np.random.default_rng(0).poisson(20.0, test.sum()) + 1.0
    kw = dict(seed=4, maxit=3, tol=0, loss=loss, test_fraction=0.1, cv_seed=7, patience=10)
    a, b = nmf(sp.csc_matrix(A), 3, **kw), nmf(sp.csc_matrix(B), 3, **kw)
    # every iteration's model is the same: its training objective, bitwise
    assert a.objective_history == b.objective_history, loss
    assert a.test_objective_history != b.test_objective_history
    if a.best_iter == b.best_iter:
        assert np.array_equal(a.W, b.W) and np.array_equal(a.H, b.H), loss


@pytest.mark.parametrize("zi", ["row", "col"])
def test_zero_inflated_fit_recovers_the_inflation(zi):
    """NB counts with extra zeros at a known π per row (or column): the mixture's objective
    never rises, and π is recovered (correlation with the truth, mean within 0.05)."""
    rng = np.random.default_rng(0)
    m, n, k = 150, 120, 3
    mu = rng.gamma(1.0, 1.0, (m, k)) @ rng.gamma(1.0, 2.0, (k, n))
    Y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(float)
    pi_true = rng.uniform(0.05, 0.4, m if zi == "row" else n)
    extra = rng.random(Y.shape) < (pi_true[:, None] if zi == "row" else pi_true[None, :])
    Y[extra] = 0.0
    fit = nmf(sp.csc_matrix(Y), k, seed=1, maxit=20, tol=0, loss="nb", zi=zi,
              dispersion="none", nb_size_init=5.0)
    h = np.asarray(fit.objective_history)
    assert np.all(np.diff(h) <= 1e-6 * np.abs(h[1:])), np.diff(h)
    assert fit.pi.shape == pi_true.shape and fit.settings["zi"] == zi
    assert np.corrcoef(fit.pi, pi_true)[0, 1] > 0.8
    assert abs(fit.pi.mean() - pi_true.mean()) < 0.05
    plain = nmf(sp.csc_matrix(Y), k, seed=1, maxit=20, tol=0, loss="nb", dispersion="none",
                nb_size_init=5.0)
    assert fit.objective < plain.objective  # the mixture explains the extra zeros
