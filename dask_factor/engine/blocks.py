"""Turning any supported input into column blocks the engine can iterate over.

The engine works on a :class:`BlockedMatrix`: a list of Dask tasks, each producing one column
block of A (all m rows, a contiguous range of samples) as ``scipy.sparse.csc_matrix`` or a
C-contiguous numpy array. 2-D chunked dask arrays are accepted: the row chunks of a column range
are stacked *inside* the block's task, so nothing is gathered on the client.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from dask.delayed import Delayed

from .._graph_spec import task
from ..io.blocks import call_reader, reader_source
from ..io.chunking import (
    MIN_BLOCKS,
    column_bounds_by_nnz,
    default_column_bounds,
    min_blocks,
    uniform_column_bounds,
)
from ..io.validate import cast_values, check_block, is_checked
from ..kernels.validate import value_stats


@dataclass
class BlockedMatrix:
    """A features × samples matrix as column-block tasks.

    Attributes
    ----------
    blocks : list of dask.delayed.Delayed
        Block ``b`` evaluates to columns ``bounds[b]:bounds[b+1]`` of A, all rows, as a CSC
        ``scipy.sparse.csc_matrix`` (``sparse``) or a C-contiguous ndarray.
    bounds : ndarray of int64, shape (n_blocks + 1,)
    shape : tuple (m, n)
    dtype : numpy dtype of the values the blocks carry
    sparse : bool
    name : str, a unique token for task keys
    source : the dask array the blocks were made from (None for in-memory inputs)
    delta_blocks : list of dask.delayed.Delayed, optional
        For a zarr scan-layout store read each pass: block ``b`` as stored
        (:class:`~dask_factor.io.delta_csc.DeltaCSC`, checked), for the kernels that read
        delta-coded blocks (ALS); None otherwise, or once the blocks are held in memory.
    """

    blocks: list[Delayed]
    bounds: np.ndarray
    shape: tuple[int, int]
    dtype: np.dtype
    sparse: bool
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    source: Any = None
    delta_blocks: list[Delayed] | None = None

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def hold_in_memory(self, client=None) -> None:
        """Compute the blocks once and keep them (``cache="memory"``): on ``client``'s workers,
        else in this process; every later pass reads the decoded blocks held, never the source
        (nor :attr:`delta_blocks`)."""
        self.blocks = list(client.persist(self.blocks) if client is not None
                           else dask.persist(*self.blocks))
        self.delta_blocks = None


def _to_block(x, dtype, sparse, where="A"):
    """Normalise one (checked) chunk inside a task: CSC with sorted indices, or a C-ordered
    ndarray; values that overflow ``dtype`` are refused (ValueError naming ``where``)."""
    if sparse:
        if not sp.issparse(x):
            x = sp.csc_matrix(np.asarray(x))
        elif not (x.format == "csc" and is_checked(x)):
            # a caller's object gets a wrapper of its own (flags found on it stay ours); one
            # of our readers' keeps its canonical flag (a new wrapper would look for it again)
            x = sp.csc_matrix(x)
        x = cast_values(x, dtype, where=where)
        if not x.has_sorted_indices:
            x = x.sorted_indices()  # a copy: a caller's arrays are never reordered in place
        return x
    if sp.issparse(x):
        x = x.toarray()
    return cast_values(np.asarray(x), dtype, where=where, contiguous=True)


def _stack_rows(dtype, sparse, *parts, where="A"):
    """Stack the row chunks of one column range (2-D chunked dask input)."""
    if len(parts) == 1:
        return _to_block(parts[0], dtype, sparse, where)
    if sparse:
        return _to_block(sp.vstack([sp.csc_matrix(p) for p in parts], format="csc"), dtype, True,
                         where)
    return _to_block(np.vstack([p.toarray() if sp.issparse(p) else p for p in parts]), dtype,
                     False, where)


def _read_block(dtype, sparse, where, shapes, *parts):
    """One column block of a dask input: every chunk is checked (shape and, for scipy chunks
    not built by our readers, structure) before scipy or a kernel touches it, then stacked."""
    for (r0, shape), p in zip(shapes, parts):
        check_block(p, shape, where=where if len(parts) == 1 else f"{where}, rows {r0}:"
                    f"{r0 + shape[0]}")
    return _stack_rows(dtype, sparse, *parts, where=where)


def _read_source_block(reader, start: int, stop: int, m: int, dtype, sparse, where):
    """Columns ``start:stop`` of one of our readers' arrays, read and normalised in one task
    (``call_reader`` checks the block's shape and structure, as the array's own task does)."""
    return _to_block(call_reader(reader, start, stop, m), dtype, sparse, where)


def _read_delta_block(reader, start: int, stop: int, dtype):
    """Columns ``start:stop`` of a scan-layout store as stored (checked by its constructor)."""
    return reader.delta_block(start, stop, dtype)


def _too_few_blocks(A) -> bool:
    """Too few column chunks to keep the workers busy: :func:`as_blocked` splits them."""
    return len(A.chunks[1]) < MIN_BLOCKS and A.shape[1] >= 32 * MIN_BLOCKS


def _slice_cols(x, start, stop, dtype, sparse):
    """Columns ``start:stop`` of an in-memory matrix; CSC input gives views of its arrays."""
    if sparse and sp.issparse(x) and x.format == "csc" and x.dtype == dtype:
        lo, hi = int(x.indptr[start]), int(x.indptr[stop])
        # scipy's constructor copies slices of less than half the parent: assign the arrays to
        # an empty matrix instead, so blocks really are views (read-only use everywhere)
        out = sp.csc_matrix((x.shape[0], stop - start), dtype=dtype)
        out.indices = x.indices[lo:hi]
        out.indptr = (x.indptr[start:stop + 1] - lo).astype(x.indices.dtype, copy=False)
        out.data = x.data[lo:hi]
        out.has_sorted_indices = True  # the parent's indices are sorted (checked by the caller)
        return out
    return _to_block(x[:, start:stop], dtype, sparse)


def _is_sparse_meta(meta) -> bool:
    return meta is not None and sp.issparse(meta)


#: rows of a factor solved per task in a W half-step (at most)
W_ROWS_PER_TASK = 4096


def row_ranges(m: int, rows_per_task: int | None = None) -> list[int]:
    """The bounds of the row-range tasks of a W half-step: the fewest ranges of at most
    ``rows_per_task`` (default :data:`W_ROWS_PER_TASK`) rows, of equal sizes (±1 row), so that
    the tasks of a step take equal time on however many threads or workers.

    Each row is solved on its own, so the split never changes the result.

    Examples
    --------
    >>> row_ranges(13714)
    [0, 3428, 6857, 10285, 13714]
    >>> row_ranges(5, 10), row_ranges(0)
    ([0, 5], [0, 0])
    """
    per = max(1, int(rows_per_task or W_ROWS_PER_TASK))
    n = max(1, -(-int(m) // per))
    return [(i * int(m)) // n for i in range(n)] + [int(m)]


def default_bounds(A=None, block_nnz: int | None = None, *, indptr=None,
                   rows: int | None = None) -> np.ndarray:
    """The engine's one column-blocking rule for data it holds in memory.

    About ``block_nnz`` stored entries a block (dense: every entry counts; default
    :func:`~dask_factor.io.default_block_nnz` of the rows: 400 a row, between 2 M and 8 M)
    and at least :data:`MIN_BLOCKS` blocks when there are 32
    columns a block for them. The rule depends only on the data, never on the machine or the
    cluster, so the same data give the same chunking, and hence the same factors, everywhere.
    Pass the matrix ``A``, or the CSC ``indptr`` of the stored entries per column with the
    ``rows`` they span (inputs that share their columns: the rows of all of them); ``rows``
    is taken from ``A`` when ``A`` is given.

    Examples
    --------
    >>> default_bounds(indptr=np.arange(0, 1001, 10), rows=50, block_nnz=100)
    array([  0,  10,  20,  30,  40,  50,  60,  70,  80,  90, 100])
    """
    if indptr is None:
        rows, n = A.shape
        if sp.issparse(A):
            indptr = sp.csc_matrix(A).indptr
        else:
            indptr = np.arange(n + 1, dtype=np.int64) * rows  # dense: every entry counts
    elif rows is None and not block_nnz:
        raise ValueError("default_bounds: give rows= (or block_nnz=) with indptr")
    n = np.asarray(indptr).size - 1
    if not block_nnz:  # the readers' and writers' default rule
        return default_column_bounds(indptr, rows)
    return column_bounds_by_nnz(indptr, int(block_nnz), min_blocks=min_blocks(n))


def as_blocked(
    A,
    *,
    dtype=np.float32,
    chunks: int | None = None,
    block_nnz: int | None = None,
    name: str = "A",
    bounds: np.ndarray | None = None,
) -> BlockedMatrix:
    """Wrap an input matrix as column-block tasks (no data are read for lazy inputs).

    Parameters
    ----------
    A : ndarray, scipy.sparse matrix/array, or dask.array.Array of shape (m, n)
        Features × samples. Dask arrays may hold numpy or scipy.sparse chunks and be chunked
        along rows too.
    dtype : numpy dtype
        Value dtype of the blocks (float32 or float64); values that overflow it are refused.
    chunks : int, optional
        Columns per block (overrides the non-zero based choice). Dask arrays keep their column
        chunks unless ``chunks`` is given or they have fewer than ``MIN_BLOCKS`` of them.
    block_nnz : int, optional
        Target stored entries per block for in-memory inputs (default
        :func:`~dask_factor.io.default_block_nnz` of the rows).
    name : str
        Names the input in error messages.
    bounds : array of int, optional
        Explicit column bounds (``0, …, n``): cut there, e.g. like another matrix (a mask or a
        second input blocked like A). Overrides ``chunks`` and ``block_nnz``.

    Returns
    -------
    BlockedMatrix

    Raises
    ------
    MatrixFormatError
        A sparse input (checked here, once) or chunk (checked in its task) is malformed: an
        index out of range, an inconsistent ``indptr``, a chunk of the wrong shape.
    ValueError
        A value overflows ``dtype``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> bm = as_blocked(sp.random(100, 400, density=0.1, format="csc", random_state=0))
    >>> bm.shape, bm.n_blocks, bm.sparse
    ((100, 400), 8, True)
    """
    dtype = np.dtype(dtype)
    label = name
    name = uuid.uuid4().hex[:10]
    if isinstance(A, da.Array):
        sparse = _is_sparse_meta(getattr(A, "_meta", None))
        src = reader_source(A) if bounds is None and chunks is None else None
        if src is not None and not _too_few_blocks(A):
            # one of our readers' arrays: each block is read in the task that normalises it
            bounds = np.asarray(src.bounds, dtype=np.int64)
            coded = getattr(src.reader, "delta_coded", None)
            coded = sparse and coded is not None and coded(dtype)
            blocks, delta_blocks = [], [] if coded else None
            for c in range(bounds.size - 1):
                key, a, b = f"block-{name}-{c}", int(bounds[c]), int(bounds[c + 1])
                # the reader and this block's columns only (not the bounds: O(blocks) a task)
                blocks.append(Delayed(key, {key: task(key, _read_source_block, src.reader, a, b,
                                                      src.m, dtype, sparse,
                                                      f"{label}: columns {a}:{b}")}))
                if coded:
                    dkey = f"block-{name}-delta-{c}"
                    delta_blocks.append(Delayed(dkey, {dkey: task(
                        dkey, _read_delta_block, src.reader, a, b, dtype)}))
            return BlockedMatrix(blocks, bounds, tuple(int(s) for s in A.shape), dtype, sparse,
                                 name=name, source=A, delta_blocks=delta_blocks)
        if bounds is not None:
            A = A.rechunk({1: tuple(int(c) for c in np.diff(np.asarray(bounds)))})
        elif chunks is not None:
            A = A.rechunk({1: int(chunks)})
        elif _too_few_blocks(A):
            # too few column chunks to keep the workers busy: split them (a source chunk is
            # still loaded once per pass, the split is a slice of it)
            A = A.rechunk({1: -(-A.shape[1] // MIN_BLOCKS)})
        col_chunks = A.chunks[1]
        bounds = np.concatenate([[0], np.cumsum(col_chunks)]).astype(np.int64)
        grid = A.to_delayed(optimize_graph=True)  # (row blocks, col blocks)
        row_starts = np.concatenate([[0], np.cumsum(A.chunks[0])]).astype(int).tolist()
        shapes = [tuple((row_starts[r], (int(h), int(w))) for r, h in enumerate(A.chunks[0]))
                  for w in col_chunks]
        blocks = [
            dask.delayed(_read_block, pure=True)(
                dtype, sparse, f"{label}: columns {int(bounds[c])}:{int(bounds[c + 1])}",
                shapes[c], *grid[:, c].tolist(), dask_key_name=f"block-{name}-{c}")
            for c in range(grid.shape[1])
        ]
        return BlockedMatrix(blocks, bounds, tuple(int(s) for s in A.shape), dtype, sparse,
                             name=name, source=A)
    sparse = sp.issparse(A)
    if sparse:
        # checked once, before scipy's C++ conversions or a kernel touch it
        canonical = check_block(A, where=f"{label} (in-memory {type(A).__name__})")
        X = cast_values(sp.csc_matrix(A), dtype, where=label)
        if canonical and A.format == "csc":
            X.has_sorted_indices = True  # found by the check: no second pass over the indices
        elif not X.has_sorted_indices:
            X = X.sorted_indices()
    else:
        X = cast_values(np.asarray(A), dtype, where=label)
    if bounds is not None:
        bounds = np.asarray(bounds, dtype=np.int64)
        if bounds[0] != 0 or bounds[-1] != X.shape[1] or np.any(np.diff(bounds) <= 0):
            raise ValueError(f"{label}: column bounds must rise from 0 to {X.shape[1]}")
    elif chunks is not None:
        bounds = uniform_column_bounds(X.shape[1], int(chunks))
    else:
        bounds = default_bounds(X, block_nnz)
    blocks = []
    for b in range(bounds.size - 1):
        part = _slice_cols(X, int(bounds[b]), int(bounds[b + 1]), dtype, sparse)
        blocks.append(Delayed(f"block-{name}-{b}", {f"block-{name}-{b}": part}))
    return BlockedMatrix(blocks, bounds, tuple(int(s) for s in X.shape), dtype, sparse,
                         name=name, source=None)


def block_stats(x):
    """Validation statistics of one block: (Σa², #non-finite, #negative, #non-zero)."""
    vals = x.data if sp.issparse(x) else np.asarray(x).ravel()
    sq, n_bad, _, n_neg, nnz = value_stats(np.ascontiguousarray(vals))
    return np.array([sq, n_bad, n_neg, nnz], dtype=np.float64)


def sum_stats(*parts):
    return np.sum(np.stack(parts), axis=0) if parts else np.zeros(4)


def block_graph(bm: BlockedMatrix, ex, tag: str | None = None, *,
                delta: bool = False) -> tuple[dict, list[str]]:
    """The graph that produces the blocks (read tasks, or the in-memory values) and their keys.

    ``tag`` gives in-memory blocks fresh keys (after a lost worker the old ones may linger). On a
    cluster, values already computed (in-memory inputs) travel once, as futures. ``delta``: the
    consumer reads :class:`~dask_factor.io.delta_csc.DeltaCSC` blocks too, so a scan-layout
    store's blocks are read as stored (``bm.delta_blocks``) where it has them.
    """
    dsk: dict = {}
    keys = []
    source = bm.delta_blocks if delta and bm.delta_blocks is not None else bm.blocks
    for b, blk in enumerate(source):
        key = blk.key
        g = blk.__dask_graph__()
        g = g if isinstance(g, dict) else dict(g)
        if tag is not None and not _is_task_like(g[key]):
            new = f"block-{bm.name}-{tag}-{b}"
            g = {new: g[key]}
            key = new
        keys.append(key)
        dsk.update(g)
    if ex.distributed:  # computed blocks travel once, in contiguous runs per worker
        values = [k for k in keys if not _is_task_like(dsk[k])]
        dsk.update(zip(values, ex.scatter_blocks([dsk[k] for k in values])))
        # blocks read each pass: their tasks prefer the same contiguous runs
        ex.assign_reads([k for k in keys if is_read(dsk[k])])
    return dsk, keys


def computes(dsk: dict) -> bool:
    """Whether a static graph (:func:`block_graph`'s, or a fit's) has tasks to run — blocks read
    from a source each pass — rather than only values held in memory or scattered futures.

    >>> computes({"a": 1}), computes({"a": (sum, [1, 2])})
    (False, True)
    """
    return any(is_read(v) for v in dsk.values())


def is_read(v) -> bool:
    """Whether a static graph value is a task run each pass (a block read or a step of one),
    not a value or a future."""
    return _is_task_like(v) and type(v).__name__ != "Future"


def _is_task_like(v) -> bool:
    return isinstance(v, tuple) or type(v).__module__.startswith(("dask.", "distributed."))
