"""Replicate fits of consensus NMF side by side against one after another, on a 2-process cluster.

A count matrix of ``--samples`` cells × ``--features`` genes with ``--k`` planted programs is
simulated to zarr and fitted from disk (``cache="none"``: every iteration re-reads its blocks) on
a ``LocalCluster`` of 2 single-threaded worker processes. In the same run:

* ``sequential`` — ``--reps`` fits ``nmf(path, k, seed=s, client=client)``, one after another;
* ``concurrent`` — the same fits as :func:`dask_factor.consensus_programs` submits them (all at
  once, :func:`dask_factor.consensus.run_fits`), so one fit's tasks fill the gaps of another's
  (the client-side W update, the round trips of each iteration);
* ``consensus_programs`` — the whole recipe (concurrent fits, clustering, the pass solving H).

Printed: seconds of each, the ratio sequential / concurrent (the speed-up), and whether the
concurrent fits equal the sequential ones bit for bit (they must: same seeds, same chunking).
Timings on a shared machine are noisy; only the same-run ratio means anything. Usage::

    python benchmarks/bench_consensus.py                      # 20,000 × 1,000, k=6, 6 reps
    python benchmarks/bench_consensus.py --samples 5000 --reps 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

from dask_factor import consensus_programs, nmf
from dask_factor.consensus import replicate_seeds, run_fits
from dask_factor.datasets import simulate_counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=1_000)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--maxit", type=int, default=20)
    ap.add_argument("--density", type=float, default=0.1)
    args = ap.parse_args(argv)

    fit_kw = dict(maxit=args.maxit, tol=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "A.zarr"
        simulate_counts(args.samples, args.features, k=args.k, seed=7, density=args.density,
                        path=path, block_cols=2048)
        print(f"A: {args.features} × {args.samples}, density {args.density}, k={args.k}, "
              f"reps={args.reps}, maxit={args.maxit} (tol=0), from zarr")
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            seeds = replicate_seeds(0, args.reps)
            nmf(path, args.k, seed=123, maxit=2, client=client)  # warm-up: numba, imports

            t0 = time.perf_counter()
            seq = {(args.k, s): nmf(path, args.k, seed=s, client=client, **fit_kw)
                   for s in seeds}
            t_seq = time.perf_counter() - t0

            t0 = time.perf_counter()
            par = run_fits(path, [(args.k, s) for s in seeds], client, fit_kw)
            t_par = time.perf_counter() - t0

            t0 = time.perf_counter()
            res = consensus_programs(path, args.k, reps=args.reps, seed=0, client=client,
                                     **fit_kw)
            t_all = time.perf_counter() - t0

        same = all(np.array_equal(seq[j].W, par[j].W) and np.array_equal(seq[j].d, par[j].d)
                   for j in seq)
        print(f"sequential fits       {t_seq:8.2f} s")
        print(f"concurrent fits       {t_par:8.2f} s")
        print(f"speed-up (same run)   {t_seq / t_par:8.2f} x")
        print(f"consensus_programs    {t_all:8.2f} s  (fits + clustering + H pass; "
              f"stability {res.stability:.3f})")
        print(f"concurrent == sequential, bit for bit: {same}")


if __name__ == "__main__":
    main()
