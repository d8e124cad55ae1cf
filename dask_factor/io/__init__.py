"""Chunked readers and writers: every source becomes a features × samples dask array.

>>> import scipy.sparse as sp
>>> from dask_factor.io import open_matrix
>>> A = open_matrix(sp.random(100, 1000, density=0.05, format="csc"), block_nnz=1000)
>>> A.shape, A.chunks[0]
((100, 1000), (100,))

Formats (see :func:`formats`): ``.spz`` (RcppML StreamPress v2 sparse / v3 dense), our zarr CSC
layout, AnnData ``.h5ad`` and zarr stores, Matrix Market ``.mtx[.gz]``; plus numpy, scipy.sparse,
dask arrays and ``AnnData`` objects in memory.
"""

from __future__ import annotations

from .anndata_io import write_nmf_to_anndata
from .blocks import BlockStream, atomic_path, iter_column_blocks
from .chunking import (
    DEFAULT_BLOCK_NNZ,
    column_bounds_by_nnz,
    default_block_nnz,
    default_column_bounds,
    uniform_column_bounds,
)
from .errors import MatrixFormatError
from .registry import (
    FormatSpec,
    detect_format,
    formats,
    matrix_info,
    open_matrix,
    open_stream,
    read_metadata,
    register_format,
    write_matrix,
)

__all__ = [
    "DEFAULT_BLOCK_NNZ",
    "BlockStream",
    "FormatSpec",
    "MatrixFormatError",
    "atomic_path",
    "column_bounds_by_nnz",
    "default_block_nnz",
    "default_column_bounds",
    "detect_format",
    "formats",
    "iter_column_blocks",
    "matrix_info",
    "open_matrix",
    "open_stream",
    "read_metadata",
    "register_format",
    "uniform_column_bounds",
    "write_matrix",
    "write_nmf_to_anndata",
]
