"""Graph checks: every bad graph fails before any work, with a message naming the nodes."""

from __future__ import annotations

import numpy as np
import pytest

from dask_factor.graph import (
    H,
    W,
    factor_add,
    factor_concat,
    factor_condition,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    nmf_layer,
    svd_layer,
)


@pytest.fixture
def X():
    return np.random.default_rng(0).random((20, 30))


# ------------------------------------------------------------------------------------------
# constructors


def test_factor_input_checks():
    with pytest.raises(TypeError, match="'data' must be"):
        factor_input({"a": 1})
    with pytest.raises(ValueError, match="empty"):
        factor_input(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="2-D"):
        factor_input(np.zeros(4))
    with pytest.raises(ValueError, match="does not exist"):
        factor_input("/nonexistent/matrix.spz")
    with pytest.raises(ValueError, match="name"):
        factor_input(np.ones((2, 2)), name="a/b")
    assert factor_input(np.ones((3, 4)), name="x").shape == (3, 4)


def test_layer_argument_checks(X):
    inp = factor_input(X, name="x")
    with pytest.raises(TypeError, match="'input' must be a graph node"):
        nmf_layer(X, 3)
    with pytest.raises(TypeError, match="k must be an integer"):
        nmf_layer(inp, 2.5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        nmf_layer(inp, 0)
    with pytest.raises(ValueError, match=r"L1.*\[0.0, 1.0\)"):
        nmf_layer(inp, 3, L1=1.5)
    with pytest.raises(TypeError, match="'W' must be created by W"):
        nmf_layer(inp, 3, W=H(L1=0.1))
    with pytest.raises(NotImplementedError, match="mask"):
        nmf_layer(inp, 3, mask="zeros")
    with pytest.raises(NotImplementedError, match="robust"):
        nmf_layer(inp, 3, robust=True)
    with pytest.raises(ValueError, match="method"):
        svd_layer(inp, 3, method="magic")
    assert svd_layer(inp, 3, scale=True).center  # scale implies centring


def test_factor_options_checks():
    with pytest.raises(ValueError, match=r"H\(target_lambda=\): set target="):
        H(target_lambda=0.3)
    with pytest.raises(ValueError, match=r"W\(graph_lambda=\): set graph="):
        W(graph_lambda=1.0)
    with pytest.raises(ValueError, match=r"H\(L1=\)"):
        H(L1=-1)
    with pytest.raises(ValueError, match="square Laplacian"):
        W(graph=np.ones((3, 4)), graph_lambda=1.0)
    with pytest.raises(ValueError, match="finite"):
        H(target=np.full((2, 2), np.nan), target_lambda=1)
    with pytest.raises(TypeError, match="nonneg"):
        W(nonneg="yes")


def test_merge_node_checks(X):
    a = factor_input(X, name="a")
    b = factor_input(np.ones((5, 31)), name="b")
    with pytest.raises(ValueError, match="at least 2 inputs"):
        factor_shared(a)
    with pytest.raises(ValueError, match=r"share the samples.*'a' has 30, 'b' has 31"):
        factor_shared(a, b)
    la, lb = nmf_layer(a, 3, name="la"), nmf_layer(a, 4, name="lb")
    with pytest.raises(TypeError, match="is not a factor_input"):
        factor_shared(a, la)
    with pytest.raises(ValueError, match=r"same rank k, got: 'la' \(k=3\), 'lb' \(k=4\)"):
        factor_add(la, lb)
    with pytest.raises(TypeError, match="is an input"):
        factor_concat(la, a)
    with pytest.raises(ValueError, match="at least 2 branches"):
        factor_concat(la)
    assert factor_concat(la, lb).rank == 7
    with pytest.raises(ValueError, match=r"Z has shape \(2, 7\)"):
        factor_condition(la, np.ones((2, 7)))
    with pytest.raises(TypeError, match="'Z' must be a numeric matrix"):
        factor_condition(la, [["x", "y"]])
    # Z given samples × p is transposed (n = 30 columns)
    assert factor_condition(la, np.ones((30, 2))).Z.shape == (2, 30)
    assert factor_condition(la, np.ones((2, 30))).rank == 5


def test_factor_config_checks():
    with pytest.raises(TypeError, match="maxit"):
        factor_config(maxit=1.5)
    with pytest.raises(ValueError, match="solver"):
        factor_config(solver="magic")
    with pytest.raises(ValueError, match="loss: expected one of"):
        factor_config(loss="poisson")
    with pytest.raises(ValueError, match="test_fraction"):
        factor_config(test_fraction=1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        factor_config(threads=2)
    # every number finite and every seed usable, checked when the config is made (issue 17)
    with pytest.raises(ValueError, match=r"^cd_tol: expected a finite number >= 0.0, got nan"):
        factor_config(cd_tol=float("nan"))
    with pytest.raises(ValueError, match=r"^tol: .*got inf"):
        factor_config(tol=float("inf"))
    with pytest.raises(ValueError, match=r"^seed: expected a non-negative integer with "
                                         r"rng='numpy'.*got -1"):
        factor_config(seed=-1)
    assert factor_config(seed=-1, rng="rcppml").seed == -1  # R-style seeds, as nmf() allows
    with pytest.raises(ValueError,
                       match=r"^cv_seed: expected an integer in \[0, 2\*\*63\), got -1"):
        factor_config(cv_seed=-1)
    with pytest.raises(TypeError, match=r"^verbose: expected a bool, got 1"):
        factor_config(verbose=1)
    with pytest.raises(ValueError, match=r"^W\(angular=\): expected a finite number >= 0.0"):
        W(angular=float("nan"))


# ------------------------------------------------------------------------------------------
# factor_net


def test_output_and_config_types(X):
    inp = factor_input(X, name="x")
    layer = nmf_layer(inp, 3)
    with pytest.raises(TypeError, match="'output' must be a layer"):
        factor_net(inp, factor_concat(layer, nmf_layer(inp, 2)))
    with pytest.raises(TypeError, match="'config' must be from factor_config"):
        factor_net(inp, layer, {"maxit": 3})
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a factor_input"):
        factor_net([layer], layer)


def test_cycle_is_reported_with_its_nodes(X):
    inp = factor_input(X, name="x")
    first = nmf_layer(inp, 3, name="first")
    second = nmf_layer(first, 2, name="second")
    first.input = second  # nodes are plain objects: a cycle can be wired by hand
    with pytest.raises(ValueError, match="cycle: 'second' → 'first' → 'second'"):
        factor_net(inp, second)


def test_unreachable_and_undeclared_inputs(X):
    a = factor_input(X, name="a")
    b = factor_input(X.copy(), name="b")
    layer = nmf_layer(a, 3, name="only_a")
    with pytest.raises(ValueError, match=r"declared input\(s\) \['b'\] not reachable from "
                                         r"output 'only_a'"):
        factor_net([a, b], layer)
    shared = nmf_layer(factor_shared(a, b), 3, name="ab")
    with pytest.raises(ValueError, match=r"\['b'\] are used by the graph but not listed"):
        factor_net(a, shared)


def test_duplicate_names(X):
    inp = factor_input(X, name="x")
    one = nmf_layer(inp, 3, name="same")
    two = nmf_layer(one, 2, name="same")
    with pytest.raises(ValueError, match="duplicate names: 'same' used by 2 nodes"):
        factor_net(inp, two)
    clash = nmf_layer(inp, 3, name="x")
    with pytest.raises(ValueError, match="duplicate names: 'x'.*FactorInput, NMFLayer"):
        factor_net(inp, clash)


def test_sample_count_mismatch_across_the_graph(X):
    a = factor_input(X, name="a")
    b = factor_input(np.ones((20, 31)), name="b")
    merged = nmf_layer(factor_concat(nmf_layer(a, 2, name="la"), nmf_layer(b, 2, name="lb")),
                       2, name="top")
    with pytest.raises(ValueError, match=r"share the samples.*'a' has 30, 'b' has 31"):
        factor_net([a, b], merged)


def test_add_rank_mismatch_rechecked_at_compile(X):
    inp = factor_input(X, name="x")
    la, lb = nmf_layer(inp, 3, name="la"), nmf_layer(inp, 3, name="lb")
    add = factor_add(la, lb)
    lb.k = 4  # changed after construction
    with pytest.raises(ValueError, match=r"'la' \(k=3\), 'lb' \(k=4\)"):
        factor_net(inp, nmf_layer(add, 2, name="top"))


def test_rank_and_shape_checks(X):
    inp = factor_input(X, name="x")
    with pytest.raises(ValueError, match=r"nmf_layer 'big': k=25 exceeds min\(rows, samples\) "
                                         r"= 20"):
        factor_net(inp, nmf_layer(inp, 25, name="big"))
    fine = nmf_layer(inp, 4, name="fine")
    with pytest.raises(ValueError, match=r"'coarse': k=5 exceeds.*'layer:fine' \(4 × 30\)"):
        factor_net(inp, nmf_layer(fine, 5, name="coarse"))
    bad_t = nmf_layer(inp, 3, name="t", H=H(target=np.zeros((3, 29)), target_lambda=0.1))
    with pytest.raises(ValueError, match=r"'t': H\(target=\) has shape \(3, 29\); expected "
                                         r"\(3, 30\)"):
        factor_net(inp, bad_t)
    deep_t = nmf_layer(fine, 2, name="d", W=W(target=np.zeros((4, 2)), target_lambda=0.1))
    with pytest.raises(ValueError, match=r"'d': W\(target=\) has shape \(4, 2\); expected "
                                         r"\(30, 2\)"):
        factor_net(inp, deep_t)
    bad_g = nmf_layer(inp, 3, name="g", W=W(graph=np.eye(30), graph_lambda=1.0))
    with pytest.raises(ValueError, match=r"'g': W\(graph=\) has shape \(30, 30\); expected "
                                         r"\(20, 20\)"):
        factor_net(inp, bad_g)


def test_bad_data_fails_before_work_naming_the_input(X):
    Y = X.copy()
    Y[0, 0] = np.nan
    a = factor_input(X, name="good")
    b = factor_input(Y, name="bad")
    net = factor_net([a, b], nmf_layer(factor_shared(a, b), 3, name="j"),
                     factor_config(maxit=2))
    with pytest.raises(ValueError, match="input 'bad': contains 1 NaN"):
        fit(net)


def test_graph_order_and_default_names(X):
    inp = factor_input(X)
    lo, hi = nmf_layer(inp, 2), nmf_layer(inp, 5, name="zz_hi")
    top = nmf_layer(factor_concat(lo, hi), 3, name="aa_top")
    net = factor_net(inp, top)
    assert net.layer_names == ["L1", "zz_hi", "aa_top"]
    assert net.input_names == ["input1"]
    assert net.layer("aa_top").input_label == "concat:L1,zz_hi"
    assert not net.nmf_path
    # a layer two branches reach is listed once
    shared_up = nmf_layer(inp, 4, name="up")
    diamond = nmf_layer(factor_add(nmf_layer(shared_up, 2, name="l"),
                                   nmf_layer(shared_up, 2, name="r")), 2, name="down")
    assert factor_net(inp, diamond).layer_names == ["up", "l", "r", "down"]
