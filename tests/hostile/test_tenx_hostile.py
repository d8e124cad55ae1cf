"""Issue 17 for the 10x Cell Ranger ``.h5`` reader: damage, bombs and changes under a fit.

The same rules as the other formats: a damaged file gives a ``MatrixFormatError`` naming it,
a declared shape or pointer beyond the size limits a ``SizeLimitError``, and a file replaced
after it was opened a ``SourceChangedError`` at the next block read.
"""

from __future__ import annotations

import time

import dask
import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor.io import MatrixFormatError, matrix_info, open_matrix, read_metadata
from dask_factor.io.errors import SizeLimitError, SourceChangedError

h5py = pytest.importorskip("h5py")


def _write(path, A):
    A = sp.csc_matrix(A)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"] = A.data.astype(np.int32)
        g["indices"] = A.indices.astype(np.int64)
        g["indptr"] = A.indptr.astype(np.int64)
        g["shape"] = np.array(A.shape, dtype=np.int64)
        g["barcodes"] = np.array([f"B{i}" for i in range(A.shape[1])], dtype="S")
        fg = g.create_group("features")
        fg["id"] = np.array([f"G{i}" for i in range(A.shape[0])], dtype="S")
        fg["name"] = np.array([f"g{i}" for i in range(A.shape[0])], dtype="S")
        fg["feature_type"] = np.array(["Gene Expression"] * A.shape[0], dtype="S")
        f.attrs["filetype"] = "matrix"
    return path


def _A(seed=0):
    A = sp.random(40, 90, density=0.2, format="csc", random_state=seed)
    A.data = np.ceil(A.data * 9)
    return A


def _set(name, value):
    def edit(f):
        del f[name]
        f[name] = value
    return edit


DAMAGE = {
    "shape huge": (_set("matrix/shape", np.array([40, 2**40])), SizeLimitError),
    "shape not a pair": (_set("matrix/shape", np.array([40])), MatrixFormatError),
    "indptr one short": (_set("matrix/indptr", np.arange(90)), MatrixFormatError),
    "indptr decreasing": (lambda f: f["matrix/indptr"].__setitem__(5, 10**6), MatrixFormatError),
    "indices deleted": (lambda f: f["matrix"].__delitem__("indices"), MatrixFormatError),
    "data shorter": (_set("matrix/data", np.ones(3, np.int32)), MatrixFormatError),
}


@pytest.mark.parametrize("name", list(DAMAGE))
@pytest.mark.parametrize("entry", ["open_matrix", "matrix_info", "read_metadata"])
def test_damaged_10x_h5(tmp_path, name, entry):
    p = _write(tmp_path / "x.h5", _A())
    edit, err = DAMAGE[name]
    with h5py.File(p, "r+") as f:
        edit(f)
    call = {"open_matrix": lambda: open_matrix(p).compute(scheduler="synchronous"),
            "matrix_info": lambda: matrix_info(p), "read_metadata": lambda: read_metadata(p)}
    try:
        call[entry]()
    except (MatrixFormatError, ValueError, OSError) as e:
        assert type(e) not in (KeyError, IndexError), repr(e)
        assert "x.h5" in str(e), str(e)
        if entry == "open_matrix":
            assert isinstance(e, err), repr(e)
        return
    assert entry != "open_matrix", f"{name}: read without an error"


def test_a_10x_h5_replaced_under_its_reader(tmp_path):
    p = _write(tmp_path / "x.h5", _A())
    x = open_matrix(p, block_nnz=200)
    assert x.numblocks[1] > 1
    with dask.config.set(scheduler="synchronous"):
        x.blocks[0, 0].compute()
        time.sleep(0.01)
        _write(p, _A(seed=1))
        with pytest.raises(SourceChangedError, match="x.h5"):
            x.blocks[0, 1].compute()
