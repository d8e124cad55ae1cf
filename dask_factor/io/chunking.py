"""Choosing column-block boundaries by non-zeros (shared by every reader and the engine)."""

from __future__ import annotations

import numpy as np

#: the least default target of stored entries per column block (about 16 MB of CSC at
#: float32/int32; :func:`default_block_nnz` raises it for matrices of many rows)
DEFAULT_BLOCK_NNZ = 2_000_000
#: default blocks hold at least this many stored entries per row of A: a block task's fixed cost
#: grows with the rows (it zeroes, fills and hands to the reduction an m × k partial), its work
#: with its entries (20,000 rows, k = 20, old and new code alternating: a pass from disk took
#: 1.37–1.42 s with 2 M-entry blocks and 1.00–1.15 s with 8 M, threaded; docs/io.md)
ENTRIES_PER_ROW = 400
#: ... and at most this many: a block's float32 values (32 MB) stay within the allocation size
#: that the workers' allocator settings keep on malloc's heaps (``engine.malloc``), and 16 M
#: entries a block were no faster than 8 M at 20,000 rows
MAX_DEFAULT_BLOCK_NNZ = 8_000_000
#: inputs are split into at least this many blocks (when they have the columns or stored blocks
#: for it), so that small matrices spread over threads; fixed, not taken from the machine, so
#: that the chunking and hence the factors do not depend on where the fit runs
MIN_BLOCKS = 8


def min_blocks(n_cols: int) -> int:
    """The fewest blocks ``n_cols`` columns are cut into: :data:`MIN_BLOCKS`, or fewer when
    blocks would hold under 32 columns.

    >>> min_blocks(10_000), min_blocks(100), min_blocks(5)
    (8, 3, 1)
    """
    return min(MIN_BLOCKS, max(1, int(n_cols) // 32))


def default_block_nnz(m: int) -> int:
    """The default target of stored entries per column block of a matrix of ``m`` rows.

    :data:`ENTRIES_PER_ROW` (400) per row, between :data:`DEFAULT_BLOCK_NNZ` (2,000,000) and
    :data:`MAX_DEFAULT_BLOCK_NNZ` (8,000,000).  Every block task of a fit fills an m × k
    partial, so taller matrices get larger blocks.  The rule depends only on the data's shape,
    never on the machine, so the chunking, and hence the factors, are the same everywhere.

    Parameters
    ----------
    m : int
        Rows of A (features, genes).

    Returns
    -------
    int
        Stored entries a block should hold (dense blocks: every entry counts).

    Examples
    --------
    >>> default_block_nnz(2_000), default_block_nnz(12_000), default_block_nnz(60_000)
    (2000000, 4800000, 8000000)
    """
    return int(min(max(DEFAULT_BLOCK_NNZ, ENTRIES_PER_ROW * max(int(m), 0)),
                   MAX_DEFAULT_BLOCK_NNZ))


def default_column_bounds(indptr: np.ndarray, m: int,
                          block_nnz: int | None = None) -> np.ndarray:
    """Column blocks of a sparse matrix of ``m`` rows as readers and writers cut it by default.

    About ``block_nnz`` stored entries a block; by default :func:`default_block_nnz` of the rows,
    and then at least :func:`min_blocks` blocks, the engine's own minimum, so that a fit never
    re-cuts blocks a file holds (through a rechunk: each stored block read by a task of its own,
    then sliced, instead of inside the solve of the one block it is).

    Parameters
    ----------
    indptr : ndarray of shape (n + 1,)
        CSC column pointer.
    m : int
        Rows of the matrix.
    block_nnz : int, optional
        Target entries a block (given: no minimum of blocks).

    Returns
    -------
    bounds : ndarray of int64, shape (n_blocks + 1,)

    Examples
    --------
    >>> indptr = np.arange(0, 30_001, 100)  # 300 columns of 100 entries: fewer than 2 M
    >>> default_column_bounds(indptr, 50)  # the engine's minimum of 8 blocks
    array([  0,  38,  75, 113, 150, 188, 225, 263, 300])
    >>> default_column_bounds(indptr, 50, block_nnz=10_000)
    array([  0, 100, 200, 300])
    """
    if block_nnz:
        return column_bounds_by_nnz(indptr, int(block_nnz))
    n = np.asarray(indptr).size - 1
    return column_bounds_by_nnz(indptr, default_block_nnz(m), min_blocks=min_blocks(n))


def column_bounds_by_nnz(
    indptr: np.ndarray,
    target_nnz: int = DEFAULT_BLOCK_NNZ,
    *,
    min_blocks: int = 1,
    max_cols: int | None = None,
) -> np.ndarray:
    """Split the columns of a CSC matrix into contiguous blocks of about ``target_nnz`` entries.

    Parameters
    ----------
    indptr : ndarray of shape (n + 1,)
        CSC column pointer (any integer dtype; int64 is safe past 2**31 entries).
    target_nnz : int
        Wanted number of stored entries per block.
    min_blocks : int
        At least this many blocks (when there are that many columns), so that small matrices
        still spread over the workers.
    max_cols : int, optional
        Never put more than this many columns in one block.

    Returns
    -------
    bounds : ndarray of int64, shape (n_blocks + 1,)
        Block ``b`` covers columns ``bounds[b]:bounds[b + 1]``; ``bounds[0] == 0`` and
        ``bounds[-1] == n``.  The split depends only on ``indptr`` and the arguments.

    Examples
    --------
    >>> column_bounds_by_nnz(np.array([0, 5, 10, 15, 20]), target_nnz=10)
    array([0, 2, 4])
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n = indptr.size - 1
    if n <= 0:
        return np.array([0], dtype=np.int64)
    nnz = int(indptr[-1] - indptr[0])
    n_blocks = max(int(min_blocks), -(-nnz // max(int(target_nnz), 1)), 1)
    if max_cols:
        n_blocks = max(n_blocks, -(-n // int(max_cols)))
    n_blocks = min(n_blocks, n)
    if nnz == 0:
        bounds = np.linspace(0, n, n_blocks + 1).round().astype(np.int64)
    else:
        # cut where the cumulative nnz (plus a small per-column weight so that empty columns
        # still spread) crosses equal shares
        weight = (indptr[1:] - indptr[:-1]).astype(np.float64) + nnz / (8.0 * n)
        cum = np.concatenate([[0.0], np.cumsum(weight)])
        targets = cum[-1] * np.arange(1, n_blocks) / n_blocks
        cuts = np.searchsorted(cum, targets, side="left")
        bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    bounds = np.unique(bounds)
    if max_cols:
        out = [0]
        for b in bounds[1:]:
            while b - out[-1] > max_cols:
                out.append(out[-1] + int(max_cols))
            out.append(int(b))
        bounds = np.asarray(out, dtype=np.int64)
    return bounds


def uniform_column_bounds(n: int, block_cols: int) -> np.ndarray:
    """Boundaries of blocks of ``block_cols`` columns (the last one shorter).

    Examples
    --------
    >>> uniform_column_bounds(10, 4)
    array([ 0,  4,  8, 10])
    """
    if n <= 0:
        return np.array([0], dtype=np.int64)
    return np.unique(np.append(np.arange(0, n, max(int(block_cols), 1)), n)).astype(np.int64)
