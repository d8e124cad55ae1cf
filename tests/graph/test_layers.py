"""What the graph engine computes: each layer's input, merges, per-factor options, scheduling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf
from dask_factor.engine import executor as executor_mod
from dask_factor.graph import (
    H,
    W,
    compute_target,
    factor_add,
    factor_concat,
    factor_condition,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    nmf_layer,
    separability,
)
from dask_factor.graph.fit import fit_engine


def _mse(X, layer):
    rec = layer.W_stacked @ np.diag(layer.d) @ layer.H
    return float(((X - rec) ** 2).mean())


def _mean_abs_cos(M):
    M = M / np.maximum(np.linalg.norm(M, axis=0), 1e-300)
    C = M.T @ M
    return float(np.abs(C[~np.eye(len(C), dtype=bool)]).mean())


# ------------------------------------------------------------------------------------------
# the graph engine against the nmf() path


@pytest.mark.parametrize("options", [
    {}, {"L1": (0.01, 0.02), "L2": 0.01}, {"upper_bound": (0.0, 0.5)}, "target+"])
def test_engine_equals_nmf_path_for_one_layer(hawaiibirds, options):
    """The same layer through nmf() and through the graph engine gives the same factors."""
    A, _, cols = hawaiibirds
    if options == "target+":
        T = compute_target(nmf(A, 8, seed=42, maxit=20).H, cols["island"].to_numpy())
        options = {"H": H(target=T, target_lambda=0.3)}
    inp = factor_input(A, name="birds")
    net = factor_net(inp, nmf_layer(inp, 8, name="l", **options),
                     factor_config(maxit=25, seed=42, dtype="float64"))
    via_nmf = fit(net).l
    via_engine = fit_engine(net, 42, None, None).l
    assert via_engine.iterations == via_nmf.iterations
    # the same algorithm, products summed in a different order: agreement to float64 rounding
    # (in float32 the rounding differences grow through the iterations, to ~6e-5 with bounds)
    np.testing.assert_allclose(via_engine.W, via_nmf.W, atol=1e-10)
    np.testing.assert_allclose(via_engine.H, via_nmf.H, atol=1e-10)
    np.testing.assert_allclose(via_engine.d, via_nmf.d, rtol=2e-5)


# ------------------------------------------------------------------------------------------
# layer inputs: concat, add, condition


@pytest.fixture(scope="module")
def branches(aml):
    A = aml.matrix
    inp = factor_input(A, name="aml")
    lo, hi = nmf_layer(inp, 3, name="lo"), nmf_layer(inp, 10, name="hi")
    merged = nmf_layer(factor_concat(lo, hi), 5, name="merged")
    return fit(factor_net(inp, merged, factor_config(maxit=20, seed=1)))


def test_concat_stacks_branch_h(branches, aml):
    res = branches
    assert list(res) == ["lo", "hi", "merged"]
    assert res.merged.W.shape == (135, 5) and res.merged.H.shape == (5, 13)  # rank 3 + 10
    X = np.vstack([res.lo.H, res.hi.H]).T
    assert res.merged.mse == pytest.approx(_mse(X, res.merged), rel=1e-6)
    for name in ("lo", "hi"):
        assert res[name].mse == pytest.approx(_mse(aml.matrix, res[name]), rel=1e-5)


def test_add_sums_branch_h(aml):
    inp = factor_input(aml.matrix, name="aml")
    a, b = nmf_layer(inp, 4, name="a"), nmf_layer(inp, 4, name="b")
    res = fit(factor_net(inp, nmf_layer(factor_add(a, b), 2, name="top"),
                         factor_config(maxit=10, seed=2)))
    assert res.top.H.shape == (2, 4) and res.top.input == "add:a,b"
    X = (res.a.H + res.b.H).T
    assert res.top.mse == pytest.approx(_mse(X, res.top), rel=1e-6)


def test_condition_appends_z_rows(aml):
    A = aml.matrix
    Z = np.vstack([np.arange(135) % 2, np.linspace(0, 1, 135)])
    inp = factor_input(A, name="aml")
    f = nmf_layer(inp, 5, name="f")
    res = fit(factor_net(inp, nmf_layer(factor_condition(f, Z.T, name="cov"), 2, name="top"),
                         factor_config(maxit=10, seed=3)))
    assert res.top.H.shape == (2, 7)
    assert res.top.mse == pytest.approx(_mse(np.vstack([res.f.H, Z]).T, res.top), rel=1e-6)
    # on an input: the layer fits [A; Z] and W gains Z's rows
    inp2 = factor_input(A, name="aml")
    res2 = fit(factor_net(inp2, nmf_layer(factor_condition(inp2, Z), 5, name="c"),
                          factor_config(maxit=10, seed=3)))
    assert res2.c.W.shape == (826, 5)
    assert res2.c.mse == pytest.approx(_mse(np.vstack([A, Z]), res2.c), rel=1e-5)


def test_shared_inputs_are_never_row_bound(hawaiibirds, geography):
    """The engine holds one block list per input, cut at the same sample bounds."""
    from dask_factor.engine.deep import GraphKind, LayerArrays
    from dask_factor.engine.driver import Context
    from dask_factor.engine.executor import Executor
    from dask_factor.engine.inputs import prepare_input
    from dask_factor.engine.shared_blocks import blocked_inputs

    A = hawaiibirds.matrix
    with pytest.warns(UserWarning, match="negative"):
        preps = [prepare_input(A), prepare_input(geography)]
    bms, bounds = blocked_inputs(preps, [A, geography], dtype=np.float32)
    run = GraphKind([], bms, [], [LayerArrays()], bounds, [0.0])
    ctx = Context(Executor(), "t0", "factor-net")
    run.setup(ctx)
    assert len(run.bkeys) == 2
    for keys, rows, kind in ((run.bkeys[0], 183, sp.spmatrix), (run.bkeys[1], 2, np.ndarray)):
        assert len(keys) == bounds.size - 1
        for p, key in enumerate(keys):
            block = ctx.static[key]
            assert isinstance(block, kind)
            assert block.shape == (rows, bounds[p + 1] - bounds[p])


# ------------------------------------------------------------------------------------------
# per-factor options are honoured


def _layer(aml, **kw):
    inp = factor_input(aml.matrix, name="aml")
    return fit(factor_net(inp, nmf_layer(inp, 6, name="l", **kw),
                          factor_config(maxit=30, seed=3)))


@pytest.fixture(scope="module")
def plain(aml):
    inp = factor_input(aml.matrix, name="aml")
    net = factor_net(inp, nmf_layer(inp, 6, name="l"), factor_config(maxit=30, seed=3))
    return fit_engine(net, 3, None, None).l


def test_angular_decorrelates_factors(aml, plain):
    w_ang = _layer(aml, W=W(angular=0.5))
    assert w_ang.settings["path"] == "graph"
    assert _mean_abs_cos(w_ang.l.W) < 0.5 * _mean_abs_cos(plain.W)  # measured 0.08 vs 0.81
    h_ang = _layer(aml, H=H(angular=0.2)).l  # the distributed factor: an extra pass
    assert _mean_abs_cos(h_ang.H.T) < 0.5 * _mean_abs_cos(plain.H.T)  # 0.12 vs 0.38
    assert np.all(np.isfinite(h_ang.H)) and h_ang.mse < 1.2 * plain.mse


def test_graph_laplacian_smooths_h(aml, plain):
    n = 135
    chain = sp.diags([np.r_[1, 2 * np.ones(n - 2), 1], -np.ones(n - 1), -np.ones(n - 1)],
                     [0, 1, -1]).tocsr()

    def roughness(Hm):
        return float((np.diff(Hm, axis=1) ** 2).sum() / (Hm ** 2).sum())

    # RcppML's graph term adds λ·Hn Lg Hnᵀ (k × k) to the Gram: a shrinkage weighted by the
    # current roughness, not an exact Laplacian solve. With exact NNLS solves its effect grows
    # with λ (measured roughness: plain 0.64; λ = 1: 0.41, 3: 0.39, 10: 0.008, the last at 1.7×
    # the plain MSE); with 10-sweep coordinate descent it was not monotone (0.55; 0.53, 0.85, 0.27)
    smooth = _layer(aml, H=H(graph=chain, graph_lambda=1.0)).l
    assert roughness(smooth.H) < 0.75 * roughness(plain.H)
    assert smooth.mse < 1.3 * plain.mse
    flat = _layer(aml, H=H(graph=chain, graph_lambda=10.0)).l
    assert roughness(flat.H) < 0.1 * roughness(smooth.H)


def test_l21_bounds_and_sign_options(aml, plain, hawaiibirds, geography):
    l21 = _layer(aml, H=H(L21=0.5)).l
    # group sparsity concentrates the scale in few factors: the largest factor's share of Σd
    # (measured with exact solves: 0.293 against 0.258 without L21)
    assert l21.d.max() / l21.d.sum() > 1.1 * plain.d.max() / plain.d.sum()
    ub = _layer(aml, W=W(upper_bound=0.001)).l
    assert ub.W.max() < 0.5 * plain.W.max()
    # a signed shared view with H(nonneg=False): H may go negative
    species = factor_input(hawaiibirds.matrix, name="species")
    geo = factor_input(geography, name="geography")
    with pytest.warns(UserWarning, match="negative"):
        signed = fit(factor_net([species, geo],
                                nmf_layer(factor_shared(species, geo), 4, name="j",
                                          H=H(nonneg=False)),
                                factor_config(maxit=10, seed=1)))
    assert signed.j.H.min() < 0


def test_deep_layer_w_target_guides_the_per_sample_embedding(aml):
    """On a layer fed by a layer, W is the per-sample embedding: a W target steers it."""
    A, cat = aml.matrix, aml.cols["category"].to_numpy()

    def deep(**kw):
        inp = factor_input(A, name="aml")
        fine = nmf_layer(inp, 10, name="fine")
        return fit(factor_net(inp, nmf_layer(fine, 3, name="coarse", **kw),
                              factor_config(maxit=20, seed=3)))

    base = deep()
    target = compute_target(base.coarse.W.T, cat).T  # n × k
    guided = deep(W=W(target=target, target_lambda=0.5))
    assert separability(guided.coarse.W.T, cat) > 10 * separability(base.coarse.W.T, cat)
    # and the fine layer still describes A
    assert guided.fine.mse < 1.5 * base.fine.mse


# ------------------------------------------------------------------------------------------
# scheduling: one Dask graph per sweep, independent branches together, constant size


def test_branches_share_one_submission_and_graphs_are_constant(aml, monkeypatch):
    calls = []
    original = executor_mod.Executor.submit  # every graph goes through here (run calls it)

    def spy(self, dsk, keep, fetch, *rest):
        # task keys read factor-net-L<layer>-<what>-<token>-<step>...
        calls.append({k.split("-")[2] for k, v in dsk.items()
                      if isinstance(k, str) and k.startswith("factor-net-L")
                      and isinstance(v, tuple)})
        return original(self, dsk, keep, fetch, *rest)

    monkeypatch.setattr(executor_mod.Executor, "submit", spy)
    inp = factor_input(aml.matrix, name="aml")
    top = nmf_layer(factor_concat(nmf_layer(inp, 3, name="lo"), nmf_layer(inp, 6, name="hi")),
                    2, name="top")
    res = fit(factor_net(inp, top, factor_config(maxit=4, tol=0, warmup=2, seed=1)))
    # warm-up: both branches in each of 2 submissions, then the top layer twice; 4 sweeps
    assert calls == [{"L0", "L1"}] * 2 + [{"L2"}] * 2 + [{"L0", "L1", "L2"}] * 4
    assert res.iterations == 4 and res.warmup == 2
    sizes = res.settings["graph_sizes"]
    assert len(sizes) == 4 and len(set(sizes)) == 1


def test_convergence_rule_and_history(aml):
    inp = factor_input(aml.matrix, name="aml")
    deep = nmf_layer(nmf_layer(inp, 6, name="a"), 2, name="b")
    res = fit(factor_net(inp, deep, factor_config(maxit=200, tol=1e-3, seed=5)))
    assert res.converged and res.iterations < 200
    assert len(res.loss_history) == res.iterations == len(res.a.loss_history)
    rels = [abs(p - q) / p for p, q in zip(res.a.loss_history[-6:-1], res.a.loss_history[-5:])]
    assert max(rels) < 1e-3  # the last 5 sweeps moved every layer less than tol
