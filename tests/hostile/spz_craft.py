"""Hand-made StreamPress files for the hostile tests: bombs and forgeries, byte by byte.

The writer never produces these, so they are assembled here from raw streams with the format's
own header/descriptor/footer classes (spec sections 3-5).  rANS over a one-symbol alphabet costs
no bits at all: a stream of 4 bytes (the initial state, big-endian 2**23) decodes to any number
of copies of its symbol, which is what makes a 200-byte file declare a billion entries.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from dask_factor.io.spz.header import (
    DESC_V2,
    DESC_V3,
    DESC_V3_RAW,
    FOOTER_SIZE,
    HEADER_SIZE,
    Footer,
    HeaderV2,
    HeaderV3,
    density_f32,
    pack_metadata,
)

#: the initial rANS state: a stream that decodes any count of a symbol with frequency 16384
EMPTY_RANS = struct.pack(">I", 1 << 23)


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def one_symbol_table(sym: int, nsym: int | None = None) -> bytes:
    """A frequency table giving all of 16384 to ``sym``."""
    nsym = sym + 1 if nsym is None else nsym
    freq = [0] * nsym
    freq[sym] = 16384
    return struct.pack(f"<H{nsym}H", nsym, *freq)


def constant_escape_block(sym: int) -> bytes:
    """An escape-rANS block decoding to any number of copies of ``sym`` (< 255)."""
    return one_symbol_table(sym) + struct.pack("<I", 4) + EMPTY_RANS + struct.pack("<I", 0)


def gap_stream(col_counts: list[int], *, gap: int = 0) -> bytes:
    """Column counts, then every gap equal to ``gap`` (0: rows 0, 1, 2, ... in each column)."""
    cc = b"".join(varint(c) for c in col_counts)
    body = struct.pack("<I", len(cc)) + cc
    if sum(col_counts):
        body += constant_escape_block(gap)
    return body


def file_v2(m: int, n: int, chunk_cols: int, chunks: list[dict], *, value_type: int = 0,
            nnz: int | None = None) -> bytes:
    """A v2 file from chunks ``{"gaps": bytes, "values": bytes, "nnz": int, "num_cols": int,
    "quant_scale": float, "quant_offset": float}``; offsets, header, footer and CRC filled in."""
    width = (1, 2, 4, 4, 2, 1, 8)[value_type]
    desc = np.zeros(len(chunks), DESC_V2)
    data = bytearray()
    col = 0
    for c, ch in enumerate(chunks):
        d = desc[c]
        d["col_start"], d["num_cols"], d["nnz"] = col, ch["num_cols"], ch["nnz"]
        d["gap_offset"], d["gap_size"] = len(data), len(ch["gaps"])
        d["value_offset"] = len(data) + len(ch["gaps"])
        d["value_size"] = len(ch["values"])
        d["decoded_gap_bytes"], d["decoded_value_bytes"] = 4 * ch["nnz"], width * ch["nnz"]
        d["quant_scale"] = ch.get("quant_scale", 0.0)
        d["quant_offset"] = ch.get("quant_offset", 0.0)
        data += ch["gaps"] + ch["values"]
        col += ch["num_cols"]
    total = sum(ch["nnz"] for ch in chunks) if nnz is None else nnz
    data_offset = HEADER_SIZE + desc.nbytes
    meta = pack_metadata()
    h = HeaderV2(m=m, n=n, nnz=total, chunk_cols=chunk_cols, num_chunks=len(chunks),
                 value_type=value_type, tables_offset=data_offset, data_offset=data_offset,
                 metadata_offset=data_offset + len(data), density=density_f32(total, m, n))
    return seal(h.pack() + desc.tobytes() + bytes(data) + meta, len(meta), len(chunks))


def file_v3(m: int, n: int, chunk_cols: int, panels: list[bytes], *, codec: int = 0,
            value_type: int = 3, delta: int = 0) -> bytes:
    """A dense v3 file from panel payloads (forward section only)."""
    dt = DESC_V3_RAW if codec == 0 else DESC_V3
    desc = np.zeros(len(panels), dt)
    off = 0
    for c, p in enumerate(panels):
        k = min(chunk_cols, n - c * chunk_cols)
        desc[c]["col_start"], desc[c]["num_cols"] = c * chunk_cols, k
        desc[c]["byte_offset"], desc[c]["byte_size"] = off, len(p)
        if codec:
            desc[c]["uncompressed_size"] = m * k * 4
        off += len(p)
    data_offset = HEADER_SIZE + desc.nbytes
    h = HeaderV3(m=m, n=n, nnz=m * n, chunk_cols=chunk_cols, num_chunks=len(panels),
                 value_type=value_type, data_offset=data_offset,
                 metadata_offset=data_offset + off, codec=codec, delta=delta)
    return seal(h.pack() + desc.tobytes() + b"".join(panels), 0, len(panels))


def seal(body: bytes, metadata_size: int, total_chunks: int) -> bytes:
    """Append the footer with a correct CRC."""
    return body + Footer(metadata_size, zlib.crc32(body), total_chunks).pack()


def fix_crc(data: bytes | bytearray) -> bytes:
    """Recompute the footer CRC of a (modified) file: what a forger would do."""
    data = bytearray(data)
    struct.pack_into("<I", data, len(data) - 12, zlib.crc32(bytes(data[:-FOOTER_SIZE])))
    return bytes(data)


# --------------------------------------------------------------------------- bombs


def bomb_dense_columns(m: int = 1_000_000, cols: int = 100) -> bytes:
    """v2, uint8: ``cols`` columns of ``m`` ones each (m·cols entries) in a few hundred bytes."""
    gaps = gap_stream([m] * cols)
    values = constant_escape_block(1)
    return file_v2(m, cols, cols, [{"gaps": gaps, "values": values, "nnz": m * cols,
                                    "num_cols": cols}])


def bomb_wide_empty(n: int = 2**32 - 1) -> bytes:
    """v2 without entries but with ``n`` columns in one chunk (an int64 indptr of 8·n bytes)."""
    return file_v2(1, n, n, [{"gaps": struct.pack("<I", 0), "values": b"", "nnz": 0,
                              "num_cols": n}])


def bomb_tall(m: int = 2**32 - 1, n: int = 2) -> bytes:
    """v2 with ``m`` rows (W alone would be 8·m·k bytes) and one entry."""
    gaps = gap_stream([1] + [0] * (n - 1))
    return file_v2(m, n, n, [{"gaps": gaps, "values": constant_escape_block(1), "nnz": 1,
                              "num_cols": n}])


def bomb_dense_rans(m: int = 20_000, n: int = 20_000) -> bytes:
    """v3 fp32_rans: one panel of zeros (m·n·4 bytes) stored as a 14-byte rANS stream."""
    panel = struct.pack("<I", 514) + one_symbol_table(0, 256) + EMPTY_RANS
    return file_v3(m, n, n, [panel], codec=4)


# --------------------------------------------------------------------------- forgeries
# Streams built with the package's own rANS coder, with any table and overflow list: what a
# forger (or a buggy writer) can put in a file whose CRC is then recomputed.


def rans_block(syms, freq=None, nsym: int | None = None, table_len: bool = False) -> bytes:
    """``[u32 table_len] table u32 enc_len rANS`` of ``syms`` (uint8) with ``freq`` (default
    the writer's normalisation over ``nsym`` symbols)."""
    from dask_factor.io.spz.rans import normalize_freqs, rans_encode

    syms = np.asarray(syms, np.uint8)
    if freq is None:
        nsym = int(syms.max()) + 1 if nsym is None else nsym
        freq = normalize_freqs(np.bincount(syms, minlength=nsym).astype(np.int64), nsym)
    freq = np.asarray(freq, np.int64)
    out = np.zeros(2 * syms.size + 64, np.uint8)
    end = rans_encode(syms, freq, out, 0)
    table = struct.pack(f"<H{freq.size}H", freq.size, *freq.tolist())
    head = struct.pack("<I", len(table)) if table_len else b""
    return head + table + struct.pack("<I", end) + out[:end].tobytes()


def escape_block(values, *, freq=None, overflow: bytes | None = None,
                 nsym: int | None = None) -> bytes:
    """An escape-rANS block of integer ``values`` (symbol 255 + a varint for values >= 255);
    ``overflow`` replaces the varint list, ``freq`` the table."""
    values = [int(v) for v in values]
    syms = [v if v < 255 else 255 for v in values]
    escaped = any(v >= 255 for v in values)
    if nsym is None:
        nsym = 256 if escaped else max(syms) + 1
    ov = b"".join(varint(v) for v in values if v >= 255) if overflow is None else overflow
    return rans_block(syms, freq, nsym) + struct.pack("<I", len(ov)) + ov


def sparse_chunk(m: int, columns: list[list[int]], value_stream: bytes, *,
                 col_counts: bytes | None = None, **extra) -> dict:
    """A v2 chunk: ``columns`` are the sorted rows of each column; the value stream given."""
    gaps = []
    for rows in columns:
        prev = 0
        for r in rows:
            gaps.append(r - prev)
            prev = r + 1
    cc = b"".join(varint(len(c)) for c in columns) if col_counts is None else col_counts
    gap_bytes = struct.pack("<I", len(cc)) + cc + (escape_block(gaps) if gaps else b"")
    return {"gaps": gap_bytes, "values": value_stream, "nnz": len(gaps),
            "num_cols": len(columns), **extra}


def shuffle_block(raw: np.ndarray, width: int) -> bytes:
    """Byte-shuffle block of ``raw`` (count*width bytes, value-major)."""
    raw = np.asarray(raw, np.uint8).reshape(-1, width)
    out = bytes([width])
    for lane in range(width):
        out += rans_block(raw[:, lane], nsym=256, table_len=True)
    return out
