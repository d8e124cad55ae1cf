"""Issue 17, item 4: forged ``.spz`` files (the CRC recomputed after the change) are refused
wherever the format allows a check.

What RcppML's writer (and ours) can produce is narrower than what the byte layout can express:
escaped values are >= 255 in shortest-form varints, a table gives frequencies exactly to the
symbols that occur (with RcppML's normalisation), float16 values are never NaN or subnormal,
quant8 codes span 0..255 around a finite offset and scale, chunks are stored back to back.  Each
test below forges one file that breaks one of these rules while staying structurally valid, and
checks that reading it (with the CRC checked: it is correct) raises ``SpzFormatError`` naming the
file and the rule.  A baseline of the same construction without the forgery reads exactly.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import scipy.sparse as sp
import spz_craft as craft

from dask_factor.io.spz import SpzFile, SpzFormatError, read_spz, write_spz

M = 6
COLUMNS = [[0, 2, 5], [1], [3, 4]]  # 6 entries in 3 columns
INTS = [1, 2, 3, 4, 5, 6]


def _write(tmp_path, data: bytes, name: str = "forged.spz"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _v2(tmp_path, value_stream: bytes, value_type: int, **chunk_extra):
    ch = craft.sparse_chunk(M, COLUMNS, value_stream, **chunk_extra)
    return _write(tmp_path, craft.file_v2(M, 3, 3, [ch], value_type=value_type))


def _expect(path, match: str) -> None:
    with pytest.raises(SpzFormatError, match=match) as ei:
        with SpzFile(path) as f:  # the CRC is checked, and is right
            f.read_all()
    assert str(path) in str(ei.value)


def _matrix(values) -> np.ndarray:
    A = np.zeros((M, 3))
    k = 0
    for j, rows in enumerate(COLUMNS):
        for r in rows:
            A[r, j] = values[k]
            k += 1
    return A


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("case", ["uint8", "uint16-escapes", "quant8", "float16", "equal"])
def test_baselines_read_exactly(tmp_path, case):
    if case == "uint8":
        p, want = _v2(tmp_path, craft.escape_block(INTS), 0), _matrix(INTS)
    elif case == "uint16-escapes":
        vals = [300, 2, 70000 % 65536, 4, 255, 6]
        p, want = _v2(tmp_path, craft.escape_block(vals), 1), _matrix(vals)
    elif case == "quant8":
        codes = [0, 255, 10, 3, 7, 9]
        p = _v2(tmp_path, craft.rans_block(codes, nsym=256), 5, quant_scale=0.5,
                quant_offset=-1.0)
        want = _matrix([-1 + 0.5 * c for c in codes])
    elif case == "equal":  # all values equal: scale 1, every code 0
        p = _v2(tmp_path, craft.rans_block([0] * 6, nsym=256), 5, quant_scale=1.0,
                quant_offset=2.5)
        want = _matrix([2.5] * 6)
    else:
        halves = np.array([1.0, -2.5, 0.0, -0.0, np.inf, 65504.0], np.float16)
        p = _v2(tmp_path, craft.shuffle_block(halves.view(np.uint8), 2), 4)
        want = _matrix(halves.astype(np.float64))
    np.testing.assert_array_equal(read_spz(p).toarray(), want)


# --------------------------------------------------------------------------- escapes, varints


def test_escaped_value_below_255(tmp_path):
    vals = [300, 2, 700, 4, 5, 6]
    ov = craft.varint(7) + craft.varint(700)  # 300 forged to 7: still in uint16's range
    _expect(_v2(tmp_path, craft.escape_block(vals, overflow=ov), 1), "escaped value below 255")


def test_escaped_value_not_in_shortest_form(tmp_path):
    vals = [300, 2, 700, 4, 5, 6]
    ov = b"\xac\x82\x00" + craft.varint(700)  # 300 with a redundant zero group
    _expect(_v2(tmp_path, craft.escape_block(vals, overflow=ov), 1), "shortest form")


def test_column_count_not_in_shortest_form(tmp_path):
    cc = b"\x83\x00\x01\x02"  # 3 as two bytes, then 1 and 2
    _expect(_v2(tmp_path, craft.escape_block(INTS), 0, col_counts=cc), "shortest form")


def test_escape_table_without_escapes(tmp_path):
    _expect(_v2(tmp_path, craft.escape_block(INTS, nsym=256), 0),
            "overflow|table|escape")


def test_overflow_list_without_escape_symbols(tmp_path):
    _expect(_v2(tmp_path, craft.escape_block(INTS, overflow=craft.varint(300)), 0),
            "overflow|escape")


# --------------------------------------------------------------------------- tables


def test_table_with_a_symbol_that_never_occurs(tmp_path):
    freq = [0, 8192, 8192]  # symbol 2 gets half the probability, the values are all 1
    _expect(_v2(tmp_path, craft.escape_block([1] * 6, freq=freq), 0),
            "never holds")


def test_table_not_the_writers_normalisation(tmp_path):
    vals = [1, 1, 1, 2, 2, 2]  # the writer's table is [0, 8192, 8192]
    _expect(_v2(tmp_path, craft.escape_block(vals, freq=[0, 12000, 4384]), 0),
            "normalisation")


def test_gap_table_forged(tmp_path):
    ch = craft.sparse_chunk(M, COLUMNS, craft.escape_block(INTS))
    gaps = [0, 1, 2, 1, 3, 0]  # the gaps of COLUMNS, coded with a table the writer never makes
    cc = b"".join(craft.varint(len(c)) for c in COLUMNS)
    ch["gaps"] = (struct.pack("<I", len(cc)) + cc
                  + craft.escape_block(gaps, freq=[4096, 4096, 4096, 4096]))
    _expect(_write(tmp_path, craft.file_v2(M, 3, 3, [ch])), "normalisation")


def test_byte_shuffle_lane_table_must_span_256_symbols(tmp_path):
    halves = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float16).view(np.uint8).reshape(-1, 2)
    stream = bytes([2])
    for lane in range(2):
        stream += craft.rans_block(halves[:, lane], nsym=int(halves[:, lane].max()) + 1,
                                   table_len=True)
    _expect(_v2(tmp_path, stream, 4), "symbol count")


# --------------------------------------------------------------------------- float16, quant8


@pytest.mark.parametrize(("bits", "what"), [(0x7E00, "NaN"), (0xFC01, "NaN"), (0x0001, "sub"),
                                            (0x83FF, "sub")])
def test_float16_values_the_converter_never_makes(tmp_path, bits, what):
    halves = np.array([1.0, -2.5, 0.0, 3.0, 4.0, 5.0], np.float16).view(np.uint16)
    halves[2] = bits
    _expect(_v2(tmp_path, craft.shuffle_block(halves.view(np.uint8), 2), 4),
            "float16 value is NaN or subnormal")


@pytest.mark.parametrize(("codes", "scale", "offset"), [
    ([0, 255, 10, 3, 7, 9], float("nan"), 0.0),
    ([0, 255, 10, 3, 7, 9], float("inf"), 0.0),
    ([0, 255, 10, 3, 7, 9], -0.5, 0.0),
    ([0, 255, 10, 3, 7, 9], 0.5, float("nan")),
    ([0, 255, 10, 3, 7, 9], 0.5, float("-inf")),
    ([1, 255, 10, 3, 7, 9], 0.5, 0.0),   # no code 0: the offset is not the minimum
    ([0, 254, 10, 3, 7, 9], 0.5, 0.0),   # no code 255: the scale is not (max - min) / 255
    ([0, 0, 0, 0, 0, 0], 2.0, 0.0),      # all codes 0 means all values equal: scale 1
])
def test_quant8_parameters_and_codes(tmp_path, codes, scale, offset):
    _expect(_v2(tmp_path, craft.rans_block(codes, nsym=256), 5, quant_scale=scale,
                quant_offset=offset), "quant8")


# --------------------------------------------------------------------------- dense (v3)


def _panel_fp16(bits) -> bytes:
    return np.asarray(bits, np.uint16).astype("<u2").tobytes()


def test_dense_baselines(tmp_path):
    half = np.array([[1.0, -2.0], [0.5, 3.0]], np.float16)
    p = _write(tmp_path, craft.file_v3(2, 2, 2, [_panel_fp16(half.T.reshape(-1).view(np.uint16))],
                                       codec=1))
    np.testing.assert_array_equal(read_spz(p), half.astype(np.float64))
    q = struct.pack("<2f", -1.0, 1.0) + bytes([0, 255, 128, 3])
    p = _write(tmp_path, craft.file_v3(2, 2, 2, [q], codec=2), "q.spz")
    assert read_spz(p)[0, 0] == -1.0 and read_spz(p)[1, 0] == 1.0


@pytest.mark.parametrize("bits", [0x7E00, 0x0200])
def test_dense_fp16_values_the_converter_never_makes(tmp_path, bits):
    panel = _panel_fp16([0x3C00, bits, 0x4000, 0x0000])
    _expect(_write(tmp_path, craft.file_v3(2, 2, 2, [panel], codec=1)),
            "float16 value is NaN or subnormal")


def test_dense_fp16_rans_nan(tmp_path):
    raw = np.array([0x3C00, 0x7E00, 0x4000, 0x0000], "<u2").view(np.uint8)
    panel = craft.rans_block(raw, nsym=256, table_len=True)
    panel = panel[:4 + 514] + panel[4 + 514 + 4:]  # v3 rANS panels have no enc_len field
    _expect(_write(tmp_path, craft.file_v3(2, 2, 2, [panel], codec=3)),
            "float16 value is NaN or subnormal")


@pytest.mark.parametrize(("vmin", "vmax", "codes"), [
    (float("nan"), 1.0, [0, 255, 1, 2]),
    (0.0, float("inf"), [0, 255, 1, 2]),
    (2.0, 1.0, [0, 255, 1, 2]),        # minimum above maximum
    (0.0, 1.0, [1, 255, 1, 2]),        # no code 0
    (0.0, 1.0, [0, 200, 1, 2]),        # no code 255
    (1.0, 1.0, [0, 3, 0, 0]),          # equal bounds: every code 0
])
def test_dense_quant8_bounds_and_codes(tmp_path, vmin, vmax, codes):
    panel = struct.pack("<2f", vmin, vmax) + bytes(codes)
    _expect(_write(tmp_path, craft.file_v3(2, 2, 2, [panel], codec=2)), "quant8")


# --------------------------------------------------------------------------- layout


def _two_chunk_file(tmp_path):
    A = sp.random(20, 10, density=0.4, format="csc", random_state=2)
    A.data = np.round(A.data * 9) + 1
    p = tmp_path / "two.spz"
    write_spz(A, p, chunk_cols=5, include_transpose=False)
    return bytearray(p.read_bytes()), A


def test_two_descriptors_pointing_at_the_same_chunk(tmp_path):
    data, A = _two_chunk_file(tmp_path)
    d0, d1 = 128, 128 + 48
    # chunk 1's nnz, stream offsets and sizes := chunk 0's (both 5 columns wide)
    data[d1 + 8 : d1 + 44] = data[d0 + 8 : d0 + 44]
    nnz = sum(struct.unpack_from("<I", data, d + 8)[0] for d in (d0, d1))  # the header agrees
    struct.pack_into("<Q", data, 16, nnz)  # ...and the header's
    struct.pack_into("<f", data, 92, np.float32(nnz) / np.float32(200))
    _expect(_write(tmp_path, craft.fix_crc(data)), "back to back|bytes no chunk")


def test_bytes_no_chunk_accounts_for(tmp_path):
    data, _ = _two_chunk_file(tmp_path)
    d1 = 128 + 48
    size = struct.unpack_from("<I", data, d1 + 24)[0]
    struct.pack_into("<I", data, d1 + 24, size - 1)  # the last value byte belongs to no chunk
    struct.pack_into("<I", data, d1 + 32, struct.unpack_from("<I", data, d1 + 32)[0])
    _expect(_write(tmp_path, craft.fix_crc(data)), "no chunk accounts for")


def test_the_index_must_follow_the_header(tmp_path):
    data, _ = _two_chunk_file(tmp_path)
    struct.pack_into("<Q", data, 48, 136)  # chunk_index_offset 136 instead of 128
    _expect(_write(tmp_path, craft.fix_crc(data)), "chunk index")


# --------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("value_type", ["auto", "uint8", "uint16", "uint32", "float16",
                                        "float32", "float64", "quant8"])
@pytest.mark.parametrize("seed", range(6))
def test_everything_the_writer_makes_passes(tmp_path, value_type, seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 40)), int(rng.integers(1, 30))
    A = sp.random(m, n, density=float(rng.uniform(0.05, 1.0)), format="csc", random_state=seed)
    if value_type.startswith("uint") or value_type == "auto":
        top = {"uint8": 255, "uint16": 65535, "uint32": 2**32 - 1, "auto": 70000}[value_type]
        A.data = np.floor(A.data * top)
        A.data[:: max(1, A.nnz // 3)] = top  # escapes and the extremes
    elif value_type == "float16":
        A.data = (A.data - 0.5) * 100
        A.data[:: max(1, A.nnz // 4)] = 1e-9  # flushed to zero by the converter
    else:
        A.data = (A.data - 0.5) * 10.0 ** float(rng.integers(-40, 30))
        if seed % 2:
            A.data[:] = 3.25  # equal values: quant8 scale 1
    p = tmp_path / "w.spz"
    write_spz(A, p, value_type=value_type, chunk_cols=int(rng.integers(1, 8)))
    with SpzFile(p) as f:
        f.read_all()
        for c in range(f.transpose_bounds.size - 1 if f.has_transpose else 0):
            f.read_transpose_chunk(c)
    D = A.toarray()
    D = D / max(np.abs(D).max(), 1e-30) * 100  # within float16's range
    for codec in ("raw", "fp16", "quant8", "fp16_rans", "fp32_rans"):
        write_spz(D, p, codec=codec, chunk_cols=int(rng.integers(1, 8)), include_transpose=True,
                  overwrite=True, **({"delta": True} if seed % 2 else {}))
        read_spz(p)


# --------------------------------------------------------------------------- SpzFile.verify


def _with_transpose(tmp_path, name: str, A, **kw):
    p = tmp_path / name
    write_spz(A, p, include_transpose=True, **kw)
    return p


def test_verify_finds_a_changed_raw_dense_value(tmp_path):
    D = np.arange(12, dtype=np.float64).reshape(3, 4) + 0.5
    p = _with_transpose(tmp_path, "d.spz", D, codec="raw", chunk_cols=2)
    data = bytearray(p.read_bytes())
    off = 128 + 24 * 2  # the first forward panel's first value
    data[off + 3] ^= 0x01  # a different, perfectly valid float32
    p.write_bytes(craft.fix_crc(data))
    with SpzFile(p) as f:
        assert f.read_all()[0, 0] != 0.5  # a plain read cannot tell
        with pytest.raises(SpzFormatError, match=r"transpose disagrees .*row 0, column 0"):
            f.verify()


def test_verify_finds_an_escaped_value_changed_within_range(tmp_path):
    A = sp.csc_matrix(np.array([[300.0, 0.0], [0.0, 2.0], [700.0, 5.0]]))
    p = _with_transpose(tmp_path, "u.spz", A, value_type="uint16")
    data = bytearray(p.read_bytes())
    esc = bytes(craft.varint(300))
    pos = data.index(esc, 128 + 48)  # the forward section's varint for 300
    data[pos] ^= 0x01  # 301: still an escape, still uint16
    p.write_bytes(craft.fix_crc(data))
    with SpzFile(p) as f:
        assert f.read_all()[0, 0] == 301
        with pytest.raises(SpzFormatError, match="transpose disagrees"):
            f.verify()


@pytest.mark.parametrize("kw", [{"value_type": "quant8"}, {"codec": "quant8"},
                                {"value_type": "float16"}, {"codec": "fp16_rans"},
                                {"value_type": "float64"},
                                {"codec": "raw", "value_type": "float64"}])
@pytest.mark.parametrize("stream", [False, True])
def test_verify_passes_everything_the_writer_makes(tmp_path, kw, stream):
    rng = np.random.default_rng(3)
    A = sp.random(40, 30, density=0.3, format="csc", random_state=3)
    A.data = rng.standard_normal(A.nnz) * 100
    src = A if "value_type" in kw and "codec" not in kw else A.toarray()
    if stream:  # a one-shot stream: the transpose is built from the decoded forward section
        blocks = [(j, src[:, j:j + 7]) for j in range(0, 30, 7)]
        src = iter(blocks)
    p = tmp_path / "w.spz"
    write_spz(src, p, shape=(40, 30), include_transpose=True, chunk_cols=6, **kw)
    with SpzFile(p) as f:
        assert f.verify()["transpose"] in ("exact", "within quantisation")
