"""Delta coding of the row indices of a CSC matrix, column by column (the zarr scan layout).

Within a column the first row index is stored as is and every later one as its difference to
the previous one; with sorted indices and fewer than 2**16 rows every stored number fits a
``uint16`` and most are small, which a byte-shuffling codec compresses well and decodes fast.

:func:`delta_decode` does not validate: its output goes through
:func:`dask_factor.io.validate.csc_from_arrays` (the one structural check) before any other
kernel reads it; a sum that leaves the int32 range is clamped to it, which that check reports
as out of range.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INT32_MAX = np.int64(2**31 - 1)
_INT32_MIN = np.int64(-(2**31))


@njit(nogil=True, cache=True, fastmath=False)
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


@njit(nogil=True, cache=True, fastmath=False)
def delta_decode_piece(indptr, deltas, offset, out, state):
    """:func:`delta_decode` of the entries ``offset : offset + deltas.size`` only (a chunk of
    the stored differences at a time).

    The sums are int64; a sum outside the int32 range is clamped to it (then reported by the
    structural check as an index out of range, never wrapped into a valid-looking row). The hot
    loop only notes that one was (the clamp is off the sum's dependency chain), and a column
    stretch where one was is summed again with the clamp: ~2.4× the speed of clamping every
    entry.

    Parameters
    ----------
    indptr : (n + 1,) integer array
        The block's column pointer, from 0, non-decreasing (checked by the caller).
    deltas : (len,) integer array
        The stored differences of entries ``offset : offset + len``.
    offset : int
        Position of ``deltas[0]`` in the block (>= 0).
    out : (nnz,) int32 array
        Receives the row indices; entries past ``indptr[-1]`` or ``out``'s end are not written.
    state : (2,) int64 array
        The column and the running sum carried from one piece to the next: zeros before the
        first piece (offset 0), then left as this call leaves it.

    Raises
    ------
    ValueError
        ``offset`` or ``state[0]`` negative.

    Examples
    --------
    >>> import numpy as np
    >>> indptr, out, state = np.array([0, 3, 5]), np.empty(5, np.int32), np.zeros(2, np.int64)
    >>> deltas = np.array([2, 1, 4, 0, 7], np.uint16)
    >>> delta_decode_piece(indptr, deltas[:2], 0, out, state)
    >>> delta_decode_piece(indptr, deltas[2:], 2, out, state)
    >>> out.tolist()
    [2, 3, 7, 0, 7]
    """
    if offset < 0 or state[0] < 0:
        raise ValueError("delta_decode_piece: offset and state[0] must be >= 0")
    j = state[0]
    acc = state[1]
    p = np.int64(offset)
    end = min(p + deltas.size, np.int64(out.size))
    last = indptr.size - 1
    uoff = np.uint64(offset)
    while p < end:
        while j < last and indptr[j + 1] <= p:  # the columns that end here (empty ones too)
            j += 1
            acc = 0
        if j >= last:
            break
        stop = min(np.int64(indptr[j + 1]), end)
        acc0 = acc
        over = False
        for q in range(np.uint64(p), np.uint64(stop)):  # unsigned: no wraparound checks
            acc += np.int64(deltas[q - uoff])
            out[q] = np.int32(acc)
            over |= (acc > _INT32_MAX) | (acc < _INT32_MIN)
        if over:  # a damaged or hostile store: the same sums, clamped
            acc = acc0
            for q in range(np.uint64(p), np.uint64(stop)):
                acc += np.int64(deltas[q - uoff])
                out[q] = min(max(acc, _INT32_MIN), _INT32_MAX)
        p = stop
    state[0] = j
    state[1] = acc


@njit(nogil=True, cache=True, fastmath=False)
def delta_decode(indptr, deltas, out):
    """Inverse of :func:`delta_encode`: running sums of ``deltas`` restarted at every column
    start of ``indptr`` (which must be non-decreasing, from 0 to ``deltas.size``, checked by
    the caller), into the int32 array ``out``."""
    delta_decode_piece(indptr, deltas, 0, out, np.zeros(2, dtype=np.int64))


@njit(nogil=True, cache=True, fastmath=False)
def check_delta_rows(indptr, deltas, m):
    """The first column whose delta-coded rows leave ``[0, m)``, or -1 when every one is inside.

    A kernel that sums the differences as it reads them (:func:`~.simd.gather_kernel` with
    ``delta=True``) never sees a row this check has not bounded: within a column the differences
    must be non-negative and their running sums (each row) below ``m``; the last sum is the
    largest, so it is the one compared. Sums are int64 of at most 32-bit differences (no
    overflow for fewer than 2**31 entries a column).

    Parameters
    ----------
    indptr : (n + 1,) integer array
        The block's column pointer, from 0, non-decreasing, ending within ``deltas`` (checked by
        the caller).
    deltas : (nnz,) uint8, uint16, int32 or uint32 array
        The stored differences.
    m : int
        Rows of the matrix.

    Examples
    --------
    >>> import numpy as np
    >>> indptr = np.array([0, 2, 3])
    >>> int(check_delta_rows(indptr, np.array([1, 2, 4], np.uint16), 5))
    -1
    >>> int(check_delta_rows(indptr, np.array([1, 2, 5], np.uint16), 5))
    1
    """
    n = indptr.size - 1
    bound = np.int64(m)
    for j in range(n):
        row = np.int64(0)
        low = np.int64(0)
        for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
            d = np.int64(deltas[p])
            row += d
            low = min(low, d)
        if low < 0 or (indptr[j + 1] > indptr[j] and row >= bound):
            return j
    return -1
