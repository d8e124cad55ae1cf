"""rANS entropy coder, frequency tables and varints (numba kernels).

Parameters fixed by the format (spec section 4.1): probability scale 2**14, lower state
bound 2**23, 32-bit state, byte-wise renormalisation, one state per stream, the initial
state stored big-endian in the first four bytes of the stream.

Every kernel bounds-checks its input and returns a negative error code (see :data:`ERRORS`)
instead of reading out of bounds; the Python layer turns codes into :class:`SpzFormatError`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "PROB_BITS",
    "PROB_SCALE",
    "RANS_L",
    "ERRORS",
    "read_u32",
    "read_varint",
    "write_varint",
    "read_freq_table",
    "rans_decode",
    "rans_decode_pair",
    "rans_capacity_ok",
    "check_table",
    "normalize_freqs",
    "write_freq_table",
    "rans_encode",
    "encode_stream",
]

PROB_BITS = 14
PROB_SCALE = 1 << PROB_BITS
RANS_L = 1 << 23

E_TRUNCATED = -1
E_VARINT = -2
E_NSYM = -3
E_FREQ_SUM = -4
E_RANS_STATE = -5
E_RANS_TAIL = -6
E_COLCOUNT = -7
E_ROW_RANGE = -8
E_ROW_ORDER = -9
E_ESCAPE = -10
E_VALUE_RANGE = -11
E_LANES = -12
E_TABLE_LEN = -13
E_TRAILING = -14
E_CAPACITY = -15
E_TABLE_UNUSED = -16
E_NORMALISATION = -17
E_ESCAPE_VALUE = -18
E_HALF = -19
E_QUANT = -20
E_VARINT_FORM = -21

#: error code -> human-readable description (used in SpzFormatError messages)
ERRORS: dict[int, str] = {
    E_TRUNCATED: "stream truncated (a field runs past the end of its stream)",
    E_VARINT: "varint overrun (longer than 10 bytes or past the end of its field)",
    E_NSYM: "rANS frequency table has an invalid symbol count",
    E_FREQ_SUM: "rANS frequency table does not sum to 16384",
    E_RANS_STATE: "rANS stream corrupt (state out of range or input exhausted early)",
    E_RANS_TAIL: "rANS stream corrupt (unused bytes, or did not end in the initial state)",
    E_COLCOUNT: "column counts do not add up to the chunk's nnz",
    E_ROW_RANGE: "row index out of range (>= number of rows)",
    E_ROW_ORDER: "row indices not strictly increasing within a column",
    E_ESCAPE: "escape (overflow) list does not match the escaped symbols",
    E_VALUE_RANGE: "value out of range for the value type",
    E_LANES: "byte-shuffle lane count does not match the value type",
    E_TABLE_LEN: "byte-shuffle lane table length is not 514",
    E_TRAILING: "stream has unused trailing bytes",
    E_CAPACITY: "rANS stream too short for the number of symbols it declares",
    E_TABLE_UNUSED: "rANS frequency table gives a frequency to a symbol the stream never holds",
    E_NORMALISATION: "rANS frequencies are not the writer's normalisation of the decoded "
                     "symbols' counts",
    E_ESCAPE_VALUE: "escaped value below 255 (only values >= 255 are escaped)",
    E_HALF: "float16 value is NaN or subnormal, which the writer's converter never produces",
    E_QUANT: "quant8 scale/offset or codes the writer cannot produce (a non-finite or "
             "negative scale or offset, the minimum's code 0 or the maximum's code 255 missing)",
    E_VARINT_FORM: "varint is not in its shortest form",
}


@njit(nogil=True, cache=True, fastmath=False)
def read_u32(buf, pos, end):
    """Little-endian u32 at ``buf[pos]``; returns ``(value, new_pos, err)``."""
    if pos < 0 or pos + 4 > end:
        return np.int64(0), pos, E_TRUNCATED
    v = (
        np.int64(buf[pos])
        | (np.int64(buf[pos + 1]) << 8)
        | (np.int64(buf[pos + 2]) << 16)
        | (np.int64(buf[pos + 3]) << 24)
    )
    return v, pos + 4, 0


@njit(nogil=True, cache=True, fastmath=False)
def read_varint(buf, pos, end):
    """Unsigned LEB128 (up to 64 bits); returns ``(value as uint64, new_pos, err)``."""
    result = np.uint64(0)
    shift = 0
    while True:
        if pos >= end or shift > 63:
            return np.uint64(0), pos, E_VARINT
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and (b & np.uint64(0x7E)) != 0:
            return np.uint64(0), pos, E_VARINT  # more than 64 significant bits
        result |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < np.uint64(0x80):
            return result, pos, 0
        shift += 7


@njit(nogil=True, cache=True, fastmath=False)
def write_varint(out, pos, value):
    """Write ``value`` (uint64) as LEB128 at ``out[pos]``; returns the new position."""
    v = np.uint64(value)
    while v >= np.uint64(0x80):
        out[pos] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
        v >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(v)
    return pos + 1


@njit(nogil=True, cache=True, fastmath=False)
def read_freq_table(buf, pos, end, freq):
    """Read ``u16 nsym, nsym × u16`` into ``freq`` (length 256, zero-filled past nsym).

    Returns ``(nsym, new_pos, err)``; checks ``1 <= nsym <= 256`` and that the sum is 16384.
    """
    if pos + 2 > end:
        return 0, pos, E_TRUNCATED
    nsym = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
    pos += 2
    if nsym < 1 or nsym > 256:
        return 0, pos, E_NSYM
    if pos + 2 * nsym > end:
        return 0, pos, E_TRUNCATED
    total = 0
    for s in range(256):
        if s < nsym:
            f = np.int64(buf[pos + 2 * s]) | (np.int64(buf[pos + 2 * s + 1]) << 8)
        else:
            f = 0
        freq[s] = f
        total += f
    if total != PROB_SCALE:
        return 0, pos, E_FREQ_SUM
    return nsym, pos + 2 * nsym, 0


@njit(nogil=True, cache=True, fastmath=False)
def rans_capacity_ok(freq, count, nbytes):
    """Whether ``nbytes`` of rANS can hold ``count`` symbols coded with table ``freq``.

    Each symbol s divides the state by about 16384 / freq[s] (at most a factor 1 + 2**-9 more,
    as the state stays >= 2**23), each byte read multiplies it by at most 256.5, and the state
    starts below 2**31 and must end at 2**23.  So ``count * (log2(16384 / fmax) - 0.0029) <=
    8 + 8.003 * (nbytes - 4)``: a bound checked before anything is allocated for the symbols.
    A one-symbol table (fmax = 16384) codes any count in 4 bytes; only the size limits bound it.
    """
    fmax = np.int64(0)
    for s in range(freq.size):
        if freq[s] > fmax:
            fmax = freq[s]
    if fmax <= 0 or fmax >= PROB_SCALE:
        return True
    bits = math.log2(PROB_SCALE / fmax) - 0.003
    if bits <= 0.0:
        return True
    return count * bits <= 8.01 * max(nbytes - 4, 0) + 9.0


@njit(nogil=True, cache=True, fastmath=False)
def check_table(freq, nsym, syms, count, want_nsym):
    """The checks a table allows once its symbols are decoded (spec 4.1, the writer's rule).

    Every symbol with a non-zero frequency occurs (the writer gives frequencies only to symbols
    it saw); the table spans ``want_nsym`` symbols (256 for byte streams) or, when
    ``want_nsym`` is 0, ends with a symbol that occurs; and the frequencies are the writer's
    normalisation of the counts: ``1 + trunc(count / total * (16384 - nz))`` each, the
    shortfall to 16384 spread one by one over the symbols in increasing order of frequency
    (ties in any order: libstdc++ and libc++ break them differently), an excess taken back
    from frequencies above 1.  Returns 0 or an error code.
    """
    if want_nsym and nsym != want_nsym:
        return E_NSYM
    if count == 0:
        return 0
    counts = np.zeros(256, np.int64)
    for i in range(count):
        counts[syms[i]] += 1
    nz = 0
    for s in range(256):
        if freq[s] > 0 and counts[s] == 0:
            return E_TABLE_UNUSED
        if counts[s] > 0:
            nz += 1
    if not want_nsym and freq[nsym - 1] == 0:
        return E_TABLE_UNUSED
    rem = PROB_SCALE - nz
    base = np.zeros(256, np.int64)
    fsum = 0
    for s in range(256):
        if counts[s] > 0:
            base[s] = 1 + np.int64((np.float64(counts[s]) / np.float64(count)) * rem)
            fsum += base[s]
    diff = fsum - PROB_SCALE
    if diff < 0:
        q = (-diff) // nz
        r = (-diff) % nz
        n_up = 0
        hi_up = np.int64(-1)  # largest base among the symbols given q + 1
        lo_q = np.int64(PROB_SCALE + 1)  # smallest base among those given q
        for s in range(256):
            if counts[s] > 0:
                inc = freq[s] - base[s]
                if inc == q + 1:
                    n_up += 1
                    hi_up = max(hi_up, base[s])
                elif inc == q:
                    lo_q = min(lo_q, base[s])
                else:
                    return E_NORMALISATION
        if n_up != r or (r > 0 and hi_up > lo_q):
            return E_NORMALISATION
    else:
        for s in range(256):
            if counts[s] > 0 and (freq[s] > base[s] or freq[s] < 1
                                  or (freq[s] < base[s] and base[s] == 1)):
                return E_NORMALISATION
    return 0


@njit(nogil=True, cache=True, fastmath=False)
def _decode_tables(freq, fc, lut):
    """``lut[slot]`` = the symbol owning the slot, ``fc[s]`` = ``freq[s] << 16 | cum[s]`` (one
    load gives both numbers of a decoding step).  False (nothing written past ``lut``) unless
    ``freq`` is a table of 256 non-negative frequencies summing to 16384."""
    if freq.size != 256:
        return False
    total = np.int64(0)
    for s in range(256):
        if freq[s] < 0:
            return False
        total += freq[s]
    if total != PROB_SCALE:
        return False
    c = np.int64(0)
    for s in range(256):
        fc[s] = (freq[s] << 16) | c
        for k in range(c, c + freq[s]):
            lut[k] = s
        c += freq[s]
    return True


@njit(nogil=True, cache=True, fastmath=False)
def rans_decode(buf, start, stop, freq, count, out):
    """Decode ``count`` symbols from ``buf[start:stop]`` into ``out[:count]``.

    ``freq`` must be a table of 256 frequencies summing to 16384 (:func:`read_freq_table`);
    anything else is refused (``E_FREQ_SUM``) before the slot table is written.  The stream
    must be consumed exactly and must end in the encoder's initial state 2**23; anything else
    is reported as corruption.
    """
    if stop - start < 4 or start < 0:
        return E_TRUNCATED
    if not rans_capacity_ok(freq, count, stop - start):
        return E_CAPACITY
    fc = np.empty(256, np.int64)
    lut = np.empty(PROB_SCALE, np.uint8)
    if not _decode_tables(freq, fc, lut):
        return E_FREQ_SUM
    x = (
        (np.int64(buf[start]) << 24)
        | (np.int64(buf[start + 1]) << 16)
        | (np.int64(buf[start + 2]) << 8)
        | np.int64(buf[start + 3])
    )
    if x < RANS_L or x >= (np.int64(1) << 31):
        return E_RANS_STATE
    p = start + 4
    for i in range(count):
        slot = x & (PROB_SCALE - 1)
        s = lut[slot]
        e = fc[s]
        x = (e >> 16) * (x >> PROB_BITS) + slot - (e & 0xFFFF)
        while x < RANS_L and p < stop:
            x = (x << 8) | np.int64(buf[p])
            p += 1
        if x < RANS_L:
            return E_RANS_STATE
        out[i] = s
    if p != stop or x != RANS_L:
        return E_RANS_TAIL
    return 0


@njit(nogil=True, cache=True, fastmath=False)
def rans_decode_pair(buf, a0, a1, fa, b0, b1, fb, count, outa, outb):
    """Decode two independent streams of ``count`` symbols each in one loop.

    Stream A is ``buf[a0:a1]`` with table ``fa`` into ``outa[:count]``, stream B likewise.
    A single-state rANS decoder is one chain of dependent loads and multiplies per symbol; two
    streams decoded side by side run their chains in parallel on one core (a chunk's gaps and
    values together cost about what its gaps alone did).  The renormalisation is branch-free:
    after a step the state is at least 2⁹ (at least 2²³ before, every frequency ≥ 1), so
    0, 1 or 2 bytes bring it back into range.

    Returns 0 when both streams decode exactly as :func:`rans_decode` would decode them, else 1
    without saying why: the caller then decodes them one by one, which names the error (this
    path is for well-formed data; it never reads or writes outside its arrays).  Tables are
    256 frequencies as :func:`read_freq_table` gives them (1 for anything else); the caller
    checks each stream's capacity (:func:`rans_capacity_ok`) before allocating the outputs.

    Examples
    --------
    >>> import numpy as np
    >>> syms = np.array([0, 1, 1, 2, 0, 1], np.uint8)
    >>> freq = np.zeros(256, np.int64)
    >>> freq[:3] = normalize_freqs(np.bincount(syms).astype(np.int64), 3)
    >>> out = np.zeros(64, np.uint8)
    >>> end = rans_encode(syms, freq, out, 0)
    >>> buf = np.concatenate([out[:end], out[:end]])
    >>> a, b = np.empty(6, np.uint8), np.empty(6, np.uint8)
    >>> rans_decode_pair(buf, 0, end, freq, end, 2 * end, freq, 6, a, b)
    0
    >>> a.tolist() == b.tolist() == syms.tolist()
    True
    """
    if a0 < 0 or b0 < 0 or a1 - a0 < 4 or b1 - b0 < 4 or a1 > buf.size or b1 > buf.size:
        return 1
    if outa.size < count or outb.size < count:
        return 1
    fca = np.empty(256, np.int64)
    fcb = np.empty(256, np.int64)
    luta = np.empty(PROB_SCALE, np.uint8)
    lutb = np.empty(PROB_SCALE, np.uint8)
    if not (_decode_tables(fa, fca, luta) and _decode_tables(fb, fcb, lutb)):
        return 1
    xa = ((np.int64(buf[a0]) << 24) | (np.int64(buf[a0 + 1]) << 16)
          | (np.int64(buf[a0 + 2]) << 8) | np.int64(buf[a0 + 3]))
    xb = ((np.int64(buf[b0]) << 24) | (np.int64(buf[b0 + 1]) << 16)
          | (np.int64(buf[b0 + 2]) << 8) | np.int64(buf[b0 + 3]))
    top = np.int64(1) << 31
    if xa < RANS_L or xa >= top or xb < RANS_L or xb >= top:
        return 1
    pa = a0 + 4
    pb = b0 + 4
    la = a1 - 1  # the last byte of each stream: a byte read past it is clamped and unused
    lb = b1 - 1
    for i in range(count):
        sa = xa & (PROB_SCALE - 1)
        sb = xb & (PROB_SCALE - 1)
        ya = luta[sa]
        yb = lutb[sb]
        ea = fca[ya]
        eb = fcb[yb]
        xa = (ea >> 16) * (xa >> PROB_BITS) + sa - (ea & 0xFFFF)
        xb = (eb >> 16) * (xb >> PROB_BITS) + sb - (eb & 0xFFFF)
        na = np.int64(xa < RANS_L) + np.int64(xa < (1 << 15))  # bytes to read: 0, 1 or 2
        nb = np.int64(xb < RANS_L) + np.int64(xb < (1 << 15))
        if pa + na > a1 or pb + nb > b1:
            return 1
        va = (np.int64(buf[min(pa, la)]) << 8) | np.int64(buf[min(pa + 1, la)])
        vb = (np.int64(buf[min(pb, lb)]) << 8) | np.int64(buf[min(pb + 1, lb)])
        xa = (xa << (8 * na)) | (va >> (8 * (2 - na)))
        xb = (xb << (8 * nb)) | (vb >> (8 * (2 - nb)))
        pa += na
        pb += nb
        outa[i] = ya
        outb[i] = yb
    if pa != a1 or xa != RANS_L or pb != b1 or xb != RANS_L:
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# frequency normalisation, with an emulation of libstdc++'s std::sort (introsort) so that ties
# are broken exactly like RcppML's writer does (spec 4.1 step 4).
# ---------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, fastmath=False)
def _less(f, a, b, desc):
    if desc:
        return f[a] > f[b]
    return f[a] < f[b]


@njit(nogil=True, cache=True, fastmath=False)
def _lt_val(f, va, b, desc):
    # comp(val, *it) where val is an element (symbol) held aside
    if desc:
        return f[va] > f[b]
    return f[va] < f[b]


@njit(nogil=True, cache=True, fastmath=False)
def _adjust_heap(a, first, hole, length, value, f, desc):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _less(f, a[first + child], a[first + child - 1], desc):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _less(f, a[first + parent], value, desc):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


@njit(nogil=True, cache=True, fastmath=False)
def _heap_sort(a, first, last, f, desc):
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(a, first, parent, length, a[first + parent], f, desc)
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        value = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, np.int64(0), last - first, value, f, desc)


@njit(nogil=True, cache=True, fastmath=False)
def _introsort(a, f, desc):
    """Sort ``a`` (symbol ids) by ``f[a]`` exactly like libstdc++'s ``std::sort``."""
    n = a.size
    if n < 2:
        return
    lg = 0
    while (np.int64(1) << (lg + 1)) <= n:
        lg += 1
    # explicit stack replaces the recursion into the right part
    st_first = np.empty(64, np.int64)
    st_last = np.empty(64, np.int64)
    st_depth = np.empty(64, np.int64)
    sp = 0
    st_first[0] = 0
    st_last[0] = n
    st_depth[0] = 2 * lg
    sp = 1
    while sp > 0:
        sp -= 1
        first = st_first[sp]
        last = st_last[sp]
        depth = st_depth[sp]
        while last - first > 16:
            if depth == 0:
                _heap_sort(a, first, last, f, desc)
                break
            depth -= 1
            # move median of (first+1, mid, last-1) to first
            mid = first + (last - first) // 2
            i1 = first + 1
            i3 = last - 1
            if _less(f, a[i1], a[mid], desc):
                if _less(f, a[mid], a[i3], desc):
                    pick = mid
                elif _less(f, a[i1], a[i3], desc):
                    pick = i3
                else:
                    pick = i1
            elif _less(f, a[i1], a[i3], desc):
                pick = i1
            elif _less(f, a[mid], a[i3], desc):
                pick = i3
            else:
                pick = mid
            t = a[first]
            a[first] = a[pick]
            a[pick] = t
            # unguarded Hoare partition of [first+1, last) around a[first]
            lo = first + 1
            hi = last
            while True:
                while _less(f, a[lo], a[first], desc):
                    lo += 1
                hi -= 1
                while _less(f, a[first], a[hi], desc):
                    hi -= 1
                if not lo < hi:
                    break
                t = a[lo]
                a[lo] = a[hi]
                a[hi] = t
                lo += 1
            cut = lo
            st_first[sp] = cut
            st_last[sp] = last
            st_depth[sp] = depth
            sp += 1
            last = cut
    # final insertion sort: guarded on the first 16, unguarded for the rest
    lim = 16 if n > 16 else n
    for i in range(1, lim):
        val = a[i]
        if _lt_val(f, val, a[0], desc):
            for k in range(i, 0, -1):
                a[k] = a[k - 1]
            a[0] = val
        else:
            j = i
            while _lt_val(f, val, a[j - 1], desc):
                a[j] = a[j - 1]
                j -= 1
            a[j] = val
    for i in range(lim, n):
        val = a[i]
        j = i
        while _lt_val(f, val, a[j - 1], desc):
            a[j] = a[j - 1]
            j -= 1
        a[j] = val


@njit(nogil=True, cache=True, fastmath=False)
def normalize_freqs(counts, nsym):
    """Scale a histogram ``counts[:nsym]`` to frequencies summing to 16384 (RcppML's rule).

    Every symbol with a non-zero count gets a frequency >= 1.  An all-zero histogram gets
    ``freq[0] = 16384`` (a valid table for an empty stream).
    """
    freq = np.zeros(nsym, np.int64)
    total = 0
    nz = 0
    for s in range(nsym):
        total += counts[s]
        if counts[s] > 0:
            nz += 1
    if total == 0:
        freq[0] = PROB_SCALE
        return freq
    rem = PROB_SCALE - nz
    fsum = 0
    for s in range(nsym):
        if counts[s] > 0:
            freq[s] = 1 + np.int64((np.float64(counts[s]) / np.float64(total)) * rem)
            fsum += freq[s]
    diff = fsum - PROB_SCALE
    if diff == 0:
        return freq
    order = np.empty(nz, np.int64)
    k = 0
    for s in range(nsym):
        if freq[s] > 0:
            order[k] = s
            k += 1
    if diff < 0:
        _introsort(order, freq, np.bool_(False))
        i = 0
        while diff < 0:
            freq[order[i % nz]] += 1
            diff += 1
            i += 1
    else:
        _introsort(order, freq, np.bool_(True))
        i = 0
        while diff > 0:
            s = order[i % nz]
            if freq[s] > 1:
                freq[s] -= 1
                diff -= 1
            i += 1
    return freq


@njit(nogil=True, cache=True, fastmath=False)
def write_freq_table(out, pos, freq):
    """Write ``u16 nsym`` and the frequencies at ``out[pos]``; returns the new position."""
    nsym = freq.size
    out[pos] = nsym & 0xFF
    out[pos + 1] = (nsym >> 8) & 0xFF
    pos += 2
    for s in range(nsym):
        out[pos] = freq[s] & 0xFF
        out[pos + 1] = (freq[s] >> 8) & 0xFF
        pos += 2
    return pos


@njit(nogil=True, cache=True, fastmath=False)
def rans_encode(syms, freq, out, pos):
    """rANS-encode ``syms`` (uint8) with ``freq`` into ``out[pos:]``; returns the new position.

    ``out`` needs ``2 * len(syms) + 4`` free bytes.  Symbols are coded in reverse order and
    the byte buffer reversed at the end, so the decoder reads the final state first.
    """
    nsym = freq.size
    cum = np.zeros(nsym + 1, np.int64)
    for s in range(nsym):
        cum[s + 1] = cum[s] + freq[s]
    x = np.int64(RANS_L)
    n = pos
    for i in range(syms.size - 1, -1, -1):
        s = syms[i]
        f = freq[s]
        x_max = f << 17
        while x >= x_max:
            out[n] = x & 0xFF
            n += 1
            x >>= 8
        x = ((x // f) << PROB_BITS) + (x % f) + cum[s]
    for _ in range(4):
        out[n] = x & 0xFF
        n += 1
        x >>= 8
    # reverse out[pos:n]
    i = pos
    j = n - 1
    while i < j:
        t = out[i]
        out[i] = out[j]
        out[j] = t
        i += 1
        j -= 1
    return n


@njit(nogil=True, cache=True, fastmath=False)
def encode_stream(syms, nsym, out, pos, with_table_len):
    """Histogram + normalise + ``[u32 table_len] table, u32 enc_len, rANS bytes``.

    With ``with_table_len`` the table is prefixed by its byte length (byte-shuffle lanes).
    Returns the new position.
    """
    counts = np.zeros(nsym, np.int64)
    for i in range(syms.size):
        counts[syms[i]] += 1
    freq = normalize_freqs(counts, nsym)
    if with_table_len:
        tl = 2 + 2 * nsym
        for b in range(4):
            out[pos + b] = (tl >> (8 * b)) & 0xFF
        pos += 4
    pos = write_freq_table(out, pos, freq)
    len_pos = pos
    pos += 4
    end = rans_encode(syms, freq, out, pos)
    enc_len = end - pos
    for b in range(4):
        out[len_pos + b] = (enc_len >> (8 * b)) & 0xFF
    return end
