"""Exceptions for malformed matrices, shared by every reader."""

from __future__ import annotations

__all__ = ["MatrixFormatError"]


class MatrixFormatError(ValueError):
    """A matrix file, store or in-memory sparse matrix is malformed.

    Raised before any kernel sees the data (out-of-range indices, an inconsistent ``indptr``,
    a block whose shape is not the header's, a path that is not a regular file or directory).
    The message names the source (the path, when there is one), the block and what is wrong.
    It subclasses :class:`ValueError`, so callers catching ``ValueError`` keep working;
    :class:`~dask_factor.io.spz.SpzFormatError` is a subclass.

    Examples
    --------
    >>> raise MatrixFormatError("'a.zarr', columns 0:100: indptr[0] is 5, expected 0")
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: 'a.zarr', columns 0:100: indptr[0] is 5, expected 0
    """
