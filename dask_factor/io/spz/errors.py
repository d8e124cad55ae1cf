"""Exception raised for malformed StreamPress files."""

from __future__ import annotations

from ..errors import MatrixFormatError

__all__ = ["SpzFormatError"]


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
