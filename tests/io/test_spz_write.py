"""Writing StreamPress files: byte identity with RcppML, round trips, streaming, atomicity,
input validation, obs/var tables."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import RCPPML_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_factor.io.spz import SpzFile, read_spz, write_spz

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "spz"
SHARED = RCPPML_DATA  # optional: only extra cases, skipped when absent
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _cases(folder: Path) -> list[tuple[str, str, str]]:
    if not (folder / "MANIFEST.md").exists():
        return []
    text = (folder / "MANIFEST.md").read_text()
    found = re.findall(r"## `([^`]+)\.spz`\n\n- source: `source/([^`]+)`\n- writer call: "
                       r"`([^`]+)`", text)
    return [c for c in found if (folder / f"{c[0]}.spz").exists()
            and (folder / "source" / c[1]).exists() and "row_sort" not in c[2]]


def _kwargs(call: str, folder: Path, name: str) -> dict:
    """Translate an R writer call of the manifest into write_spz arguments."""
    kw: dict = {}
    prec = re.search(r"precision = '(\w+)'", call)
    if prec:  # RcppML's "fp32" behaves like "auto"
        kw["value_type"] = {"fp16": "float16", "fp64": "float64", "fp32": "auto",
                            "quant8": "quant8"}[prec.group(1)]
        kw["strict"] = False  # reproduce fp16 overflow to Inf like RcppML
    if "include_transpose = FALSE" in call:
        kw["include_transpose"] = False
    if "include_transpose = TRUE" in call:
        kw["include_transpose"] = True
    cc = re.search(r"chunk_cols = (\d+)", call)
    if cc:
        kw["chunk_cols"] = int(cc.group(1))
    codec = re.search(r"codec = '(\w+)'", call)
    if codec:
        kw["codec"] = codec.group(1)
    if "delta = TRUE" in call:
        kw["delta"] = True
    if "obs =" in call:  # the tables exactly as stored (levels / dictionary order)
        with SpzFile(folder / f"{name}.spz") as f:
            kw["obs"], kw["var"] = f.obs, f.var
    return kw


def _source(folder: Path, src: str, call: str):
    a = scipy.io.mmread(str(folder / "source" / src))
    return np.asarray(a) if "st_write_dense" in call else sp.csc_matrix(a)


@pytest.mark.filterwarnings("ignore:value_type='auto' stores:UserWarning")
@pytest.mark.parametrize("case", _cases(DATA), ids=lambda c: c[0])
def test_reencode_is_byte_identical(case, tmp_path):
    name, src, call = case
    out = tmp_path / "out.spz"
    write_spz(_source(DATA, src, call), out, **_kwargs(call, DATA, name))
    assert out.read_bytes() == (DATA / f"{name}.spz").read_bytes()


SHARED_CASES = [c for c in _cases(SHARED / "spz-conformance") if c[0].startswith("aml")]


@pytest.mark.skipif(not SHARED_CASES, reason="DASK_FACTOR_RCPPML_DATA unset")
@pytest.mark.parametrize("case", SHARED_CASES, ids=lambda c: c[0])
def test_reencode_aml_is_byte_identical(case, tmp_path):
    folder = SHARED / "spz-conformance"
    name, src, call = case
    out = tmp_path / "out.spz"
    write_spz(_source(folder, src, call), out, **_kwargs(call, folder, name))
    assert out.read_bytes() == (folder / f"{name}.spz").read_bytes()


@pytest.mark.skipif(not (SHARED / "pbmc3k" / "pbmc3k_data_rda.spz").exists(),
                    reason="DASK_FACTOR_RCPPML_DATA unset")
def test_reencode_pbmc3k_in_memory_and_streamed(tmp_path):
    ref = SHARED / "pbmc3k" / "pbmc3k_data_rda.spz"
    with SpzFile(ref) as f:
        a, var = f.read_all(), f.var
    write_spz(a, tmp_path / "a.spz", var=var)
    assert (tmp_path / "a.spz").read_bytes() == ref.read_bytes()
    blocks = ((j, a[:, j : j + 300]) for j in range(0, a.shape[1], 300))  # one-shot, auto
    write_spz(blocks, tmp_path / "b.spz", shape=a.shape, var=var, transpose_memory=4 << 20)
    assert (tmp_path / "b.spz").read_bytes() == ref.read_bytes()


# ------------------------------------------------------------------------- round trips
UINT_MAX = {"uint8": 255, "uint16": 65535, "uint32": 2**32 - 1}
VALUE_TYPES = ["uint8", "uint16", "uint32", "float16", "float32", "float64", "quant8"]


@st.composite
def sparse_case(draw):
    vt = draw(st.sampled_from(VALUE_TYPES))
    m = draw(st.integers(0, 30))
    n = draw(st.integers(0, 30))
    density = draw(st.sampled_from([0.0, 0.1, 0.4, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((m, n)) < density
    if n:
        mask[:, rng.random(n) < 0.2] = False  # some empty columns
    r, c = np.nonzero(mask)
    k = r.size
    if vt in UINT_MAX:
        vals = rng.integers(0, UINT_MAX[vt] + 1, k, dtype=np.int64).astype(np.float64)
        vals[rng.random(k) < 0.1] = 0.0  # explicit zeros stay stored
    elif vt == "float32":
        vals = (rng.normal(size=k) * 10.0 ** rng.integers(-3, 6, k)).astype(np.float32)
        vals = vals.astype(np.float64)
    elif vt == "float64":
        vals = rng.normal(size=k) * 10.0 ** rng.integers(-300, 300, k)
        vals[rng.random(k) < 0.05] = np.nan
        vals[rng.random(k) < 0.05] = -np.inf
    elif vt == "float16":
        vals = rng.normal(size=k) * 10.0 ** rng.integers(-6, 4, k)
    else:
        vals = rng.normal(size=k) * 10.0 ** draw(st.integers(-3, 3))
    a = sp.csc_matrix((vals, (r, c)), shape=(m, n))
    cc = draw(st.one_of(st.none(), st.integers(1, n + 3)))
    return vt, a, cc, draw(st.booleans())


def _check_close(got: np.ndarray, want: np.ndarray, vt: str, bound: float) -> None:
    if vt in ("float16",):
        tol = np.maximum(np.abs(want) * 2.0**-11 * (1 + 2.0**-12), 2.0**-14)
        assert np.all(np.abs(got - want) <= tol)
    elif vt == "quant8":
        assert np.all(np.abs(got - want) <= bound)
    else:
        np.testing.assert_array_equal(got, want)


@SETTINGS
@given(sparse_case())
def test_sparse_round_trip(tmp_path, case):
    vt, a, cc, want_t = case
    p = tmp_path / "rt.spz"
    res = write_spz(a, p, value_type=vt, chunk_cols=cc, include_transpose=want_t,
                    overwrite=True)  # tmp_path is shared by the hypothesis examples
    assert res["value_type"] == vt
    with SpzFile(p) as f:
        b = f.read_all()
        assert f.shape == a.shape and f.nnz == a.nnz and f.value_type == vt
        assert f.has_transpose == (want_t and a.nnz > 0)
        np.testing.assert_array_equal(b.indptr, a.indptr)
        np.testing.assert_array_equal(b.indices, a.indices)
        fin = a.data[np.isfinite(a.data)]
        span = float(fin.max() - fin.min()) if fin.size else 0.0
        bound = span / 510 + 4 * float(np.finfo(np.float32).eps) * float(np.abs(fin).max(initial=0))
        _check_close(b.data, a.data, vt, bound)
        if f.has_transpose:
            t = sp.hstack([f.read_transpose_chunk(c) for c in range(f.transpose_bounds.size - 1)],
                          format="csc")
            at = a.T.tocsc()
            np.testing.assert_array_equal(t.indices, at.indices)
            _check_close(t.data, at.data, vt, bound)


@SETTINGS
@given(sparse_case(), st.integers(1, 7), st.booleans())
def test_streamed_equals_in_memory(tmp_path, case, step, explicit):
    vt, a, cc, want_t = case
    vt_arg = vt if explicit else "auto"
    for name in ("mem.spz", "st.spz"):  # tmp_path is shared by the hypothesis examples
        (tmp_path / name).unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            write_spz(a, tmp_path / "mem.spz", value_type=vt_arg, chunk_cols=cc,
                      include_transpose=want_t)
        except ValueError:  # "auto" -> float32 overflow: the stream must fail the same way
            expect_error = True
        else:
            expect_error = False
        reiterable = vt == "quant8" and explicit  # re-quantizing would change the bytes

        class Blocks:
            shape = a.shape

            def __iter__(self):
                for j in range(0, a.shape[1], step):
                    blk = a[:, j : j + step]
                    dense_ok = j % 2 and np.all(blk.data != 0)  # dense blocks drop zeros
                    yield j, (blk.toarray() if dense_ok else blk.tocoo())

        stream = Blocks() if reiterable else iter(Blocks())
        if expect_error:
            with pytest.raises(ValueError, match="float32"):
                write_spz(stream, tmp_path / "st.spz", shape=a.shape, value_type=vt_arg,
                          chunk_cols=cc, include_transpose=want_t, dense=False)
            assert not (tmp_path / "st.spz").exists()
            return
        write_spz(stream, tmp_path / "st.spz", shape=a.shape, value_type=vt_arg, chunk_cols=cc,
                  include_transpose=want_t, dense=False, transpose_memory=64)
    assert (tmp_path / "st.spz").read_bytes() == (tmp_path / "mem.spz").read_bytes()


CODECS = ["raw", "fp16", "quant8", "fp16_rans", "fp32_rans"]


@SETTINGS
@given(st.integers(0, 20), st.integers(0, 20), st.sampled_from(CODECS), st.booleans(),
       st.booleans(), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_dense_round_trip_and_stream(tmp_path, m, n, codec, delta, want_t, cc, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(m, n)) * 100
    p = tmp_path / "d.spz"
    res = write_spz(a, p, codec=codec, delta=delta, include_transpose=want_t, chunk_cols=cc,
                    overwrite=True)
    assert res["version"] == 3
    with SpzFile(p) as f:
        assert f.is_dense and f.codec == codec and f.shape == (m, n)
        b = f.read_all()
        want = a.astype(np.float32).astype(np.float64)
        for c in range(f.num_chunks):
            lo, hi = f.chunk_bounds[c], f.chunk_bounds[c + 1]
            got, ref = b[:, lo:hi], want[:, lo:hi]
            if codec == "quant8":
                span = float(ref.max() - ref.min()) if ref.size else 0.0
                assert np.all(np.abs(got - ref) <= span / 510 + 1e-4)
            elif codec.startswith("fp16"):
                assert np.all(np.abs(got - ref) <= np.maximum(np.abs(ref) * 2.0**-11, 2.0**-14))
            else:
                np.testing.assert_array_equal(got, ref)
        if want_t and m and n:
            t = np.hstack([f.read_transpose_chunk(c) for c in range(f.transpose_bounds.size - 1)])
            if codec == "quant8":
                assert np.all(np.abs(t - want.T) <= np.ptp(want) / 255 + 1e-4)
            else:
                np.testing.assert_array_equal(t, b.T)
    # the same matrix streamed in numpy blocks gives the same bytes
    blocks = [(j, a[:, j : j + 3]) for j in range(0, n, 3)]
    stream = blocks if codec == "quant8" else iter(blocks)
    write_spz(stream, tmp_path / "s.spz", shape=(m, n), codec=codec, delta=delta,
              include_transpose=want_t, chunk_cols=cc, dense=True if not n else None,
              transpose_memory=100, overwrite=True)
    assert (tmp_path / "s.spz").read_bytes() == p.read_bytes()


def test_dense_float64_raw_is_lossless(tmp_path):
    a = np.random.default_rng(0).normal(size=(9, 7)) * 1e-7
    write_spz(a, tmp_path / "f.spz", value_type="float64", include_transpose=True, chunk_cols=3)
    with SpzFile(tmp_path / "f.spz") as f:
        assert f.value_type == "float64"
        np.testing.assert_array_equal(f.read_all(), a)
        np.testing.assert_array_equal(f.read_rows(2, 6), a[2:6])


# ------------------------------------------------------------------------- value types
@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 255], "uint8"), ([0, 256], "uint16"), ([70000], "uint32"),
     ([2.0**32], "float32"), ([-1, 2], "float32"), ([0.5], "float32"), ([-0.0, 3], "uint8"),
     ([np.nan, 1], "float32"), ([], "uint8")],
)
def test_auto_chooses_like_rcppml(tmp_path, values, expected):
    a = sp.csc_matrix((np.array(values, float), (np.arange(len(values)),
                                                 np.zeros(len(values), int))),
                      shape=(max(len(values), 1), 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert write_spz(a, tmp_path / "x.spz")["value_type"] == expected
    b = read_spz(tmp_path / "x.spz")
    np.testing.assert_array_equal(b.data, a.data.astype(np.float32))


def test_auto_warns_only_when_float32_loses_precision(tmp_path):
    a = sp.csc_matrix(np.array([[0.1, 0.0], [0.0, 2.5]]))
    with pytest.warns(UserWarning, match="float32"):
        write_spz(a, tmp_path / "x.spz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_spz(a.astype(np.float32), tmp_path / "y.spz")


@pytest.mark.parametrize(
    ("vt", "value", "match"),
    [("uint8", np.nan, "uint8"), ("uint16", -1.0, "uint16"), ("uint32", 1.5, "uint32"),
     ("uint8", 256.0, "uint8"), ("float16", 70000.0, "float16"), ("float16", np.nan, "float16"),
     ("quant8", np.inf, "quant8"), ("float32", 1e39, "float32")],
)
def test_invalid_values_rejected_before_writing(tmp_path, vt, value, match):
    a = sp.csc_matrix(np.array([[1.0, 0.0], [0.0, value]]))
    with pytest.raises(ValueError, match=rf"row 1, column 1.*value_type='{match}'"):
        write_spz(a, tmp_path / "x.spz", value_type=vt)
    assert os.listdir(tmp_path) == []


def test_strict_false_writes_inf_like_rcppml(tmp_path):
    a = sp.csc_matrix(np.array([[1.0, 70000.0]]))
    write_spz(a, tmp_path / "x.spz", value_type="float16", strict=False)
    np.testing.assert_array_equal(read_spz(tmp_path / "x.spz").data, [1.0, np.inf])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"value_type": "int8"}, "value_type"), ({"codec": "zstd"}, "codec"),
     ({"chunk_cols": 0}, "chunk_cols"), ({"codec": "fp16"}, "dense"),
     ({"delta": True}, "dense"), ({"obs": pd.DataFrame({"a": [1, 2]})}, "obs has 2 rows"),
     ({"var": pd.DataFrame({"a": [1.0]})}, "var has 1 rows"),
     ({"shape": (3, 3)}, "shape"), ({"include_transpose": "yes"}, "include_transpose"),
     ({"obs": pd.DataFrame({"t": pd.date_range("2020", periods=4)})}, "obs: column 't'"),
     ({"obs": pd.DataFrame({"s": ["a", 1, "b", "c"]})}, "obs: column 's' mixes"),
     ({"obs": pd.DataFrame({"i": np.array([0, 1, 2, 2**40])})}, "obs: integer column"),
     ({"dense": True, "value_type": "uint8"}, "dense"),
     ({"dense": True, "obs": pd.DataFrame({"a": range(4)})}, "obs/var")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    a = sp.random(4, 5, density=0.5, format="csc", random_state=0)
    with pytest.raises(ValueError, match=match):
        write_spz(a, tmp_path / "x.spz", **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("blocks", "match"),
    [([(0, np.ones((4, 2))), (3, np.ones((4, 3)))], "expected 2"),
     ([(0, np.ones((3, 5)))], "3 rows"),
     ([(0, np.ones((4, 2)))], "ended at column 2"),
     ([(0, np.ones((4, 6)))], "overruns"),
     ([np.ones((4, 5))], "pairs")],
)
def test_bad_streams_leave_no_file(tmp_path, blocks, match):
    with pytest.raises(ValueError, match=match):
        write_spz(iter(blocks), tmp_path / "x.spz", shape=(4, 5), value_type="float32",
                  dense=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_midway_is_atomic(tmp_path, exc):
    p = tmp_path / "x.spz"
    write_spz(sp.random(5, 4, density=0.5, format="csc", random_state=2), p)
    previous = p.read_bytes()

    def gen():
        yield 0, sp.random(50, 10, density=0.2, format="csc", random_state=1)
        raise exc("boom")

    with pytest.raises(exc):
        write_spz(gen(), p, shape=(50, 20), value_type="float32", chunk_cols=10,
                  overwrite=True)
    assert p.read_bytes() == previous
    assert sorted(os.listdir(tmp_path)) == ["x.spz"]  # no temp/spill files left
    with pytest.raises(exc):  # also with the auto spill
        write_spz(gen(), p, shape=(50, 20), chunk_cols=10, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["x.spz"]


def test_invalid_value_in_a_later_block(tmp_path):
    blocks = [(0, sp.csc_matrix(np.ones((3, 2)))), (2, sp.csc_matrix(-np.ones((3, 2))))]
    with pytest.raises(ValueError, match="column 2"):
        write_spz(iter(blocks), tmp_path / "x.spz", shape=(3, 4), value_type="uint8")
    assert os.listdir(tmp_path) == []


def test_default_chunk_cols_and_empty_shapes(tmp_path):
    a = sp.random(13714, 300, density=0.001, format="csc", random_state=0)
    assert write_spz(a, tmp_path / "a.spz", value_type="float32")["chunk_cols"] == 145
    for shape in [(0, 0), (0, 5), (5, 0)]:
        write_spz(sp.csc_matrix(shape), tmp_path / "e.spz", overwrite=True)
        b = read_spz(tmp_path / "e.spz")
        assert b.shape == shape and b.nnz == 0
        write_spz(np.zeros(shape), tmp_path / "d.spz", include_transpose=True, overwrite=True)
        assert read_spz(tmp_path / "d.spz").shape == shape


def test_duplicates_are_summed_and_explicit_zeros_kept(tmp_path):
    coo = sp.coo_matrix((np.array([1.0, 2.0, 0.0]), (np.array([1, 1, 0]), np.array([0, 0, 1]))),
                        shape=(2, 2))
    write_spz(coo, tmp_path / "x.spz")
    b = read_spz(tmp_path / "x.spz")
    assert b.nnz == 2 and b[1, 0] == 3.0 and b.indptr.tolist() == [0, 1, 2]


def test_tables_round_trip(tmp_path):
    obs = pd.DataFrame({
        "s": ["x", None, "y", "x"],
        "c": pd.Categorical(["lo", "hi", None, "lo"], categories=["hi", "lo", "unused"]),
        "f": [0.5, np.nan, -1.0, 2.0],
        "f32": np.array([1, 2, 3, 4], np.float32),
        "i": pd.array([1, None, -7, 2**31 - 1], dtype="Int64"),
        "b": [True, False, True, True],
        "nb": pd.array([True, None, False, True], dtype="boolean"),
        "u": pd.array([0, 5, None, 2**32 - 2], dtype="UInt32"),
        "é" * 40: [1, 2, 3, 4],
    })
    var = pd.DataFrame({"name": [f"c{j}" for j in range(3)]})
    a = sp.random(4, 3, density=0.5, format="csc", random_state=2)
    write_spz(a, tmp_path / "t.spz", obs=obs, var=var, value_type="float64")
    with SpzFile(tmp_path / "t.spz") as f:
        o, v = f.obs, f.var
    assert list(o.columns[:-1]) == list(obs.columns[:-1])
    assert o.columns[-1] == "é" * 31  # 63-byte limit, cut at a character boundary
    assert [str(t) for t in o.dtypes] == ["category", "category", "float64", "float32",
                                          "Int32", "boolean", "boolean", "UInt32", "Int32"]
    assert list(o["s"].cat.categories) == ["x", "y"]
    assert list(o["c"].cat.categories) == ["hi", "lo", "unused"]
    for col in obs.columns[:-1]:
        want = [None if pd.isna(x) else x for x in obs[col].astype(object)]
        got = [None if pd.isna(x) else x for x in o[col].astype(object)]
        assert got == want, col
    assert list(v["name"]) == ["c0", "c1", "c2"]


@pytest.mark.parametrize("value_type", ["uint16", "auto"])
def test_streaming_write_uses_bounded_memory(tmp_path, value_type):
    """Streaming (incl. the transpose) holds O(one chunk + transpose budget), not the matrix.

    Chunks themselves scale with the matrix's other dimension (a transpose chunk holds
    ``chunk_cols`` whole rows), so the bound is checked against the largest chunk."""
    import tracemalloc

    m, n, step, cc = 4000, 3000, 125, 100
    blocks = []
    for j in range(0, n, step):
        blk = sp.random(m, step, density=0.04, format="csc", random_state=j)
        blk.data = np.ceil(blk.data * 1000)
        blocks.append((j, blk))
    ref = sp.hstack([b for _, b in blocks], format="csc")
    kw = dict(shape=(m, n), value_type=value_type, chunk_cols=cc, transpose_memory=256 << 10)
    write_spz(iter(blocks[:2]), tmp_path / "warm.spz", **{**kw, "shape": (m, 2 * step)})
    tracemalloc.start()
    try:
        write_spz(iter(blocks), tmp_path / "big.spz", **kw)  # the blocks are not counted
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full = ref.nnz * 12  # int32 index + float64 value per entry: ~5.8 MB
    biggest_chunk = 12 * max(np.diff(ref.indptr[::cc]).max(),
                             np.diff(ref.T.tocsc().indptr[::cc]).max())
    assert peak < 0.3 * full, (peak, full)
    assert peak < 6 * biggest_chunk + (256 << 10) + (256 << 10), (peak, biggest_chunk)
    with SpzFile(tmp_path / "big.spz") as f:
        assert f.value_type == "uint16"
        assert (f.read_all() != ref).nnz == 0
        assert (f.read_rows(100, 300) != ref[100:300]).nnz == 0
    assert sorted(os.listdir(tmp_path)) == ["big.spz", "warm.spz"]


def test_dense_flag_overrides_the_input_kind(tmp_path):
    arr = np.array([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    res = write_spz(arr, tmp_path / "s.spz", dense=False)
    assert res["version"] == 2 and res["value_type"] == "uint8"
    b = read_spz(tmp_path / "s.spz")
    assert sp.issparse(b) and b.nnz == 2 and np.array_equal(b.toarray(), arr)
    res = write_spz(sp.csc_matrix(arr), tmp_path / "d.spz", dense=True, codec="fp32_rans")
    assert res["version"] == 3
    np.testing.assert_array_equal(read_spz(tmp_path / "d.spz"), arr)


def test_empty_chunks_inside_a_matrix(tmp_path):
    a = sp.csc_matrix((5, 9))
    a[1, 0] = 4.0
    a[3, 8] = 7.0  # chunks of width 2: chunks 1-3 hold no entries
    write_spz(a, tmp_path / "e.spz", chunk_cols=2)
    with SpzFile(tmp_path / "e.spz") as f:
        assert f.chunk_nnz.tolist() == [1, 0, 0, 0, 1]
        assert (f.read_all() != a).nnz == 0
        assert (sp.hstack([f.read_transpose_chunk(c) for c in range(3)]) != a.T).nnz == 0
