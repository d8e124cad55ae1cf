"""Common column blocks for several inputs with the same samples (factor_shared, graphs).

Every layer of a graph iterates over the same sample blocks, so all inputs are cut at the same
column bounds: by the non-zeros of all inputs together (in-memory inputs), by the first lazy
input's own chunks (files, dask arrays; the others are re-chunked to match), or uniformly
(``chunks=``). Nothing is row-bound or densified.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from dask.delayed import Delayed

from ..io.chunking import column_bounds_by_nnz, uniform_column_bounds
from .blocks import BLOCK_NNZ, MIN_BLOCKS, BlockedMatrix, as_blocked
from .inputs import PreparedInput


def _block(x, start: int, stop: int, dtype, sparse: bool):
    part = x[:, start:stop]
    if sparse:
        part = sp.csc_matrix(part, dtype=dtype)
        if not part.has_sorted_indices:
            part.sort_indices()
        return part
    return np.ascontiguousarray(part, dtype=dtype)


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
    """Column bounds shared by all inputs (int64, ``n_blocks + 1``)."""
    n = preps[0].shape[1]
    if chunks is not None:
        return uniform_column_bounds(n, int(chunks))
    lazy = [p for p in preps if not _in_memory(p)]
    if lazy:
        return np.asarray(lazy[0].bm.bounds, dtype=np.int64)
    counts = sum(_column_counts(p, d) for p, d in zip(preps, datas))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    min_blocks = min(MIN_BLOCKS, max(1, n // 32))
    return column_bounds_by_nnz(indptr, int(block_nnz or BLOCK_NNZ), min_blocks=min_blocks)


def reblock(prep: PreparedInput, data, bounds: np.ndarray, dtype) -> BlockedMatrix:
    """The input cut at ``bounds`` (reuses the prepared blocks when they already match)."""
    bm = prep.bm
    bounds = np.asarray(bounds, dtype=np.int64)
    if bm.bounds.size == bounds.size and np.array_equal(bm.bounds, bounds):
        return bm
    if not _in_memory(prep):
        A = bm.source
        A = A.rechunk({1: tuple(int(c) for c in np.diff(bounds))})
        return as_blocked(A, dtype=dtype)
    sparse = sp.issparse(data)
    X = sp.csc_matrix(data, dtype=dtype) if sparse else np.asarray(data, dtype=dtype)
    name = f"{bm.name}-rb"
    blocks = []
    for b in range(bounds.size - 1):
        key = f"block-{name}-{b}"
        blocks.append(Delayed(key, {key: _block(X, int(bounds[b]), int(bounds[b + 1]), dtype,
                                                sparse)}))
    return BlockedMatrix(blocks, bounds, prep.shape, np.dtype(dtype), sparse, name=name)


def blocked_inputs(preps: list[PreparedInput], datas: list, *, dtype, chunks=None,
                   block_nnz=None) -> tuple[list[BlockedMatrix], np.ndarray]:
    """All inputs cut at common column bounds; returns (blocked matrices, bounds)."""
    bounds = common_bounds(preps, datas, chunks=chunks, block_nnz=block_nnz)
    return [reblock(p, d, bounds, dtype) for p, d in zip(preps, datas)], bounds
