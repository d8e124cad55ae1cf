"""The ``fit`` and ``demo`` subcommands of ``dask-factor``."""

from __future__ import annotations

import json

import numpy as np

from dask_factor import datasets, nmf
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
