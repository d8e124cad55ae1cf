"""Reading StreamPress files: the RcppML conformance corpus, random access, pickling, tables."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import RCPPML_DATA

from dask_factor.io.spz import SpzFile, SpzFormatError, read_spz, write_spz

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "spz"
SHARED = RCPPML_DATA  # optional: only extra cases, skipped when absent
SHARED_CORPUS = SHARED / "spz-conformance"
PBMC = SHARED / "pbmc3k"

pytestmark = pytest.mark.filterwarnings("ignore:.*row_sort=TRUE:UserWarning")


def parse_manifest(folder: Path) -> list[dict]:
    """Cases of MANIFEST.md whose .spz is present in ``folder``."""
    text = (folder / "MANIFEST.md").read_text()
    out = []
    for block in re.split(r"\n## `", text)[1:]:
        name = block.split(".spz`", 1)[0]
        src = re.search(r"- source: `source/([^`]+)`", block).group(1)
        call = re.search(r"- writer call: `([^`]+)`", block).group(1)
        dec = re.search(r"decoded by st_read(?:_dense)?\(\) -> `decoded/([^`]+)`", block).group(1)
        info = dict(kv.split("=", 1) for kv in
                    re.search(r"- st_info\(\): (.*)", block).group(1).split("; "))
        if (folder / f"{name}.spz").exists():
            out.append(dict(name=name, source=src, call=call, decoded=dec, info=info,
                            folder=folder))
    return out


CASES = parse_manifest(DATA)
SHARED_CASES = parse_manifest(SHARED_CORPUS) if (SHARED_CORPUS / "MANIFEST.md").exists() else []


def load_mtx(path: Path):
    a = scipy.io.mmread(str(path))
    if sp.issparse(a):
        a = sp.csc_matrix(a)
        a.sum_duplicates()
        a.sort_indices()
    return a


def expected_matrix(case: dict):
    """What a correct reader must return (RcppML's decoded twin; the source for row_sort)."""
    folder = case["folder"]
    name = case["name"]
    if "rowsort" in name:  # RcppML's own reader un-permutes in the wrong direction
        a = load_mtx(folder / "source" / case["source"])
        if case["info"]["value_type"] == "float32":
            a.data = a.data.astype(np.float32).astype(np.float64)
        return a
    dec = folder / "decoded" / case["decoded"]
    if not dec.exists() and case["decoded"] == "hawaiibirds.fp64.mtx.gz":
        dec = folder / "source" / "hawaiibirds.mtx.gz"  # byte-identical twin, not copied
    if not dec.exists():
        pytest.skip(f"decoded twin {case['decoded']} not in {folder}")
    return load_mtx(dec)


def assert_same(a, b) -> None:
    if sp.issparse(b):
        assert sp.issparse(a) and a.format == "csc"
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)  # exact, inf included
    else:
        assert isinstance(a, np.ndarray) and a.shape == b.shape
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_conformance_decodes_exactly(case):
    a = read_spz(case["folder"] / f"{case['name']}.spz")
    assert_same(a, expected_matrix(case))
    if sp.issparse(a):
        assert a.indices.dtype == np.int32 and a.has_sorted_indices
        assert_strictly_sorted(a)


def assert_strictly_sorted(a) -> None:
    """Row indices strictly increase within every column."""
    if a.nnz < 2:
        return
    keep = np.ones(a.nnz - 1, bool)
    starts = a.indptr[1:-1]
    starts = starts[(starts > 0) & (starts < a.nnz)]
    keep[starts - 1] = False
    assert np.all(np.diff(a.indices.astype(np.int64))[keep] > 0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_header_facts_match_st_info(case):
    info = case["info"]
    with SpzFile(case["folder"] / f"{case['name']}.spz") as f:
        assert f.shape == (int(info["rows"]), int(info["cols"]))
        assert f.nnz == int(info["nnz"])
        assert f.version == int(info["version"])
        assert f.value_type == info["value_type"]
        assert f.chunk_cols == int(info["chunk_cols"])
        assert f.num_chunks == int(info["num_chunks"])
        assert f.has_transpose == (info["has_transpose"] == "TRUE")
        assert f.row_sorted == (info.get("row_sorted") == "TRUE")
        assert f.is_dense == (f.version == 3)
        assert f.chunk_bounds[0] == 0 and f.chunk_bounds[-1] == f.shape[1]
        assert f.chunk_bounds.dtype == np.int64 and f.chunk_bounds.size == f.num_chunks + 1
        assert f.chunk_nnz.sum() == f.nnz and f.chunk_nnz.size == f.num_chunks
        d = f.info()
        assert d["format"] == "spz" and d["file_size"] == int(info["file_bytes"])
        assert d["shape"] == f.shape and d["num_chunks"] == f.num_chunks
        if f.is_dense:
            codec = re.search(r"codec=(\w+)", (DATA / "MANIFEST.md").read_text().split(
                f"## `{case['name']}.spz`")[1]).group(1)
            assert f.codec == {"raw_fp32": "raw"}.get(codec, codec)


@pytest.mark.parametrize("case", [c for c in CASES if c["info"]["has_transpose"] == "TRUE"],
                         ids=lambda c: c["name"])
def test_stored_transpose_equals_transpose(case):
    with SpzFile(case["folder"] / f"{case['name']}.spz") as f:
        a = f.read_all()
        tb = f.transpose_bounds
        parts = [f.read_transpose_chunk(c) for c in range(tb.size - 1)]
        rows = f.read_rows(1, min(5, f.shape[0]))
        if f.is_dense:
            np.testing.assert_array_equal(np.hstack(parts), a.T)
            np.testing.assert_array_equal(rows, a[1:5])
            return
        t = sp.hstack(parts, format="csc")
        if f.value_type == "quant8":  # quantized separately: same pattern, values close
            np.testing.assert_array_equal(t.indices, a.T.tocsc().indices)
            assert abs(t - a.T).max() <= (a.max() - a.min()) / 255 + 1e-6
            return
        assert (t != a.T).nnz == 0
        assert sp.isspmatrix_csr(rows) and rows.shape == (min(5, f.shape[0]) - 1, f.shape[1])
        assert (rows != a[1:5]).nnz == 0


def _as_objects(s: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in s.astype(object)]


def test_obs_var_tables_tiny():
    with SpzFile(DATA / "tiny_int.obsvar.spz") as f:
        obs, var = f.obs, f.var
    want_obs = pd.read_csv(DATA / "decoded" / "tiny_int.obsvar.obs.csv")
    want_var = pd.read_csv(DATA / "decoded" / "tiny_int.obsvar.var.csv")
    assert list(obs.columns) == list(want_obs.columns) and len(obs) == 7
    assert list(var.columns) == ["col", "w"] and len(var) == 5
    assert [str(t) for t in obs.dtypes] == ["category", "category", "float64", "Int32",
                                            "boolean"]
    for col in obs.columns:
        assert _as_objects(obs[col]) == _as_objects(want_obs[col]), col
    assert list(obs["name"].cat.categories) == [f"r{i}" for i in range(1, 8)]
    assert list(obs["group"].cat.categories) == ["a", "b", "c"]
    np.testing.assert_array_equal(var["w"], want_var["w"])
    assert _as_objects(var["col"]) == _as_objects(want_var["col"])


def test_obs_var_tables_hawaiibirds():
    with SpzFile(DATA / "hawaiibirds.obsvar.spz") as f:
        obs, var = f.obs, f.var
    want_obs = pd.read_csv(DATA / "source" / "hawaiibirds_obs.csv")
    want_var = pd.read_csv(DATA / "source" / "hawaiibirds_var.csv")
    assert obs.shape == (183, 3) and var.shape == (1183, 4)
    for col in ("species", "status", "type"):
        assert _as_objects(obs[col]) == _as_objects(want_obs[col])
    for col in ("grid", "island"):
        assert _as_objects(var[col]) == _as_objects(want_var[col])
    np.testing.assert_allclose(var["lat"], want_var["lat"], rtol=1e-13)
    np.testing.assert_allclose(var["lng"], want_var["lng"], rtol=1e-13)
    assert SpzFile(DATA / "hawaiibirds.default.spz").obs is None


def test_read_columns_reads_only_overlapping_chunks():
    f = SpzFile(DATA / "hawaiibirds.chunk100.rowsort.spz")
    full = f.read_all()
    calls = []
    orig = f._pread
    f._pread = lambda off, size: (calls.append((off, size)), orig(off, size))[1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = sorted(rng.integers(0, f.shape[1] + 1, 2))
        calls.clear()
        part = f.read_columns(a, b)
        assert (part != full[:, a:b]).nnz == 0 and part.shape == (f.shape[0], b - a)
        want = len({c for c in range(f.num_chunks)
                    if f.chunk_bounds[c] < b and f.chunk_bounds[c + 1] > a})
        assert len(calls) == want
    for c in range(f.num_chunks):
        lo, hi = f.chunk_bounds[c], f.chunk_bounds[c + 1]
        assert (f.read_chunk(c) != full[:, lo:hi]).nnz == 0
    f.close()


def test_dense_random_access_and_dtype():
    with SpzFile(DATA / "tiny_dense.raw.transpose.chunk2.spz") as f:
        full = f.read_all()
        assert full.dtype == np.float64
        np.testing.assert_array_equal(f.read_columns(1, 4), full[:, 1:4])
        np.testing.assert_array_equal(f.read_chunk(2), full[:, 4:5])
        assert f.read_columns(2, 2).shape == (7, 0)
        f32 = f.read_all(dtype=np.float32)
        assert f32.dtype == np.float32
        np.testing.assert_array_equal(f32, full.astype(np.float32))


def test_dtype_float32_sparse_and_index_types():
    a64 = read_spz(DATA / "hawaiibirds.default.spz")
    a32 = read_spz(DATA / "hawaiibirds.default.spz", dtype=np.float32)
    assert a32.dtype == np.float32 and a64.dtype == np.float64
    np.testing.assert_array_equal(a32.data.astype(np.float64), a64.data)
    assert a32.indices.dtype == np.int32 and a32.indptr.dtype == np.int32
    with pytest.raises(ValueError, match="dtype"):
        read_spz(DATA / "tiny_int.default.spz", dtype=np.int64)


def test_bad_ranges_and_missing_transpose():
    with SpzFile(DATA / "tiny_int.notranspose.spz") as f:
        with pytest.raises(ValueError, match="range"):
            f.read_columns(3, 9)
        with pytest.raises(IndexError):
            f.read_chunk(1)
        with pytest.raises(ValueError, match="no transpose"):
            f.read_transpose_chunk(0)
        assert f.transpose_bounds is None
    with pytest.raises(ValueError, match="closed"):
        f.read_all()


def test_pickle_reopens_by_path(tmp_path):
    f = SpzFile(DATA / "hawaiibirds.chunk100.rowsort.spz")
    state = f.__getstate__()
    assert not any(isinstance(v, int) and v == f._fd for k, v in state.items() if k != "stat")
    g = pickle.loads(pickle.dumps(f))
    assert g.shape == f.shape and g.row_sorted
    assert (g.read_columns(150, 420) != f.read_columns(150, 420)).nnz == 0
    f.close()
    assert (g.read_columns(0, 10) != read_spz(f.path)[:, :10]).nnz == 0  # independent handle
    g.close()
    # a file changed after pickling is refused on unpickle (issue 17: sources that change)
    p = tmp_path / "x.spz"
    write_spz(sp.random(20, 10, density=0.3, format="csc", random_state=0), p,
              value_type="float64")
    h = SpzFile(p)
    blob = pickle.dumps(h)
    data = bytearray(p.read_bytes())
    data[200] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(1, 1))
    with pytest.raises(SpzFormatError, match="changed .*since it was opened"):
        pickle.loads(blob)


def test_row_sorted_file_warns_and_returns_true_matrix():
    with pytest.warns(UserWarning, match="row_sort"):
        f = SpzFile(DATA / "tiny_int.rowsort.spz")
    a = f.read_all()
    assert_same(a, load_mtx(DATA / "source" / "tiny_int.mtx"))
    rcpp = load_mtx(DATA / "decoded" / "tiny_int.rowsort.mtx")  # RcppML's (wrong) answer
    assert (a != rcpp).nnz > 0
    np.testing.assert_array_equal(f.read_rows(0, 7).toarray(), a.toarray())
    f.close()


def test_repr_and_context_manager():
    with SpzFile(DATA / "tiny_u16.default.spz") as f:
        assert "uint16" in repr(f) and f.value_type == "uint16"
    with SpzFile(DATA / "tiny_dense.fp16_rans.spz", verify_crc=False) as f:
        assert f.codec == "fp16_rans" and f.info()["codec"] == "fp16_rans"


# ---------------------------------------------------------------- shared folder (optional)
needs_shared = pytest.mark.skipif(not SHARED_CASES, reason="DASK_FACTOR_RCPPML_DATA unset")
needs_pbmc = pytest.mark.skipif(not (PBMC / "pbmc3k_data_rda.spz").exists(),
                                reason="DASK_FACTOR_RCPPML_DATA unset")


@needs_shared
@pytest.mark.parametrize("case", [c for c in SHARED_CASES if c["name"].startswith("aml")],
                         ids=lambda c: c["name"])
def test_shared_aml_corpus(case):
    assert_same(read_spz(case["folder"] / f"{case['name']}.spz"), expected_matrix(case))


@needs_pbmc
def test_pbmc3k_rda_decodes_to_mtx_and_var():
    t = time.perf_counter()
    with SpzFile(PBMC / "pbmc3k_data_rda.spz") as f:
        a = f.read_all()
        var = f.var
        tchunks = [f.read_transpose_chunk(c) for c in range(f.transpose_bounds.size - 1)]
    elapsed = time.perf_counter() - t
    want = load_mtx(PBMC / "matrix.mtx.gz")
    assert_same(a, want)
    assert a.shape == (13714, 2638) and a.nnz == 2_238_732
    assert (sp.hstack(tchunks, format="csc") != a.T).nnz == 0
    csv = pd.read_csv(PBMC / "var.csv")
    assert _as_objects(var["cell_type"]) == list(csv["cell_type"])
    assert elapsed < 10  # the < 1 s target is measured in benchmarks/bench_spz.py


@needs_pbmc
def test_pbmc3k_extdata_hashes():
    a = read_spz(PBMC / "pbmc3k.spz")
    assert a.shape == (13714, 2700) and a.nnz == 2_282_976 and a.sum() == 6_386_518
    np.testing.assert_array_equal(np.asarray(a[:, :5].sum(0)).ravel(), [2419, 4903, 3147,
                                                                         2639, 980])

    def h(x, dt):
        return hashlib.sha256(np.ascontiguousarray(x, dtype=dt).tobytes()).hexdigest()[:16]

    assert h(a.indptr, "<i4") == "fb070478c67d9d73"
    assert h(a.indices, "<i4") == "d887f02dd198752f"
    assert h(a.data, "<f8") == "8d8b49d119b50eb7"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_docstring_examples_run():
    import doctest
    import importlib

    for mod in ("errors", "header", "rans", "codecs", "dense", "tables", "layout", "legacy",
                "sources", "transpose", "reader", "writer"):
        m = importlib.import_module(f"dask_factor.io.spz.{mod}")
        res = doctest.testmod(m, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, mod
