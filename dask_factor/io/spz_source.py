"""``.spz`` (RcppML StreamPress) files as dask arrays: the glue around the codec.

The codec (:mod:`dask_factor.io.spz`) reads and writes the bytes; this module turns an
:class:`~dask_factor.io.spz.SpzFile` into column-block tasks and a
:class:`~dask_factor.io.blocks.BlockStream` into a ``write_spz`` call.

Blocks are whole ``.spz`` chunks or runs of consecutive chunks (a chunk is decoded whole, so
splitting one would decode it twice).  On the client only the header and chunk index are read
(plus one streaming CRC pass when ``verify_crc``); each task opens the file by path on its worker
(the open file is cached per process) and decodes its chunks there.  v2 files give
``csc_matrix`` blocks, v3 (dense) files C-contiguous arrays.

Metadata orientation follows RcppML: ``obs`` is per row (feature), ``var`` per column (sample).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blocks import BlockStream, PathLike, array_from_reader, file_token, merge_bounds, to_block
from .chunking import default_block_nnz, min_blocks
from .errors import reading
from .limits import Limits, get_limits
from .stamp import Stamp, check_stamp, stamp
from .validate import check_block, mark_checked

#: block dtype when none is asked for: lossless and as small as possible
_NATURAL_DTYPE = {
    "uint8": np.float32, "uint16": np.float32, "float16": np.float32, "quant8": np.float32,
    "float32": np.float32, "uint32": np.float64, "float64": np.float64,
}


def _codec():
    from . import spz

    return spz


@functools.lru_cache(maxsize=16)
def _open_cached(path: str, size: int, mtime_ns: int, limits: Limits | None = None):
    # keyed on size and mtime so a rewritten file is re-opened
    return _codec().SpzFile(path, verify_crc=False, limits=limits)


@dataclass(frozen=True)
class SpzReader:
    """Reads columns ``start:stop`` of a ``.spz`` file (runs inside a task).

    Attributes
    ----------
    path : str
    dtype : str
        Block value dtype.
    dense : bool
        v3 file (numpy blocks).
    limits : Limits, optional
        The size limits in force when the file was opened on the client (they travel with
        the task: a worker's own settings do not apply).
    stamp : Stamp, optional
        The file as opened; every read checks it is still the same (:mod:`~dask_factor.io.stamp`).

    Examples
    --------
    >>> SpzReader("pbmc3k.spz", "<f4", False)(0, 256).shape  # doctest: +SKIP
    (13714, 256)
    """

    path: str
    dtype: str
    dense: bool
    limits: Limits | None = None
    stamp: Stamp | None = None

    def __call__(self, start: int, stop: int):
        check_stamp(self.stamp)
        with reading(self.path, f"read columns {start}:{stop}"):
            return self._read(start, stop)

    def _read(self, start: int, stop: int):
        st = os.stat(self.path)
        f = _open_cached(self.path, st.st_size, st.st_mtime_ns, self.limits)
        want = np.dtype(self.dtype)
        # float64 values are read as such and cast here, where overflow is refused
        read_dt = want if want == np.float64 or (want == np.float32 and f.value_type
                                                 != "float64") else np.float64
        where = f"{self.path}: columns {start}:{stop}"
        blk = f.read_columns(start, stop, dtype=read_dt)
        check_block(blk, (f.shape[0], stop - start), where=where, error=_codec().SpzFormatError)
        return to_block(mark_checked(blk), want, not self.dense, where=where, checked=True)


def _chunk_nnz(f) -> np.ndarray | None:
    """Stored entries per forward chunk, from the chunk index (None if not exposed)."""
    nnz = getattr(f, "chunk_nnz", None)
    if nnz is None:
        lay = getattr(f, "_lay", None)
        desc = getattr(getattr(lay, "fwd", None), "desc", None)
        if desc is not None and desc.dtype.names and "nnz" in desc.dtype.names:
            nnz = desc["nnz"]
    return None if nnz is None else np.asarray(nnz, dtype=np.int64)


def _bounds(f, block_nnz: int | None) -> np.ndarray:
    """Runs of whole chunks of about ``block_nnz`` entries (default
    :func:`~dask_factor.io.default_block_nnz` of the rows),
    at least :func:`~dask_factor.io.chunking.min_blocks` of them where the file has the chunks
    for it (``block_nnz=1``: one chunk each).

    RcppML writes chunks of a few hundred columns (256 in its pbmc3k.spz, ~0.2 M entries): one
    block each would give an atlas thousands of blocks, and every block of a fit adds an m × k
    partial to the reduction (a 30,000-cell file of 100-column chunks fitted 1.7× slower a pass
    than with its chunks merged)."""
    chunks = np.asarray(f.chunk_bounds, dtype=np.int64)
    if chunks.size < 2:
        return chunks
    m = f.shape[0]
    block_nnz = int(block_nnz or default_block_nnz(m))
    per_chunk = np.full(chunks.size - 1, m, dtype=np.int64) * np.diff(chunks) if f.is_dense \
        else _chunk_nnz(f)
    if per_chunk is None:  # assume an even spread
        per_chunk = np.diff(chunks) * (f.nnz / max(f.shape[1], 1))
    offsets = np.concatenate([[0], np.cumsum(per_chunk)]).astype(np.int64)
    # as many runs as the engine wants blocks at the least (io.chunking.min_blocks): fewer
    # would make it split them again, by slicing runs that one task reads whole
    return merge_bounds(chunks, offsets, block_nnz, min_blocks=min_blocks(int(f.shape[1])))


def open_array(path: PathLike, *, block_nnz: int | None = None, dtype=None,
               verify_crc: bool = True):
    """Open a ``.spz`` file lazily as a features × samples dask array of column blocks.

    Parameters
    ----------
    path : path-like
        A v2 (sparse) or v3 (dense) StreamPress file.
    block_nnz : int, optional
        Target entries per block (default :func:`~dask_factor.io.default_block_nnz`
        of the rows: 400 a row, between 2,000,000 and 8,000,000);
        blocks are runs of whole chunks (``1``: one chunk each).
    dtype : numpy dtype, optional
        Default: float32 for uint8/uint16/float16/quant8/float32 files, float64 for
        uint32/float64 (lossless).
    verify_crc : bool
        Check the file's CRC32 once here, on the client, before any task runs.

    Returns
    -------
    dask.array.Array of shape (m, n)

    Raises
    ------
    SpzFormatError
        Corrupt or truncated file (a ``ValueError``).

    Examples
    --------
    >>> import os, tempfile, scipy.sparse as sp
    >>> from dask_factor.io.spz import write_spz
    >>> path = os.path.join(tempfile.mkdtemp(), "a.spz")
    >>> A = sp.random(50, 30000, density=0.01, format="csc", random_state=0)
    >>> _ = write_spz(A, path, value_type="float64", chunk_cols=256)  # 118 chunks
    >>> x = open_array(path, block_nnz=1500)
    >>> x.shape, x.npartitions, all(c % 256 == 0 for c in x.chunks[1][:-1])  # whole chunks
    ((50, 30000), 10, True)
    >>> open_array(path).npartitions, open_array(path, block_nnz=1).npartitions
    (8, 118)
    """
    spath = str(Path(path).resolve())
    limits = get_limits()
    f = _codec().SpzFile(spath, verify_crc=verify_crc, limits=limits)
    try:
        st = stamp(spath)
        if (st.size, st.mtime_ns) != f._stat:  # changed while it was being verified
            raise _codec().SpzFormatError(f"{spath}: changed while it was being opened")
        bounds = _bounds(f, block_nnz)
        out_dtype = np.dtype(dtype or _NATURAL_DTYPE.get(f.value_type, np.float64))
        reader = SpzReader(spath, out_dtype.str, bool(f.is_dense), limits, st)
        return array_from_reader(reader, f.shape, bounds, out_dtype, not f.is_dense,
                                 file_token(spath), "open-spz")
    finally:
        f.close()


def read_metadata(path: PathLike):
    """``(obs, var)`` of a ``.spz``: per-row and per-column tables (None where absent).

    Examples
    --------
    >>> rows, cols = read_metadata("pbmc3k_data_rda.spz")  # doctest: +SKIP
    >>> list(cols.columns)  # doctest: +SKIP
    ['cell_type']
    """
    with _codec().SpzFile(str(path), verify_crc=False) as f:
        return f.obs, f.var


def info(path: PathLike) -> dict:
    """Header facts of a ``.spz`` (no chunk decoded, CRC not checked).

    Examples
    --------
    >>> info("pbmc3k.spz")["value_type"]  # doctest: +SKIP
    'uint16'
    """
    with _codec().SpzFile(str(path), verify_crc=False) as f:
        raw = f.info()
        n_blocks = int(_bounds(f, None).size - 1)  # the blocks open_matrix reads by default
    m, n = raw["shape"]
    out = {
        "shape": (int(m), int(n)), "nnz": int(raw["nnz"]), "dense": bool(f.is_dense),
        "value_type": raw["value_type"] if not f.is_dense
        else f"{raw['value_type']} ({raw.get('codec')})",
        "version": raw["version"],
        "chunking": f"{raw['num_chunks']} chunks of {raw['chunk_cols']} columns, read in "
                    f"{n_blocks} blocks of whole chunks",
        "n_blocks": n_blocks, "n_chunks": raw["num_chunks"], "chunk_cols": raw["chunk_cols"],
        "has_transpose": raw.get("has_transpose"), "file_size": raw.get("file_size"),
        "row_meta_columns": raw.get("obs_columns") or [],
        "col_meta_columns": raw.get("var_columns") or [],
    }
    return out


_VALUE_TYPES = ("auto", "uint8", "uint16", "uint32", "float32", "float16", "quant8", "float64",
                "fp16", "fp32", "fp64")


def check_write_options(*, value_type: str = "auto", chunk_cols: int | None = None,
                        include_transpose: bool | None = None) -> None:
    """Validate ``.spz`` writer options before anything is created.

    Examples
    --------
    >>> check_write_options(value_type="uint16", chunk_cols=256)
    """
    if value_type not in _VALUE_TYPES:
        raise ValueError(f"value_type must be one of {_VALUE_TYPES}, got {value_type!r}")
    if chunk_cols is not None and (not isinstance(chunk_cols, int | np.integer) or chunk_cols < 1):
        raise ValueError(f"chunk_cols must be a positive integer, got {chunk_cols!r}")
    if include_transpose is not None and not isinstance(include_transpose, bool):
        raise ValueError(f"include_transpose must be a bool or None, got {include_transpose!r}")


def write(stream: BlockStream, path: PathLike, *, block_nnz: int | None = None,
          value_type: str = "auto", chunk_cols: int | None = None,
          include_transpose: bool | None = None) -> None:
    """Write a :class:`BlockStream` to ``path`` with the codec's streaming ``write_spz``.

    Sparse streams become v2 files, dense streams v3.  The stream's row metadata becomes
    ``obs`` and its column metadata ``var`` (RcppML's orientation; the codec does not store
    DataFrame indexes).  The stream is handed over as a one-shot iterator, so the source is
    read exactly once: the codec spills it to find the "auto" value type and builds the
    transpose from the chunks it has written.  ``include_transpose`` defaults to the codec's
    (True for sparse, False for dense, as RcppML).

    Examples
    --------
    >>> from dask_factor.io import write_matrix
    >>> write_matrix("counts.zarr", "counts.spz", value_type="uint16")  # doctest: +SKIP
    """
    _codec().write_spz(
        iter(stream), str(path), shape=stream.shape, value_type=value_type,
        chunk_cols=chunk_cols, include_transpose=include_transpose,
        obs=stream.row_meta, var=stream.col_meta, dense=not stream.sparse,
    )
