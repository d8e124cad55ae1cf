"""The ``fit`` and ``demo`` subcommands of ``dask-factor``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dask_factor import NMFResult, datasets, nmf
from dask_factor.cli import main
from dask_factor.io import write_matrix


def test_fit_writes_the_same_model_as_nmf(tmp_path, capsys):
    A = datasets.load("hawaiibirds").matrix
    src = tmp_path / "birds.zarr"
    write_matrix(A, str(src))
    out = tmp_path / "model.npz"
    assert main(["fit", str(src), str(out), "--k", "4", "--seed", "3", "--maxit", "8",
                 "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = nmf(src.as_posix(), 4, seed=3, maxit=8)
    z = np.load(out)
    np.testing.assert_array_equal(z["W"], ref.W)
    np.testing.assert_array_equal(z["H"], ref.H)
    assert summary["iterations"] == ref.iterations
    assert abs(summary["mse"] - ref.mse) <= 1e-12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds.zarr", "model.npz"]


def test_fit_reports_a_bad_rank_by_name(tmp_path, capsys):
    A = datasets.load("hawaiibirds").matrix
    src = tmp_path / "birds.zarr"
    write_matrix(A, str(src))
    out = tmp_path / "model.npz"
    assert main(["fit", str(src), str(out), "--k", "500", "-q"]) == 2
    assert "k:" in capsys.readouterr().err
    assert not out.exists()


def test_fit_updates_per_pass(tmp_path, capsys):
    """``--updates-per-pass B`` is nmf(updates_per_pass=B); a bad value is named as the option."""
    src = tmp_path / "birds.zarr"
    write_matrix(datasets.load("hawaiibirds").matrix, str(src))
    out = tmp_path / "model.npz"
    assert main(["fit", str(src), str(out), "--k", "3", "--seed", "2", "--maxit", "4",
                 "--tol", "0", "--updates-per-pass", "3", "-q"]) == 0
    ref = nmf(src.as_posix(), 3, seed=2, maxit=4, tol=0, updates_per_pass=3)
    np.testing.assert_array_equal(np.load(out)["W"], ref.W)
    capsys.readouterr()
    assert main(["fit", str(src), str(tmp_path / "bad.npz"), "--k", "3",
                 "--updates-per-pass", "0", "-q"]) == 2
    assert "--updates-per-pass: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_demo_prints_a_summary(capsys):
    assert main(["demo", "--dataset", "aml", "--k", "3", "--maxit", "10", "-q"]) == 0
    text = capsys.readouterr().out
    assert "aml" in text and "MSE" in text and "category" in text


def test_fit_checkpoints_and_resumes(tmp_path, capsys):
    """``--checkpoint`` then ``--resume`` (a re-queued job runs the same command) reaches the
    factors of one uninterrupted run; ``--resume`` without a checkpoint starts afresh."""
    A = datasets.load("hawaiibirds").matrix
    src = tmp_path / "birds.zarr"
    write_matrix(A, str(src))
    ck, out = tmp_path / "fit.ckpt", tmp_path / "model.npz"
    common = ["fit", str(src), str(out), "--k", "3", "--seed", "1", "--tol", "0", "-q",
              "--checkpoint", str(ck), "--checkpoint-every", "2", "--resume"]
    assert main(common + ["--maxit", "5"]) == 0  # no checkpoint yet: starts afresh
    assert ck.is_dir()  # the state of iteration 4
    assert main(common + ["--maxit", "9"]) == 0  # continues from iteration 4
    ref = nmf(src.as_posix(), 3, seed=1, maxit=9, tol=0)
    z = np.load(out)
    np.testing.assert_array_equal(z["W"], ref.W)
    np.testing.assert_array_equal(z["H"], ref.H)
    capsys.readouterr()
    assert main(["fit", str(src), str(out), "--k", "3", "--seed", "1", "-q",
                 "--checkpoint", str(ck)]) == 2
    err = capsys.readouterr().err
    assert "earlier fit" in err and "resume" in err


def _birds_h5ad(tmp_path):
    ad = pytest.importorskip("anndata")
    A, rows, cols = datasets.load("hawaiibirds")
    path = tmp_path / "birds.h5ad"
    ad.AnnData(A.T.tocsr(), obs=cols, var=rows).write_h5ad(path)
    return path, rows, cols


def test_fit_writes_the_named_zarr_result_and_into_the_anndata(tmp_path, capsys):
    """OUT is NMFResult.save's store with SRC's gene and cell names; --anndata writes the model
    into SRC as NMFResult.to_anndata does (checked before the fit, like a spec's output)."""
    ad = pytest.importorskip("anndata")
    src, rows, cols = _birds_h5ad(tmp_path)
    out = tmp_path / "model.zarr"
    argv = ["fit", str(src), str(out), "--k", "3", "--seed", "2", "--maxit", "6", "-q"]
    assert main(argv + ["--anndata", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(out) and summary["anndata"] == str(src)
    ref = nmf(str(src), 3, seed=2, maxit=6)
    back = NMFResult.load(out)
    np.testing.assert_array_equal(back.W, ref.W)
    np.testing.assert_array_equal(back.H, ref.H)
    assert back.feature_names == [str(x) for x in rows.index]
    assert back.sample_names == [str(x) for x in cols.index]
    adata = ad.read_h5ad(src)
    np.testing.assert_array_equal(adata.obsm["X_nmf"], ref.H.T)
    np.testing.assert_array_equal(adata.varm["NMF_W"], ref.W)
    np.testing.assert_array_equal(adata.uns["nmf"]["d"], ref.d)
    # a second run: OUT (an earlier result) is replaced; SRC's keys only with --overwrite,
    # refused before any fit
    stamp = (src.stat().st_mtime_ns, sorted(p.name for p in out.iterdir()))
    assert main(argv + ["--anndata"]) == 2
    err = capsys.readouterr().err
    assert "SRC=" in err and "obsm/X_nmf" in err and "--overwrite" in err
    assert (src.stat().st_mtime_ns, sorted(p.name for p in out.iterdir())) == stamp
    assert main(argv + ["--anndata", "--overwrite"]) == 0
    assert main(argv) == 0  # without --anndata: SRC is not touched, OUT replaced
    zarr_src = tmp_path / "birds.zarr"
    write_matrix(datasets.load("hawaiibirds").matrix, str(zarr_src))
    capsys.readouterr()
    assert main(["fit", str(zarr_src), str(tmp_path / "m2.zarr"), "--k", "2", "--anndata",
                 "-q"]) == 2
    assert "--anndata: SRC=" in capsys.readouterr().err
    assert not (tmp_path / "m2.zarr").exists()


def test_fit_npz_keeps_working_and_loads_back(tmp_path):
    """OUT.npz is still the older .npz (deploy recipes use it), now with the names, and
    NMFResult.load reads it (and the ones written before, without names)."""
    src, rows, cols = _birds_h5ad(tmp_path)
    out = tmp_path / "model.npz"
    assert main(["fit", str(src), str(out), "--k", "3", "--seed", "2", "--maxit", "40",
                 "-q"]) == 0
    ref = nmf(str(src), 3, seed=2, maxit=40)
    back = NMFResult.load(out)
    np.testing.assert_array_equal(back.W, ref.W)
    np.testing.assert_array_equal(back.H, ref.H)
    assert back.iterations == ref.iterations and back.converged == ref.converged
    assert back.mse == ref.loss_history[-1] and back.settings["L1"] == ref.settings["L1"]
    assert back.feature_names == [str(x) for x in rows.index]
    z = dict(np.load(out))
    old = tmp_path / "old.npz"
    np.savez(old, **{k: v for k, v in z.items() if not k.endswith("_names")})
    assert NMFResult.load(old).feature_names is None
    np.testing.assert_array_equal(NMFResult.load(old).d, ref.d)


def test_fit_robust_and_zero_inflation(tmp_path, capsys, monkeypatch):
    """``--robust [DELTA|mae]`` and ``--zi`` reach nmf as robust= and zi= (the fits themselves
    are tested in tests/api/test_losses.py); a bad ``--robust`` is named by the parser."""
    import sys

    src = tmp_path / "birds.zarr"
    write_matrix(datasets.load("hawaiibirds").matrix, str(src))
    seen = []

    def fake_nmf(*args, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")  # the fit itself is not what is tested

    monkeypatch.setattr(sys.modules["dask_factor.nmf"], "nmf", fake_nmf)  # cli imports it late
    for flags, want in [([], {"robust": False, "zi": "none"}),
                        (["--robust"], {"robust": True}),
                        (["--robust", "mae"], {"robust": "mae"}),
                        (["--robust", "0.5", "--loss", "kl"], {"robust": 0.5, "loss": "kl"}),
                        (["--loss", "nb", "--zi", "col"], {"loss": "nb", "zi": "col"})]:
        with pytest.raises(RuntimeError, match="stop here"):
            main(["fit", str(src), str(tmp_path / "m.npz"), "--k", "3", *flags, "-q"])
        assert {k: seen[-1][k] for k in want} == want, flags
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main(["fit", str(src), str(tmp_path / "b.npz"), "--k", "3", "--robust", "x"])
    assert exc.value.code == 2
    assert "--robust: expected 'mae' or a Huber delta > 0, got 'x'" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["fit", str(src), str(tmp_path / "c.npz"), "--k", "3", "--zi", "row", "-q"]) == 2
    assert "--zi" in capsys.readouterr().err
