"""NMF speed: dask_factor against the SpMM floor and scikit-learn, measured in the same run.

    python benchmarks/bench_nmf.py [--threads 2] [--quick]

For each case it prints absolute times and the ratios the project tracks:

* ``iter/floor`` — dask_factor's median time per iteration (tol = 0) divided by the *SpMM floor*:
  scipy's single-threaded ``Aᵀ @ W`` plus ``A @ Hᵀ`` on the same data, divided by the thread
  count (the two products every ALS iteration needs, perfectly parallelised).
* ``ttq/sklearn`` — time for dask_factor to reach a target MSE divided by the time scikit-learn's
  ``NMF(solver="cd")`` needs for the same MSE (same data, same thread count; scikit-learn is run in
  1-iteration steps from its own random init with the clock stopped while we check its loss, and
  capped: a capped run prints a lower bound ``>``).

The target MSE is RcppML 1.0's 50-iteration MSE on pbmc3k (measured with RcppML on this kind of
machine, ``shared/data/README.md``: k = 10 → 0.43481, k = 30 → 0.35519; RcppML needed 0.81 s and
1.52 s at 2 threads). The synthetic case (20,000 × 50,000, 2 % density, seeded) reports the
per-iteration ratio only. RcppML itself is not run here (R is not available); its figures are
quoted.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp

RCPPML = {  # k: (target MSE after 50 iterations, RcppML seconds for 50 iterations at 2 threads)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smaller synthetic matrix, k=10 only")
    p.add_argument("--sklearn-cap", type=float, default=20.0, help="seconds")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import dask
    from threadpoolctl import threadpool_limits

    from dask_factor import datasets

    dask.config.set(scheduler="threads", num_workers=a.threads)
    A = sp.csc_matrix(datasets.load("pbmc3k").matrix, dtype=np.float32)
    print(f"threads = {a.threads}; pbmc3k {A.shape[0]} × {A.shape[1]}, nnz {A.nnz:,}")
    hdr = (f"{'case':<26}{'floor ms':>9}{'ours ms/it':>11}{'iter/floor':>11}{'ours ttq s':>11}"
           f"{'sklearn s':>11}{'ttq/sklearn':>12}{'RcppML s':>9}{'ttq/RcppML':>11}")
    print(hdr)
    ks = [10] if a.quick else [10, 30]
    with threadpool_limits(a.threads):
        for k in ks:
            target, rcpp_s = RCPPML[k]
            floor = spmm_floor(A, k, a.threads)
            per_iter, hit, mse, its = ours(A, k, 50, target, tol=0)
            sk_s, ok, sk_it, _ = sklearn_time_to(A, k, target, a.sklearn_cap)
            sk_txt = f"{sk_s:.3f}" if ok else f">{sk_s:.2f}"
            hit_txt = f"{hit:.3f}" if hit is not None else "never"
            ratio = (f"{hit / sk_s:.2f}" if ok else f"<{hit / sk_s:.2f}") if hit else "-"
            print(f"{f'pbmc3k k={k} (→{target})':<26}{floor * 1e3:>9.1f}{per_iter * 1e3:>11.1f}"
                  f"{per_iter / floor:>11.2f}{hit_txt:>11}{sk_txt:>11}{ratio:>12}{rcpp_s:>9.3f}"
                  f"{(hit / rcpp_s if hit else float('nan')):>11.2f}")
            print(f"{'':<26}final MSE at 50 its: ours {mse:.5f}; sklearn needed {sk_it} its")
        dims = (20_000, 10_000) if a.quick else (20_000, 50_000)
        S = synthetic(*dims)
        k = 20
        floor = spmm_floor(S, k, a.threads, reps=3)
        per_iter, _, mse, _ = ours(S, k, 10, None, tol=0)
        print(f"{f'synthetic {dims[0]}×{dims[1]} k={k}':<26}{floor * 1e3:>9.1f}"
              f"{per_iter * 1e3:>11.1f}{per_iter / floor:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
