"""dask_factor.tl.factor_graph (issue 14 item 2): a factorization graph on AnnData inputs gives
the direct graph fit's values, written with tl.nmf's keys; multi-modal inputs (same cells)
share the factors and each gets its own W block; layer=, backed and dask AnnData, copy=."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

ad = pytest.importorskip("anndata")

from dask_factor import datasets, tl  # noqa: E402
from dask_factor.graph import (  # noqa: E402
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    nmf_layer,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning at small maxit


@pytest.fixture(scope="module")
def birds():
    """Two modalities of the same 1,183 grid cells: species counts and |lat|, |lng| (3 × n)."""
    A, rows, cols = datasets.load("hawaiibirds")
    A = sp.csc_matrix(A, dtype=np.float32)
    G = np.vstack([np.abs(cols["lat"].to_numpy()), np.abs(cols["lng"].to_numpy()),
                   np.ones(len(cols))]).astype(np.float32)
    G *= 0.1 * A.sum() / G.sum()
    species = ad.AnnData(A.T.tocsr(), obs=cols.copy(), var=rows.copy())
    species.layers["double"] = (2 * A.T).tocsr()
    geo = ad.AnnData(np.ascontiguousarray(G.T), obs=cols.copy())
    geo.var_names = ["lat", "lng", "one"]
    return A, G, species, geo


def test_one_anndata_equals_the_direct_graph_fit(birds):
    A, _, species, _ = birds
    adata = species.copy()
    assert tl.factor_graph(adata, 5, seed=3, maxit=15) is None
    inp = factor_input(species, name="X")  # the same graph, built by hand
    direct = fit(factor_net(inp, nmf_layer(inp, 5, name="factor_net"),
                            factor_config(seed=3, maxit=15)))["factor_net"]
    # ... and the orientation is the matrix's (genes × cells; other blocks: float32 sums differ)
    inp = factor_input(A, name="X")
    matrix = fit(factor_net(inp, nmf_layer(inp, 5, name="factor_net"),
                            factor_config(seed=3, maxit=15)))["factor_net"]
    np.testing.assert_allclose(adata.varm["FACTOR_NET_W"], matrix.W, rtol=2e-3, atol=1e-6)
    np.testing.assert_array_equal(adata.obsm["X_factor_net"], direct.H.T)
    np.testing.assert_array_equal(adata.varm["FACTOR_NET_W"], direct.W)
    uns = adata.uns["factor_net"]
    np.testing.assert_array_equal(uns["d"], direct.d)
    np.testing.assert_array_equal(uns["loss"], direct.loss_history)
    assert uns["iterations"] == direct.iterations and uns["mse"] == direct.mse
    assert uns["params"]["seed"] == 3 and uns["params"]["maxit"] == 15
    assert uns["params"]["factor_layer"] == "factor_net"
    # a numpy integer rank is a rank (as tl.nmf's n_components), not refused
    again = tl.factor_graph(species, np.int64(5), seed=3, maxit=15, copy=True)
    np.testing.assert_array_equal(again.obsm["X_factor_net"], adata.obsm["X_factor_net"])


def test_two_modalities_share_the_factors(birds):
    A, G, species, geo = birds
    s, g = species.copy(), geo.copy()
    tl.factor_graph({"species": s, "geo": g}, 4, seed=1, maxit=12, key_added="joint")
    a, b = factor_input(species, name="species"), factor_input(geo, name="geo")
    direct = fit(factor_net([a, b], nmf_layer(factor_shared(a, b), 4, name="joint"),
                            factor_config(seed=1, maxit=12)))["joint"]
    for adata in (s, g):
        np.testing.assert_array_equal(adata.obsm["X_joint"], direct.H.T)
        np.testing.assert_array_equal(adata.uns["joint"]["d"], direct.d)
    np.testing.assert_array_equal(s.varm["JOINT_W"], direct.W["species"])
    np.testing.assert_array_equal(g.varm["JOINT_W"], direct.W["geo"])
    assert s.uns["joint"]["params"]["input"] == "species"
    assert g.uns["joint"]["params"]["input"] == "geo"
    assert list(g.uns["joint"]["params"]["inputs"]) == ["species", "geo"]


def test_deep_graph_and_factor_layer(birds):
    A, _, species, _ = birds

    def deep(x):
        return nmf_layer(nmf_layer(x, 6, name="fine"), 2, name="coarse")

    inp = factor_input(species, name="X")
    direct = fit(factor_net(inp, deep(inp), factor_config(seed=2, maxit=6)))
    coarse = tl.factor_graph(species, deep, copy=True, seed=2, maxit=6)
    np.testing.assert_array_equal(coarse.obsm["X_factor_net"], direct["coarse"].W)
    np.testing.assert_array_equal(coarse.uns["factor_net"]["H"], direct["coarse"].H)
    assert "FACTOR_NET_W" not in coarse.varm  # the coarse layer reads no genes
    np.testing.assert_array_equal(coarse.uns["factor_net"]["graph_loss"], direct.loss_history)
    fine = tl.factor_graph(species, deep, factor_layer="fine", key_added="fine", copy=True,
                           config=factor_config(seed=2, maxit=6))
    np.testing.assert_array_equal(fine.obsm["X_fine"], direct["fine"].H.T)
    np.testing.assert_array_equal(fine.varm["FINE_W"], direct["fine"].W)
    assert "X_factor_net" not in species.obsm  # copy=True left the input alone


def test_layer_backed_and_dask_inputs(birds, tmp_path):
    import dask.array as da

    A, G, species, geo = birds
    ref_s, ref_g = species.copy(), geo.copy()
    tl.factor_graph({"species": ref_s, "geo": ref_g}, 3, seed=4, maxit=10)
    # layer= per input: twice the counts give the same factors with d doubled (W, H normalised)
    two = tl.factor_graph({"species": species, "geo": geo}, 3, layer={"species": "double"},
                          seed=4, maxit=10, copy=True)
    assert two["species"].uns["factor_net"]["params"]["layer"] == "double"
    # the species block of the factorised matrix is doubled (not the geo one): the fit differs
    assert not np.allclose(two["geo"].varm["FACTOR_NET_W"], ref_g.varm["FACTOR_NET_W"])
    single = tl.factor_graph(species, 3, layer="double", seed=4, maxit=10, copy=True)
    direct = fit(factor_net(inp := factor_input(2 * A, name="double"),
                            nmf_layer(inp, 3, name="factor_net"),
                            factor_config(seed=4, maxit=10)))["factor_net"]
    np.testing.assert_allclose(single.varm["FACTOR_NET_W"], direct.W, rtol=1e-5, atol=1e-8)

    path = tmp_path / "species.h5ad"
    species.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    lazy = ad.AnnData(da.from_array(geo.X, chunks=(400, 3)), obs=geo.obs.copy())
    out = tl.factor_graph({"species": backed, "geo": lazy}, 3, seed=4, maxit=10, copy=True)
    backed.file.close()
    np.testing.assert_allclose(out["species"].varm["FACTOR_NET_W"],
                               ref_s.varm["FACTOR_NET_W"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["geo"].obsm["X_factor_net"], ref_g.obsm["X_factor_net"],
                               rtol=1e-4, atol=1e-7)


def test_bad_calls_fail_before_any_work(birds):
    _, _, species, geo = birds
    s = species.copy()
    with pytest.raises(ValueError, match=r"adata\['geo'\]: 10 cells, but adata\['s'\] has 1183"):
        tl.factor_graph({"s": s, "geo": geo[:10].copy()}, 2)
    shuffled = geo[::-1].copy()
    with pytest.raises(ValueError, match=r"adata\['geo'\].obs_names differ .*position 0"):
        tl.factor_graph({"s": s, "geo": shuffled}, 2)
    with pytest.raises(KeyError, match="layer='nope': not in adata.layers"):
        tl.factor_graph(s, 2, layer="nope")
    with pytest.raises(KeyError, match=r"layer: \['other'\] are not inputs"):
        tl.factor_graph({"s": s}, 2, layer={"other": "double"})
    with pytest.raises(KeyError, match="factor_layer='nope'"):
        tl.factor_graph(s, 2, factor_layer="nope")
    with pytest.raises(TypeError, match="graph: expected a rank"):
        tl.factor_graph(s, "two")
    with pytest.raises(TypeError, match="graph: expected a rank"):
        tl.factor_graph(s, True)
    with pytest.raises(TypeError, match="graph: the function must return the output layer"):
        tl.factor_graph(s, lambda x: x)
    with pytest.raises(TypeError, match="config: pass either"):
        tl.factor_graph(s, 2, config=factor_config(), seed=1)
    with pytest.raises(TypeError, match=r"adata\['m'\]: expected an anndata.AnnData"):
        tl.factor_graph({"s": s, "m": s.X}, 2)
    assert not any("factor_net" in k for k in (*s.obsm, *s.varm, *s.uns))


def test_readme_example():
    from readme_blocks import readme_block

    ns: dict = {}
    exec(compile(readme_block("scanpy / AnnData tools", 1), "README.md", "exec"), ns)
    species, where = ns["species"], ns["where"]
    np.testing.assert_array_equal(species.obsm["X_factor_net"], where.obsm["X_factor_net"])
    assert species.varm["FACTOR_NET_W"].shape == (183, 6)
    assert where.varm["FACTOR_NET_W"].shape == (2, 6)
