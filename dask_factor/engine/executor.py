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
from typing import Any

import dask
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

    @property
    def distributed(self) -> bool:
        return self.client is not None

    def run(self, dsk: dict, keep: list, fetch: list) -> tuple[dict[str, Any], list[Any]]:
        if self.client is not None:
            keys = list(dict.fromkeys(list(keep) + list(fetch)))  # a key may be kept and fetched
            # a kept key that is itself a persisted future passes through unchanged
            futs = {k: dsk[k] for k in keys if _is_future(dsk.get(k))}
            todo = [k for k in keys if k not in futs]
            if todo:
                futs.update(zip(todo, self.client.get(_inline_futures(dsk), todo, sync=False)))
            kept = {k: futs[k] for k in keep}
            fetched = self.client.gather([futs[k] for k in fetch]) if fetch else []
            return kept, list(fetched)
        vals = self.get(dsk, list(keep) + list(fetch))
        return dict(zip(keep, vals[: len(keep)])), list(vals[len(keep):])

    def rebase(self, handles: dict[str, Any]) -> dict[str, Any]:
        """Persisted values without their history (distributed only; identity locally).

        On a cluster a finished task is only forgotten by the scheduler once nothing that is still
        held depends on it, so carrying ``H_t`` (which depends on ``H_{t-1}``, …) would keep every
        past iteration's tasks on the scheduler. Each kept value is re-registered under a new key
        by a dependency-free task pinned to the worker that holds it (no data moves); the old
        futures are then dropped and the chain is forgotten.
        """
        if self.client is None or not handles:
            return handles
        from distributed.client import _wait

        # kept leaves may finish after the fetched statistics (``distributed.wait`` would use
        # the *default* client, which need not be ours)
        self.client.sync(_wait, list(handles.values()))
        who = self.client.who_has(list(handles.values()))
        out = {}
        for key, fut in handles.items():
            if str(fut.key).endswith(REBASED):  # already without history
                out[key] = fut
                continue
            holders = list(who.get(fut.key, ()))
            if not holders:  # not in memory anywhere (lost): let the caller's recovery handle it
                raise _LostData(f"{fut.key} is not held by any worker")
            out[key] = self.client.submit(_local_value, fut.key, key=f"{fut.key}{REBASED}",
                                          workers=holders[:1], allow_other_workers=False,
                                          pure=False)
        self.client.gather(list(out.values()))  # wait: only then may the old keys go
        return out

    def gather(self, handles: list) -> list:
        if self.client is not None:
            return list(self.client.gather(list(handles)))
        return list(handles)

    def scatter(self, key: str, value: Any) -> Any:
        """Place a value where the tasks run (a future on a cluster, the value itself locally)."""
        if self.client is not None:  # straight to a worker, not through the scheduler's graph
            return self.client.scatter(value, hash=False)
        return value


def _identity(x):
    return x


#: suffix of the keys :meth:`Executor.rebase` creates
REBASED = "-rebased"


class _LostData(RuntimeError):
    """A persisted value is no longer on any worker (treated like a lost worker)."""


def _local_value(key):
    """The value a worker holds under ``key`` (runs on that worker; no dependency declared)."""
    from distributed import get_worker

    return get_worker().data[key]


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


def blas_single_thread():
    """Limit BLAS to one thread while a fit runs on local threads (restored afterwards).

    Block tasks already run on Dask's threads; BLAS's own threads would only oversubscribe the
    cores (on a busy 2-core machine a 13,714 × 10 QR went from 1 ms to 100 ms). Distributed
    workers start with one BLAS thread already.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def local_blas_limit(ex: Executor):
    """``blas_single_thread()`` for a local executor, a no-op context on a cluster."""
    return contextlib.nullcontext() if ex.distributed else blas_single_thread()
