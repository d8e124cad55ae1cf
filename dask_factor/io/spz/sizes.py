"""What reading a ``.spz`` will allocate, checked against the size limits before it does.

A file declares its shape, every chunk's entries and every panel's size; rANS can code a
billion equal symbols in four bytes, so these declarations are checked against the limits of
:mod:`dask_factor.io.limits` (the file's size on disk times ``max_ratio``, within
``[min_bytes, max_bytes]``): the declarations once, when the file is opened
(:func:`check_declared`), and the size of each read's result before it is decoded
(:func:`check_read`).  The estimates count the arrays returned and the decoding temporaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..limits import check_size
from .errors import SpzSizeLimitError

if TYPE_CHECKING:
    from .layout import Section
    from .reader import SpzFile

__all__ = ["check_declared", "check_read", "DECODE_BYTES_PER_ENTRY", "RESULT_BYTES_PER_ENTRY",
           "PANEL_BYTES_PER_VALUE"]

#: bytes per entry while a sparse chunk decodes: gap and value symbols (1 + 1), gaps and
#: integer values as uint64 (8 + 8), rows (int32/int64) and values (float64)
DECODE_BYTES_PER_ENTRY = 34
#: bytes per entry of a sparse read's result: the decoded parts and their concatenation (a
#: read of whole chunks decodes into the result directly and needs about half)
RESULT_BYTES_PER_ENTRY = 24
#: bytes per value while a dense panel decodes: raw bytes (<= 8), float32 values, a copy
PANEL_BYTES_PER_VALUE = 24


def _check(f: SpzFile, nbytes: int, what: str) -> None:
    check_size(nbytes, source_bytes=f._lay.file_size, what=what, where=f.path,
               limits_=f.limits, error=SpzSizeLimitError)


def check_declared(f: SpzFile) -> None:
    """The header's shape and every chunk or panel against the limits, before any decoding.

    Examples
    --------
    >>> check_declared(SpzFile("x.spz"))  # doctest: +SKIP
    """
    m, n = f.shape
    _check(f, 8 * (max(m, n) + 1),
           f"declares shape {m} x {n} (8 bytes per row and per column for pointers and factors)")
    lay = f._lay
    for sec, what in ((lay.fwd, "forward"), (lay.tsec, "transpose")):
        if sec is None or sec.desc.shape[0] == 0:
            continue
        width = np.diff(sec.bounds)
        if f.is_dense:
            cost = width * sec.rows * PANEL_BYTES_PER_VALUE
            c = int(np.argmax(cost))
            _check(f, int(cost[c]), f"{what} panel {c} declares {sec.rows} x {int(width[c])} "
                                    f"values")
        else:
            nnz = sec.desc["nnz"].astype(np.int64) if f.version == 2 else \
                np.array([f.nnz], np.int64)
            cost = nnz * DECODE_BYTES_PER_ENTRY + 16 * (width + 1)
            c = int(np.argmax(cost))
            _check(f, int(cost[c]), f"{what} chunk {c} declares {int(nnz[c])} entries in "
                                    f"{int(width[c])} columns")


def check_read(f: SpzFile, sec: Section, start: int, stop: int, what: str,
               itemsize: int) -> None:
    """A read of columns ``start:stop`` of a section: its result and its largest chunk.

    Examples
    --------
    >>> f = SpzFile("x.spz")  # doctest: +SKIP
    >>> check_read(f, f._lay.fwd, 0, f.shape[1], "forward", 8)  # doctest: +SKIP
    """
    if stop <= start:
        return
    b = sec.bounds
    c0 = int(np.searchsorted(b, start, side="right") - 1)
    c1 = int(np.searchsorted(b, stop, side="left"))
    if f.is_dense:
        panel = int(np.diff(b[c0 : c1 + 1]).max()) * sec.rows * PANEL_BYTES_PER_VALUE
        need = sec.rows * (stop - start) * itemsize + panel
        _check(f, need, f"{what} {sec.rows} x {stop - start} values (columns {start}:{stop})")
        return
    if f.version == 1:
        nnz = np.array([f.nnz], np.int64)
    else:
        nnz = sec.desc["nnz"][c0:c1].astype(np.int64)
    total = int(nnz.sum())
    need = (total * RESULT_BYTES_PER_ENTRY + int(nnz.max(initial=0)) * DECODE_BYTES_PER_ENTRY
            + 16 * (stop - start + 1))
    _check(f, need, f"{what} columns {start}:{stop} hold {total} entries")
