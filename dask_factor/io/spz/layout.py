"""Validate a file's structure (header, chunk indices, section offsets, footer, metadata).

:func:`load_layout` reads only the fixed-size parts of a file through a ``read(offset, size)``
callback and checks every offset and size against the file size and against each other,
so that later chunk reads can trust the descriptors.  Nothing here decodes chunk data.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import SpzFormatError
from .header import (
    CODECS,
    DESC_V2,
    DESC_V3,
    DESC_V3_RAW,
    FOOTER_SIZE,
    HEADER_SIZE,
    MAGIC,
    VALUE_TYPES,
    Footer,
    HeaderV2,
    HeaderV3,
    density_f32,
    parse_metadata,
)

__all__ = ["Section", "Layout", "load_layout", "ReadFn"]

ReadFn = Callable[[int, int], bytes]


@dataclass
class Section:
    """A chunked section (forward or transpose) with validated descriptors.

    ``desc`` is a structured array (``DESC_V2``, ``DESC_V3`` or ``DESC_V3_RAW``); chunk ``c``
    covers "columns" ``[bounds[c], bounds[c+1])`` of a matrix with ``rows`` rows.  For v2,
    ``starts[c]`` / ``sizes[c]`` are the absolute offset and length of the chunk's single read
    (gap stream followed by value stream); for v3 those of the panel.
    """

    desc: np.ndarray
    bounds: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    rows: int
    width: int


@dataclass
class Layout:
    """Everything known about a file after validation (see :func:`load_layout`)."""

    version: int
    header: HeaderV2 | HeaderV3
    m: int
    n: int
    nnz: int
    fwd: Section
    tsec: Section | None
    footer: Footer
    file_size: int
    obs_range: tuple[int, int] | None = None
    var_range: tuple[int, int] | None = None
    metadata: dict[int, bytes] = field(default_factory=dict)
    #: row_sorted files: stored row index -> true row index, and its inverse
    true_row: np.ndarray | None = None
    stored_row: np.ndarray | None = None


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _bounds(total: int, width: int, count: int) -> np.ndarray:
    b = np.minimum(np.arange(count + 1, dtype=np.int64) * width, total)
    return b


def _check_grid(desc: np.ndarray, total: int, width: int, what: str, path: str) -> np.ndarray:
    count = desc.shape[0]
    bounds = _bounds(total, width, count)
    starts = desc["col_start"].astype(np.int64)
    ncols = desc["num_cols"].astype(np.int64)
    bad = np.nonzero((starts != bounds[:-1]) | (ncols != np.diff(bounds)))[0]
    if bad.size:
        c = int(bad[0])
        raise SpzFormatError(
            f"{path}: {what} chunk {c} descriptor covers columns [{starts[c]}, "
            f"{starts[c] + ncols[c]}), expected [{bounds[c]}, {bounds[c + 1]}) "
            f"(chunk width {width})"
        )
    return bounds


def _read_exact(read: ReadFn, off: int, size: int, what: str, path: str) -> bytes:
    b = read(off, size)
    if len(b) != size:
        raise SpzFormatError(f"{path}: truncated while reading {what} ({len(b)} of {size} bytes)")
    return b


def load_layout(read: ReadFn, size: int, path: str) -> Layout:
    """Read and validate the structure of a v2 or v3 file.

    Parameters
    ----------
    read : callable
        ``read(offset, size) -> bytes`` (a pread).
    size : int
        File size in bytes.
    path : str
        For error messages.

    Returns
    -------
    Layout

    Raises
    ------
    SpzFormatError
        For any inconsistency (magic, version, sizes, offsets, descriptors, footer).

    Examples
    --------
    >>> load_layout(lambda o, s: b"", 0, "empty.spz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_factor.io.spz.errors.SpzFormatError: empty.spz: file too short (0 bytes) ...
    """
    if size < 6:
        raise SpzFormatError(f"{path}: file too short ({size} bytes) for a StreamPress header")
    head = _read_exact(read, 0, min(size, HEADER_SIZE), "the header", path)
    if head[:4] != MAGIC:
        raise SpzFormatError(
            f"{path}: bad magic {head[:4]!r} (expected {MAGIC!r}); not a .spz file"
        )
    (version,) = struct.unpack_from("<H", head, 4)
    if version not in (2, 3):
        raise SpzFormatError(
            f"{path}: unsupported StreamPress version {version} (supported: 1, 2, 3)"
        )
    if size < HEADER_SIZE + FOOTER_SIZE:
        raise SpzFormatError(f"{path}: file too short ({size} bytes) for header and footer")
    footer = Footer.unpack(_read_exact(read, size - FOOTER_SIZE, FOOTER_SIZE, "footer", path), path)
    if version == 2:
        return _load_v2(read, size, path, HeaderV2.unpack(head, path), footer)
    return _load_v3(read, size, path, HeaderV3.unpack(head, path), footer)


def _check_counts(path: str, m: int, n: int, nnz: int, cc: int, num_chunks: int) -> None:
    if nnz > m * n:
        raise SpzFormatError(f"{path}: header nnz {nnz} exceeds rows*cols = {m}*{n}")
    if n > 0 and cc == 0:
        raise SpzFormatError(f"{path}: header chunk_cols is 0 for a matrix with {n} columns")
    expected = _ceil_div(n, cc) if cc else 0
    if num_chunks != expected:
        raise SpzFormatError(
            f"{path}: header num_chunks {num_chunks} != ceil({n} / {cc}) = {expected}"
        )


def _load_v2(read: ReadFn, size: int, path: str, h: HeaderV2, footer: Footer) -> Layout:
    m, n, nnz, cc = h.m, h.n, h.nnz, h.chunk_cols
    _check_counts(path, m, n, nnz, cc, h.num_chunks)
    if h.value_type not in VALUE_TYPES:
        raise SpzFormatError(f"{path}: unknown value_type code {h.value_type}")
    want = density_f32(nnz, m, n)
    if not abs(h.density - want) <= 1e-6 * want:  # also rejects NaN
        raise SpzFormatError(
            f"{path}: header density {h.density!r} inconsistent with nnz / (rows*cols) = "
            f"{want!r}; header corrupted"
        )
    if h.row_sorted not in (0, 1):
        raise SpzFormatError(f"{path}: row_sorted flag is {h.row_sorted} (expected 0 or 1)")
    footer_pos = size - FOOTER_SIZE
    if footer.total_chunks != h.num_chunks:
        raise SpzFormatError(
            f"{path}: footer total_chunks {footer.total_chunks} != header num_chunks "
            f"{h.num_chunks}"
        )
    if h.metadata_offset + footer.metadata_size != footer_pos:
        raise SpzFormatError(
            f"{path}: metadata section [{h.metadata_offset}, +{footer.metadata_size}) does not "
            f"end at the footer ({footer_pos}); file truncated or corrupted"
        )
    index_end = h.chunk_index_offset + 48 * h.num_chunks
    if h.chunk_index_offset != HEADER_SIZE or index_end != h.data_offset:
        raise SpzFormatError(
            f"{path}: chunk index [{h.chunk_index_offset}, {index_end}) overlaps the header or "
            f"the data section at {h.data_offset}"
        )
    # sections in file order: data, [transpose], [obs], [var], metadata
    order = [("data", h.data_offset)]
    for name, off in (("transpose", h.transpose_offset), ("obs table", h.obs_table_offset),
                      ("var table", h.var_table_offset)):
        if off:
            order.append((name, off))
    order.append(("metadata", h.metadata_offset))
    for (n1, o1), (n2, o2) in zip(order, order[1:]):
        if o2 < o1:
            raise SpzFormatError(f"{path}: {n2} section at {o2} precedes the {n1} section at {o1}")
    if h.metadata_offset > footer_pos:
        raise SpzFormatError(f"{path}: metadata offset {h.metadata_offset} beyond the footer")
    ends = {name: order[i + 1][1] for i, (name, _) in enumerate(order[:-1])}

    width = VALUE_TYPES[h.value_type][1]
    desc = np.frombuffer(
        _read_exact(read, h.chunk_index_offset, 48 * h.num_chunks, "the chunk index", path),
        DESC_V2,
    )
    fwd = _v2_section(desc, n, m, cc, nnz, width, h.data_offset, ends["data"], "forward", path)
    tsec = None
    if h.transpose_offset:
        tcc = h.transp_chunk_cols or cc
        t_off = h.transpose_offset
        if t_off + 4 > ends["transpose"]:
            raise SpzFormatError(f"{path}: transpose section too short for its chunk count")
        (t_count,) = struct.unpack("<I", _read_exact(read, t_off, 4, "transpose count", path))
        want = _ceil_div(m, tcc) if tcc else 0
        if t_count != want:
            raise SpzFormatError(
                f"{path}: transpose chunk count {t_count} != ceil({m} / {tcc}) = {want}"
            )
        base = t_off + 4 + 48 * t_count
        if base > ends["transpose"]:
            raise SpzFormatError(f"{path}: transpose descriptors overrun the transpose section")
        tdesc = np.frombuffer(
            _read_exact(read, t_off + 4, 48 * t_count, "the transpose index", path), DESC_V2
        )
        tsec = _v2_section(tdesc, m, n, tcc, nnz, width, base, ends["transpose"], "transpose",
                           path)
    meta = parse_metadata(
        _read_exact(read, h.metadata_offset, footer.metadata_size, "metadata", path), path
    )
    lay = Layout(2, h, m, n, nnz, fwd, tsec, footer, size, metadata=meta)
    if h.obs_table_offset:
        lay.obs_range = (h.obs_table_offset, ends["obs table"])
    if h.var_table_offset:
        lay.var_range = (h.var_table_offset, ends["var table"])
    if h.row_sorted:
        perm = meta.get(2)
        if perm is None or len(perm) != 4 * m:
            raise SpzFormatError(
                f"{path}: row_sorted file without a valid row permutation (metadata key 2 must "
                f"hold {m} u32 values)"
            )
        stored = np.frombuffer(perm, "<u4").astype(np.int64)
        true_row = np.full(m, -1, np.int64)
        if m and (stored.max() >= m):
            raise SpzFormatError(f"{path}: row permutation has entries >= {m}")
        true_row[stored] = np.arange(m)
        if np.any(true_row < 0):
            raise SpzFormatError(f"{path}: metadata row permutation is not a permutation")
        lay.true_row, lay.stored_row = true_row, stored
    return lay


def _v2_section(desc, total, rows, width, nnz, vwidth, base, end, what, path) -> Section:
    bounds = _check_grid(desc, total, width, what, path)
    cnnz = desc["nnz"].astype(np.int64)
    if int(cnnz.sum()) != nnz:
        raise SpzFormatError(f"{path}: {what} chunk nnz add up to {int(cnnz.sum())}, header nnz "
                             f"is {nnz}")
    gap_off = desc["gap_offset"].astype(np.int64)
    gap_size = desc["gap_size"].astype(np.int64)
    val_size = desc["value_size"].astype(np.int64)
    starts = base + gap_off
    sizes = gap_size + val_size
    checks = [
        (cnnz > np.diff(bounds) * rows, "more entries than rows*cols"),
        (desc["value_offset"].astype(np.int64) != gap_off + gap_size,
         "value stream does not follow the gap stream"),
        (starts + sizes > end, f"data runs past the end of the section ({end})"),
        (gap_size < 4, "gap stream shorter than 4 bytes"),
        (desc["decoded_gap_bytes"].astype(np.int64) != 4 * cnnz, "decoded_gap_bytes != 4*nnz"),
        (desc["decoded_value_bytes"].astype(np.int64) != vwidth * cnnz,
         "decoded_value_bytes != nnz*width"),
    ]
    for mask, msg in checks:
        bad = np.nonzero(mask)[0]
        if bad.size:
            raise SpzFormatError(f"{path}: {what} chunk {int(bad[0])}: {msg}")
    _check_tiling(gap_off, sizes, end - base, what, "chunk", path)
    return Section(desc, bounds, starts, sizes, rows, width)


def _check_tiling(offsets: np.ndarray, sizes: np.ndarray, span: int, what: str, unit: str,
                  path: str) -> None:
    """The writer stores a section's chunks back to back, in order, filling it exactly."""
    expect = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if sizes.size else sizes
    bad = np.nonzero(offsets != expect)[0]
    if bad.size:
        c = int(bad[0])
        raise SpzFormatError(
            f"{path}: {what} {unit} {c} starts at offset {int(offsets[c])} of its section, "
            f"expected {int(expect[c])} (the {unit}s are stored back to back, in order)")
    used = int(sizes.sum())
    if used != span:
        raise SpzFormatError(
            f"{path}: {what} {unit}s fill {used} bytes of a {span}-byte section; the file has "
            f"bytes no {unit} accounts for")


def _load_v3(read: ReadFn, size: int, path: str, h: HeaderV3, footer: Footer) -> Layout:
    m, n, cc = h.m, h.n, h.chunk_cols
    if h.nnz != m * n:
        raise SpzFormatError(f"{path}: dense header nnz {h.nnz} != rows*cols = {m * n}")
    _check_counts(path, m, n, h.nnz, cc, h.num_chunks)
    if h.value_type not in (3, 6):
        raise SpzFormatError(f"{path}: dense value_type {h.value_type} (expected 3 or 6)")
    if h.codec not in CODECS:
        raise SpzFormatError(f"{path}: unknown dense codec {h.codec}")
    if h.has_transpose not in (0, 1) or h.delta not in (0, 1):
        raise SpzFormatError(f"{path}: has_transpose/delta flags must be 0 or 1")
    footer_pos = size - FOOTER_SIZE
    if footer.total_chunks != h.num_chunks:
        raise SpzFormatError(
            f"{path}: footer total_chunks {footer.total_chunks} != header num_chunks "
            f"{h.num_chunks}"
        )
    if h.metadata_offset + footer.metadata_size != footer_pos:
        raise SpzFormatError(
            f"{path}: metadata [{h.metadata_offset}, +{footer.metadata_size}) does not end at "
            f"the footer ({footer_pos}); file truncated or corrupted"
        )
    dt = DESC_V3_RAW if h.codec == 0 else DESC_V3
    vwidth = 8 if h.value_type == 6 else 4
    fwd_end = h.transpose_index_offset if h.has_transpose else h.metadata_offset
    idx_end = h.chunk_index_offset + dt.itemsize * h.num_chunks
    if h.chunk_index_offset != HEADER_SIZE or idx_end != h.data_offset or \
            h.data_offset > fwd_end:
        raise SpzFormatError(f"{path}: dense chunk index / data offsets are inconsistent (the "
                             f"index follows the header and the panels follow the index)")
    if fwd_end > footer_pos or h.metadata_offset > footer_pos:
        raise SpzFormatError(f"{path}: dense section offsets beyond the footer")
    desc = np.frombuffer(
        _read_exact(read, h.chunk_index_offset, dt.itemsize * h.num_chunks, "panel index", path),
        dt,
    )
    fwd = _v3_section(desc, n, m, cc, h, vwidth, h.data_offset, fwd_end, "forward", path)
    tsec = None
    if h.has_transpose:
        t_count = h.num_transpose_chunks
        want = _ceil_div(m, cc) if cc else 0
        if t_count != want:
            raise SpzFormatError(
                f"{path}: num_transpose_chunks {t_count} != ceil({m} / {cc}) = {want}"
            )
        t_idx_end = h.transpose_index_offset + dt.itemsize * t_count
        if t_idx_end != h.transpose_data_offset or h.transpose_data_offset > h.metadata_offset:
            raise SpzFormatError(f"{path}: dense transpose index / data offsets are inconsistent")
        tdesc = np.frombuffer(
            _read_exact(read, h.transpose_index_offset, dt.itemsize * t_count,
                        "transpose panel index", path),
            dt,
        )
        tsec = _v3_section(tdesc, m, n, cc, h, vwidth, h.transpose_data_offset,
                           h.metadata_offset, "transpose", path)
    meta = parse_metadata(
        _read_exact(read, h.metadata_offset, footer.metadata_size, "metadata", path), path
    ) if footer.metadata_size else {}
    return Layout(3, h, m, n, h.nnz, fwd, tsec, footer, size, metadata=meta)


def _v3_section(desc, total, rows, width, h, vwidth, base, end, what, path) -> Section:
    from .dense import panel_size_ok

    bounds = _check_grid(desc, total, width, what, path)
    off = desc["byte_offset"].astype(np.uint64)
    size = desc["byte_size"].astype(np.uint64)
    span = end - base
    for c in range(desc.shape[0]):
        o, s = int(off[c]), int(size[c])
        k = int(bounds[c + 1] - bounds[c])
        if o + s > span:
            raise SpzFormatError(f"{path}: {what} panel {c} [{o}, +{s}) runs past its section")
        if not panel_size_ok(h.codec, rows, k, vwidth, s):
            raise SpzFormatError(
                f"{path}: {what} panel {c} has byte_size {s}, inconsistent with codec "
                f"{CODECS[h.codec]} and shape {rows}x{k}"
            )
        if h.codec != 0 and int(desc["uncompressed_size"][c]) != rows * k * 4:
            raise SpzFormatError(f"{path}: {what} panel {c} uncompressed_size != rows*cols*4")
    _check_tiling(off.astype(np.int64), size.astype(np.int64), span, what, "panel", path)
    return Section(desc, bounds, base + off.astype(np.int64), size.astype(np.int64), rows,
                   width)
