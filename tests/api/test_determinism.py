"""Same data, seed and chunking ⇒ the same factors on every scheduler (docs/design.md invariant).

Threads (dask's default), the synchronous scheduler, a ``distributed.LocalCluster`` of worker
processes reached by ``client=`` or as the active client, and 1 vs 2 workers. Clusters run on
loopback only and are started and stopped by the tests.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from helpers import assert_factors_close

from dask_factor import nmf

pytestmark = pytest.mark.filterwarnings(
    # with dashboard_address=None the scheduler still serves /health on 127.0.0.1:8787, or on a
    # free port when another cluster (ours or a neighbour's) holds it
    "ignore:Port 8787 is already in use:UserWarning"
)

KW = dict(seed=3, maxit=10, tol=0, dtype="float64")
RTOL = 1e-6


def fit(A, **extra):
    return nmf(A, 5, **{**KW, **extra})


@pytest.fixture(scope="module")
def reference(hawaiibirds):
    """The fit on dask's default threaded scheduler."""
    with dask.config.set(scheduler="threads"):
        return fit(hawaiibirds.matrix)


def test_threads_are_repeatable(hawaiibirds, reference):
    with dask.config.set(scheduler="threads"):
        again = fit(hawaiibirds.matrix)
    assert_factors_close(again, reference, rtol=RTOL, match=False)
    np.testing.assert_allclose(again.loss_history, reference.loss_history, rtol=RTOL)


def test_synchronous_equals_threads(hawaiibirds, reference):
    with dask.config.set(scheduler="synchronous"):
        sync = fit(hawaiibirds.matrix)
        H = sync.H
    assert_factors_close((sync.W, sync.d, H), reference, rtol=RTOL, match=False)


@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_thread_count_does_not_matter(aml, num_workers):
    A = aml.matrix
    with dask.config.set(scheduler="threads", num_workers=1):
        one = fit(A)
    with dask.config.set(scheduler="threads", num_workers=num_workers):
        many = fit(A)
    assert_factors_close(many, one, rtol=RTOL, match=False)


# ------------------------------------------------------------------------------------------
# distributed


def _local_cluster(n_workers):
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                        dashboard_address=None, host="127.0.0.1")


@pytest.fixture(scope="module")
def cluster():
    with _local_cluster(2) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture(scope="module")
def two_workers(hawaiibirds, client):
    """The reference fit on the 2-worker cluster, H gathered."""
    model = fit(hawaiibirds.matrix, client=client)
    model.H  # noqa: B018 - gather while the cluster is up
    return model


@pytest.mark.cluster
def test_cluster_client_equals_threads(hawaiibirds, reference, client, two_workers):
    model = two_workers
    assert len(client.scheduler_info()["workers"]) == 2
    assert_factors_close(model, reference, rtol=RTOL, match=False)
    np.testing.assert_allclose(model.loss_history, reference.loss_history, rtol=RTOL)
    # the per-iteration graph does not grow on a cluster either
    assert max(model.graph_sizes[1:]) == min(model.graph_sizes[1:])
    # and the model's utilities run there too
    A = hawaiibirds.matrix
    assert model.evaluate(A) == pytest.approx(reference.evaluate(A), rel=1e-9)
    np.testing.assert_allclose(model.predict(A[:, :50]), reference.predict(A[:, :50]),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.cluster
def test_cluster_float32_and_dense_and_lazy_inputs(aml, hawaiibirds, client):
    """float32 storage, a dense matrix, and a lazy dask input read on the workers."""
    def lazy():
        return da.from_array(hawaiibirds.matrix, chunks=(183, 150), asarray=False)

    with dask.config.set(scheduler="threads"):
        local = [fit(aml.matrix, dtype="float32"), fit(lazy(), maxit=5)]
    remote = [fit(aml.matrix, dtype="float32", client=client),
              fit(lazy(), maxit=5, client=client)]
    for r, loc in zip(remote, local):
        assert_factors_close(r, loc, rtol=RTOL, match=False)


@pytest.mark.cluster
def test_active_client_is_used_without_client_argument(hawaiibirds, reference, cluster):
    from distributed import Client

    with Client(cluster) as c:  # becomes the default scheduler
        before = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
        model = fit(hawaiibirds.matrix)
        H = model.H
        after = c.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after > before, "the fit did not run on the active client's cluster"
    assert_factors_close((model.W, model.d, H), reference, rtol=RTOL, match=False)


@pytest.mark.cluster
def test_worker_count_does_not_matter(hawaiibirds, reference, two_workers):
    from distributed import Client

    with _local_cluster(1) as one_cluster, Client(one_cluster, set_as_default=False) as one:
        assert len(one.scheduler_info()["workers"]) == 1
        single = fit(hawaiibirds.matrix, client=one)
        H = single.H
    assert_factors_close((single.W, single.d, H), two_workers, rtol=RTOL, match=False)
    assert_factors_close(two_workers, reference, rtol=RTOL, match=False)


@pytest.mark.cluster
def test_steps_started_ahead_on_a_cluster_leave_the_fit_unchanged(hawaiibirds, client):
    """On a cluster the driver starts step t + 1 before step t's statistics arrive; a fit that
    converges, or that its callback stops, still ends at that step: the same iterations, loss
    history and factors (bit for bit) as on threads, one graph per scored step, and the step
    started ahead of the end is dropped."""
    A = hawaiibirds.matrix
    kw = dict(seed=3, maxit=60, tol=1e-3, dtype="float64")
    with dask.config.set(scheduler="threads"):
        ref = nmf(A, 5, **kw)
    got = nmf(A, 5, client=client, **kw)
    assert ref.converged and got.converged and got.iterations == ref.iterations < 60
    assert got.loss_history == ref.loss_history
    np.testing.assert_array_equal(got.W, ref.W)
    np.testing.assert_array_equal(np.asarray(got.H), np.asarray(ref.H))
    assert len(got.graph_sizes) == got.iterations

    def stop_at_4(it, mse, rel):
        return it == 4

    with dask.config.set(scheduler="threads"):
        ref4 = nmf(A, 5, on_iteration=stop_at_4, **kw)
    got4 = nmf(A, 5, client=client, on_iteration=stop_at_4, **kw)
    assert got4.iterations == ref4.iterations == 4
    np.testing.assert_array_equal(got4.W, ref4.W)
    np.testing.assert_array_equal(np.asarray(got4.H), np.asarray(ref4.H))


@pytest.mark.cluster
def test_no_step_is_started_ahead_when_blocks_are_read_each_pass(hawaiibirds, client,
                                                                 monkeypatch):
    """Streamed blocks (read by tasks every pass) are never started ahead: the next step's
    reads would all start at once and hold the matrix in the workers' memory. Held blocks are."""
    from dask_factor.engine import driver

    calls = []
    real = driver._start_ahead
    monkeypatch.setattr(driver, "_start_ahead", lambda run, step: calls.append(step)
                        or real(run, step))
    A = hawaiibirds.matrix
    lazy = da.from_array(A.toarray(), chunks=(A.shape[0], 60))
    streamed = nmf(lazy, 4, seed=2, maxit=4, tol=0, cache="none", client=client)
    assert calls == []
    held = nmf(A, 4, seed=2, maxit=4, tol=0, client=client)
    assert calls == [2, 3, 4]
    assert streamed.iterations == held.iterations == 4


@pytest.mark.cluster
def test_a_small_w_solve_runs_in_the_reductions_last_task_on_a_cluster(hawaiibirds, client,
                                                                         monkeypatch):
    """On a cluster a W solve of at most ``FUSED_W_WORK`` (m·k²) and the W update run in the
    reduction's last task (a task of their own would cost a scheduler round trip each); a larger
    solve is split into row-range tasks before a W-update task. Both give the threaded fit's
    factors bit for bit (each row is solved on its own, the sums are the same)."""
    from dask_factor.engine import als, executor

    tasks: set[str] = set()
    original = executor.Executor.submit

    def spy(self, dsk, keep, fetch, *rest):
        tasks.update(label for k, v in dsk.items() if isinstance(k, str) and isinstance(v, tuple)
                     for label in ("-w-rows-", "-w-update-") if label in k)
        return original(self, dsk, keep, fetch, *rest)

    A = hawaiibirds.matrix
    kw = dict(seed=4, maxit=3, tol=0, dtype="float64")
    with dask.config.set(scheduler="threads"):
        ref = nmf(A, 5, **kw)
    monkeypatch.setattr(executor.Executor, "submit", spy)
    fused = nmf(A, 5, client=client, **kw)
    assert tasks == {"-w-update-"}  # the reduction's last task, named for what it ends with
    tasks.clear()
    monkeypatch.setattr(als, "FUSED_W_WORK", -1)  # every solve counts as large
    split = nmf(A, 5, client=client, **kw)
    assert tasks == {"-w-rows-", "-w-update-"}
    for got in (fused, split):
        np.testing.assert_array_equal(got.W, ref.W)
        np.testing.assert_array_equal(np.asarray(got.H), np.asarray(ref.H))


@pytest.mark.cluster
def test_streamed_scan_store_on_the_cluster_equals_threads(tmp_path, client):
    """A scan-layout store fitted from disk at every pass (blocks read as stored, the delta
    kernels on the workers) gives the threaded fit's factors bit for bit."""
    from dask_factor.datasets import simulate_counts

    path = tmp_path / "a.zarr"
    simulate_counts(3_000, 400, 4, density=0.1, seed=6, path=path, block_cols=375,
                    layout="scan")
    kw = dict(seed=4, maxit=4, tol=0, cache="none")
    with dask.config.set(scheduler="threads"):
        ref = nmf(str(path), 4, **kw)
    got = nmf(str(path), 4, client=client, **kw)
    np.testing.assert_array_equal(got.W, ref.W)
    np.testing.assert_array_equal(np.asarray(got.H), np.asarray(ref.H))
    assert got.loss_history == ref.loss_history
