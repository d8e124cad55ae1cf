"""Streaming read throughput: zarr and .spz against the same matrix held in memory.

Simulates a count matrix (default 2,000 genes × 200,000 cells, 6% dense), writes it once to our
zarr layout and to ``.spz``, then reads all column blocks three ways with the same blocking:

* ``memory``: the blocks of the in-memory CSC matrix (the ceiling: no I/O, no decoding);
* ``zarr``: ``open_matrix(path.zarr)`` (zstd-compressed chunks);
* ``spz``: ``open_matrix(path.spz)`` (rANS-coded chunks).

Two read patterns, both through dask: *sequential* (one block at a time, as ``write_matrix`` and
a single-worker fit stream) and *parallel* (all blocks by dask's threaded scheduler, as an NMF
iteration reads them).  Every block's bytes are summed, so each source does the same work
after the read.  Throughput is blocks/s and MB/s of decoded CSC (data + indices + indptr);
the ratios to ``memory`` are measured in the same run.  Run it on a quiet machine: the numbers
are wall-clock.

Usage::

    python benchmarks/bench_io.py                 # 200,000 samples
    python benchmarks/bench_io.py --samples 20000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import scipy.sparse as sp

from dask_factor.datasets import simulate_counts
from dask_factor.io import iter_column_blocks, matrix_info, open_matrix, write_matrix


def _touch(b) -> np.ndarray:
    """Read every stored byte of a block (as a consumer would): [bytes, checksum]."""
    nbytes = b.data.nbytes + b.indices.nbytes + b.indptr.nbytes
    return np.array([[nbytes, float(b.data.sum(dtype=np.float64)) + float(b.indices.sum())]])


def _time_sequential(x) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    n_blocks = n_bytes = 0
    for blk in iter_column_blocks(x, prefetch=1):
        n_blocks += 1
        n_bytes += int(_touch(blk)[0, 0])
    return time.perf_counter() - t0, n_blocks, n_bytes


def _time_parallel(x, workers: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    per_block = x.map_blocks(_touch, dtype=np.float64, chunks=((1,), (2,) * x.numblocks[1]),
                             meta=np.empty((0, 0), np.float64))
    with dask.config.set(scheduler="threads", num_workers=workers):
        out = per_block.compute()
    return time.perf_counter() - t0, x.numblocks[1], int(out[0, 0::2].sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--features", type=int, default=2_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--density", type=float, default=0.06)
    p.add_argument("--block-nnz", type=int, default=None,
                   help="entries per block (default: dask_factor.io.default_block_nnz(features))")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the written files")
    p.add_argument("--reuse", action="store_true",
                   help="reuse A.zarr / A.spz already in --workdir (implies --keep)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args(argv)
    if args.block_nnz is None:
        from dask_factor.io import default_block_nnz

        args.block_nnz = default_block_nnz(args.features)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-io-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"samples": args.samples, "features": args.features,
                     "density": args.density, "block_nnz": args.block_nnz,
                     "workers": args.workers}
    try:
        results["write_zarr_s"] = results["write_spz_s"] = float("nan")
        if not (args.reuse and (work / "A.zarr").exists()):
            t0 = time.perf_counter()
            A = simulate_counts(args.samples, args.features, args.k, density=args.density,
                                seed=0)
            write_matrix(A, work / "A.zarr", block_nnz=args.block_nnz, overwrite=True)
            results["write_zarr_s"] = time.perf_counter() - t0
        if not (args.reuse and (work / "A.spz").exists()):
            t0 = time.perf_counter()
            write_matrix(work / "A.zarr", work / "A.spz", overwrite=True)
            results["write_spz_s"] = time.perf_counter() - t0
        info = matrix_info(work / "A.zarr")
        results["nnz"] = info["nnz"]
        results["zarr_bytes"] = sum(f.stat().st_size for f in (work / "A.zarr").rglob("*")
                                    if f.is_file())
        results["spz_bytes"] = (work / "A.spz").stat().st_size
        results["spz_value_type"] = matrix_info(work / "A.spz")["value_type"]

        in_memory = open_matrix(work / "A.zarr").compute()
        assert isinstance(in_memory, sp.csc_matrix)
        arrays = {
            "memory": open_matrix(in_memory, block_nnz=args.block_nnz),
            "zarr": open_matrix(work / "A.zarr", block_nnz=args.block_nnz),
            "spz": open_matrix(work / "A.spz", block_nnz=args.block_nnz, dtype=np.float32),
        }
        for name, x in arrays.items():
            x.blocks[0, 0].compute()  # warm up (numba compilation, imports)
            for mode, fn in (("sequential", _time_sequential),
                             ("parallel", lambda x: _time_parallel(x, args.workers))):
                secs, n_blocks, n_bytes = fn(x)
                results[f"{name}_{mode}"] = {
                    "seconds": secs, "blocks": n_blocks, "blocks_per_s": n_blocks / secs,
                    "MB_per_s": n_bytes / secs / 1e6,
                }
        for name in ("zarr", "spz"):
            for mode in ("sequential", "parallel"):
                results[f"ratio_{name}_{mode}"] = (results[f"{name}_{mode}"]["MB_per_s"]
                                                   / results[f"memory_{mode}"]["MB_per_s"])
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"matrix: {args.features:,} x {args.samples:,}, nnz {results['nnz']:,}, "
          f"block_nnz {args.block_nnz:,}, {args.workers} worker threads")
    def secs(v):
        return "reused" if np.isnan(v) else f"{v:.1f} s"

    print(f"write: zarr {secs(results['write_zarr_s'])} (incl. simulation, "
          f"{results['zarr_bytes'] / 1e6:.0f} MB), spz {secs(results['write_spz_s'])} "
          f"({results['spz_bytes'] / 1e6:.0f} MB, {results['spz_value_type']})")
    print(f"{'source':<8}{'pattern':<12}{'blocks':>7}{'blocks/s':>10}{'MB/s':>9}"
          f"{'vs memory':>11}")
    for name in ("memory", "zarr", "spz"):
        for mode in ("sequential", "parallel"):
            r = results[f"{name}_{mode}"]
            ratio = 1.0 if name == "memory" else results[f"ratio_{name}_{mode}"]
            print(f"{name:<8}{mode:<12}{r['blocks']:>7}{r['blocks_per_s']:>10.1f}"
                  f"{r['MB_per_s']:>9.0f}{ratio:>11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
