"""Bundled datasets: shapes, non-zeros, values and metadata as documented for RcppML's package data
(RcppML's exported statistics, copied here so the suite needs no external data).
Where the shared export is present, the bundled matrices must equal it exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import RCPPML_DATA

from dask_factor import datasets

SHARED = str(RCPPML_DATA)  # optional: the .mtx twins, skipped when absent

# from SUMMARY.csv: shape, non-zeros, min/max, sum, integer-valued
SUMMARY = {
    "aml": dict(shape=(824, 135), nnz=111008, min=0.0, max=0.998730811397736,
                sum=60545.6914633909, integer=False),
    "hawaiibirds": dict(shape=(183, 1183), nnz=30815, min=0.000277392510402219, max=1.0,
                        sum=7476.97708395042, integer=False),
    "pbmc3k": dict(shape=(13714, 2638), nnz=2238732, min=1.0, max=419.0, sum=6254880.0,
                   integer=True),
}


def test_available_lists_the_bundled_datasets():
    assert sorted(datasets.available()) == ["aml", "hawaiibirds", "pbmc3k"]
    assert all(isinstance(v, str) and v for v in datasets.available().values())


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"load: unknown dataset 'golub'.*aml"):
        datasets.load("golub")


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_matrix_summary(request, name):
    ds = request.getfixturevalue(name)
    A, rows, cols = ds  # a named tuple (matrix, rows, cols)
    assert A is ds.matrix and rows is ds.rows and cols is ds.cols
    want = SUMMARY[name]
    assert A.shape == want["shape"]
    assert A.dtype == np.float64
    vals = A.data if sp.issparse(A) else A.ravel()
    stored = vals[vals != 0]
    assert stored.size == want["nnz"]
    assert np.all(vals >= 0)
    lo = vals.min() if not sp.issparse(A) else stored.min()
    assert lo == pytest.approx(want["min"], rel=1e-12)
    assert vals.max() == pytest.approx(want["max"], rel=1e-12)
    assert vals.sum() == pytest.approx(want["sum"], rel=1e-12)
    assert np.all(stored == np.round(stored)) == want["integer"]
    assert len(rows) == A.shape[0] and len(cols) == A.shape[1]


def test_aml(aml):
    A, rows, cols = aml
    assert isinstance(A, np.ndarray)
    counts = cols["category"].value_counts().to_dict()
    assert counts == {"AML (GMP)": 93, "AML (L-MPP)": 12, "AML (MEP)": 15,
                      "Control (GMP)": 5, "Control (L-MPP)": 5, "Control (MEP)": 5}
    assert cols.index[0] == "PAUVGD_Dx" and cols["category"].iloc[0] == "AML (MEP)"
    assert cols.index.is_unique
    assert rows.index[0] == "chr1:847816-848609"


def test_hawaiibirds(hawaiibirds):
    A, rows, cols = hawaiibirds
    assert sp.issparse(A) and A.format == "csc" and A.has_canonical_format
    assert A.nnz == 30815
    assert {"island", "lat", "lng"} <= set(cols.columns)
    assert cols["island"].value_counts().to_dict() == {
        "Hawaii": 593, "Oahu": 229, "Kauai": 183, "Maui": 148, "Molokai": 19, "Lanai": 5,
        "Kahoolawe": 4, "Puuwai": 2}
    first = cols.iloc[0]
    assert (first["island"], first["lat"], first["lng"]) == ("Maui", 20.87, -156.44)
    assert {"species", "status", "type"} <= set(rows.columns)
    assert set(rows["status"]) == {"introduced", "native"}
    assert (rows.iloc[0]["species"], rows.iloc[0]["status"], rows.iloc[0]["type"]) == (
        "Common Myna", "introduced", "perching birds")


def test_pbmc3k(pbmc3k):
    A, rows, cols = pbmc3k
    assert sp.issparse(A) and A.format == "csc" and A.has_canonical_format
    assert A.nnz == 2238732
    assert cols["cell_type"].value_counts().to_dict() == {
        "Naive CD4 T": 697, "Memory CD4 T": 483, "CD14+ Mono": 480, "B": 344, "CD8 T": 271,
        "FCGR3A+ Mono": 162, "NK": 155, "DC": 32, "Platelet": 14}
    assert list(cols["cell_type"].iloc[:2]) == ["Memory CD4 T", "B"]


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="DASK_FACTOR_RCPPML_DATA unset")
@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_bundled_matrix_equals_the_rcppml_export(request, name):
    import scipy.io

    path = os.path.join(SHARED, name, "matrix.mtx.gz")
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    ref = scipy.io.mmread(path)
    A = request.getfixturevalue(name).matrix
    if sp.issparse(ref):
        assert sp.issparse(A)
        assert (sp.csc_matrix(ref) != A).nnz == 0
    else:
        np.testing.assert_array_equal(A, ref)


def test_load_returns_independent_copies(hawaiibirds):
    again = datasets.load("hawaiibirds")
    again.matrix.data[:] = 0
    assert hawaiibirds.matrix.sum() > 0
