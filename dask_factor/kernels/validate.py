"""Structural check of a compressed sparse block before any other kernel reads it.

Every kernel indexes ``W[indices[p]]`` and loops ``indptr[j]:indptr[j+1]`` without bounds checks,
so one bad index or a decreasing pointer reads or writes out of bounds.  :func:`check_compressed`
is the single O(nnz) pass that rules that out; the Python side
(:mod:`dask_factor.io.validate`) turns its result into an error message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: result codes of :func:`check_compressed`
OK = 0
BAD_START = 1  # indptr[0] != 0
DECREASING = 2  # indptr[pos + 1] < indptr[pos]
BAD_END = 3  # indptr[-1] != len(indices)
OUT_OF_RANGE = 4  # indices[pos] < 0 or >= n_minor


@njit(nogil=True, cache=True, fastmath=False)
def check_compressed(indptr, indices, n_minor):
    """Check a CSC (or CSR) structure in one pass; return ``(code, pos, canonical)``.

    ``code`` is :data:`OK` or the first problem found (see the module constants), ``pos`` the
    position in ``indptr`` (codes 1-3) or in ``indices`` (code 4) where it is, and ``canonical``
    1 when every column's indices are strictly increasing (sorted, no duplicates; only meaningful
    with ``code == OK``).

    The index pass counts descents (``indices[p] <= indices[p-1]``) over the whole array in one
    branch-free loop that vectorises, then removes those at column starts; when there are none,
    each column's first and last index are its minimum and maximum, so the range check is per
    column.  The first offending position is searched for only when the block is bad.
    """
    n_major = indptr.size - 1
    nnz = indices.size
    if n_major < 0 or indptr[0] != 0:
        return BAD_START, 0, 0
    for j in range(n_major):
        if indptr[j + 1] < indptr[j]:
            return DECREASING, j, 0
    if indptr[n_major] != nnz:
        return BAD_END, n_major, 0
    descents = 0
    for p in range(1, nnz):
        descents += indices[p] <= indices[p - 1]
    for j in range(1, n_major):
        a = indptr[j]
        if a != indptr[j - 1] and a < nnz:  # a column start (each position once)
            descents -= indices[a] <= indices[a - 1]
    lo = np.int64(0)
    hi = np.int64(-1)
    if descents == 0:  # sorted columns: first and last index bound each column
        for j in range(n_major):
            a = indptr[j]
            b = indptr[j + 1]
            if b > a:
                lo = min(lo, np.int64(indices[a]))
                hi = max(hi, np.int64(indices[b - 1]))
    else:
        for p in range(nnz):
            r = np.int64(indices[p])
            lo = min(lo, r)
            hi = max(hi, r)
    if lo < 0 or hi >= n_minor:
        for p in range(nnz):
            r = np.int64(indices[p])
            if r < 0 or r >= n_minor:
                return OUT_OF_RANGE, p, 0
    return OK, -1, 1 if descents == 0 else 0


@njit(nogil=True, cache=True, fastmath=False)
def value_stats(vals):
    """One pass over stored values: ``(Σa², #non-finite, #±inf, #negative, #non-zero)``.

    ``Σa²`` and ``#negative`` count the finite values only (Σa² summed in storage order, so it
    is :func:`~dask_factor.kernels.products.csc_sq_sum` of the finite values to the bit);
    ``#non-zero`` counts NaN as non-zero, like ``np.count_nonzero``.

    Examples
    --------
    >>> import numpy as np
    >>> value_stats(np.array([1.0, -2.0, 0.0, np.nan, np.inf]))
    (5.0, 2, 1, 1, 4)
    """
    s = 0.0
    n_bad = 0
    n_inf = 0
    n_neg = 0
    n_nonzero = 0
    for p in range(vals.size):
        v = np.float64(vals[p])
        if v != 0.0:
            n_nonzero += 1
        if not np.isfinite(v):
            n_bad += 1
            if np.isinf(v):
                n_inf += 1
            continue
        s += v * v
        if v < 0.0:
            n_neg += 1
    return s, n_bad, n_inf, n_neg, n_nonzero
