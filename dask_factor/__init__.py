"""dask_factor: out-of-core NMF, SVD and factorization graphs on Dask.

>>> from dask_factor import datasets, nmf
>>> A, rows, cols = datasets.load("hawaiibirds")
>>> model = nmf(A, k=8, seed=42)
>>> model.W.shape, model.H.shape
((183, 8), (8, 1183))
"""

from __future__ import annotations

from . import datasets
from .estimator import NMF
from .nmf import NMFResult, nmf

__version__ = "0.1.0"

__all__ = ["nmf", "NMFResult", "NMF", "datasets", "__version__"]
