"""Factorization graphs: RcppML's ``factor_net`` API on Dask.

Wire inputs, layers and merge nodes into a graph, compile it with :func:`factor_net` and
:func:`fit` it; layers come back by name.

>>> from dask_factor import datasets
>>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
>>> A, rows, cols = datasets.load("aml")
>>> inp = factor_input(A, name="methylation")
>>> fine = nmf_layer(inp, 10, name="fine")
>>> coarse = nmf_layer(fine, 3, name="coarse")
>>> res = fit(factor_net(inp, coarse, factor_config(maxit=20, seed=42)))
>>> res["fine"].H.shape, res["coarse"].W.shape, res["coarse"].H.shape
((10, 135), (135, 3), (3, 10))

Blocks: :func:`factor_input`, :func:`nmf_layer`, :func:`svd_layer`, :func:`factor_shared`,
:func:`factor_concat`, :func:`factor_add`, :func:`factor_condition`; per-factor options
:func:`W`, :func:`H`; settings :func:`factor_config`; :func:`factor_net`, :func:`fit`,
:func:`cross_validate_graph`; targets :func:`compute_target`, :func:`refine`,
:func:`separability`; results :class:`GraphResult` (``save``/``load``, ``to_anndata``,
``predict``) and :class:`LayerResult`.
"""

from __future__ import annotations

from .compile import FactorNet, factor_net
from .config import FactorNetConfig, FactorOptions, H, W, factor_config
from .cv import cross_validate_graph
from .fit import fit
from .merge import (
    FactorAdd,
    FactorConcat,
    FactorCondition,
    FactorShared,
    factor_add,
    factor_concat,
    factor_condition,
    factor_shared,
)
from .nodes import FactorInput, NMFLayer, SVDLayer, factor_input, nmf_layer, svd_layer
from .result import GraphResult, LayerResult
from .target import compute_target, refine, separability

load_result = GraphResult.load

__all__ = [
    "factor_input", "nmf_layer", "svd_layer", "factor_shared", "factor_concat", "factor_add",
    "factor_condition", "W", "H", "factor_config", "factor_net", "fit", "cross_validate_graph",
    "compute_target", "refine", "separability", "load_result",
    "GraphResult", "LayerResult", "FactorNet", "FactorNetConfig", "FactorOptions",
    "FactorInput", "NMFLayer", "SVDLayer", "FactorShared", "FactorConcat", "FactorAdd",
    "FactorCondition",
]
