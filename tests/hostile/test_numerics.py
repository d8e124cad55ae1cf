"""Issue 17, item 3: values the working dtype cannot hold are refused, never fitted to NaN.

1e39 in a float64 input fitted with ``dtype="float32"`` became +Inf in the blocks and a NaN
model; 1e200 with ``dtype="float64"`` overflowed every product.  Both are now a ValueError
naming the value range and what to do; a lazy input holding +Inf with ``mask="NA"`` (where NaN
means missing) is refused like an in-memory one.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from hostile_helpers import base_matrix

from dask_factor.engine.inputs import prepare_input
from dask_factor.io import open_matrix, write_matrix

BIG = 1e39  # > float32's 3.4e38


def _with(value: float, kind: str, tmp_path, n_big: int = 1):
    A = base_matrix().astype(np.float64)
    A.data[5: 5 + n_big] = value
    if kind == "csc":
        return A
    if kind == "csr":
        return sp.csr_matrix(A)
    if kind == "dense":
        return A.toarray()
    if kind == "dask":
        return da.from_array(A.toarray(), chunks=(60, 80))
    if kind == "dask_sparse":
        return da.from_array(A, chunks=(60, 80), asarray=False)
    if kind in ("zarr", "h5ad", "spz"):
        opts = {"value_type": "float64"} if kind == "spz" else {}
        return write_matrix(A, tmp_path / f"a.{kind}", **opts)
    raise ValueError(kind)  # pragma: no cover


KINDS = ["csc", "csr", "dense", "dask", "dask_sparse", "zarr", "h5ad", "spz"]


@pytest.mark.parametrize("kind", KINDS)
def test_float32_overflow_is_refused_with_a_clear_message(kind, tmp_path):
    src = _with(BIG, kind, tmp_path)
    with pytest.raises(ValueError, match=r"values up to \|v\| = 1e\+39 overflow float32") as ei:
        prepare_input(src, name="A", dtype=np.float32)
    assert 'dtype="float64"' in str(ei.value)
    prep = prepare_input(src, name="A", dtype=np.float64)  # float64 holds it
    assert np.isclose(prep.sq_norm, BIG**2, rtol=1e-3)


@pytest.mark.parametrize("kind", ["csc", "dense", "zarr", "h5ad", "spz"])
def test_open_matrix_with_a_float32_dtype_refuses_overflow(kind, tmp_path):
    src = _with(-BIG, kind, tmp_path)
    with pytest.raises(ValueError, match="overflow float32"):
        open_matrix(src, dtype=np.float32).compute(scheduler="sync")


@pytest.mark.parametrize("kind", ["csc", "dense", "dask", "zarr"])
def test_float64_products_that_overflow_are_refused(kind, tmp_path):
    src = _with(1e200, kind, tmp_path)
    with pytest.raises(ValueError, match="sum of their squares overflows float64.*rescale"):
        prepare_input(src, name="A", dtype=np.float64)


@pytest.mark.parametrize("kind, dtype, value, pattern", [
    ("csc", "float32", BIG, "overflow float32"),
    ("zarr", "float32", BIG, "overflow float32"),
    ("dense", "float64", 1e200, "overflows float64"),
])
def test_nmf_refuses_instead_of_returning_nan(kind, dtype, value, pattern, tmp_path):
    from dask_factor import nmf

    with pytest.raises(ValueError, match=pattern):
        nmf(_with(value, kind, tmp_path), k=2, maxit=2, seed=1, dtype=dtype)


def test_largest_float32_values_still_fit(tmp_path):
    src = _with(3.0e38, "zarr", tmp_path)
    prep = prepare_input(src, name="A", dtype=np.float32)
    assert np.isfinite(prep.sq_norm)


@pytest.mark.parametrize("kind", ["dask", "dask_sparse", "csc", "zarr"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_is_not_a_missing_value(kind, value, tmp_path):
    """With NaN allowed (mask="NA"), ±Inf is still refused, lazy or in memory."""
    src = _with(value, kind, tmp_path, n_big=2)
    with pytest.raises(ValueError, match="2 infinite value"):
        prepare_input(src, name="A", dtype=np.float64, allow_nonfinite=True)


def test_nan_stays_a_missing_value(tmp_path):
    prep = prepare_input(_with(np.nan, "dask", tmp_path, n_big=3), name="A", dtype=np.float64,
                         allow_nonfinite=True)
    assert np.isfinite(prep.sq_norm)


def test_nmf_mask_na_refuses_infinity_in_a_dask_input(tmp_path):
    from dask_factor import nmf

    with pytest.raises(ValueError, match="infinite"):
        nmf(_with(np.inf, "dask", tmp_path), k=2, maxit=2, seed=1, mask="NA")
