"""Build the bundled example datasets from RcppML's exported data (a directory of
its datasets as Matrix Market and CSV files).

Run once by maintainers: ``python scripts/build_datasets.py DATA_DIR``. Writes
``dask_factor/datasets/data/<name>.npz.xz`` (an lzma-compressed ``.npz``: CSC with per-column
row gaps, or a dense array) and ``<name>.rows.csv.gz`` / ``<name>.cols.csv.gz`` (metadata of
the features and of the samples).
"""

from __future__ import annotations

import gzip
import io
import lzma
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

OUT = Path(__file__).resolve().parents[1] / "dask_factor" / "datasets" / "data"


def _names(path: Path):
    return path.read_text().splitlines() if path.exists() else None


def _save_matrix(name: str, A) -> None:
    buf = io.BytesIO()
    if sp.issparse(A):
        A = sp.csc_matrix(A)
        A.sort_indices()
        gaps = A.indices.astype(np.int64)
        gaps[1:] -= A.indices[:-1]
        nonempty = np.diff(A.indptr) > 0
        first = A.indptr[:-1][nonempty]
        gaps[first] = A.indices[first]
        data = A.data
        if np.all(data == np.round(data)) and data.min() >= 0 and data.max() < 2**16:
            data = data.astype(np.uint16)
        np.savez(buf, kind="csc", shape=np.array(A.shape), indptr=A.indptr.astype(np.int64),
                 gaps=gaps.astype(np.uint32 if gaps.max() >= 2**16 else np.uint16), data=data)
    else:
        np.savez(buf, kind="dense", shape=np.array(A.shape), data=np.asarray(A, order="F"))
    (OUT / f"{name}.npz.xz").write_bytes(lzma.compress(buf.getvalue(), preset=9))


def _save_meta(name: str, which: str, df: pd.DataFrame | None) -> None:
    if df is None:
        return
    with gzip.open(OUT / f"{name}.{which}.csv.gz", "wt", compresslevel=9) as fh:
        df.to_csv(fh)


def build(src: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # aml: dense 824 regions x 135 samples; metadata of the samples in var.csv
    A = np.asarray(scipy.io.mmread(src / "aml" / "matrix.mtx.gz"))
    rows = pd.DataFrame(index=pd.Index(_names(src / "aml" / "rownames.txt"), name="region"))
    cols = pd.read_csv(src / "aml" / "var.csv")
    cols.index = pd.Index(cols["samples"].astype(str), name="sample")
    _save_matrix("aml", A)
    _save_meta("aml", "rows", rows)
    _save_meta("aml", "cols", cols.drop(columns=["samples"]))
    # hawaiibirds: 183 species x 1183 grid cells
    A = scipy.io.mmread(src / "hawaiibirds" / "matrix.mtx.gz")
    rows = pd.read_csv(src / "hawaiibirds" / "obs.csv")
    rows.index = pd.Index(_names(src / "hawaiibirds" / "rownames.txt"), name="species_id")
    cols = pd.read_csv(src / "hawaiibirds" / "var.csv")
    cols.index = pd.Index(_names(src / "hawaiibirds" / "colnames.txt"), name="cell")
    _save_matrix("hawaiibirds", A)
    _save_meta("hawaiibirds", "rows", rows)
    _save_meta("hawaiibirds", "cols", cols)
    # pbmc3k: 13714 genes x 2638 cells (no gene or cell names in RcppML's object)
    A = scipy.io.mmread(src / "pbmc3k" / "matrix.mtx.gz")
    cols = pd.read_csv(src / "pbmc3k" / "var.csv")
    cols.index = pd.Index([f"cell{i + 1}" for i in range(A.shape[1])], name="cell")
    rows = pd.DataFrame(index=pd.Index([f"gene{i + 1}" for i in range(A.shape[0])], name="gene"))
    _save_matrix("pbmc3k", A)
    del rows  # generated on load: RcppML ships no gene names
    _save_meta("pbmc3k", "cols", cols)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/build_datasets.py DATA_DIR")
    build(Path(sys.argv[1]))
    for p in sorted(OUT.iterdir()):
        print(f"{p.name:32s} {p.stat().st_size:>10,d} bytes")
