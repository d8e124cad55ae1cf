"""The command line speaks its own language: errors and warnings about arguments name the
command's options (``--overwrite``, ``--k``, ``--resume``), never the library's keyword
arguments (``overwrite=True``, ``k:``); ``python3 run.py demo`` takes exactly
``dask-factor demo``'s options."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from dask_factor.cli import main
from dask_factor.io import write_matrix

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_WORDS = re.compile(r"\w+=True|(?<![\w-])(k|maxit|tol|checkpoint_every|n_samples|"
                           r"value_type|block_nnz)[:=]")


@pytest.fixture(scope="module")
def src(tmp_path_factory, hawaiibirds):
    path = tmp_path_factory.mktemp("words") / "birds.zarr"
    write_matrix(hawaiibirds.matrix, str(path))
    return path


def _err(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["fit", "{src}", "{tmp}/m.npz", "--k", "500", "-q"], "--k: expected 1 <= k <= min(m, n)"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "0", "-q"], "--k: expected an integer >= 1, got 0"),
    (["fit", "{src}", "{tmp}/m.npz", "-q"], "--k: required"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "3", "--maxit", "0", "-q"], "--maxit: expected"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "3", "--L1", "2", "-q"], "--L1: expected"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "3", "--resume", "-q"],
     "--resume: set --checkpoint PATH too"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "3", "--checkpoint-every", "2", "-q"],
     "--checkpoint-every: set --checkpoint PATH too"),
    (["fit", "{src}", "{src}", "--k", "3", "-q"], "fit only replaces a .npz"),
    (["fit", "{src}", "{tmp}/m.npz", "--k", "3", "--overwrite", "-q"],
     "--overwrite: applies to a SPEC.yaml's output"),
    (["convert", "{src}", "{src}", "-q"], "DST='{src}' exists"),
    (["convert", "{src}", "{tmp}/x.spz", "--block-nnz", "0", "-q"], "--block-nnz must be"),
    (["simulate", "{src}", "--samples", "10", "--features", "5", "--k", "2", "-q"],
     "pass --overwrite"),
    (["simulate", "{tmp}/y.zarr", "--samples", "10", "--features", "5", "-q"],
     "--k 10 must not exceed --features 5"),
    (["simulate", "{tmp}/y.zarr", "--samples", "0", "--features", "5", "-q"],
     "--samples must be a positive integer"),
    (["demo", "--dataset", "aml", "--k", "0", "-q"], "--k: expected an integer >= 1"),
])
def test_errors_name_the_commands_options(argv, expected, src, tmp_path, capsys):
    fill = {"src": str(src), "tmp": str(tmp_path)}
    code, err = _err(capsys, *(a.format(**fill) for a in argv))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"dask-factor {argv[0]}: error: "), err
    assert expected.format(**fill) in err, err
    assert not LIBRARY_WORDS.search(err.split("error: ", 1)[1]), err


def test_an_earlier_checkpoint_asks_for_resume(src, tmp_path, capsys):
    ck, out = tmp_path / "fit.ckpt", tmp_path / "m.npz"
    args = ["fit", str(src), str(out), "--k", "3", "--seed", "1", "--maxit", "5", "--tol", "0",
            "-q", "--checkpoint", str(ck), "--checkpoint-every", "2"]
    assert main(args) == 0
    code, err = _err(capsys, *args)
    assert code == 2 and "pass --resume to continue it" in err, err
    assert "resume=True" not in err


def test_warnings_are_one_line_in_the_commands_words(src, tmp_path, capsys):
    code, err = _err(capsys, "fit", str(src), str(tmp_path / "m.npz"), "--k", "3", "--maxit",
                     "2", "-q")
    assert code == 0
    line = next(x for x in err.splitlines() if "ConvergenceWarning" in x)
    assert line.startswith("dask-factor fit: ConvergenceWarning: nmf: stopped at --maxit 2")
    assert line.endswith("raise --maxit or --tol"), line
    spec = tmp_path / "fit.yaml"
    spec.write_text(f"inputs: {{b: {src}}}\nlayers: [{{name: f, input: b, k: 3}}]\n"
                    "config: {maxit: 2, seed: 1}\noutput: out.zarr\n")
    code, err = _err(capsys, "fit", str(spec), "-q")
    assert code == 0
    line = next(x for x in err.splitlines() if "ConvergenceWarning" in x)
    assert "stopped at config.maxit=2" in line and line.endswith(
        "raise config.maxit or config.tol"), line


def test_run_py_demo_is_dask_factor_demo(monkeypatch, capsys):
    """``python3 run.py demo ARGS`` runs ``python -m dask_factor.demo ARGS``, which is
    ``dask-factor demo ARGS``: the same parser, the same messages, the same exit status."""
    spec = importlib.util.spec_from_file_location("run_py", ROOT / "run.py")
    run_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_py)
    seen = {}
    monkeypatch.setattr(run_py, "ensure_env", lambda *a, **k: None)  # never build a venv
    monkeypatch.setattr(run_py.subprocess, "call",
                        lambda args, cwd=None: seen.setdefault("args", args) and 0)
    run_py.main(["demo", "--dataset", "aml", "--k", "3", "--maxit", "5", "-q"])
    assert seen["args"][1:] == ["-m", "dask_factor.demo", "--dataset", "aml", "--k", "3",
                                "--maxit", "5", "-q"]

    from dask_factor import demo

    calls = []
    monkeypatch.setattr(demo, "run", lambda *a, **k: calls.append((a, k)) or {})
    assert demo.main(seen["args"][3:]) == 0  # what run.py's child process runs
    assert calls == [(("aml", 3, 42, 5), {"progress": False})]
    monkeypatch.setattr(sys, "argv", ["dask_factor.demo", "--help"])
    with pytest.raises(SystemExit):
        demo.main()
    shown = capsys.readouterr().out
    for option in ("--dataset", "--k", "--seed", "--maxit", "--quiet"):
        assert option in shown
    with pytest.raises(SystemExit) as ei:
        demo.main(["--k", "zero"])
    assert ei.value.code == 2
    assert "dask-factor demo: error: argument --k: invalid int value: 'zero'" in \
        capsys.readouterr().err
