"""Throughput of the StreamPress (.spz) codec on pbmc3k, against scipy's Matrix Market I/O.

Run from the repository root::

    .venv/bin/python benchmarks/bench_spz.py --data DIR [--repeat 5]

``DIR`` holds RcppML's pbmc3k export (``pbmc3k/pbmc3k_data_rda.spz`` and
``pbmc3k/matrix.mtx.gz``; not shipped with the package).

Decodes ``pbmc3k/pbmc3k_data_rda.spz`` (13714 x 2638, 2.24 M entries, uint16, with transpose
and a var table) and compares with ``scipy.io.mmread`` of the same matrix as
``pbmc3k/matrix.mtx.gz``; encodes it again (in memory and as a stream of column blocks) and
compares with ``scipy.io.mmwrite`` to a gzip file.  Numba kernels are compiled/loaded
before timing.  Every timing is the best of ``--repeat`` runs in this process.
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from dask_factor.io.spz import SpzFile, read_spz, write_spz


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory with pbmc3k/pbmc3k_data_rda.spz")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    pbmc = Path(args.data).resolve() / "pbmc3k"
    spz_path, mtx_path = pbmc / "pbmc3k_data_rda.spz", pbmc / "matrix.mtx.gz"
    if not spz_path.exists():
        raise SystemExit(f"{spz_path} not found (pass --data)")
    r = args.repeat

    t = time.perf_counter()
    with SpzFile(spz_path) as f:  # loads / compiles the numba kernels
        a = f.read_all()
        var = f.var
        f.read_transpose_chunk(0)
    warm = time.perf_counter() - t
    write_spz(a[:, :10], os.path.join(tempfile.mkdtemp(), "warm.spz"))
    nnz = a.nnz
    size = spz_path.stat().st_size
    mb = size / 1e6
    print(f"pbmc3k: {a.shape[0]} x {a.shape[1]}, nnz {nnz:,}, .spz {mb:.2f} MB, "
          f".mtx.gz {mtx_path.stat().st_size / 1e6:.2f} MB  (first open + decode incl. numba "
          f"load/compile: {warm:.2f} s)")

    def full_read(crc: bool):
        return lambda: read_spz(spz_path, verify_crc=crc)

    def transpose_read():
        with SpzFile(spz_path, verify_crc=False) as f:
            for c in range(f.transpose_bounds.size - 1):
                f.read_transpose_chunk(c)

    t_dec = best(full_read(True), r)
    t_dec_nocrc = best(full_read(False), r)
    t_dec32 = best(lambda: read_spz(spz_path, dtype=np.float32), r)
    t_tr = best(transpose_read, r)
    t_mm = best(lambda: scipy.io.mmread(str(mtx_path)).tocsc(), max(1, r // 2))
    print("\ndecode                               seconds   M entries/s   MB/s (.spz)")
    for label, sec in [("read_spz (CRC checked)", t_dec), ("read_spz (no CRC)", t_dec_nocrc),
                       ("read_spz dtype=float32", t_dec32), ("all transpose chunks", t_tr),
                       ("scipy.io.mmread(.mtx.gz).tocsc()", t_mm)]:
        print(f"  {label:34s} {sec:8.3f}   {nnz / sec / 1e6:10.1f}   {mb / sec:10.1f}")
    print(f"  -> .spz decode is {t_mm / t_dec:.1f}x faster than mmread "
          f"(target: whole file < 1 s: {'OK' if t_dec < 1 else 'MISSED'})")

    tmp = Path(tempfile.mkdtemp())

    def stream():
        blocks = ((j, a[:, j : j + 256]) for j in range(0, a.shape[1], 256))
        write_spz(blocks, tmp / "s.spz", shape=a.shape, value_type="uint16", var=var,
                  overwrite=True)

    def mmwrite():
        with gzip.open(tmp / "m.mtx.gz", "wb", compresslevel=6) as fh:
            scipy.io.mmwrite(fh, sp.coo_matrix(a), field="integer")

    t_enc = best(lambda: write_spz(a, tmp / "a.spz", var=var, overwrite=True), r)
    same = (tmp / "a.spz").read_bytes() == spz_path.read_bytes()
    t_enc_nt = best(lambda: write_spz(a, tmp / "b.spz", include_transpose=False,
                                      overwrite=True), r)
    t_stream = best(stream, r)
    t_mmw = best(mmwrite, 1)
    print("\nencode                               seconds   M entries/s")
    for label, sec in [("write_spz (with transpose)", t_enc),
                       ("write_spz (no transpose)", t_enc_nt),
                       ("write_spz (stream of 256-col blocks)", t_stream),
                       ("scipy.io.mmwrite -> gzip", t_mmw)]:
        print(f"  {label:36s} {sec:8.3f}   {nnz / sec / 1e6:10.1f}")
    print(f"  -> .spz encode (with transpose) is {t_mmw / t_enc:.1f}x faster than mmwrite+gzip; "
          f"byte-identical to RcppML's file: {same}")


if __name__ == "__main__":
    main()
