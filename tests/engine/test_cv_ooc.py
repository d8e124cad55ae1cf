"""A masked (cross-validated) fit runs out of core within the unmasked fit's memory bound.

A count matrix is simulated straight to zarr and fitted from disk (``cache="none"``) on a
2-process LocalCluster whose workers are limited to a warmed-up baseline plus a third of the
decoded matrix (a worker holding its half of the blocks would need half). Both the unmasked fit
and the masked one (``test_fraction=0.1, mask_zeros=True``) must grow a warmed-up worker by less
than that third, and the masked fit must equal the in-memory masked fit.
``benchmarks/bench_cv.py`` runs the 200,000-sample version and reports the time relative to the
unmasked fit.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

import cloudpickle  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from helpers import WORKER_BASELINE  # noqa: E402

from dask_factor import nmf  # noqa: E402
from dask_factor.datasets import simulate_counts  # noqa: E402
from dask_factor.io import matrix_info, open_matrix  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

FULL = os.environ.get("DASK_FACTOR_SCALE", "").lower() == "full"
SIZE = (200_000, 2_000, 0.05, 4_096) if FULL else (60_000, 2_000, 0.05, 2_048)
K, MAXIT = 6, 3

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _rss(dask_worker):
    return psutil.Process().memory_info().rss


class _Peak:
    """Samples every worker's RSS from the client while a fit runs."""

    def __init__(self, client):
        import threading

        self.client, self.peak, self._stop = client, {}, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            for w, r in self.client.run(_rss).items():
                self.peak[w] = max(self.peak.get(w, 0), r)

    def __enter__(self):
        self.base = self.client.run(_rss)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def growth(self):
        return max(self.peak.get(w, b) - b for w, b in self.base.items())


def test_masked_fit_out_of_core_in_the_unmasked_memory_bound(tmp_path):
    n, m, density, block_cols = SIZE
    path = tmp_path / "A.zarr"
    simulate_counts(n, m, 8, density=density, seed=3, path=path, block_cols=block_cols)
    nnz = matrix_info(path)["nnz"]
    decoded = nnz * 8 + (n + 1) * 8
    budget = decoded // 3
    limit = WORKER_BASELINE + budget
    cv = dict(test_fraction=0.1, mask_zeros=True, cv_seed=5, patience=100)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
                      dashboard_address=None, host="127.0.0.1") as lc, Client(lc) as client:
        # warm up both workers with one iteration of each fit on this store: numba kernels,
        # the readers' imports and their per-process chunk pools, which are bounded by a
        # constant (zarr_chunks.KEEP_BYTES), not by the matrix, but at this small size hold
        # more than a third of it (the first fit from disk grew a worker by 23-42 MiB, once)
        for kw in ({}, cv):
            nmf(open_matrix(path), K, seed=1, maxit=1, tol=0, cache="none", client=client, **kw)
        pids = client.run(os.getpid)
        fits, growth = {}, {}
        for name, kw in (("unmasked", {}), ("masked", cv)):
            with _Peak(client) as p:
                fits[name] = nmf(open_matrix(path), K, seed=1, maxit=MAXIT, tol=0, cache="none",
                                 client=client, **kw)
            growth[name] = p.growth
        assert client.run(os.getpid) == pids, "a worker was restarted"
        print(f"\nnnz {nnz:,} ({decoded / 2**20:.0f} MiB decoded), budget "
              f"{budget / 2**20:.0f} MiB; peak growth MiB "
              f"{ {k: round(v / 2**20) for k, v in growth.items()} }")
        # both within a third of the matrix: a worker holding its half of the blocks would not be
        assert growth["unmasked"] < budget, growth
        assert growth["masked"] < budget, growth
        masked = fits["masked"]
        H = np.asarray(masked.H)
    assert abs(masked.settings["n_test"] / nnz - 0.1) < 0.005
    ref = nmf(open_matrix(path).compute(), K, seed=1, maxit=MAXIT, tol=0, chunks=block_cols, **cv)
    np.testing.assert_allclose(masked.W, ref.W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(H, ref.H, rtol=1e-4, atol=1e-6)
    assert masked.test_loss_history == pytest.approx(ref.test_loss_history, rel=1e-6)
