"""Panel codecs of dense (v3) files: raw, fp16, quant8, fp16_rans, fp32_rans, XOR delta.

A panel is a column-major ``rows × cols`` block (spec section 5).  Forward panels hold
``m × chunk_cols`` slices of A, transpose panels ``n × chunk_cols`` slices of Aᵀ.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .codecs import f32_to_half_bits, half_possible
from .rans import (
    E_CAPACITY,
    E_HALF,
    E_QUANT,
    E_TABLE_LEN,
    E_TRUNCATED,
    check_table,
    normalize_freqs,
    rans_capacity_ok,
    rans_decode,
    rans_encode,
    read_freq_table,
    read_u32,
    write_freq_table,
)

__all__ = ["decode_panel", "encode_panel", "panel_size_ok"]

RAW, FP16, QUANT8, FP16_RANS, FP32_RANS = 0, 1, 2, 3, 4


@njit(nogil=True, cache=True, fastmath=False)
def _decode_rans_panel(buf, count, out):
    """``u32 table_len, table, rANS bytes to the end`` -> ``out[:count]``; returns err."""
    end = buf.size
    tl, pos, err = read_u32(buf, np.int64(0), end)
    if err:
        return err
    freq = np.empty(256, np.int64)
    nsym, pos, err = read_freq_table(buf, pos, end, freq)
    if err:
        return err
    if tl != 2 + 2 * nsym:
        return E_TABLE_LEN
    if pos > end:
        return E_TRUNCATED
    err = rans_decode(buf, pos, end, freq, count, out)
    if err:
        return err
    return check_table(freq, nsym, out, count, np.int64(256))


@njit(nogil=True, cache=True, fastmath=False)
def _rans_panel_fits(buf, count):
    """Preflight of a rANS panel: a valid table and a stream long enough for ``count`` bytes."""
    end = buf.size
    tl, pos, err = read_u32(buf, np.int64(0), end)
    if err:
        return err
    freq = np.empty(256, np.int64)
    nsym, pos, err = read_freq_table(buf, pos, end, freq)
    if err:
        return err
    if tl != 2 + 2 * nsym:
        return E_TABLE_LEN
    if end - pos < 4:
        return E_TRUNCATED
    return 0 if rans_capacity_ok(freq, count, end - pos) else E_CAPACITY


@njit(nogil=True, cache=True, fastmath=False)
def _halves_possible(raw):
    for k in range(raw.size // 2):
        if not half_possible(np.int64(raw[2 * k]) | (np.int64(raw[2 * k + 1]) << 8)):
            return False
    return True


def _quant8_possible(vmin, vmax, q: np.ndarray) -> bool:
    """v3 quant8 (spec 5): code 0 is the panel's minimum, 255 its maximum, all 0 if equal."""
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin <= vmax):
        return False
    if q.size == 0:
        return True
    lo, hi = int(q.min()), int(q.max())
    if vmin == vmax:
        return hi == 0
    with np.errstate(over="ignore", divide="ignore"):
        rng = np.float32(vmax - vmin)
        s = np.float32(np.float32(255.0) / rng)
    if not (np.isfinite(rng) and np.isfinite(s)):  # ranges a float32 cannot scale: no rule
        return True
    return lo == 0 and hi == 255


@njit(nogil=True, cache=True, fastmath=False)
def _encode_rans_panel(data):
    counts = np.zeros(256, np.int64)
    for i in range(data.size):
        counts[data[i]] += 1
    freq = normalize_freqs(counts, np.int64(256))
    out = np.empty(4 + 514 + 2 * data.size + 4, np.uint8)
    out[0] = 2
    out[1] = 2
    out[2] = 0
    out[3] = 0
    pos = write_freq_table(out, np.int64(4), freq)
    pos = rans_encode(data, freq, out, pos)
    return out[:pos].copy()


def _xor_undelta(b: np.ndarray) -> np.ndarray:
    return np.bitwise_xor.accumulate(b) if b.size else b


def _xor_delta(b: np.ndarray) -> np.ndarray:
    out = b.copy()
    out[1:] ^= b[:-1]
    return out


def _half_to_f32(bits: np.ndarray) -> np.ndarray:
    return bits.view("<f2").astype(np.float32)


def panel_size_ok(codec: int, rows: int, cols: int, width: int, byte_size: int) -> bool:
    """Whether a panel's stored byte size is consistent with its codec and shape.

    Examples
    --------
    >>> panel_size_ok(0, 7, 5, 4, 140), panel_size_ok(2, 7, 5, 4, 40)
    (True, False)
    """
    count = rows * cols
    if codec == RAW:
        return byte_size == count * width
    if codec == FP16:
        return byte_size == 2 * count
    if codec == QUANT8:
        return byte_size == 8 + count
    return byte_size >= 4 + 2 + 4  # rANS panels: table_len, >= 1-symbol table, state


def decode_panel(
    buf: np.ndarray, codec: int, delta: bool, rows: int, cols: int, value_type: int
) -> tuple[np.ndarray | None, int]:
    """Decode one panel to a float32 / float64 array of shape ``(rows, cols)`` (F-ordered).

    Parameters
    ----------
    buf : ndarray of uint8
        The panel's bytes (exactly ``byte_size``).
    codec : int
        0 raw, 1 fp16, 2 quant8, 3 fp16_rans, 4 fp32_rans.
    delta : bool
        XOR-delta flag from the header (honoured for codecs 1, 3 and 4 only).
    rows, cols : int
        Panel shape.
    value_type : int
        3 (float32) or 6 (float64, raw codec only).

    Returns
    -------
    (panel, err)
        ``panel`` is None when ``err`` (a rans error code) is non-zero.

    Examples
    --------
    >>> p, err = decode_panel(np.zeros(8, np.uint8), 0, False, 2, 1, 3)
    >>> p.shape, err
    ((2, 1), 0)
    """
    count = rows * cols
    if codec == RAW:
        dt = "<f8" if value_type == 6 else "<f4"
        vals = buf.view(dt)
    elif codec == QUANT8:
        vmin, vmax = buf[:8].view("<f4")
        if not _quant8_possible(vmin, vmax, buf[8:]):
            return None, E_QUANT
        q = buf[8:].astype(np.float32)
        with np.errstate(over="ignore"):
            step = np.float32((vmax - vmin) / np.float32(255.0))
            vals = vmin + q * step
    else:
        if codec == FP16:
            raw = buf
        else:
            width = 2 if codec == FP16_RANS else 4
            err = _rans_panel_fits(buf, count * width)
            if err:
                return None, err
            raw = np.empty(count * width, np.uint8)
            err = _decode_rans_panel(buf, count * width, raw)
            if err:
                return None, err
        if delta:
            raw = _xor_undelta(raw)
        if codec in (FP16, FP16_RANS) and not _halves_possible(raw):
            return None, E_HALF
        vals = _half_to_f32(raw) if codec in (FP16, FP16_RANS) else raw.view("<f4")
    return np.asarray(vals).reshape(cols, rows).T, 0


def encode_panel(
    panel: np.ndarray, codec: int, delta: bool, value_type: int
) -> np.ndarray:
    """Encode a ``(rows, cols)`` panel (any float array) with RcppML's v3 codec rules.

    The values are converted to float32 first (float64 only for ``value_type == 6`` with the
    raw codec).  fp16 uses RcppML's float->half converter; quant8 uses the panel's min/max.

    Returns
    -------
    ndarray of uint8
        The panel payload.

    Examples
    --------
    >>> encode_panel(np.ones((2, 2)), 0, False, 3).size
    16
    """
    colmajor = np.asarray(panel).T.reshape(-1)
    if codec == RAW:
        dt = "<f8" if value_type == 6 else "<f4"
        return np.ascontiguousarray(colmajor, dtype=dt).view(np.uint8)
    v32 = np.ascontiguousarray(colmajor, dtype=np.float32)
    if codec == QUANT8:
        if v32.size == 0:
            vmin = vmax = np.float32(0)
        else:
            vmin = v32.min()
            vmax = v32.max()
        rng = np.float32(vmax - vmin)
        s = np.float32(np.float32(255.0) / rng) if rng != 0 else np.float32(0.0)
        t = (v32 - vmin) * s + np.float32(0.5)
        q = np.clip(t, np.float32(0), np.float32(255)).astype(np.uint8)
        head = np.array([vmin, vmax], dtype="<f4").view(np.uint8)
        return np.concatenate([head, q])
    if codec in (FP16, FP16_RANS):
        raw = f32_to_half_bits(v32).astype("<u2").view(np.uint8)
    else:
        raw = v32.astype("<f4").view(np.uint8)
    if delta:
        raw = _xor_delta(raw)
    if codec == FP16:
        return raw
    return _encode_rans_panel(np.ascontiguousarray(raw))
