"""The one iteration driver on a toy fit kind: convergence and patience, best-step selection and
early stopping, callbacks, warnings, non-finite models, checkpoints (no NMF involved)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from dask_factor.engine import checkpoint
from dask_factor.engine.driver import (
    CONVERGENCE_PATIENCE,
    Built,
    FitKind,
    NonFiniteModelError,
    Report,
    drive,
)


def _next(x, block, scores, step):
    return x + block, float(scores[step - 1])


def _score(x):
    return x[1]


def _value(x):
    return x[0]


class Toy(FitKind):
    """State: one number per block, increased by the block's value every step; the score of
    step t is ``scores[t - 1]`` (so every rule of the driver can be driven exactly)."""

    prefix = "toy"

    def __init__(self, scores, *, select_best=False, patience=None, warmup=0):
        self.scores = list(scores)
        self.select_best = select_best
        self.patience = patience
        self.warmup_steps = warmup

    def setup(self, ctx):
        self.bkeys = [ctx.put(f"block-{b}", float(b + 1)) for b in range(3)]

    def initial_state(self):
        return {"x": [np.float64(0.0)] * 3}

    def build(self, g, st, step):
        outs = [g.task("step", (b,), _next, st["x"][b], self.bkeys[b], self.scores, step)
                for b in range(3)]
        new = [g.task("x", (b,), _value, o) for b, o in enumerate(outs)]
        return Built({"x": new}, [g.task("score", (), _score, outs[0])])

    def record(self, step, stats):
        if step <= self.warmup_steps:
            return None
        return Report(stats[0])

    def fingerprint(self):
        return {"kind": "toy", "scores": self.scores}


def test_converges_after_patience_steps_below_tol():
    scores = [10, 5, 4.9999, 4.9998, 4.9997, 4.9996, 4.9995, 4.9994, 1, 1]
    res = drive(Toy(scores), maxit=10, tol=1e-3)
    # step 3 is the first change below tol; the 5th in a row (step 7) ends the fit
    assert res.converged and res.iterations == 2 + CONVERGENCE_PATIENCE
    assert [float(v) for v in res.state["x"]] == [7.0, 14.0, 21.0]


def test_maxit_warns_unless_tol_is_zero():
    with pytest.warns(UserWarning, match="stopped at maxit=4"):
        res = drive(Toy(range(10, 0, -1)), maxit=4, tol=1e-6)
    assert not res.converged and res.iterations == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drive(Toy(range(10, 0, -1)), maxit=4, tol=0.0)


def test_best_step_and_early_stopping():
    scores = [5, 3, 2, 2.5, 2.6, 2.7, 2.8, 1.0]
    res = drive(Toy(scores, select_best=True, patience=3), maxit=8, tol=0.0)
    assert res.best_iter == 3 and res.iterations == 6  # 3 steps without a new best
    assert [float(v) for v in res.best["x"]] == [3.0, 6.0, 9.0]


def test_callback_sees_scored_steps_and_can_stop():
    seen = []

    def cb(it, score, rel):
        seen.append((it, score))
        return it == 3

    res = drive(Toy([9, 8, 7, 6, 5, 4], warmup=2), maxit=4, tol=0.0, on_iteration=cb)
    assert seen == [(1, 7.0), (2, 6.0), (3, 5.0)]  # warm-up steps are not reported
    assert res.iterations == 3 and math.isnan(res.rels[0]) is False


def test_a_non_finite_score_stops_the_fit_naming_the_iteration():
    with pytest.raises(NonFiniteModelError, match="non-finite at iteration 3"):
        drive(Toy([3, 2, float("nan"), 1]), maxit=4, tol=0.0, name="toy")


def test_checkpoint_and_resume_continue_exactly(tmp_path):
    path = tmp_path / "toy.ckpt"
    scores = list(range(20, 0, -1))
    full = drive(Toy(scores), maxit=10, tol=0.0)
    drive(Toy(scores), maxit=7, tol=0.0, checkpoint=path, checkpoint_every=3)  # keeps step 6
    snap = checkpoint.load(path, Toy(scores).fingerprint())
    assert snap.step == 6
    seen = []
    res = drive(Toy(scores), maxit=10, tol=0.0, resume=path,
                on_iteration=lambda it, s, r: seen.append(it))
    assert seen == [7, 8, 9, 10]
    assert [float(v) for v in res.state["x"]] == [float(v) for v in full.state["x"]]
    assert res.scores == full.scores
    with pytest.raises(ValueError, match="its scores is"):
        drive(Toy(scores[:-1]), maxit=10, tol=0.0, resume=path)
