"""Running an ``svd_layer`` on the truncated-SVD engine (``dask_factor.svd``).

An svd_layer is a real truncated SVD with implicit centring/scaling (SPEC-nmf.md §4, decision 3),
not RcppML's unconstrained ALS. Supported: a one-layer graph, an svd_layer on one input, the
unconstrained Krylov/randomized methods. Everything else raises ``NotImplementedError`` naming
what is missing, before any work.
"""

from __future__ import annotations

import importlib

import numpy as np

from .result import GraphResult, LayerResult

_ENGINE_METHODS = ("auto", "lanczos", "irlba", "randomized")


def _svd_api():
    try:
        mod = importlib.import_module("dask_factor.svd")
        return mod.svd
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(
            "svd_layer: needs the truncated-SVD engine (dask_factor.svd / engine.svd, the SVD "
            "issue), which is not available in this installation") from exc


def fit_svd_layer(net, client) -> GraphResult:
    """Fit a one-layer graph whose layer is an ``svd_layer``."""
    lp = next(lp for lp in net.layers if lp.kind == "svd")
    where = f"svd_layer {lp.name!r}"
    if len(net.layers) != 1:
        raise NotImplementedError(
            f"{where}: an svd_layer in a multi-layer graph is not supported (its joint "
            f"block-coordinate schedule is defined for NMF layers); fit it on its own")
    if len(lp.parts) != 1 or lp.parts[0].kind != "data":
        raise NotImplementedError(f"{where}: an svd_layer must read one factor_input directly "
                                  f"(got {lp.input_label!r})")
    node = lp.node
    if node.method not in _ENGINE_METHODS:
        raise NotImplementedError(f"{where}: method={node.method!r} (constrained SVD) is not "
                                  f"implemented; use 'auto', 'lanczos', 'irlba' or 'randomized'")
    constrained = any(s.L1 or s.L2 or s.L21 or s.angular or s.upper_bound or s.nonneg
                      for s in (lp.W, lp.H))
    if constrained:
        raise NotImplementedError(f"{where}: constrained SVD (L1/L2/nonneg/bounds) is not "
                                  f"implemented; the SVD engine is unconstrained")
    svd = _svd_api()
    cfg = net.config
    inp = net.inputs[lp.parts[0].source]
    res = svd(inp.data, lp.k, method=node.method, center=node.center, scale=node.scale,
              seed=cfg.seed, tol=node.tol, maxit=node.maxit, chunks=cfg.chunks,
              block_nnz=cfg.block_nnz, client=client)
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
