"""Block-sequential ALS (``nmf(updates_per_pass=B)``, engine/online.py).

Checked against an independent NumPy/SciPy replica of the algorithm (scipy's exact NNLS, no
scales), against exact ALS (one update per pass is ALS's arithmetic, bit for bit; several reach
the converged ALS loss), across schedulers and a 2-worker cluster (bitwise), streamed from disk
against in memory (bitwise), through a checkpoint, and for its argument checks.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

from dask_factor import nmf
from dask_factor.engine.als import ALSConfig, ALSKind
from dask_factor.engine.blocks import as_blocked
from dask_factor.engine.driver import drive
from dask_factor.engine.online import OnlineKind, batches_of

pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

KW = dict(seed=3, tol=0, dtype="float64")


def reference(A, k, W0, bounds, B, passes):
    """Block-sequential ALS in NumPy/SciPy: per batch, every column's H by scipy's NNLS against
    the current W, then every row of W by NNLS against the latest H of the columns seen so far.
    Returns the loss ‖A − WH‖² after each pass and the final W H."""
    A = np.asarray(A.toarray() if sp.issparse(A) else A, dtype=np.float64)
    W = np.asarray(W0, dtype=np.float64)
    blocks = [np.arange(bounds[p], bounds[p + 1]) for p in range(len(bounds) - 1)]
    H = np.zeros((k, A.shape[1]))
    seen = np.zeros(A.shape[1], dtype=bool)
    losses = []
    for _ in range(passes):
        for batch in batches_of(len(blocks), B):
            cols = np.concatenate([blocks[p] for p in batch])
            for j in cols:
                H[:, j] = nnls(W, A[:, j])[0]
            seen[cols] = True
            Hs, As = H[:, seen], A[:, seen]
            W = np.vstack([nnls(Hs.T, As[i])[0] for i in range(A.shape[0])])
        losses.append(float(np.sum((A - W @ H) ** 2)))
    return losses, W @ H


def test_equals_numpy_reference(hawaiibirds):
    """Losses per pass and the final model against the replica (B = 3 batches of 6 blocks)."""
    A = hawaiibirds.matrix
    k, B, passes = 4, 3, 4
    model = nmf(A, k, maxit=passes, updates_per_pass=B, chunks=200, **KW)
    bounds = np.cumsum([0] + model.settings["chunks"])
    assert len(bounds) - 1 == 6 and model.settings["updates_per_pass"] == B
    W0 = np.random.default_rng(KW["seed"]).random((A.shape[0], k))
    losses, WH = reference(A, k, W0, bounds, B, passes)
    mn = A.shape[0] * A.shape[1]
    np.testing.assert_allclose(np.array(model.loss_history) * mn, losses, rtol=1e-6)
    ours = (model.W * model.d) @ model.H
    np.testing.assert_allclose(ours, WH, rtol=1e-5, atol=1e-8 * np.abs(WH).max())
    # the returned factors are normalised like exact ALS's (unit L1 columns of W and rows of H)
    np.testing.assert_allclose(model.W.sum(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(model.H.sum(axis=1), 1.0, rtol=1e-10)


def test_one_batch_is_exact_als_bit_for_bit(aml):
    """With one batch the kind performs ALS's arithmetic: the same W, d and loss, bitwise."""
    bm = as_blocked(aml.matrix, dtype=np.float64, chunks=20)
    cfg = ALSConfig(k=5, maxit=6, tol=0, solver="active", cd_maxit=10, cd_tol=1e-4,
                    dtype=np.float64)
    W0 = np.random.default_rng(1).random((bm.shape[0], 5))
    sq = float(np.sum(np.asarray(aml.matrix, dtype=np.float64) ** 2))
    als = drive(ALSKind(bm, W0, cfg, sq_norm=sq), maxit=6, tol=0)
    one = drive(OnlineKind(bm, W0, cfg, sq_norm=sq, updates_per_pass=1), maxit=6, tol=0)
    assert one.scores == als.scores
    a, o = als.state["pack"], one.state["pack"]
    assert np.array_equal(a.W, o.W) and np.array_equal(a.d, o.d)
    for ha, ho in zip(als.state["h"], one.state["h"]):
        assert np.array_equal(ha, ho)


@pytest.fixture(scope="module")
def birds_fit(hawaiibirds):
    with dask.config.set(scheduler="threads", num_workers=1):
        return nmf(hawaiibirds.matrix, 5, maxit=6, updates_per_pass=4, chunks=150, **KW)


def _same(a, b):
    assert a.loss_history == b.loss_history
    assert np.array_equal(a.W, b.W) and np.array_equal(a.d, b.d)
    assert np.array_equal(a.H, b.H)


def test_deterministic_on_threads_and_a_two_worker_cluster(hawaiibirds, birds_fit):
    with dask.config.set(scheduler="threads", num_workers=2):
        _same(nmf(hawaiibirds.matrix, 5, maxit=6, updates_per_pass=4, chunks=150, **KW),
              birds_fit)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as lc, distributed.Client(lc) as c:
        on_cluster = nmf(hawaiibirds.matrix, 5, maxit=6, updates_per_pass=4, chunks=150,
                         client=c, **KW)
        _same(on_cluster, birds_fit)


def test_streamed_equals_in_memory(tmp_path):
    """A zarr store read at every pass (cache="none") against the same matrix in memory, cut
    into the same blocks: bitwise equal fits."""
    from dask_factor.datasets import simulate_counts
    from dask_factor.io import open_matrix

    path = tmp_path / "A.zarr"
    simulate_counts(1_200, 300, 4, density=0.1, seed=2, path=path, block_cols=150,
                    layout="scan")
    assert open_matrix(path).chunks[1] == (150,) * 8
    streamed = nmf(str(path), 4, maxit=5, updates_per_pass=3, cache="none", **KW)
    in_memory = nmf(open_matrix(path).compute(), 4, maxit=5, updates_per_pass=3, chunks=150,
                    **KW)
    assert streamed.settings["chunks"] == in_memory.settings["chunks"] == [150] * 8
    _same(streamed, in_memory)


def test_checkpoint_resume_gives_the_uninterrupted_fit(tmp_path, hawaiibirds, birds_fit):
    ck = tmp_path / "ck.zarr"
    with dask.config.set(scheduler="threads", num_workers=1):
        nmf(hawaiibirds.matrix, 5, maxit=4, updates_per_pass=4, chunks=150,
            checkpoint=ck, checkpoint_every=2, **KW)
        resumed = nmf(hawaiibirds.matrix, 5, maxit=6, updates_per_pass=4, chunks=150,
                      checkpoint=ck, resume=True, **KW)
    _same(resumed, birds_fit)
    with pytest.raises(ValueError, match="updates_per_pass"):
        nmf(hawaiibirds.matrix, 5, maxit=6, updates_per_pass=2, chunks=150,
            checkpoint=ck, resume=True, **KW)


@pytest.mark.parametrize("data", ["pbmc3k", "planted"])
def test_reaches_the_exact_als_loss_monotonically(data, pbmc3k):
    """By the default rule, several updates per pass end within 1e-3 of exact ALS's converged
    loss; from the second pass on the loss never rises (every update is an exact block step)."""
    if data == "pbmc3k":
        A, k = pbmc3k.matrix, 6
    else:
        from dask_factor.datasets import simulate_counts

        A, k = simulate_counts(6_000, 1_500, 6, density=0.08, seed=4).compute(), 6
    exact = nmf(A, k, seed=1)
    online = nmf(A, k, seed=1, updates_per_pass=4)
    assert exact.converged and online.converged
    assert online.mse == pytest.approx(exact.mse, rel=1e-3)
    hist = np.array(online.loss_history)
    assert np.all(np.isfinite(hist))
    assert np.all(np.diff(hist[1:]) <= 1e-6 * hist[1:-1]), np.diff(hist)
    print(f"\n{data}: exact ALS {exact.iterations} passes, mse {exact.mse:.7g}; "
          f"updates_per_pass=4 {online.iterations} passes, mse {online.mse:.7g}")


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(updates_per_pass=0), ValueError, "updates_per_pass: expected an integer >= 1, got 0"),
    (dict(updates_per_pass=2.0), TypeError, "updates_per_pass: expected an integer"),
    (dict(updates_per_pass=2, test_fraction=0.1), ValueError, "updates_per_pass: .*test_fraction"),
    (dict(updates_per_pass=2, mask="zeros"), ValueError, "updates_per_pass: .*mask"),
    (dict(updates_per_pass=2, loss="kl"), ValueError, "updates_per_pass: .*loss"),
    (dict(updates_per_pass=2, robust=True), ValueError, "updates_per_pass: .*robust"),
    (dict(updates_per_pass=2, target_H=np.ones((3, 1183)), target_lambda=0.1), ValueError,
     "updates_per_pass: .*target_H"),
])
def test_argument_errors_name_the_argument(hawaiibirds, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        nmf(hawaiibirds.matrix, 3, seed=1, maxit=2, **kwargs)


def test_rank_search_refuses_several_updates(hawaiibirds):
    with pytest.raises(ValueError, match=r"updates_per_pass: .*rank search"):
        nmf(hawaiibirds.matrix, [2, 3], seed=1, maxit=2, updates_per_pass=2)


def test_capped_at_the_number_of_blocks(aml):
    model = nmf(aml.matrix, 3, seed=1, maxit=3, tol=0, updates_per_pass=50, chunks=45)
    assert len(model.settings["chunks"]) == 3 and model.settings["updates_per_pass"] == 3
