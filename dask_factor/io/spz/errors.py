"""Exception raised for malformed StreamPress files."""

from __future__ import annotations

from ..errors import MatrixFormatError, SizeLimitError, SourceChangedError

__all__ = ["SpzFormatError", "SpzSizeLimitError", "SpzSourceChangedError"]


class SpzFormatError(MatrixFormatError):
    """A ``.spz`` file is malformed, truncated, corrupted or of an unsupported version.

    The message always names the file and what is wrong.  It subclasses
    :class:`~dask_factor.io.errors.MatrixFormatError` (a :class:`ValueError`), so that callers
    which already catch ``ValueError`` keep working.

    Examples
    --------
    >>> raise SpzFormatError("x.spz: bad magic b'ABCD' (expected b'SPRZ')")
    Traceback (most recent call last):
    ...
    dask_factor.io.spz.errors.SpzFormatError: x.spz: bad magic b'ABCD' (expected b'SPRZ')
    """


class SpzSizeLimitError(SpzFormatError, SizeLimitError):
    """A ``.spz`` file declares more than a read may allocate (:mod:`dask_factor.io.limits`).

    Both an :class:`SpzFormatError` and a :class:`~dask_factor.io.errors.SizeLimitError`.

    Examples
    --------
    >>> issubclass(SpzSizeLimitError, SpzFormatError)
    True
    """


class SpzSourceChangedError(SpzFormatError, SourceChangedError):
    """An open ``.spz`` file changed under its reader (both error types).

    Examples
    --------
    >>> issubclass(SpzSourceChangedError, SourceChangedError)
    True
    """
