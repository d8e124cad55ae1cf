"""Exceptions for malformed matrices, shared by every reader."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["MatrixFormatError", "MissingElementError", "SizeLimitError", "SourceChangedError",
           "reading"]


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


class SizeLimitError(MatrixFormatError):
    """A source declares more than a read may allocate (see :mod:`dask_factor.io.limits`).

    Raised *before* the allocation: a decompression bomb, a corrupt header, or a genuine file
    bigger than the limits in force (which can be raised).  The message names the source, what
    it declares, the memory it would take and the limit.

    Examples
    --------
    >>> issubclass(SizeLimitError, ValueError)
    True
    """


class SourceChangedError(MatrixFormatError):
    """A file or store changed (replaced, rewritten, removed) after it was opened.

    Raised by the block reads of a lazy matrix (a fit with ``cache="none"`` reads its input at
    every iteration) and by an open :class:`~dask_factor.io.spz.SpzFile`, naming the source and
    what changed (see :mod:`dask_factor.io.stamp`).

    Examples
    --------
    >>> issubclass(SourceChangedError, MatrixFormatError)
    True
    """


class MissingElementError(ValueError, KeyError):
    """A part asked for by name (an AnnData layer, a graph layer's factor) is not in the store.

    A :class:`ValueError` naming the store and what it does hold; also a :class:`KeyError`, for
    callers that catch lookups.

    Examples
    --------
    >>> raise MissingElementError("'a.h5ad': no layer 'nope' (layers: ['counts'])")
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MissingElementError: 'a.h5ad': no layer 'nope' (layers: ['counts'])
    """

    __str__ = ValueError.__str__


def _names(exc: BaseException, path: str) -> bool:
    text = f"{exc} {getattr(exc, 'filename', '') or ''}"
    return path in text or os.path.basename(path.rstrip("/")) in text


@contextlib.contextmanager
def reading(path, what: str = "read it") -> Iterator[None]:
    """Turn what the libraries under a reader raise into errors that name the source.

    zarr, h5py, numcodecs, json and anndata report a damaged store with ``KeyError``,
    ``JSONDecodeError``, ``RuntimeError``, their own exception types or an ``OSError`` without a
    file name.  Inside this block such an error becomes a :class:`MatrixFormatError` naming
    ``path`` (chained to the original); an ``OSError`` with an errno (a missing file, a
    permission) keeps its type and gains the path; our own errors, and ``ValueError`` /
    ``TypeError`` / ``OSError`` that already name the path, pass unchanged.

    Examples
    --------
    >>> with reading("a.zarr"):  # doctest: +ELLIPSIS
    ...     {}["shape"]
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: path='a.zarr': damaged or unreadable, cannot ...
    """
    spath = os.fspath(path)
    try:
        yield
    except MatrixFormatError:
        raise
    except (MemoryError, ImportError):  # not a damaged file (ImportError: a missing extra)
        raise
    except Exception as exc:
        if isinstance(exc, ValueError | TypeError | OSError) and _names(exc, spath):
            raise
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), spath) from exc
        why = (f"{exc.args[0]!r} is missing (KeyError)" if isinstance(exc, KeyError) and exc.args
               else f"{type(exc).__name__}: {exc}")
        raise MatrixFormatError(f"path={spath!r}: damaged or unreadable, cannot {what}: "
                                f"{why}") from exc
