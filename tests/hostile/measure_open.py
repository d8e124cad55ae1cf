"""Memory taken by opening and reading files, measured in a fresh process (issue 17, item 1).

``python measure_open.py FILE...`` warms up (imports, numba kernels) on a clean file, then for
every FILE opens it the ways a user would (``open_matrix(...).compute()``, ``matrix_info``, and
``SpzFile.read_all`` for ``.spz``) and prints one JSON line: the outcome (``ok`` or the
exception's type and message) and ``peak``, the largest traced allocation (``tracemalloc``:
numpy and Python).  A last line gives ``maxrss_delta``: how much the process's peak resident
memory grew over the warm-up (it also counts what numba kernels allocate, which tracemalloc
does not see).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path


def _read(path: str) -> None:
    import dask

    from dask_factor.io import matrix_info, open_matrix

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix_info(path)
        x = open_matrix(path)
        with dask.config.set(scheduler="synchronous"):
            x.compute()
        with open(path, "rb") as f:
            is_spz = f.read(4) == b"SPRZ"
        if is_spz:
            from dask_factor.io.spz import SpzFile

            with SpzFile(path) as s:
                s.read_all()
                if s.has_transpose:
                    for c in range(s.transpose_bounds.size - 1):
                        s.read_transpose_chunk(c)


def _warm_up() -> None:
    import numpy as np
    import scipy.sparse as sp

    from dask_factor.io.spz import write_spz

    d = Path(tempfile.mkdtemp())
    A = sp.random(20, 30, density=0.3, format="csc", random_state=0)
    for vt in ("auto", "uint16", "float16", "quant8", "float64"):
        B = A.copy()
        B.data = np.round(B.data * 300) + 1 if vt in ("auto", "uint16") else B.data
        write_spz(B, d / f"w_{vt}.spz", value_type=vt, chunk_cols=7)
        _read(str(d / f"w_{vt}.spz"))
    for codec in ("raw", "fp16", "quant8", "fp32_rans", "fp16_rans"):
        write_spz(A.toarray(), d / f"d_{codec}.spz", codec=codec, chunk_cols=7,
                  include_transpose=True)
        _read(str(d / f"d_{codec}.spz"))
    (d / "w.mtx").write_text("%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 1.5\n")
    _read(str(d / "w.mtx"))


def main(paths: list[str]) -> int:
    _warm_up()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    for p in paths:
        tracemalloc.reset_peak()
        try:
            _read(p)
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - reported
            outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        print(json.dumps({"path": os.path.basename(p), "size": os.path.getsize(p),
                          "outcome": outcome, "peak": tracemalloc.get_traced_memory()[1]}),
              flush=True)
    print(json.dumps({"maxrss_delta": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                      - base}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
