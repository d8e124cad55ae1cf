"""svd_layer anywhere in a graph, against an independent NumPy replica of the joint schedule.

The replica (``_reference``) runs the documented schedule on dense NumPy arrays: warm-up by graph
level (``warmup`` iterations of an NMF layer, one exact update of an SVD layer fed by layers, none
for an SVD layer on inputs, which is fixed), then sweeps of every layer in graph order. An NMF
update is RcppML's Cholesky ALS step (solve, clip at 0, L1 scaling; H first); an SVD update is
``numpy.linalg.svd`` of the layer's matrix (features × samples; centred / scaled over the samples)
with the largest-|entry| of every column of the loadings (W on inputs, Hᵀ when fed by layers)
positive. Downstream layers read the upstream per-sample factor, normalised.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest

from dask_factor.graph import (
    factor_concat,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    nmf_layer,
    svd_layer,
)

EPS = 1e-15


# ------------------------------------------------------------------------------------------
# the NumPy replica


def _clip_solve(G, B):
    """Rows of X with ``G xᵀ = bᵀ`` for the rows b of B, then clipped at 0 (Cholesky-then-clip)."""
    return np.maximum(np.linalg.solve(G, B.T).T, 0.0)


def _l1(F):
    return np.abs(F).sum(axis=0) + EPS


class _NMF:
    """An NMF layer, engine orientation ``M ≈ U diag(d) Vᵀ`` (V per sample)."""

    def __init__(self, k, init, embedding):
        self.k, self.embedding = k, embedding
        if embedding:  # starts from V0 (n × k)
            self.V, self.dV, self.U = init.copy(), np.ones(k), None
        else:  # starts from U0 (R × k), used as is
            self.U, self.dU, self.dV = init.copy(), np.ones(k), np.ones(k)

    def update(self, M):
        k = self.k
        if not self.embedding:  # H (V) first, then W (U)
            V = _clip_solve(self.U.T @ self.U + EPS * np.eye(k), M.T @ self.U)
            self.dV = _l1(V)
            Vn = V / self.dV
            U = _clip_solve(Vn.T @ Vn + EPS * np.eye(k), M @ Vn)
            self.dU = _l1(U)
            self.U, self.V = U / self.dU, V
            self.d = self.dU
        else:  # H (U, the connecting matrix) first, then W (V, per sample)
            Vn = self.V / self.dV
            U = _clip_solve(Vn.T @ Vn + EPS * np.eye(k), M @ Vn)
            self.U = U / _l1(U)
            V = _clip_solve(self.U.T @ self.U + EPS * np.eye(k), M.T @ self.U)
            self.dV = _l1(V)
            self.V = V
            self.d = self.dV

    def per_sample(self):
        return self.V / self.dV

    def factors(self):
        """(W, d, H) in the user's orientation."""
        Vn = self.per_sample()
        if self.embedding:
            return Vn, self.d, self.U.T
        return self.U, self.d, Vn.T


class _SVD:
    """``svd()`` of the layer's matrix M (features × samples: the input, or the stacked upstream
    H): rows centred / scaled over the samples, the largest-|entry| of each left singular vector
    positive. On inputs W = U, H = Vᵀ; fed by layers W = V, H = Uᵀ."""

    def __init__(self, k, embedding, center=False, scale=False):
        self.k, self.embedding, self.center, self.scale = k, embedding, center or scale, scale

    def update(self, M):
        M = np.asarray(M, dtype=np.float64)
        if self.center:
            M = M - M.mean(axis=1, keepdims=True)
        if self.scale:
            M = M / np.sqrt(np.maximum((M * M).mean(axis=1), 100 * np.finfo(float).eps))[:, None]
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        U, s, Vt = U[:, :self.k], s[:self.k], Vt[:self.k]
        idx = np.argmax(np.abs(U), axis=0)
        f = np.sign(U[idx, np.arange(self.k)])
        self.U, self.d, self.V = U * f, s, Vt.T * f
        self.sse = float((M * M).sum() - (s * s).sum())

    def per_sample(self):
        return self.V

    def factors(self):
        if self.embedding:
            return self.V, self.d, self.U.T
        return self.U, self.d, self.V.T


def _reference(layers, inputs, *, warmup, sweeps):
    """``layers``: list of (model, reads) in graph order; ``reads`` is ("input", i) or a list of
    upstream layer indices (stacked, factor_concat). Returns the models."""
    def matrix(reads):
        if reads[0] == "input":
            return inputs[reads[1]]
        return np.vstack([layers[j][0].per_sample().T for j in reads])

    depth = []
    for _, reads in layers:
        depth.append(0 if reads[0] == "input" else 1 + max(depth[j] for j in reads))
    for model, reads in layers:  # an SVD of inputs is fixed
        if isinstance(model, _SVD) and reads[0] == "input":
            model.update(matrix(reads))
    for level in sorted(set(depth)):
        its = {}
        for L, (model, reads) in enumerate(layers):
            if depth[L] != level:
                continue
            if isinstance(model, _SVD):
                its[L] = 0 if reads[0] == "input" else min(1, warmup)
            else:
                its[L] = warmup
        for s in range(max(its.values())):
            for L, n_it in its.items():
                if n_it > s:
                    layers[L][0].update(matrix(layers[L][1]))
    for _ in range(sweeps):
        for model, reads in layers:
            if not (isinstance(model, _SVD) and reads[0] == "input"):
                model.update(matrix(reads))
    return [m for m, _ in layers]


def _init(rows, k, seed):
    return np.random.default_rng(seed).random((rows, k))


def _assert_layer(res_layer, ref_model, rtol):
    W, d, H = ref_model.factors()
    np.testing.assert_allclose(res_layer.d, d, rtol=rtol)
    scale = max(1.0, float(np.abs(W).max()))
    np.testing.assert_allclose(res_layer.W_stacked, W, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(res_layer.H, H, rtol=rtol, atol=rtol * float(np.abs(H).max()))


CFG = dict(maxit=6, tol=0, seed=11, warmup=3, solver="cholesky", dtype="float64")


# ------------------------------------------------------------------------------------------
# against the replica


@pytest.mark.parametrize("center", [False, True])
def test_nmf_then_svd_matches_numpy(aml, center):
    A = aml.matrix
    inp = factor_input(A, name="aml")
    net = factor_net(inp, svd_layer(nmf_layer(inp, 6, name="fine"), 3, name="pc", center=center),
                     factor_config(**CFG))
    res = fit(net)
    m, n = A.shape
    ref = _reference([(_NMF(6, _init(m, 6, 11), False), ("input", 0)),
                      (_SVD(3, True, center=center), [0])],
                     [A], warmup=3, sweeps=6)
    _assert_layer(res.fine, ref[0], 1e-9)
    _assert_layer(res.pc, ref[1], 1e-8)
    assert res.pc.W.shape == (n, 3) and res.pc.H.shape == (3, 6) and res.pc.kind == "svd"
    assert res.pc.sse == pytest.approx(ref[1].sse, rel=1e-8)
    # a real truncated SVD: orthonormal W and rows of H, d decreasing
    np.testing.assert_allclose(res.pc.W.T @ res.pc.W, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(res.pc.H @ res.pc.H.T, np.eye(3), atol=1e-12)
    assert np.all(np.diff(res.pc.d) <= 0)
    # the layer is svd() of the upstream H (k_up × n: the samples are the observations)
    from dask_factor.svd import svd

    pca = svd(res.fine.H, 3, center=center)
    np.testing.assert_allclose(res.pc.d, pca.d, rtol=1e-8)
    np.testing.assert_allclose(res.pc.H, pca.U.T, atol=1e-8)
    np.testing.assert_allclose(res.pc.W, pca.V, atol=1e-8)


def test_svd_then_nmf_matches_numpy(aml):
    """An SVD of the input (Krylov engine, to tol 1e-8) feeds its signed H to an NMF layer."""
    A = aml.matrix
    inp = factor_input(A, name="aml")
    net = factor_net(inp, nmf_layer(svd_layer(inp, 5, name="pca"), 2, name="top"),
                     factor_config(**CFG))
    res = fit(net)
    n = A.shape[1]
    ref = _reference([(_SVD(5, False), ("input", 0)), (_NMF(2, _init(n, 2, 12), True), [0])],
                     [A], warmup=3, sweeps=6)
    _assert_layer(res.pca, ref[0], 1e-7)
    _assert_layer(res.top, ref[1], 1e-6)
    assert res.settings["layers"]["pca"]["converged"]
    assert res.pca.loss_history == [res.pca.mse] * 6  # fixed: the same loss every sweep
    assert res.pca.mse == pytest.approx(ref[0].sse / A.size, rel=1e-8)


def test_svd_in_the_middle_and_on_a_concat(aml):
    """nmf → (scaled) svd → nmf, and an svd of a concat of an svd and an nmf branch."""
    A = aml.matrix
    m, n = A.shape
    inp = factor_input(A, name="aml")
    mid = svd_layer(nmf_layer(inp, 7, name="a"), 4, name="b", scale=True)
    res = fit(factor_net(inp, nmf_layer(mid, 2, name="c"), factor_config(**CFG)))
    ref = _reference([(_NMF(7, _init(m, 7, 11), False), ("input", 0)),
                      (_SVD(4, True, scale=True), [0]),
                      (_NMF(2, _init(n, 2, 13), True), [1])], [A], warmup=3, sweeps=6)
    for name, model in zip("abc", ref):
        _assert_layer(res[name], model, 1e-7)

    inp = factor_input(A, name="aml")
    lo, hi = svd_layer(inp, 3, name="lo", center=True), nmf_layer(inp, 4, name="hi")
    res = fit(factor_net(inp, svd_layer(factor_concat(lo, hi), 2, name="top"),
                         factor_config(**CFG)))
    ref = _reference([(_SVD(3, False, center=True), ("input", 0)),
                      (_NMF(4, _init(m, 4, 12), False), ("input", 0)),
                      (_SVD(2, True), [0, 1])], [A], warmup=3, sweeps=6)
    for name, model in zip(("lo", "hi", "top"), ref):
        _assert_layer(res[name], model, 1e-7)
    assert res.top.input == "concat:lo,hi" and res.top.H.shape == (2, 7)


def test_svd_on_shared_inputs(hawaiibirds, geography):
    """One svd_layer on a factor_shared: the SVD of the row-bound matrix (never formed)."""
    B = hawaiibirds.matrix
    sp_, geo = factor_input(B, name="species"), factor_input(geography, name="geography")
    with pytest.warns(UserWarning, match="negative"):
        res = fit(factor_net([sp_, geo], svd_layer(factor_shared(sp_, geo), 4, name="joint"),
                             factor_config(seed=1, dtype="float64")))
    ref = _SVD(4, False)
    ref.update(np.vstack([B.toarray(), geography]))
    assert set(res.joint.W) == {"species", "geography"}
    _assert_layer(res.joint, ref, 1e-7)
    assert res.converged and res.iterations == 1


# ------------------------------------------------------------------------------------------
# schedulers, checks


def test_svd_graph_is_deterministic_across_schedulers(aml):
    def run():
        inp = factor_input(aml.matrix, name="aml")
        top = nmf_layer(svd_layer(nmf_layer(inp, 5, name="a"), 3, name="b", center=True), 2,
                        name="c")
        return fit(factor_net(inp, top, factor_config(maxit=5, tol=0, seed=4, warmup=2)))

    threaded = run()
    with dask.config.set(scheduler="synchronous"):
        sync = run()
    for name in "abc":
        np.testing.assert_array_equal(threaded[name].W, sync[name].W)
        np.testing.assert_array_equal(threaded[name].H, sync[name].H)
        np.testing.assert_array_equal(threaded[name].d, sync[name].d)
    assert threaded.loss_history == sync.loss_history


def test_svd_layer_checks(aml):
    inp = factor_input(aml.matrix, name="aml")
    with pytest.raises(ValueError, match="must be < min"):  # a Krylov SVD needs k < min(m, n)
        fit(factor_net(inp, nmf_layer(svd_layer(inp, 135, name="s"), 2, name="t")))
    with pytest.raises(ValueError, match="exceeds"):
        factor_net(inp, svd_layer(nmf_layer(inp, 3, name="f"), 4, name="s"))
    net = factor_net(inp, svd_layer(nmf_layer(inp, 3, name="f"), 2, name="s", center=True,
                                    method="randomized"))
    plan = net.describe()
    assert plan[1]["kind"] == "svd" and plan[1]["center"] and plan[1]["embedding"]
    with pytest.raises(NotImplementedError, match="svd_layer"):
        fit(net).predict(aml.matrix[:, :5])


def test_docs_example_6(aml):
    """The numbers docs/graphs.md shows for svd_layer in a graph."""
    A, cols = aml.matrix, aml.cols
    inp = factor_input(A, name="methylation")
    pc = svd_layer(nmf_layer(inp, 10, name="fine"), 3, center=True, name="pc")
    res = fit(factor_net(inp, pc, factor_config(maxit=100, seed=42)))
    np.testing.assert_allclose(res.pc.d, [0.3202, 0.2003, 0.1693], atol=6e-5)
    Hc = res.fine.H - res.fine.H.mean(axis=1, keepdims=True)
    share = res.pc.d ** 2 / (Hc ** 2).sum()
    np.testing.assert_allclose(share, [0.412, 0.161, 0.115], atol=6e-4)
    assert round(float(share.sum()), 3) == 0.688
    assert round(float(res.pc.H[0, 7]), 2) == 1.0 and round(float(res.pc.H[1, 4]), 2) == 0.93

    inp = factor_input(A, name="methylation")
    top = nmf_layer(svd_layer(inp, 10, center=True, name="pca"), 3, name="top")
    res = fit(factor_net(inp, top, factor_config(maxit=100, seed=42)))
    assert res.converged and res.iterations == 9
    assign = np.argmax(res.top.W, axis=1)
    control = cols["category"].str.startswith("Control").to_numpy()
    assert (assign[control] == 1).all() and int((assign == 1).sum()) == 23
