"""Delta coding of the row indices of a CSC matrix, column by column (the zarr scan layout).

Within a column the first row index is stored as is and every later one as its difference to
the previous one; with sorted indices and fewer than 2**16 rows every stored number fits a
``uint16`` and most are small, which a byte-shuffling codec compresses well and decodes fast.

:func:`delta_decode` does not validate: its output goes through
:func:`dask_factor.io.validate.csc_from_arrays` (the one structural check) before any other
kernel reads it; a sum that leaves the int32 range is clamped to 2**31 - 1, which that check
reports as out of range.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INT32_MAX = np.int64(2**31 - 1)


@njit(nogil=True, cache=True)
def delta_encode(indptr, indices, out):
    """Write the per-column differences of ``indices`` into ``out`` (same length); return the
    largest stored number (the caller checks it fits ``out``'s dtype) or -1 for a descent."""
    n = indptr.size - 1
    top = np.int64(0)
    for j in range(n):
        prev = np.int64(0)
        for p in range(indptr[j], indptr[j + 1]):
            v = np.int64(indices[p])
            d = v - prev
            if d < 0:
                return np.int64(-1)
            if d > top:
                top = d
            out[p] = d
            prev = v
    return top


@njit(nogil=True, cache=True)
def delta_decode(indptr, deltas, out):
    """Inverse of :func:`delta_encode`: running sums of ``deltas`` restarted at every column
    start of ``indptr`` (which must be non-decreasing, from 0 to ``deltas.size``, checked by
    the caller), into the int32 array ``out``."""
    n = indptr.size - 1
    for j in range(n):
        acc = np.int64(0)
        for p in range(indptr[j], indptr[j + 1]):
            acc += np.int64(deltas[p])
            out[p] = acc if acc < _INT32_MAX else _INT32_MAX
