"""Issue 17, item 3 (the rest): errors that say what is wrong, with the path.

* ``load_result`` of a saved graph result missing a layer's array or attribute: a
  ``MatrixFormatError`` naming the store and what is missing (was ``KeyError: 'H'``);
* a list of lists as the matrix: fitted when rectangular and numeric, otherwise an error about
  the list (was ``ValueError: got shape ()`` for every list);
* ``dask-factor info x.spz | head``: the pipe closing early ends the command quietly (was a
  ``BrokenPipeError`` traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf, svd
from dask_factor.graph import factor_config, factor_input, factor_net, fit, load_result, nmf_layer
from dask_factor.io import MatrixFormatError
from dask_factor.io.spz import write_spz

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- load_result


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    A = sp.random(40, 60, density=0.3, format="csc", random_state=3)
    inp = factor_input(A, name="x")
    net = factor_net(inp, nmf_layer(nmf_layer(inp, 4, name="fine"), 2, name="coarse"),
                     factor_config(maxit=3, seed=1))
    p = tmp_path_factory.mktemp("res") / "res.zarr"
    fit(net).save(p)
    return p


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


DAMAGE = {
    "a layer's H removed": (lambda p: shutil.rmtree(p / "layers" / "1" / "H"), "'H' is missing"),
    "a layer's W removed": (lambda p: shutil.rmtree(p / "layers" / "0" / "W"), "'W' is missing"),
    "a layer group removed": (lambda p: shutil.rmtree(p / "layers" / "1"), "'1' is missing"),
    "a layer attribute removed": (
        lambda p: _edit_json(p / "layers" / "0" / "zarr.json",
                             lambda d: d["attributes"].pop("iterations")),
        "'iterations' is missing"),
    "root attribute removed": (
        lambda p: _edit_json(p / "zarr.json", lambda d: d["attributes"].pop("layer_names")),
        "'layer_names' is missing"),
    "H metadata not JSON": (lambda p: (p / "layers" / "0" / "H" / "zarr.json").write_text("{"),
                            "damaged or unreadable"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_load_result_of_a_damaged_result(saved, tmp_path, name):
    p = tmp_path / "res.zarr"
    shutil.copytree(saved, p)
    damage, match = DAMAGE[name]
    damage(p)
    with pytest.raises(MatrixFormatError, match=match) as ei:
        load_result(p)
    assert "res.zarr" in str(ei.value)
    assert load_result(saved).layers  # the original still loads


# --------------------------------------------------------------------------- lists of lists


@pytest.mark.parametrize("fit_", [lambda A: nmf(A, k=1, maxit=3, seed=1),
                                  lambda A: svd(A, k=1)], ids=["nmf", "svd"])
def test_a_rectangular_list_of_lists_is_a_matrix(fit_):
    A = [[1.0, 2.0, 0.0], [3.0, 4.0, 1.0], [0.0, 1.0, 5.0]]
    out = fit_(A)
    assert out is not None


@pytest.mark.parametrize(("A", "err", "match"), [
    ([[1, 2], [3]], ValueError, "rectangular"),
    ([[1, "a"], [3, 4]], TypeError, "must hold numbers"),
    ([1, 2, 3], ValueError, r"a list of shape \(3,\)"),
    ([[[1.0]]], ValueError, r"shape \(1, 1, 1\)"),
    ([], ValueError, r"shape \(0,\)"),
    ((), ValueError, r"a tuple of shape \(0,\)"),
])
@pytest.mark.parametrize("entry", ["nmf", "svd"])
def test_a_bad_list_of_lists_says_what_is_wrong(A, err, match, entry):
    with pytest.raises(err, match=match) as ei:
        (nmf if entry == "nmf" else svd)(A, k=1)
    assert "got shape ()" not in str(ei.value)
    assert str(ei.value).startswith("A:")


# --------------------------------------------------------------------------- CLI and pipes


def test_cli_info_into_a_closed_pipe(tmp_path):
    p = tmp_path / "x.spz"
    write_spz(sp.random(30, 40, density=0.2, format="csc", random_state=0), p,
              value_type="float64")
    code = "import sys; from dask_factor.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "info", str(p)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    proc.stdout.close()  # like `| head` that has already exited
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_cli_info_piped_into_head(tmp_path):
    p = tmp_path / "x.spz"
    write_spz(sp.random(30, 40, density=0.2, format="csc", random_state=0), p,
              value_type="float64")
    exe = f"{sys.executable} -c 'import sys; from dask_factor.cli import main; " \
          f"sys.exit(main(sys.argv[1:]))'"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(f"{exe} info {p} | head -n 1", shell=True, capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=120)
    assert out.stdout.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr


def test_cli_reports_os_errors_without_a_traceback(tmp_path, capsys):
    from dask_factor.cli import main

    d = tmp_path / "dir.spz"
    d.mkdir()
    assert main(["info", str(d)]) != 0
    err = capsys.readouterr().err
    assert "dir.spz" in err and "Traceback" not in err


def test_numpy_arrays_are_untouched():
    A = np.abs(np.random.default_rng(0).standard_normal((10, 12)))
    assert nmf(A, k=2, maxit=2, seed=1).W.shape == (10, 2)
