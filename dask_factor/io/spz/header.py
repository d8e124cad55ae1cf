"""Fixed-size structures of the StreamPress format: headers, chunk descriptors, footer, metadata.

Everything here is plain ``struct`` / numpy packing and unpacking with no decoding of data
streams.  Layouts are described in ``docs/formats.md`` (header, chunk descriptors, footer, metadata;
all little-endian, no padding, no alignment).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from .errors import SpzFormatError

__all__ = [
    "MAGIC",
    "FOOTER_MAGIC",
    "HEADER_SIZE",
    "FOOTER_SIZE",
    "DESC_V2",
    "DESC_V3_RAW",
    "DESC_V3",
    "VALUE_TYPES",
    "VALUE_TYPE_CODES",
    "CODECS",
    "CODEC_CODES",
    "HeaderV2",
    "HeaderV3",
    "Footer",
    "default_chunk_cols",
    "density_f32",
    "parse_metadata",
    "pack_metadata",
]

MAGIC = b"SPRZ"
FOOTER_MAGIC = b"SPEN"
HEADER_SIZE = 128
FOOTER_SIZE = 16
U32_MAX = 0xFFFFFFFF

#: v2 value_type code -> (name, decoded width in bytes)
VALUE_TYPES: dict[int, tuple[str, int]] = {
    0: ("uint8", 1),
    1: ("uint16", 2),
    2: ("uint32", 4),
    3: ("float32", 4),
    4: ("float16", 2),
    5: ("quant8", 1),
    6: ("float64", 8),
}
VALUE_TYPE_CODES: dict[str, int] = {name: code for code, (name, _) in VALUE_TYPES.items()}

#: v3 codec code -> name
CODECS: dict[int, str] = {0: "raw", 1: "fp16", 2: "quant8", 3: "fp16_rans", 4: "fp32_rans"}
CODEC_CODES: dict[str, int] = {name: code for code, name in CODECS.items()}

#: 48-byte chunk descriptor of v2 (forward and transpose sections)
DESC_V2 = np.dtype(
    [
        ("col_start", "<u4"),
        ("num_cols", "<u4"),
        ("nnz", "<u4"),
        ("gap_offset", "<u4"),
        ("value_offset", "<u4"),
        ("gap_size", "<u4"),
        ("value_size", "<u4"),
        ("decoded_gap_bytes", "<u4"),
        ("decoded_value_bytes", "<u4"),
        ("quant_scale", "<f4"),
        ("quant_offset", "<f4"),
        ("reserved", "<u4"),
    ]
)
#: 24-byte panel descriptor of v3, codec 0 (raw)
DESC_V3_RAW = np.dtype(
    [("col_start", "<u4"), ("num_cols", "<u4"), ("byte_offset", "<u8"), ("byte_size", "<u8")]
)
#: 40-byte panel descriptor of v3, codecs 1-4
DESC_V3 = np.dtype(
    [
        ("col_start", "<u4"),
        ("num_cols", "<u4"),
        ("zero0", "<u4"),
        ("zero1", "<u4"),
        ("byte_offset", "<u8"),
        ("byte_size", "<u8"),
        ("uncompressed_size", "<u8"),
    ]
)
assert DESC_V2.itemsize == 48 and DESC_V3_RAW.itemsize == 24 and DESC_V3.itemsize == 40

_V2_FMT = struct.Struct("<4sHHIIQIIIIBBBBIQQQQQIfQQIB11s")
_V3_FMT = struct.Struct("<4sHHIIQIIIBB2sQQQQQBB46s")
_FOOTER_FMT = struct.Struct("<III4s")
assert _V2_FMT.size == HEADER_SIZE and _V3_FMT.size == HEADER_SIZE and _FOOTER_FMT.size == 16


def default_chunk_cols(m: int, n: int, chunk_bytes: float = 8e6) -> int:
    """RcppML's default forward chunk width for sparse (v2) files.

    ``min(max(1, floor(chunk_bytes / (4 * m))), n)``, with ``m == 0`` treated as infinitely
    narrow rows (every column in one chunk) and never less than 1 (RcppML divides by zero
    when ``n == 0``; we store 1).

    Parameters
    ----------
    m, n : int
        Matrix shape.
    chunk_bytes : float
        RcppML's ``chunk_bytes`` argument (default 8e6).

    Returns
    -------
    int
        Columns per chunk.

    Examples
    --------
    >>> default_chunk_cols(13714, 2638)
    145
    """
    if m <= 0:
        width = n
    else:
        width = min(max(1, math.floor(chunk_bytes / (4 * m))), n)
    return max(1, int(width))


def density_f32(nnz: int, m: int, n: int) -> float:
    """The header density field: ``f32(nnz) / (f32(m) * f32(n))`` in float32 arithmetic.

    Examples
    --------
    >>> round(density_f32(13, 7, 5), 6)
    0.371429
    """
    if m == 0 or n == 0:
        return 0.0
    with np.errstate(over="ignore"):
        return float(np.float32(nnz) / (np.float32(m) * np.float32(n)))


@dataclass
class HeaderV2:
    """The 128-byte header of a sparse v2 file (field names as in the spec, section 3.2).

    Examples
    --------
    >>> h = HeaderV2(m=7, n=5, nnz=13, chunk_cols=5, num_chunks=1, value_type=0)
    >>> HeaderV2.unpack(h.pack(), "mem").m
    7
    """

    m: int = 0
    n: int = 0
    nnz: int = 0
    chunk_cols: int = 1
    num_chunks: int = 0
    value_type: int = 0
    magic: bytes = MAGIC
    version: int = 2
    header_size: int = HEADER_SIZE
    num_tables: int = 0
    table_log: int = 11
    compression_level: int = 1
    row_sorted: int = 0
    col_sorted: int = 0
    most_common_value: int = 0
    chunk_index_offset: int = HEADER_SIZE
    tables_offset: int = 0
    data_offset: int = 0
    transpose_offset: int = 0
    metadata_offset: int = 0
    max_value: int = 0
    density: float = 0.0
    obs_table_offset: int = 0
    var_table_offset: int = 0
    transp_chunk_cols: int = 0
    ext_flags: int = 0
    zero: bytes = b"\0" * 11

    _ORDER = (
        "magic version header_size m n nnz chunk_cols num_chunks num_tables table_log value_type "
        "compression_level row_sorted col_sorted most_common_value chunk_index_offset "
        "tables_offset data_offset transpose_offset metadata_offset max_value density "
        "obs_table_offset var_table_offset transp_chunk_cols ext_flags zero"
    ).split()

    @classmethod
    def unpack(cls, buf: bytes, path: str) -> HeaderV2:
        """Parse the first 128 bytes of ``buf`` (no validation beyond the size)."""
        if len(buf) < HEADER_SIZE:
            raise SpzFormatError(f"{path}: file too short for a 128-byte header ({len(buf)} bytes)")
        vals = _V2_FMT.unpack_from(buf, 0)
        return cls(**dict(zip(cls._ORDER, vals)))

    def pack(self) -> bytes:
        """Serialise to exactly 128 bytes."""
        return _V2_FMT.pack(*(getattr(self, k) for k in self._ORDER))


@dataclass
class HeaderV3:
    """The 128-byte header of a dense v3 file (spec section 5).

    Examples
    --------
    >>> h = HeaderV3(m=7, n=5, nnz=35, chunk_cols=2048, num_chunks=1)
    >>> HeaderV3.unpack(h.pack(), "mem").codec
    0
    """

    m: int = 0
    n: int = 0
    nnz: int = 0
    chunk_cols: int = 2048
    num_chunks: int = 0
    num_transpose_chunks: int = 0
    value_type: int = 3
    has_transpose: int = 0
    chunk_index_offset: int = HEADER_SIZE
    data_offset: int = 0
    transpose_index_offset: int = 0
    transpose_data_offset: int = 0
    metadata_offset: int = 0
    codec: int = 0
    delta: int = 0
    magic: bytes = MAGIC
    version: int = 3
    header_size: int = HEADER_SIZE
    pad: bytes = b"\0\0"
    zero: bytes = b"\0" * 46

    _ORDER = (
        "magic version header_size m n nnz chunk_cols num_chunks num_transpose_chunks value_type "
        "has_transpose pad chunk_index_offset data_offset transpose_index_offset "
        "transpose_data_offset metadata_offset codec delta zero"
    ).split()

    @classmethod
    def unpack(cls, buf: bytes, path: str) -> HeaderV3:
        """Parse the first 128 bytes of ``buf`` (no validation beyond the size)."""
        if len(buf) < HEADER_SIZE:
            raise SpzFormatError(f"{path}: file too short for a 128-byte header ({len(buf)} bytes)")
        vals = _V3_FMT.unpack_from(buf, 0)
        return cls(**dict(zip(cls._ORDER, vals)))

    def pack(self) -> bytes:
        """Serialise to exactly 128 bytes."""
        return _V3_FMT.pack(*(getattr(self, k) for k in self._ORDER))


@dataclass
class Footer:
    """The 16-byte footer shared by v2 and v3 (spec section 3.9).

    Examples
    --------
    >>> Footer.unpack(Footer(4, 123, 1).pack(), "mem").crc32
    123
    """

    metadata_size: int
    crc32: int
    total_chunks: int
    magic: bytes = FOOTER_MAGIC

    @classmethod
    def unpack(cls, buf: bytes, path: str) -> Footer:
        """Parse 16 footer bytes and check the ``SPEN`` magic."""
        if len(buf) != FOOTER_SIZE:
            raise SpzFormatError(f"{path}: truncated footer ({len(buf)} of 16 bytes)")
        f = cls(*_FOOTER_FMT.unpack(buf))
        if f.magic != FOOTER_MAGIC:
            raise SpzFormatError(
                f"{path}: bad footer magic {f.magic!r} (expected {FOOTER_MAGIC!r}); "
                "the file is truncated or corrupted"
            )
        return f

    def pack(self) -> bytes:
        """Serialise to 16 bytes."""
        return _FOOTER_FMT.pack(self.metadata_size, self.crc32, self.total_chunks, self.magic)


def parse_metadata(buf: bytes, path: str) -> dict[int, bytes]:
    """Parse a metadata section: ``u32 count`` then ``count`` × (``u8 key, u32 len, bytes``).

    Returns a dict key -> payload (a repeated key keeps the last payload).  Raises
    :class:`SpzFormatError` if the entries overrun or do not fill the section exactly.

    Examples
    --------
    >>> parse_metadata(b"\\0\\0\\0\\0", "mem")
    {}
    """
    if len(buf) < 4:
        raise SpzFormatError(f"{path}: metadata section shorter than 4 bytes ({len(buf)})")
    (count,) = struct.unpack_from("<I", buf, 0)
    pos = 4
    out: dict[int, bytes] = {}
    for i in range(count):
        if pos + 5 > len(buf):
            raise SpzFormatError(f"{path}: metadata entry {i} of {count} overruns the section")
        key, length = struct.unpack_from("<BI", buf, pos)
        pos += 5
        if pos + length > len(buf):
            raise SpzFormatError(
                f"{path}: metadata entry {i} (key {key}, {length} bytes) overruns the section"
            )
        out[key] = bytes(buf[pos : pos + length])
        pos += length
    if pos != len(buf):
        raise SpzFormatError(
            f"{path}: metadata section has {len(buf) - pos} unused trailing bytes"
        )
    return out


def pack_metadata(entries: dict[int, bytes] | None = None) -> bytes:
    """Serialise a metadata section (the RcppML writer emits just ``00 00 00 00``).

    Examples
    --------
    >>> pack_metadata()
    b'\\x00\\x00\\x00\\x00'
    """
    entries = entries or {}
    parts = [struct.pack("<I", len(entries))]
    for key, payload in entries.items():
        parts.append(struct.pack("<BI", key, len(payload)))
        parts.append(bytes(payload))
    return b"".join(parts)
