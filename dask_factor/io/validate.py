"""Validation at the boundary: every sparse block is checked before a kernel sees it.

The numba kernels index ``W[indices[p]]`` and loop over ``indptr[j]:indptr[j+1]`` without bounds
checks, and so do scipy's C++ conversions (``tocsc``, ``toarray``, ``sort_indices``): a row index
outside ``[0, m)`` or a decreasing ``indptr`` reads or writes out of bounds (a crash, or silently
wrong factors).  So every reader builds its blocks through :func:`csc_from_arrays`, and every
block that comes from elsewhere (a dask array of scipy chunks, an in-memory matrix) goes through
:func:`check_block`, before anything else touches it.  Both run the one kernel
:func:`dask_factor.kernels.validate.check_compressed` (a single O(nnz) pass, a fraction of a
nanosecond per entry) and raise :class:`~dask_factor.io.errors.MatrixFormatError` (or the
format's subclass) naming the source, the block and what is wrong.

Blocks built here are *marked* as checked (an attribute on the scipy object, never on a caller's
matrix), so a block read from a file is not checked a second time when the engine normalises it.

:func:`cast_values` converts values to the working dtype and refuses values that overflow it
(1e39 does not fit float32): a NaN model is the alternative.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..kernels.validate import (
    BAD_END,
    BAD_START,
    DECREASING,
    OK,
    OUT_OF_RANGE,
    check_compressed,
)
from .errors import MatrixFormatError

__all__ = ["cast_values", "check_block", "check_compressed_arrays", "check_full_pointer",
           "check_pointer_slice", "csc_from_arrays", "is_checked", "mark_checked"]

_MARK = "_dask_factor_checked"


def mark_checked(x):
    """Mark a scipy block *we built* as structurally valid; return it.

    Never mark a caller's object: it could be changed after the check.
    """
    if sp.issparse(x):
        setattr(x, _MARK, True)
    return x


def is_checked(x) -> bool:
    """Whether ``x`` is a block marked by :func:`mark_checked`."""
    return bool(getattr(x, _MARK, False))


def _int_array(a, what: str, where: str, error):
    a = np.asarray(a)
    if a.ndim != 1:
        raise error(f"{where}: {what} must be 1-D, has shape {a.shape}")
    if a.dtype.kind == "u":  # rare (some HDF5 writers): wrap-around shows as negative
        a = a.astype(np.int64)
    elif a.dtype.kind != "i":
        raise error(f"{where}: {what} has dtype {a.dtype}, expected integers")
    return a


def check_compressed_arrays(
    indptr,
    indices,
    data,
    shape: tuple[int, int],
    *,
    where: str,
    layout: str = "csc",
    major: str | None = None,
    minor: str | None = None,
    offset: int = 0,
    error: type[Exception] = MatrixFormatError,
) -> bool:
    """Check the arrays of a CSC (or CSR) matrix of ``shape``; return whether it is canonical.

    Checks that ``indptr`` has one entry per column (row for CSR) plus one, starts at 0, never
    decreases and ends at ``len(indices) == len(data)``, and that every index lies in
    ``[0, m)`` (``[0, n)`` for CSR): one pass of
    :func:`~dask_factor.kernels.validate.check_compressed`.

    Parameters
    ----------
    indptr, indices, data : 1-D arrays (``data`` may be N-D: its first axis counts)
    shape : (m, n)
    where : str
        Names the source and block in the error message, e.g. ``"path='a.zarr', columns 0:100"``.
    layout : {"csc", "csr"}
    major, minor : str, optional
        Words for the compressed and the indexed axis (default column/row for CSC).
    offset : int
        Number of the block's first column (row for CSR), so messages give absolute positions.
    error : exception class
        :class:`MatrixFormatError` or a format's subclass.

    Returns
    -------
    bool
        True when every column's indices are strictly increasing (sorted, no duplicates).

    Raises
    ------
    MatrixFormatError (or ``error``)

    Examples
    --------
    >>> check_compressed_arrays(np.array([0, 1, 2]), np.array([0, 5]), np.ones(2), (3, 2),
    ...                         where="A")
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: A: row index 5 (entry 1, column 1) is outside [0, 3)
    """
    m, n = (int(s) for s in shape)
    if layout == "csr":
        n_major, n_minor = m, n
        major, minor = major or "row", minor or "column"
    else:
        n_major, n_minor = n, m
        major, minor = major or "column", minor or "row"
    indptr = _int_array(indptr, "indptr", where, error)
    indices = _int_array(indices, "indices", where, error)
    n_data = int(np.shape(data)[0]) if np.ndim(data) else -1
    if indptr.size != n_major + 1:
        raise error(f"{where}: indptr has {indptr.size} entries, expected {n_major + 1} for "
                    f"{n_major} {major}s")
    if n_data != indices.size:
        raise error(f"{where}: {indices.size} indices but {n_data} values")
    code, pos, canonical = check_compressed(indptr, indices, n_minor)
    if code == OK:
        return bool(canonical)
    if code == BAD_START:
        raise error(f"{where}: indptr[0] is {int(indptr[0])}, expected 0")
    if code == DECREASING:
        raise error(f"{where}: indptr decreases at {major} {offset + pos}: indptr[{pos}] = "
                    f"{int(indptr[pos])} > indptr[{pos + 1}] = {int(indptr[pos + 1])}")
    if code == BAD_END:
        raise error(f"{where}: indptr ends at {int(indptr[-1])} but {indices.size} entries are "
                    f"stored")
    assert code == OUT_OF_RANGE
    j = int(np.searchsorted(indptr, pos, side="right")) - 1
    raise error(f"{where}: {minor} index {int(indices[pos])} (entry {pos}, {major} "
                f"{offset + j}) is outside [0, {n_minor})")


def check_pointer_slice(indptr, start: int, stop: int, n_stored: int, *, where: str,
                        error: type[Exception] = MatrixFormatError,
                        n_major: int | None = None) -> tuple[int, int]:
    """Check the slice ``indptr[start:stop + 1]`` read from a file; return its (first, last).

    Before the entries ``first:last`` are sliced out of the stored arrays: the slice must be
    complete, point inside the ``n_stored`` stored entries, start at 0 for the first column and,
    when ``n_major`` (the number of columns) is given, end at ``n_stored`` for the last one
    (the rest — monotone, consistent with what is read — is :func:`csc_from_arrays`'s job).

    Examples
    --------
    >>> check_pointer_slice(np.array([4, 9]), 3, 4, 20, where="a.zarr")
    (4, 9)
    """
    if indptr.size != stop - start + 1:
        raise error(f"{where}: indptr has {indptr.size} entries for {stop - start} columns "
                    f"(expected {stop - start + 1}; truncated?)")
    p0, p1 = int(indptr[0]), int(indptr[-1])
    if start == 0 and p0 != 0:
        raise error(f"{where}: indptr[0] is {p0}, expected 0")
    for p in (p0, p1):
        if p < 0 or p > n_stored:
            raise error(f"{where}: indptr points at entry {p}, outside the {n_stored} stored "
                        f"entries")
    if n_major is not None and stop == n_major and p1 != n_stored:
        raise error(f"{where}: indptr ends at {p1} but {n_stored} entries are stored")
    return p0, p1


def check_full_pointer(indptr, n_stored: int, *, where: str, major: str = "column",
                       error: type[Exception] = MatrixFormatError) -> None:
    """Check a whole column (or cell) pointer read on the client to cut blocks: it starts at
    0, never decreases and ends at the ``n_stored`` stored entries.

    Examples
    --------
    >>> check_full_pointer(np.array([0, 3, 2, 5]), 5, where="a.zarr")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: a.zarr: indptr decreases at column 1: ...
    """
    ip = np.asarray(indptr)
    if ip.size == 0:
        raise error(f"{where}: indptr is empty")
    if ip[0] != 0:
        raise error(f"{where}: indptr[0] is {int(ip[0])}, expected 0")
    down = np.flatnonzero(np.diff(ip) < 0)
    if down.size:
        j = int(down[0])
        raise error(f"{where}: indptr decreases at {major} {j}: indptr[{j}] = {int(ip[j])} > "
                    f"indptr[{j + 1}] = {int(ip[j + 1])}")
    if ip[-1] != n_stored:
        raise error(f"{where}: indptr ends at {int(ip[-1])} but {n_stored} entries are stored")


def csc_from_arrays(data, indices, indptr, shape: tuple[int, int], *, where: str,
                    major: str | None = None, minor: str | None = None, offset: int = 0,
                    error: type[Exception] = MatrixFormatError) -> sp.csc_matrix:
    """A checked, sorted and marked ``csc_matrix`` from a reader's raw arrays.

    Examples
    --------
    >>> csc_from_arrays(np.ones(2), np.array([1, 0]), np.array([0, 2]), (2, 1),
    ...                 where="x").indices
    array([0, 1], dtype=int32)
    """
    canonical = check_compressed_arrays(indptr, indices, data, shape, where=where, major=major,
                                        minor=minor, offset=offset, error=error)
    blk = sp.csc_matrix((data, indices, indptr), shape=shape)
    if canonical:
        blk.has_canonical_format = True  # also sets has_sorted_indices: no scipy pass
    elif not blk.has_sorted_indices:
        blk = blk.sorted_indices()  # a copy: the caller's arrays stay as they were
    return mark_checked(blk)


def check_block(x, shape: tuple[int, int] | None = None, *, where: str,
                error: type[Exception] = MatrixFormatError) -> bool | None:
    """Check one chunk of any kind before it is converted or computed with.

    numpy arrays: 2-D (and ``shape``).  scipy CSC/CSR/BSR: the compressed structure (skipped for
    blocks marked by :func:`mark_checked`); COO: coordinates in range.  Other scipy formats are
    kept by scipy in safe Python structures.

    Returns whether a CSC/CSR chunk is canonical (indices sorted and unique within each column,
    or row), as found by the check; None when that was not checked.

    Examples
    --------
    >>> check_block(np.ones((2, 3)), (2, 4), where="A")
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: A: block has shape (2, 3), expected (2, 4)
    """
    xshape = tuple(int(s) for s in np.shape(x)) if not sp.issparse(x) else tuple(x.shape)
    if len(xshape) != 2:
        raise error(f"{where}: block must be 2-D, has shape {xshape}")
    if shape is not None and xshape != tuple(int(s) for s in shape):
        raise error(f"{where}: block has shape {xshape}, expected {tuple(shape)}")
    if not sp.issparse(x) or is_checked(x):
        return None
    fmt = x.format
    if fmt in ("csc", "csr"):
        return check_compressed_arrays(x.indptr, x.indices, x.data, xshape, where=where,
                                       layout=fmt, error=error)
    if fmt == "bsr":
        r, c = x.blocksize
        check_compressed_arrays(x.indptr, x.indices, x.data, (xshape[0] // r, xshape[1] // c),
                                where=where, layout="csr", major="block row",
                                minor="block column", error=error)
    elif fmt == "coo":
        coords = getattr(x, "coords", None) or (x.row, x.col)
        if len(coords[0]) != len(x.data) or len(coords[1]) != len(x.data):
            raise error(f"{where}: coordinate arrays and values differ in length")
        for axis, (idx, size) in enumerate(zip(coords, xshape)):
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= size):
                bad = int(np.flatnonzero((idx < 0) | (idx >= size))[0])
                raise error(f"{where}: {('row', 'column')[axis]} index {int(idx[bad])} (entry "
                            f"{bad}) is outside [0, {size})")
    return None


def cast_values(values, dtype, *, where: str, contiguous: bool = False):
    """``values`` as ``dtype`` (no copy when it already is); refuse values that overflow it.

    ``values`` is a numpy array (``contiguous``: return it C-ordered) or a scipy matrix.

    A float64 value beyond float32's range (about 3.4e38) would become ±Inf and the model NaN.

    Raises
    ------
    ValueError
        Naming the largest magnitude and the dtype, suggesting ``dtype="float64"``.

    Examples
    --------
    >>> cast_values(np.array([1.0, 1e39]), np.float32, where="A")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: A: values up to |v| = 1e+39 overflow float32 (largest 3.4e+38); pass dtype=...
    """
    dtype = np.dtype(dtype)
    if values.dtype == dtype and not (contiguous and not values.flags.c_contiguous):
        return values
    try:
        with np.errstate(over="raise"):
            if contiguous:
                return np.ascontiguousarray(values, dtype=dtype)
            return values.astype(dtype)
    except FloatingPointError:
        raise overflow_error(values, dtype, where) from None


def overflow_error(values, dtype, where: str) -> ValueError:
    """The error :func:`cast_values` raises (also for a whole sparse matrix)."""
    dtype = np.dtype(dtype)
    vals = values.data if sp.issparse(values) else np.asarray(values)
    with np.errstate(invalid="ignore"):
        finite = np.abs(vals[np.isfinite(vals)]) if vals.size else vals
    vmax = float(finite.max()) if finite.size else float("inf")
    hint = 'pass dtype="float64" (or rescale the input)' if dtype.itemsize < 8 else \
        "rescale the input"
    return ValueError(f"{where}: values up to |v| = {vmax:.3g} overflow {dtype} (largest "
                      f"{float(np.finfo(dtype).max):.2g}); {hint}")
