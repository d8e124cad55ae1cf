"""``svd()`` and ``pca()``: truncated SVD ``Ã ≈ U diag(d) Vᵀ`` of a chunked matrix on Dask.

The semantics are RcppML's ``svd()``/``pca()`` (docs/decisions.md): A is features × samples, the
optional centring subtracts the row (feature) means and the optional scaling divides by the row
population standard deviations — both implicitly, as rank-one corrections inside the products, so a
sparse A is never densified. Every product is one pass of Dask tasks over the column blocks of A
(the same blocks NMF iterates over), so A may live on disk or on a cluster; see
:mod:`dask_factor.engine.svd` for the algorithms.

Deviations from RcppML, on purpose: results are in float64 by default; signs are fixed (the
largest-magnitude entry of every column of U is positive); ``tol`` is a residual bound
``‖Ãv − σu‖ ≤ tol·σ₁`` with a tight default (1e-8), so the singular vectors — not just the
values — are accurate; penalties, masks, cross-validation and robust fitting (RcppML's deflation
and krylov methods) are not offered here.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from . import checks as V
from ._params import validate_params
from .engine.blocks import as_blocked
from .engine.inputs import open_lazy, prepare_input
from .engine.svd import GramPasses, SVDState, fit_svd, resolve_method, svd_config

__all__ = ["svd", "pca", "SVDResult"]


@dataclass
class SVDResult:
    """A truncated SVD ``Ã ≈ U diag(d) Vᵀ`` of a features × samples matrix.

    ``Ã`` is A, or ``A − μ1ᵀ`` (``centered``), or ``D⁻¹(A − μ1ᵀ)`` (``scaled``), with μ the row
    means and D the row population standard deviations.

    Attributes
    ----------
    U : ndarray of shape (m, k)
        Left singular vectors (features; PCA loadings). Orthonormal columns; the entry of
        largest magnitude in each column is positive (the sign convention).
    d : ndarray of shape (k,)
        Singular values, decreasing.
    V : ndarray of shape (n, k)
        Right singular vectors (samples), orthonormal columns; gathered from the workers on first
        access (``V_dask`` keeps them distributed). ``Ã V = U diag(d)`` and ``Ãᵀ U = V diag(d)``.
    method : str
        The method used (``"lanczos"``, ``"irlba"`` or ``"randomized"``), after ``"auto"``.
    iterations : int
        Krylov block steps (``"lanczos"``/``"irlba"``) or power iterations (``"randomized"``).
    passes : int
        Passes over A in total (statistics, iterations and the final Rayleigh–Ritz pass).
    restarts : int
        Thick restarts of the Krylov basis.
    converged : bool
        Whether every residual reached ``tol`` (Krylov methods stop on it; the randomized method
        has no stopping test and usually reports False).
    residuals : ndarray of shape (k,)
        ``‖Ã v_i − d_i u_i‖ / d_1``, from computed products ``Ã Ãᵀ u`` (those of the Krylov
        passes, or of the last pass), not from the recurrence's estimates.
    variance_ratio : ndarray of shape (k,)
        ``d² / ‖Ã‖²_F``: the share of the total sum of squares (of the total variance, when
        centred) each factor explains.
    explained_variance : ndarray of shape (k,)
        ``d² / (n − 1)``: the variance of the samples along each factor (PCA's eigenvalues).
    total_sq : float
        ``‖Ã‖²_F``.
    row_means, row_sds : ndarray of shape (m,) or None
        μ and D when centring / scaling (RcppML's ``misc$row_means``/``row_sds``).
    centered, scaled : bool
    settings : dict
        Every setting used, with the resolved method and block sizes.
    runtime : float
        Seconds spent in the fit.
    """

    U: np.ndarray
    d: np.ndarray
    V_dask: da.Array
    method: str
    iterations: int
    passes: int
    restarts: int
    converged: bool
    residuals: np.ndarray
    total_sq: float
    row_means: np.ndarray | None
    row_sds: np.ndarray | None
    centered: bool
    scaled: bool
    settings: dict[str, Any]
    runtime: float = 0.0
    _V: np.ndarray | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return int(self.d.size)

    @property
    def V(self) -> np.ndarray:
        if self._V is None:
            if self._client is not None:
                self._V = np.asarray(self._client.compute(self.V_dask).result())
            else:
                self._V = np.asarray(self.V_dask.compute())
        return self._V

    @property
    def variance_ratio(self) -> np.ndarray:
        return self.d ** 2 / self.total_sq if self.total_sq > 0 else np.zeros_like(self.d)

    @property
    def explained_variance(self) -> np.ndarray:
        n = self.V_dask.shape[0]
        return self.d ** 2 / max(n - 1, 1)

    @property
    def scores(self) -> np.ndarray:
        """``V diag(d)`` of shape (n, k): the samples' coordinates (PCA scores, ``X_pca``)."""
        return self.V * self.d

    def __repr__(self) -> str:
        m, k = self.U.shape
        state = "converged" if self.converged else "not converged"
        kind = "scaled" if self.scaled else ("centered" if self.centered else "uncentered")
        return (f"SVDResult(m={m}, n={self.V_dask.shape[0]}, k={k}, method={self.method!r}, "
                f"{kind}, passes={self.passes} ({state}), d[0]={self.d[0]:.6g})")

    def to_anndata(self, adata, *, key: str = "pca", overwrite: bool = True):
        """Store the result in an AnnData the scanpy way (AnnData is cells × genes).

        Writes ``obsm["X_" + key]`` = ``V diag(d)`` (cells × k), ``varm["PCs"]`` = ``U``
        (genes × k) and ``uns[key]`` = ``{"variance", "variance_ratio", "singular_values",
        "params"}``. (For ``key != "pca"`` the loadings go to ``varm[key.upper() + "s"]``.)

        Parameters
        ----------
        adata : anndata.AnnData of shape (n, m)
        key : str, default "pca"
        overwrite : bool, default True
            Replace existing entries; False raises if one exists.

        Returns
        -------
        The AnnData, updated in place.
        """
        n_cells, n_genes = adata.shape
        m, k = self.U.shape
        if (n_cells, n_genes) != (self.V_dask.shape[0], m):
            raise ValueError(f"adata: expected shape (n_cells, n_genes) = "
                             f"({self.V_dask.shape[0]}, {m}) (the factorized matrix, transposed),"
                             f" got {adata.shape}")
        obsm_key = f"X_{key}"
        varm_key = "PCs" if key == "pca" else f"{key.upper()}s"
        if not overwrite:
            for store, name in ((adata.obsm, obsm_key), (adata.varm, varm_key),
                                (adata.uns, key)):
                if name in store:
                    raise ValueError(f"adata: {name!r} exists; pass overwrite=True to replace it")
        adata.obsm[obsm_key] = np.ascontiguousarray(self.scores)
        adata.varm[varm_key] = np.ascontiguousarray(self.U)
        params = {k_: v for k_, v in self.settings.items()
                  if isinstance(v, (bool, int, float, str)) and v is not None}
        adata.uns[key] = {
            "variance": np.asarray(self.explained_variance),
            "variance_ratio": np.asarray(self.variance_ratio),
            "singular_values": np.asarray(self.d),
            "params": params,
        }
        return adata


# --------------------------------------------------------------------------------------------
# helpers


def _v_dask(state: SVDState, dtype=np.float64) -> da.Array:
    k = state.d.size
    if all(isinstance(b, np.ndarray) for b in state.v_blocks):  # local: one graph of values
        name = f"svd-V-{uuid.uuid4().hex[:12]}"
        graph = {(name, i, 0): b for i, b in enumerate(state.v_blocks)}
        chunks = (tuple(int(b.shape[0]) for b in state.v_blocks), (k,))
        return da.Array(graph, name, chunks, dtype=dtype)
    parts = []
    for i, b in enumerate(state.v_blocks):
        n_p = int(state.bounds[i + 1] - state.bounds[i])
        if isinstance(b, np.ndarray):
            parts.append(da.from_array(b, chunks=b.shape))
        else:  # a future on the cluster: V_p stays there until asked for
            parts.append(da.from_delayed(dask.delayed(b), dtype=dtype, shape=(n_p, k)))
    return da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def _is_anndata(x) -> bool:
    return type(x).__name__ == "AnnData" and hasattr(x, "obsm")


def _check_k(k: int, m: int, n: int) -> None:
    if k >= min(m, n):
        raise ValueError(f"k: expected 1 <= k < min(m, n) = {min(m, n)} for a truncated SVD of a "
                         f"{m} × {n} matrix, got {k}")


def _prepare(A, k, *, dtype, chunks, block_nnz, cache, client):
    """Validate A and wrap it as blocks; returns (bm, moments or None, ‖A‖² or None)."""
    A = open_lazy(A, "A")
    if isinstance(A, (list, tuple)):
        A = np.asarray(A)
    shape = getattr(A, "shape", None)
    if shape is not None and len(shape) == 2 and min(int(s) for s in shape) > 0:
        _check_k(k, int(shape[0]), int(shape[1]))
    if not isinstance(A, da.Array):
        with warnings.catch_warnings():
            # negative values are ordinary data for an SVD
            warnings.filterwarnings("ignore", message=r".*negative value", category=UserWarning)
            prep = prepare_input(A, name="A", dtype=dtype, chunks=chunks, block_nnz=block_nnz,
                                 client=client)
        return prep.bm, None, prep.sq_norm
    if A.ndim != 2:
        raise ValueError(f"A: expected a 2-D matrix (features × samples), got shape "
                         f"{tuple(A.shape)}")
    V.check_matrix_dtype("A", A.dtype)
    m, n = (int(s) for s in A.shape)
    if m == 0 or n == 0:
        raise ValueError(f"A: expected a non-empty matrix, got shape ({m}, {n})")
    bm = as_blocked(A, dtype=dtype, chunks=chunks)
    if cache == "memory":
        bm.hold_in_memory(client)
    # one validation pass that also yields the row means/variances centring needs
    moments = GramPasses(bm, client, row_major=False).prepare(True)
    if int(moments[4]):
        raise ValueError(f"A: contains {int(moments[4])} NaN or infinite value(s); expected "
                         f"finite values")
    return bm, moments, float(moments[3])


# --------------------------------------------------------------------------------------------
# public API


def svd(
    A,
    k: int = 10,
    *,
    method: str = "auto",
    center: bool = False,
    scale: bool = False,
    seed: int | None = None,
    tol: float | None = None,
    maxit: int | None = None,
    block_size: int | None = None,
    chunks: int | None = None,
    block_nnz: int | None = None,
    dtype: str | np.dtype = "float64",
    cache: str = "auto",
    client=None,
    progress: bool = False,
    on_pass: Callable[[int, np.ndarray], Any] | None = None,
) -> SVDResult:
    """Truncated SVD ``Ã ≈ U diag(d) Vᵀ`` of a features × samples matrix on Dask.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples (genes × cells): a numpy array, any ``scipy.sparse`` matrix or array,
        a ``dask.array`` of numpy or scipy.sparse chunks (2-D chunking allowed), an ``AnnData``
        (its cells × genes X is read as genes × cells) or a path to a ``.spz``/zarr/``.h5ad``/
        ``.mtx`` file (read inside the tasks, out of core).
    k : int, default 10
        Number of singular triplets, ``1 <= k < min(m, n)``.
    method : {"auto", "lanczos", "irlba", "randomized"}, default "auto"
        ``"lanczos"``: block Lanczos on ``Ã Ãᵀ`` with full reorthogonalisation and thick
        restarts, b vectors per pass (4 for k <= 12, else max(16, k/2); max(16, k) when A is
        read from disk every pass) — accurate to ``tol``. ``"irlba"``: the same restarted block
        Krylov method on a small working basis (``b = max(16, k/2)``, ``4k + b`` columns), for
        large k. ``"randomized"``: a Gaussian range finder with ``maxit`` power iterations
        (default 3, RcppML's) and ``max(10, k/5)`` oversampling — approximate (about 1 % on
        pbmc3k's singular values at k = 10), never checked against ``tol``. ``"auto"`` follows
        RcppML's CPU rule: ``"irlba"`` if ``k >= 64`` or ``min(m, n) < 4k``, else
        ``"lanczos"``; it never picks ``"randomized"``. See
        :func:`dask_factor.engine.svd.svd_config` for the sizes.
    center : bool, default False
        Subtract the row means μ (implicitly: ``Ãᵀu = Aᵀu − (μᵀu)1``, ``Ãv = Av − μ(1ᵀv)``).
    scale : bool, default False
        Divide each row by its population standard deviation (variance floored at 100·ε);
        implies ``center``.
    seed : int, optional
        Seed of the random start block (numpy ``default_rng``). None means 42, so results are
        reproducible by default. The result does not depend on the seed beyond ``tol``.
    tol : float, optional
        Krylov methods stop when every pair has ``‖Ãv − σu‖ <= tol·σ₁`` (default 1e-8); the
        singular values are then accurate to about ``tol²·σ₁²/gap`` and the vectors to
        ``tol·σ₁/gap``. Ignored by ``"randomized"``.
    maxit : int, optional
        Krylov methods: maximum passes over A (default 200); a warning is raised if ``tol`` is
        not met. ``"randomized"``: power iterations (default 3).
    block_size : int, optional
        Vectors per pass of the Krylov methods (overrides the default above).
    chunks : int, optional
        Columns per block (default: blocks of about 400 stored entries per row of A, between
        2 and 8 million, at least 8 blocks; a zarr store keeps the blocks it was written with,
        a ``.spz`` file is read in runs of whole chunks, a dask array keeps its chunks).
    block_nnz : int, optional
        Target stored entries per block for in-memory inputs.
    dtype : {"float64", "float32"}, default "float64"
        Storage dtype of A's blocks; all products accumulate in float64 either way.
    cache : {"auto", "memory", "none"}, default "auto"
        For lazy inputs (dask arrays, files): ``"memory"`` keeps the blocks in (worker) memory
        across passes, ``"none"``/``"auto"`` re-reads them every pass (out of core).
    client : distributed.Client, optional
        Run on this cluster; default: the active client if any, else dask's threads.
    progress : bool, default False
        Show a progress bar with the largest relative residual.
    on_pass : callable(passes, residuals), optional
        Called after every Krylov pass with the current relative residuals (k,).

    Returns
    -------
    SVDResult
        ``U`` (m × k), ``d`` (k,), ``V`` (n × k), ``method``, ``iterations``, ``passes``,
        ``converged``, ``residuals``, ``variance_ratio``, ``explained_variance``, ``row_means``,
        ``row_sds``, ``settings``.

    Raises
    ------
    TypeError, ValueError
        Before any work, for a bad argument (named in the message): k out of range, NaN or
        infinite values, a matrix that is not 2-D, an unknown method.

    Notes
    -----
    Every product is one pass over A: each column-block task computes ``Y_p = Ã_pᵀX`` and
    ``Ã_p Y_p`` for a block X of b feature-space vectors and only m × b partial sums are reduced,
    so A is read once per pass and never gathered; the right singular vectors are formed where
    the blocks live. Same data, seed and chunking give the same result on every scheduler.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.svd import svd
    >>> A = datasets.load("hawaiibirds").matrix
    >>> res = svd(A, 5)
    >>> res.U.shape, res.d.shape, res.V.shape, res.method
    ((183, 5), (5,), (1183, 5), 'lanczos')
    >>> import numpy as np
    >>> bool(np.allclose(res.d, np.linalg.svd(A.toarray(), compute_uv=False)[:5]))
    True
    """
    args = dict(locals())  # the arguments as given, before any other local exists
    del args["A"]
    p = validate_params(args, entry="svd")
    k, maxit, block_size, chunks, dt = (p[name] for name in ("k", "maxit", "block_size",
                                                             "chunks", "dtype"))
    if _is_anndata(A) and not hasattr(A, "X"):
        raise TypeError("A: expected an AnnData with X")
    bm, moments, sq_norm = _prepare(A, k, dtype=dt, chunks=chunks, block_nnz=block_nnz,
                                    cache=cache, client=client)
    m, n = bm.shape
    _check_k(k, m, n)
    method_used = resolve_method(method, k, m, n)
    cfg = svd_config(k, m, n, method=method_used, center=center, scale=scale, seed=seed,
                     tol=tol, maxit=maxit, block_size=block_size, io_bound=bm.source is not None)

    bar = None
    callback = on_pass
    if progress:  # the one progress bar; it ends at the pass the solver stopped at
        from .progress import IterationBar

        bar = IterationBar(cfg.maxit, f"svd k={k}", loss_name="residual")
        passes = 0

        def callback(p, rel):
            nonlocal passes
            passes += 1
            bar.update(passes, float(np.max(rel)), float("nan"))
            if on_pass is not None:
                on_pass(p, rel)

    finished = False
    try:
        state = fit_svd(bm, k, config=cfg, client=client, moments=moments, sq_norm=sq_norm,
                        on_pass=callback)
        finished = True
    finally:
        if bar is not None:
            bar.close(finished)
    if not state.converged and state.method != "randomized":
        warnings.warn(
            f"svd: the residuals did not reach tol={cfg.tol:g} in {cfg.maxit} passes (largest "
            f"{float(np.max(state.residuals)):.2e}); raise maxit or tol",
            RuntimeWarning, stacklevel=2)
    settings = dict(
        k=k, method=method, method_used=state.method, center=cfg.center, scale=cfg.scale,
        seed=cfg.seed, tol=cfg.tol if cfg.method != "randomized" else None, maxit=cfg.maxit,
        block_size=cfg.block_size if cfg.method != "randomized" else None,
        basis_size=cfg.basis_size if cfg.method != "randomized" else None,
        oversample=cfg.oversample if cfg.method == "randomized" else None,
        power_iters=cfg.power_iters if cfg.method == "randomized" else None,
        dtype=dt.name, chunks=[int(x) for x in np.diff(bm.bounds)], cache=cache,
        sign_convention="largest |U| entry positive",
    )
    return SVDResult(
        U=state.U, d=state.d, V_dask=_v_dask(state), method=state.method,
        iterations=state.iterations, passes=state.passes, restarts=state.restarts,
        converged=state.converged, residuals=state.residuals, total_sq=state.sq_norm,
        row_means=state.row_means, row_sds=state.row_sds, centered=cfg.center,
        scaled=cfg.scale, settings=settings, runtime=state.seconds, _client=client,
    )


def pca(
    A,
    k: int = 10,
    *,
    scale: bool = False,
    copy: bool = False,
    layer: str | None = None,
    **kwargs,
):
    """Principal component analysis: ``svd(A, k, center=True)`` (RcppML's ``pca()``).

    Parameters
    ----------
    A : array-like of shape (m, n), or anndata.AnnData of shape (n_cells, n_genes)
        Features × samples as for :func:`svd`; an AnnData is read as genes × cells, so the
        principal components are gene loadings and the scores are per cell (scanpy's layout).
    k : int, default 10
        Number of components.
    scale : bool, default False
        Also divide each feature by its population standard deviation (correlation PCA).
    copy : bool, default False
        AnnData only: store the result in a copy and return it instead of updating ``A``.
    layer : str, optional
        AnnData only: factorize ``A.layers[layer]`` instead of ``A.X``.
    **kwargs
        Passed to :func:`svd` (``method``, ``seed``, ``tol``, ``maxit``, ``client``, ...).

    Returns
    -------
    SVDResult, or anndata.AnnData
        Given an AnnData: the AnnData (``A`` itself, or its copy when ``copy``) with
        ``obsm["X_pca"]`` (cells × k scores ``V diag(d)``), ``varm["PCs"]`` (genes × k loadings
        ``U``) and ``uns["pca"]`` (``variance`` = d²/(n − 1), ``variance_ratio``,
        ``singular_values``, ``params``). Otherwise the :class:`SVDResult` of the centred
        matrix (``scores`` = ``V diag(d)``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> from dask_factor import datasets
    >>> from dask_factor.svd import pca
    >>> A = datasets.load("hawaiibirds").matrix          # species × grid cells
    >>> adata = ad.AnnData(A.T.tocsr())                  # cells × species
    >>> out = pca(adata, 3)
    >>> out is adata, adata.obsm["X_pca"].shape, adata.varm["PCs"].shape
    (True, (1183, 3), (183, 3))
    >>> bool(np.all(np.diff(adata.uns["pca"]["variance_ratio"]) <= 0))
    True
    """
    if "center" in kwargs:
        raise TypeError("center: pca() always centres; use svd() for an uncentred SVD")
    validate_params(dict(k=k, scale=scale, copy=copy, layer=layer), entry="pca")
    if _is_anndata(A):
        if layer is not None:
            from .io import open_matrix

            source = open_matrix(A, layer=layer)
        else:
            source = A
        res = svd(source, k, center=True, scale=scale, **kwargs)
        target = A.copy() if copy else A
        res.settings["layer"] = layer
        return res.to_anndata(target, key="pca")
    if copy:
        raise ValueError("copy: only meaningful when A is an AnnData")
    if layer is not None:
        raise ValueError("layer: only meaningful when A is an AnnData")
    return svd(A, k, center=True, scale=scale, **kwargs)

