"""Out-of-core NMF speed: per-iteration time streaming from zarr / .spz vs the in-memory matrix.

    python benchmarks/bench_stream_nmf.py [--samples 200000] [--features 2000] [--k 10]

The matrix is simulated once (negative-binomial counts, ~6 % dense) and written to zarr (the
default csc layout and the scan layout, ``layout="scan"``) and .spz;
each source is then fitted with ``nmf(..., cache="none", tol=0)`` on dask's threaded scheduler, so
the streamed fits decode every block in every iteration. Prints the median seconds per iteration
(after the first, which compiles/warms caches) and the ratio in-memory / streamed (the issue's
target: ≥ 0.6).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def per_iteration(source, k: int, maxit: int) -> float:
    from dask_factor import nmf

    stamps: list[float] = []
    t0 = time.perf_counter()
    nmf(source, k, seed=1, maxit=maxit, tol=0, cache="none",
        on_iteration=lambda it, mse, rel: stamps.append(time.perf_counter() - t0))
    return float(np.median(np.diff(stamps)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--features", type=int, default=2_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--maxit", type=int, default=6)
    a = p.parse_args(argv)
    from dask_factor.datasets import simulate_counts
    from dask_factor.io import matrix_info, open_matrix, write_matrix

    with tempfile.TemporaryDirectory() as tmp:
        zarr_path = Path(tmp) / "A.zarr"
        t = time.perf_counter()
        simulate_counts(a.samples, a.features, a.k, seed=7, path=zarr_path)
        write_matrix(str(zarr_path), str(Path(tmp) / "A.spz"))
        write_matrix(str(zarr_path), str(Path(tmp) / "A.scan.zarr"), layout="scan")
        info = matrix_info(str(zarr_path))
        print(f"{a.features} × {a.samples}, nnz {info['nnz']:,} "
              f"(simulated and written in {time.perf_counter() - t:.1f} s)")
        A = open_matrix(str(zarr_path)).compute()  # the same blocks, held in memory
        rows = [("memory", A), ("zarr", str(zarr_path)),
                ("scan", str(Path(tmp) / "A.scan.zarr")), (".spz", str(Path(tmp) / "A.spz"))]
        base = None
        print(f"{'source':<8}{'s/iteration':>13}{'memory/this':>13}")
        for name, src in rows:
            s = per_iteration(src, a.k, a.maxit)
            base = base or s
            print(f"{name:<8}{s:>13.3f}{base / s:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
