"""Every reader and writer cuts by the rows of A (genes), never by its columns (cells): with
the rule scaled down to 10 entries a row, a 300-gene × 4,000-cell matrix of 120,000 entries
is cut into ~40 blocks of ~3,000 entries (by the cells it would be 3 to 8 blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from dask_factor.engine.blocks import as_blocked
from dask_factor.io import chunking, open_matrix, write_matrix

M, N, PER_ROW = 300, 4000, 10


@pytest.fixture
def small_rule(monkeypatch):
    monkeypatch.setattr(chunking, "DEFAULT_BLOCK_NNZ", 1)
    monkeypatch.setattr(chunking, "ENTRIES_PER_ROW", PER_ROW)
    monkeypatch.setattr(chunking, "MAX_DEFAULT_BLOCK_NNZ", 10**9)
    assert chunking.default_block_nnz(M) == M * PER_ROW


@pytest.fixture(scope="module")
def A():
    return sp.random(M, N, density=0.1, format="csc", random_state=3, dtype=np.float64)


def _check(bounds, A):
    target = M * PER_ROW
    sizes = np.diff(A.indptr[np.asarray(bounds)])
    assert abs(len(sizes) - A.nnz / target) <= 3, len(sizes)
    assert sizes.max() <= target + np.diff(A.indptr).max()


def test_in_memory_inputs_are_cut_by_the_rows(small_rule, A):
    _check(as_blocked(A).bounds, A)
    x = open_matrix(A)
    _check(np.concatenate([[0], np.cumsum(x.chunks[1])]), A)


@pytest.mark.parametrize("fmt", ["zarr", "h5ad", "mtx", "mtx.zarr"])
def test_files_are_cut_by_the_rows(small_rule, A, tmp_path, fmt):
    if fmt == "h5ad":
        pytest.importorskip("anndata")
    path = tmp_path / f"a.{fmt}"
    if fmt.startswith("mtx"):
        scipy.io.mmwrite(tmp_path / "a.mtx", A)
    if fmt == "mtx.zarr":  # converted by streaming the Matrix Market file
        write_matrix(tmp_path / "a.mtx", path, "zarr")
    elif fmt != "mtx":
        write_matrix(A, path)  # a zarr store keeps the blocks it is written with
    x = open_matrix(path)
    bounds = np.concatenate([[0], np.cumsum(x.chunks[1])])
    _check(bounds, A)
    np.testing.assert_array_equal(x.compute().toarray(), A.toarray())


@pytest.mark.parametrize("fmt", ["zarr", "scan.zarr", "h5ad", "mtx", "simulated.zarr"])
def test_files_hold_at_least_the_engines_minimum_of_blocks(tmp_path, fmt):
    """With the default rule a file of fewer entries than one default block is still written
    (or read) in 8 blocks: a fit would otherwise re-cut them through a rechunk (a 34.5 M-entry
    store of 5 blocks fitted 1.5x slower a pass from the scan layout)."""
    from dask_factor.datasets import simulate_counts

    if fmt == "h5ad":
        pytest.importorskip("anndata")
    path = tmp_path / f"a.{fmt.split('.')[-1]}"
    if fmt == "simulated.zarr":
        simulate_counts(3000, 200, 3, seed=1, path=path)
    else:
        A = sp.random(200, 3000, density=0.05, format="csc", random_state=1)
        if fmt == "mtx":
            scipy.io.mmwrite(path, A)
        else:
            write_matrix(A, path, **({"layout": "scan"} if fmt == "scan.zarr" else {}))
    assert len(open_matrix(path).chunks[1]) >= 8  # the engine takes them as they are
