"""Common column blocks for several inputs with the same samples (factor_shared, graphs).

Every layer of a graph iterates over the same sample blocks, so all inputs are cut at the same
column bounds: by the non-zeros of all inputs together (in-memory inputs), by the first lazy
input's own chunks (files, dask arrays; the others are re-chunked to match), or uniformly
(``chunks=``). Nothing is row-bound or densified.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..io.chunking import uniform_column_bounds
from .blocks import BlockedMatrix, as_blocked, default_bounds
from .inputs import PreparedInput


def _in_memory(prep: PreparedInput) -> bool:
    return prep.bm.source is None


def _column_counts(prep: PreparedInput, data) -> np.ndarray:
    """Stored entries per column of an in-memory input (dense: every entry counts)."""
    m, n = prep.shape
    if sp.issparse(data):
        return np.diff(sp.csc_matrix(data).indptr).astype(np.int64)
    return np.full(n, m, dtype=np.int64)


def common_bounds(preps: list[PreparedInput], datas: list, *, chunks: int | None = None,
                  block_nnz: int | None = None) -> np.ndarray:
    """Column bounds shared by all inputs (int64, ``n_blocks + 1``): the engine's one rule
    (:func:`~.blocks.default_bounds`) applied to the inputs' stored entries together."""
    n = preps[0].shape[1]
    if chunks is not None:
        return uniform_column_bounds(n, int(chunks))
    lazy = [p for p in preps if not _in_memory(p)]
    if lazy:
        return np.asarray(lazy[0].bm.bounds, dtype=np.int64)
    counts = sum(_column_counts(p, d) for p, d in zip(preps, datas))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # every input's block task has a partial of its own rows: the rows of all count
    return default_bounds(indptr=indptr, block_nnz=block_nnz,
                          rows=sum(int(p.shape[0]) for p in preps))


def reblock(prep: PreparedInput, data, bounds: np.ndarray, dtype) -> BlockedMatrix:
    """The input cut at ``bounds`` (reuses the prepared blocks when they already match)."""
    bm = prep.bm
    bounds = np.asarray(bounds, dtype=np.int64)
    if bm.bounds.size == bounds.size and np.array_equal(bm.bounds, bounds):
        return bm
    source = bm.source if not _in_memory(prep) else data
    return as_blocked(source, dtype=dtype, bounds=bounds)


def blocked_inputs(preps: list[PreparedInput], datas: list, *, dtype, chunks=None,
                   block_nnz=None) -> tuple[list[BlockedMatrix], np.ndarray]:
    """All inputs cut at common column bounds; returns (blocked matrices, bounds)."""
    bounds = common_bounds(preps, datas, chunks=chunks, block_nnz=block_nnz)
    return [reblock(p, d, bounds, dtype) for p, d in zip(preps, datas)], bounds
