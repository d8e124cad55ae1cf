"""svd_layer (wired to the SVD engine when it is installed) and cross_validate_graph's checks."""

from __future__ import annotations

import numpy as np
import pytest

from dask_factor.graph import (
    cross_validate_graph,
    factor_config,
    factor_input,
    factor_net,
    fit,
    nmf_layer,
    svd_layer,
)

try:  # the SVD engine comes with the SVD issue
    from dask_factor.svd import svd as _svd  # noqa: F401

    HAS_SVD = True
except ImportError:
    HAS_SVD = False


def test_svd_layer_single(aml):
    A = aml.matrix
    inp = factor_input(A, name="aml")
    net = factor_net(inp, svd_layer(inp, 4, center=True, name="pca"), factor_config(seed=1))
    if not HAS_SVD:
        with pytest.raises(NotImplementedError, match="truncated-SVD engine"):
            fit(net)
        return
    from dask_factor.svd import svd

    res = fit(net)
    ref = svd(A, 4, center=True, seed=1)
    np.testing.assert_allclose(res.pca.d, ref.d, rtol=1e-10)
    np.testing.assert_allclose(res.pca.W, ref.U, atol=1e-10)
    np.testing.assert_allclose(res.pca.H, ref.V.T, atol=1e-10)
    assert res.pca.W.shape == (824, 4) and res.pca.H.shape == (4, 135)
    # a real (centred) SVD: the loss is what the singular values leave out
    Ac = A - A.mean(axis=1, keepdims=True)
    assert res.pca.sse == pytest.approx(float((Ac ** 2).sum() - (ref.d ** 2).sum()), rel=1e-8)


def test_svd_layer_unsupported_uses_fail_clearly(aml):
    inp = factor_input(aml.matrix, name="aml")
    with pytest.raises(NotImplementedError, match="constrained"):
        fit(factor_net(inp, svd_layer(inp, 4, name="s", method="deflation")))
    # in a multi-layer graph too, before any work
    deep = nmf_layer(svd_layer(inp, 4, name="pca", method="krylov"), 2, name="top")
    with pytest.raises(NotImplementedError, match="constrained"):
        fit(factor_net(inp, deep))
    deep = svd_layer(nmf_layer(inp, 4, name="f"), 2, name="top", L2=0.1)
    with pytest.raises(NotImplementedError, match="constrained"):
        fit(factor_net(inp, deep))


def test_cross_validate_graph_argument_checks(aml):
    inp = factor_input(aml.matrix, name="aml")

    def fn(p):
        return nmf_layer(inp, p["k"], name="cv")

    grid = {"k": [2, 3]}
    with pytest.raises(TypeError, match="'inputs' must be"):
        cross_validate_graph(aml.matrix, fn, grid)
    with pytest.raises(TypeError, match="'layer_fn' must be a function"):
        cross_validate_graph(inp, "fn", grid)
    with pytest.raises(ValueError, match="'params' must be a non-empty dict"):
        cross_validate_graph(inp, fn, {})
    with pytest.raises(ValueError, match=r"params\['k'\] must be a non-empty list"):
        cross_validate_graph(inp, fn, {"k": []})
    with pytest.raises(ValueError, match="must be named"):
        cross_validate_graph(inp, fn, {3: [1]})
    with pytest.raises(TypeError, match="'config' must be from factor_config"):
        cross_validate_graph(inp, fn, grid, {"maxit": 5})
    with pytest.raises(ValueError, match="strategy"):
        cross_validate_graph(inp, fn, grid, strategy="bayes")
    with pytest.raises(ValueError, match="reps"):
        cross_validate_graph(inp, fn, grid, reps=0)
    with pytest.raises(NotImplementedError, match="test_fraction > 0"):
        fit(factor_net(inp, nmf_layer(nmf_layer(inp, 3), 2), factor_config(test_fraction=0.1)))
