"""Column blocks as dask graphs and as streams: the pieces every reader and writer shares.

A block's task holds only a small picklable *reader* (a frozen dataclass with a path and a
column range, see :func:`array_from_reader`) and calls it on the worker, so nothing but headers
and block boundaries is read on the client.  Writers consume a :class:`BlockStream`, one block at
a time, inside :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .._graph_spec import ref, task
from .chunking import column_bounds_by_nnz, default_block_nnz, default_column_bounds
from .targets import replacing
from .validate import cast_values, check_block, mark_checked

PathLike = str | os.PathLike

# --------------------------------------------------------------------------- blocks and graphs


def empty_meta(dtype, sparse: bool):
    """The zero-size chunk prototype dask needs to know the chunk type.

    Examples
    --------
    >>> m = empty_meta(np.float32, True)
    >>> m.format, m.shape, m.dtype
    ('csc', (0, 0), dtype('float32'))
    """
    if sparse:
        return sp.csc_matrix((0, 0), dtype=dtype)
    return np.empty((0, 0), dtype=dtype)


def to_block(x, dtype=None, sparse: bool = True, *, where: str | None = None,
             checked: bool = False):
    """Normalise one column block: CSC with sorted indices, or a C-contiguous ndarray.

    Parameters
    ----------
    x : ndarray or scipy.sparse matrix of shape (m, n_b)
    dtype : numpy dtype, optional
        Value dtype wanted (default: keep); values that overflow it are refused.
    sparse : bool
        Return ``scipy.sparse.csc_matrix`` (True) or ndarray (False).
    where : str, optional
        Check ``x`` first (:func:`~dask_factor.io.validate.check_block`), naming ``where`` in
        the error: for blocks that do not come from one of our readers or a checked matrix.
        A new CSC block made from a checked ``x`` is marked as checked.
    checked : bool
        ``x`` was checked by the caller (with ``where``): do not check it again.

    Raises
    ------
    MatrixFormatError
        ``where`` given and ``x`` is malformed.
    ValueError
        A value overflows ``dtype``.

    Examples
    --------
    >>> to_block(np.eye(2), np.float32).format
    'csc'
    """
    if where is not None and not checked:
        check_block(x, where=where)
    what = where or "block"
    if sparse:
        orig = x
        if not sp.issparse(x):
            x = sp.csc_matrix(np.asarray(x))
        if x.format != "csc" or not isinstance(x, sp.csc_matrix):
            x = sp.csc_matrix(x)
        if dtype is not None and x.dtype != dtype:
            x = cast_values(x, dtype, where=what)
        if not x.has_sorted_indices:
            x = x.sorted_indices()
        return mark_checked(x) if where is not None and x is not orig else x
    if sp.issparse(x):
        x = x.toarray()
    if dtype is None:
        return np.ascontiguousarray(x)
    return cast_values(np.asarray(x), dtype, where=what, contiguous=True)


def call_reader(reader, start: int, stop: int, m: int | None = None):
    """Run a reader in its task; its block is checked (shape, structure) before it leaves."""
    blk = reader(start, stop)
    path = getattr(reader, "path", None)
    where = (f"path={path!r}" if path else type(reader).__name__) + f", columns {start}:{stop}"
    check_block(blk, None if m is None else (m, stop - start), where=where)
    return blk


def array_from_reader(
    reader: Callable[[int, int], Any],
    shape: tuple[int, int],
    bounds: np.ndarray,
    dtype,
    sparse: bool,
    token: str,
    prefix: str = "open",
) -> da.Array:
    """A dask array whose block ``b`` is ``reader(bounds[b], bounds[b+1])``, run in its task.

    Parameters
    ----------
    reader : picklable callable ``(start, stop) -> block``
        Loads columns ``start:stop`` (all rows) as a normalised block (see :func:`to_block`).
        It should be a small frozen dataclass (path and options), never hold the data.
    shape : (m, n)
    bounds : ndarray of int64, shape (n_blocks + 1,)
        Column block boundaries, ``bounds[0] == 0`` and ``bounds[-1] == n``.
    dtype : numpy dtype of the blocks
    sparse : bool
        Chunk type: ``scipy.sparse.csc_matrix`` (True) or numpy (False).
    token : str
        Deterministic identity of the source (path, mtime, options) for the key names.

    Returns
    -------
    dask.array.Array of shape (m, n), one row chunk, ``len(bounds) - 1`` column chunks.

    Examples
    --------
    >>> x = array_from_reader(lambda a, b: np.ones((2, b - a)), (2, 4), np.array([0, 2, 4]),
    ...                       np.float64, False, "ones")
    >>> x.chunks
    ((2,), (2, 2))
    """
    m, n = (int(s) for s in shape)
    bounds = np.asarray(bounds, dtype=np.int64)
    if bounds[0] != 0 or bounds[-1] != n:
        raise ValueError(f"bounds must run from 0 to n={n}, got {bounds[0]}..{bounds[-1]}")
    name = f"{prefix}-{tokenize(token, m, n, bounds.tobytes(), str(np.dtype(dtype)), sparse)}"
    dsk = {}
    for b in range(bounds.size - 1):
        key = (name, 0, b)
        dsk[key] = task(key, call_reader, reader, int(bounds[b]), int(bounds[b + 1]), m)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    if n == 0:
        col_chunks: tuple[int, ...] = (0,)
    else:
        col_chunks = tuple(int(c) for c in np.diff(bounds))
    arr = da.Array(graph, name, ((m,), col_chunks), meta=empty_meta(np.dtype(dtype), sparse))
    # this very array (not one derived from it) may be read by the engine one task per block
    arr._dask_factor_source = ReaderSource(reader, bounds, m)  # see reader_source
    return arr


@dataclass(frozen=True)
class ReaderSource:
    """How :func:`array_from_reader` built an array: block ``b`` is ``reader(bounds[b],
    bounds[b + 1])`` with ``m`` rows."""

    reader: Callable[[int, int], Any]
    bounds: np.ndarray
    m: int


def reader_source(x) -> ReaderSource | None:
    """The reader behind ``x`` if ``x`` is an array made by :func:`array_from_reader` itself
    (any operation on it gives a new array without one), else None.

    The engine then reads each block in the task that normalises it, instead of a chunk task
    and a block task: half the tasks per block and pass, which a cluster's scheduler feels.

    Examples
    --------
    >>> x = array_from_reader(lambda a, b: np.ones((2, b - a)), (2, 4), np.array([0, 2, 4]),
    ...                       np.float64, False, "ones")
    >>> reader_source(x).bounds, reader_source(x[:, :2]) is None
    (array([0, 2, 4]), True)
    """
    src = getattr(x, "_dask_factor_source", None)
    if not isinstance(src, ReaderSource) or tuple(x.chunks[1]) != tuple(
            int(c) for c in np.diff(src.bounds)) or x.chunks[0] != (src.m,):
        return None
    return src


def merge_bounds(stored: np.ndarray, stored_nnz_offsets: np.ndarray, block_nnz: int,
                 min_blocks: int = 1) -> np.ndarray:
    """Group consecutive stored blocks into blocks of about ``block_nnz`` entries.

    ``stored_nnz_offsets[i]`` is the number of entries before stored block ``i``.  Blocks are
    never split: the result is a subset of ``stored``, at least ``min_blocks`` blocks when there
    are that many stored ones, and ``stored`` itself when ``block_nnz`` is 1 or every stored
    block already holds ``block_nnz`` entries or more.

    Examples
    --------
    >>> merge_bounds(np.array([0, 2, 4, 6, 8]), np.array([0, 10, 20, 30, 40]), 20)
    array([0, 4, 8])
    >>> merge_bounds(np.array([0, 2, 4, 6, 8]), np.array([0, 10, 20, 30, 40]), 20, min_blocks=4)
    array([0, 2, 4, 6, 8])
    >>> merge_bounds(np.array([0, 2, 4, 6]), np.array([0, 10, 30, 35]), 5)
    array([0, 2, 4, 6])
    """
    offsets = np.asarray(stored_nnz_offsets, dtype=np.int64)
    if offsets.size < 2 or block_nnz <= 1 or int(np.diff(offsets).min()) >= block_nnz:
        return np.asarray(stored, dtype=np.int64)
    coarse = column_bounds_by_nnz(offsets, block_nnz, min_blocks=min_blocks)
    return np.asarray(stored, dtype=np.int64)[coarse]


def file_token(path: PathLike) -> str:
    """Identity of a file or store for task names: absolute path, size and mtime.

    Examples
    --------
    >>> file_token("counts.zarr")  # doctest: +SKIP
    '/data/counts.zarr:4096:1764280000000000000'
    """
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


# --------------------------------------------------------------------------- in-memory sources


def _dense_bounds(m: int, n: int, block_nnz: int) -> np.ndarray:
    cols = max(1, int(block_nnz) // max(m, 1))
    return np.unique(np.append(np.arange(0, n, cols), n)).astype(np.int64)


def _from_blocks(blocks: list, shape, bounds, dtype, sparse: bool, token: str) -> da.Array:
    name = f"from-memory-{token}"
    dsk = {(name, 0, b): blk for b, blk in enumerate(blocks)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    m, n = shape
    chunks = ((m,), tuple(int(c) for c in np.diff(bounds)) if n else (0,))
    return da.Array(graph, name, chunks, meta=empty_meta(dtype, sparse))


def from_memory(A, *, block_nnz: int | None = None, dtype=None) -> da.Array:
    """Column-block dask array from an in-memory numpy or scipy.sparse matrix.

    The blocks are slices of ``A`` held in the graph (for an in-memory source the data is the
    source); a sparse ``A`` becomes CSC with sorted indices, blocks are cut by non-zeros.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix/array of shape (m, n)
    block_nnz : int, optional
        Target stored entries per block (dense: ``m * columns``); default
        :func:`~dask_factor.io.default_block_nnz` of the rows.
    dtype : numpy dtype, optional

    Examples
    --------
    >>> from_memory(np.ones((3, 10)), block_nnz=12).chunks
    ((3,), (4, 4, 2))
    """
    if A.ndim != 2:
        raise ValueError(f"source must be 2-D (features x samples), got shape {A.shape}")
    m, n = (int(s) for s in A.shape)
    target = int(block_nnz or default_block_nnz(m))
    if sp.issparse(A):
        where = f"source (in-memory {type(A).__name__})"
        check_block(A, where=where)  # once, before scipy's C++ conversions touch it
        X = sp.csc_matrix(A)
        if dtype is not None:
            X = cast_values(X, dtype, where=where)
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        bounds = default_column_bounds(X.indptr, m, block_nnz)
        blocks = [mark_checked(to_block(X[:, a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        token = tokenize(X.indptr, X.indices, X.data, target)
        return _from_blocks(blocks, (m, n), bounds, X.dtype, True, token)
    X = np.asarray(A) if dtype is None else \
        cast_values(np.asarray(A), dtype, where="source (in-memory array)")
    bounds = _dense_bounds(m, n, target)
    blocks = [np.ascontiguousarray(X[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return _from_blocks(blocks, (m, n), bounds, X.dtype, False, tokenize(X, target))


def _column_nnz(block, where: str = "chunk") -> np.ndarray:
    if sp.issparse(block):
        check_block(block, where=where)
        return np.diff(sp.csc_matrix(block).indptr).astype(np.int64)
    return np.count_nonzero(np.asarray(block), axis=0).astype(np.int64)


def _rows_to_block(dtype, sparse, where, shapes, *parts):
    """Stack the row chunks of one column range, each checked against its chunk shape first."""
    for (r0, shape), p in zip(shapes, parts):
        check_block(p, shape, where=where if len(parts) == 1 else f"{where}, rows {r0}:"
                    f"{r0 + shape[0]}")
    if len(parts) > 1:
        parts = (sp.vstack(parts, format="csc") if sparse else
                 np.vstack([p.toarray() if sp.issparse(p) else p for p in parts]),)
    return to_block(parts[0], dtype, sparse, where=where, checked=True)


#: key prefixes of arrays whose blocks are already normalised (see :func:`to_block`)
_NORMALISED_PREFIXES = ("open-", "from-memory-", "normalise-", "simulate-")


def from_dask(x: da.Array, *, block_nnz: int | None = None, dtype=None) -> da.Array:
    """Normalise an existing dask array to one row chunk of CSC/numpy column blocks.

    Row chunks are stacked inside each column block's task.  With ``block_nnz`` the per-column
    non-zero counts are computed first (one pass over the data, only ``n`` integers come back)
    and the columns are re-cut by non-zeros; without it the column chunks are kept.

    Examples
    --------
    >>> from_dask(da.ones((4, 6), chunks=(2, 3))).chunks
    ((4,), (3, 3))
    """
    if x.ndim != 2:
        raise ValueError(f"source must be 2-D (features x samples), got shape {x.shape}")
    sparse = sp.issparse(getattr(x, "_meta", None))
    dtype = np.dtype(dtype or x.dtype)
    if (block_nnz is None and len(x.chunks[0]) == 1 and dtype == x.dtype
            and type(x._meta) in (sp.csc_matrix, np.ndarray)
            and x.name.startswith(_NORMALISED_PREFIXES)):
        return x  # already one of ours: normalised blocks
    if block_nnz is not None:
        counts = x.map_blocks(
            lambda b: _column_nnz(b, f"dask array {x.name!r}")[None, :], dtype=np.int64,
            meta=np.empty((0, 0), np.int64)).sum(axis=0).compute()
        indptr = np.concatenate([[0], np.cumsum(counts)])
        bounds = column_bounds_by_nnz(indptr, int(block_nnz))
        x = x.rechunk({1: tuple(int(c) for c in np.diff(bounds))})
    name = f"normalise-{tokenize(x.name, str(dtype), sparse)}"
    dsk = {}
    row_starts = np.concatenate([[0], np.cumsum(x.chunks[0])]).astype(int).tolist()
    col_starts = np.concatenate([[0], np.cumsum(x.chunks[1])]).astype(int).tolist()
    for c in range(len(x.chunks[1])):
        keys = [(x.name, r, c) for r in range(len(x.chunks[0]))]
        width = int(x.chunks[1][c])
        shapes = tuple((row_starts[r], (int(h), width)) for r, h in enumerate(x.chunks[0]))
        where = f"dask array {x.name!r}, columns {col_starts[c]}:{col_starts[c] + width}"
        dsk[(name, 0, c)] = task((name, 0, c), _rows_to_block, dtype, sparse, where, shapes,
                                 *[ref(k) for k in keys])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, ((x.shape[0],), x.chunks[1]), meta=empty_meta(dtype, sparse))


# --------------------------------------------------------------------------- streaming writes


@dataclass
class BlockStream:
    """A matrix as an ordered stream of column blocks, which every writer consumes.

    Attributes
    ----------
    shape : (m, n)
    dtype : numpy dtype of the values
    sparse : bool
        Blocks are ``csc_matrix`` (True) or ndarray (False).
    bounds : ndarray of int64, shape (n_blocks + 1,)
        Column block boundaries, known before the first block is produced.
    blocks : callable returning an iterator of blocks in column order
    nnz : int or None
        Total stored entries when known up front.
    row_meta, col_meta : DataFrame or None

    Examples
    --------
    >>> blocks = [np.ones((2, 3)), np.ones((2, 1))]
    >>> s = BlockStream((2, 4), np.dtype("float64"), False, np.array([0, 3, 4]),
    ...                 lambda: iter(blocks))
    >>> [(start, b.shape) for start, b in s]
    [(0, (2, 3)), (3, (2, 1))]
    """

    shape: tuple[int, int]
    dtype: np.dtype
    sparse: bool
    bounds: np.ndarray
    blocks: Callable[[], Iterator[Any]]
    nnz: int | None = None
    row_meta: pd.DataFrame | None = None
    col_meta: pd.DataFrame | None = None
    progress: Callable[[int], None] | None = field(default=None, repr=False)

    @property
    def n_blocks(self) -> int:
        return int(self.bounds.size - 1)

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(col_start, block)`` pairs, reporting progress per block."""
        for b, blk in enumerate(self.blocks()):
            yield int(self.bounds[b]), blk
            if self.progress is not None:
                self.progress(1)


#: blocks a stream computes ahead, side by side (:func:`stream_from_array`); memory holds at
#: most this many blocks plus the one being written
STREAM_PREFETCH = max(1, min(os.cpu_count() or 1, 8))


def iter_column_blocks(x: da.Array, *, prefetch: int = 1) -> Iterator[Any]:
    """Compute the column blocks of ``x`` in order (never the whole matrix).

    ``prefetch`` blocks are computed ahead, side by side in as many background threads, while
    the caller consumes the current one, so at most ``prefetch + 1`` blocks are in memory.
    Blocks are yielded in column order whatever order they finish in.

    Examples
    --------
    >>> [b.shape for b in iter_column_blocks(da.ones((2, 5), chunks=(2, 2)))]
    [(2, 2), (2, 2), (2, 1)]
    """
    x = from_dask(x)  # one row chunk of checked blocks (ours are passed through)
    n_blocks = len(x.chunks[1])
    if n_blocks == 0 or x.shape[1] == 0:
        return
    if prefetch <= 0:
        for c in range(n_blocks):
            yield x.blocks[0, c].compute()
        return
    with ThreadPoolExecutor(max_workers=prefetch) as pool:
        pending = [pool.submit(x.blocks[0, c].compute) for c in range(min(prefetch, n_blocks))]
        for c in range(n_blocks):
            blk = pending.pop(0).result()
            if c + prefetch < n_blocks:
                pending.append(pool.submit(x.blocks[0, c + prefetch].compute))
            yield blk


def stream_from_array(x: da.Array, *, row_meta=None, col_meta=None, nnz=None) -> BlockStream:
    """Wrap a column-block dask array (see ``open_matrix``) as a :class:`BlockStream`.

    Examples
    --------
    >>> stream_from_array(da.ones((2, 5), chunks=(2, 2))).bounds
    array([0, 2, 4, 5])
    """
    x = from_dask(x)  # one row chunk of checked blocks (ours are passed through)
    sparse = sp.issparse(x._meta)
    bounds = np.concatenate([[0], np.cumsum(x.chunks[1])]).astype(np.int64)
    if x.shape[1] == 0:
        bounds = np.array([0], dtype=np.int64)
    return BlockStream(
        shape=(int(x.shape[0]), int(x.shape[1])), dtype=np.dtype(x.dtype), sparse=sparse,
        bounds=bounds, blocks=lambda: (to_block(b, x.dtype, sparse)
                                       for b in iter_column_blocks(x, prefetch=STREAM_PREFETCH)),
        nnz=nnz, row_meta=row_meta, col_meta=col_meta,
    )


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False,
                format: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name (``.<name>.tmp-<host>-<pid>-<random>``) is in the same directory, so the
    final rename is atomic for files and a quick swap for directories.  On any error the
    temporary is removed and ``path`` is left as it was; temporaries of a killed earlier write
    to ``path`` are removed first (see :mod:`dask_factor.io.targets`).

    Parameters
    ----------
    path : path-like
    overwrite : bool
        Replace an existing ``path`` — only if it is a ``format`` file or store we recognise
        (see :data:`~dask_factor.io.targets.REPLACEABLE`); with ``format=None`` any regular file
        or zarr store, never another directory.
    format : str, optional
        The format being written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False, or holds something ``overwrite`` may not
        replace (checked before anything is created).
    FileNotFoundError
        If the parent directory does not exist.

    Examples
    --------
    >>> with atomic_path("out.zarr", format="zarr") as tmp:  # doctest: +SKIP
    ...     write_everything_to(tmp)
    """
    with replacing(path, fmt=format, overwrite=overwrite) as tmp:
        yield tmp
