"""StreamPress ``.spz`` files (RcppML's format): a byte-compatible reader and writer.

* :class:`SpzFile` - random access to v2 (sparse, chunked), v3 (dense panels) and legacy v1
  files; picklable for Dask workers.
* :func:`read_spz` - read a whole file.
* :func:`write_spz` - write sparse v2 or dense v3 files from scipy/numpy matrices or from a
  stream of column blocks, atomically.
* :class:`SpzFormatError` - raised for every malformed file.

The byte layout follows ``docs/formats.md`` (RcppML 1.0.0); files written here are read by
RcppML's ``st_read`` / ``st_read_dense`` and, where RcppML's encoder is deterministic, are
byte-identical to what RcppML writes.
"""

from __future__ import annotations

from .errors import SpzFormatError
from .reader import SpzFile, read_spz
from .writer import write_spz

__all__ = ["SpzFile", "SpzFormatError", "read_spz", "write_spz"]
