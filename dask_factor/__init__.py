"""dask_factor: out-of-core NMF, SVD and factorization graphs on Dask."""
from __future__ import annotations

__version__ = "0.1.0"

