"""Bundled example datasets (from RcppML's package data) and a count-matrix simulator.

>>> from dask_factor import datasets
>>> A, rows, cols = datasets.load("aml")
>>> A.shape, cols["category"].nunique()
((824, 135), 6)
"""

from __future__ import annotations

import gzip
import io
import lzma
from importlib import resources
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["Dataset", "load", "available", "simulate_counts"]

_DESCRIPTIONS = {
    "aml": "824 genomic regions × 135 samples (dense, values in [0, 1)); samples carry "
           "`category` (3 AML subtypes, 3 control cell types). Corces et al. 2016, via RcppML.",
    "hawaiibirds": "183 bird species × 1,183 survey grid cells (sparse observation frequencies); "
                   "species carry `status`/`type`, cells `island`, `lat`, `lng`. Via RcppML.",
    "pbmc3k": "13,714 genes × 2,638 cells (sparse UMI counts, 10x Genomics PBMC 3k); cells carry "
              "`cell_type` (9 types). Via RcppML.",
}


class Dataset(NamedTuple):
    """A bundled dataset: ``matrix`` (features × samples), ``rows`` and ``cols`` metadata."""

    matrix: np.ndarray | sp.csc_matrix
    rows: pd.DataFrame
    cols: pd.DataFrame


def available() -> dict[str, str]:
    """Names of the bundled datasets with a one-line description.

    Examples
    --------
    >>> sorted(available())
    ['aml', 'hawaiibirds', 'pbmc3k']
    """
    return dict(_DESCRIPTIONS)


def _data_file(name: str):
    return resources.files(__name__).joinpath("data", name)


def _read_matrix(name: str):
    raw = lzma.decompress(_data_file(f"{name}.npz.xz").read_bytes())
    z = np.load(io.BytesIO(raw), allow_pickle=False)
    shape = tuple(int(s) for s in z["shape"])
    if str(z["kind"]) == "dense":
        return np.ascontiguousarray(z["data"], dtype=np.float64)
    indptr = z["indptr"]
    gaps = z["gaps"].astype(np.int64)
    # undo the per-column gap coding: indices = running sum of gaps, restarted in every column
    col_of = np.repeat(np.arange(shape[1]), np.diff(indptr))
    cum = np.cumsum(gaps)
    starts = indptr[:-1]
    base = np.zeros(shape[1], dtype=np.int64)
    nonempty = np.diff(indptr) > 0
    base[nonempty] = cum[starts[nonempty]] - gaps[starts[nonempty]]
    indices = (cum - base[col_of]).astype(np.int32)
    return sp.csc_matrix((z["data"].astype(np.float64), indices, indptr), shape=shape)


def _read_meta(name: str, which: str, n: int, default_prefix: str) -> pd.DataFrame:
    f = _data_file(f"{name}.{which}.csv.gz")
    if f.is_file():
        with gzip.open(io.BytesIO(f.read_bytes()), "rt") as fh:
            return pd.read_csv(fh, index_col=0)
    return pd.DataFrame(index=pd.Index([f"{default_prefix}{i + 1}" for i in range(n)]))


def load(name: str) -> Dataset:
    """Load a bundled dataset as features × samples.

    Parameters
    ----------
    name : {"aml", "hawaiibirds", "pbmc3k"}

    Returns
    -------
    Dataset
        ``(matrix, rows, cols)``: ``matrix`` is a float64 ``scipy.sparse.csc_matrix`` (hawaiibirds,
        pbmc3k) or ndarray (aml) of shape (m, n); ``rows`` (m rows) describes the features and
        ``cols`` (n rows) the samples.

    Examples
    --------
    >>> A, rows, cols = load("pbmc3k")
    >>> A.shape, int(A.nnz), int(cols["cell_type"].value_counts().iloc[0])
    ((13714, 2638), 2238732, 697)
    """
    if name not in _DESCRIPTIONS:
        raise ValueError(f"load: unknown dataset {name!r}; expected one of {sorted(_DESCRIPTIONS)}")
    A = _read_matrix(name)
    rows = _read_meta(name, "rows", A.shape[0], "feature")
    cols = _read_meta(name, "cols", A.shape[1], "sample")
    return Dataset(A, rows, cols)


def __getattr__(attr):  # the simulator imports dask/zarr machinery: load it on first use
    if attr == "simulate_counts":
        from .simulate import simulate_counts

        return simulate_counts
    raise AttributeError(attr)
