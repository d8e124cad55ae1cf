"""Graph results: access by name, zarr save/load, AnnData, and predict."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from dask_factor import nmf
from dask_factor.graph import (
    GraphResult,
    factor_condition,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    load_result,
    nmf_layer,
)


@pytest.fixture(scope="module")
def deep(aml):
    inp = factor_input(aml.matrix, name="aml")
    net = factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 2, name="coarse"),
                     factor_config(maxit=15, seed=4))
    return fit(net)


@pytest.fixture(scope="module")
def shared(hawaiibirds, geography):
    species = factor_input(hawaiibirds.matrix, name="species")
    geo = factor_input(geography, name="geography")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fit(factor_net([species, geo], nmf_layer(factor_shared(species, geo), 4,
                                                        name="joint"),
                              factor_config(maxit=10, seed=4)))


def test_access_by_name_and_attribute(deep):
    assert deep["fine"] is deep.fine
    assert list(deep.keys()) == ["fine", "coarse"] and len(deep) == 2 and "coarse" in deep
    with pytest.raises(KeyError, match="no layer named 'x'; layers: \\['fine', 'coarse'\\]"):
        deep["x"]
    with pytest.raises(AttributeError, match="layer 'x'"):
        _ = deep.x
    layer = deep.coarse
    assert layer.loss == layer.mse and layer.k == 2
    assert "coarse" in repr(deep)


def _same(a: GraphResult, b: GraphResult):
    assert list(a) == list(b)
    for name in a:
        la, lb = a[name], b[name]
        if isinstance(la.W, dict):
            assert list(la.W) == list(lb.W)
            for key in la.W:
                np.testing.assert_array_equal(la.W[key], lb.W[key])
        else:
            np.testing.assert_array_equal(la.W, lb.W)
        np.testing.assert_array_equal(la.H, lb.H)
        np.testing.assert_array_equal(la.d, lb.d)
        assert (la.iterations, la.converged, la.sse, la.mse, la.input, la.embedding) == \
            (lb.iterations, lb.converged, lb.sse, lb.mse, lb.input, lb.embedding)
        assert la.loss_history == lb.loss_history
    assert a.loss_history == b.loss_history and a.plan == b.plan
    assert a.config == b.config and a.input_names == b.input_names


def test_save_load_round_trip(deep, shared, tmp_path):
    for res, name in ((deep, "deep.zarr"), (shared, "shared.zarr")):
        path = tmp_path / name
        res.save(path)
        _same(res, GraphResult.load(path))
        _same(res, load_result(str(path)))
    # only the final store is left behind (written to a temporary sibling, then renamed)
    assert sorted(os.listdir(tmp_path)) == ["deep.zarr", "shared.zarr"]


def test_save_refuses_to_overwrite_and_is_atomic(deep, shared, tmp_path):
    path = tmp_path / "r.zarr"
    deep.save(path)
    with pytest.raises(FileExistsError):
        shared.save(path)
    _same(deep, GraphResult.load(path))

    bad = GraphResult(**{**deep.__dict__, "layers": {"x": object()}})
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        bad.save(path, overwrite=True)
    _same(deep, GraphResult.load(path))  # the old store is untouched
    assert sorted(os.listdir(tmp_path)) == ["r.zarr"]
    shared.save(path, overwrite=True)
    _same(shared, GraphResult.load(path))
    with pytest.raises(ValueError, match="not a saved factor_net result"):
        import zarr

        zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
        GraphResult.load(tmp_path / "other.zarr")


def test_to_anndata(deep, shared, aml, hawaiibirds):
    ad = pytest.importorskip("anndata")
    adata = ad.AnnData(np.ascontiguousarray(aml.matrix.T))
    out = deep.to_anndata(adata)
    assert out is adata
    np.testing.assert_array_equal(adata.obsm["X_fine"], deep.fine.H.T)  # cells × k
    np.testing.assert_array_equal(adata.obsm["X_coarse"], deep.coarse.W)  # per-sample W
    np.testing.assert_array_equal(adata.varm["fine_W"], deep.fine.W)
    info = adata.uns["factor_net"]
    np.testing.assert_array_equal(info["layers"]["coarse"]["H"], deep.coarse.H)
    np.testing.assert_array_equal(info["loss_history"], deep.loss_history)
    # a shared layer: the chosen input's W goes to varm, the other block to uns
    birds = ad.AnnData(hawaiibirds.matrix.T.tocsr())
    copy = shared.to_anndata(birds, input="species", copy=True)
    assert "X_joint" not in birds.obsm  # copy=True leaves the original alone
    np.testing.assert_array_equal(copy.varm["joint_W"], shared.joint.W["species"])
    np.testing.assert_array_equal(copy.uns["factor_net"]["layers"]["joint"]["W"]["geography"],
                                  shared.joint.W["geography"])
    with pytest.raises(ValueError, match="n_obs"):
        deep.to_anndata(ad.AnnData(np.ones((10, 824))))
    with pytest.raises(ValueError, match="not an input"):
        deep.to_anndata(adata, input="nope")


def test_predict_single_layer_matches_nmf_predict(aml):
    A = aml.matrix
    inp = factor_input(A, name="aml")
    res = fit(factor_net(inp, nmf_layer(inp, 5, name="l"), factor_config(maxit=20, seed=9)))
    model = nmf(A, 5, seed=9, maxit=20)
    np.testing.assert_allclose(res.predict(A[:, :30])["l"], model.predict(A[:, :30]),
                               rtol=1e-6, atol=1e-9)


def test_predict_through_a_deep_graph(deep, aml, tmp_path):
    A = aml.matrix
    out = deep.predict(A[:, :25])
    assert out["fine"].shape == (6, 25) and out["coarse"].shape == (25, 2)
    # on the training samples the projections land near the fitted embeddings
    assert np.abs(out["fine"] - deep.fine.H[:, :25]).max() < 0.05 * np.abs(deep.fine.H).max()
    assert np.abs(out["coarse"] - deep.coarse.W[:25]).max() < \
        0.05 * np.abs(deep.coarse.W).max()
    # a loaded result predicts the same
    deep.save(tmp_path / "d.zarr")
    again = GraphResult.load(tmp_path / "d.zarr").predict(A[:, :25])
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])
    with pytest.raises(ValueError, match="824 features"):
        deep.predict(A[:100, :5])


def test_predict_shared_and_conditioned(shared, hawaiibirds, geography, aml):
    new = {"species": hawaiibirds.matrix[:, :40], "geography": geography[:, :40]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = shared.predict(new)
    assert out["joint"].shape == (4, 40)
    with pytest.raises(TypeError, match="pass new_data as a dict"):
        shared.predict(hawaiibirds.matrix[:, :40])
    with pytest.raises(ValueError, match="lacks input"):
        shared.predict({"species": hawaiibirds.matrix[:, :40]})
    A = aml.matrix
    Z = np.vstack([np.arange(135) % 2, np.ones(135)])
    inp = factor_input(A, name="aml")
    res = fit(factor_net(inp, nmf_layer(factor_condition(nmf_layer(inp, 4, name="f"), Z,
                                                         name="cov"), 2, name="top"),
                         factor_config(maxit=8, seed=2)))
    with pytest.raises(ValueError, match="conditions=\\{'cov'"):
        res.predict(A[:, :10])
    out = res.predict(A[:, :10], conditions={"cov": Z[:, :10]})
    assert out["f"].shape == (4, 10) and out["top"].shape == (10, 2)
