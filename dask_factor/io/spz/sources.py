"""Writer inputs: in-memory matrices and streams of column blocks, re-chunked to file chunks.

A *block stream* is an iterable of ``(col_start, block)`` pairs in column order, where each
``block`` is a scipy.sparse matrix or a 2-D numpy array with ``m`` rows; the blocks must tile
``[0, n)`` exactly (any widths).  It is *re-iterable* when ``iter(stream) is not stream``
(e.g. an object whose ``__iter__`` starts a new pass); one-shot iterators are read once.

Every source yields, for a chunk width ``w``, either sparse chunks (:class:`SparseChunk`:
local CSC with sorted, unique rows and float64 values) or dense panels (``(m, k)`` arrays).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..validate import check_block

__all__ = ["SparseChunk", "Source", "make_source", "SpillSource", "ValueStats"]


@dataclass
class SparseChunk:
    """Columns ``[col_start, col_start + k)`` as local CSC (indptr starts at 0)."""

    col_start: int
    indptr: np.ndarray
    rows: np.ndarray
    vals: np.ndarray

    @property
    def ncols(self) -> int:
        return int(self.indptr.size - 1)


@dataclass
class ValueStats:
    """What "auto" needs: are all values non-negative integers, and their maximum."""

    count: int = 0
    all_uint: bool = True
    vmax: float = 0.0
    lossy_f32: bool = False

    def update(self, vals: np.ndarray) -> None:
        from .codecs import scan_values

        if vals.size == 0:
            return
        self.count += int(vals.size)
        all_uint, vmax, lossy = scan_values(np.ascontiguousarray(vals, dtype=np.float64).ravel())
        self.all_uint = self.all_uint and bool(all_uint)
        if not np.isnan(vmax):
            self.vmax = max(self.vmax, float(vmax))
        self.lossy_f32 = self.lossy_f32 or bool(lossy)


def _to_f64(x: np.ndarray, what: str) -> np.ndarray:
    if np.iscomplexobj(x):
        raise ValueError(f"{what}: complex values cannot be stored in .spz")
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: values must be numeric, got dtype {x.dtype}") from exc


def _canonical_csc(a: Any, what: str) -> sp.csc_matrix:
    m = sp.csc_matrix(a)
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    return m


def _csc_chunk(a: sp.csc_matrix, lo: int, hi: int, col_start: int) -> SparseChunk:
    s, e = int(a.indptr[lo]), int(a.indptr[hi])
    indptr = a.indptr[lo : hi + 1].astype(np.int64) - s
    return SparseChunk(col_start, indptr, a.indices[s:e], _to_f64(a.data[s:e], "source"))


class Source:
    """Base class: ``shape``, ``dense_input``, ``reiterable``, and the two chunk iterators."""

    shape: tuple[int, int]
    dense_input: bool
    reiterable: bool = True

    def sparse_chunks(self, width: int) -> Iterator[SparseChunk]:
        raise NotImplementedError

    def dense_panels(self, width: int) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:  # spill files
        pass


class SparseSource(Source):
    """An in-memory scipy.sparse matrix (made canonical CSC once)."""

    def __init__(self, a: Any) -> None:
        self.a = _canonical_csc(a, "source")
        if np.iscomplexobj(self.a.data):
            raise ValueError("source: complex values cannot be stored in .spz")
        self.shape = tuple(int(x) for x in self.a.shape)
        self.dense_input = False

    def sparse_chunks(self, width: int) -> Iterator[SparseChunk]:
        n = self.shape[1]
        for lo in range(0, n, width):
            yield _csc_chunk(self.a, lo, min(lo + width, n), lo)

    def dense_panels(self, width: int) -> Iterator[tuple[int, np.ndarray]]:
        n = self.shape[1]
        for lo in range(0, n, width):
            yield lo, _to_f64(self.a[:, lo : min(lo + width, n)].toarray(), "source")


class DenseSource(Source):
    """An in-memory 2-D numpy array."""

    def __init__(self, a: np.ndarray) -> None:
        if a.ndim != 2:
            raise ValueError(f"source: expected a 2-D array, got shape {a.shape}")
        if np.iscomplexobj(a):
            raise ValueError("source: complex values cannot be stored in .spz")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise ValueError(f"source: values must be numeric, got dtype {a.dtype}")
        self.a = a
        self.shape = (int(a.shape[0]), int(a.shape[1]))
        self.dense_input = True

    def sparse_chunks(self, width: int) -> Iterator[SparseChunk]:
        n = self.shape[1]
        for lo in range(0, n, width):
            blk = sp.csc_matrix(_to_f64(self.a[:, lo : min(lo + width, n)], "source"))
            yield _csc_chunk(blk, 0, blk.shape[1], lo)

    def dense_panels(self, width: int) -> Iterator[tuple[int, np.ndarray]]:
        n = self.shape[1]
        for lo in range(0, n, width):
            yield lo, self.a[:, lo : min(lo + width, n)]


class StreamSource(Source):
    """A stream of ``(col_start, block)`` pairs, re-chunked to the file's chunk width."""

    def __init__(self, stream: Iterable, shape: tuple[int, int], dense: bool | None) -> None:
        self.stream = stream
        self.shape = shape
        self.reiterable = iter(stream) is not stream
        self._peeked: tuple[Any, Iterator] | None = None  # first item and the rest
        self._used = False
        if dense is None:  # decide from the first block
            it = iter(stream)
            first = next(it, None)
            if first is not None:
                self._peeked = (first, it)
            dense = first is not None and not sp.issparse(_block_of(first))
        self.dense_input = bool(dense)

    def _blocks(self) -> Iterator[tuple[int, Any]]:
        if self._peeked is not None:
            first, rest = self._peeked
            self._peeked = None
            self._used = True
            yield first
            yield from rest
            return
        if self._used and not self.reiterable:
            raise RuntimeError("source: a one-shot block iterator cannot be read twice")
        self._used = True
        yield from iter(self.stream)

    def _pieces(self, width: int, dense: bool) -> Iterator[tuple[int, list]]:
        m, n = self.shape
        nxt = 0
        pieces: list = []
        have = 0
        chunk_start = 0
        for item in self._blocks():
            start, blk = _split_item(item)
            if start != nxt:
                raise ValueError(
                    f"source: block starts at column {start}, expected {nxt} (blocks must be "
                    "contiguous and in column order)"
                )
            blk = _normalise_block(blk, dense)
            if blk.shape[0] != m:
                raise ValueError(f"source: block at column {start} has {blk.shape[0]} rows, "
                                 f"expected {m}")
            k = int(blk.shape[1])
            if start + k > n:
                raise ValueError(f"source: block at column {start} with {k} columns overruns "
                                 f"n = {n}")
            nxt = start + k
            lo = 0
            while lo < k:
                take = min(width - have, k - lo)
                pieces.append(blk[:, lo : lo + take])
                have += take
                lo += take
                if have == width or chunk_start + have == n:
                    yield chunk_start, pieces
                    chunk_start += have
                    pieces, have = [], 0
        if nxt != n:
            raise ValueError(f"source: stream ended at column {nxt}, expected n = {n}")

    def sparse_chunks(self, width: int) -> Iterator[SparseChunk]:
        for start, pieces in self._pieces(width, False):
            blk = pieces[0] if len(pieces) == 1 else sp.hstack(pieces, format="csc")
            blk = _canonical_csc(blk, "source")
            yield _csc_chunk(blk, 0, blk.shape[1], start)

    def dense_panels(self, width: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, pieces in self._pieces(width, True):
            yield start, pieces[0] if len(pieces) == 1 else np.hstack(pieces)


def _split_item(item: Any) -> tuple[int, Any]:
    try:
        start, blk = item
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "source: a block stream must yield (col_start, block) pairs"
        ) from exc
    if isinstance(start, bool) or not isinstance(start, int | np.integer):
        raise ValueError(f"source: col_start must be an int, got {type(start).__name__}")
    return int(start), blk


def _block_of(item: Any) -> Any:
    return _split_item(item)[1]


def _normalise_block(blk: Any, dense: bool) -> Any:
    if sp.issparse(blk):
        check_block(blk, where="source block")  # before scipy's C++ conversions read it
        if np.iscomplexobj(blk.data):
            raise ValueError("source: complex values cannot be stored in .spz")
        return blk.toarray() if dense else sp.csc_matrix(blk)
    arr = np.asarray(blk)
    if arr.ndim != 2:
        raise ValueError(f"source: blocks must be 2-D, got shape {arr.shape}")
    if np.iscomplexobj(arr):
        raise ValueError("source: complex values cannot be stored in .spz")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"source: block values must be numeric, got dtype {arr.dtype}")
    return arr if dense else sp.csc_matrix(arr.astype(np.float64, copy=False))


class SpillSource(Source):
    """Sparse chunks spilled to a temporary file (to read a one-shot stream more than once).

    Each record is ``int64 col_start, k, nnz``, ``int64 indptr[k+1]``, ``int64 rows[nnz]``,
    ``float64 vals[nnz]``.  Also gathers :class:`ValueStats` while spilling.
    """

    def __init__(self, src: Source, width: int, directory: str) -> None:
        self.shape = src.shape
        self.dense_input = False
        self.stats = ValueStats()
        fd, self.path = tempfile.mkstemp(prefix=".spz-spill-", suffix=".tmp", dir=directory)
        if os.name == "posix":  # read through the descriptor only: nothing left if we are killed
            os.unlink(self.path)
        self._f = os.fdopen(fd, "w+b")
        self._records: list[tuple[int, int, int]] = []
        try:
            for ch in src.sparse_chunks(width):
                self.stats.update(ch.vals)
                off = self._f.tell()
                self._f.write(np.array([ch.col_start, ch.ncols, ch.rows.size], np.int64))
                self._f.write(ch.indptr.astype(np.int64))
                self._f.write(ch.rows.astype(np.int64, copy=False))
                self._f.write(ch.vals.astype(np.float64))
                self._records.append((off, ch.ncols, int(ch.rows.size)))
            self._f.flush()
        except BaseException:
            self.close()
            raise

    def sparse_chunks(self, width: int) -> Iterator[SparseChunk]:
        fd = self._f.fileno()
        for off, k, nnz in self._records:
            raw = os.pread(fd, 24 + 8 * (k + 1) + 16 * nnz, off)
            hdr = np.frombuffer(raw, np.int64, 3)
            p = 24
            indptr = np.frombuffer(raw, np.int64, k + 1, p)
            p += 8 * (k + 1)
            rows = np.frombuffer(raw, np.int64, nnz, p)
            if self.shape[0] <= 2**31 - 1:
                rows = rows.astype(np.int32)
            p += 8 * nnz
            vals = np.frombuffer(raw, np.float64, nnz, p)
            yield SparseChunk(int(hdr[0]), indptr, rows, vals)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def make_source(source: Any, shape: tuple[int, int] | None, dense: bool | None) -> Source:
    """Wrap the ``write_spz`` input (matrix, array or block stream) in a :class:`Source`.

    Examples
    --------
    >>> make_source(np.eye(3), None, None).shape
    (3, 3)
    """
    if sp.issparse(source):
        if shape is not None and tuple(shape) != tuple(source.shape):
            raise ValueError(f"shape {shape} does not match the source's shape {source.shape}")
        check_block(source, where=f"source (in-memory {type(source).__name__})")
        return SparseSource(source)
    if isinstance(source, np.ndarray):
        if shape is not None and tuple(shape) != tuple(source.shape):
            raise ValueError(f"shape {shape} does not match the source's shape {source.shape}")
        return DenseSource(source)
    if shape is None:
        shape = getattr(source, "shape", None)
    if shape is None:
        raise ValueError(
            "source must be a scipy.sparse matrix, a 2-D numpy array, or an iterable of "
            "(col_start, block) pairs given with shape=(m, n) (or having a .shape)"
        )
    if not isinstance(source, Iterable):
        raise ValueError(f"source of type {type(source).__name__} is not iterable")
    try:
        m, n = (int(x) for x in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shape must be a pair of ints, got {shape!r}") from exc
    if m < 0 or n < 0 or m > 0xFFFFFFFF or n > 0xFFFFFFFF:
        raise ValueError(f"shape {shape} out of range (0 <= m, n < 2**32)")
    return StreamSource(source, (m, n), dense)
