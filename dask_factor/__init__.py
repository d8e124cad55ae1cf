"""dask_factor: out-of-core NMF, SVD and factorization graphs on Dask.

>>> from dask_factor import datasets, nmf
>>> A, rows, cols = datasets.load("hawaiibirds")
>>> model = nmf(A, k=8, seed=42)
>>> model.W.shape, model.H.shape
((183, 8), (8, 1183))
"""

from __future__ import annotations

from . import datasets, plot, tl
from .consensus import ConsensusResult, coclustering, consensus_nmf
from .distribution import DistributionChoice, auto_distribution
from .divisive import Bipartition, Cluster, DClustResult, bipartition, dclust, purity
from .estimator import NMF
from .graph import (
    FactorNet,
    GraphResult,
    LayerResult,
    compute_target,
    cross_validate_graph,
    factor_add,
    factor_concat,
    factor_condition,
    factor_config,
    factor_input,
    factor_net,
    factor_shared,
    fit,
    load_result,
    nmf_layer,
    refine,
    separability,
    svd_layer,
)
from .graph import H as H
from .graph import W as W
from .nmf import NMFResult, nmf
from .programs import ConsensusPrograms, KSelectionResult, consensus_programs, k_selection
from .svd import SVDResult, pca, svd

__version__ = "0.1.0"

__all__ = [
    "nmf", "NMFResult", "NMF", "svd", "pca", "SVDResult", "datasets", "plot", "tl", "__version__",
    "factor_input", "nmf_layer", "svd_layer", "factor_shared", "factor_concat", "factor_add",
    "factor_condition", "W", "H", "factor_config", "factor_net", "fit", "cross_validate_graph",
    "compute_target", "refine", "separability", "load_result", "FactorNet", "GraphResult",
    "LayerResult", "consensus_nmf", "consensus_programs", "k_selection", "coclustering",
    "ConsensusResult", "ConsensusPrograms", "KSelectionResult", "bipartition", "dclust", "purity",
    "Bipartition", "Cluster", "DClustResult", "auto_distribution", "DistributionChoice",
]
