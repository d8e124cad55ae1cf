"""Issue 17, item 2: a source that changes under a running fit raises, naming it.

A ``cache="none"`` fit reads its input at every iteration.  Replacing the file between two
iterations used to go unnoticed (a ``.spz`` replaced by an empty one made the fit report MSE
0.0).  Readers now record a stamp (size, mtime, CRC32 of the head and tail) when a source is
opened and every block read checks it: the fit stops with ``SourceChangedError``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import time

import dask
import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf
from dask_factor.io import open_matrix, write_matrix
from dask_factor.io.errors import MatrixFormatError, SourceChangedError
from dask_factor.io.spz import SpzFile, SpzFormatError, write_spz
from dask_factor.io.stamp import check_stamp, stamp

FORMATS = ["spz", "zarr", "h5ad", "anndata-zarr"]


def _matrix(seed: int = 1, scale: float = 9.0) -> sp.csc_matrix:
    A = sp.random(80, 300, density=0.1, format="csc", random_state=seed)
    A.data = np.ceil(A.data * scale).astype(np.float32)
    return A


def _write(A, path, fmt: str, overwrite: bool = False):
    if fmt == "anndata-zarr":
        import anndata as ad

        if overwrite:
            shutil.rmtree(path)
        ad.AnnData(sp.csr_matrix(A.T)).write_zarr(path)
        return path
    if fmt == "spz":
        write_spz(A, path, chunk_cols=40, overwrite=overwrite)
        return path
    return write_matrix(A, path, block_nnz=500, overwrite=overwrite)


def _path(tmp_path, fmt):
    return tmp_path / {"spz": "x.spz", "zarr": "x.zarr", "h5ad": "x.h5ad",
                       "anndata-zarr": "ad.zarr"}[fmt]


def _replace(path, fmt, A):
    time.sleep(0.01)  # a new mtime even on coarse clocks
    _write(A, path, fmt, overwrite=True)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("new", ["empty", "other", "same data"])
def test_a_file_replaced_during_a_cache_none_fit(tmp_path, fmt, new):
    p = _write(_matrix(), _path(tmp_path, fmt), fmt)
    replacement = {"empty": sp.csc_matrix((80, 300), dtype=np.float32),
                   "other": _matrix(seed=2), "same data": _matrix()}[new]
    seen = []

    def on_iteration(it, mse, rel):
        seen.append(mse)
        if it == 2:
            _replace(p, fmt, replacement)

    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(SourceChangedError, match="changed since it was opened") as ei:
        nmf(p, k=3, maxit=8, seed=1, cache="none", on_iteration=on_iteration)
    assert str(p.resolve()) in str(ei.value) or p.name in str(ei.value)
    assert len(seen) == 2 and all(m > 0 for m in seen)
    assert isinstance(ei.value, MatrixFormatError)


@pytest.mark.parametrize("fmt", FORMATS)
def test_blocks_of_an_opened_matrix_check_their_source(tmp_path, fmt):
    p = _write(_matrix(), _path(tmp_path, fmt), fmt)
    x = open_matrix(p, block_nnz=500)
    assert x.numblocks[1] > 1
    with dask.config.set(scheduler="synchronous"):
        x.blocks[0, 0].compute()
        _replace(p, fmt, _matrix(seed=3))
        with pytest.raises(SourceChangedError):
            x.blocks[0, 1].compute()
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        with pytest.raises(SourceChangedError, match="removed"):
            x.blocks[0, 0].compute()
    open_matrix(_write(_matrix(), p, fmt)).compute()  # reopened: fine


def test_an_open_spz_rewritten_in_place(tmp_path):
    p = tmp_path / "x.spz"
    write_spz(_matrix(), p, chunk_cols=40)
    with SpzFile(p) as f:
        f.read_chunk(0)
        with open(p, "r+b") as g:  # same inode: the open descriptor sees the new bytes
            g.seek(0, os.SEEK_END)
            g.write(b"\0")
        with pytest.raises(SpzFormatError, match="changed since it was opened") as ei:
            f.read_chunk(1)
        assert isinstance(ei.value, SourceChangedError) and str(p) in str(ei.value)


def test_a_pickled_spz_unpickled_after_a_change(tmp_path):
    p = tmp_path / "x.spz"
    write_spz(_matrix(), p, chunk_cols=40)
    with SpzFile(p) as f:
        blob = pickle.dumps(f)
    pickle.loads(blob).close()  # unchanged: fine
    time.sleep(0.01)
    write_spz(_matrix(seed=5), p, chunk_cols=40, overwrite=True)
    with pytest.raises(SourceChangedError, match="x.spz"):
        pickle.loads(blob)


def test_stamp_sees_size_mtime_and_content(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"a" * 10000)
    s = stamp(p)
    check_stamp(s)
    p.write_bytes(b"b" + b"a" * 9999)  # same size
    os.utime(p, ns=(s.mtime_ns, s.mtime_ns))  # and the same mtime: the head's CRC differs
    with pytest.raises(SourceChangedError, match="content"):
        check_stamp(s)
    os.utime(p, ns=(s.mtime_ns + 10**9, s.mtime_ns + 10**9))
    with pytest.raises(SourceChangedError, match="modification time"):
        check_stamp(s)


def test_touching_a_store_metadata_is_seen(tmp_path):
    p = write_matrix(_matrix(), tmp_path / "x.zarr")
    s = stamp(p)
    meta = p / "indices" / "zarr.json"
    meta.write_text(meta.read_text().replace('"shape"', ' "shape"'))
    with pytest.raises(SourceChangedError):
        check_stamp(s)
