"""Cost of a cross-validated (masked) NMF fit relative to the unmasked fit, out of core.

A count matrix of ``--samples`` cells (default 200,000) × ``--features`` genes is simulated
straight to zarr, block by block, then fitted from disk (``cache="none"``: every iteration re-reads
the blocks) on a LocalCluster of worker processes whose memory limit is a warmed-up baseline plus
a third of the decoded matrix, so no worker can hold its half of the matrix. Three fits with the
same seed, ``tol=0`` and ``--maxit`` iterations:

* ``unmasked``      — ``nmf(A, k)``;
* ``cv mask_zeros`` — ``test_fraction=0.1, mask_zeros=True``: only stored entries are hashed
  (O(nnz) per iteration), the scalable path;
* ``cv all``        — ``test_fraction=0.1``: zeros can be held out, so every (row, column) of a
  block is hashed (O(m·n) per iteration).

Reported per fit: seconds per iteration (after the first), its ratio to the unmasked fit, and
each worker's peak RSS growth over its warmed-up baseline (sampled every 5 ms), against the
budget. Usage::

    python benchmarks/bench_cv.py                 # 200,000 samples × 2,000 features, 5 % dense
    python benchmarks/bench_cv.py --samples 50000 # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cloudpickle
import psutil
from distributed import Client, LocalCluster, WorkerPlugin

from dask_factor import nmf
from dask_factor.datasets import simulate_counts
from dask_factor.io import matrix_info, open_matrix

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BASELINE = 350 * 2**20


class PeakRSS(WorkerPlugin):
    name = "peak-rss"

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0

    def setup(self, worker):
        self._proc = psutil.Process()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def teardown(self, worker):
        self._stop.set()


def _reset(dask_worker):
    p = dask_worker.plugins["peak-rss"]
    p.peak = psutil.Process().memory_info().rss
    return p.peak


def _peak(dask_worker):
    return dask_worker.plugins["peak-rss"].peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=2_000)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--maxit", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-cols", type=int, default=4_096)
    ap.add_argument("--dir", default=None, help="where to write the zarr (default: a temp dir)")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    root = Path(args.dir or tmp.name)
    path = root / f"cv_{args.samples}x{args.features}.zarr"
    t0 = time.perf_counter()
    if not path.exists():
        simulate_counts(args.samples, args.features, 8, density=args.density, seed=3,
                        path=path, block_cols=args.block_cols)
    info = matrix_info(path)
    decoded = info["nnz"] * 8 + (args.samples + 1) * 8
    budget = decoded // 3
    limit = BASELINE + budget
    print(f"matrix {args.features:,} × {args.samples:,}, nnz {info['nnz']:,} "
          f"({decoded / 2**20:.0f} MiB decoded; written in {time.perf_counter() - t0:.1f} s); "
          f"{args.workers} workers, limit {limit / 2**20:.0f} MiB each "
          f"(budget {budget / 2**20:.0f} MiB over baseline)")
    variants = [("unmasked", {}),
                ("cv mask_zeros", dict(test_fraction=0.1, mask_zeros=True, patience=100)),
                ("cv all", dict(test_fraction=0.1, patience=100))]
    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=limit, dashboard_address=None) as lc, Client(lc) as client:
        client.register_plugin(PeakRSS())
        warm = simulate_counts(2_000, 300, 3, seed=1).compute()
        for _, kw in variants:
            nmf(warm, 3, seed=1, maxit=2, client=client, **kw)
        for name, kw in variants:
            A = open_matrix(path)
            base = client.run(_reset)
            stamps = []

            def cb(it, loss, rel, stamps=stamps):
                stamps.append(time.perf_counter())

            t = time.perf_counter()
            res = nmf(A, args.k, seed=1, maxit=args.maxit, tol=0, client=client,
                      cache="none", on_iteration=cb, **kw)
            total = time.perf_counter() - t
            peaks = client.run(_peak)
            growth = max(peaks[w] - base[w] for w in peaks)
            per_it = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
            extra = (f"test {res.test_loss:.4f} train {res.train_loss:.4f}"
                     if kw else f"mse {res.mse:.4f}")
            rows.append((name, per_it, total, growth, max(peaks.values()), extra))
    unmasked = rows[0][1]
    print(f"\n{'fit':<15} {'s/iter':>8} {'× unmasked':>11} {'total s':>8} "
          f"{'peak growth MiB':>16} {'peak RSS MiB':>13}  loss")
    for name, per_it, total, growth, peak, extra in rows:
        print(f"{name:<15} {per_it:8.2f} {per_it / unmasked:11.2f} {total:8.1f} "
              f"{growth / 2**20:16.0f} {peak / 2**20:13.0f}  {extra}")
    print(f"budget {budget / 2**20:.0f} MiB over baseline, limit {limit / 2**20:.0f} MiB; "
          f"every peak below the limit: {all(r[4] < limit for r in rows)}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
