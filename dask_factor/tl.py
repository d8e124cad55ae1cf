"""scanpy-style tools: factorize an AnnData and store the result in it.

``tl.nmf``, ``tl.pca`` and ``tl.svd`` take an ``AnnData`` (cells × genes; in memory, backed with
``X`` on disk, or with dask arrays as matrices), read ``adata.X`` or ``adata.layers[layer]`` as
genes × cells without densifying it, and write the embedding to ``obsm``, the loadings to
``varm`` and the rest to ``uns``, as scanpy's tools do — so ``sc.pp.neighbors(use_rep="X_nmf")``,
``sc.tl.umap`` and ``sc.pl.embedding(basis="nmf")`` use them directly. Like scanpy they return
None, or the updated copy with ``copy=True``. anndata is the ``[anndata]`` extra.

``tl.factor_graph`` fits a factorization graph (:mod:`dask_factor.graph`) whose inputs are
AnnData objects with the same cells — one for a deep NMF, several for multi-modal data with
shared factors — and writes the chosen layer into each of them.

Examples
--------
>>> import anndata as ad
>>> from dask_factor import datasets, tl
>>> adata = ad.AnnData(datasets.load("hawaiibirds").matrix.T.tocsr())   # cells × species
>>> tl.nmf(adata, 5, seed=1, maxit=20)
>>> adata.obsm["X_nmf"].shape, adata.varm["NMF_W"].shape, sorted(adata.uns["nmf"])[:3]
((1183, 5), (183, 5), ['converged', 'd', 'iterations'])
>>> tl.pca(adata, 10)
>>> adata.obsm["X_pca"].shape, adata.uns["pca"]["variance_ratio"].shape
((1183, 10), (10,))
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._optional import require

__all__ = ["nmf", "pca", "svd", "factor_graph"]

def _check_adata(adata, layer: str | None, where: str) -> None:
    require("anndata", f"dask_factor.tl.{where}")
    if type(adata).__name__ != "AnnData" or not hasattr(adata, "obsm"):
        raise TypeError(f"{where}: expected an anndata.AnnData (cells × genes), got "
                        f"{type(adata).__name__}; call dask_factor.{where}(A, k) on a matrix")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer={layer!r}: not in adata.layers (has {list(adata.layers)})")


def _source(adata, layer: str | None):
    """Genes × cells, lazily: a dask matrix stays a dask matrix, a backed file is read by tasks."""
    X = None
    if not adata.isbacked:
        X = adata.layers[layer] if layer is not None else adata.X
    if X is not None and type(X).__module__.startswith("dask"):
        return X.T
    if layer is None and not adata.isbacked:
        return adata
    from .io import open_matrix

    return open_matrix(adata, layer=layer)


def _target(adata, copy: bool):
    if not copy:
        return adata
    return adata.to_memory() if adata.isbacked else adata.copy()


def nmf(adata, n_components: int, *, layer: str | None = None, key_added: str = "nmf",
        copy: bool = False, **kwargs: Any):
    """NMF of an AnnData, scanpy-style: ``Xᵀ ≈ W diag(d) H`` on ``adata.X`` or a layer.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells × genes, non-negative (counts or normalised values). In memory, backed, or with
        a dask ``X``/layer (kept lazy).
    n_components : int
        Rank ``k``.
    layer : str, optional
        Factorize ``adata.layers[layer]`` instead of ``adata.X``.
    key_added : str, default "nmf"
        ``obsm[f"X_{key_added}"]`` = ``Hᵀ`` (cells × k), ``varm[f"{KEY_ADDED}_W"]`` = ``W``
        (genes × k), ``uns[key_added]`` = ``{"d", "loss" (MSE history), "params", "iterations",
        "converged", "mse"}``; ``params`` holds the settings used (seed, tol, L1, layer, ...).
    copy : bool, default False
        Return an updated copy instead of updating ``adata``.
    **kwargs
        Passed to :func:`dask_factor.nmf` (``seed``, ``maxit``, ``tol``, ``L1``, ``client``, ...).

    Returns
    -------
    None, or the updated copy of ``adata`` when ``copy``.

    Examples
    --------
    >>> import anndata as ad
    >>> from dask_factor import datasets, tl
    >>> adata = ad.AnnData(datasets.load("hawaiibirds").matrix.T.tocsr())
    >>> out = tl.nmf(adata, 4, key_added="birds", copy=True, seed=1, maxit=10)
    >>> out.obsm["X_birds"].shape, "X_birds" in adata.obsm
    ((1183, 4), False)
    """
    from .nmf import nmf as fit_nmf

    _check_adata(adata, layer, "nmf")
    if not isinstance(n_components, int) or isinstance(n_components, bool):
        raise TypeError(f"n_components: expected an integer >= 1 (tl.nmf fits one rank), got "
                        f"{n_components!r}")
    result = fit_nmf(_source(adata, layer), n_components, **kwargs)
    result.settings["layer"] = layer
    result.feature_names = [str(v) for v in adata.var_names]
    result.sample_names = [str(v) for v in adata.obs_names]
    target = _target(adata, copy)
    result.to_anndata(target, key=key_added)
    return target if copy else None


def _svd_tool(adata, n_comps, layer, key_added, copy, center, kwargs, where):
    from .svd import svd as fit_svd

    _check_adata(adata, layer, where)
    if n_comps is None:
        n_comps = min(50, min(adata.shape) - 1)
    res = fit_svd(_source(adata, layer), n_comps, center=center, **kwargs)
    res.settings["layer"] = layer
    target = _target(adata, copy)
    res.to_anndata(target, key=key_added)
    return target if copy else None


def pca(adata, n_comps: int | None = None, *, layer: str | None = None, key_added: str = "pca",
        copy: bool = False, scale: bool = False, **kwargs: Any):
    """PCA of an AnnData, scanpy-style (``sc.pp.pca``'s keys), without densifying X.

    Parameters
    ----------
    adata : anndata.AnnData
    n_comps : int, optional
        Components; default ``min(50, min(adata.shape) - 1)`` (scanpy's).
    layer : str, optional
        Use ``adata.layers[layer]``.
    key_added : str, default "pca"
        ``obsm["X_pca"]`` (scores), ``varm["PCs"]`` (loadings; ``varm[KEY + "s"]`` for another
        key), ``uns["pca"]`` (``variance``, ``variance_ratio``, ``singular_values``, ``params``).
    copy : bool, default False
    scale : bool, default False
        Correlation PCA (each gene scaled to unit variance, implicitly).
    **kwargs
        Passed to :func:`dask_factor.svd` (``method``, ``tol``, ``seed``, ``client``, ...).

    Returns
    -------
    None, or the updated copy when ``copy``.

    Examples
    --------
    >>> import anndata as ad
    >>> from dask_factor import datasets, tl
    >>> adata = ad.AnnData(datasets.load("hawaiibirds").matrix.T.tocsr())
    >>> tl.pca(adata, 5, key_added="birds")
    >>> adata.obsm["X_birds"].shape, adata.varm["BIRDSs"].shape
    ((1183, 5), (183, 5))
    """
    if scale:
        kwargs["scale"] = True
    return _svd_tool(adata, n_comps, layer, key_added, copy, True, kwargs, "pca")


def svd(adata, n_components: int = 10, *, layer: str | None = None, key_added: str = "svd",
        copy: bool = False, **kwargs: Any):
    """Truncated (uncentred) SVD of an AnnData, scanpy-style.

    Parameters
    ----------
    adata : anndata.AnnData
    n_components : int, default 10
    layer : str, optional
    key_added : str, default "svd"
        ``obsm["X_svd"]`` = ``V diag(d)``, ``varm["SVDs"]`` = ``U``, ``uns["svd"]``.
    copy : bool, default False
    **kwargs
        Passed to :func:`dask_factor.svd`.

    Returns
    -------
    None, or the updated copy when ``copy``.

    Examples
    --------
    >>> import anndata as ad
    >>> from dask_factor import datasets, tl
    >>> adata = ad.AnnData(datasets.load("hawaiibirds").matrix.T.tocsr())
    >>> tl.svd(adata, 3)
    >>> adata.obsm["X_svd"].shape, adata.varm["SVDs"].shape
    ((1183, 3), (183, 3))
    """
    return _svd_tool(adata, n_components, layer, key_added, copy, False, kwargs, "svd")


# --------------------------------------------------------------------------- factor graphs


def _graph_inputs(adata, layer) -> dict[str, tuple[Any, str | None]]:
    """``{input name: (AnnData, layer)}``, checked: AnnData objects with the same cells."""
    if isinstance(adata, Mapping):
        if not adata:
            raise ValueError("adata: expected an AnnData or a non-empty dict of input name → "
                             "AnnData, got an empty dict")
        items = dict(adata)
        for name in items:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"adata: input names must be non-empty strings without '/', "
                                 f"got {name!r}")
    else:
        items = {layer if isinstance(layer, str) else "X": adata}
        if isinstance(layer, Mapping):
            raise TypeError("layer: a dict of layers needs adata as a dict of input name → "
                            "AnnData; for one AnnData pass layer='name'")
        layer = {next(iter(items)): layer}
    if layer is None or isinstance(layer, str):
        layers = {name: layer for name in items}
    elif isinstance(layer, Mapping):
        unknown = [k for k in layer if k not in items]
        if unknown:
            raise KeyError(f"layer: {unknown} are not inputs (inputs: {list(items)})")
        layers = {name: layer.get(name) for name in items}
    else:
        raise TypeError(f"layer: expected None, a layer name or a dict of input name → layer "
                        f"name, got {type(layer).__name__}")
    require("anndata", "dask_factor.tl.factor_graph")
    out = {}
    first = None
    for name, a in items.items():
        what = f"adata[{name!r}]" if isinstance(adata, Mapping) else "adata"
        if type(a).__name__ != "AnnData" or not hasattr(a, "obsm"):
            raise TypeError(f"{what}: expected an anndata.AnnData (cells × genes), got "
                            f"{type(a).__name__}; graph inputs from matrices: "
                            f"dask_factor.factor_input")
        if layers[name] is not None and layers[name] not in a.layers:
            raise KeyError(f"layer={layers[name]!r}: not in {what}.layers (has "
                           f"{list(a.layers)})")
        if first is None:
            first = (name, a)
        elif a.n_obs != first[1].n_obs:
            raise ValueError(f"adata[{name!r}]: {a.n_obs} cells, but adata[{first[0]!r}] has "
                             f"{first[1].n_obs}; the inputs of a graph share the cells")
        elif not np.array_equal(np.asarray(a.obs_names), np.asarray(first[1].obs_names)):
            i = int(np.flatnonzero(np.asarray(a.obs_names) != np.asarray(first[1].obs_names))[0])
            raise ValueError(f"adata[{name!r}].obs_names differ from adata[{first[0]!r}]'s "
                             f"(position {i}: {a.obs_names[i]!r} vs {first[1].obs_names[i]!r});"
                             f" order both the same way, e.g. adata[{name!r}][common_cells]")
        out[name] = (a, layers[name])
    return out


def _write_graph_layer(target, result, name: str, input_name: str, src: int, layer,
                       key_added: str) -> None:
    """Layer ``name`` of ``result`` into the AnnData of graph input ``src`` (tl.nmf's keys)."""
    from .engine.plan import InputPart
    from .graph.store import w_blocks
    from .io.anndata_io import sanitize_uns

    lr = result[name]
    blocks = w_blocks(result, name)
    if lr.embedding:  # fed by layers: W is the per-sample embedding, H connects to upstream
        embedding = np.asarray(lr.W)
    else:
        embedding = np.asarray(lr.H).T
    target.obsm[f"X_{key_added}"] = np.ascontiguousarray(embedding)
    varm_key = f"{key_added.upper()}_W"
    others = {}
    for part, block in blocks:
        if isinstance(part, InputPart) and part.source == src:
            target.varm[varm_key] = np.asarray(block)
        else:
            others[part.name] = np.asarray(block)
    if not any(isinstance(p, InputPart) and p.source == src for p, _ in blocks):
        target.varm.pop(varm_key, None)  # a stale W of an earlier call would not match
    params = {k: v for k, v in result.config.items() if v is not None}
    params.update(seed=result.settings.get("seed"), layer=layer, factor_layer=name,
                  input=input_name, inputs=list(result.input_names),
                  graph_layers=list(result.layers))
    uns = {"d": np.asarray(lr.d), "loss": np.asarray(lr.loss_history, dtype=float),
           "graph_loss": np.asarray(result.loss_history, dtype=float), "params": params,
           "iterations": int(lr.iterations), "converged": bool(lr.converged),
           "mse": float(lr.mse), "input": lr.input}
    if lr.embedding:
        uns["H"] = np.asarray(lr.H)
    if others:
        uns["W"] = others
    target.uns[key_added] = sanitize_uns(uns)


def factor_graph(adata, graph: int | Callable[..., Any], *,
                 layer: str | Mapping[str, str | None] | None = None,
                 factor_layer: str | None = None, key_added: str = "factor_net",
                 copy: bool = False, config=None, client=None, progress: bool | None = None,
                 **config_kwargs: Any):
    """Fit a factorization graph on AnnData inputs with the same cells, scanpy-style.

    Each AnnData (cells × genes; in memory, backed, or with dask matrices — read lazily) becomes
    a graph input (its ``X`` or ``layers[layer]``, as genes × cells); ``graph`` wires the
    inputs into layers (:mod:`dask_factor.graph`); the fit is :func:`dask_factor.graph.fit`.
    One layer's result — the graph's output layer unless ``factor_layer`` names another — is
    written into every AnnData, with ``tl.nmf``'s keys:

    * ``obsm[f"X_{key_added}"]`` (cells × k): the layer's sample embedding (``Hᵀ``; ``W`` for a
      layer fed by other layers), the same in every AnnData;
    * ``varm[f"{KEY_ADDED}_W"]`` (genes × k): the rows of the layer's W that load that AnnData's
      genes (for ``factor_shared``, each modality gets its own block); absent when the layer does
      not read that input;
    * ``uns[key_added]``: ``d``, ``loss`` (the layer's MSE history), ``graph_loss`` (the
      whole graph's), ``params`` (the config, seed, layer, factor_layer, input names),
      ``iterations``, ``converged``, ``mse``, ``input``; ``H`` (k × k_up) of a layer fed by
      layers, ``W`` blocks of other parts (a condition's covariates, upstream layers).

    Parameters
    ----------
    adata : anndata.AnnData, or dict of str to anndata.AnnData
        One AnnData, or several keyed by input name (e.g. ``{"rna": rna, "adt": adt}``) with
        the same ``obs_names`` in the same order (the cells are the graph's samples).
    graph : int or callable
        An int ``k``: one NMF layer of rank k on the input, or on ``factor_shared`` of all the
        inputs (shared factors across modalities), named ``key_added``. A callable receives
        the graph inputs (:func:`~dask_factor.graph.factor_input` nodes, in ``adata``'s order)
        and returns the output layer, e.g.
        ``lambda x: nmf_layer(nmf_layer(x, 10, name="fine"), 3, name="coarse")``.
    layer : str or dict of str to str, optional
        Factorize ``adata.layers[layer]`` instead of ``X``; a dict gives it per input.
    factor_layer : str, optional
        The graph layer written into the AnnData (default: the output layer).
    key_added : str, default "factor_net"
    copy : bool, default False
        Return updated copies (one AnnData, or a dict like ``adata``) instead of updating.
    config : FactorNetConfig, optional
        From :func:`~dask_factor.graph.factor_config`; or pass its arguments as keywords.
    client : distributed.Client, optional
    progress : bool, optional
        Show a progress bar (default: ``config.verbose``).
    **config_kwargs
        :func:`~dask_factor.graph.factor_config` arguments (``seed``, ``maxit``, ``tol``, ...).

    Returns
    -------
    None, or the updated copy (or dict of copies) when ``copy``.

    Raises
    ------
    TypeError, ValueError, KeyError
        Before any work: not AnnData, different cells, a missing layer, an unknown
        ``factor_layer``, a bad graph (see :func:`~dask_factor.graph.factor_net`).

    Examples
    --------
    Two modalities of the same cells, shared factors:

    >>> import anndata as ad, numpy as np
    >>> from dask_factor import datasets, tl
    >>> A, birds, cells = datasets.load("hawaiibirds")          # species × grid cells
    >>> species = ad.AnnData(A.T.tocsr(), obs=cells)
    >>> geo = ad.AnnData(np.abs(cells[["lat", "lng"]].to_numpy()), obs=cells)
    >>> tl.factor_graph({"species": species, "geo": geo}, 4, seed=1, maxit=10)
    >>> species.obsm["X_factor_net"].shape, species.varm["FACTOR_NET_W"].shape
    ((1183, 4), (183, 4))
    >>> geo.varm["FACTOR_NET_W"].shape, bool((geo.obsm["X_factor_net"] ==
    ...                                        species.obsm["X_factor_net"]).all())
    ((2, 4), True)

    A deep graph on one AnnData, the coarse layer stored under ``"deep"``:

    >>> from dask_factor.graph import nmf_layer
    >>> out = tl.factor_graph(species, lambda x: nmf_layer(nmf_layer(x, 6, name="fine"), 2,
    ...                       name="coarse"), key_added="deep", copy=True, seed=1, maxit=5)
    >>> out.obsm["X_deep"].shape, out.uns["deep"]["H"].shape, "DEEP_W" in out.varm
    ((1183, 2), (2, 6), False)
    """
    from .graph import FactorNetConfig, factor_config, factor_input, factor_net, fit
    from .graph.merge import factor_shared
    from .graph.nodes import LayerNode, nmf_layer

    inputs = _graph_inputs(adata, layer)
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(f"key_added: expected a non-empty string without '/', got "
                         f"{key_added!r}")
    if not isinstance(copy, bool):
        raise TypeError(f"copy: expected True or False, got {copy!r}")
    if config is not None and config_kwargs:
        raise TypeError(f"config: pass either config=factor_config(...) or its arguments "
                        f"({', '.join(config_kwargs)}), not both")
    if config is None:
        config = factor_config(**config_kwargs)
    elif not isinstance(config, FactorNetConfig):
        raise TypeError(f"config: expected a factor_config(), got {type(config).__name__}")
    nodes = [factor_input(_source(a, lay), name=name) for name, (a, lay) in inputs.items()]
    rank = isinstance(graph, numbers.Integral) and not isinstance(graph, (bool, np.bool_))
    if not (rank or callable(graph)):
        raise TypeError(f"graph: expected a rank (int) or a function of the inputs returning "
                        f"the output layer, got {type(graph).__name__}")
    if rank:  # numpy integers too, as tl.nmf's n_components
        src = nodes[0] if len(nodes) == 1 else factor_shared(*nodes)
        output = nmf_layer(src, int(graph), name=key_added)
    else:
        output = graph(*nodes)
        if not isinstance(output, LayerNode):
            raise TypeError(f"graph: the function must return the output layer (nmf_layer or "
                            f"svd_layer), got {type(output).__name__}")
    net = factor_net(nodes, output, config)
    name = factor_layer if factor_layer is not None else net.names[id(net.output)]
    if name not in net.layer_names:
        raise KeyError(f"factor_layer={name!r}: not a layer of the graph (layers: "
                       f"{net.layer_names})")
    result = fit(net, client=client, progress=progress)
    targets = {}
    for src, (input_name, (a, lay)) in enumerate(inputs.items()):
        target = _target(a, copy)
        _write_graph_layer(target, result, name, input_name, src, lay, key_added)
        targets[input_name] = target
    if not copy:
        return None
    return targets if isinstance(adata, Mapping) else next(iter(targets.values()))
