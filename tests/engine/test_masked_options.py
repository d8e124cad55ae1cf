"""Masked fits with the user's mask matrix and every per-factor option, against a dense NumPy
reference (exact NNLS solves of each column's and row's own masked normal equations)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

from dask_factor import nmf
from dask_factor.engine.als import ALSConfig
from dask_factor.engine.blocks import as_blocked
from dask_factor.engine.masked import MaskSpec, Penalties, fit_masked
from dask_factor.engine.multi import SideSpec
from dask_factor.kernels.masked import speckled_mask
from dask_factor.nmf import initial_w

EPS = 1e-15
K = 4


def _nnls_gram(G, b):
    """argmin ½xᵀGx − bᵀx over x ≥ 0 (G symmetric positive definite)."""
    L = np.linalg.cholesky(G)
    return nnls(L.T, np.linalg.solve(L, b), maxiter=5000)[0]


def _scale(F):  # L1 column scale, as the engine's norm="L1"
    return np.abs(F).sum(axis=0) + EPS


def _side_terms(F_norm, side, *, lap, target, n_rows, use_state):
    """Extra Gram (k × k) of one side from the current normalised factor (n_rows × k)."""
    k = K
    Gx = np.zeros((k, k))
    if use_state and lap is not None and side.graph_lambda:
        Gx += side.graph_lambda * F_norm.T @ (lap @ F_norm)
    if use_state and side.L21:
        nrm = np.linalg.norm(F_norm, axis=0)
        Gx += np.diag(np.where(nrm > 1e-10, side.L21 / np.maximum(nrm, 1e-10), 0.0))
    if target is not None and side.target_lambda > 0:
        Gx += side.target_lambda * np.eye(k)
    return Gx


def _angular(F, lam):
    Q = F.T @ F
    nrm = np.sqrt(np.diag(Q))
    C = Q / np.outer(nrm, nrm)
    np.fill_diagonal(C, 0.0)
    return np.maximum(F @ (np.eye(K) - lam * C * (nrm[None, :] / nrm[:, None])), 0.0)


def reference(A, observed, W0, steps, pen: Penalties):
    """Masked ALS with the engine's order and scaling; returns the model of the last step
    ``(W_{t-1} normalised, H_t raw)`` and the raw H."""
    m, n = A.shape
    Wp = W0.copy()  # the W of the next H solve (W0 as given, then normalised)
    hterm_state = None  # (Hn, norms) of the last H
    w_state = None  # the last normalised W (for the W side's graph/L21 terms)
    Ht = None
    for t in range(1, steps + 1):
        Gh = np.zeros((K, K))
        if hterm_state is not None:
            Gh = _side_terms(hterm_state, pen.H, lap=pen.h_graph, target=pen.h_target,
                             n_rows=n, use_state=True)
        elif pen.h_target is not None and pen.H.target_lambda > 0:
            Gh = pen.H.target_lambda * np.eye(K)
        H = np.empty((n, K))
        for j in range(n):
            o = observed[:, j]
            G = Wp[o].T @ Wp[o] + EPS * np.eye(K) + Gh
            b = Wp[o].T @ A[o, j]
            if pen.h_target is not None and pen.H.target_lambda > 0:
                b = b + pen.H.target_lambda * pen.h_target[j]
            H[j] = _nnls_gram(G, b)
        if pen.H.angular:
            H = _angular(H, pen.H.angular)
        Ht, model_W = H, Wp
        if t == steps:
            break
        dh = _scale(H)
        Hn = H / dh
        Gw = _side_terms(w_state, pen.W, lap=pen.w_graph, target=pen.w_target, n_rows=m,
                         use_state=w_state is not None) if w_state is not None else (
            pen.W.target_lambda * np.eye(K) if pen.w_target is not None and pen.W.target_lambda
            else np.zeros((K, K)))
        Wt = np.empty((m, K))
        for i in range(m):
            o = observed[i]
            G = Hn[o].T @ Hn[o] + EPS * np.eye(K) + Gw
            b = A[i, o] @ Hn[o]
            if pen.w_target is not None and pen.W.target_lambda > 0:
                b = b + pen.W.target_lambda * pen.w_target[i]
            Wt[i] = _nnls_gram(G, b)
        if pen.W.angular:
            Wt = _angular(Wt, pen.W.angular)
        Wp = Wt / _scale(Wt)
        w_state = Wp
        hterm_state = Hn
    return model_W, Ht


def _engine(A, W0, steps, *, mask=None, pen=None, ms=None, chunks=40):
    cfg = ALSConfig(k=K, maxit=steps, tol=0.0, solver="cd", cd_maxit=3000, cd_tol=1e-14,
                    dtype=np.float64)
    bm = as_blocked(A, dtype=np.float64, chunks=chunks)
    mb = None if mask is None else as_blocked(mask.astype(np.float64), dtype=np.float64,
                                              bounds=bm.bounds)
    st = fit_masked(bm, W0, cfg, ms or MaskSpec(), mask=mb, penalties=pen, patience=50)
    Hraw = np.vstack([np.asarray(h) for h in st.h_blocks])
    return st, Hraw


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    m, n = 60, 120
    A = rng.random((m, K)) @ rng.random((K, n)) + 0.05 * rng.random((m, n))
    M = sp.random(m, n, density=0.15, random_state=3, format="csc", dtype=bool)
    return A, M, initial_w(m, K, 5, "numpy")


def test_user_mask_matches_the_reference(problem):
    A, M, W0 = problem
    observed = ~M.toarray()
    for steps in (1, 3):
        st, H = _engine(A, W0, steps, mask=M)
        _, Href = reference(A, observed, W0, steps, Penalties())
        np.testing.assert_allclose(H, Href, rtol=1e-6, atol=1e-9)
    # the masked values do not matter at all: changing them leaves the fit bit for bit
    A2 = A.copy()
    A2[M.toarray()] = 1e3
    st2, H2 = _engine(A2, W0, 3, mask=M)
    np.testing.assert_array_equal(H2, H)
    # the same fit as NaN entries
    AN = A.copy()
    AN[M.toarray()] = np.nan
    st3, H3 = _engine(AN, W0, 3)
    np.testing.assert_array_equal(H3, H)


def test_user_mask_with_cross_validation_never_tests_masked_entries(problem):
    A, M, W0 = problem
    ms = MaskSpec(test_fraction=0.3, cv_seed=2)
    st, _ = _engine(A, W0, 2, mask=M, ms=ms)
    test = speckled_mask(A.shape[0], A.shape[1], 0.3, 2)
    test = test.toarray() if sp.issparse(test) else np.asarray(test)
    assert st.n_test == np.count_nonzero(test & ~M.toarray())
    assert st.n_train == A.size - np.count_nonzero(test | M.toarray())


def _laplacian(n):
    return sp.diags([np.r_[1, 2 * np.ones(n - 2), 1], -np.ones(n - 1), -np.ones(n - 1)],
                    [0, 1, -1]).tocsr()


@pytest.mark.parametrize("case", ["h_target", "w_target", "h_graph", "w_graph", "L21",
                                  "w_angular", "h_angular"])
def test_per_factor_options_match_the_reference(problem, case):
    A, M, W0 = problem
    m, n = A.shape
    rng = np.random.default_rng(11)
    pen = {
        "h_target": Penalties(H=SideSpec(target_lambda=0.5), h_target=rng.random((n, K))),
        "w_target": Penalties(W=SideSpec(target_lambda=0.5), w_target=rng.random((m, K))),
        "h_graph": Penalties(H=SideSpec(graph_lambda=0.3), h_graph=_laplacian(n)),
        "w_graph": Penalties(W=SideSpec(graph_lambda=0.3), w_graph=_laplacian(m)),
        "L21": Penalties(W=SideSpec(L21=0.05), H=SideSpec(L21=0.05)),
        "w_angular": Penalties(W=SideSpec(angular=0.3)),
        "h_angular": Penalties(H=SideSpec(angular=0.3)),
    }[case]
    observed = ~M.toarray()
    st, H = _engine(A, W0, 4, mask=M, pen=pen)
    Wref, Href = reference(A, observed, W0, 4, pen)
    np.testing.assert_allclose(H, Href, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(st.W, Wref / _scale(Wref), rtol=1e-5, atol=1e-8)
    # and the option changed the fit
    _, Hplain = _engine(A, W0, 4, mask=M)
    assert np.abs(H - Hplain).max() > 1e-4


# ------------------------------------------------------------------------------------------
# through nmf()


def test_nmf_takes_a_mask_matrix(aml):
    """``nmf(A, k, mask=M)``: scipy, numpy and dask masks give the same fit, equal to NaN
    entries with mask="NA"; a mask of the wrong shape is refused before any work."""
    import dask.array as da

    A = np.asarray(aml.matrix, dtype=np.float64)
    M = sp.random(*A.shape, density=0.1, random_state=4, format="csc", dtype=bool)
    kw = dict(seed=3, maxit=6, tol=0, dtype="float64")
    fits = [nmf(A, 4, mask=X, **kw) for X in (M, M.toarray(),
                                              da.from_array(M.toarray(), chunks=(200, 40)))]
    AN = A.copy()
    AN[M.toarray()] = np.nan
    ref = nmf(AN, 4, mask="NA", **kw)
    for f in fits:
        np.testing.assert_allclose(f.W, ref.W, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(f.H, ref.H, rtol=1e-10, atol=1e-13)
    assert fits[0].settings["mask"] == "matrix"
    with pytest.raises(ValueError, match=r"mask: expected a matrix of A's shape \(824, 135\)"):
        nmf(A, 4, mask=M[:, :10], **kw)
    with pytest.raises(TypeError, match="mask"):
        nmf(A, 4, mask=np.array([["a"]] * 3), **kw)


def test_nmf_cross_validates_with_a_target(hawaiibirds):
    """target_H works with test_fraction (it used to be refused): a strong target pins every
    column of H to it, and the fit still reports its test loss."""
    A = hawaiibirds.matrix
    kw = dict(maxit=10, tol=0, test_fraction=0.1, cv_seed=2, patience=50, sort_model=False)
    T = np.asarray(nmf(A, 4, seed=1, **kw).H, dtype=np.float64)  # rows sum to 1 (L1 norm)
    pulled = nmf(A, 4, seed=2, target_H=T, target_lambda=1e4, **kw)
    free = nmf(A, 4, seed=2, **kw)
    def dist(model):
        return float(np.abs(np.asarray(model.H) - T).mean())

    assert dist(pulled) < 0.3 * dist(free)
    assert np.isfinite(pulled.test_loss) and pulled.settings["target_lambda"] == 1e4


def test_graph_fit_cross_validates_a_layer_with_per_factor_options(aml):
    """fit() of one NMF layer with options nmf() lacks (L21, angular, a graph Laplacian) and
    test_fraction runs the masked engine with those options (it used to raise)."""
    from dask_factor import H, W, factor_config, factor_input, factor_net, fit, nmf_layer

    n = aml.matrix.shape[1]
    lap = _laplacian(n)

    def run(**opts):
        inp = factor_input(aml.matrix, name="aml")
        net = factor_net(inp, nmf_layer(inp, 5, name="l", **opts),
                         factor_config(test_fraction=0.1, cv_seed=3, seed=2, maxit=15, tol=0))
        return fit(net)

    plain = run()
    opts = run(W=W(L21=0.05, angular=0.2), H=H(graph=lap, graph_lambda=0.5))
    for res in (plain, opts):
        assert np.isfinite(res.settings["test_loss"]) and res.settings["best_iter"] >= 1
    assert np.abs(opts.l.W - plain.l.W).max() > 1e-3  # the options act
    # W's angular step decorrelates its factors
    def mean_cos(M):
        M = M / np.linalg.norm(M, axis=0)
        C = M.T @ M
        return float(np.abs(C[~np.eye(len(C), dtype=bool)]).mean())
    assert mean_cos(opts.l.W) < mean_cos(plain.l.W)
