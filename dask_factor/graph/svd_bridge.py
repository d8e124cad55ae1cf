"""A graph of one ``svd_layer`` on one input: ``svd()`` itself (``dask_factor.svd``).

An svd_layer is a real truncated SVD with implicit centring/scaling (docs/decisions.md), not
RcppML's unconstrained ALS. Alone on one input it is exactly ``svd()`` of that input; anywhere
else in a graph it runs on the graph engine (:mod:`dask_factor.engine.svd_layer`). Constrained
methods and penalties raise ``NotImplementedError`` naming what is missing, before any work.
"""

from __future__ import annotations

import numpy as np

from ..engine.plan import InputPart
from ..engine.svd_layer import KRYLOV_METHODS, SVDSpec
from .result import GraphResult, LayerResult


def runs_on_svd(net) -> bool:
    """Whether the graph is one svd_layer on one input (then it is ``svd()`` of that input)."""
    if len(net.layers) != 1:
        return False
    lp = net.layers[0]
    return (isinstance(lp, SVDSpec) and len(lp.parts) == 1
            and isinstance(lp.parts[0], InputPart))


def fit_svd_layer(net, client, progress: bool = False) -> GraphResult:
    """Fit a graph of one ``svd_layer`` on one input (see :func:`runs_on_svd`)."""
    lp = net.layers[0]
    where = f"svd_layer {lp.name!r}"
    if lp.method not in KRYLOV_METHODS:
        raise NotImplementedError(f"{where}: method={lp.method!r} (constrained SVD) is not "
                                  f"implemented; use 'auto', 'lanczos', 'irlba' or 'randomized'")
    if lp.W.constrained or lp.H.constrained:
        raise NotImplementedError(f"{where}: constrained SVD (L1/L2/nonneg/bounds) is not "
                                  f"implemented; the SVD engine is unconstrained")
    from ..svd import svd  # the public svd(): this layer is exactly svd() of its input

    cfg = net.config
    inp = net.inputs[lp.parts[0].source]
    res = svd(inp.data, lp.k, method=lp.method, center=lp.center, scale=lp.scale,
              seed=cfg.seed, tol=lp.tol, maxit=lp.maxit, chunks=cfg.chunks,
              block_nnz=cfg.block_nnz, client=client, progress=progress)
    m, n = res.U.shape[0], int(res.V_dask.shape[0])
    d = np.asarray(res.d, dtype=np.float64)
    sse = max(float(res.total_sq) - float(np.sum(d * d)), 0.0)
    mse = sse / (float(m) * float(n))
    layer = LayerResult(name=lp.name, kind="svd", W=np.asarray(res.U), d=d,
                        H=np.ascontiguousarray(np.asarray(res.V).T), iterations=res.iterations,
                        converged=res.converged, sse=sse, mse=mse, loss_history=[mse],
                        input=lp.input_label)
    settings = dict(path="svd", seed=cfg.seed, method=res.method, centered=res.centered,
                    scaled=res.scaled,
                    row_means=None if res.row_means is None else np.asarray(res.row_means),
                    row_sds=None if res.row_sds is None else np.asarray(res.row_sds))
    return GraphResult(layers={lp.name: layer}, loss_history=[mse], iterations=res.iterations,
                       warmup=0, converged=res.converged, config=cfg.to_dict(),
                       settings=settings, plan=net.describe(), input_names=net.input_names,
                       runtime=res.runtime, _client=client)
