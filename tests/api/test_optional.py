"""Optional extras (issue 14 item 6): every public entry point that needs one fails, without it,
with ``pip install "dask_factor[<extra>]"`` (dask_factor._optional.require), never a bare
ModuleNotFoundError. A missing package is simulated with ``sys.modules[name] = None``."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import datasets, nmf
from dask_factor._optional import DISTRIBUTIONS, EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[2]


def hide(monkeypatch, *packages: str) -> None:
    """Make ``import package`` (and its submodules) fail as if it were not installed."""
    for top in packages:
        for name in [m for m in list(sys.modules) if m == top or m.startswith(top + ".")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, top, None)


def pip_line(extra: str) -> str:
    return re.escape(f'pip install "dask_factor[{extra}]"')


def test_extras_table_matches_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert extra in extras, f"{module}: extra {extra!r} is not in pyproject.toml"
        dist = DISTRIBUTIONS.get(module, module)
        names = [re.split(r"[<>=\[ ;]", req, maxsplit=1)[0] for req in extras[extra]]
        assert dist in names, f"pyproject's [{extra}] does not install {dist} ({names})"


def test_no_bare_import_of_an_optional_package():
    """Optional packages are imported through require(), in a try whose except ImportError
    has a fallback (the estimators' bases, the driver's ConvergenceWarning), or for annotations
    under ``if TYPE_CHECKING:``."""
    bad = []
    for path in (ROOT / "dask_factor").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                   "ModuleNotFoundError")
                    for h in node.handlers):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and \
                    node.test.id == "TYPE_CHECKING":
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                if name.split(".")[0] in EXTRAS and id(node) not in guarded:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {name}")
    assert not bad, "use dask_factor._optional.require:\n" + "\n".join(bad)


def test_require_names_the_extra(monkeypatch):
    hide(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtra, match=pip_line("plot")) as err:
        require("matplotlib.pyplot", "a plot")
    assert isinstance(err.value, ModuleNotFoundError) and "a plot needs matplotlib" in str(
        err.value)
    with pytest.raises(ValueError, match="not an optional dependency"):
        require("numpy")


@pytest.fixture(scope="module")
def small():
    A, rows, cols = datasets.load("hawaiibirds")
    return sp.csc_matrix(A[:, :200], dtype=np.float32)


def test_without_matplotlib_every_plot_names_the_extra(monkeypatch, small):
    from dask_factor import plot
    from dask_factor.graph import cross_validate_graph, factor_config, factor_input, nmf_layer

    model = nmf(small, 2, seed=1, maxit=3)
    ranks = nmf(small, [2, 3], seed=1, maxit=3)
    inp = factor_input(small, name="b")
    cv = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], name="cv"), {"k": [2]},
                              factor_config(test_fraction=0.1, maxit=3), reps=1, verbose=False)
    hide(monkeypatch, "matplotlib")
    calls = [lambda: plot.loss_history(model), lambda: plot.cv_curve(ranks),
             lambda: plot.factor_heatmap(model, np.zeros(200)),
             lambda: plot.top_features(model, 0), ranks.plot, cv.plot]
    for call in calls:
        with pytest.raises(MissingExtra, match=pip_line("plot")):
            call()


def test_without_anndata_or_h5py(monkeypatch, small, tmp_path):
    ad = pytest.importorskip("anndata")
    from dask_factor import tl
    from dask_factor.graph import factor_config, factor_input, factor_net, fit, nmf_layer
    from dask_factor.io import open_matrix, read_metadata, write_matrix

    adata = ad.AnnData(small.T.tocsr())
    h5ad = tmp_path / "x.h5ad"
    adata.write_h5ad(h5ad)
    model = nmf(small, 2, seed=1, maxit=3)
    inp = factor_input(small, name="b")
    graph = fit(factor_net(inp, nmf_layer(inp, 2, name="l"), factor_config(maxit=3)))
    zarr_with_names = tmp_path / "named.zarr"
    write_matrix(h5ad, zarr_with_names)

    hide(monkeypatch, "anndata")
    for call in (lambda: tl.nmf(adata, 2), lambda: tl.pca(adata, 2), lambda: tl.svd(adata, 2),
                 lambda: tl.factor_graph(adata, 2), lambda: model.to_anndata(),
                 lambda: read_metadata(h5ad), lambda: read_metadata(zarr_with_names),
                 lambda: write_matrix(small, tmp_path / "y.h5ad")):
        with pytest.raises(MissingExtra, match=pip_line("anndata")):
            call()
    monkeypatch.undo()

    hide(monkeypatch, "h5py")
    for call in (lambda: nmf(h5ad, 2), lambda: open_matrix(h5ad),
                 lambda: graph.to_anndata(h5ad), lambda: model.to_anndata(h5ad)):
        with pytest.raises(MissingExtra, match=pip_line("anndata")):
            call()


def test_without_h5py_the_cli_prints_the_command(monkeypatch, small, tmp_path, capsys):
    ad = pytest.importorskip("anndata")
    from dask_factor.cli import main

    h5ad = tmp_path / "x.h5ad"
    ad.AnnData(small.T.tocsr()).write_h5ad(h5ad)
    hide(monkeypatch, "h5py")
    assert main(["fit", str(h5ad), str(tmp_path / "m.zarr"), "--k", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "dask_factor[anndata]"' in err and "Traceback" not in err
    assert not (tmp_path / "m.zarr").exists()


def test_without_the_cluster_extra(monkeypatch):
    from dask_factor import cluster

    hide(monkeypatch, "dask_jobqueue", "dask_kubernetes")
    for call in (lambda: cluster.slurm(jobs=1), lambda: cluster.kubernetes_spec("x"),
                 lambda: cluster.kubernetes("x")):
        with pytest.raises(MissingExtra, match=pip_line("cluster")):
            call()


def test_without_h5py_a_spec_with_an_h5ad_input_names_the_extra(monkeypatch, small, tmp_path,
                                                                 capsys):
    ad = pytest.importorskip("anndata")
    from dask_factor.cli import main

    ad.AnnData(small.T.tocsr()).write_h5ad(tmp_path / "b.h5ad")
    spec = tmp_path / "fit.yaml"
    spec.write_text("inputs: {b: b.h5ad}\nlayers:\n  - {name: l, input: b, k: 2}\n"
                    "config: {maxit: 3, seed: 1}\noutput: {path: out.zarr}\n")
    hide(monkeypatch, "h5py")
    assert main(["fit", str(spec), "-q"]) == 2
    err = capsys.readouterr().err
    assert "inputs.b" in err and 'pip install "dask_factor[anndata]"' in err
    assert not (tmp_path / "out.zarr").exists()
