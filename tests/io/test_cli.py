"""The ``dask-factor`` command line: info, convert, simulate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from dask_factor.cli import SUBCOMMANDS, build_parser, main
from dask_factor.io import open_matrix, write_matrix

DATA = Path(__file__).resolve().parents[1] / "data" / "io"


@pytest.fixture
def zarr_path(tmp_path):
    A = sp.random(40, 150, density=0.1, format="csc", random_state=0, dtype=np.float32)
    write_matrix(A, tmp_path / "a.zarr", block_nnz=100)
    return tmp_path / "a.zarr", A


def test_parser_has_one_builder_per_subcommand():
    assert [f.__name__ for f in SUBCOMMANDS] == ["_add_info_parser", "_add_convert_parser",
                                                "_add_simulate_parser", "_add_fit_parser",
                                                "_add_demo_parser"]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"info", "convert", "simulate", "fit", "demo"}


def test_info_text_and_json(zarr_path, capsys):
    path, A = zarr_path
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "40 features x 150 samples" in out and f"{A.nnz:,}" in out and "zarr" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [40, 150] and info["nnz"] == A.nnz and info["format"] == "zarr"
    assert info["n_blocks"] > 1 and info["value_type"] == "float32"


def test_info_on_spz_fixture(capsys):
    assert main(["info", str(DATA / "tiny_int.obsvar.spz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "spz" and info["shape"] == [7, 5] and info["nnz"] == 13
    assert info["version"] == 2 and info["value_type"] == "uint8"
    assert info["row_meta_columns"] and info["col_meta_columns"]


def test_convert_zarr_to_h5ad_and_mtx_to_zarr(zarr_path, tmp_path, capsys):
    path, A = zarr_path
    assert main(["convert", str(path), str(tmp_path / "b.h5ad"), "-q"]) == 0
    np.testing.assert_array_equal(open_matrix(tmp_path / "b.h5ad").compute().toarray(),
                                  A.toarray())
    scipy.io.mmwrite(tmp_path / "m.mtx", A)
    assert main(["convert", str(tmp_path / "m.mtx"), str(tmp_path / "m.zarr"),
                 "--block-nnz", "50", "--dtype", "float32"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "block" in captured.err  # the tqdm bar
    x = open_matrix(tmp_path / "m.zarr")
    assert x.dtype == np.float32 and x.numblocks[1] > 5
    np.testing.assert_array_equal(x.compute().toarray(), A.toarray())


def test_convert_errors_exit_2(zarr_path, tmp_path, capsys):
    path, _ = zarr_path
    assert main(["convert", str(path), str(path), "-q"]) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.zarr"), str(tmp_path / "x.zarr")]) == 2
    assert main(["convert", str(path), str(tmp_path / "x.txt")]) == 2
    assert "format" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert main(["convert", str(path), str(tmp_path / "y.zarr"), "--value-type", "uint8"]) == 2
    assert "value_type" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", str(path)])  # argparse: missing DST
    assert not (tmp_path / "x.zarr").exists()


def test_simulate(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(["simulate", "--samples", "600", "--features", "120", "--k", "3",
                 "--density", "0.05", "--seed", "3", "--block-cols", "256", "-q", str(out)]) == 0
    from dask_factor.datasets import simulate_counts

    ref = simulate_counts(600, 120, 3, density=0.05, seed=3).compute()
    got = open_matrix(out).compute()
    assert (got != ref).nnz == 0
    assert main(["simulate", "--samples", "10", "--features", "5", "--k", "9", "-q",
                 str(tmp_path / "bad.zarr")]) == 2
    assert "--k 9 must not exceed --features 5" in capsys.readouterr().err  # the CLI's words


def test_subprocess_entry_point(zarr_path):
    path, A = zarr_path
    res = subprocess.run([sys.executable, "-m", "dask_factor.cli", "info", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["nnz"] == A.nnz
    res = subprocess.run([sys.executable, "-m", "dask_factor.cli", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "dask-factor" in res.stdout
