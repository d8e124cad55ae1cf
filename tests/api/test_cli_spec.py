"""``dask-factor fit SPEC.yaml``: graphs from a YAML spec, checked before any cluster starts.

The inputs are the bundled bird survey (183 species × 1,183 grid cells) written as an AnnData
``.h5ad`` and as zarr stores with their names. Every fit is compared with the same graph built in
Python (the spec must add nothing and lose nothing); every bad spec must fail with the YAML path
of the field, the file and the line, start no cluster and write nothing.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import dask_factor.cluster as clusters
from dask_factor import nmf
from dask_factor.cli import main
from dask_factor.graph import (
    H,
    W,
    factor_concat,
    factor_condition,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    load_result,
    nmf_layer,
)
from dask_factor.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:anndata.*",
                                        "ignore:.*stopped at maxit")


# --------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def data(tmp_path_factory, hawaiibirds):
    """birds.h5ad (cells × species, with obs/var), birds.zarr, the species split into two zarr
    stores over the same cells, fewer.zarr (500 cells), small matrices for Z and targets."""
    import anndata as ad

    from dask_factor.io import write_matrix

    A, rows, cols = hawaiibirds
    d = tmp_path_factory.mktemp("spec-data")
    ad.AnnData(A.T.tocsr(), obs=cols, var=rows).write_h5ad(d / "birds.h5ad")
    write_matrix(ad.AnnData(A.T.tocsr(), obs=cols, var=rows), str(d / "birds.zarr"))
    write_matrix(ad.AnnData(A[:100].T.tocsr(), obs=cols, var=rows.iloc[:100]),
                 str(d / "species_a.zarr"))
    write_matrix(ad.AnnData(A[100:].T.tocsr(), obs=cols, var=rows.iloc[100:]),
                 str(d / "species_b.zarr"))
    write_matrix(ad.AnnData(A[:, :500].T.tocsr(), obs=cols.iloc[:500], var=rows),
                 str(d / "fewer.zarr"))
    np.save(d / "z_bad.npy", np.ones((2, 50)))
    np.save(d / "target_bad.npy", np.ones((6, 10)))
    (d / "notes.txt").write_text("not a matrix\n")
    return d


@pytest.fixture
def work(tmp_path):
    return tmp_path


@pytest.fixture
def no_cluster(monkeypatch):
    """Every way to start or reach a cluster, recorded; a call fails the test unless allowed."""
    calls = []

    def recorder(name, original, allow):
        @functools.wraps(original)  # the spec checks options against the real signature
        def fake(*args, **kwargs):
            calls.append((name, kwargs))
            if not allow:
                raise AssertionError(f"cluster.{name} called for a spec that should fail")
            return None  # no client: the fit runs on this process's threads
        return fake

    def install(allow=False):
        for name in ("local", "slurm", "kubernetes", "connect"):
            original = getattr(clusters, name)
            monkeypatch.setattr(clusters, name, recorder(name, original, allow))
        return calls

    return install


def _snapshot(*dirs) -> dict:
    out = {}
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            for f in [*files, *subdirs]:
                p = os.path.join(root, f)
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _write_spec(work: Path, spec: dict | str, name: str = "fit.yaml") -> Path:
    path = work / name
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False,
                                                             default_flow_style=False)
    path.write_text(text)
    return path


def _run(capsys, spec_path, *extra):
    code = main(["fit", str(spec_path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _base(data: Path) -> dict:
    return {
        "inputs": {"birds": str(data / "birds.h5ad")},
        "layers": [{"name": "fine", "type": "nmf_layer", "input": "birds", "k": 6},
                   {"name": "coarse", "input": "fine", "k": 2}],
        "config": {"maxit": 5, "tol": 0, "seed": 1},
        "checkpoint": {"path": "fit.ckpt", "every": 2},
        "output": {"path": "fit.zarr"},
        "cluster": {"type": "local"},
    }


def _assert_same(res, ref, names):
    for name in names:
        a, b = res[name], ref[name]
        if isinstance(b.W, dict):
            assert list(a.W) == list(b.W)
            for key in b.W:
                np.testing.assert_array_equal(a.W[key], b.W[key])
        else:
            np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.H, b.H)
        np.testing.assert_array_equal(a.d, b.d)


# --------------------------------------------------------------------------------------------
# fits


def test_multi_layer_spec_fits_the_graph_and_writes_names(data, work, capsys, hawaiibirds,
                                                          no_cluster):
    """Two branches, concatenated, under a top layer; penalties and W()/H() options: the
    result equals the Python graph's, and the zarr store has the layer, sample and feature
    names."""
    calls = no_cluster(allow=True)
    spec = {
        "inputs": {"birds": "../data/birds.zarr"},  # relative to the spec's directory
        "layers": [
            {"name": "lo", "input": "birds", "k": 3},
            {"name": "hi", "type": "nmf_layer", "input": "birds", "k": 6, "L1": [0, 0.05],
             "W": {"L2": 0.01}},
            {"name": "both", "type": "factor_concat", "branches": ["lo", "hi"]},
            {"name": "top", "input": "both", "k": 2, "H": {"L1": 0.1, "nonneg": True}},
        ],
        "config": {"maxit": 8, "tol": 0, "seed": 7},
        "output": "fit.zarr",
    }
    (work / "run").mkdir()
    os.symlink(data, work / "data")
    path = _write_spec(work / "run", spec)
    code, out, err = _run(capsys, path, "--json", "-q")
    assert code == 0, err
    summary = _summary(out)
    assert summary["iterations"] == 8 and list(summary["layers"]) == ["lo", "hi", "top"]
    assert calls == []  # no cluster asked for: this process's threads

    inp = factor_input(str(data / "birds.zarr"), name="birds")
    lo = nmf_layer(inp, 3, name="lo")
    hi = nmf_layer(inp, 6, name="hi", L1=(0, 0.05), W=W(L2=0.01))
    top = nmf_layer(factor_concat(lo, hi), 2, name="top", H=H(L1=0.1, nonneg=True))
    ref = fit(factor_net(inp, top, factor_config(maxit=8, tol=0, seed=7)))
    res = load_result(work / "run" / "fit.zarr")
    _assert_same(res, ref, ["lo", "hi", "top"])
    _, rows, cols = hawaiibirds
    assert res.names["samples"] == [str(x) for x in cols.index]
    assert res.names["features"] == {"birds": [str(x) for x in rows.index]}
    assert sorted(p.name for p in (work / "run").iterdir()) == ["fit.yaml", "fit.zarr"]


def test_condition_from_sample_metadata(data, work, capsys, hawaiibirds, no_cluster):
    """``Z: {obs: [...]}``: a categorical column one-hot (sorted levels), a numeric one as is."""
    no_cluster()
    spec = _base(data)
    del spec["cluster"], spec["checkpoint"]
    spec["layers"] = [
        {"name": "cov", "type": "factor_condition", "input": "birds",
         "Z": {"obs": ["island", "lat"]}},
        {"name": "l", "input": "cov", "k": 4},
    ]
    code, out, err = _run(capsys, _write_spec(work, spec), "--json", "-q")
    assert code == 0, err
    _, _, cols = hawaiibirds
    island = cols["island"].astype(str).to_numpy()
    Z = np.vstack([*(island == lev for lev in np.unique(island)), cols["lat"].to_numpy()])
    inp = factor_input(str(data / "birds.h5ad"), name="birds")
    ref = fit(factor_net(inp, nmf_layer(factor_condition(inp, Z.astype(float), name="cov"), 4,
                                        name="l"), factor_config(maxit=5, tol=0, seed=1)))
    _assert_same(load_result(work / "fit.zarr"), ref, ["l"])


def test_shared_spec(data, work, capsys, hawaiibirds, no_cluster):
    """factor_shared over two inputs with the same cells: W per input, named by input."""
    no_cluster()
    spec = {
        "inputs": {"a": str(data / "species_a.zarr"), "b": {"path": str(data / "species_b.zarr")}},
        "layers": [{"name": "joint", "type": "factor_shared", "inputs": ["a", "b"]},
                   {"name": "shared", "input": "joint", "k": 5}],
        "config": {"maxit": 6, "tol": 0, "seed": 3},
        "output": {"path": "shared.zarr"},
    }
    code, out, err = _run(capsys, _write_spec(work, spec), "--json", "-q")
    assert code == 0, err
    a = factor_input(str(data / "species_a.zarr"), name="a")
    b = factor_input(str(data / "species_b.zarr"), name="b")
    ref = fit(factor_net([a, b], nmf_layer(factor_shared(a, b), 5, name="shared"),
                         factor_config(maxit=6, tol=0, seed=3)))
    res = load_result(work / "shared.zarr")
    _assert_same(res, ref, ["shared"])
    assert res["shared"].W["a"].shape == (100, 5) and res["shared"].W["b"].shape == (83, 5)
    _, rows, _ = hawaiibirds
    assert res.names["features"]["a"] == [str(x) for x in rows.index[:100]]
    assert res.names["features"]["b"] == [str(x) for x in rows.index[100:]]


def test_cv_spec(data, work, capsys, no_cluster):
    """``config.test_fraction``: the one-layer graph is nmf()'s cross-validated fit; the
    summary and the saved settings hold the held-out loss."""
    no_cluster()
    spec = {"inputs": {"birds": str(data / "birds.h5ad")},
            "layers": [{"name": "cv", "input": "birds", "k": 4}],
            "config": {"maxit": 30, "seed": 2, "test_fraction": 0.2, "cv_seed": 5,
                       "patience": 3},
            "output": "cv.zarr"}
    code, out, err = _run(capsys, _write_spec(work, spec), "--json", "-q")
    assert code == 0, err
    summary = _summary(out)
    ref = nmf(str(data / "birds.h5ad"), 4, seed=2, maxit=30, test_fraction=0.2, cv_seed=5,
              patience=3)
    res = load_result(work / "cv.zarr")
    np.testing.assert_array_equal(res["cv"].W, ref.W)
    assert summary["test_loss"] == pytest.approx(ref.test_loss, rel=0, abs=0)
    assert summary["best_iter"] == ref.best_iter
    assert res.settings["test_loss"] == pytest.approx(ref.test_loss)


def test_anndata_write_back(data, work, capsys, no_cluster):
    """``output.anndata``: the factors go into the .h5ad input (obsm, varm, uns) without
    touching X; a second run refuses the existing keys before fitting; --overwrite replaces."""
    import anndata as ad

    no_cluster()
    h5ad = work / "cells.h5ad"
    shutil.copy(data / "birds.h5ad", h5ad)
    before = ad.read_h5ad(h5ad)
    spec = _base(data)
    del spec["cluster"], spec["checkpoint"]
    spec["inputs"] = {"cells": "cells.h5ad"}
    spec["layers"][0]["input"] = "cells"
    spec["output"] = {"path": "fit.zarr", "anndata": {"uns_key": "graph"}}
    path = _write_spec(work, spec)
    code, out, err = _run(capsys, path, "--json", "-q")
    assert code == 0, err
    assert _summary(out)["written"] == {"zarr": str(work / "fit.zarr"), "anndata": str(h5ad)}
    res = load_result(work / "fit.zarr")
    after = ad.read_h5ad(h5ad)
    assert (after.X != before.X).nnz == 0 and list(after.obs_names) == list(before.obs_names)
    np.testing.assert_array_equal(after.obsm["X_fine"], res["fine"].H.T)
    np.testing.assert_array_equal(after.varm["fine_W"], res["fine"].W)
    np.testing.assert_array_equal(after.obsm["X_coarse"], res["coarse"].W)
    assert "coarse_W" not in after.varm
    np.testing.assert_array_equal(after.uns["graph"]["layers"]["fine"]["d"], res["fine"].d)

    stamp = _snapshot(work)
    code, _, err = _run(capsys, path, "-q")  # the zarr store and the keys exist
    assert code == 2 and "output.path:" in err and "--overwrite" in err
    spec["output"]["path"] = "other.zarr"
    code, _, err = _run(capsys, _write_spec(work, spec, "other.yaml"), "-q")
    assert code == 2, err
    assert re.search(r"other\.yaml:\d+: output\.anndata: .* already has obsm/X_fine", err), err
    assert "output.anndata.overwrite: true (or pass --overwrite)" in err
    assert not (work / "other.zarr").exists()
    assert {k: v for k, v in _snapshot(work).items() if "other.yaml" not in k} == stamp
    code, _, err = _run(capsys, path, "-q", "--overwrite")
    assert code == 0, err


def test_checkpoint_and_resume(data, work, capsys, no_cluster):
    """A spec's checkpoint: resumed by the same spec (checkpoint.resume) with more sweeps,
    the factors of one uninterrupted fit."""
    no_cluster()
    spec = _base(data)
    del spec["cluster"]
    spec["checkpoint"] = {"path": "fit.ckpt", "every": 2, "resume": True}
    spec["config"].update(maxit=5, warmup=2)  # the warm-up is part of what is resumed
    path = _write_spec(work, spec)
    assert _run(capsys, path, "-q")[0] == 0
    assert (work / "fit.ckpt").is_dir()
    spec["config"]["maxit"] = 9
    _write_spec(work, spec)
    code, _, err = _run(capsys, path, "-q", "--overwrite")
    assert code == 0, err
    inp = factor_input(str(data / "birds.h5ad"), name="birds")
    ref = fit(factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 2, name="coarse"),
                         factor_config(maxit=9, tol=0, seed=1, warmup=2)))
    _assert_same(load_result(work / "fit.zarr"), ref, ["fine", "coarse"])


def test_the_cluster_is_started_after_the_checks_with_the_spec_options(data, work, capsys,
                                                                       no_cluster):
    calls = no_cluster(allow=True)
    spec = _base(data)
    del spec["checkpoint"]
    spec["cluster"] = {"type": "slurm", "local": {"n_workers": 3},
                       "slurm": {"jobs": 2, "cores": 4, "memory": "2GiB",
                                 "kwargs": {"job_extra_directives": ["--gres=gpu:1"]}}}
    path = _write_spec(work, spec)
    assert _run(capsys, path, "-q")[0] == 0
    assert calls == [("slurm", {"jobs": 2, "cores": 4, "memory": "2GiB",
                                "job_extra_directives": ["--gres=gpu:1"]})]
    calls.clear()
    assert _run(capsys, path, "-q", "--cluster", "local", "--overwrite")[0] == 0
    assert calls == [("local", {"n_workers": 3})]  # the command line wins, with its options


def test_unreachable_scheduler_after_a_valid_spec_writes_nothing(data, work, capsys):
    spec = _base(data)
    del spec["cluster"]
    spec["scheduler"] = "tcp://127.0.0.1:1"
    path = _write_spec(work, spec)
    stamp = _snapshot(work)
    code, _, err = _run(capsys, path, "-q", "--connect-timeout", "1")
    assert code == 2 and "no Dask scheduler answered at tcp://127.0.0.1:1" in err
    assert len(err.strip().splitlines()) == 1 and _snapshot(work) == stamp
    spec["layers"][1]["k"] = "ten"  # a bad spec fails on the spec, never trying the address
    _write_spec(work, spec)
    code, _, err = _run(capsys, path, "-q", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "layers[1].k: expected an integer >= 1, got 'ten'" in err


def test_matrix_options_are_refused_with_a_spec(data, work, capsys):
    path = _write_spec(work, _base(data))
    code, _, err = _run(capsys, path, "--k", "3")
    assert code == 2 and "--k: set it in the spec (layers[i].k)" in err
    code, _, err = _run(capsys, path, "--maxit", "3")
    assert code == 2 and "--maxit: set it in the spec (config.maxit)" in err
    code = main(["fit", str(path), str(work / "m.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "output.path" in err
    assert sorted(p.name for p in work.iterdir()) == ["fit.yaml"]


def test_the_documented_example_runs(data, tmp_path, capsys, hawaiibirds, no_cluster):
    """docs/spec.md's complete example, on the bird data written as cells.h5ad (with a batch
    column) and proteins.zarr."""
    import anndata as ad

    from dask_factor.io import write_matrix

    calls = no_cluster(allow=True)
    A, rows, cols = hawaiibirds
    cols = cols.assign(batch=cols["island"])
    run = tmp_path / "run"
    run.mkdir()
    ad.AnnData(A[:120].T.tocsr(), obs=cols, var=rows.iloc[:120]).write_h5ad(run / "cells.h5ad")
    write_matrix(ad.AnnData(A[120:].T.tocsr(), obs=cols, var=rows.iloc[120:]),
                 str(run / "proteins.zarr"))
    (tmp_path / "deploy" / "slurm").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "slurm" / "jobqueue.yaml", tmp_path / "deploy" / "slurm")
    text = (ROOT / "docs" / "spec.md").read_text()
    example = re.search(r"## A complete example.*?```yaml\n(.*?)```", text, re.S).group(1)
    path = _write_spec(run, example)
    code, out, err = _run(capsys, path, "--json", "-q")
    assert code == 0, err
    assert calls == [("local", {"n_workers": 2, "threads_per_worker": 1})]
    res = load_result(run / "fit.zarr")
    assert list(res) == ["programs", "coarse", "fine_pca", "top"]
    assert res["programs"].W["rna"].shape == (120, 12) and res["top"].W.shape == (1183, 2)
    assert res.names["features"]["protein"] == [str(x) for x in rows.index[120:]]
    adata = ad.read_h5ad(run / "cells.h5ad")
    assert sorted(adata.obsm) == ["X_coarse", "X_fine_pca", "X_programs", "X_top"]
    assert adata.varm["programs_W"].shape == (120, 12)
    assert (run / "fit.ckpt").exists() or res.iterations < 10


def _frames(err: str) -> list[str]:
    return [f.strip() for f in re.split(r"[\r\n]", err) if "iteration" in f]


def test_the_cli_shows_the_bar_unless_quiet(hawaiibirds, tmp_path, capsys):
    from dask_factor.io import write_matrix

    src = tmp_path / "birds.zarr"
    write_matrix(hawaiibirds.matrix, str(src))
    assert main(["fit", str(src), str(tmp_path / "m.npz"), "--k", "3", "--maxit", "3"]) == 0
    assert "iteration 3/3" in _frames(capsys.readouterr().err)[-1]
    spec = tmp_path / "fit.yaml"
    spec.write_text(f"inputs: {{b: {src}}}\n"
                    "layers: [{name: f, input: b, k: 4}, {name: c, input: f, k: 2}]\n"
                    "config: {maxit: 3, tol: 0, seed: 1}\noutput: out.zarr\n")
    assert main(["fit", str(spec)]) == 0
    frames = _frames(capsys.readouterr().err)
    assert frames[-1].startswith("factor_net (2 layers):") and "iteration 3/3" in frames[-1]
    assert main(["fit", str(spec), "-q", "--overwrite"]) == 0
    assert not _frames(capsys.readouterr().err)


# --------------------------------------------------------------------------------------------
# bad specs: the YAML path, the file and line; no cluster; nothing written


def _set(path: str, value):
    """A mutation of the base spec: set the field at a dotted/indexed path."""
    def mutate(spec, data):
        keys = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        node = spec
        for key in keys[:-1]:
            node = node[int(key[1:-1])] if key.startswith("[") else node.setdefault(key, {})
        last = keys[-1]
        v = value(data) if callable(value) else value
        if last.startswith("["):
            node[int(last[1:-1])] = v
        else:
            node[last] = v
    return mutate


def _fill(node, data):
    """``{data}`` in strings → the data directory."""
    if isinstance(node, dict):
        return {k: _fill(v, data) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, data) for v in node]
    return node.replace("{data}", str(data)) if isinstance(node, str) else node


def _layers(*entries):
    def mutate(spec, data):
        spec["layers"] = list(entries)
    return mutate


def _both(*mutations):
    def mutate(spec, data):
        for m in mutations:
            m(spec, data)
    return mutate


def _drop(key):
    def mutate(spec, data):
        spec["config"].pop(key, None)
    return mutate


FINE = {"name": "fine", "input": "birds", "k": 6}
BAD = {
    "unknown node type": (_set("layers[1].type", "nmf"), "layers[1].type",
                          "unknown node type 'nmf' (did you mean 'nmf_layer'?)"),
    "missing input file": (_set("inputs.birds", "missing.h5ad"), "inputs.birds",
                           "no such file or directory"),
    "not a matrix file": (_set("inputs.birds", lambda d: str(d / "notes.txt")), "inputs.birds",
                          "cannot read"),
    "rank above the input": (_set("layers[0].k", 500), "layers[0].k",
                             "500 is too large: the input 'birds' is 183 × 1183"),
    "rank above the upstream layer": (_set("layers[1].k", 7), "layers[1].k",
                                      "7 is too large: the input 'fine' is 6 × 1183"),
    "rank not an integer": (_set("layers[1].k", "ten"), "layers[1].k",
                            "expected an integer >= 1, got 'ten'"),
    "svd rank": (_layers({"name": "pca", "type": "svd_layer", "input": "birds", "k": 183}),
                 "layers[0].k", "must be < min(rows, samples) = 183"),
    "samples differ": (_both(_set("inputs.other", lambda d: str(d / "fewer.zarr")),
                             _layers({"name": "j", "type": "factor_shared",
                                      "inputs": ["birds", "other"]},
                                     {"name": "l", "input": "j", "k": 3})),
                       "inputs.other", "'other' has 500 samples (columns) but 'birds' has 1183"),
    "factor_add ranks": (_layers(FINE, {"name": "other", "input": "birds", "k": 4},
                                 {"name": "sum", "type": "factor_add",
                                  "branches": ["fine", "other"]},
                                 {"name": "top", "input": "sum", "k": 2}),
                         "layers[2].branches", "ranks differ ('fine' has k=6, 'other' has k=4)"),
    "Z shape": (_layers({"name": "cov", "type": "factor_condition", "input": "birds",
                         "Z": "{data}/z_bad.npy"}, {"name": "l", "input": "cov", "k": 3}),
                "layers[0].Z", "has shape (2, 50); expected p × n or n × p with n = 1183"),
    "target shape": (_set("layers[0].H", {"target": "{data}/target_bad.npy",
                                          "target_lambda": 0.5}),
                     "layers[0].H.target", "has shape (6, 10); expected (6, 1183)"),
    "unknown top-level key": (_set("confg", {"maxit": 3}), "confg",
                              "unknown key (did you mean 'config'?)"),
    "unknown layer key": (_set("layers[0].l1", 0.1), "layers[0].l1",
                          "unknown key (did you mean 'L1'?)"),
    "unknown svd key": (_layers({"name": "pca", "type": "svd_layer", "input": "birds", "k": 3,
                                 "L1": 0.1}), "layers[0].L1", "svd_layer"),
    "unknown config key": (_set("config.max_iter", 3), "config.max_iter", "unknown key"),
    "unknown W key": (_set("layers[0].W", {"lasso": 1}), "layers[0].W.lasso", "unknown key"),
    "unknown checkpoint key": (_set("checkpoint.evry", 3), "checkpoint.evry",
                               "unknown key (did you mean 'every'?)"),
    "unknown cluster option": (_set("cluster.local", {"workers": 2}), "cluster.local.workers",
                               "unknown key (did you mean 'n_workers'?)"),
    "wrong type: config": (_set("config.maxit", "many"), "config.maxit",
                           "expected an integer >= 1, got 'many'"),
    "wrong range: L1": (_set("layers[0].L1", 2), "layers[0].L1",
                        "expected a number in [0.0, 1.0)"),
    "wrong type: W option": (_set("layers[0].W", {"L2": "big"}), "layers[0].W.L2", "got 'big'"),
    "wrong type: bool": (_set("output.overwrite", 3), "output.overwrite",
                         "expected a bool, got 3"),
    "wrong type: layers": (_set("layers", {"fine": 3}), "layers",
                           "expected a non-empty list of graph nodes"),
    "wrong type: cluster option": (_set("cluster.local", {"n_workers": "two"}),
                                   "cluster.local.n_workers", "got 'two'"),
    "cluster kwargs repeat an option": (_set("cluster.local", {"kwargs": {"n_workers": 2}}),
                                        "cluster.local.kwargs.n_workers",
                                        "a named option of cluster.local"),
    "wrong cluster type": (_set("cluster.type", "mesos"), "cluster.type",
                           "expected one of ('local', 'slurm', 'kubernetes'), got 'mesos'"),
    "config rule": (_set("config.seed", -1), "config.seed", "rng='rcppml'"),
    "unknown reference": (_set("layers[1].input", "fin"), "layers[1].input",
                          "'fin' is not an input or an earlier entry of layers (did you mean "
                          "'fine'?)"),
    "forward reference": (_layers({"name": "coarse", "input": "fine", "k": 2}, FINE),
                          "layers[0].input", "'fine' is defined later, at layers[1]"),
    "duplicate name": (_set("layers[1].name", "fine"), "layers[1].name",
                       "'fine' is already the name of layers[0]"),
    "shared over a layer": (_layers(FINE, {"name": "j", "type": "factor_shared",
                                           "inputs": ["fine", "birds"]},
                                    {"name": "l", "input": "j", "k": 2}),
                            "layers[1].inputs[0]", "'fine' is a nmf_layer, not an input"),
    "concat over an input": (_layers(FINE, {"name": "c", "type": "factor_concat",
                                            "branches": ["fine", "birds"]},
                                     {"name": "l", "input": "c", "k": 2}),
                             "layers[1].branches[1]", "'birds' (input) is not made of layers"),
    "last entry not a layer": (_layers(FINE, {"name": "c2", "input": "birds", "k": 2},
                                       {"name": "c", "type": "factor_concat",
                                        "branches": ["fine", "c2"]}),
                               "layers[2]", "must be an nmf_layer or svd_layer"),
    "entry off the output": (_layers(FINE, {"name": "extra", "input": "birds", "k": 2},
                                     {"name": "coarse", "input": "fine", "k": 2}),
                             "layers[1]", "'extra' does not lead to the output layer 'coarse'"),
    "unused input": (_set("inputs.other", lambda d: str(d / "birds.zarr")), "inputs.other",
                     "input 'other' is not read by any node"),
    "cross-validation of a deep graph": (_set("config.test_fraction", 0.1),
                                         "config.test_fraction", "cross-validation"),
    "output exists": (lambda spec, data: None, "output.path", "exists"),  # see below
    "output directory missing": (_set("output.path", "nowhere/fit.zarr"), "output.path",
                                 "parent directory does not exist"),
    "not a checkpoint": (_set("checkpoint.path", "notes"), "checkpoint.path",
                         "not a dask_factor checkpoint"),
    "resume without a seed": (_both(_drop("seed"), _set("checkpoint.resume", True)),
                               "checkpoint.resume", "set config.seed"),
    "anndata without an h5ad": (_both(_set("inputs.birds", lambda d: str(d / "birds.zarr")),
                                      _set("output.anndata", True)),
                                "output.anndata", "no input is an AnnData .h5ad file"),
    "scheduler and cluster": (_set("scheduler", "tcp://127.0.0.1:8786"), "scheduler",
                              "not both"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_spec_names_the_field_before_any_cluster(case, data, work, capsys, no_cluster):
    calls = no_cluster()
    mutate, where, expected = BAD[case]
    spec = _base(data)
    mutate(spec, data)
    spec = _fill(spec, data)
    if case == "output exists":
        (work / "fit.zarr").mkdir()
        (work / "fit.zarr" / "keep.txt").write_text("mine")
    if case == "not a checkpoint":
        (work / "notes").mkdir()
    path = _write_spec(work, spec)
    stamp = _snapshot(work, data)
    code, out, err = _run(capsys, path, "-q")
    assert code == 2, (out, err)
    line = err.strip()
    assert len(line.splitlines()) == 1, err
    m = re.match(rf"dask-factor fit: error: {re.escape(str(path))}:(\d+): (\S+): (.*)$", line)
    assert m, line
    assert m.group(2) == where + ":" or m.group(2) == where, line
    assert expected in m.group(3), line
    # the line is the field's (or its parent's) line in the file
    text = path.read_text().splitlines()
    leaf = re.findall(r"[^.\[\]]+", where)[-1]
    assert leaf in text[int(m.group(1)) - 1] or re.fullmatch(r"\d+", leaf), (line, text)
    assert calls == []
    assert _snapshot(work, data) == stamp


@pytest.mark.parametrize("text, where, expected", [
    ("config: {maxit: 5}\nconfig: {maxit: 6}\n", "config", "given twice (lines 1 and 2)"),
    ("inputs: [\n", "", "not valid YAML"),
    ("- a\n- b\n", "", "expected a mapping with inputs, layers and output"),
])
def test_bad_yaml(text, where, expected, work, capsys, no_cluster):
    calls = no_cluster()
    path = _write_spec(work, text)
    code, _, err = _run(capsys, path)
    assert code == 2 and str(path) in err and expected in err, err
    assert (f" {where}: " in err) if where else True
    assert calls == []


def test_spec_errors_from_python(data, tmp_path):
    """parse_spec raises SpecError with the path, the line and the message as attributes."""
    text = yaml.safe_dump(_base(data), sort_keys=False).replace("k: 2", "k: ten")
    with pytest.raises(SpecError) as ei:
        parse_spec(text, base_dir=tmp_path, source="mine.yaml")
    err = ei.value
    assert (err.path, err.source) == ("layers[1].k", "mine.yaml")
    assert text.splitlines()[err.line - 1].strip() == "k: ten"
    assert str(err) == f"mine.yaml:{err.line}: layers[1].k: expected an integer >= 1, got 'ten'"
    numbers = parse_spec(yaml.safe_dump(_base(data)).replace("tol: 0", "tol: 1e-6"),
                         base_dir=tmp_path)  # YAML 1.2 numbers
    assert numbers.net.config.tol == 1e-6
    spec = load_spec(_write_spec(tmp_path, _base(data)), resume=True, overwrite=True)
    assert spec.checkpoint["checkpoint"] == str(tmp_path / "fit.ckpt")
    assert spec.output.overwrite is True
