"""Random-access reader of StreamPress ``.spz`` files (v2 sparse, v3 dense, legacy v1)."""

from __future__ import annotations

import os
import stat
import threading
import warnings
import zlib
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..limits import Limits, get_limits
from .codecs import decode_chunk, sort_within_columns
from .dense import decode_panel
from .errors import SpzFormatError, SpzSourceChangedError
from .header import CODECS, FOOTER_SIZE, VALUE_TYPES
from .layout import Section, load_layout
from .preflight import preflight_chunk
from .rans import ERRORS
from .sizes import check_declared, check_read
from .tables import parse_table

__all__ = ["SpzFile", "read_spz"]

_CRC_BLOCK = 8 << 20
_I32_MAX = 2**31 - 1


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    return dt


class SpzFile:
    """An open StreamPress file: validated structure, lazy chunk decoding.

    Opening reads and checks the header, the chunk indices, the section offsets, the
    footer and (with ``verify_crc``) the CRC32 of the whole file; no chunk is decoded.  Reads
    use ``os.pread`` (thread-safe) and decode with numba kernels that release the GIL.

    The object is picklable: it pickles as its path (plus whether the CRC was already
    verified) and re-opens the file by path when unpickled, so Dask can ship it to workers.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.spz`` file.
    verify_crc : bool, default True
        Check the footer CRC32 over the whole file when opening (one sequential read).
    limits : Limits, optional
        Size limits (:mod:`dask_factor.io.limits`; default: those in force when opening).
        Opening checks the declared shape and every chunk's or panel's decoding size against
        them, and every read checks its result's size, before allocating.

    Attributes
    ----------
    path : str
    version : int
        1, 2 (sparse, chunked) or 3 (dense panels).
    shape : tuple of int
        ``(m, n)``.
    nnz : int
        Stored entries (``m * n`` for dense files).
    is_dense : bool
        True for v3 files; reads then return numpy arrays.
    value_type : str
        ``"uint8"``, ``"uint16"``, ``"uint32"``, ``"float16"``, ``"float32"``, ``"float64"`` or
        ``"quant8"``.
    codec : str or None
        v3 only: ``"raw"``, ``"fp16"``, ``"quant8"``, ``"fp16_rans"``, ``"fp32_rans"``.
    chunk_cols, num_chunks : int
        Forward chunk width and count.
    chunk_bounds : ndarray of int64, shape (num_chunks + 1,)
        Chunk ``c`` covers columns ``chunk_bounds[c]:chunk_bounds[c + 1]``.
    row_sorted : bool
        Rows were permuted by the writer (RcppML ``row_sort=TRUE``); reads undo it.
    has_transpose : bool
        A transpose section is stored (enables :meth:`read_transpose_chunk`/:meth:`read_rows`).
    obs, var : DataFrame or None
        Per-row (obs, ``m`` rows) and per-column (var, ``n`` rows) tables, parsed lazily.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, tempfile, os
    >>> from dask_factor.io.spz import write_spz
    >>> f = os.path.join(tempfile.mkdtemp(), "x.spz")
    >>> A = sp.random(50, 30, density=0.1, format="csc", random_state=0)
    >>> _ = write_spz(A, f, value_type="float32")
    >>> with SpzFile(f) as s:
    ...     print(s.shape, s.value_type, s.read_columns(5, 12).shape)
    (50, 30) float32 (50, 7)
    """

    def __init__(self, path: str | os.PathLike, *, verify_crc: bool = True,
                 limits: Limits | None = None) -> None:
        self._setup(os.fspath(path), verify_crc, crc_known_ok=False, warn=True, limits=limits)

    # ------------------------------------------------------------------ opening / pickling
    def _setup(self, path: str, verify_crc: bool, crc_known_ok: bool, warn: bool,
               limits: Limits | None = None) -> None:
        self.path = path
        self.verify_crc = bool(verify_crc)
        self.limits = limits if limits is not None else get_limits()
        self._lock = threading.Lock()
        self._obs: pd.DataFrame | None = None
        self._var: pd.DataFrame | None = None
        self._tables_loaded: set[str] = set()
        # O_NONBLOCK: opening a FIFO named x.spz must not wait for a writer (no effect on the
        # reads of a regular file); anything but a regular file is refused right after
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)
                                       | getattr(os, "O_NONBLOCK", 0))
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                what = "a directory" if stat.S_ISDIR(st.st_mode) else \
                    "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
                raise SpzFormatError(f"{path}: is {what}, not a regular .spz file")
            self._stat = (st.st_size, st.st_mtime_ns)
            self._open_checked(st.st_size, crc_known_ok)
        except BaseException:
            self.close()
            raise
        if warn and self.row_sorted:
            warnings.warn(
                f"{path} was written with row_sort=TRUE; RcppML's own reader returns it with "
                "wrongly permuted rows, dask_factor returns the true (un-permuted) matrix",
                UserWarning,
                stacklevel=3,
            )

    def _open_checked(self, size: int, crc_known_ok: bool) -> None:
        head = self._pread(0, 6) if size >= 6 else b""
        if len(head) == 6 and head[:4] == b"SPRZ" and head[4:6] == b"\x01\x00":
            from .legacy import load_v1

            self._lay = load_v1(self._pread, size, self.path, verify_crc=self.verify_crc)
            self._crc_ok = self.verify_crc
        else:
            self._lay = load_layout(self._pread, size, self.path)
            self._crc_ok = crc_known_ok
            if self.verify_crc and not crc_known_ok:
                self._check_crc(size)
        lay = self._lay
        h = lay.header
        self.version = lay.version
        self.shape = (lay.m, lay.n)
        self.nnz = lay.nnz
        self.is_dense = lay.version == 3
        self.codec = CODECS[h.codec] if self.is_dense else None
        self.value_type = VALUE_TYPES[h.value_type][0]
        self.chunk_cols = int(lay.fwd.width)
        self.num_chunks = int(lay.fwd.desc.shape[0])
        self.chunk_bounds = lay.fwd.bounds.copy()
        self.row_sorted = lay.true_row is not None
        self.has_transpose = lay.tsec is not None
        self._check_declared()

    # ------------------------------------------------------------------ size limits
    def _check_declared(self) -> None:
        check_declared(self)

    def _check_read(self, sec: Section, start: int, stop: int, what: str, itemsize: int) -> None:
        check_read(self, sec, start, stop, what, itemsize)

    def _check_crc(self, size: int) -> None:
        end = size - FOOTER_SIZE
        crc = 0
        pos = 0
        while pos < end:
            block = self._pread(pos, min(_CRC_BLOCK, end - pos))
            if not block:
                raise SpzFormatError(f"{self.path}: file shrank while verifying the CRC")
            crc = zlib.crc32(block, crc)
            pos += len(block)
        if crc != self._lay.footer.crc32:
            raise SpzFormatError(
                f"{self.path}: CRC32 mismatch (stored {self._lay.footer.crc32:#010x}, computed "
                f"{crc:#010x}); the file is corrupted (open with verify_crc=False to skip)"
            )
        self._crc_ok = True

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "verify_crc": self.verify_crc, "crc_ok": self._crc_ok,
                "stat": self._stat, "limits": self.limits}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # re-opened by path (on a Dask worker): it must still be the file that was opened
        path = state["path"]
        try:
            st = os.stat(path)
            same = (st.st_size, st.st_mtime_ns) == tuple(state["stat"])
        except OSError:
            same = False
        if not same:
            raise SpzSourceChangedError(
                f"{path}: changed (or was removed) since it was opened and pickled; reopen it")
        self._setup(path, state["verify_crc"], crc_known_ok=state["crc_ok"], warn=False,
                    limits=state.get("limits"))

    def close(self) -> None:
        """Close the file descriptor (idempotent).

        Examples
        --------
        >>> s = SpzFile(path)  # doctest: +SKIP
        >>> s.close()  # doctest: +SKIP
        """
        fd = getattr(self, "_fd", None)
        self._fd = None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SpzFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - never raise from __del__
            pass

    def __repr__(self) -> str:
        kind = f"dense {self.codec}" if self.is_dense else self.value_type
        return (f"SpzFile({self.path!r}, v{self.version}, shape={self.shape}, nnz={self.nnz}, "
                f"{kind}, {self.num_chunks} chunks of {self.chunk_cols})")

    # ------------------------------------------------------------------ low-level reads
    def _pread(self, offset: int, size: int) -> bytes:
        fd = self._fd
        if fd is None:
            raise ValueError(f"I/O operation on closed SpzFile {self.path!r}")
        if size <= 0:
            return b""
        if hasattr(os, "pread"):
            parts = []
            while size > 0:
                b = os.pread(fd, min(size, 1 << 30), offset)
                if not b:
                    break
                parts.append(b)
                offset += len(b)
                size -= len(b)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        with self._lock:  # pragma: no cover - Windows
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)

    def _check_unchanged(self) -> None:
        """The open file is still what was opened (a rewrite in place changes size or mtime)."""
        st = os.fstat(self._fd) if self._fd is not None else None
        if st is not None and (st.st_size, st.st_mtime_ns) != self._stat:
            raise SpzSourceChangedError(
                f"{self.path}: changed since it was opened (size {self._stat[0]} -> "
                f"{st.st_size} bytes, or its modification time); reopen it")

    def _chunk_bytes(self, sec: Section, c: int, what: str) -> np.ndarray:
        self._check_unchanged()
        start, size = int(sec.starts[c]), int(sec.sizes[c])
        raw = self._pread(start, size)
        if len(raw) != size:
            raise SpzFormatError(
                f"{self.path}: truncated {what} chunk {c} ({len(raw)} of {size} bytes at {start})"
            )
        return np.frombuffer(raw, np.uint8)

    # ------------------------------------------------------------------ sparse chunk decode
    def _decode_sparse(self, sec: Section, c: int, what: str, dt: np.dtype,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode chunk ``c`` of a v2 section -> (local indptr int64, rows, values)."""
        if self.version == 1:
            return self._lay.decode_all(dt)
        d = sec.desc[c]
        k, nnz = int(d["num_cols"]), int(d["nnz"])
        indptr = np.empty(k + 1, np.int64)
        rows = np.empty(nnz, np.int32 if sec.rows <= _I32_MAX else np.int64)
        vals = np.empty(nnz, dt)
        self._decode_into(sec, c, what, indptr, rows, vals)
        if sec is self._lay.fwd and self.row_sorted:
            rows = self._lay.true_row[rows].astype(rows.dtype)
            if sort_within_columns(indptr, rows, vals):
                raise SpzFormatError(
                    f"{self.path}: {what} chunk {c}: duplicate row indices within a column"
                )
        return indptr, rows, vals

    def _decode_into(self, sec: Section, c: int, what: str, indptr: np.ndarray,
                     rows: np.ndarray, vals: np.ndarray) -> None:
        """Decode chunk ``c`` of a v2 section into ``indptr`` (k + 1, int64, local from 0) and
        the ``nnz``-long ``rows`` and ``vals`` (views of a block's arrays, or its own)."""
        d = sec.desc[c]
        k, nnz = int(d["num_cols"]), int(d["nnz"])
        buf = self._chunk_bytes(sec, c, what)
        unsorted = sec is self._lay.fwd and self.row_sorted
        # everything checkable without decoding, before the per-entry arrays are allocated
        err = preflight_chunk(buf, int(d["gap_size"]), int(d["value_size"]), k, nnz, sec.rows,
                              int(self._lay.header.value_type), float(d["quant_scale"]))
        if err:
            raise SpzFormatError(f"{self.path}: {what} chunk {c}: {ERRORS.get(err, err)}")
        err = decode_chunk(buf, int(d["gap_size"]), int(d["value_size"]), k, nnz, sec.rows,
                           int(self._lay.header.value_type), float(d["quant_scale"]),
                           float(d["quant_offset"]), not unsorted, indptr, rows, vals)
        if err:
            raise SpzFormatError(f"{self.path}: {what} chunk {c}: {ERRORS.get(err, err)}")

    def _decode_run(self, sec: Section, c0: int, c1: int, what: str, dt: np.dtype,
                    nrows: int) -> sp.csc_matrix:
        """Chunks ``c0:c1`` (whole) of a v2 section, each decoded straight into its place in
        the block's arrays: no per-chunk arrays to gather, half the fresh memory of a read."""
        desc = sec.desc[c0:c1]
        counts = desc["nnz"].astype(np.int64)
        total = int(counts.sum())
        idx_t = _index_dtype(total, nrows)
        ncols = int(sec.bounds[c1] - sec.bounds[c0])
        indptr = np.empty(ncols + 1, idx_t)
        indptr[0] = 0
        rows = np.empty(total, idx_t)
        vals = np.empty(total, dt)
        local = np.empty(int(desc["num_cols"].max(initial=0)) + 1, np.int64)
        col = off = 0
        for i, c in enumerate(range(c0, c1)):
            k, nnz = int(desc["num_cols"][i]), int(counts[i])
            self._decode_into(sec, c, what, local[: k + 1], rows[off : off + nnz],
                              vals[off : off + nnz])
            indptr[col + 1 : col + k + 1] = local[1 : k + 1] + off
            col += k
            off += nnz
        return _sorted_csc(vals, rows, indptr, (nrows, ncols))

    def _sparse_range(self, sec: Section, start: int, stop: int, what: str, dt: np.dtype,
                      nrows: int) -> sp.csc_matrix:
        self._check_read(sec, start, stop, what, dt.itemsize)
        b = sec.bounds
        parts_r, parts_v, parts_c = [], [], []
        if stop > start:
            c0 = int(np.searchsorted(b, start, side="right") - 1)
            c1 = int(np.searchsorted(b, stop, side="left"))
            whole = int(b[c0]) == start and int(b[c1]) == stop
            if whole and self.version != 1 and not (sec is self._lay.fwd and self.row_sorted):
                return self._decode_run(sec, c0, c1, what, dt, nrows)
            for c in range(c0, c1):
                ip, r, v = self._decode_sparse(sec, c, what, dt)
                lo = max(start, int(b[c])) - int(b[c])
                hi = min(stop, int(b[c + 1])) - int(b[c])
                s, e = int(ip[lo]), int(ip[hi])
                parts_r.append(r[s:e])
                parts_v.append(v[s:e])
                parts_c.append(np.diff(ip[lo : hi + 1]))
        return _assemble(parts_r, parts_v, parts_c, (nrows, stop - start), dt)

    # ------------------------------------------------------------------ dense panel decode
    def _decode_dense(self, sec: Section, c: int, what: str, dt: np.dtype) -> np.ndarray:
        h = self._lay.header
        buf = self._chunk_bytes(sec, c, what)
        k = int(sec.bounds[c + 1] - sec.bounds[c])
        panel, err = decode_panel(buf, int(h.codec), bool(h.delta), sec.rows, k, int(h.value_type))
        if err:
            raise SpzFormatError(f"{self.path}: {what} panel {c}: {ERRORS.get(err, err)}")
        return panel

    def _dense_range(self, sec: Section, start: int, stop: int, what: str, dt: np.dtype
                     ) -> np.ndarray:
        self._check_read(sec, start, stop, what, dt.itemsize)
        out = np.empty((sec.rows, stop - start), dtype=dt, order="F")
        if stop > start:
            b = sec.bounds
            c0 = int(np.searchsorted(b, start, side="right") - 1)
            c1 = int(np.searchsorted(b, stop, side="left"))
            for c in range(c0, c1):
                panel = self._decode_dense(sec, c, what, dt)
                lo = max(start, int(b[c]))
                hi = min(stop, int(b[c + 1]))
                out[:, lo - start : hi - start] = panel[:, lo - int(b[c]) : hi - int(b[c])]
        return out

    # ------------------------------------------------------------------ public reads
    def _check_open(self) -> None:
        if self._fd is None:
            raise ValueError(f"I/O operation on closed SpzFile {self.path!r}")

    def read_columns(self, start: int, stop: int, *, dtype: Any = np.float64
                     ) -> sp.csc_matrix | np.ndarray:
        """Columns ``start:stop`` of the matrix, reading only the chunks that overlap them.

        Parameters
        ----------
        start, stop : int
            Column range, ``0 <= start <= stop <= n``.
        dtype : {float64, float32}
            Value dtype of the result.

        Returns
        -------
        csc_matrix of shape (m, stop - start), or ndarray (F-ordered) for dense files
            Row indices sorted within columns; int32 indices when they fit.

        Examples
        --------
        >>> SpzFile("x.spz").read_columns(0, 10).shape  # doctest: +SKIP
        (50, 10)
        """
        dt = _check_dtype(dtype)
        self._check_open()
        start, stop = _check_range(start, stop, self.shape[1], "column")
        if self.is_dense:
            return self._dense_range(self._lay.fwd, start, stop, "forward", dt)
        return self._sparse_range(self._lay.fwd, start, stop, "forward", dt, self.shape[0])

    def read_chunk(self, c: int, *, dtype: Any = np.float64) -> sp.csc_matrix | np.ndarray:
        """Forward chunk ``c`` (columns ``chunk_bounds[c]:chunk_bounds[c+1]``).

        Parameters
        ----------
        c : int
            Chunk number, ``0 <= c < num_chunks``.
        dtype : {float64, float32}

        Returns
        -------
        csc_matrix of shape (m, width), or ndarray for dense files

        Examples
        --------
        >>> SpzFile("x.spz").read_chunk(0).shape  # doctest: +SKIP
        (50, 30)
        """
        c = _check_index(c, self.num_chunks, "chunk")
        return self.read_columns(int(self.chunk_bounds[c]), int(self.chunk_bounds[c + 1]),
                                 dtype=dtype)

    def read_all(self, *, dtype: Any = np.float64) -> sp.csc_matrix | np.ndarray:
        """The whole matrix (shape ``(m, n)``).

        Examples
        --------
        >>> SpzFile("x.spz").read_all().shape  # doctest: +SKIP
        (50, 30)
        """
        return self.read_columns(0, self.shape[1], dtype=dtype)

    def iter_chunks(self, *, dtype: Any = np.float64):
        """Yield ``(col_start, block)`` for every forward chunk, in column order.

        Examples
        --------
        >>> for start, block in SpzFile("x.spz").iter_chunks():  # doctest: +SKIP
        ...     pass
        """
        for c in range(self.num_chunks):
            yield int(self.chunk_bounds[c]), self.read_chunk(c, dtype=dtype)

    def _require_transpose(self) -> Section:
        self._check_open()
        if self._lay.tsec is None:
            raise ValueError(
                f"{self.path} has no transpose section (write it with include_transpose=True)"
            )
        return self._lay.tsec

    @property
    def chunk_nnz(self) -> np.ndarray:
        """Stored entries of every forward chunk (int64, length ``num_chunks``).

        For dense files, ``m * width`` of each panel.

        Examples
        --------
        >>> SpzFile("x.spz").chunk_nnz.sum()  # doctest: +SKIP
        150
        """
        if self.is_dense:
            return np.diff(self.chunk_bounds) * self.shape[0]
        if self.version == 1:
            return np.array([self.nnz], np.int64)
        return self._lay.fwd.desc["nnz"].astype(np.int64)

    @property
    def transpose_bounds(self) -> np.ndarray | None:
        """Row ranges of the transpose chunks (int64, length T + 1), or None without transpose.

        Examples
        --------
        >>> SpzFile("x.spz").transpose_bounds  # doctest: +SKIP
        array([ 0, 30, 50])
        """
        return None if self._lay.tsec is None else self._lay.tsec.bounds.copy()

    def read_transpose_chunk(self, c: int, *, dtype: Any = np.float64
                             ) -> sp.csc_matrix | np.ndarray:
        """Chunk ``c`` of the stored transpose: columns ``transpose_bounds[c]:[c+1]`` of Aᵀ.

        Returns a csc_matrix of shape ``(n, k)`` (ndarray for dense files): its column ``j``
        is row ``transpose_bounds[c] + j`` of A.  For row-sorted files the rows are mapped
        back to the true row order (possibly touching several stored chunks).

        Examples
        --------
        >>> SpzFile("x.spz").read_transpose_chunk(0).shape  # doctest: +SKIP
        (30, 30)
        """
        tsec = self._require_transpose()
        c = _check_index(c, tsec.desc.shape[0], "transpose chunk")
        return self._transpose_cols(int(tsec.bounds[c]), int(tsec.bounds[c + 1]), dtype)

    def read_rows(self, start: int, stop: int, *, dtype: Any = np.float64
                  ) -> sp.csr_matrix | np.ndarray:
        """Rows ``start:stop`` of the matrix, from the stored transpose section.

        Returns
        -------
        csr_matrix of shape (stop - start, n), or ndarray for dense files

        Examples
        --------
        >>> SpzFile("x.spz").read_rows(3, 8).shape  # doctest: +SKIP
        (5, 30)
        """
        self._require_transpose()
        start, stop = _check_range(start, stop, self.shape[0], "row")
        t = self._transpose_cols(start, stop, dtype)
        return t.T if self.is_dense else t.T.tocsr()

    def _transpose_cols(self, start: int, stop: int, dtype: Any) -> sp.csc_matrix | np.ndarray:
        dt = _check_dtype(dtype)
        tsec = self._require_transpose()
        n = self.shape[1]
        if self.is_dense:
            return self._dense_range(tsec, start, stop, "transpose", dt)
        if not self.row_sorted:
            return self._sparse_range(tsec, start, stop, "transpose", dt, n)
        # row-sorted: true row r is stored transpose column stored_row[r]
        want = self._lay.stored_row[start:stop]
        width = int(tsec.width)
        chunks = np.unique(want // width) if want.size else np.zeros(0, np.int64)
        mats, offsets, off = [], {}, 0
        for c in chunks:
            c = int(c)
            k = int(tsec.bounds[c + 1] - tsec.bounds[c])
            mats.append(self._sparse_range(tsec, int(tsec.bounds[c]), int(tsec.bounds[c + 1]),
                                           "transpose", dt, n))
            offsets[c] = off
            off += k
        if not mats:
            return _assemble([], [], [], (n, 0), dt)
        big = sp.hstack(mats, format="csc")
        pos = np.array([offsets[int(s // width)] + int(s % width) for s in want], np.int64)
        out = big[:, pos]
        out.sort_indices()
        return _as_csc(out, dt)

    def verify(self) -> dict:
        """Decode every chunk and check the stored transpose against the matrix.

        A deep check beyond the CRC (which a forger can recompute): the two sections are
        independent encodings of the same data.  See :func:`dask_factor.io.spz.verify.verify`.

        Examples
        --------
        >>> SpzFile("x.spz").verify()  # doctest: +SKIP
        {'chunks': 3, 'transpose': 'exact'}
        """
        from .verify import verify

        self._check_open()
        return verify(self)

    # ------------------------------------------------------------------ tables / info
    def _table(self, which: str) -> pd.DataFrame | None:
        if which not in self._tables_loaded:
            rng = self._lay.obs_range if which == "obs" else self._lay.var_range
            df = None
            if rng is not None:
                self._check_open()
                blob = self._pread(rng[0], rng[1] - rng[0])
                rows = self.shape[0] if which == "obs" else self.shape[1]
                df = parse_table(blob, self.path, which, rows)
            setattr(self, "_" + which, df)
            self._tables_loaded.add(which)
        df = getattr(self, "_" + which)
        return None if df is None else df.copy()

    @property
    def obs(self) -> pd.DataFrame | None:
        """Per-ROW table (one DataFrame row per matrix row), or None if not stored."""
        return self._table("obs")

    @property
    def var(self) -> pd.DataFrame | None:
        """Per-COLUMN table (one DataFrame row per matrix column), or None if not stored."""
        return self._table("var")

    def info(self) -> dict[str, Any]:
        """Summary of the file (no data decoded; obs/var tables are parsed for their names).

        Returns
        -------
        dict
            Keys: ``format`` ("spz"), ``version``, ``shape``, ``nnz``, ``density``,
            ``value_type``, ``codec`` (v3), ``delta`` (v3), ``chunk_cols``, ``num_chunks``,
            ``has_transpose``, ``row_sorted``, ``obs_columns``, ``var_columns``,
            ``file_size``.

        Examples
        --------
        >>> SpzFile("x.spz").info()["format"]  # doctest: +SKIP
        'spz'
        """
        obs, var = self.obs, self.var
        m, n = self.shape
        return {
            "format": "spz",
            "path": self.path,
            "version": self.version,
            "shape": self.shape,
            "nnz": self.nnz,
            "density": (self.nnz / (m * n)) if m and n else 0.0,
            "value_type": self.value_type,
            "codec": self.codec,
            "delta": bool(self._lay.header.delta) if self.is_dense else None,
            "chunk_cols": self.chunk_cols,
            "num_chunks": self.num_chunks,
            "has_transpose": self.has_transpose,
            "row_sorted": self.row_sorted,
            "obs_columns": None if obs is None else [str(c) for c in obs.columns],
            "var_columns": None if var is None else [str(c) for c in var.columns],
            "file_size": self._lay.file_size,
        }


def _check_range(start: int, stop: int, size: int, what: str) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= size:
        raise ValueError(f"{what} range [{start}, {stop}) is not within [0, {size}]")
    return start, stop


def _check_index(c: int, count: int, what: str) -> int:
    c = int(c)
    if not 0 <= c < count:
        raise IndexError(f"{what} {c} out of range [0, {count})")
    return c


def _as_csc(m: sp.spmatrix, dt: np.dtype) -> sp.csc_matrix:
    out = sp.csc_matrix(m)
    if out.dtype != dt:
        out = out.astype(dt)
    return out


def _assemble(parts_r: list, parts_v: list, parts_c: list, shape: tuple[int, int],
              dt: np.dtype) -> sp.csc_matrix:
    counts = np.concatenate(parts_c) if parts_c else np.zeros(0, np.int64)
    idx_t = _index_dtype(int(counts.sum()), shape[0])
    indptr = np.zeros(shape[1] + 1, idx_t)
    np.cumsum(counts, out=indptr[1:])
    rows = np.concatenate(parts_r).astype(idx_t, copy=False) if parts_r else np.zeros(0, idx_t)
    vals = np.concatenate(parts_v) if parts_v else np.zeros(0, dt)
    return _sorted_csc(vals, rows, indptr, shape)


def _index_dtype(nnz: int, nrows: int) -> type:
    """int32 indices and pointers while both fit, else int64."""
    return np.int32 if (nnz <= _I32_MAX and nrows <= _I32_MAX) else np.int64


def _sorted_csc(vals, rows, indptr, shape) -> sp.csc_matrix:
    """A read's result around its arrays (no copy); its rows ascend in every column (checked
    while decoding)."""
    mat = sp.csc_matrix((vals, rows, indptr), shape=shape, copy=False)
    mat.has_sorted_indices = True
    return mat


def read_spz(path: str | os.PathLike, *, dtype: Any = np.float64, verify_crc: bool = True
             ) -> sp.csc_matrix | np.ndarray:
    """Read a whole ``.spz`` file.

    Parameters
    ----------
    path : str or os.PathLike
    dtype : {float64, float32}
    verify_crc : bool, default True

    Returns
    -------
    csc_matrix of shape (m, n) for sparse files, ndarray of shape (m, n) for dense (v3) files

    Examples
    --------
    >>> A = read_spz("pbmc3k_data_rda.spz")  # doctest: +SKIP
    >>> A.shape  # doctest: +SKIP
    (13714, 2638)
    """
    with SpzFile(path, verify_crc=verify_crc) as f:
        return f.read_all(dtype=dtype)
