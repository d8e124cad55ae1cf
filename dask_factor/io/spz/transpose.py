"""Building the transpose section in bounded memory.

The transpose chunks (groups of A's rows) are produced a *group* at a time: one pass over the
forward chunks scatters the entries of the group's rows into a preallocated CSC of Aᵀ, sized
exactly from the per-row counts gathered while the forward section was written.  A group
holds as many transpose chunks as fit in the memory budget (at least one), so memory is
``O(budget + one forward chunk)`` and the number of passes is ``ceil(nnz * 16 / budget)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numba import njit

from .sources import SparseChunk

__all__ = ["count_rows", "plan_groups", "sparse_transpose_chunks", "dense_transpose_panels"]


@njit(nogil=True, cache=True, fastmath=False)
def count_rows(rows, counts):
    """``counts[r] += 1`` for every row index in ``rows`` (O(nnz), unlike bincount's O(m))."""
    for k in range(rows.size):
        counts[rows[k]] += 1


@njit(nogil=True, cache=True, fastmath=False)
def _scatter(indptr, rows, vals, col_start, r0, r1, tptr, fill, tcols, tvals):
    for j in range(indptr.size - 1):
        for k in range(indptr[j], indptr[j + 1]):
            r = np.int64(rows[k])
            if r0 <= r < r1:
                i = r - r0
                p = tptr[i] + fill[i]
                tcols[p] = col_start + j
                tvals[p] = vals[k]
                fill[i] += 1


def plan_groups(row_counts: np.ndarray, width: int, budget_nnz: int) -> list[tuple[int, int]]:
    """Split the transpose chunks ``0 .. ceil(m / width)`` into groups of at most
    ``budget_nnz`` entries (a single oversized chunk forms its own group).

    Examples
    --------
    >>> plan_groups(np.array([5, 5, 5, 5]), 1, 10)
    [(0, 2), (2, 4)]
    """
    m = row_counts.size
    t_count = -(-m // width)
    per = np.add.reduceat(row_counts, np.arange(0, m, width)) if m else np.zeros(0, np.int64)
    groups = []
    t = 0
    while t < t_count:
        t1 = t + 1
        total = int(per[t])
        while t1 < t_count and total + int(per[t1]) <= budget_nnz:
            total += int(per[t1])
            t1 += 1
        groups.append((t, t1))
        t = t1
    return groups


def sparse_transpose_chunks(
    forward: Callable[[], Iterator[SparseChunk]],
    shape: tuple[int, int],
    width: int,
    row_counts: np.ndarray,
    budget_nnz: int,
) -> Iterator[SparseChunk]:
    """Yield the chunks of Aᵀ (columns = rows of A, ``width`` per chunk) in order.

    Parameters
    ----------
    forward : callable
        Returns a fresh iterator over A's forward chunks (called once per group).
    shape : (m, n)
        Shape of A.
    width : int
        Transpose chunk width (RcppML uses the forward chunk width).
    row_counts : ndarray of int64, shape (m,)
        Stored entries per row of A.
    budget_nnz : int
        Entries per group.

    Yields
    ------
    SparseChunk
        ``col_start`` is the first A-row of the chunk; rows are A's column indices.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from dask_factor.io.spz.sources import SparseSource
    >>> src = SparseSource(sp.csc_matrix(np.arange(6.0).reshape(2, 3)))
    >>> [c.rows.tolist() for c in sparse_transpose_chunks(
    ...     lambda: src.sparse_chunks(3), (2, 3), 1, np.array([2, 3]), 10)]
    [[1, 2], [0, 1, 2]]
    """
    m, n = shape
    idx_t = np.int32 if n <= 2**31 - 1 else np.int64
    for t0, t1 in plan_groups(np.asarray(row_counts, np.int64), width, budget_nnz):
        r0, r1 = t0 * width, min(t1 * width, m)
        counts = row_counts[r0:r1]
        tptr = np.zeros(r1 - r0 + 1, np.int64)
        np.cumsum(counts, out=tptr[1:])
        total = int(tptr[-1])
        tcols = np.empty(total, idx_t)
        tvals = np.empty(total, np.float64)
        fill = np.zeros(r1 - r0, np.int64)
        for ch in forward():
            _scatter(ch.indptr, ch.rows, ch.vals, ch.col_start, r0, r1, tptr, fill, tcols, tvals)
        if not np.array_equal(fill, counts):
            raise RuntimeError("transpose pass saw a different matrix than the forward pass")
        for t in range(t0, t1):
            a, b = t * width - r0, min((t + 1) * width, m) - r0
            s, e = int(tptr[a]), int(tptr[b])
            yield SparseChunk(t * width, tptr[a : b + 1] - s, tcols[s:e], tvals[s:e])


def dense_transpose_panels(
    forward: Callable[[], Iterator[tuple[int, np.ndarray]]],
    shape: tuple[int, int],
    width: int,
    budget_bytes: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_start, panel)`` with ``panel = A[row_start:row_start+k, :].T`` (n × k).

    Groups of transpose panels are filled by passes over the forward panels, each group
    holding at most ``budget_bytes`` of float64 (at least one panel).

    Examples
    --------
    >>> A = np.arange(6.0).reshape(2, 3)
    >>> [p.shape for _, p in dense_transpose_panels(lambda: iter([(0, A)]), (2, 3), 1, 1)]
    [(3, 1), (3, 1)]
    """
    m, n = shape
    per_group = max(1, budget_bytes // max(1, 8 * n * width)) * width
    for r0 in range(0, m, per_group):
        r1 = min(m, r0 + per_group)
        buf = np.empty((r1 - r0, n), np.float64)
        for start, panel in forward():
            buf[:, start : start + panel.shape[1]] = panel[r0:r1, :]
        for a in range(r0, r1, width):
            b = min(a + width, r1)
            yield a, buf[a - r0 : b - r0, :].T
