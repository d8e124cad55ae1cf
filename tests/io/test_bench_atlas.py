"""benchmarks/bench_atlas.py at a tiny size: it runs end to end, and what it prints is right
(the final loss recomputed with numpy from the returned factors and the matrix read back; the
threaded and in-memory fits of the same store agree).  Its LocalCluster fit is left out here:
starting worker processes costs most of a minute on 2 cores, and the streamed cluster fit of the
scan layout is checked against the in-memory one in test_out_of_core.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psutil")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_atlas.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_atlas", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_atlas_tiny(tmp_path, capsys):
    from dask_factor.io import open_matrix

    bench = _bench()
    args = bench.parse(["--cells", "3000", "--genes", "400", "--k", "4", "--maxit", "3",
                        "--tol", "0", "--workdir", str(tmp_path), "--no-cluster",
                        "--sample-init", "--sample-fraction", "0.3", "--online", "2"])
    res = bench.run(args)
    out = capsys.readouterr().out
    for what in ("simulated in", "I/O alone", "streamed, threaded", "peak RSS (threaded)",
                 "in-memory / streamed", "M nnz/s/core", "sample init",
                 "to the default fit's final loss", "updates_per_pass=2",
                 "peak RSS (threaded, updates_per_pass=2)"):
        assert what in out, what
    A = open_matrix(tmp_path / "atlas-3000x400.zarr").compute().toarray().astype(np.float64)
    assert res["nnz"] == np.count_nonzero(A) == res["read"]["nnz"]
    model = res["threaded"]["model"]
    approx = (model.W.astype(np.float64) * model.d) @ model.H.astype(np.float64)
    mse = float(np.mean((A - approx) ** 2))
    assert res["threaded"]["loss"] == pytest.approx(mse, rel=1e-4)
    assert res["threaded"]["passes"] == 4 and "cluster" not in res
    assert res["memory"]["loss"] == pytest.approx(res["threaded"]["loss"], rel=1e-5)
    online = res["online"]  # block-sequential ALS: its loss is its model's, too
    model = online["model"]
    approx = (model.W.astype(np.float64) * model.d) @ model.H.astype(np.float64)
    assert online["loss"] == pytest.approx(float(np.mean((A - approx) ** 2)), rel=1e-4)
    assert model.settings["updates_per_pass"] == 2 and online["passes"] == 4
    hit = online["passes_to_exact"][0]
    assert hit is None or online["losses"][hit - 1] <= res["threaded"]["loss"] * 1.001
    sample = res["sample"]  # stops at the first iteration at or below the default's loss
    hit = sample["passes_to_target"]
    assert hit is None or sample["losses"][hit - 1] <= res["threaded"]["loss"]
    assert len(sample["losses"]) == (hit or 3)
    rss = res["threaded_rss"]
    assert any(k.startswith("client") for k in rss)
    assert rss["all processes together"] >= max(v for k, v in rss.items()
                                                if k != "all processes together")
