"""Checking an input matrix and wrapping it as column blocks, before any factorisation work."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

from ..checks import check_matrix_dtype, is_path
from ..kernels.validate import value_stats
from .als import compute_block_stats
from .blocks import BlockedMatrix, as_blocked


@dataclass
class PreparedInput:
    """A validated input: its blocks, ‖A‖², and how many entries are negative / non-zero."""

    bm: BlockedMatrix
    sq_norm: float
    n_negative: int
    nnz: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.bm.shape


def _is_anndata(x) -> bool:
    return type(x).__name__ == "AnnData" and hasattr(x, "obsm")


def _from_nested(A, name: str) -> np.ndarray:
    """A list of lists (rows) as a 2-D array, or an error saying what is wrong with it."""
    try:
        arr = np.asarray(A)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: a list of lists must be rectangular (every row the same "
                         f"length) and hold numbers: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (features × samples): a list of rows, "
                         f"each a list of numbers; got a {type(A).__name__} of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: a list of lists must hold numbers, got {arr.dtype} values "
                        f"(e.g. {arr.flat[0]!r})")
    return arr


def open_lazy(A, name: str = "A"):
    """Paths, AnnData objects and opened stores go through the I/O registry (read in tasks);
    lists of lists become arrays."""
    if isinstance(A, (list, tuple)):
        return _from_nested(A, name)
    if isinstance(A, (np.ndarray, da.Array)) or sp.issparse(A):
        return A
    from ..io import open_matrix

    if is_path(A) or _is_anndata(A):
        return open_matrix(A)
    path = getattr(A, "path", None)
    if type(A).__name__ == "SpzFile" and path is not None:  # an opened .spz: read by path
        return open_matrix(path)
    try:  # another opened store the registry knows
        return open_matrix(A)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name}: expected a numpy array, scipy.sparse matrix, dask array, AnnData, an "
            f"opened store or a path to a matrix file, got {type(A).__name__} ({exc})") from exc


def check_shape(name: str, A) -> tuple[int, int]:
    """The (m, n) of a matrix-like object, or a ValueError naming ``name``."""
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (features × samples), got shape "
                         f"{shape}")
    if any(isinstance(s, float) and np.isnan(s) for s in shape):
        raise ValueError(f"{name}: the dask array has unknown chunk sizes (shape {shape}); call "
                         f"{name}.compute_chunk_sizes() first")
    m, n = (int(s) for s in shape)
    if m == 0 or n == 0:
        raise ValueError(f"{name}: expected a non-empty matrix, got shape ({m}, {n})")
    return m, n


def _block_inf(x) -> int:
    vals = x.data if sp.issparse(x) else np.asarray(x)
    return int(np.count_nonzero(np.isinf(vals)))


def _count_inf(bm: BlockedMatrix, client=None) -> int:
    """Number of ±Inf entries of a lazy input (one pass over its blocks)."""
    total = dask.delayed(sum, pure=True)([dask.delayed(_block_inf, pure=True)(b)
                                         for b in bm.blocks])
    return int(client.compute(total).result() if client is not None else total.compute())


def prepare_input(
    A,
    *,
    name: str = "A",
    dtype=np.float32,
    chunks: int | None = None,
    block_nnz: int | None = None,
    cache: str = "auto",
    client=None,
    allow_negative: bool = True,
    allow_nonfinite: bool = False,
    warn_negative: bool = True,
) -> PreparedInput:
    """Validate ``A`` and wrap it as column blocks.

    In-memory inputs are checked on the spot; lazy inputs (dask arrays, files) in one pass of
    Dask tasks that also computes ‖A‖², before any factorisation work starts.

    Raises
    ------
    TypeError
        ``A`` is not a matrix type we read, or has a complex/object/string dtype.
    ValueError
        ``A`` is not 2-D, is empty, holds ±Inf, or NaN (unless ``allow_nonfinite``); a value
        overflows ``dtype`` (1e39 in float32) or the sum of squares overflows float64.
    MatrixFormatError
        A sparse ``A`` (or a block read from a file or dask array) is malformed: an index out
        of range, an inconsistent ``indptr`` (a ``ValueError``; ``SpzFormatError`` for .spz).
    """
    A = open_lazy(A, name)
    if isinstance(A, (list, tuple)):
        A = np.asarray(A)
    if not (isinstance(A, (np.ndarray, da.Array)) or sp.issparse(A)):
        raise TypeError(
            f"{name}: expected a numpy array, scipy.sparse matrix, dask array, AnnData or a path "
            f"to a matrix file, got {type(A).__name__}")
    check_shape(name, A)
    check_matrix_dtype(name, A.dtype)
    if isinstance(A, da.Array):
        bm = as_blocked(A, dtype=dtype, chunks=chunks, name=name)
        if cache == "memory":
            bm.hold_in_memory(client)
        stats = compute_block_stats(bm, client)
        sq, n_bad, n_neg, nnz = float(stats[0]), int(stats[1]), int(stats[2]), int(stats[3])
        # NaN may be a missing value (allow_nonfinite); ±Inf never is: count them apart (a
        # second pass, only for inputs that hold non-finite values at all)
        n_inf = _count_inf(bm, client) if n_bad and allow_nonfinite else 0
    else:
        vals = A.data if sp.issparse(A) else np.asarray(A).ravel()
        vals = np.asarray(vals)
        if vals.dtype.kind == "b":
            vals = vals.astype(np.float64)
        sq, n_bad, n_inf, n_neg, nnz = value_stats(np.ascontiguousarray(vals))  # one read
        sq, n_bad, n_inf, n_neg, nnz = float(sq), int(n_bad), int(n_inf), int(n_neg), int(nnz)
        bm = as_blocked(A, dtype=dtype, chunks=chunks, block_nnz=block_nnz, name=name)
    if not np.isfinite(sq):  # Σa² overflows float64: so would every product with A
        raise ValueError(f"{name}: values are too large: the sum of their squares overflows "
                         f"float64 (|v| around 1e154 or more); rescale {name} (e.g. divide it by "
                         f"its largest value)")
    if n_bad and not allow_nonfinite:
        raise ValueError(f"{name}: contains {n_bad} NaN or infinite value(s); expected finite "
                         f"values")
    if n_inf:  # never data, and not a missing value either (that is NaN)
        raise ValueError(f"{name}: contains {n_inf} infinite value(s); expected finite values "
                         f"(NaN entries are missing values)")
    if n_neg:
        if not allow_negative:
            raise ValueError(f"{name}: contains {n_neg} negative value(s); expected non-negative")
    if n_neg and warn_negative:
        warnings.warn(
            f"{name}: contains {n_neg} negative value(s); NMF fits them in the least-squares "
            f"sense (as RcppML does), but non-negative factors cannot reproduce them",
            UserWarning, stacklevel=3)
    return PreparedInput(bm, sq, n_neg, nnz)
