"""Writing StreamPress files: sparse v2 and dense v3, in-memory or streamed, atomically."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pandas as pd

from .codecs import UINT_MAX, decode_chunk, encode_chunk, first_invalid
from .dense import decode_panel, encode_panel
from .header import (
    CODEC_CODES,
    DESC_V2,
    DESC_V3,
    DESC_V3_RAW,
    FOOTER_SIZE,
    HEADER_SIZE,
    VALUE_TYPE_CODES,
    VALUE_TYPES,
    Footer,
    HeaderV2,
    HeaderV3,
    default_chunk_cols,
    density_f32,
    pack_metadata,
)
from .sources import Source, SparseChunk, SparseSource, SpillSource, ValueStats, make_source
from .tables import pack_table
from .transpose import count_rows, dense_transpose_panels, sparse_transpose_chunks

__all__ = ["write_spz"]

_ALIASES = {"fp16": "float16", "fp32": "float32", "fp64": "float64"}
_U32 = 0xFFFFFFFF
_F32_MAX = float(np.finfo(np.float32).max)
_HALF_LIMIT = 65520.0  # RcppML's converter turns |v| >= 65520 into Inf
DEFAULT_TRANSPOSE_MEMORY = 512 << 20


def _choose_auto(stats: ValueStats) -> int:
    """RcppML's "auto" rule: smallest uint type for non-negative integers, else float32."""
    if stats.count == 0:
        return VALUE_TYPE_CODES["uint8"]
    if stats.all_uint:
        for name in ("uint8", "uint16", "uint32"):
            if stats.vmax <= UINT_MAX[VALUE_TYPE_CODES[name]]:
                return VALUE_TYPE_CODES[name]
    return VALUE_TYPE_CODES["float32"]


def _check_values(vals: np.ndarray, ch: SparseChunk, vt: int, strict: bool,
                  auto: bool = False) -> None:
    name = VALUE_TYPES[vt][0]
    if not strict and vt in (3, 4):
        return
    if vt in UINT_MAX:
        kind, limit = 0, float(UINT_MAX[vt])
        why = f"needs non-negative integers <= {UINT_MAX[vt]} (no NaN/Inf)"
    elif vt == 3:
        kind, limit, why = 1, _F32_MAX, "overflows float32"
    elif vt == 4:
        kind, limit = 2, _HALF_LIMIT
        why = "float16 stores finite |v| < 65520 or +-Inf, and no NaN"
    elif vt == 5:
        kind, limit, why = 3, 0.0, "quant8 needs finite values"
    else:
        return
    k = int(first_invalid(np.ascontiguousarray(vals, dtype=np.float64), kind, limit))
    if k >= 0:
        if auto:
            why += " ('auto' chose it; pass value_type='float64')"
        col = ch.col_start + int(np.searchsorted(ch.indptr, k, side="right") - 1)
        raise ValueError(
            f"source: value {float(vals[k])!r} at (row {int(ch.rows[k])}, column {col}) cannot "
            f"be stored as value_type={name!r}: {why}"
        )


def _check_panel(panel: np.ndarray, col_start: int, codec: int, vt: int, strict: bool) -> None:
    if not strict and codec != 2:
        return
    v = np.asarray(panel, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if codec in (1, 3):
            bad = np.isnan(v) | (np.isfinite(v) & (np.abs(v) >= _HALF_LIMIT))
            why = "fp16 codecs store finite |v| < 65520 or +-Inf, and no NaN"
        elif codec == 2:
            bad = ~np.isfinite(v)
            why = "quant8 needs finite values"
        elif vt == 3:
            bad = np.isfinite(v) & (np.abs(v) > _F32_MAX)
            why = "overflows float32"
        else:
            return
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"source: value {float(v[r, c])!r} at (row {r}, column {col_start + c}) cannot be "
            f"stored with codec {list(CODEC_CODES)[codec]!r}: {why}"
        )


@contextlib.contextmanager
def _atomic_file(path: str) -> Iterator[IO[bytes]]:
    """A temporary file next to ``path``, renamed over it only if the block succeeds.

    Named ``.<name>.tmp-<host>-<pid>-<random>``, so that the next write to ``path`` removes it
    if this process is killed (see :func:`dask_factor.io.targets.clean_stale`).
    """
    from ..targets import temp_sibling

    tmp = str(temp_sibling(os.path.abspath(path)))
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _finish(f: IO[bytes], header: bytes, index_parts: list[tuple[int, bytes]],
            metadata_size: int, total_chunks: int) -> int:
    """Patch header and indices, then append the footer with the CRC of everything."""
    end = f.tell()
    f.seek(0)
    f.write(header)
    for off, blob in index_parts:
        f.seek(off)
        f.write(blob)
    f.flush()
    crc, pos, fd = 0, 0, f.fileno()
    while pos < end:
        block = os.pread(fd, min(256 << 10, end - pos), pos)
        crc = zlib.crc32(block, crc)
        pos += len(block)
    f.seek(end)
    f.write(Footer(metadata_size, crc, total_chunks).pack())
    return end + FOOTER_SIZE


def _emit_sparse(f: IO[bytes], desc: np.ndarray, c: int, ch: SparseChunk, vt: int, rel: int,
                 what: str) -> int:
    nnz = int(ch.rows.size)
    if nnz > _U32:
        raise ValueError(f"{what} chunk {c} holds {nnz} entries (> 2**32 - 1); use a smaller "
                         "chunk_cols")
    gap, val, qs, qo = encode_chunk(ch.indptr, ch.rows, ch.vals, vt)
    if rel + gap.size + val.size > _U32:
        raise ValueError(
            f"the {what} section exceeds 4 GiB, which StreamPress's u32 chunk offsets cannot "
            "address (RcppML would corrupt it silently); split the matrix into several files"
        )
    d = desc[c]
    d["col_start"], d["num_cols"], d["nnz"] = ch.col_start, ch.ncols, nnz
    d["gap_offset"], d["value_offset"] = rel, rel + gap.size
    d["gap_size"], d["value_size"] = gap.size, val.size
    d["decoded_gap_bytes"], d["decoded_value_bytes"] = 4 * nnz, nnz * VALUE_TYPES[vt][1]
    d["quant_scale"], d["quant_offset"] = qs, qo
    f.write(gap.tobytes())
    f.write(val.tobytes())
    return rel + gap.size + val.size


def _decoded_forward(f: IO[bytes], base: int, desc: np.ndarray, m: int, vt: int
                     ) -> Iterator[SparseChunk]:
    """Re-read the forward chunks just written (for one-shot streams)."""
    f.flush()
    fd = f.fileno()
    for d in desc:
        k, nnz = int(d["num_cols"]), int(d["nnz"])
        gs, vs = int(d["gap_size"]), int(d["value_size"])
        buf = np.frombuffer(os.pread(fd, gs + vs, base + int(d["gap_offset"])), np.uint8)
        indptr = np.empty(k + 1, np.int64)
        rows = np.empty(nnz, np.int32 if m <= 2**31 - 1 else np.int64)
        vals = np.empty(nnz, np.float64)
        err = decode_chunk(buf, gs, vs, k, nnz, m, vt, float(d["quant_scale"]),
                           float(d["quant_offset"]), True, indptr, rows, vals)
        if err:  # pragma: no cover - would be a bug in the encoder
            raise RuntimeError(f"internal error: re-reading a written chunk failed ({err})")
        yield SparseChunk(int(d["col_start"]), indptr, rows, vals)


def _write_v2(f: IO[bytes], src: Source, vt: int, cc: int, want_t: bool, obs: bytes | None,
              var: bytes | None, budget: int, strict: bool, auto: bool) -> bool:
    """Write a v2 file; returns whether a transpose section was written."""
    m, n = src.shape
    nch = -(-n // cc) if n else 0
    data_offset = HEADER_SIZE + 48 * nch
    f.write(b"\0" * data_offset)
    desc = np.zeros(nch, DESC_V2)
    rel, total, c = 0, 0, 0
    row_counts = np.zeros(m, np.int64)
    for ch in src.sparse_chunks(cc):
        _check_values(ch.vals, ch, vt, strict, auto)
        rel = _emit_sparse(f, desc, c, ch, vt, rel, "forward")
        count_rows(ch.rows, row_counts)
        total += int(ch.rows.size)
        c += 1
    index_parts = [(HEADER_SIZE, desc.tobytes())]
    t_off = 0
    if want_t and total > 0:
        t_off = f.tell()
        t_count = -(-m // cc)
        f.write(struct.pack("<I", t_count) + b"\0" * (48 * t_count))
        tdesc = np.zeros(t_count, DESC_V2)
        if src.reiterable:
            def forward():
                return src.sparse_chunks(cc)
        else:
            def forward():
                return _decoded_forward(f, data_offset, desc, m, vt)
        rel = 0
        for t, tch in enumerate(sparse_transpose_chunks(forward, (m, n), cc, row_counts,
                                                         max(1, budget // 16))):
            rel = _emit_sparse(f, tdesc, t, tch, vt, rel, "transpose")
        index_parts.append((t_off + 4, tdesc.tobytes()))
    obs_off = var_off = 0
    if obs is not None:
        obs_off = f.tell()
        f.write(obs)
    if var is not None:
        var_off = f.tell()
        f.write(var)
    meta_off = f.tell()
    meta = pack_metadata()
    f.write(meta)
    h = HeaderV2(m=m, n=n, nnz=total, chunk_cols=cc, num_chunks=nch, value_type=vt,
                 tables_offset=data_offset, data_offset=data_offset, transpose_offset=t_off,
                 metadata_offset=meta_off, density=density_f32(total, m, n),
                 obs_table_offset=obs_off, var_table_offset=var_off)
    _finish(f, h.pack(), index_parts, len(meta), nch)
    return t_off != 0


def _write_v3(f: IO[bytes], src: Source, vt: int, codec: int, delta: bool, cc: int,
              want_t: bool, budget: int, strict: bool) -> None:
    m, n = src.shape
    nch = -(-n // cc) if n else 0
    dt = DESC_V3_RAW if codec == 0 else DESC_V3
    data_offset = HEADER_SIZE + dt.itemsize * nch
    f.write(b"\0" * data_offset)
    desc = np.zeros(nch, dt)
    apply_delta = delta and codec in (1, 3, 4)

    def emit(d: np.ndarray, c: int, start: int, panel: np.ndarray, rel: int) -> int:
        _check_panel(panel, start, codec, vt, strict)
        payload = encode_panel(panel, codec, apply_delta, vt)
        d[c]["col_start"], d[c]["num_cols"] = start, panel.shape[1]
        d[c]["byte_offset"], d[c]["byte_size"] = rel, payload.size
        if codec != 0:
            d[c]["uncompressed_size"] = panel.shape[0] * panel.shape[1] * 4
        f.write(payload.tobytes())
        return rel + payload.size

    rel = 0
    for c, (start, panel) in enumerate(src.dense_panels(cc)):
        rel = emit(desc, c, start, panel, rel)
    index_parts = [(HEADER_SIZE, desc.tobytes())]
    t_count = t_idx = t_data = 0
    if want_t:
        t_count = -(-m // cc) if m else 0
        t_idx = f.tell()
        tdesc = np.zeros(t_count, dt)
        f.write(b"\0" * (dt.itemsize * t_count))
        t_data = f.tell()
        if src.reiterable:
            def forward():
                return src.dense_panels(cc)
        else:
            def forward():
                f.flush()
                for d in desc:
                    k = int(d["num_cols"])
                    raw = os.pread(f.fileno(), int(d["byte_size"]),
                                   data_offset + int(d["byte_offset"]))
                    panel, _ = decode_panel(np.frombuffer(raw, np.uint8), codec, apply_delta,
                                            m, k, vt)
                    yield int(d["col_start"]), panel
        rel = 0
        for t, (_, panel) in enumerate(dense_transpose_panels(forward, (m, n), cc, budget)):
            rel = emit(tdesc, t, t * cc, panel, rel)
        index_parts.append((t_idx, tdesc.tobytes()))
    meta_off = f.tell()
    h = HeaderV3(m=m, n=n, nnz=m * n, chunk_cols=cc, num_chunks=nch,
                 num_transpose_chunks=t_count, value_type=vt, has_transpose=int(want_t),
                 data_offset=data_offset, transpose_index_offset=t_idx,
                 transpose_data_offset=t_data, metadata_offset=meta_off, codec=codec,
                 delta=int(bool(delta)))
    _finish(f, h.pack(), index_parts, 0, nch)


def write_spz(
    source: Any,
    path: str | os.PathLike,
    *,
    shape: tuple[int, int] | None = None,
    value_type: str = "auto",
    chunk_cols: int | None = None,
    include_transpose: bool | None = None,
    obs: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
    dense: bool | None = None,
    codec: str = "raw",
    delta: bool = False,
    transpose_memory: int = DEFAULT_TRANSPOSE_MEMORY,
    strict: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a matrix to a StreamPress ``.spz`` file, exactly as RcppML would.

    Sparse input gives a v2 file (chunked CSC, rANS-coded, never row-sorted); dense input a
    v3 file (column panels).  The file is written to a temporary file in the same directory
    and renamed over ``path`` at the end; on any error (bad input, interrupt) the temporary
    file is removed and ``path`` is left untouched.

    Parameters
    ----------
    source : scipy.sparse matrix, ndarray, or iterable of (col_start, block)
        The matrix (m × n).  A *block stream* yields ``(col_start, block)`` pairs in column
        order that tile ``[0, n)`` (blocks: scipy.sparse or 2-D numpy, any widths, ``m`` rows)
        and needs ``shape=`` (or a ``.shape`` attribute).  Streams are read with bounded
        memory: one file chunk at a time, plus the transpose built group by group within
        ``transpose_memory``.  A stream whose ``iter()`` returns a fresh iterator is read
        several times; a one-shot iterator is read once (with ``value_type="auto"`` it is
        spilled to a temporary file next to ``path`` to find the value type first).
    path : str or os.PathLike
        Output file.
    shape : (m, n), optional
        Required for block streams without ``.shape``.
    value_type : str, default "auto"
        Sparse files: ``"auto"`` (RcppML's rule: uint8/uint16/uint32 for non-negative
        integers by their maximum, otherwise float32; an empty matrix gets uint8),
        ``"uint8"``, ``"uint16"``, ``"uint32"``, ``"float16"``, ``"float32"``, ``"float64"``,
        ``"quant8"`` (aliases ``"fp16"``, ``"fp32"``, ``"fp64"``).  Dense files: ``"auto"`` /
        ``"float32"`` or ``"float64"`` (raw codec only); ``"float16"``/``"quant8"`` select the
        matching codec.  "auto" warns when it rounds float64 values to float32.
    chunk_cols : int, optional
        Columns per chunk.  Default: RcppML's rule, ``min(max(1, 8e6 // (4 m)), n)`` for
        sparse files and 2048 for dense files.  The transpose uses the same width.
    include_transpose : bool, optional
        Store Aᵀ too (needed by RcppML's streaming NMF).  Default: True for sparse, False for
        dense (RcppML's defaults).  Never written for a matrix without entries.
    obs, var : DataFrame, optional
        Per-ROW (``m`` rows) and per-COLUMN (``n`` rows) tables (RcppML's orientation), for
        sparse files.  Columns: string/object and categorical (dictionary-coded), float
        (NaN = NA), integer incl. nullable (int32 range), bool incl. nullable.  The index is
        not stored.
    dense : bool, optional
        Force a dense v3 (True) or sparse v2 (False) file; default: dense for numpy input and
        for streams of numpy blocks.
    codec : str, default "raw"
        Dense files: ``"raw"``, ``"fp16"``, ``"quant8"``, ``"fp16_rans"``, ``"fp32_rans"``.
    delta : bool, default False
        Dense files: XOR-delta the panel bytes (applied for fp16, fp16_rans and fp32_rans;
        stored but ignored for raw and quant8, as in RcppML).
    transpose_memory : int
        Bytes of working memory for building the transpose (default 512 MiB).
    strict : bool, default True
        Reject values that float16 / float32 would turn into Inf (NaN and ``|v|`` >= 65520 for
        float16 and the fp16 codecs, finite ``|v|`` > 3.4e38 for float32).  ``strict=False``
        writes them as RcppML does (+-Inf), byte for byte.
    overwrite : bool, default False
        Replace an existing ``path``; only a ``.spz`` file (one starting with the ``SPRZ``
        magic) is ever replaced, anything else is refused.

    Returns
    -------
    dict
        ``path``, ``version``, ``shape``, ``value_type``, ``codec``, ``chunk_cols``,
        ``has_transpose``, ``file_size``.

    Raises
    ------
    ValueError
        Invalid arguments or values that the value type cannot hold (named in the message),
        detected before the file is created for in-memory input.
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it is not a ``.spz`` file.
    MatrixFormatError
        A sparse source (or block) is malformed: an index out of range, a bad ``indptr``.

    Notes
    -----
    Error bounds of the lossy encodings (values are first rounded to float32, relative
    error <= 2**-24):

    * ``float16`` (and the fp16 codecs): RcppML's converter, round-to-nearest-even to 11
      significant bits: relative error <= 2**-11 (~4.9e-4) for 2**-14 <= ``|v|`` < 65520;
      ``|v|`` < 2**-14 is flushed to +-0 (absolute error < 6.1e-5).  NaN and ``|v|`` >= 65520 are
      rejected unless ``strict=False`` (then they become +-Inf, as in RcppML).
    * ``quant8`` (sparse): per chunk (and separately per transpose chunk), 256 levels
      between the chunk's min and max: absolute error <= (max - min) / 510, plus float32
      rounding.  Dense ``quant8``: the same bound per panel.
    * ``float32``: relative error <= 2**-24.  uint types and ``float64`` are lossless.

    For a one-shot stream (an iterator, read once) the transpose is built from the forward
    section just written; with ``quant8`` (sparse value type or dense codec) it is therefore
    quantized from already-quantized values (error up to both bounds added).  In-memory and
    re-iterable sources are transposed from the original values, exactly like RcppML.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, tempfile, os
    >>> A = sp.random(100, 40, density=0.05, format="csc", random_state=1)
    >>> A.data = np.round(A.data * 10)
    >>> f = os.path.join(tempfile.mkdtemp(), "a.spz")
    >>> write_spz(A, f)["value_type"]
    'uint8'
    >>> blocks = ((j, A[:, j:j + 16]) for j in range(0, 40, 16))
    >>> write_spz(blocks, f, shape=A.shape, value_type="uint8", overwrite=True)["chunk_cols"]
    40
    """
    path = os.fspath(path)
    vt_name = _ALIASES.get(value_type, value_type)
    if vt_name != "auto" and vt_name not in VALUE_TYPE_CODES:
        raise ValueError(f"value_type must be 'auto' or one of {sorted(VALUE_TYPE_CODES)} "
                         f"(or fp16/fp32/fp64), got {value_type!r}")
    if codec not in CODEC_CODES:
        raise ValueError(f"codec must be one of {list(CODEC_CODES)}, got {codec!r}")
    if chunk_cols is not None and (isinstance(chunk_cols, bool) or not
                                   isinstance(chunk_cols, int | np.integer) or
                                   not 1 <= chunk_cols <= _U32):
        raise ValueError(f"chunk_cols must be a positive integer < 2**32, got {chunk_cols!r}")
    if include_transpose is not None and not isinstance(include_transpose, bool | np.bool_):
        raise ValueError(f"include_transpose must be a bool, got {include_transpose!r}")
    if int(transpose_memory) < 1:
        raise ValueError(f"transpose_memory must be positive, got {transpose_memory!r}")
    if os.path.isdir(path) and not overwrite:
        raise ValueError(f"path {path!r} is a directory")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ValueError(f"path {path!r}: directory does not exist")
    from ..targets import check_target, clean_stale

    check_target(path, fmt="spz", overwrite=overwrite)
    clean_stale(path)

    src = make_source(source, shape, dense)
    m, n = src.shape
    if m > _U32 or n > _U32:
        raise ValueError(f"shape {src.shape} too large: StreamPress stores m and n as u32")
    is_dense = src.dense_input if dense is None else bool(dense)
    if is_dense:
        return _write_dense_file(src, path, vt_name, codec, delta, chunk_cols,
                                 include_transpose, obs, var, int(transpose_memory), strict)
    if codec != "raw" or delta:
        raise ValueError("codec and delta apply to dense (v3) files only; pass dense=True or "
                         "use value_type='float16'/'quant8' for lossy sparse files")
    obs_blob = None if obs is None else pack_table(obs, "obs", m)
    var_blob = None if var is None else pack_table(var, "var", n)
    cc = int(chunk_cols) if chunk_cols is not None else default_chunk_cols(m, n)
    want_t = True if include_transpose is None else bool(include_transpose)
    spill = None
    try:
        if vt_name == "auto":
            if isinstance(src, SparseSource):  # in-memory: look at the values directly
                stats = ValueStats()
                stats.update(src.a.data)
            elif src.reiterable:
                stats = ValueStats()
                for ch in src.sparse_chunks(cc):
                    stats.update(ch.vals)
            else:
                spill = SpillSource(src, cc, os.path.dirname(os.path.abspath(path)))
                stats, src = spill.stats, spill
            vt = _choose_auto(stats)
            if vt == 3 and stats.lossy_f32:
                import warnings

                warnings.warn("value_type='auto' stores non-integer values as float32 (like "
                              "RcppML); pass value_type='float64' to keep them exactly",
                              UserWarning, stacklevel=2)
        else:
            vt = VALUE_TYPE_CODES[vt_name]
        if hasattr(src, "a"):  # validate in-memory values before creating the file
            for ch in src.sparse_chunks(cc):
                _check_values(ch.vals, ch, vt, strict, vt_name == "auto")
        with _atomic_file(path) as f:
            has_t = _write_v2(f, src, vt, cc, want_t, obs_blob, var_blob,
                              int(transpose_memory), strict, vt_name == "auto")
    finally:
        if spill is not None:
            spill.close()
    return {"path": path, "version": 2, "shape": (m, n), "value_type": VALUE_TYPES[vt][0],
            "codec": None, "chunk_cols": cc, "has_transpose": has_t,
            "file_size": os.path.getsize(path)}


def _write_dense_file(src: Source, path: str, vt_name: str, codec: str, delta: bool,
                      chunk_cols: int | None, include_transpose: bool | None,
                      obs: Any, var: Any, budget: int, strict: bool) -> dict[str, Any]:
    if obs is not None or var is not None:
        raise ValueError("obs/var tables are stored in sparse (v2) files only; RcppML's dense "
                         "(v3) format has no tables")
    if vt_name in ("float16", "quant8"):
        want = "fp16" if vt_name == "float16" else "quant8"
        if codec not in ("raw", want, want + "_rans"):
            raise ValueError(f"value_type={vt_name!r} conflicts with codec={codec!r}")
        if codec == "raw":
            codec = want
        vt_name = "auto"
    if vt_name not in ("auto", "float32", "float64"):
        raise ValueError(f"dense (v3) files store float32 or float64, not {vt_name!r}; pass "
                         "dense=False to write a sparse v2 file")
    vt = 6 if vt_name == "float64" else 3
    codec_code = CODEC_CODES[codec]
    if vt == 6 and codec_code != 0:
        raise ValueError("value_type='float64' needs codec='raw' (the other codecs are 32/16/8 "
                         "bit)")
    cc = int(chunk_cols) if chunk_cols is not None else 2048
    want_t = False if include_transpose is None else bool(include_transpose)
    if hasattr(src, "a"):  # validate in-memory values before creating the file
        for start, panel in src.dense_panels(cc):
            _check_panel(panel, start, codec_code, vt, strict)
    with _atomic_file(path) as f:
        _write_v3(f, src, vt, codec_code, bool(delta), cc, want_t, budget, strict)
    return {"path": path, "version": 3, "shape": src.shape, "value_type": VALUE_TYPES[vt][0],
            "codec": codec, "chunk_cols": cc, "has_transpose": want_t,
            "file_size": os.path.getsize(path)}
