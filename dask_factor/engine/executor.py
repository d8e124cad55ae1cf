"""Running one iteration's task graph and keeping its factors where they were computed.

The engine describes each iteration as a plain Dask graph (a dict of ``key: (func, *args)``)
whose previous-iteration inputs are *persisted* values: with dask's local schedulers (threads by
default, or ``synchronous``) they are the Python objects themselves; on a ``distributed.Client``
they are futures, so the factors stay on the workers. Either way the graph of every iteration has
the same tasks, and what is not kept is released when the next iteration replaces it.

Raw graphs instead of ``dask.delayed``/``persist`` keep the client-side cost of an iteration to a
fraction of a millisecond per task, which matters when an iteration takes a few milliseconds.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import dask
import numpy as np
from dask.base import get_scheduler


def _distributed_client(client=None):
    if client is not None:
        return client
    sched = get_scheduler()
    owner = getattr(sched, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client" and hasattr(owner, "gather"):
        return owner
    return None


class Executor:
    """Runs graphs on the current Dask scheduler; ``client=`` forces a distributed cluster.

    Methods
    -------
    run(dsk, keep, fetch) -> (kept handles, fetched values)
        ``keep`` keys stay persisted (values locally, futures on a cluster); ``fetch`` keys are
        brought to the client.
    """

    def __init__(self, client=None):
        self.client = _distributed_client(client)
        self.get = None if self.client is not None else (get_scheduler() or dask.threaded.get)
        if self.client is not None:
            from . import malloc

            malloc.register(self.client)  # blocks decode ~1.7x faster on nanny-started workers
        #: future key -> the worker a block was placed on (:meth:`scatter_blocks`)
        self.owners: dict[str, str] = {}

    @property
    def distributed(self) -> bool:
        return self.client is not None

    def run(self, dsk: dict, keep: list, fetch: list,
            prefer: dict[str, str] | None = None) -> tuple[dict[str, Any], list[Any]]:
        """Run ``dsk``; on a cluster ``prefer`` maps tasks to the worker they should run on
        (loosely: another worker takes them if that one is gone)."""
        kept, handles = self.submit(dsk, keep, fetch, prefer)
        return kept, self.fetch(handles)

    def submit(self, dsk: dict, keep: list, fetch: list,
               prefer: dict[str, str] | None = None) -> tuple[dict[str, Any], list[Any]]:
        """Start ``dsk`` without waiting on a cluster: ``(kept handles, fetch handles)``, the
        latter for :meth:`fetch`. Locally the graph runs now and both are values."""
        if self.client is not None:
            keys = list(dict.fromkeys(list(keep) + list(fetch)))  # a key may be kept and fetched
            # a kept key that is itself a persisted future passes through unchanged
            futs = {k: dsk[k] for k in keys if _is_future(dsk.get(k))}
            todo = [k for k in keys if k not in futs]
            if todo:
                graph = _with_preferences(_inline_futures(dsk), prefer or {})
                futs.update(zip(todo, self.client.get(graph, todo, sync=False)))
            return {k: futs[k] for k in keep}, [futs[k] for k in fetch]
        vals = self.get(dsk, list(keep) + list(fetch))
        return dict(zip(keep, vals[: len(keep)])), list(vals[len(keep):])

    def fetch(self, handles: list) -> list:
        """The values of :meth:`submit`'s fetch handles (waits for them on a cluster)."""
        if self.client is not None and handles:
            return list(self.gather_watched(list(handles)))
        return list(handles)

    def gather(self, handles: list) -> list:
        if self.client is not None:
            return list(self.client.gather(list(handles)))
        return list(handles)

    def gather_watched(self, futures: list) -> list:
        """``client.gather`` that cannot wait forever on a cluster left without workers."""
        self._wait_watched(futures)
        return self.client.gather(futures)

    def settle(self, handles: list) -> None:
        """Wait until persisted handles are computed, raising their error (nothing is moved)."""
        if self.client is None or not handles:
            return
        self._wait_watched(handles)
        for h in handles:
            if h.status != "finished":
                h.result()  # raises the task's error or the cancellation

    def _wait_watched(self, futures: list) -> None:
        """Wait for ``futures`` in slices of :data:`POLL_SECONDS`; while no worker is connected
        for longer than :data:`NO_WORKER_SECONDS`, raise :class:`WorkerLostError` (a cluster
        whose workers are all gone would otherwise hang the fit).

        ``as_completed`` with this client's loop: ``distributed.wait`` would use the default
        client, and ``Client.as_current`` sets the global dask config (not safe from the threads
        that run concurrent fits).
        """
        from distributed import as_completed

        pending = [f for f in futures if not f.done()]
        idle_since = None
        while pending:
            try:
                for _ in as_completed(pending, timeout=POLL_SECONDS, loop=self.client.loop):
                    pass
                return
            except TimeoutError:
                pending = [f for f in pending if not f.done()]
                if self.client.scheduler_info().get("workers"):
                    idle_since = None
                    continue
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > NO_WORKER_SECONDS:
                    raise WorkerLostError(
                        f"the cluster at {self.client.scheduler.address} has had no worker for "
                        f"{NO_WORKER_SECONDS:.0f} s; start workers or use another cluster"
                    ) from None

    def scatter_many(self, values: list) -> list:
        """Place values where the tasks run, as plain data (no history on the scheduler).

        On a cluster they are spread over the workers in one call (``client.scatter``); locally
        they are the values themselves.
        """
        if self.client is None or not values:
            return list(values)
        return list(self.client.scatter(list(values), hash=False))

    def _runs(self, n: int) -> list[tuple[str, int, int]]:
        """``(worker, a, b)``: consecutive items ``a:b`` of ``n`` per worker (in address order),
        sized by its threads; empty with fewer than two workers."""
        try:  # every worker (newer distributed lists 5 unless asked for all)
            info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # distributed before the n_workers argument lists them all
            info = self.client.scheduler_info().get("workers", {})
        workers = sorted(info)
        if len(workers) <= 1:
            return []
        weights = np.array([max(int(info[w].get("nthreads", 1)), 1) for w in workers], float)
        bounds = np.rint(np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
                         * n).astype(int)
        return [(w, int(a), int(b)) for w, a, b in zip(workers, bounds[:-1], bounds[1:])
                if b > a]

    def scatter_blocks(self, values: list) -> list:
        """Place a matrix's consecutive blocks on the workers in contiguous runs.

        Worker ``j`` (in address order) gets the ``j``-th run, sized by its threads. The block
        tasks run where their block is, so a reduction over consecutive blocks can sum each
        worker's run where it lies and move one partial per run boundary instead of one per
        block (:meth:`Step.reduce <dask_factor.engine.driver.Step.reduce>`). Placement only
        moves work: the results are the same on any placement. Locally the values themselves.
        """
        if self.client is None or not values:
            return list(values)
        runs = self._runs(len(values))
        if not runs:
            return [self.client.scatter(v, hash=False) for v in values]
        out: list = []
        for w, a, b in runs:
            try:
                futs = self.client.scatter(list(values[a:b]), workers=[w], hash=False)
            except Exception:  # ``w`` left since scheduler_info: let the scheduler choose
                return out + list(self.client.scatter(list(values[a:]), hash=False))
            self.owners.update((f.key, w) for f in futs)
            out.extend(futs)
        return out

    def assign_reads(self, keys: list[str]) -> None:
        """Give a matrix's consecutive block reads (tasks run every pass) the workers' contiguous
        runs, as :meth:`scatter_blocks` places held blocks: each block's task then prefers its
        run's worker (loosely: another worker takes it if that one is busy elsewhere or gone,
        work stealing included), and a reduction over consecutive blocks sums each worker's
        run where it lies instead of moving a partial per block. Locally nothing."""
        if self.client is None or not keys:
            return
        for w, a, b in self._runs(len(keys)):
            self.owners.update((k, w) for k in keys[a:b])

    def locate(self, handles: list) -> None:
        """Learn where computed handles (kept block copies) lie, for :meth:`owner_of`."""
        futs = [h for h in handles if _is_future(h) and h.key not in self.owners]
        if self.client is None or not futs:
            return
        for key, where in self.client.who_has(futs).items():
            if len(where) == 1:
                self.owners[key] = next(iter(where))

    def owner_of(self, handle: Any, key: str | None = None) -> str | None:
        """The worker :meth:`scatter_blocks` put ``handle`` on, or :meth:`assign_reads` gave the
        read task of static key ``key``; None if neither placed it."""
        if _is_future(handle):
            return self.owners.get(handle.key)
        return self.owners.get(key) if key is not None else None

    def scatter(self, key: str, value: Any) -> Any:
        """Place a value where the tasks run (a future on a cluster, the value itself locally)."""
        if self.client is not None:  # straight to a worker, not through the scheduler's graph
            return self.client.scatter(value, hash=False)
        return value


def _is_future(v) -> bool:
    return type(v).__name__ == "Future" and hasattr(v, "key") and hasattr(v, "client")


def _inline_futures(dsk: dict) -> dict:
    """Put persisted futures straight into the tasks that use them.

    The engine's graphs name persisted values by key (``"wpack-…"`` → its future). Submitting
    ``key: future`` entries would re-declare keys the scheduler already holds (distributed warns
    about a changed ``run_spec``); a future given as a task argument is the supported form.
    Keys are substituted inside argument tuples and lists (the graph engine passes lists of
    block keys).
    """
    futs = {k: v for k, v in dsk.items() if _is_future(v)}
    if not futs:
        return dsk

    def sub(a):
        if isinstance(a, str):
            return futs.get(a, a)
        if isinstance(a, tuple):
            if a and callable(a[0]):  # a nested task: its arguments may name keys
                return (a[0],) + tuple(sub(x) for x in a[1:])
            return tuple(sub(x) for x in a)
        if isinstance(a, list):
            return [sub(x) for x in a]
        return a

    return {k: sub(v) for k, v in dsk.items() if k not in futs}


def _with_preferences(dsk: dict, prefer: dict[str, str]):
    """``dsk`` with each task in ``prefer`` restricted, loosely, to its worker.

    A task that reads a block placed by :meth:`Executor.scatter_blocks` should run where the
    block is; without a restriction the scheduler's work stealing moves some of them (and their
    blocks) to the other worker, and their partials then cross the network. Per-task
    restrictions travel as annotations of a ``HighLevelGraph`` layer (``Client.get``'s own
    ``workers=`` applies one restriction to every task); ``allow_other_workers`` keeps them
    loose, so a lost worker's tasks still run elsewhere.
    """
    pinned = {k: v for k, v in dsk.items() if k in prefer}
    if not pinned:
        return dsk
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    rest = {k: v for k, v in dsk.items() if k not in pinned}
    layers = {
        "pinned": MaterializedLayer(pinned, annotations={
            "workers": lambda key: [prefer[key]], "allow_other_workers": True}),
        "rest": MaterializedLayer(rest),
    }
    return HighLevelGraph(layers, {"pinned": {"rest"}, "rest": set()})


_BLAS = None  # one ThreadpoolController: finding the loaded BLAS libraries scans every
# shared library of the process, which costs milliseconds per fit once scanpy & co are loaded


def blas_single_thread():
    """Limit BLAS to one thread while a fit runs on local threads (restored afterwards).

    Block tasks already run on Dask's threads; BLAS's own threads would only oversubscribe the
    cores (on a busy 2-core machine a 13,714 × 10 QR went from 1 ms to 100 ms). Distributed
    workers start with one BLAS thread already.
    """
    global _BLAS
    from threadpoolctl import ThreadpoolController

    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def local_blas_limit(ex: Executor):
    """``blas_single_thread()`` for a local executor, a no-op context on a cluster."""
    return contextlib.nullcontext() if ex.distributed else blas_single_thread()


#: seconds between checks of a cluster's workers while a step's results are awaited
POLL_SECONDS = 5.0
#: a cluster without any worker for this long fails the fit instead of hanging it
NO_WORKER_SECONDS = 120.0


class WorkerLostError(RuntimeError):
    """A fit could not go on: workers were lost and could not be replaced or recovered from."""


def is_worker_loss(exc: BaseException) -> bool:
    """Whether a failed step lost data with a worker (and may be replayed from a snapshot).

    distributed reports a loss in several ways depending on when it happens: a cancelled future
    (singular or plural ``FuturesCancelledError`` from a gather), a task whose worker died too
    often (``KilledWorker``), a closed connection, or scattered data that are gone.
    """
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ in {"FutureCancelledError", "FuturesCancelledError",
                                "CancelledError", "KilledWorker", "CommClosedError",
                                "StreamClosedError"}:
            return True
        if "lost dependencies" in str(e) or "lost" in str(e).lower() and "worker" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False
