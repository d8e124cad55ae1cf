"""Fixtures of the hostile-input tests (the builders are in hostile_helpers.py)."""

from __future__ import annotations

import pytest
from hostile_helpers import base_matrix, clean_anndata_zarr, clean_h5ad, clean_zarr


@pytest.fixture(scope="session")
def clean_files(tmp_path_factory):
    """Undamaged zarr, h5ad and AnnData zarr copies of :func:`base_matrix` (copied per test)."""
    d = tmp_path_factory.mktemp("clean")
    A = base_matrix()
    return {"zarr": clean_zarr(A, d), "h5ad": clean_h5ad(A, d),
            "anndata-zarr": clean_anndata_zarr(A, d)}
