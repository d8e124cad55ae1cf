"""NMFResult travels (issue 14 item 3): save/load (zarr, atomic, names), to_anndata,
top_features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from readme_blocks import readme_block

from dask_factor import NMFResult, nmf


@pytest.fixture(scope="module")
def model(hawaiibirds):
    A, rows, cols = hawaiibirds
    m = nmf(A, 4, seed=3, maxit=10)
    m.feature_names = [str(v) for v in rows.index]
    m.sample_names = [f"cell{j}" for j in range(A.shape[1])]
    return m


def test_save_load_round_trip(model, hawaiibirds, tmp_path):
    path = model.save(tmp_path / "m.zarr")
    back = NMFResult.load(path)
    np.testing.assert_array_equal(back.W, model.W)
    np.testing.assert_array_equal(back.d, model.d)
    np.testing.assert_array_equal(back.H, model.H)
    assert back.feature_names == model.feature_names
    assert back.sample_names == model.sample_names
    assert back.loss_history == pytest.approx(model.loss_history)
    assert back.iterations == model.iterations and back.settings["L1"] == model.settings["L1"]
    A = hawaiibirds.matrix
    assert back.evaluate(A) == pytest.approx(model.evaluate(A), rel=1e-6)
    np.testing.assert_allclose(back.predict(A[:, :5]), model.predict(A[:, :5]), rtol=1e-6)


def test_save_refuses_and_replaces_atomically(model, tmp_path, monkeypatch):
    path = tmp_path / "m.zarr"
    model.save(path)
    with pytest.raises(FileExistsError):
        model.save(path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="only replaces a saved NMF result"):
        model.save(other, overwrite=True)
    with pytest.raises(FileExistsError, match="only replaces a saved NMF result"):
        model.save(other / "notes.txt", overwrite=True)  # nor a file (it used to)
    assert (other / "notes.txt").read_text() == "precious"
    # a failing write leaves the old store as it was and no temporary behind
    import zarr

    before = sorted(p.name for p in tmp_path.iterdir())
    real = zarr.Group.create_array

    def boom(self, name, **kw):
        if name == "H":
            raise RuntimeError("disk full")
        return real(self, name, **kw)

    monkeypatch.setattr(zarr.Group, "create_array", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(path, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    np.testing.assert_array_equal(NMFResult.load(path).H, model.H)
    model.save(path, overwrite=True)
    unnamed = NMFResult.load(path)
    assert unnamed.k == 4


def test_load_refuses_other_stores(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").attrs["format"] = "other"
    with pytest.raises(ValueError, match="not a saved NMF result"):
        NMFResult.load(tmp_path / "x.zarr")
    with pytest.raises(FileNotFoundError):
        NMFResult.load(tmp_path / "missing.zarr")
    # a file or a directory of something else: named, not zarr's "No group found in store"
    (tmp_path / "notes.txt").write_text("precious")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.csv").write_text("1,2")
    for other, what in (("notes.txt", "a regular file"), ("mine", "a directory with 1 entry")):
        with pytest.raises(ValueError, match=rf"path='.*{other}' is not a saved NMF result "
                                             rf"\(.*\): it is {what}"):
            NMFResult.load(tmp_path / other)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_to_anndata(model, hawaiibirds, tmp_path):
    ad = pytest.importorskip("anndata")
    new = model.to_anndata()
    assert new.shape == (1183, 183)
    assert list(new.var_names) == model.feature_names
    assert list(new.obs_names) == model.sample_names
    np.testing.assert_array_equal(new.obsm["X_nmf"], model.H.T)
    np.testing.assert_array_equal(new.varm["NMF_W"], model.W)
    np.testing.assert_array_equal(new.uns["nmf"]["d"], model.d)
    assert new.uns["nmf"]["params"]["k"] == 4
    assert len(new.uns["nmf"]["loss"]) == model.iterations
    adata = ad.AnnData(hawaiibirds.matrix.T.tocsr())
    adata.var_names = model.feature_names
    adata.obs_names = model.sample_names
    assert model.to_anndata(adata, key="birds") is adata
    assert adata.obsm["X_birds"].shape == (1183, 4) and "BIRDS_W" in adata.varm
    adata.write_h5ad(tmp_path / "a.h5ad")
    model.to_anndata(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_nmf"], model.H.T)
    adata.var_names = [f"g{i}" for i in range(183)]
    with pytest.raises(ValueError, match="var_names"):
        model.to_anndata(adata)
    with pytest.raises(ValueError, match="expected shape"):
        model.to_anndata(adata[:10].copy())


def test_top_features(model):
    top = model.top_features(5)
    assert top.shape == (5, 4) and list(top.columns) == ["nmf0", "nmf1", "nmf2", "nmf3"]
    for j in range(4):
        expect = [model.feature_names[i] for i in np.argsort(-model.W[:, j], kind="stable")[:5]]
        assert list(top[f"nmf{j}"]) == expect
    long = model.top_features(3, weights=True)
    assert list(long.columns) == ["factor", "rank", "feature", "weight"] and len(long) == 12
    assert (long.groupby("factor")["weight"].apply(lambda w: w.is_monotonic_decreasing)).all()
    assert isinstance(long, pd.DataFrame)
    with pytest.raises(ValueError, match="n: expected"):
        model.top_features(0)


def test_readme_example(capsys):
    pytest.importorskip("anndata")
    exec(compile(readme_block("Results that travel"), "README.md", "exec"), {})
    assert "nmf4" in capsys.readouterr().out
