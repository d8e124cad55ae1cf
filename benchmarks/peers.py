"""Same-run peers of the benchmarks: RcppML 1.0 through ``Rscript`` when it is installed.

RcppML is not a dependency: a benchmark asks :func:`rcppml_available` and prints RcppML's
columns only when R with RcppML is on the machine (``benchmarks/README.md`` says how to build it).
Matrices go to R as raw CSC vectors (:func:`dump_csc`), read back by the ``.R`` scripts here.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent


def dump_csc(A, d: Path) -> None:
    """Write ``A`` as the raw CSC vectors the R scripts read (``dims.bin`` int32 [m, n, nnz],
    ``p.bin``/``i.bin`` int32, ``x.bin`` float64)."""
    A = sp.csc_matrix(A, dtype=np.float64)
    A.sort_indices()
    d = Path(d)
    np.array([A.shape[0], A.shape[1], A.nnz], dtype=np.int32).tofile(d / "dims.bin")
    A.indptr.astype(np.int32).tofile(d / "p.bin")
    A.indices.astype(np.int32).tofile(d / "i.bin")
    A.data.astype(np.float64).tofile(d / "x.bin")


@cache
def rcppml_available() -> bool:
    """Whether ``Rscript -e 'library(RcppML)'`` works here."""
    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "suppressMessages(library(RcppML))"],
                       capture_output=True)
    return r.returncode == 0


def rcppml_nmf(d: Path, k: int, maxit: int, threads: int, reps: int) -> tuple[float, float]:
    """RcppML 1.0's ``nmf(A, k, maxit, tol = 0, seed = 1)`` on the matrix dumped in ``d``:
    (median seconds per iteration over ``reps`` fits after a warm-up, MSE of the last model)."""
    out = subprocess.run(["Rscript", str(HERE / "rcppml_nmf.R"), str(d), str(k), str(maxit),
                          str(threads), str(reps)], check=True, capture_output=True, text=True)
    secs, mse = out.stdout.split()
    return float(secs), float(mse)


def rcppml_svd(d: Path, k: int, threads: int, reps: int, *,
               center: bool = False) -> tuple[float, str, np.ndarray]:
    """RcppML 1.0's ``svd(A, k, center, threads)`` (its defaults otherwise: tol 1e-5, method
    "auto") on the matrix dumped in ``d``: (median seconds over ``reps`` calls after a warm-up,
    the method it chose, its k singular values)."""
    out = subprocess.run(["Rscript", str(HERE / "rcppml_svd.R"), str(d), str(k), str(threads),
                          str(reps), "TRUE" if center else "FALSE"],
                         check=True, capture_output=True, text=True)
    head, values = out.stdout.strip().splitlines()[:2]
    secs, method, _ = head.split()
    return float(secs), method, np.array([float(v) for v in values.split()])
