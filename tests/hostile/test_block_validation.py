"""Issue 17, item 1: every sparse block is checked before a kernel sees it.

Row indices outside [0, m) and an inconsistent ``indptr`` made the numba kernels (and scipy's C++
conversions) read and write out of bounds: SIGSEGV, or silently wrong factors.  Here each damage
(``conftest.MUTATIONS``) is put into each kind of source and handed to each entry point; every
case must raise :class:`MatrixFormatError` (a ``ValueError``) naming the source, the block and
the problem — and never reach a kernel (a crash would kill the test run).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from hostile_helpers import MUTATIONS, base_matrix, listing, make_source
from hypothesis import given
from hypothesis import strategies as st

from dask_factor.io import open_matrix, write_matrix
from dask_factor.io.errors import MatrixFormatError
from dask_factor.io.spz import SpzFormatError
from dask_factor.io.validate import (
    check_block,
    check_compressed_arrays,
    csc_from_arrays,
    is_checked,
)
from dask_factor.kernels.validate import check_compressed

FILES = ["zarr", "h5ad", "anndata-zarr"]
MEMORY = ["csc", "csr", "csc_int64", "adata", "dask", "dask2d"]


def _assert_message(err: Exception, src, mutation: str) -> None:
    msg = str(err)
    assert re.search(MUTATIONS[mutation], msg), msg
    for name in src.names:
        assert name in msg, msg
    if src.path is not None:  # a file: the block is named by its column (cell) range
        assert re.search(r"(columns|cells) \d+:\d+", msg), msg


# --------------------------------------------------------------------------- open_matrix


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("kind", FILES + MEMORY)
def test_open_matrix_refuses_damaged_blocks(kind, mutation, tmp_path, clean_files):
    src = make_source(kind, mutation, tmp_path, clean_files)
    with pytest.raises(MatrixFormatError) as ei:
        open_matrix(src.obj).compute(scheduler="sync")
    _assert_message(ei.value, src, mutation)


@pytest.mark.parametrize("kind", FILES)
def test_open_matrix_reads_undamaged_files_exactly(kind, clean_files):
    got = open_matrix(clean_files[kind]).compute(scheduler="sync")
    np.testing.assert_array_equal(got.toarray(), base_matrix().toarray())


# --------------------------------------------------------------------------- the engine's input


@pytest.mark.parametrize("mutation", ["index_high", "index_negative", "indptr_decreasing",
                                      "indptr_past_end", "truncated"])
@pytest.mark.parametrize("kind", FILES + MEMORY)
def test_prepare_input_refuses_damaged_blocks(kind, mutation, tmp_path, clean_files):
    """What nmf/svd/graph fits call first: the stats pass reads every block."""
    from dask_factor.engine.inputs import prepare_input

    src = make_source(kind, mutation, tmp_path, clean_files)
    with pytest.raises(MatrixFormatError) as ei:
        prepare_input(src.obj, name="A", dtype=np.float32)
    _assert_message(ei.value, src, mutation)


@pytest.mark.parametrize("kind, mutation", [
    ("zarr", "index_high"), ("h5ad", "indptr_decreasing"), ("csc", "index_int32_max"),
    ("dask", "index_negative"), ("csr", "indptr_huge_middle"),
])
def test_nmf_refuses_damaged_input(kind, mutation, tmp_path, clean_files):
    from dask_factor import nmf

    src = make_source(kind, mutation, tmp_path, clean_files)
    with pytest.raises(MatrixFormatError) as ei:
        nmf(src.obj, k=2, maxit=2, seed=1)
    _assert_message(ei.value, src, mutation)


@pytest.mark.parametrize("kind, mutation", [("zarr", "indptr_past_end"),
                                            ("csc", "index_high")])
def test_svd_refuses_damaged_input(kind, mutation, tmp_path, clean_files):
    from dask_factor import svd

    src = make_source(kind, mutation, tmp_path, clean_files)
    with pytest.raises(MatrixFormatError) as ei:
        svd(src.obj, k=2)
    _assert_message(ei.value, src, mutation)


# --------------------------------------------------------------------------- writes and the CLI


@pytest.mark.parametrize("fmt", ["zarr", "spz", "h5ad"])
@pytest.mark.parametrize("mutation", ["index_high", "indptr_decreasing", "truncated"])
@pytest.mark.parametrize("kind", FILES + ["csc", "csr", "dask", "dask2d"])
def test_write_matrix_refuses_damaged_source_and_leaves_nothing(kind, mutation, fmt, tmp_path,
                                                                clean_files):
    src = make_source(kind, mutation, tmp_path, clean_files)
    out = tmp_path / "out" / f"copy.{fmt}"
    out.parent.mkdir()
    before = listing(tmp_path)
    with pytest.raises(MatrixFormatError) as ei:
        write_matrix(src.obj, out)
    _assert_message(ei.value, src, mutation)
    assert not out.exists()
    assert listing(tmp_path) == before  # no temporary left behind, the source untouched


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("mutation", ["index_negative", "indptr_start"])
def test_cli_convert_reports_damaged_source(kind, mutation, tmp_path, clean_files, capsys):
    from dask_factor.cli import main

    src = make_source(kind, mutation, tmp_path, clean_files)
    out = tmp_path / "out.spz"
    assert main(["convert", str(src.path), str(out), "-q"]) != 0
    err = capsys.readouterr().err
    assert re.search(MUTATIONS[mutation], err), err
    assert src.path.name in err and not out.exists()


# --------------------------------------------------------------------------- .spz and mtx


def test_spz_blocks_are_checked_too(tmp_path, monkeypatch):
    """The codec checks what it decodes; the reader task checks again what reaches the engine
    (a bad block from a future codec path is an SpzFormatError naming file and columns)."""
    from dask_factor.io.spz import SpzFile, write_spz

    A = base_matrix()
    path = tmp_path / "a.spz"
    write_spz(A, path, chunk_cols=64)
    real = SpzFile.read_columns

    def damaged(self, start, stop, **kw):
        blk = real(self, start, stop, **kw)
        blk.indices[blk.nnz // 2] = A.shape[0] + 1
        return blk

    monkeypatch.setattr(SpzFile, "read_columns", damaged)
    with pytest.raises(SpzFormatError, match=r"a\.spz: columns \d+:\d+: row index 61"):
        open_matrix(path).compute(scheduler="sync")


@pytest.mark.parametrize("line", ["61 3 1.0", "0 3 1.0", "5 241 2.0", "-2 3 1.0"])
def test_mtx_entry_outside_the_declared_shape(tmp_path, line):
    p = tmp_path / "bad.mtx"
    p.write_text(f"%%MatrixMarket matrix coordinate real general\n60 240 2\n1 1 1.0\n{line}\n")
    with pytest.raises(ValueError):
        open_matrix(p).compute(scheduler="sync")
    with pytest.raises(ValueError, match="outside the declared shape"):
        write_matrix(p, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


# --------------------------------------------------------------------------- the kernel itself


def _reference(indptr, indices, n_minor):
    """Plain-Python statement of what check_compressed must return."""
    n_major = len(indptr) - 1
    if n_major < 0 or indptr[0] != 0:
        return 1, 0, 0
    for j in range(n_major):
        if indptr[j + 1] < indptr[j]:
            return 2, j, 0
    if indptr[-1] != len(indices):
        return 3, n_major, 0
    for p, r in enumerate(indices):
        if r < 0 or r >= n_minor:
            return 4, p, 0
    canonical = all(indices[p] < indices[p + 1] for j in range(n_major)
                    for p in range(indptr[j], indptr[j + 1] - 1))
    return 0, -1, int(canonical)


@st.composite
def _structures(draw):
    n_minor = draw(st.integers(1, 12))
    counts = draw(st.lists(st.integers(0, 6), min_size=0, max_size=12))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(draw(st.sampled_from(
        [np.int32, np.int64])))
    nnz = int(indptr[-1])
    indices = np.array(draw(st.lists(st.integers(0, n_minor - 1), min_size=nnz, max_size=nnz)),
                       dtype=draw(st.sampled_from([np.int32, np.int64])))
    if draw(st.booleans()):  # sorted columns, the common case
        for j in range(len(counts)):
            indices[indptr[j]:indptr[j + 1]] = np.sort(indices[indptr[j]:indptr[j + 1]])
    damage = draw(st.sampled_from(["none", "index", "indptr", "start", "end"]))
    if damage == "index" and nnz:
        indices[draw(st.integers(0, nnz - 1))] = draw(st.sampled_from(
            [-1, n_minor, n_minor + 1000, -(2**31) + 1, 2**31 - 1]))
    elif damage == "indptr" and len(counts) > 1:
        j = draw(st.integers(1, len(counts) - 1))
        indptr[j] = draw(st.integers(0, nnz + 3))
    elif damage == "start" and indptr.size:
        indptr[0] = draw(st.integers(1, 5))
    elif damage == "end" and indptr.size:
        indptr[-1] = draw(st.integers(0, nnz + 5))
    return indptr, indices, n_minor


@given(_structures())
def test_kernel_agrees_with_reference(case):
    indptr, indices, n_minor = case
    got = tuple(int(v) for v in check_compressed(indptr, indices, n_minor))
    want = _reference(indptr.tolist(), indices.tolist(), n_minor)
    assert got[:2] == want[:2]
    if want[0] == 0:
        assert got[2] == want[2]


@given(_structures())
def test_wrapper_raises_exactly_when_the_kernel_objects(case):
    indptr, indices, n_minor = case
    bad = _reference(indptr.tolist(), indices.tolist(), n_minor)[0] != 0
    shape = (n_minor, indptr.size - 1)
    if bad:
        with pytest.raises(MatrixFormatError, match="^blk: "):
            check_compressed_arrays(indptr, indices, np.ones(indices.size), shape, where="blk")
    else:
        A = csc_from_arrays(np.arange(indices.size, dtype=np.float64), indices, indptr, shape,
                            where="blk")
        assert is_checked(A) and A.has_sorted_indices
        ref = sp.csc_matrix((np.arange(indices.size, dtype=np.float64), indices, indptr),
                            shape=shape)
        np.testing.assert_array_equal(A.toarray(), ref.toarray())


@pytest.mark.parametrize("what, arrays, pattern", [
    ("float indices", (np.array([0, 1]), np.array([0.0]), np.ones(1)), "expected integers"),
    ("2-D indptr", (np.array([[0, 1]]), np.array([0]), np.ones(1)), "must be 1-D"),
    ("short indptr", (np.array([0]), np.array([], dtype=np.int32), np.ones(0)), "entries"),
    ("data longer", (np.array([0, 1]), np.array([0]), np.ones(2)), "1 indices but 2 values"),
    ("uint64 wrap", (np.array([0, 1]), np.array([2**63 + 5], dtype=np.uint64), np.ones(1)),
     "outside"),
])
def test_wrapper_rejects_malformed_arrays(what, arrays, pattern):
    with pytest.raises(MatrixFormatError, match=pattern):
        check_compressed_arrays(*arrays, (3, 1), where=what)


@pytest.mark.parametrize("fmt", ["csc", "csr", "coo", "bsr"])
def test_check_block_formats(fmt):
    A = base_matrix()
    ok = A.asformat(fmt)
    check_block(ok, A.shape, where="ok")
    bad = A.asformat(fmt)
    if fmt == "coo":
        bad.row[3] = A.shape[0]
    elif fmt == "bsr":
        bad.indices[0] = bad.shape[1] + 2
    else:
        bad.indices[3] = 10**6
    with pytest.raises(MatrixFormatError, match="is outside"):
        check_block(bad, A.shape, where="bad")
    with pytest.raises(MatrixFormatError, match=r"block has shape \(60, 240\), expected"):
        check_block(ok, (60, 241), where="shape")


@pytest.mark.parametrize("kind", FILES + ["spz"])
def test_reader_blocks_are_marked_so_the_engine_does_not_check_twice(kind, clean_files,
                                                                     tmp_path):
    from dask_factor.io.spz import write_spz

    if kind == "spz":
        path = tmp_path / "a.spz"
        write_spz(base_matrix(), path, chunk_cols=64)
    else:
        path = clean_files[kind]
    x = open_matrix(path, block_nnz=400)
    blocks = x.to_delayed().ravel()
    assert len(blocks) > 1 and all(is_checked(b.compute(scheduler="sync")) for b in blocks)
