"""Cost of the block validation (issue 17): ns per stored entry on 1e7-entry blocks.

Run from the repository root::

    .venv/bin/python benchmarks/bench_validate.py [--nnz 10000000] [--repeat 7] [--k 10]

Times, on CSC blocks of ``--nnz`` entries of three shapes (few long columns to many short ones),
int32 and int64 indices:

* ``kernel``: :func:`dask_factor.kernels.validate.check_compressed` alone;
* ``check_block``: the wrapper every reader and the engine call (argument checks + kernel);
* for scale, scipy's ``has_sorted_indices`` pass (which a checked block no longer needs) and one
  ``Wᵀ A`` product with k = ``--k`` (:func:`dask_factor.kernels.products.csc_wt_a`), the
  smallest piece of work an NMF pass does per block (a pass does at least two such products).

Numba kernels are compiled/loaded before timing; every timing is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse import _sparsetools

from dask_factor.io.validate import check_block
from dask_factor.kernels.products import csc_wt_a
from dask_factor.kernels.validate import check_compressed


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nnz", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    print(f"{'shape':>18} {'index':>6} {'kernel':>8} {'check_block':>12} {'scipy sorted':>13} "
          f"{'Wt A (k=' + str(args.k) + ')':>13}   ns per entry")
    for m, n in ((30_000, 5_000), (20_000, 100_000), (2_000, 500_000)):
        A = sp.random(m, n, density=args.nnz / (m * n), format="csc", random_state=0,
                      dtype=np.float32)
        W = np.random.default_rng(0).random((m, args.k)).astype(np.float32)
        for itype in (np.int32, np.int64):
            B = sp.csc_matrix((A.data, A.indices.astype(itype), A.indptr.astype(itype)),
                              shape=A.shape)
            check_compressed(B.indptr, B.indices, m)  # compile / load
            csc_wt_a(B.indptr, B.indices, B.data, W)
            per = 1e9 / B.nnz
            t_k = best(lambda B=B, m=m: check_compressed(B.indptr, B.indices, m), args.repeat)
            t_w = best(lambda B=B: check_block(B, B.shape, where="bench"), args.repeat)
            t_s = best(lambda B=B: _sparsetools.csr_has_sorted_indices(
                B.shape[1], B.indptr, B.indices), args.repeat)
            t_p = best(lambda B=B, W=W: csc_wt_a(B.indptr, B.indices, B.data, W), 3)
            print(f"{f'{m} x {n}':>18} {np.dtype(itype).name:>6} {t_k * per:8.3f} "
                  f"{t_w * per:12.3f} {t_s * per:13.3f} {t_p * per:13.2f}")


if __name__ == "__main__":
    main()
