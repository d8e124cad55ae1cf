"""glibc's malloc thresholds on the workers of a cluster.

distributed's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its config
``distributed.nanny.pre-spawn-environ``) so that freed memory goes back to the system at once. A
side effect in glibc: setting that variable also freezes the threshold above which an allocation is
its own ``mmap`` at 128 KiB. Every array of a block (a few MB each) is then a fresh mapping whose
pages are zeroed and faulted in when first written, and unmapped when freed: a block read from a
zarr store decoded in 17.5 ms on such a worker against 10.0 ms in a plain process (1.9 M stored
entries; the same on a worker with the settings below).

So when a fit runs on a cluster, :func:`register` installs a worker plugin that raises both
thresholds on every worker, present and future (workers restarted after a loss included):
allocations up to :data:`MMAP_THRESHOLD` come from malloc's heaps, and up to
:data:`TRIM_THRESHOLD` of free memory at a heap's top is kept for the next block instead of being
returned. The cost is at most that much memory held by a worker between blocks. Other platforms
(musl, macOS, Windows) and workers running in the client's own process are left alone. Set
the dask config ``dask-factor.worker-malloc`` to False to opt out
(``DASK_DASK_FACTOR__WORKER_MALLOC=False``).

An earlier version of this plugin was reverted because the worker-loss tests then failed about
half the time with a finished fit's H blocks lost: the tests killed a worker a few
milliseconds after an iteration, and with faster iterations the kill could land after the fit
had returned (a worker lost after a fit takes its blocks with it). The tests now wait for
each kill before the fit goes on.

This module is the one place that calls into the C library for it (through :mod:`ctypes`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import uuid
import weakref

import dask
from distributed.diagnostics.plugin import WorkerPlugin

#: allocations below this come from malloc's heaps (glibc's ``M_MMAP_THRESHOLD``)
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of a heap kept for reuse (glibc's ``M_TRIM_THRESHOLD``)
TRIM_THRESHOLD = 128 << 20
#: glibc's ``mallopt`` parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the dask config key that turns the plugin off
CONFIG_KEY = "dask-factor.worker-malloc"

_registered: weakref.WeakSet = weakref.WeakSet()


def set_thresholds(mmap_threshold: int = MMAP_THRESHOLD,
                   trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set this process's glibc malloc thresholds; False where there is no glibc.

    Examples
    --------
    >>> set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)  # doctest: +SKIP
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc (musl has no mallopt thresholds to speak of)
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    return bool(ok)


#: this process, as the plugin tells it from others (PIDs repeat across hosts and containers)
PROCESS = uuid.uuid4().hex


class MallocPlugin(WorkerPlugin):
    """Sets :func:`set_thresholds` on each worker when it starts (or at once if running),
    except in the process of the client that registered it (``LocalCluster(processes=False)``
    runs its workers as threads of the user's session, whose allocator is not ours to set).

    Examples
    --------
    >>> MallocPlugin(PROCESS).name
    'dask-factor-malloc'
    """

    name = "dask-factor-malloc"
    idempotent = True  # registered again by every fit: runs once per worker

    def __init__(self, client_process: str):
        self.client_process = client_process

    def setup(self, worker) -> None:
        if PROCESS != self.client_process:  # (a worker thread of the client's process)
            set_thresholds()


def register(client) -> None:
    """Install :class:`MallocPlugin` on ``client``'s cluster, once per client (unless the dask
    config ``dask-factor.worker-malloc`` is False)."""
    if not dask.config.get(CONFIG_KEY, True) or client in _registered:
        return
    client.register_plugin(MallocPlugin(PROCESS), name=MallocPlugin.name)
    _registered.add(client)
