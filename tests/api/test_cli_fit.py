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
