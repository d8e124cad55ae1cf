"""Chaos: a worker killed (SIGKILL) during a fit never fails it and never changes its result.

Every fit kind runs on the one driver (``engine/driver.py``): after a loss it restores the last
snapshot and replays the steps since, so the factors equal the undisturbed fit's bit for bit, for
every solver, fit kind and input kind. Each test runs under a timeout: a hang fails it.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings

import numpy as np
import pytest

from dask_factor import factor_config, factor_input, factor_net, fit, nmf, nmf_layer

pytestmark = [pytest.mark.cluster, pytest.mark.daemons, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # 3 workers: two kills always leave one, whether or not the nannies have restarted the
    # killed ones yet (a restart can take long on a loaded machine)
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as lc, \
            distributed.Client(lc) as client:
        yield client


def _kill_a_worker(client):
    """SIGKILL one worker process, never the last one alive."""
    pids = list(client.run(os.getpid).values())
    if len(pids) >= 2:
        os.kill(pids[0], signal.SIGKILL)


class Chaos:
    """An ``on_iteration`` that kills a worker after the given iterations (optionally a little
    later, in the middle of the next iteration)."""

    def __init__(self, client, at=(3, 6), delay: float | None = None):
        self.client, self.at, self.delay = client, set(at), delay
        self.kills = 0
        self.calls: list[int] = []
        self.timers: list[threading.Timer] = []

    def __call__(self, it, score, rel):
        self.calls.append(it)
        for t in self.timers:  # a delayed kill lands before the fit's next iteration ends (a
            t.join()           # fast fit could otherwise finish first and lose its result)
        if it in self.at:
            self.at.discard(it)
            self.kills += 1
            if self.delay is None:
                _kill_a_worker(self.client)
            else:
                timer = threading.Timer(self.delay, _kill_a_worker, (self.client,))
                self.timers.append(timer)
                timer.start()
        return False


def _run_with_chaos(fn, chaos):
    """Run ``fn(chaos)``; the reference's factors must be materialised before (a kill would take
    a finished fit's H blocks with it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(chaos)
        for t in chaos.timers:  # no kill may outlive the test
            t.join()
    assert chaos.kills == 2
    lost = [w for w in caught if "lost data on the cluster" in str(w.message)]
    return out, lost


def _same(a, b, exact):
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("solver", ["cholesky", "auto"])
@pytest.mark.parametrize("when", ["between", "during"])
def test_plain_fit_survives_two_kills(cluster, hawaiibirds, solver, when):
    A = hawaiibirds.matrix
    kw = dict(seed=2, maxit=10, tol=0, dtype="float64", solver=solver, client=cluster)
    ref = nmf(A, 4, **kw)
    ref.H  # noqa: B018 - materialise before the kills
    chaos = Chaos(cluster, delay=None if when == "between" else 0.005)
    model, lost = _run_with_chaos(lambda cb: nmf(A, 4, on_iteration=cb, **kw), chaos)
    assert model.iterations == 10
    assert chaos.calls == list(range(1, 11))  # a replayed iteration is not reported twice
    _same(model.W, ref.W, exact=True)
    _same(model.H, ref.H, exact=True)
    assert model.loss_history == ref.loss_history


def test_count_data_loss_fit_survives_two_kills(cluster, hawaiibirds):
    """The IRLS kind (NB: the dispersion is state too): its transposed copy of A is rebuilt
    after a loss, the result is bitwise the undisturbed fit's."""
    A = hawaiibirds.matrix
    kw = dict(seed=2, maxit=10, tol=0, loss="nb", client=cluster)
    ref = nmf(A, 4, **kw)
    ref.H  # noqa: B018 - materialise before the kills
    model, lost = _run_with_chaos(lambda cb: nmf(A, 4, on_iteration=cb, **kw), Chaos(cluster))
    assert model.iterations == 10
    _same(model.W, ref.W, exact=True)
    _same(model.H, ref.H, exact=True)
    assert model.objective_history == ref.objective_history
    np.testing.assert_array_equal(model.dispersion, ref.dispersion)


def test_masked_cv_fit_survives_two_kills(cluster, aml):
    A = aml.matrix
    kw = dict(seed=3, maxit=12, tol=0, test_fraction=0.1, cv_seed=1, client=cluster,
              patience=50)
    ref = nmf(A, 5, **kw)
    ref.H  # noqa: B018
    model, _ = _run_with_chaos(lambda cb: nmf(A, 5, on_iteration=cb, **kw), Chaos(cluster))
    assert model.best_iter == ref.best_iter
    assert model.test_loss_history == ref.test_loss_history
    _same(model.W, ref.W, exact=True)
    _same(model.H, ref.H, exact=True)


def test_deep_graph_survives_two_kills(cluster, aml):
    def run(cb=None):
        inp = factor_input(aml.matrix, name="aml")
        net = factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 3, name="coarse"),
                         factor_config(maxit=8, tol=0, seed=5, warmup=2))
        return fit(net, client=cluster, on_iteration=cb)

    ref = run()
    res, _ = _run_with_chaos(run, Chaos(cluster, at=(2, 5)))
    for name in ("fine", "coarse"):
        _same(res[name].W, ref[name].W, exact=True)
        _same(res[name].H, ref[name].H, exact=True)
    assert res.loss_history == ref.loss_history


@pytest.mark.parametrize("when", ["between", "during"])
def test_graph_with_svd_layers_survives_two_kills(cluster, aml, when):
    """An svd_layer on the input (solved once, its blocks in the driver's state) and one fed by
    a layer (a TSQR every sweep) recover like NMF layers: the undisturbed factors, bit for bit."""
    from dask_factor.graph import factor_concat, svd_layer

    def run(cb=None):
        inp = factor_input(aml.matrix, name="aml")
        pca = svd_layer(inp, 4, name="pca", center=True)
        pc = svd_layer(nmf_layer(inp, 6, name="fine"), 3, name="pc", center=True)
        net = factor_net(inp, nmf_layer(factor_concat(pca, pc), 2, name="top"),
                         factor_config(maxit=8, tol=0, seed=5, warmup=2))
        return fit(net, client=cluster, on_iteration=cb)

    ref = run()
    delay = None if when == "between" else 0.05
    res, _ = _run_with_chaos(run, Chaos(cluster, at=(2, 5), delay=delay))
    for name in ("pca", "fine", "pc", "top"):
        _same(res[name].W, ref[name].W, exact=True)
        _same(res[name].H, ref[name].H, exact=True)
        _same(res[name].d, ref[name].d, exact=True)
    assert res.loss_history == ref.loss_history


@pytest.mark.parametrize("fmt", ["zarr", "spz", "h5ad"])
def test_file_input_fit_survives_two_kills(cluster, hawaiibirds, tmp_path, fmt):
    """Blocks read from disk inside the tasks: a kill used to hang these fits forever."""
    from dask_factor.io import write_matrix

    path = tmp_path / f"birds.{fmt}"
    write_matrix(hawaiibirds.matrix, path, format=fmt)
    kw = dict(seed=2, maxit=10, tol=0, dtype="float64", client=cluster)
    ref = nmf(str(path), 4, **kw)
    ref.H  # noqa: B018
    model, _ = _run_with_chaos(lambda cb: nmf(str(path), 4, on_iteration=cb, **kw),
                               Chaos(cluster, delay=0.005))
    _same(model.W, ref.W, exact=True)
    _same(model.H, ref.H, exact=True)


def test_scheduler_forgets_past_iterations(cluster, hawaiibirds):
    """On a cluster, the scheduler's task count stays flat across iterations (snapshots
    re-register the state as plain data), for in-memory and lazy inputs."""
    import dask.array as da

    A = hawaiibirds.matrix
    ref = nmf(A, 4, seed=2, maxit=24, tol=0, dtype="float64", chunks=150)
    for X in (A, da.from_array(A.toarray(), chunks=(183, 150))):
        counts = []

        def count(it, mse, rel, counts=counts):
            counts.append(cluster.run_on_scheduler(
                lambda dask_scheduler: len(dask_scheduler.tasks)))

        model = nmf(X, 4, seed=2, maxit=24, tol=0, dtype="float64", chunks=150,
                    client=cluster, on_iteration=count)
        # a history kept would grow by a few tasks per block and iteration (~20 here, ~300 over
        # the last 16); a snapshot every 8 iterations makes the count periodic (the scheduler
        # releases asynchronously, so a peak may read a few tasks more or less)
        assert max(counts[16:]) <= max(counts[:8]) + 30, counts
        np.testing.assert_allclose(model.W, ref.W, rtol=1e-9, atol=1e-15)  # dense: BLAS


def test_recovery_gives_up_with_a_clear_error(cluster, hawaiibirds, monkeypatch):
    """When no step completes between losses, the fit stops naming the problem (no hang)."""
    from dask_factor.engine import driver

    monkeypatch.setattr(driver, "MAX_STALLED_RECOVERIES", 1)
    A = hawaiibirds.matrix
    real_submit = driver._Run.submit

    def failing_submit(self, step):
        if step >= 3:
            from distributed.client import FutureCancelledError

            raise FutureCancelledError("x", "simulated loss")
        return real_submit(self, step)

    monkeypatch.setattr(driver._Run, "submit", failing_submit)
    with pytest.raises(driver.WorkerLostError, match="could not complete step 3"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nmf(A, 3, seed=1, maxit=6, tol=0, client=cluster)


def _fail_once(monkeypatch, method):
    """Make ``Executor.<method>`` raise the error a scatter to a just-killed worker raises, once
    (the race no kill timing reproduces reliably: the scheduler still lists the dead worker)."""
    from distributed.comm.core import CommClosedError

    from dask_factor.engine.executor import Executor

    real = getattr(Executor, method)
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(method)
        if len(calls) == 1:
            raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Executor, method, flaky)
    return calls


@pytest.mark.parametrize("method", ["scatter_blocks", "scatter", "scatter_many"])
def test_fit_survives_a_loss_while_placing_data(cluster, hawaiibirds, monkeypatch, method):
    """The blocks (``scatter_blocks``), the static data (``scatter``) and the state
    (``scatter_many``) are placed before the first step: a loss there is waited out and the
    data placed again, with a warning, and the fit is the undisturbed one."""
    A = hawaiibirds.matrix
    kw = dict(seed=2, maxit=5, tol=0, dtype="float64", client=cluster)
    if method == "scatter":  # a target is static data the fit places (``Context.put``)
        target = np.random.default_rng(0).random((4, A.shape[1]))
        kw.update(target_H=target, target_lambda=0.5)
    ref = nmf(A, 4, **kw)
    calls = _fail_once(monkeypatch, method)
    with pytest.warns(RuntimeWarning, match="lost while data were placed"):
        model = nmf(A, 4, **kw)
    assert len(calls) >= 2  # failed once, then placed
    _same(model.W, ref.W, exact=True)
    _same(model.H, ref.H, exact=True)


def test_placing_gives_up_with_a_clear_error(cluster, hawaiibirds, monkeypatch):
    from distributed.comm.core import CommClosedError

    from dask_factor.engine import driver
    from dask_factor.engine.executor import Executor

    def dead(self, values):
        raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")

    monkeypatch.setattr(driver, "PLACE_BACKOFF", 0.0)
    monkeypatch.setattr(Executor, "scatter_many", dead)
    with pytest.raises(driver.WorkerLostError, match="could not place data on the cluster"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nmf(hawaiibirds.matrix, 3, seed=1, maxit=3, tol=0, client=cluster)


def test_svd_survives_a_loss_while_placing_its_broadcast(cluster, pbmc3k, monkeypatch):
    """A pass's broadcast (``Executor.scatter``) meeting a dead worker: the pass is run again."""
    from dask_factor import svd

    ref = svd(pbmc3k.matrix, 4, client=cluster)
    ref_V = np.asarray(ref.V)
    _fail_once(monkeypatch, "scatter")
    res = svd(pbmc3k.matrix, 4, client=cluster)
    np.testing.assert_array_equal(res.d, ref.d)
    np.testing.assert_array_equal(np.asarray(res.V), ref_V)


def test_svd_survives_kills(cluster, pbmc3k):
    """SVD passes are pure functions of A and the broadcast: a pass that loses a worker is run
    again, so the triplets equal the undisturbed run's."""
    from dask_factor import svd

    A = pbmc3k.matrix
    ref = svd(A, 6, client=cluster)
    ref_V = np.asarray(ref.V)
    timers = []

    def on_pass(i, *_):
        for t in timers:  # each kill lands during the SVD, not after it
            t.join()
        if i in (3, 9):
            timers.append(threading.Timer(0.002, _kill_a_worker, (cluster,)))
            timers[-1].start()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = svd(A, 6, client=cluster, on_pass=on_pass)
        for t in timers:
            t.join()
    np.testing.assert_array_equal(res.d, ref.d)
    np.testing.assert_array_equal(res.U, ref.U)
    np.testing.assert_array_equal(np.asarray(res.V), ref_V)


def test_rank_search_survives_kills(cluster, aml):
    """Several masked fits at once (nmf(A, [k, …]) runs them concurrently), each on the driver,
    with workers killed while they run."""
    kw = dict(seed=1, maxit=40, tol=0, test_fraction=0.1, cv_seed=[1, 2], patience=100,
              client=cluster)
    ref = nmf(aml.matrix, [2, 3], **kw).table
    timers = [threading.Timer(delay, _kill_a_worker, (cluster,)) for delay in (0.3, 0.8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in timers:
            t.start()
        got = nmf(aml.matrix, [2, 3], **kw).table
        for t in timers:
            t.join()
    # (a kill may also land where Dask recomputes the lost tasks itself, with no warning)
    np.testing.assert_array_equal(got["test_mse"].to_numpy(), ref["test_mse"].to_numpy())
    np.testing.assert_array_equal(got["best_iter"].to_numpy(), ref["best_iter"].to_numpy())


def test_cross_validate_graph_survives_kills(cluster, aml):
    """A grid of masked fits (paired hold-outs, run concurrently) with workers killed while they
    run: the same table as the undisturbed search."""
    from dask_factor import cross_validate_graph

    def search():
        inp = factor_input(aml.matrix, name="aml")
        return cross_validate_graph(
            inp, lambda p: nmf_layer(inp, p["k"], name="cv"), {"k": [2, 3, 4]},
            factor_config(test_fraction=0.1, cv_seed=7, maxit=30, tol=0, patience=100),
            reps=2, seed=7, verbose=False, client=cluster)

    ref = search().results
    timers = [threading.Timer(delay, _kill_a_worker, (cluster,)) for delay in (0.4, 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in timers:
            t.start()
        got = search().results
        for t in timers:
            t.join()
    for col in ("test_loss", "train_loss"):
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy())
