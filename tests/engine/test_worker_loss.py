"""A worker lost mid-fit does not fail the fit (DESIGN.md invariant)."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

from dask_factor import nmf

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("solver", ["cholesky", "auto"])
def test_fit_survives_a_killed_worker(hawaiibirds, solver):
    distributed = pytest.importorskip("distributed")
    A = hawaiibirds.matrix
    ref = nmf(A, 4, seed=2, maxit=10, tol=0, dtype="float64", solver=solver)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as lc, \
            distributed.Client(lc) as client:
        nmf(A, 2, seed=1, maxit=1, client=client)  # workers compile the kernels first
        killed = []

        def kill_one(it, mse, rel):
            if it == 4 and not killed:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = nmf(A, 4, seed=2, maxit=10, tol=0, dtype="float64", solver=solver,
                        client=client, on_iteration=kill_one)
        assert killed
        assert any("lost data on the cluster" in str(w.message) for w in caught)
        H = model.H
    assert model.iterations == 10
    assert np.all(np.isfinite(model.W)) and np.all(np.isfinite(H))
    if solver == "cholesky":
        # no warm start: resuming from the last W is exactly the uninterrupted run
        np.testing.assert_allclose(model.W, ref.W, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(H, ref.H, rtol=1e-10, atol=1e-14)
    else:
        assert model.mse <= ref.mse * 1.01


def test_scheduler_forgets_past_iterations(hawaiibirds):
    """On a cluster, the scheduler's task count stays flat across iterations (each kept H block
    and W package is re-registered without its history), for in-memory and lazy inputs."""
    distributed = pytest.importorskip("distributed")
    import dask.array as da

    A = hawaiibirds.matrix
    ref = nmf(A, 4, seed=2, maxit=16, tol=0, dtype="float64", chunks=150)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as lc, \
            distributed.Client(lc) as client:
        for X in (A, da.from_array(A.toarray(), chunks=(183, 150))):
            counts = []

            def count(it, mse, rel, counts=counts):
                counts.append(client.run_on_scheduler(
                    lambda dask_scheduler: len(dask_scheduler.tasks)))

            model = nmf(X, 4, seed=2, maxit=16, tol=0, dtype="float64", chunks=150,
                        client=client, on_iteration=count)
            # without rebasing the count grows by ~2.4 tasks per block and iteration
            assert max(counts[8:]) <= max(counts[:8]) + 4, counts
            np.testing.assert_allclose(model.W, ref.W, rtol=1e-9, atol=1e-15)  # dense: BLAS
