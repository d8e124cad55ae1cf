"""Our native on-disk layout: a zarr group holding a CSC matrix (features × samples).

Layout (zarr format 3)::

    store/                      attrs: encoding-type "csc_matrix", encoding-version "0.1.0",
      indptr   int64 (n + 1,)          shape [m, n], dtype, nnz, block_bounds, block_indptr,
      indices  int32 (nnz,)            dask_factor_format 1
      data     dtype (nnz,)
      row_meta/  (optional)  per-feature DataFrame, AnnData's dataframe encoding
      col_meta/  (optional)  per-sample DataFrame

``indices`` is int64 when m >= 2**31.  The sparse group follows AnnData's ``csc_matrix``
encoding, so ``anndata.io.read_elem(zarr.open_group(path))`` reads it too.  Column blocks have
irregular non-zero counts, so ``data``/``indices`` cannot be chunked at block boundaries: the
block boundaries are stored in the attributes (``block_bounds``: column starts, length
n_blocks + 1; ``block_indptr``: ``indptr[block_bounds]``) and the chunk length is a quarter of a
typical block, so one block read touches about five chunks.  Metadata subgroups are called
``row_meta``/``col_meta`` rather than obs/var because those two words mean opposite sides in
``.spz`` (obs = rows) and AnnData (obs = cells = columns).

The *scan* layout (``layout="scan"``, ``dask_factor_format`` 2, encoding-type
``dask_factor_csc``) is the same group tuned for being read at every iteration of a fit:

    indptr   int64 (n + 1,)
    indices  row differences within each column (the first one as is): uint16 when
             m <= 2**16, else int32 (int64 when m >= 2**31); attribute ``index_coding`` "delta"
    data     the narrowest of uint8, uint16 or the value dtype that holds every value exactly
             (attribute ``dtype`` keeps the value dtype the reader returns)

compressed with blosc (byte shuffle; lz4, and lz4hc for uint8/uint16 counts) and a CRC32C per
chunk (stores written before the counts' lz4hc use lz4 throughout; the codec is in each array's
metadata).  It is not AnnData's
encoding (the indices are differences), hence its own encoding-type: anndata refuses it instead
of misreading it.  Both layouts are read by :func:`open_array`; ``docs/io.md`` has the measured
reasons.

A dense matrix is stored as a group with ``encoding-type: "dense_matrix"`` and an array ``X``
of shape (m, n) chunked (m, block columns); a bare 2-D zarr array is also read as dense.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import zarr

from .._optional import require
from ..kernels.delta import delta_decode_piece, delta_encode
from .blocks import (
    BlockStream,
    PathLike,
    array_from_reader,
    file_token,
    merge_bounds,
    to_block,
)
from .chunking import default_block_nnz, default_column_bounds
from .errors import MatrixFormatError, reading
from .limits import check_budget, get_limits, source_size
from .stamp import Stamp, check_stamp, stamp
from .validate import cast_values, check_full_pointer, check_pointer_slice, csc_from_arrays
from .zarr_chunks import iter_decoded, plan_of, read_range

#: bytes per stored entry while a sparse block is read: indices, values, a cast, a sort copy
BYTES_PER_ENTRY = 32

ENCODING_VERSION = "0.1.0"
FORMAT_VERSION = 1
#: the scan layout: its encoding-type, version and format number
SCAN_ENCODING = "dask_factor_csc"
SCAN_ENCODING_VERSION = "0.2.0"
SCAN_FORMAT_VERSION = 2
LAYOUTS = ("csc", "scan")
#: how our arrays are stored: zstd frames with their xxhash64 checksum, so a damaged chunk
#: fails to decompress instead of reading as other numbers; every chunk is written, even one
#: equal to the fill value, so a chunk lost in a copy is noticed (attribute
#: ``all_chunks_written``) instead of reading as zeros
_ARRAY_OPTS = {"compressors": zarr.codecs.ZstdCodec(level=0, checksum=True),
               "config": {"write_empty_chunks": True}}
def _scan_opts(itemsize: int, *, counts: bool = False) -> dict:
    """Codecs of the scan layout: blosc with byte shuffle (fast to decode, measured in
    docs/io.md), then a CRC32C so that a damaged chunk fails instead of reading as numbers.
    lz4, except for counts stored as uint8/uint16 (``counts``): lz4hc at level 2, whose longer
    matches decode 1.4x as fast on such low-entropy values and are a sixth smaller (encoding
    takes 1.5x as long)."""
    cname, clevel = ("lz4hc", 2) if counts else ("lz4", 5)
    return {"compressors": [zarr.codecs.BloscCodec(cname=cname, clevel=clevel,
                                                   shuffle="shuffle", typesize=int(itemsize)),
                            zarr.codecs.Crc32cCodec()],
            "config": {"write_empty_chunks": True}}


_MIN_CHUNK = 4096
_MAX_CHUNK = 1 << 21


# --------------------------------------------------------------------------- reading


def _open_node(path: PathLike):
    try:
        return zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for "not a zarr node"
        raise ValueError(f"path={str(path)!r} is not a readable zarr store: {err}") from err


def _kind(node) -> str:
    if isinstance(node, zarr.Array):
        if node.ndim != 2:
            raise ValueError(f"zarr array at {node.store_path} must be 2-D, has shape {node.shape}")
        return "array"
    enc = node.attrs.get("encoding-type")
    if enc in ("csc_matrix", SCAN_ENCODING):
        return "csc"
    if enc == "dense_matrix":
        return "dense"
    if enc == "csr_matrix":
        raise ValueError(
            f"zarr store {node.store_path} holds a CSR (row-major) matrix; features x samples "
            "must be CSC. If it is an AnnData cells x genes X, open the AnnData store instead."
        )
    raise ValueError(
        f"zarr store {node.store_path}: attribute encoding-type={enc!r}, expected 'csc_matrix' "
        "or 'dense_matrix' (a dask_factor zarr matrix)"
    )


@dataclass(frozen=True)
class ZarrCSCReader:
    """Reads columns ``start:stop`` of a zarr CSC group (runs inside a task).

    Examples
    --------
    >>> ZarrCSCReader("counts.zarr", m=2000)(0, 100).shape  # doctest: +SKIP
    (2000, 100)
    """

    path: str
    m: int
    dtype: str | None = None
    #: what one block may allocate (the store's budget, :mod:`dask_factor.io.limits`)
    max_bytes: int | None = None
    #: columns of the matrix (the last block's indptr must end at the stored entries)
    n: int | None = None
    #: the store as opened (:mod:`dask_factor.io.stamp`): every read checks it is unchanged
    stamp: Stamp | None = None
    #: how ``indices`` is stored: "raw" row numbers, or "delta" (the scan layout)
    index_coding: str = "raw"
    #: chunk plans of ``indptr``, ``indices`` and ``data`` (:mod:`.zarr_chunks`: read from the
    #: chunk files, several times faster than zarr's array API); None entries read through zarr
    plans: tuple = (None, None, None)
    #: the value dtype the store's attributes name (the scan layout stores narrower values)
    stored_dtype: str | None = None

    def __call__(self, start: int, stop: int) -> sp.csc_matrix:
        check_stamp(self.stamp)
        with reading(self.path, f"read columns {start}:{stop}"):
            return self._read(start, stop)

    def delta_coded(self, dtype) -> bool:
        """Whether :meth:`delta_block` serves this store for blocks of ``dtype`` values: a scan
        layout store read from its chunk files, with row differences a kernel sums as it reads
        (:data:`~dask_factor.io.delta_csc.DELTA_INDEX_TYPES`) and stored values that convert
        exactly to ``dtype`` (counts as uint8/uint16 for float32)."""
        from .delta_csc import DELTA_INDEX_TYPES

        return (self.index_coding == "delta" and all(p is not None for p in self.plans)
                and np.dtype(self.plans[1].dtype) in DELTA_INDEX_TYPES
                and np.dtype(self.plans[2].dtype).kind in "uif"
                and np.can_cast(np.dtype(self.plans[2].dtype), np.dtype(dtype), "safe"))

    def delta_block(self, start: int, stop: int, dtype):
        """Columns ``start:stop`` as stored: a checked :class:`~dask_factor.io.delta_csc.
        DeltaCSC` of ``dtype`` values (only where :meth:`delta_coded`; runs inside a task).

        Examples
        --------
        >>> ZarrCSCReader("scan.zarr", m=2000).delta_block(0, 100, "float32")  # doctest: +SKIP
        DeltaCSC(shape=(2000, 100), nnz=..., deltas=uint16, values=uint16 as float32)
        """
        from .delta_csc import DeltaCSC

        check_stamp(self.stamp)
        with reading(self.path, f"read columns {start}:{stop}"):
            where = f"zarr store {self.path!r}, columns {start}:{stop}"
            local, p0, p1 = self._pointer(start, stop, where, lambda i, a, b: read_range(
                self.plans[i], a, b, where=f"{where}, indptr", keep=True))
            deltas = read_range(self.plans[1], p0, p1, where=f"{where}, indices")
            values = read_range(self.plans[2], p0, p1, where=f"{where}, data")
            return DeltaCSC(local, deltas, values, (self.m, stop - start), dtype, where=where,
                            offset=start)

    def _pointer(self, start: int, stop: int, where: str, entries):
        """The block's column pointer from 0 and its stored entries ``p0:p1``, checked (within
        the stored entries, within this reader's budget)."""
        stored_nnz = (self.plans[1].size if self.plans[1] is not None
                      else int(zarr.open_group(self.path, mode="r")["indices"].shape[0]))
        ip = np.asarray(entries(0, start, stop + 1), dtype=np.int64)
        if ip.size != stop - start + 1:
            raise MatrixFormatError(f"{where}: indptr holds {ip.size} pointers, expected "
                                    f"{stop - start + 1}")
        p0, p1 = check_pointer_slice(ip, start, stop, stored_nnz, where=where,
                                     n_major=self.n)
        check_budget(BYTES_PER_ENTRY * (p1 - p0) + 16 * (stop - start + 1), self.max_bytes,
                     what=f"indptr gives the block {p1 - p0} entries", where=where)
        return ip - p0, p0, p1

    def _read(self, start: int, stop: int) -> sp.csc_matrix:
        where = f"zarr store {self.path!r}, columns {start}:{stop}"
        delta = self.index_coding == "delta"
        target = self.dtype or (self.stored_dtype if delta else None)
        through_zarr = any(p is None for p in self.plans) or (delta and target is None)
        g = zarr.open_group(self.path, mode="r") if through_zarr else None
        names = ("indptr", "indices", "data")

        def entries(i: int, a: int, b: int) -> np.ndarray:
            if self.plans[i] is not None:
                return read_range(self.plans[i], a, b, where=f"{where}, {names[i]}",
                                  keep=i == 0)
            return np.asarray(g[names[i]][a:b])

        local, p0, p1 = self._pointer(start, stop, where, entries)
        if delta:
            # the whole pointer slice is checked (monotone, inside the stored entries) before
            # the differences are summed along it, then the usual check
            check_full_pointer(local, p1 - p0, where=where)
            plan = self.plans[1]
            if plan is not None:  # summed chunk by chunk as each is decoded
                kind, size = np.dtype(plan.dtype), p1 - p0
                pieces = iter_decoded(plan, p0, p1, where=f"{where}, indices")
            else:  # read through zarr: the whole slice is one piece
                deltas = entries(1, p0, p1)
                kind, size = deltas.dtype, deltas.size
                pieces = [(0, deltas)]
            if kind.kind not in "iu" or size != p1 - p0:
                raise MatrixFormatError(f"{where}: indices hold {kind} x {size}, expected "
                                        f"{p1 - p0} integers")
            indices = np.empty(p1 - p0, dtype=np.int32)
            state = np.zeros(2, dtype=np.int64)
            for off, piece in pieces:
                delta_decode_piece(local, piece, off, indices, state)
        else:
            indices = entries(1, p0, p1)
        if delta and target is None:
            target = g.attrs["dtype"]
        plan = self.plans[2]
        if (target is not None and plan is not None
                and np.can_cast(np.dtype(plan.dtype), np.dtype(target), "safe")):
            # narrow stored values (uint8/uint16 counts) converted chunk by chunk, exactly
            data = read_range(plan, p0, p1, where=f"{where}, data", dtype=target)
        else:
            data = entries(2, p0, p1)
            if target is not None:
                data = cast_values(data, target, where=where)
        return csc_from_arrays(data, indices, local, (self.m, stop - start), where=where,
                               offset=start)


@dataclass(frozen=True)
class ZarrDenseReader:
    """Reads columns ``start:stop`` of a dense zarr matrix (runs inside a task).

    Examples
    --------
    >>> ZarrDenseReader("dense.zarr", "X")(0, 10).flags["C_CONTIGUOUS"]  # doctest: +SKIP
    True
    """

    path: str
    key: str | None = None
    dtype: str | None = None
    max_bytes: int | None = None
    stamp: Stamp | None = None

    def __call__(self, start: int, stop: int) -> np.ndarray:
        check_stamp(self.stamp)
        with reading(self.path, f"read columns {start}:{stop}"):
            return self._read(start, stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        node = zarr.open(self.path, mode="r")
        arr = node[self.key] if self.key else node
        check_budget(2 * 8 * arr.shape[0] * (stop - start), self.max_bytes,
                     what=f"a block of {arr.shape[0]} x {stop - start} values",
                     where=f"zarr store {self.path!r}, columns {start}:{stop}")
        return np.ascontiguousarray(arr[:, start:stop], dtype=self.dtype)


def _check_chunks(node, kind: str, path, where: str) -> None:
    """A store we wrote holds every chunk of its arrays: a missing one was lost (a partial
    copy), and zarr would silently read it as fill values.  Chunk files are counted on disk
    (not through zarr, which would walk a forged shape's every chunk key)."""
    if kind == "array" or node.attrs.get("all_chunks_written") is not True:
        return
    for key in ("indptr", "indices", "data") if kind == "csc" else ("X",):
        if key not in node or not isinstance(node[key], zarr.Array):
            continue
        want = int(node[key].nchunks)
        have = sum(len(files) for _, _, files in os.walk(Path(path) / key)) - 1  # zarr.json
        if have != want:
            raise MatrixFormatError(
                f"{where}: array {key!r} has {have} chunk files for its {want} chunks; the "
                f"store was written whole, so chunks were lost (an incomplete copy?) or its "
                f"shape was changed")


def _index_coding(node, where: str) -> str:
    """``"raw"`` for the csc layout, ``"delta"`` for the scan layout (checked)."""
    if node.attrs.get("encoding-type") != SCAN_ENCODING:
        return "raw"
    coding = node.attrs.get("index_coding")
    dtype = node.attrs.get("dtype")
    try:
        ok = np.dtype(dtype).kind in "iuf" and isinstance(dtype, str)
    except TypeError:
        ok = False
    if coding != "delta" or not ok:
        raise MatrixFormatError(f"{where}: scan layout with index_coding={coding!r} and "
                                f"dtype={dtype!r}; expected 'delta' and a numeric dtype (a "
                                f"damaged store)")
    return coding


def _check_dims(m: int, n: int, budget: int, where: str) -> None:
    check_budget(8 * (max(m, n) + 1), budget, where=where,
                 what=f"declares shape {m} x {n} (8 bytes per row and per column)")


def _csc_shape(g, path) -> tuple[int, int]:
    """``attrs['shape']`` of a CSC group, checked against its ``indptr`` (n + 1 entries)."""
    where = f"zarr store {str(path)!r}"
    shape = g.attrs.get("shape")
    try:
        m, n = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise MatrixFormatError(f"{where}: attribute 'shape' is {shape!r}, expected [rows, "
                                f"columns]") from None
    if m < 0 or n < 0:
        raise MatrixFormatError(f"{where}: attribute 'shape' {shape!r} is negative")
    for key in ("indptr", "indices", "data"):
        if key not in g or not isinstance(g[key], zarr.Array) or g[key].ndim != 1:
            raise MatrixFormatError(f"{where}: the CSC group has no 1-D array {key!r} (a damaged "
                                    f"or incomplete store)")
    if g["indptr"].shape[0] != n + 1:
        raise MatrixFormatError(f"{where}: indptr has {g['indptr'].shape[0]} entries, expected "
                                f"{n + 1} for the {n} columns of attribute 'shape'")
    if g["indices"].shape[0] != g["data"].shape[0]:
        raise MatrixFormatError(f"{where}, columns 0:{n}: {g['indices'].shape[0]} indices but "
                                f"{g['data'].shape[0]} values")
    return m, n


def _stored_blocks(bounds, offsets, n: int, nnz: int, where: str):
    """The ``block_bounds``/``block_indptr`` attributes, checked: column starts from 0 to n
    (increasing) and their entry offsets (non-decreasing, within the stored entries)."""
    try:
        b = np.asarray(bounds, dtype=np.int64)
        o = np.asarray(offsets, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        b = o = np.zeros(0, np.int64)
    ok = (b.ndim == 1 and o.shape == b.shape and b.size >= 1 and b[0] == 0 and b[-1] == n
          and bool(np.all(np.diff(b) > 0)) and o[0] == 0 and bool(np.all(np.diff(o) >= 0))
          and o[-1] == nnz)
    if not ok:
        raise MatrixFormatError(
            f"{where}: attributes block_bounds / block_indptr are not increasing column starts "
            f"from 0 to {n} with their entry offsets (got {str(bounds)[:60]} / "
            f"{str(offsets)[:60]}); a damaged store")
    return b, o


def _sparse_bounds(g, block_nnz: int | None) -> np.ndarray:
    attrs = g.attrs
    m, n = int(attrs["shape"][0]), int(attrs["shape"][1])
    stored = attrs.get("block_bounds")
    offsets = attrs.get("block_indptr")
    if stored is not None and offsets is not None:
        stored, offsets = _stored_blocks(stored, offsets, n, g["indices"].shape[0],
                                         f"zarr store {g.store_path}")
        if block_nnz is None:  # the blocks the writer chose
            return stored
        if stored.size < 2 or int(np.diff(offsets).max(initial=0)) <= block_nnz:
            return merge_bounds(stored, offsets, block_nnz)
    # no stored blocks, or blocks must be split: the column pointer (n + 1 integers) decides
    indptr = np.asarray(g["indptr"][:], dtype=np.int64)
    check_full_pointer(indptr, int(g["indices"].shape[0]),
                       where=f"zarr store {g.store_path}, columns 0:{n}")
    if n == 0:
        return np.array([0], dtype=np.int64)
    return default_column_bounds(indptr, m, block_nnz)


def open_array(path: PathLike, *, block_nnz: int | None = None, dtype=None):
    """Open a zarr matrix lazily as a features × samples dask array of column blocks.

    Parameters
    ----------
    path : path-like
        Our zarr CSC or dense store (or a bare 2-D zarr array).
    block_nnz : int, optional
        Target entries per block; default the stored block bounds.  Larger targets merge stored
        blocks; smaller ones split them using the column pointer.
    dtype : numpy dtype, optional

    Returns
    -------
    dask.array.Array of shape (m, n)

    Examples
    --------
    >>> A = open_array("counts.zarr", block_nnz=1_000_000)  # doctest: +SKIP
    """
    node = _open_node(path)
    kind = _kind(node)
    token = file_token(path)
    sdtype = None if dtype is None else np.dtype(dtype).str
    budget = get_limits().budget(source_size(path))
    where = f"zarr store {str(path)!r}"
    st = stamp(Path(path).resolve())
    _check_chunks(node, kind, path, where)
    if kind == "csc":
        m, n = _csc_shape(node, path)
        _check_dims(m, n, budget, where)
        bounds = _sparse_bounds(node, block_nnz)
        coding = _index_coding(node, where)
        out_dtype = np.dtype(dtype or (node.attrs["dtype"] if coding == "delta"
                                       else node["data"].dtype))
        whole = node.attrs.get("all_chunks_written") is True
        plans = tuple(plan_of(node[name], all_written=whole)
                      for name in ("indptr", "indices", "data"))
        reader = ZarrCSCReader(str(Path(path).resolve()), m, sdtype, budget, n, st, coding,
                               plans, node.attrs.get("dtype") if coding == "delta" else None)
        return array_from_reader(reader, (m, n), bounds, out_dtype, True, token, "open-zarr")
    arr = node if kind == "array" else node["X"]
    m, n = (int(s) for s in arr.shape)
    _check_dims(m, n, budget, where)
    stored = node.attrs.get("block_bounds") if kind == "dense" else None
    if stored is not None and block_nnz is None:
        bounds = np.asarray(stored, dtype=np.int64)
    else:
        target = block_nnz or max(default_block_nnz(m), m * int(arr.chunks[1]))
        cols = max(1, int(target) // max(m, 1))
        bounds = np.unique(np.append(np.arange(0, n, cols), n)).astype(np.int64)
    reader = ZarrDenseReader(str(Path(path).resolve()), None if kind == "array" else "X", sdtype,
                             budget, st)
    out_dtype = np.dtype(dtype or arr.dtype)
    return array_from_reader(reader, (m, n), bounds, out_dtype, False, token, "open-zarr")


def read_metadata(path: PathLike):
    """``(row_meta, col_meta)`` DataFrames of a zarr matrix (None where absent).

    Examples
    --------
    >>> rows, cols = read_metadata("counts.zarr")  # doctest: +SKIP
    """
    node = _open_node(path)
    if isinstance(node, zarr.Array):
        return None, None
    out = []
    for key in ("row_meta", "col_meta"):
        if key in node:
            read_elem = require("anndata.io", "reading a zarr matrix's row/column names").read_elem
            out.append(read_elem(node[key]))
        else:
            out.append(None)
    return tuple(out)


def _meta_columns(node, key: str) -> list[str]:
    if isinstance(node, zarr.Array) or key not in node:
        return []
    return [str(c) for c in node[key].attrs.get("column-order", [])]


def info(path: PathLike) -> dict:
    """Header facts of a zarr matrix (reads attributes only).

    Examples
    --------
    >>> info("counts.zarr")["nnz"]  # doctest: +SKIP
    """
    node = _open_node(path)
    kind = _kind(node)
    out: dict = {"version": node.metadata.zarr_format}
    if kind == "csc":
        m, n = _csc_shape(node, path)
        bounds = node.attrs.get("block_bounds")
        if bounds is not None:
            _stored_blocks(bounds, node.attrs.get("block_indptr", [0] * len(bounds)), n,
                           int(node["indices"].shape[0]), f"zarr store {str(path)!r}")
        nnz = node.attrs.get("nnz")
        if nnz is None:
            nnz = int(node["indptr"][n]) if n else 0
        out.update(
            shape=(m, n), nnz=int(nnz), dense=False,
            value_type=str(node.attrs.get("dtype") if _index_coding(node, str(path)) == "delta"
                           else node["data"].dtype),
            stored_value_type=str(node["data"].dtype),
            index_dtype=str(node["indices"].dtype), n_blocks=None if bounds is None else
            len(bounds) - 1, chunk_nnz=int(node["data"].chunks[0]),
            encoding=f"{node.attrs.get('encoding-type')} {node.attrs.get('encoding-version')}",
        )
        out["chunking"] = (
            f"{out['n_blocks']} column blocks by nnz, data chunks of {out['chunk_nnz']} entries"
            if bounds is not None else f"data chunks of {out['chunk_nnz']} entries"
        )
    else:
        arr = node if kind == "array" else node["X"]
        m, n = (int(s) for s in arr.shape)
        out.update(shape=(m, n), nnz=None, dense=True, value_type=str(arr.dtype),
                   n_blocks=-(-n // max(int(arr.chunks[1]), 1)), encoding="dense_matrix",
                   chunking=f"chunks of {tuple(int(c) for c in arr.chunks)}")
    out["row_meta_columns"] = _meta_columns(node, "row_meta")
    out["col_meta_columns"] = _meta_columns(node, "col_meta")
    return out


# --------------------------------------------------------------------------- writing


def check_write_options(*, chunk_nnz: int | None = None, layout: str = "csc") -> None:
    """Validate zarr writer options before anything is created.

    Examples
    --------
    >>> check_write_options(chunk_nnz=0)
    Traceback (most recent call last):
    ...
    ValueError: chunk_nnz must be a positive integer, got 0
    >>> check_write_options(layout="fast")
    Traceback (most recent call last):
    ...
    ValueError: layout must be one of ('csc', 'scan'), got 'fast'
    """
    if chunk_nnz is not None and (not isinstance(chunk_nnz, int | np.integer) or chunk_nnz < 1):
        raise ValueError(f"chunk_nnz must be a positive integer, got {chunk_nnz!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


#: the stored value types the scan layout tries, narrowest first (then the value dtype)
_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16))


def narrowest_values(values: np.ndarray, dtype) -> np.dtype:
    """The narrowest of uint8, uint16 and ``dtype`` that holds every value exactly.

    Examples
    --------
    >>> narrowest_values(np.array([0.0, 3.0, 300.0]), np.float32)
    dtype('uint16')
    >>> narrowest_values(np.array([1.5]), np.float32)
    dtype('float32')
    """
    dtype = np.dtype(dtype)
    v = np.asarray(values)
    if v.size == 0:
        return _NARROW[0]
    lo, hi = v.min(), v.max()
    if not (lo >= 0 and hi <= np.iinfo(np.uint16).max) or not np.array_equal(v, np.floor(v)):
        return dtype  # negative, too large, NaN or fractional
    return _NARROW[0] if hi <= np.iinfo(np.uint8).max else _NARROW[1]


class _NarrowValues:
    """Appends the values of the scan layout in the narrowest type seen so far; a block that
    needs a wider one rewrites what was written (at most twice: uint8 -> uint16 -> dtype)."""

    def __init__(self, g, root: Path, dtype, chunk: int):
        self.g, self.root, self.dtype, self.chunk = g, root, np.dtype(dtype), int(chunk)
        self.kind = _NARROW[0]
        self.out = self._create("data", self.kind)

    def _create(self, name: str, kind):
        arr = self.g.create_array(name, shape=(0,), dtype=kind, chunks=(self.chunk,),
                                  **_scan_opts(np.dtype(kind).itemsize,
                                               counts=np.dtype(kind) in _NARROW))
        return _ChunkAlignedAppender(arr, self.chunk)

    def append(self, values: np.ndarray) -> None:
        kind = narrowest_values(values, self.dtype)
        order = [*_NARROW, self.dtype]
        if order.index(kind) > order.index(self.kind):
            self._widen(kind)
        self.out.append(values)

    def _widen(self, kind) -> None:
        old = self.out
        new = self._create("data_wide", kind)
        for a in range(0, old.written, self.chunk):
            new.append(np.asarray(old.arr[a : min(a + self.chunk, old.written)]))
        for t in old.tail:
            new.append(t)
        new.close()
        new.tail, new.tail_len = [], 0
        shutil.rmtree(self.root / "data")
        os.replace(self.root / "data_wide", self.root / "data")
        arr = zarr.open_array(str(self.root / "data"), mode="r+")
        self.out = _ChunkAlignedAppender(arr, self.chunk)
        self.out.written = new.written
        self.kind = np.dtype(kind)

    def close(self) -> int:
        return self.out.close()


class _ChunkAlignedAppender:
    """Appends to a 1-D zarr array, writing only whole chunks until :meth:`close`.

    Avoids rewriting a partial chunk at every append (zarr chunks are immutable objects).
    """

    def __init__(self, arr, chunk: int):
        self.arr = arr
        self.chunk = int(chunk)
        self.written = 0
        self.tail: list[np.ndarray] = []
        self.tail_len = 0

    def append(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.tail.append(np.asarray(values, dtype=self.arr.dtype))
        self.tail_len += values.size
        if self.tail_len >= self.chunk:
            buf = np.concatenate(self.tail)
            full = (buf.size // self.chunk) * self.chunk
            self._write(buf[:full])
            rest = buf[full:]
            self.tail = [rest] if rest.size else []
            self.tail_len = rest.size

    def _write(self, buf: np.ndarray) -> None:
        end = self.written + buf.size
        if end > self.arr.shape[0]:
            self.arr.resize((end,))
        self.arr[self.written : end] = buf
        self.written = end

    def close(self) -> int:
        if self.tail_len:
            self._write(np.concatenate(self.tail))
            self.tail, self.tail_len = [], 0
        return self.written


def _chunk_len(stream: BlockStream, block_nnz: int | None, chunk_nnz: int | None) -> int:
    if chunk_nnz:
        return int(chunk_nnz)
    if stream.nnz is not None and stream.n_blocks:
        typical = stream.nnz / stream.n_blocks
    else:
        typical = block_nnz or default_block_nnz(stream.shape[0])
    c = int(np.clip(typical // 4, _MIN_CHUNK, _MAX_CHUNK))
    if stream.nnz is not None:
        c = min(c, max(int(stream.nnz), 1))
    return c


def _pointer_chunk(stream: BlockStream) -> int:
    """Chunk length of ``indptr``: a few blocks' columns (at least :data:`_MIN_CHUNK`), so a
    block read decodes one or two small chunks, not the whole pointer array (an 8 MB chunk at a
    million columns, decoded again for every block of every pass)."""
    n = stream.shape[1]
    typical = n / stream.n_blocks if stream.n_blocks else n
    return int(min(n + 1, max(_MIN_CHUNK, 2 * int(typical)), 1 << 20))


def _write_meta(g, stream: BlockStream) -> None:
    for key, df in (("row_meta", stream.row_meta), ("col_meta", stream.col_meta)):
        if df is not None:
            write_elem = require("anndata.io", "writing row/column names to zarr").write_elem
            with warnings.catch_warnings():  # anndata's notice about its future default
                warnings.filterwarnings("ignore", message=".*autosharding", category=UserWarning)
                write_elem(g, key, df)


def _write_sparse(stream: BlockStream, g, chunk: int) -> dict:
    m, n = stream.shape
    index_dtype = np.int32 if m < 2**31 else np.int64
    ip_arr = g.create_array("indptr", shape=(0,), dtype=np.int64,
                            chunks=(_pointer_chunk(stream),), **_ARRAY_OPTS)
    data = _ChunkAlignedAppender(
        g.create_array("data", shape=(0,), dtype=stream.dtype, chunks=(chunk,), **_ARRAY_OPTS),
        chunk)
    indices = _ChunkAlignedAppender(
        g.create_array("indices", shape=(0,), dtype=index_dtype, chunks=(chunk,),
                       **_ARRAY_OPTS), chunk)
    indptr = _ChunkAlignedAppender(ip_arr, ip_arr.chunks[0])
    indptr.append(np.zeros(1, dtype=np.int64))
    offsets = [0]
    nnz = 0
    col = 0
    for start, blk in stream:
        blk = to_block(blk, stream.dtype, True)
        if start != col or blk.shape[0] != m:
            raise ValueError(f"block at column {start} has shape {blk.shape}; expected "
                             f"columns from {col} and {m} rows")
        data.append(blk.data)
        indices.append(blk.indices)
        indptr.append(blk.indptr[1:].astype(np.int64) + nnz)
        nnz += int(blk.nnz)
        col += blk.shape[1]
        offsets.append(nnz)
    if col != n:
        raise ValueError(f"the blocks covered {col} columns, expected n={n}")
    data.close()
    indices.close()
    indptr.close()
    return {"encoding-type": "csc_matrix", "nnz": nnz, "block_indptr": offsets}


def _write_dense(stream: BlockStream, g) -> dict:
    m, n = stream.shape
    widths = np.diff(stream.bounds)
    width = int(widths[0]) if widths.size else 1
    X = g.create_array("X", shape=(m, n), dtype=stream.dtype, chunks=(max(m, 1), max(width, 1)),
                       **_ARRAY_OPTS)
    col = 0
    for start, blk in stream:
        blk = to_block(blk, stream.dtype, False)
        if start != col or blk.shape[0] != m:
            raise ValueError(f"block at column {start} has shape {blk.shape}; expected "
                             f"columns from {col} and {m} rows")
        X[:, start : start + blk.shape[1]] = blk
        col += blk.shape[1]
    if col != n:
        raise ValueError(f"the blocks covered {col} columns, expected n={n}")
    return {"encoding-type": "dense_matrix"}


def _write_scan(stream: BlockStream, g, root: Path, chunk: int) -> dict:
    """The scan layout's arrays (see the module docstring)."""
    m, n = stream.shape
    if m >= 2**31:
        raise ValueError(f"layout='scan' needs fewer than 2**31 rows, the matrix has {m}")
    index_dtype = np.dtype(np.uint16 if m <= 2**16 else np.int32)
    ip_arr = g.create_array("indptr", shape=(0,), dtype=np.int64,
                            chunks=(_pointer_chunk(stream),), **_scan_opts(8))
    indices = _ChunkAlignedAppender(
        g.create_array("indices", shape=(0,), dtype=index_dtype, chunks=(chunk,),
                       **_scan_opts(index_dtype.itemsize)), chunk)
    data = _NarrowValues(g, root, stream.dtype, chunk)
    indptr = _ChunkAlignedAppender(ip_arr, ip_arr.chunks[0])
    indptr.append(np.zeros(1, dtype=np.int64))
    offsets, nnz, col = [0], 0, 0
    for start, blk in stream:
        blk = to_block(blk, stream.dtype, True)
        if start != col or blk.shape[0] != m:
            raise ValueError(f"block at column {start} has shape {blk.shape}; expected "
                             f"columns from {col} and {m} rows")
        deltas = np.empty(blk.nnz, dtype=index_dtype)
        if delta_encode(blk.indptr.astype(np.int64), blk.indices, deltas) < 0:
            raise ValueError(f"block at column {start}: row indices are not sorted")
        indices.append(deltas)
        data.append(blk.data)
        indptr.append(blk.indptr[1:].astype(np.int64) + nnz)
        nnz += int(blk.nnz)
        col += blk.shape[1]
        offsets.append(nnz)
    if col != n:
        raise ValueError(f"the blocks covered {col} columns, expected n={n}")
    data.close()
    indices.close()
    indptr.close()
    return {"encoding-type": SCAN_ENCODING, "nnz": nnz, "block_indptr": offsets,
            "index_coding": "delta"}


def write(stream: BlockStream, path: PathLike, *, block_nnz: int | None = None,
          chunk_nnz: int | None = None, layout: str = "csc") -> None:
    """Write a :class:`BlockStream` as a zarr matrix at ``path`` (no temp/rename here: the
    caller, :func:`~dask_factor.io.registry.write_matrix`, does that).

    Parameters
    ----------
    stream : BlockStream
        Blocks are consumed once, in order; memory O(block + chunk).
    path : path-like
        A new directory.
    block_nnz : int, optional
        The target block size the stream was cut with (sizes the data chunks).
    chunk_nnz : int, optional
        Entries per ``data``/``indices`` chunk (default: a quarter of a typical block, within
        [4096, 2**21]).
    layout : {"csc", "scan"}
        ``"csc"``: AnnData's csc_matrix encoding (zstd, float values, int32 row numbers).
        ``"scan"``: the layout for fits that read the matrix at every iteration (delta-coded
        uint16 rows, values in uint8/uint16 when they are small counts, blosc lz4/lz4hc;
        module docstring).

    Examples
    --------
    >>> from dask_factor.io import write_matrix
    >>> write_matrix(np.eye(4), "eye.zarr")  # doctest: +SKIP
    """
    m, n = stream.shape
    g = zarr.open_group(str(path), mode="w-", zarr_format=3)
    check_write_options(chunk_nnz=chunk_nnz, layout=layout)
    scan = stream.sparse and layout == "scan"
    if scan:
        attrs = _write_scan(stream, g, Path(path), _chunk_len(stream, block_nnz, chunk_nnz))
    elif stream.sparse:
        attrs = _write_sparse(stream, g, _chunk_len(stream, block_nnz, chunk_nnz))
    else:
        attrs = _write_dense(stream, g)
    _write_meta(g, stream)
    attrs.update({
        "encoding-version": SCAN_ENCODING_VERSION if scan else ENCODING_VERSION,
        "shape": [int(m), int(n)],
        "dtype": str(np.dtype(stream.dtype)),
        "block_bounds": [int(b) for b in stream.bounds],
        "dask_factor_format": SCAN_FORMAT_VERSION if scan else FORMAT_VERSION,
        "all_chunks_written": True,
    })
    # attributes last: a store without them is recognisably incomplete
    g.attrs.update(attrs)
