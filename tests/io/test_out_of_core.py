"""Out-of-core NMF: a matrix on disk, fitted on a LocalCluster whose workers cannot hold it.

The matrix is simulated straight to zarr and to ``.spz`` (block by block), and converted to the
zarr scan layout, then fitted with
``nmf(open_matrix(path), k)`` on 2 worker processes.  Checks:

* the factors equal an in-memory fit with the same seed and the same column blocks;
* every worker's peak RSS (sampled every 5 ms by a worker plugin) grows over its warmed-up
  baseline by less than ``budget``, a fraction of the decoded matrix: a worker holds
  O(block + factors), never O(matrix). The bound is on the growth: a warmed-up worker's own size
  (python, dask, numba's compiled kernels) depends on the machine and on whether numba's cache
  was warm, so its ``memory_limit`` (``WORKER_BASELINE + budget``) is an allowance, and the test
  session turns distributed's own pausing and restarting off (tests/conftest.py);
* no worker was restarted.

CI runs a small size (10 M non-zeros, 80 MB decoded, a budget of a third of that: a worker
holding its half of the blocks would need half).
``DASK_FACTOR_SCALE=full`` runs 216 M non-zeros (1.7 GB decoded) with a ``memory_limit`` of
about 730 MB a worker (``WORKER_BASELINE`` plus a growth budget of an eighth of the matrix).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

import cloudpickle  # noqa: E402
from distributed import Client, LocalCluster, WorkerPlugin  # noqa: E402
from helpers import WORKER_BASELINE, assert_factors_close  # noqa: E402

from dask_factor import nmf  # noqa: E402
from dask_factor.datasets import simulate_counts  # noqa: E402
from dask_factor.io import matrix_info, open_matrix, write_matrix  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

FULL = os.environ.get("DASK_FACTOR_SCALE", "").lower() == "full"
#: samples, features, density, columns per block, (memory limit = WORKER_BASELINE + budget)
SIZE = (600_000, 6_000, 0.06, 2_048) if FULL else (100_000, 2_000, 0.05, 2_048)
K, SEED, MAXIT = 6, 11, 3

# the plugin and helpers run inside the workers: ship this module by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class PeakRSS(WorkerPlugin):
    """Samples the worker's resident set size in a thread and keeps the maximum."""

    name = "peak-rss"

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0

    def setup(self, worker):
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def teardown(self, worker):
        self._stop.set()


def _reset_peak(dask_worker):
    plugin = dask_worker.plugins["peak-rss"]
    plugin.peak = psutil.Process().memory_info().rss
    return plugin.peak


def _peak(dask_worker):
    return dask_worker.plugins["peak-rss"].peak


def _pid():
    return os.getpid()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    n, m, density, block_cols = SIZE
    d = tmp_path_factory.mktemp("ooc")
    simulate_counts(n, m, 8, density=density, seed=3, path=d / "A.zarr", block_cols=block_cols)
    # same uniform blocking in the .spz: chunk width == zarr block width
    write_matrix(d / "A.zarr", d / "A.spz", chunk_cols=block_cols, include_transpose=False)
    write_matrix(d / "A.zarr", d / "A.scan.zarr", layout="scan")  # same stored blocks
    info = matrix_info(d / "A.zarr")
    decoded = info["nnz"] * (4 + 4) + (n + 1) * 8  # float32 data, int32 indices, indptr
    return d, info["nnz"], decoded


@pytest.fixture(scope="module")
def reference(matrix):
    """The in-memory fit (threaded scheduler, same seed and blocks)."""
    d, _, _ = matrix
    A = open_matrix(d / "A.zarr").compute()
    return nmf(A, K, seed=SEED, maxit=MAXIT, tol=0, chunks=SIZE[3])


@pytest.fixture(scope="module")
def cluster(matrix):
    _, _, decoded = matrix
    budget = decoded // 8 if FULL else decoded // 3
    limit = WORKER_BASELINE + budget
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
                      dashboard_address=None) as lc, Client(lc) as client:
        client.register_plugin(PeakRSS())
        # warm up both workers: numba kernels, and the zarr / .spz readers' imports and caches
        warm = open_matrix(simulate_counts(2_000, 300, 3, seed=1).compute(), block_nnz=5_000)
        nmf(warm, K, seed=1, maxit=2, client=client)  # the kernels are compiled per rank
        d = matrix[0]
        for fmt in ("zarr", "spz", "scan.zarr"):
            A = open_matrix(d / f"A.{fmt}")
            client.gather(client.compute([A.blocks[0, b] for b in range(4)]))
        yield client, limit, budget


@pytest.mark.parametrize("fmt", ["zarr", "spz", "scan.zarr"])
def test_out_of_core_fit_equals_in_memory_fit_in_bounded_memory(matrix, reference, cluster, fmt):
    d, nnz, decoded = matrix
    client, limit, budget = cluster
    assert limit < decoded or not FULL  # full size: workers cannot hold the matrix
    pids = client.run(_pid)
    # .spz: one chunk a block (by default runs of chunks are grouped), as the reference's blocks
    A = open_matrix(d / f"A.{fmt}", **({"block_nnz": 1} if fmt == "spz" else {}))
    assert A.numblocks[1] >= 8 and A.chunks[1][0] == SIZE[3]
    baseline = client.run(_reset_peak)
    t0 = time.perf_counter()
    model = nmf(A, K, seed=SEED, maxit=MAXIT, tol=0, client=client)
    elapsed = time.perf_counter() - t0
    peaks = client.run(_peak)
    growth = {w: peaks[w] - baseline[w] for w in peaks}
    print(f"\n{fmt}: nnz {nnz:,}, decoded {decoded / 2**20:.0f} MiB, limit "
          f"{limit / 2**20:.0f} MiB, fit {elapsed:.1f} s; peak RSS MiB "
          f"{ {w[-5:]: round(p / 2**20) for w, p in peaks.items()} }, growth MiB "
          f"{ {w[-5:]: round(g / 2**20) for w, g in growth.items()} }")
    assert client.run(_pid) == pids, "a worker was restarted"
    assert max(growth.values()) < budget, (growth, budget)
    assert model.iterations == MAXIT
    assert_factors_close(model, reference, rtol=1e-5, match=False)
    np.testing.assert_allclose(model.loss_history, reference.loss_history, rtol=1e-6)
