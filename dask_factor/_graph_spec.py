"""The one place that touches Dask's low-level task specification.

Everything else in the package uses public Dask APIs (``dask.array``, ``dask.delayed``,
``Client.submit/scatter/gather``, ``as_completed``). Two hot paths build graphs by hand, because
the public builders cost more than the work they wrap:

* the readers' column blocks (:func:`dask_factor.io.blocks.array_from_reader`,
  :func:`~dask_factor.io.blocks.from_dask`): one task per block holding a small picklable reader,
  in a ``HighLevelGraph`` layer — ``dask.delayed`` plus ``da.from_delayed`` and ``concatenate``
  would add a task and a key rename per block to every pass over the data;
* the engine's per-step graphs (:mod:`dask_factor.engine.driver`, run by
  :mod:`dask_factor.engine.executor`): plain ``{key: (func, *args)}`` dicts, Dask's documented
  graph format, because ``delayed`` + ``persist`` cost ~28 ms of client time per iteration on an
  8-block matrix against ~4 ms for the dict.

``dask._task_spec`` (``Task``/``TaskRef``) is Dask's internal form of the same specification;
it is imported here only, so a change in it is a change in this file.
"""

from __future__ import annotations

from typing import Any

from dask._task_spec import Task, TaskRef

__all__ = ["task", "ref"]


def task(key: Any, func, *args) -> Task:
    """A task computing ``func(*args)`` under ``key`` (arguments may be :func:`ref` s)."""
    return Task(key, func, *args)


def ref(key: Any) -> TaskRef:
    """A reference to another task's output, as a task argument."""
    return TaskRef(key)
