"""Progress bars (one helper, ``dask_factor.progress``): iteration, loss, relative change and
ETA for ``nmf(progress=True)`` and graph ``fit(progress=True)`` (``dask-factor fit``: in
test_cli_spec.py); nothing when not asked. The bar is tqdm's text bar on stderr here (captured)."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest

import dask_factor.progress as progress_module
from dask_factor import nmf
from dask_factor.graph import factor_config, factor_input, factor_net, fit, nmf_layer

pytestmark = pytest.mark.filterwarnings("ignore:.*stopped at maxit")


def _frames(err: str) -> list[str]:
    """The bar's successive states (tqdm redraws with carriage returns)."""
    return [f.strip() for f in re.split(r"[\r\n]", err) if "iteration" in f]


def _iterations(frames) -> list[tuple[int, int]]:
    return [tuple(map(int, re.search(r"iteration (\d+)/(\d+)", f).groups())) for f in frames]


def test_the_helpers_examples():
    result = doctest.testmod(progress_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_nmf_bar_shows_iteration_loss_rel_and_eta(hawaiibirds, capsys):
    model = nmf(hawaiibirds.matrix, 4, seed=1, maxit=6, tol=0, progress=True)
    frames = _frames(capsys.readouterr().err)
    assert frames and all(f.startswith("nmf k=4:") for f in frames)
    last = frames[-1]
    assert "iteration 6/6" in last and "100%" in last and "ETA 00:00" in last
    loss = float(re.search(r"loss=([0-9.e+-]+)", last).group(1))
    assert loss == pytest.approx(model.mse, rel=1e-5)
    rel = abs(model.loss_history[-1] - model.loss_history[-2]) / model.loss_history[-2]
    assert float(re.search(r"rel=([0-9.e+-]+)", last).group(1)) == pytest.approx(rel, rel=0.01)
    assert [n for n, _ in _iterations(frames)] == sorted(n for n, _ in _iterations(frames))


def test_every_frame_of_the_bar():
    """Drawn at every iteration: the first has no relative change yet, each has an ETA."""
    import io

    out = io.StringIO()
    bar = progress_module.IterationBar(3, "fit", file=out, mininterval=0)
    for it, loss, rel in [(1, 0.5, float("nan")), (2, 0.25, 0.5), (3, 0.2, 0.2)]:
        bar.update(it, loss, rel)
    bar.close()
    frames = _frames(out.getvalue())
    first = next(f for f in frames if "iteration 1/3" in f)
    assert "loss=0.5, rel=-" in first and "ETA" in first
    second = next(f for f in frames if "iteration 2/3" in f)
    assert "loss=0.25, rel=5.00e-01" in second and "ETA" in second


def test_no_bar_unless_asked(hawaiibirds, capsys):
    A = hawaiibirds.matrix
    nmf(A, 3, seed=1, maxit=3)
    inp = factor_input(A, name="b")
    fit(factor_net(inp, nmf_layer(nmf_layer(inp, 4, name="f"), 2, name="c"),
                   factor_config(maxit=2, seed=1)))
    fit(factor_net(inp, nmf_layer(inp, 3, name="f"), factor_config(maxit=2, seed=1,
                                                                   verbose=True)),
        progress=False)  # fit(progress=) overrides factor_config(verbose=)
    assert "iteration" not in capsys.readouterr().err


def test_a_converged_fit_ends_its_bar_where_it_stopped(hawaiibirds, capsys):
    model = nmf(hawaiibirds.matrix, 4, seed=1, maxit=200, tol=1e-3, progress=True)
    assert model.converged and model.iterations < 200
    last = _frames(capsys.readouterr().err)[-1]
    assert f"iteration {model.iterations}/{model.iterations}" in last and "100%" in last


def test_cross_validation_shows_the_held_out_loss(hawaiibirds, capsys):
    model = nmf(hawaiibirds.matrix, 4, seed=1, maxit=8, tol=0, test_fraction=0.1,
                progress=True)
    last = _frames(capsys.readouterr().err)[-1]
    assert "test_loss=" in last
    assert float(re.search(r"test_loss=([0-9.e+-]+)", last).group(1)) == pytest.approx(
        model.test_loss_history[model.iterations - 1], rel=1e-5)


def test_graph_bar_same_fields(hawaiibirds, capsys):
    inp = factor_input(hawaiibirds.matrix, name="b")
    net = factor_net(inp, nmf_layer(nmf_layer(inp, 4, name="f"), 2, name="c"),
                     factor_config(maxit=4, tol=0, seed=1, verbose=True))
    res = fit(net)
    frames = _frames(capsys.readouterr().err)
    assert frames[0].startswith("factor_net (2 layers):")
    last = frames[-1]
    assert "iteration 4/4" in last and "ETA" in last and "rel=" in last
    assert float(re.search(r"loss=([0-9.e+-]+)", last).group(1)) == pytest.approx(
        res.loss_history[-1], rel=1e-5)
    one = factor_net(inp, nmf_layer(inp, 3, name="only"), factor_config(maxit=3, tol=0, seed=1))
    fit(one, progress=True)  # a one-layer graph is nmf(): the same bar
    assert "iteration 3/3" in _frames(capsys.readouterr().err)[-1]


def test_a_resumed_fit_starts_its_bar_at_the_checkpoint(hawaiibirds, tmp_path, capsys):
    A = hawaiibirds.matrix
    ck = tmp_path / "fit.ckpt"
    nmf(A, 3, seed=1, maxit=4, tol=0, checkpoint=ck, checkpoint_every=2)
    capsys.readouterr()
    resumed = nmf(A, 3, seed=1, maxit=8, tol=0, checkpoint=ck, checkpoint_every=2,
                  resume=True, progress=True)
    done = _iterations(_frames(capsys.readouterr().err))
    assert resumed.iterations == 8
    assert done[-1] == (8, 8) and (1, 8) not in done and (2, 8) not in done
    assert all(n in (0, 2) or n > 2 for n, _ in done)


def test_the_bar_is_closed_on_an_error(capsys):
    """An exception inside the fit leaves a closed bar (not a dangling one) and propagates."""
    with pytest.raises(RuntimeError, match="boom"):
        with progress_module.iteration_progress(True, 10, "fit") as cb:
            cb(1, 0.5, np.nan)
            raise RuntimeError("boom")
    assert "iteration 1/10" in _frames(capsys.readouterr().err)[-1]


def test_svd_bar_is_the_same_bar_and_ends_at_the_last_pass(hawaiibirds, capsys):
    """``svd(progress=True)`` draws the one bar: one step per Krylov pass, the largest
    residual, and 100 % at the pass the solver stopped at (not at ``maxit``)."""
    from dask_factor import svd

    passes = []
    svd(hawaiibirds.matrix, 4, method="lanczos", progress=True,
        on_pass=lambda p, rel: passes.append(float(np.max(rel))))
    frames = _frames(capsys.readouterr().err)
    assert _iterations(frames)[-1] == (len(passes), len(passes)) and "100%" in frames[-1]
    assert f"residual={passes[-1]:.6g}" in frames[-1]
