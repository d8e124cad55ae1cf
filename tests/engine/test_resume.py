"""Checkpoints and resume: a fit killed after iteration j continues to the uninterrupted factors.

The interrupted fit runs in a child process that kills itself (SIGKILL, no clean-up) after
iteration j; the checkpoint it left is then resumed here and compared with a fit that ran
straight through.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from dask_factor import factor_config, factor_input, factor_net, fit, nmf, nmf_layer

pytestmark = pytest.mark.timeout(300)

CHILD = textwrap.dedent("""
    import os, signal, sys
    from dask_factor import datasets, nmf, fit, factor_input, factor_net, nmf_layer, factor_config
    from dask_factor.graph import factor_concat, svd_layer
    kind, path, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
    A = datasets.load("aml").matrix

    def die(it, score, rel):
        if it == stop:
            os.kill(os.getpid(), signal.SIGKILL)

    if kind == "graph":
        inp = factor_input(A, name="aml")
        net = factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 3, name="coarse"),
                         factor_config(maxit=12, tol=0, seed=5, warmup=2))
        fit(net, on_iteration=die, checkpoint=path, checkpoint_every=2)
    elif kind == "svdgraph":
        inp = factor_input(A, name="aml")
        pca = svd_layer(inp, 4, name="pca", center=True)
        pc = svd_layer(nmf_layer(inp, 6, name="fine"), 3, name="pc", scale=True)
        net = factor_net(inp, nmf_layer(factor_concat(pca, pc), 2, name="top"),
                         factor_config(maxit=12, tol=0, seed=5, warmup=2))
        fit(net, on_iteration=die, checkpoint=path, checkpoint_every=2)
    else:
        extra = dict(test_fraction=0.1, cv_seed=1, patience=50) if kind == "masked" else {}
        nmf(A, 5, seed=3, maxit=12, tol=0, on_iteration=die, checkpoint=path,
            checkpoint_every=3, **extra)
""")


def _interrupted(kind: str, path, stop: int) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(stop)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == -9, proc.stderr  # killed, as planned
    assert os.path.isdir(path), "the child wrote no checkpoint"


@pytest.mark.parametrize("kind", ["plain", "masked"])
def test_nmf_resumes_to_the_uninterrupted_factors(aml, tmp_path, kind):
    path = tmp_path / "fit.ckpt"
    _interrupted(kind, path, stop=8)  # checkpoint of iteration 6 on disk
    extra = dict(test_fraction=0.1, cv_seed=1, patience=50) if kind == "masked" else {}
    ref = nmf(aml.matrix, 5, seed=3, maxit=12, tol=0, **extra)
    seen = []
    model = nmf(aml.matrix, 5, seed=3, maxit=12, tol=0, checkpoint=path, resume=True,
                on_iteration=lambda it, s, r: seen.append(it), **extra)
    assert seen == list(range(7, 13))  # continued after the checkpointed iteration 6
    np.testing.assert_array_equal(model.W, ref.W)
    np.testing.assert_array_equal(model.H, ref.H)
    assert model.loss_history == ref.loss_history
    assert model.iterations == ref.iterations == 12
    if kind == "masked":
        assert model.best_iter == ref.best_iter
        assert model.test_loss_history == ref.test_loss_history


def test_deep_graph_resumes_to_the_uninterrupted_factors(aml, tmp_path):
    path = tmp_path / "graph.ckpt"
    _interrupted("graph", path, stop=7)

    def net():
        inp = factor_input(aml.matrix, name="aml")
        return factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 3, name="coarse"),
                          factor_config(maxit=12, tol=0, seed=5, warmup=2))

    ref = fit(net())
    res = fit(net(), checkpoint=path, resume=True)
    for name in ("fine", "coarse"):
        np.testing.assert_array_equal(res[name].W, ref[name].W)
        np.testing.assert_array_equal(res[name].H, ref[name].H)
    assert res.loss_history == ref.loss_history


def test_graph_with_svd_layers_resumes_to_the_uninterrupted_factors(aml, tmp_path):
    """Both kinds of svd_layer: one on the input (fixed, from the SVD engine, centred: its row
    means are in the checkpoint) and one fed by a layer (exact every sweep)."""
    from dask_factor.graph import factor_concat, svd_layer

    path = tmp_path / "svdgraph.ckpt"
    _interrupted("svdgraph", path, stop=7)

    def net():
        inp = factor_input(aml.matrix, name="aml")
        pca = svd_layer(inp, 4, name="pca", center=True)
        pc = svd_layer(nmf_layer(inp, 6, name="fine"), 3, name="pc", scale=True)
        return factor_net(inp, nmf_layer(factor_concat(pca, pc), 2, name="top"),
                          factor_config(maxit=12, tol=0, seed=5, warmup=2))

    ref = fit(net())
    seen = []
    res = fit(net(), checkpoint=path, resume=True, on_iteration=lambda it, s, r: seen.append(it))
    # 5 warm-up steps (fine ×2, pc ×1: exact, top ×2; pca is fixed), so the checkpoint of
    # step 10 is sweep 5
    assert seen == list(range(6, 13))
    for name in ("pca", "fine", "pc", "top"):
        np.testing.assert_array_equal(res[name].W, ref[name].W)
        np.testing.assert_array_equal(res[name].H, ref[name].H)
        np.testing.assert_array_equal(res[name].d, ref[name].d)
    assert res.loss_history == ref.loss_history
    np.testing.assert_array_equal(res.settings["layers"]["pca"]["row_means"],
                                  ref.settings["layers"]["pca"]["row_means"])


def test_a_checkpoint_of_another_fit_is_refused(aml, hawaiibirds, tmp_path):
    path = tmp_path / "a.ckpt"
    nmf(aml.matrix, 4, seed=1, maxit=4, tol=0, checkpoint=path, checkpoint_every=2)
    with pytest.raises(ValueError, match="another nmf fit: its shape"):
        nmf(hawaiibirds.matrix, 4, seed=1, maxit=4, tol=0, resume=path)
    with pytest.raises(ValueError, match="its k is 4, this fit's is 5"):
        nmf(aml.matrix, 5, seed=1, maxit=4, tol=0, resume=path)
    with pytest.raises(ValueError, match="seed/initial W"):
        nmf(aml.matrix, 4, seed=2, maxit=4, tol=0, resume=path)


def test_checkpoint_paths_are_checked_before_work(aml, tmp_path):
    user = tmp_path / "results"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a dask_factor checkpoint"):
        nmf(aml.matrix, 3, seed=1, checkpoint=user)
    assert (user / "keep.txt").read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nmf(aml.matrix, 3, seed=1, checkpoint=tmp_path / "missing" / "c.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        nmf(aml.matrix, 3, seed=1, resume=tmp_path / "nothing.ckpt")
    with pytest.raises(ValueError, match="checkpoint_every: set checkpoint"):
        nmf(aml.matrix, 3, seed=1, checkpoint_every=2)
    path = tmp_path / "done.ckpt"
    nmf(aml.matrix, 3, seed=1, maxit=4, tol=0, checkpoint=path, checkpoint_every=2)
    with pytest.raises(ValueError, match="pass seed="):
        nmf(aml.matrix, 3, resume=path)
    with pytest.raises(FileExistsError, match="resume=True"):
        nmf(aml.matrix, 3, seed=1, maxit=4, tol=0, checkpoint=path)


def test_convergence_warning_when_maxit_ends_the_fit(aml):
    from dask_factor.engine.driver import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="maxit=3"):
        nmf(aml.matrix, 3, seed=1, maxit=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        nmf(aml.matrix, 3, seed=1, maxit=3, tol=0)  # a fixed number of iterations was asked
        nmf(aml.matrix, 3, seed=1, maxit=200, tol=1e-3)  # converged
