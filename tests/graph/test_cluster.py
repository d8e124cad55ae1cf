"""Multi-layer and shared graphs give the same factors on threads and a 2-process LocalCluster."""

from __future__ import annotations

import warnings

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
)

pytestmark = pytest.mark.cluster


def _assert_same(a, b):
    assert list(a) == list(b) and a.iterations == b.iterations
    for name in a:
        Wa, Wb = a[name].W_stacked, b[name].W_stacked
        np.testing.assert_allclose(Wa, Wb, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(a[name].H, b[name].H, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(a[name].d, b[name].d, rtol=1e-6)
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-9)


def test_deep_and_branched_graph_on_a_cluster(aml, cluster_client):
    def net():
        inp = factor_input(aml.matrix, name="aml")
        lo, hi = nmf_layer(inp, 3, name="lo"), nmf_layer(inp, 6, name="hi")
        top = nmf_layer(factor_concat(lo, hi), 2, name="top")
        return factor_net(inp, top, factor_config(maxit=5, warmup=2, seed=7))

    local = fit(net())
    remote = fit(net(), client=cluster_client)
    assert len(cluster_client.scheduler_info()["workers"]) == 2
    _assert_same(local, remote)
    # the same graph every step; on the cluster a reduction over blocks held by both workers
    # is summed as a chain (one more task per worker boundary), never more than that
    extra = np.subtract(remote.settings["graph_sizes"], local.settings["graph_sizes"])
    assert len(set(extra.tolist())) == 1 and 0 <= extra[0] <= 8, extra
    out_local = local.predict(aml.matrix[:, :20])
    out_remote = remote.predict(aml.matrix[:, :20])
    for key in out_local:
        np.testing.assert_allclose(out_local[key], out_remote[key], rtol=1e-9, atol=1e-12)


def test_shared_graph_on_a_cluster(hawaiibirds, geography, cluster_client):
    def net():
        species = factor_input(hawaiibirds.matrix, name="species")
        geo = factor_input(geography, name="geography")
        layer = nmf_layer(factor_shared(species, geo), 6, name="joint")
        return factor_net([species, geo], layer, factor_config(maxit=8, seed=7))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        local = fit(net())
        remote = fit(net(), client=cluster_client)
    _assert_same(local, remote)
