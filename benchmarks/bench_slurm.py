"""The same NMF fit on 2 SLURM worker jobs and on a 2-worker LocalCluster: equal factors, times.

Run from the repository root, as root with Debian's slurm-wlm and munge installed::

    .venv/bin/python benchmarks/bench_slurm.py [--dataset pbmc3k] [--k 10] [--maxit 30]

Starts a single-node SLURM on loopback (``deploy/slurm/local_slurm.py``), submits 2 worker jobs
of 1 core through :func:`dask_factor.cluster.slurm` with the recipe's ``jobqueue.yaml``, and fits;
then the same fit (same seed, chunking, maxit) on :func:`dask_factor.cluster.local` with 2
single-threaded worker processes, in the same run. Prints the time to get the workers, the fit
times, their ratio, and whether the factors are identical. Only same-run ratios mean anything on
these noisy machines; ``--repeat`` takes the best of several fits on each cluster.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

from dask_factor import cluster, datasets, nmf

ROOT = Path(__file__).resolve().parents[1]


def _local_slurm():
    spec = importlib.util.spec_from_file_location(
        "local_slurm", ROOT / "deploy" / "slurm" / "local_slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fits(client, A, opts, repeat):
    best, model, factors = float("inf"), None, None
    for _ in range(repeat):
        t = time.perf_counter()
        model = nmf(A, **opts, client=client)
        factors = (model.W, model.d, model.H)  # gathered while the client is open
        best = min(best, time.perf_counter() - t)
    return best, model, factors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="pbmc3k")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--maxit", type=int, default=30)
    p.add_argument("--chunks", type=int, default=None, help="columns per block")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)

    A = datasets.load(args.dataset).matrix
    opts = dict(k=args.k, seed=1, maxit=args.maxit, tol=0.0, chunks=args.chunks)
    ls = _local_slurm()
    with ls.LocalSlurm(cpus=max(os.cpu_count() or 1, 2)) as slurm:
        os.environ.update(slurm.env)
        t = time.perf_counter()
        with cluster.slurm(jobs=2, config=ROOT / "deploy" / "slurm" / "jobqueue.yaml", cores=1,
                           memory="2GiB", walltime="01:00:00", interface="lo",
                           scheduler_options={"dashboard_address": ":0"}) as client:
            up = time.perf_counter() - t
            t_slurm, m_slurm, f_slurm = _fits(client, A, opts, args.repeat)
        print(f"SLURM started in {slurm.start_seconds:.1f} s; 2 worker jobs connected in "
              f"{up:.1f} s")
    with cluster.local(n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        t_local, m_local, f_local = _fits(client, A, opts, args.repeat)

    same = all(np.array_equal(a, b) for a, b in zip(f_slurm, f_local))
    shape = "x".join(map(str, A.shape))
    print(f"{args.dataset} ({shape}), k={args.k}, {m_local.iterations} iterations, "
          f"best of {args.repeat}")
    print(f"  SLURM, 2 jobs x 1 core:      {t_slurm:7.2f} s")
    print(f"  LocalCluster, 2 processes:   {t_local:7.2f} s")
    print(f"  ratio SLURM / LocalCluster:  {t_slurm / t_local:7.2f}")
    print(f"  identical factors:           {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
