"""Hostile and broken inputs (issue 17): builders of corrupted sources shared by the tests.

(A module of its own, not conftest.py: tests/graph has a conftest too.)

A *mutation* damages the compressed arrays of a matrix (``indptr``, ``indices``) the way a buggy
writer, a bit flip or a hand-edited store would; a *source* puts the damaged arrays where a user
would hand them to us: a zarr store, an ``.h5ad`` file, an AnnData zarr store, an in-memory scipy
matrix, an AnnData object, a dask array of scipy chunks (one or two row chunks).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

M, N = 60, 240  # features x samples


def base_matrix() -> sp.csc_matrix:
    """Small integer-valued CSC (60 x 240, ~10 % dense), every column non-empty."""
    A = sp.random(M, N, density=0.1, format="csc", random_state=17, dtype=np.float32)
    A = A + sp.csc_matrix((np.ones(N, np.float32), (np.arange(N) % M, np.arange(N))),
                          shape=(M, N))
    A = sp.csc_matrix(A)
    A.data = np.ceil(A.data * 9).astype(np.float32)
    A.sort_indices()
    return A


#: mutation -> regular expression the error message must match
MUTATIONS = {
    "index_high": r"index \d+ \(entry \d+, \w+ \d+\) is outside \[0, \d+\)",
    "index_negative": r"index -1 \(entry \d+, \w+ \d+\) is outside \[0, \d+\)",
    "index_int32_max": r"index 2147483647 \(entry \d+, \w+ \d+\) is outside \[0, \d+\)",
    "index_last_entry": r"index \d+ \(entry \d+, \w+ \d+\) is outside \[0, \d+\)",
    "indptr_decreasing": r"indptr decreases at \w+ \d+|indptr points at entry",
    "indptr_start": r"indptr\[0\] is 1, expected 0",
    "indptr_past_end": r"indptr (ends at|points at entry) \d+",
    "indptr_huge_middle": r"indptr (decreases|points at entry 2147483647)",
    "truncated": r"indptr (ends at|points at entry)|indices but \d+ values|stored",
}


def mutate(indptr: np.ndarray, indices: np.ndarray, minor: int, kind: str):
    """Damage CSC/CSR arrays in place (``minor``: the size of the indexed axis); returns the
    arrays (a truncation returns a shorter ``indices``)."""
    nnz = int(indptr[-1])
    mid = (indptr.size - 1) // 2
    if kind == "index_high":
        indices[nnz // 2] = minor + 3
    elif kind == "index_negative":
        indices[nnz // 3] = -1
    elif kind == "index_int32_max":
        indices[nnz // 2] = 2**31 - 1
    elif kind == "index_last_entry":
        indices[nnz - 1] = minor
    elif kind == "indptr_decreasing":
        indptr[mid] = indptr[mid + 1] + 1
    elif kind == "indptr_start":
        indptr[0] = 1
    elif kind == "indptr_past_end":
        indptr[-1] = nnz + 10
    elif kind == "indptr_huge_middle":
        indptr[mid] = 2**31 - 1
    elif kind == "truncated":
        indices = indices[: nnz - 5]
    else:  # pragma: no cover
        raise ValueError(kind)
    return indptr, indices


@dataclass
class Source:
    """A damaged source: what to pass (``obj``), and what the message must name (``names``)."""

    kind: str
    obj: object
    names: tuple[str, ...]
    path: Path | None = None


def clean_zarr(A, d: Path) -> Path:
    from dask_factor.io import write_matrix

    return write_matrix(A, d / "a.zarr", block_nnz=400)


def clean_scan_zarr(A, d: Path) -> Path:
    from dask_factor.io import write_matrix

    return write_matrix(A, d / "scan.zarr", block_nnz=400, layout="scan")


def clean_h5ad(A, d: Path) -> Path:
    from dask_factor.io import write_matrix

    return write_matrix(A, d / "a.h5ad", block_nnz=400)


def clean_anndata_zarr(A, d: Path) -> Path:
    import anndata as ad

    p = d / "ad.zarr"
    ad.AnnData(sp.csr_matrix(A.T)).write_zarr(p)
    return p


def _damage_zarr_group(g, minor: int, kind: str) -> None:
    indices, indptr = g["indices"], g["indptr"]
    ip, ind = mutate(indptr[:], indices[:], minor, kind)
    if ind.size != indices.shape[0]:
        indices.resize((ind.size,))
    indices[:] = ind
    indptr[:] = ip


def _damage_h5(path: Path, minor: int, kind: str) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        X = f["X"]
        ip, ind = mutate(X["indptr"][:], X["indices"][:], minor, kind)
        if ind.size != X["indices"].shape[0]:
            X["indices"].resize((ind.size,))
        X["indices"][:] = ind
        X["indptr"][:] = ip


def _in_memory(A: sp.spmatrix, kind: str, minor: int):
    A.indptr, A.indices = mutate(A.indptr, A.indices, minor, kind)
    return A


def _dask_of(blocks_grid, dtype=np.float32) -> da.Array:
    meta = sp.csc_matrix((0, 0), dtype=dtype)
    rows = [[da.from_delayed(dask.delayed(b), shape=b.shape, dtype=dtype, meta=meta) for b in row]
            for row in blocks_grid]
    return da.block(rows)


def make_source(kind: str, mutation: str, tmp_path: Path, clean_files=None) -> Source:
    """A copy of :func:`base_matrix` as source ``kind``, damaged by ``mutation``."""
    A = base_matrix()
    if kind in ("zarr", "h5ad", "anndata-zarr"):
        import zarr

        src = clean_files[kind]
        dst = tmp_path / src.name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        if kind == "zarr":
            _damage_zarr_group(zarr.open_group(str(dst), mode="r+"), M, mutation)
        elif kind == "anndata-zarr":
            _damage_zarr_group(zarr.open_group(str(dst), mode="r+")["X"], M, mutation)
            zarr.consolidate_metadata(str(dst))  # anndata reads the consolidated shapes
        else:
            _damage_h5(dst, M, mutation)
        return Source(kind, dst, (dst.name,), dst)
    if kind == "csc":
        return Source(kind, _in_memory(A.copy(), mutation, M), ("in-memory csc_matrix",))
    if kind == "csr":  # genes x cells held as CSR: indices are column numbers
        return Source(kind, _in_memory(sp.csr_matrix(A), mutation, N), ("in-memory csr_matrix",))
    if kind == "csc_int64":
        B = A.copy()
        B.indptr, B.indices = B.indptr.astype(np.int64), B.indices.astype(np.int64)
        return Source(kind, _in_memory(B, mutation, M), ("in-memory csc_matrix",))
    if kind == "adata":
        import anndata as ad

        adata = ad.AnnData(sp.csr_matrix(A.T))
        _in_memory(adata.X, mutation, M)
        return Source(kind, adata, ("adata",))
    if kind in ("dask", "dask2d"):
        bounds = [0, 80, 160, N]
        if kind == "dask":
            grid = [[sp.csc_matrix(A[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]]
            target = grid[0][1]
            minor = M
        else:
            grid = [[sp.csc_matrix(A[r0:r1, a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
                    for r0, r1 in ((0, 30), (30, M))]
            target = grid[1][1]
            minor = 30
        _in_memory(target, mutation, minor)
        return Source(kind, _dask_of(grid), ("columns 80:160",))
    raise ValueError(kind)  # pragma: no cover


def listing(d: Path) -> dict[str, int]:
    """Every file under ``d`` (relative name -> size): to prove nothing on disk was lost."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = Path(root) / f
            out[str(p.relative_to(d))] = p.stat().st_size
    return out
