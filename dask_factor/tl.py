"""scanpy-style tools: factorize an AnnData and store the result in it.

``tl.nmf``, ``tl.pca`` and ``tl.svd`` take an ``AnnData`` (cells × genes; in memory, backed with
``X`` on disk, or with dask arrays as matrices), read ``adata.X`` or ``adata.layers[layer]`` as
genes × cells without densifying it, and write the embedding to ``obsm``, the loadings to
``varm`` and the rest to ``uns``, as scanpy's tools do — so ``sc.pp.neighbors(use_rep="X_nmf")``,
``sc.tl.umap`` and ``sc.pl.embedding(basis="nmf")`` use them directly. Like scanpy they return
None, or the updated copy with ``copy=True``. anndata is the ``[anndata]`` extra.

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

from typing import Any

from ._optional import require

__all__ = ["nmf", "pca", "svd"]

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
    from .nmf import nmf as _nmf

    _check_adata(adata, layer, "nmf")
    if not isinstance(n_components, int) or isinstance(n_components, bool):
        raise TypeError(f"n_components: expected an integer >= 1 (tl.nmf fits one rank), got "
                        f"{n_components!r}")
    result = _nmf(_source(adata, layer), n_components, **kwargs)
    result.settings["layer"] = layer
    result.feature_names = [str(v) for v in adata.var_names]
    result.sample_names = [str(v) for v in adata.obs_names]
    target = _target(adata, copy)
    result.to_anndata(target, key=key_added)
    return target if copy else None


def _svd_tool(adata, n_comps, layer, key_added, copy, center, kwargs, where):
    from .svd import svd as _svd

    _check_adata(adata, layer, where)
    if n_comps is None:
        n_comps = min(50, min(adata.shape) - 1)
    res = _svd(_source(adata, layer), n_comps, center=center, **kwargs)
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
