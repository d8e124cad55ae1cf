"""NMF speed per iteration, against the SpMM floor, RcppML 1.0 and scikit-learn, in one run.

    python benchmarks/bench_nmf.py [--threads 1 2] [--quick] [--no-sklearn] [--cluster]
                                   [--cluster-cells 200000]

For every thread count and case (pbmc3k k = 10 and k = 30, 50 iterations; a synthetic
20,000 × 50,000 matrix at 2 % density, k = 20, 10 iterations; all tol = 0, seed 1) it prints:

* ``ours ms/it`` — dask_factor's median wall time per iteration (dask's threaded scheduler with
  that many threads, BLAS limited to the same count);
* ``/floor`` — that time divided by the *SpMM floor*: scipy's single-threaded ``Aᵀ @ W`` plus
  ``A @ Hᵀ`` on the same data, divided by the thread count (the two products every ALS
  iteration needs, perfectly parallelised);
* ``RcppML ms/it`` and ``/RcppML`` — RcppML 1.0's ``nmf(A, k, maxit, tol = 0, seed = 1,
  threads)`` timed in the same run, when ``Rscript`` with RcppML is installed (the issue's target
  is ≤ 0.8); both final MSEs are printed so that the work per iteration can be compared;
* the 1 → 2 thread speed-up of the synthetic case.

scikit-learn (``--no-sklearn`` to skip): the time dask_factor needs to reach a target MSE (RcppML's
50-iteration MSE on pbmc3k, measured in this run when RcppML is here, else the figures quoted in
``RCPPML``) against ``NMF(solver="cd")`` run in 1-iteration steps from its own random init
(capped; a capped run prints a lower bound ``>``).

``--cluster``: a 2-process ``LocalCluster`` (one thread each) against 2 threads in one process,
per iteration, on pbmc3k and on a simulated matrix of ``--cluster-cells`` cells × 2,000 genes
held in memory (targets ≤ 1.2 and ≤ 1.05); the factors must be identical. Beside each, the
cluster's *scheduling floor*: no-op tasks shaped like one step (a task per block, one picking
each block's H, the reduction, the statistics the client waits for), timed on the same cluster,
as a multiple of the threaded iteration.

RcppML as a peer: build RcppML 1.0 from its public repository (zdebruine/RcppML) with R's
toolchain (``R CMD INSTALL`` of a clone, C++17); the benchmark then finds it through ``Rscript``.
The machines are noisy: only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RCPPML = {  # k: (RcppML 1.0 MSE after 50 iterations on pbmc3k, s for 50 iterations at 2 threads)
    10: (0.43481, 0.812),
    30: (0.35519, 1.516),
}


def spmm_floor(A: sp.csc_matrix, k: int, threads: int, reps: int = 5) -> float:
    """Median seconds of scipy's single-threaded AᵀW + AHᵀ, divided by ``threads``."""
    rng = np.random.default_rng(0)
    W = rng.random((A.shape[0], k), dtype=np.float32)
    Ht = rng.random((A.shape[1], k), dtype=np.float32)
    At = A.T  # CSR view, what scipy uses for Aᵀ @ W
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        At @ W
        A @ Ht
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / threads


sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/peers.py


def ours(A, k: int, maxit: int, target: float | None, seed: int = 1, **kw):
    """(median s/iteration, seconds to reach target or None, final MSE, iterations)."""
    from dask_factor import nmf

    stamps: list[tuple[float, float]] = []
    t0 = [0.0]

    def cb(it, mse, rel):
        stamps.append((time.perf_counter() - t0[0], mse))

    nmf(A, k, seed=seed, maxit=2, tol=0)  # compile / warm caches
    t0[0] = time.perf_counter()
    model = nmf(A, k, seed=seed, maxit=maxit, on_iteration=cb, **kw)
    ts = np.array([s[0] for s in stamps])
    per_iter = float(np.median(np.diff(np.concatenate([[0.0], ts]))))
    hit = next((s[0] for s in stamps if target is not None and s[1] <= target), None)
    return per_iter, hit, model.mse, model.iterations


def sklearn_time_to(A, k: int, target: float, cap_s: float, seed: int = 1):
    """Seconds scikit-learn's CD NMF needs to reach ``target`` MSE (or (cap, False))."""
    from sklearn.decomposition import non_negative_factorization

    X = sp.csr_matrix(A.T, dtype=np.float64)  # samples × features, sklearn's orientation
    n_entries = X.shape[0] * X.shape[1]
    sq = float(X.multiply(X).sum())
    W, H, _ = non_negative_factorization(X, n_components=k, init="random", random_state=seed,
                                         solver="cd", max_iter=1, tol=0)
    elapsed = 0.0
    iters = 1
    while True:
        # loss by the trace identity, outside the clock
        cross = float((X @ H.T).ravel() @ W.ravel())
        quad = float(((W.T @ W) * (H @ H.T)).sum())
        mse = (sq - 2 * cross + quad) / n_entries
        if mse <= target:
            return elapsed, True, iters, mse
        if elapsed > cap_s:
            return elapsed, False, iters, mse
        t0 = time.perf_counter()
        W, H, _ = non_negative_factorization(X, W=W, H=H, n_components=k, init="custom",
                                             solver="cd", max_iter=1, tol=0)
        elapsed += time.perf_counter() - t0
        iters += 1


def synthetic(m=20_000, n=50_000, density=0.02, seed=0) -> sp.csc_matrix:
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=density, format="csc", random_state=rng, dtype=np.float32)
    A.data[:] = rng.poisson(1.0, A.nnz) + 1  # Poisson-like small integers
    return A


def rcppml_case(A, k: int, maxit: int, threads: int, reps: int = 3):
    """(RcppML seconds per iteration, its final MSE), or None when RcppML is not installed."""
    from peers import dump_csc, rcppml_available, rcppml_nmf

    if not rcppml_available():
        return None
    with tempfile.TemporaryDirectory() as d:
        dump_csc(A, Path(d))
        return rcppml_nmf(Path(d), k, maxit, threads, reps)


def _noop(*args):
    return 0


def scheduling_floor(client, n_blocks: int, iters: int = 30) -> float:
    """Median seconds per iteration of no-op tasks shaped like one ALS step on ``client``.

    Per iteration: ``n_blocks`` block tasks (each on a scattered block and the last step's
    package), one task per block picking its H out, the reduction that updates the package, and
    the statistics task whose result the client waits for (no look-ahead). What the scheduler,
    the workers' event loops and the client cost for a step with no arithmetic in it.
    """
    blocks = client.scatter([np.zeros(1) for _ in range(n_blocks)])
    pack = client.submit(_noop, pure=False)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        solves = [client.submit(_noop, b, pack, pure=False) for b in blocks]
        picks = [client.submit(_noop, x, pure=False) for x in solves]  # noqa: F841 (held)
        pack = client.submit(_noop, *solves, pure=False)
        client.submit(_noop, pack, pure=False).result()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[5:]))


def cluster_ratio(A, k: int, maxit: int) -> tuple[float, float, bool, float, int]:
    """(2 threads s/it, 2-process LocalCluster s/it, identical factors, the cluster's
    scheduling floor s/it, column blocks) for one matrix."""
    import dask
    from distributed import Client, LocalCluster

    from dask_factor import nmf
    from dask_factor.engine.blocks import default_bounds

    with dask.config.set(scheduler="threads", num_workers=2):
        t_thr, _, _, _ = ours(A, k, maxit, None, tol=0)
        ref = nmf(A, k, seed=1, maxit=3, tol=0)
    n_blocks = len(default_bounds(A)) - 1
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, Client(lc) as client:
        t_cl, _, _, _ = ours(A, k, maxit, None, tol=0, client=client)
        same = np.array_equal(nmf(A, k, seed=1, maxit=3, tol=0, client=client).W, ref.W)
        floor = scheduling_floor(client, n_blocks)
    return t_thr, t_cl, same, floor, n_blocks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true",
                   help="k=10 only, a 20,000 × 10,000 synthetic matrix, 10 iterations")
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--no-rcppml", action="store_true")
    p.add_argument("--sklearn-cap", type=float, default=20.0, help="seconds")
    p.add_argument("--cluster", action="store_true", help="also LocalCluster against threads")
    p.add_argument("--cluster-cells", type=int, default=200_000)
    a = p.parse_args(argv)
    import dask
    from threadpoolctl import threadpool_limits

    from dask_factor import datasets

    A = sp.csc_matrix(datasets.load("pbmc3k").matrix, dtype=np.float32)
    its = 10 if a.quick else 50
    dims = (20_000, 10_000) if a.quick else (20_000, 50_000)
    cases = [(f"pbmc3k k={k}", A, k, its) for k in ([10] if a.quick else [10, 30])]
    cases.append((f"synthetic {dims[0]}×{dims[1]} k=20", synthetic(*dims), 20, 10))
    print(f"pbmc3k {A.shape[0]} × {A.shape[1]}, nnz {A.nnz:,}; tol = 0, seed 1")
    print(f"{'case':<30}{'threads':>8}{'floor ms':>9}{'ours ms/it':>11}{'/floor':>8}"
          f"{'RcppML ms/it':>13}{'/RcppML':>8}{'MSE ours':>11}{'MSE RcppML':>11}")
    per_iter: dict[tuple[str, int], float] = {}
    rcpp_mse: dict[int, float] = {}
    for threads in a.threads:
        with threadpool_limits(threads), dask.config.set(scheduler="threads",
                                                           num_workers=threads):
            for name, M, k, maxit in cases:
                floor = spmm_floor(M, k, threads, reps=3)
                t, _, mse, _ = ours(M, k, maxit, None, tol=0)
                per_iter[name, threads] = t
                peer = None if a.no_rcppml else rcppml_case(M, k, maxit, threads)
                if peer is not None and name.startswith("pbmc3k") and maxit == 50:
                    rcpp_mse[k] = peer[1]
                rc = (f"{peer[0] * 1e3:>13.1f}{t / peer[0]:>8.2f}" if peer
                      else f"{'-':>13}{'-':>8}")
                print(f"{name:<30}{threads:>8}{floor * 1e3:>9.1f}{t * 1e3:>11.1f}"
                      f"{t / floor:>8.2f}{rc}{mse:>11.5f}"
                      f"{(f'{peer[1]:.5f}' if peer else '-'):>11}")
    syn = cases[-1][0]
    if (syn, 1) in per_iter and (syn, 2) in per_iter:
        print(f"{syn}: 2 threads are {per_iter[syn, 1] / per_iter[syn, 2]:.2f}× faster than 1 "
              f"(target ≥ 1.7)")
    if not a.no_sklearn:
        threads = max(a.threads)
        print(f"\ntime to RcppML's 50-iteration MSE, {threads} thread(s):")
        print(f"{'case':<30}{'target':>9}{'ours s':>9}{'sklearn s':>11}{'ours/sklearn':>13}")
        with threadpool_limits(threads), dask.config.set(scheduler="threads",
                                                           num_workers=threads):
            for name, M, k, _ in cases[:-1]:
                target = rcpp_mse.get(k, RCPPML[k][0])
                _, hit, _, _ = ours(M, k, 50, target, tol=0)
                sk_s, ok, _, _ = sklearn_time_to(M, k, target, a.sklearn_cap)
                hit_txt = f"{hit:.3f}" if hit is not None else "never"
                ratio = (f"{hit / sk_s:.2f}" if ok else f"<{hit / sk_s:.2f}") if hit else "-"
                print(f"{name:<30}{target:>9.5f}{hit_txt:>9}"
                      f"{(f'{sk_s:.3f}' if ok else f'>{sk_s:.2f}'):>11}{ratio:>13}")
    if a.cluster:
        from dask_factor.datasets import simulate_counts

        S = simulate_counts(n_samples=a.cluster_cells, n_features=2_000, k=10, seed=1)
        S = sp.csc_matrix(S.compute(), dtype=np.float32)
        print("\n2-process LocalCluster against 2 threads (per iteration, k = 10):")
        for name, M, maxit in (("pbmc3k", A, 30), (f"simulated {a.cluster_cells:,} cells", S, 10)):
            t_thr, t_cl, same, floor, nb = cluster_ratio(M, 10, maxit)
            print(f"{name:<30} threads {t_thr * 1e3:8.1f} ms/it  LocalCluster {t_cl * 1e3:8.1f} "
                  f"ms/it  ratio {t_cl / t_thr:.2f}  identical factors: {same}")
            print(f"{'':<30} scheduling floor (no-op tasks of one step, {nb} blocks): "
                  f"{floor * 1e3:.1f} ms/it = {floor / t_thr:.2f} × threaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
