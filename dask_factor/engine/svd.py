"""Truncated SVD of a column-blocked matrix: every product is one Dask pass over A.

The matrix is ``Ã = D⁻¹(A − μ1ᵀ)`` — A itself, or implicitly centred (μ = row means) and scaled
(D = row standard deviations) — and is never densified. The engine solves the eigenproblem of the
feature-space Gram operator ``M = Ã Ãᵀ`` (m × m) with the drivers of :mod:`.svd_krylov`; one
application ``M X`` (X: m × b) is one pass of block tasks (:mod:`.svd_passes`):

    per block p, one task   Y_p = A_pᵀ (D⁻¹X) − 1 cᵀ,  c = μᵀD⁻¹X        (n_p × b, local)
                            Z_p = A_p Y_p,  s_p = 1ᵀ Y_p
    fixed-order tree        Z = Σ Z_p, s = Σ s_p
    client                  M X = D⁻¹ (Z − μ sᵀ)

so each pass reads A once, serves b vectors, and moves only m × b partials. The feature space is
the small side of an atlas (genes), so the Krylov basis lives on the client like NMF's W.

A final pass with the converged left vectors U (or the randomized basis) X keeps ``Y_p = Ã_pᵀX``
on the workers and reduces a tall-skinny QR of Y alongside the sums: the SVD of its small R
factor gives σ and a rotation S (the Rayleigh–Ritz step, accurate for small σ too), and the right
singular vectors ``V_p = Y_p S diag(1/σ)`` are formed where ``Y_p`` lives (n_p × k per block, like
NMF's H_p). The Krylov methods keep the products ``M q`` of their basis vectors, so ``M X`` (for
the true residuals) is known and that pass only computes ``Y_p`` (one sweep of each block);
the randomized method's final pass computes both.

Signs are fixed at the end: the largest-magnitude entry of every left singular vector is positive
(the first such entry on ties), so results are reproducible across methods and schedulers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blocks import BlockedMatrix
from .executor import blas_single_thread
from .svd_krylov import KrylovResult, block_lanczos, orthonormalize, randomized_range
from .svd_passes import ROW_MAJOR_MIN_WIDTH, GramPasses

__all__ = ["SVDConfig", "SVDState", "GramPasses", "fit_svd", "resolve_method", "svd_config",
           "sign_flips", "row_statistics"]

METHODS = ("lanczos", "irlba", "randomized")
#: the variance floor of ``scale=True``, as a multiple of float64 machine epsilon (RcppML: 100 ε)
VAR_FLOOR_EPS = 100.0
#: default residual tolerance, ‖Ãv − σu‖ ≤ tol · σ₁ for every pair
DEFAULT_TOL = 1e-8
#: default passes over A for the Krylov methods, and power iterations for "randomized"
DEFAULT_MAXIT = 200
DEFAULT_POWER_ITERS = 3


# --------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class SVDConfig:
    """Numerical settings of one truncated SVD (validated and resolved by the caller).

    ``block_size``/``basis_size``/``keep`` drive the Krylov methods, ``oversample`` and
    ``power_iters`` the randomized one; :func:`svd_config` fills the defaults.
    """

    k: int
    method: str = "lanczos"
    center: bool = False
    scale: bool = False
    seed: int = 42
    tol: float = DEFAULT_TOL
    maxit: int = DEFAULT_MAXIT
    block_size: int = 8
    basis_size: int = 80
    keep: int = 12
    oversample: int = 10
    power_iters: int = DEFAULT_POWER_ITERS


def resolve_method(method: str, k: int, m: int, n: int) -> str:
    """``method="auto"`` → a concrete method, by RcppML's CPU rule (docs/decisions.md).

    ``"irlba"`` when ``k >= 64`` or ``min(m, n) < 4k``, else ``"lanczos"``. (RcppML never picks
    ``"randomized"`` on the CPU and neither do we: it is the fast, approximate option on request.)

    Examples
    --------
    >>> resolve_method("auto", 10, 13714, 2638), resolve_method("auto", 64, 13714, 2638)
    ('lanczos', 'irlba')
    """
    if method != "auto":
        return method
    return "irlba" if (k >= 64 or min(m, n) < 4 * k) else "lanczos"


def _round4(x: float) -> int:
    """Round up to a multiple of 4 (the kernels' SIMD width in float64)."""
    return 4 * int(np.ceil(x / 4))


def svd_config(
    k: int,
    m: int,
    n: int,
    *,
    method: str = "lanczos",
    center: bool = False,
    scale: bool = False,
    seed: int | None = None,
    tol: float | None = None,
    maxit: int | None = None,
    block_size: int | None = None,
    basis_size: int | None = None,
    oversample: int | None = None,
    io_bound: bool = False,
) -> SVDConfig:
    """Resolve the method and the method-specific defaults into an :class:`SVDConfig`.

    * ``"lanczos"``: ``b`` vectors per pass — 4 for ``k <= 12``, else ``max(16, k/2)`` rounded up
      to a multiple of 4; when every pass reads A from disk (``io_bound``) ``max(16, k)``, fewer
      and wider passes. A basis of ``max(12b, 3k, k + 50)`` columns; ``k + b/2`` Ritz vectors
      kept at a restart. On pbmc3k, k = 10 converges to tol 1e-8 in 15 passes of 4 vectors.
    * ``"irlba"`` (memory-lean, for large k): ``b = max(16, k/2)``, a basis of ``4k + b``
      columns, ``k + b/2`` kept — IRLBA-style restarts on a small working basis.
    * ``"randomized"``: ``oversample = min(max(10, k/5), min(m, n) − k)`` extra columns (RcppML's),
      ``maxit`` power iterations (default 3).

    The block size trades passes against work. In memory a pass costs little more than one
    traversal of A while b is small (pbmc3k, one core per pass with the vector kernels: 5.2 ms
    at b = 4 on the column-major blocks; 7.5 ms at b = 8 and 10 ms at b = 16 on row-major
    copies, which cost 26 ms to make), and every pass also costs the client a Gram–Schmidt step
    and a scheduler round trip, so for k = 10 the 15 passes of 4 vectors (no copy) beat 12 of 8;
    from disk every pass is a read, so wide blocks win. Every size is capped by ``m``.
    """
    method = resolve_method(method, k, m, n)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {('auto',) + METHODS}, got {method!r}")
    scale = bool(scale)
    center = bool(center) or scale
    lim = min(m, n)
    seed = 42 if seed is None else int(seed)
    tol = DEFAULT_TOL if tol is None else float(tol)
    if method == "randomized":
        p = oversample if oversample is not None else min(max(10, k // 5), max(lim - k, 0))
        q = DEFAULT_POWER_ITERS if maxit is None else int(maxit)
        return SVDConfig(k=k, method=method, center=center, scale=scale, seed=seed, tol=tol,
                         maxit=q, oversample=int(min(p, m - k)), power_iters=q)
    if method == "lanczos":
        if io_bound:
            b = block_size or max(16, _round4(k))
        else:
            b = block_size or (4 if k <= 12 else max(16, _round4(k / 2)))
        s = basis_size or max(12 * b, 3 * k, k + 50)
    else:
        b = block_size or max(16, _round4(k / 2))
        s = basis_size or 4 * k + b
    b = int(min(b, m))
    keep = int(min(k + b // 2, m))
    s = int(min(max(s, keep + b), m))
    return SVDConfig(k=k, method=method, center=center, scale=scale, seed=seed, tol=tol,
                     maxit=DEFAULT_MAXIT if maxit is None else int(maxit),
                     block_size=b, basis_size=s, keep=keep)


@dataclass
class SVDState:
    """A finished truncated SVD ``Ã ≈ U diag(d) Vᵀ`` in the engine's layout.

    Attributes
    ----------
    U : ndarray (m, k)
        Left singular vectors (features), orthonormal; largest-|entry| of each column positive.
    d : ndarray (k,)
        Singular values, decreasing.
    v_blocks : list
        ``V_p`` (n_p × k) per column block: arrays locally, futures on a cluster.
    bounds : ndarray (n_blocks + 1,)
        Column ranges of the blocks.
    method : str
        Method used (``"lanczos"``, ``"irlba"`` or ``"randomized"``).
    passes : int
        Passes over A, the statistics pass and the final Rayleigh–Ritz pass included.
    iterations : int
        Krylov block steps (or power iterations for ``"randomized"``).
    restarts : int
        Thick restarts of the Krylov basis.
    converged : bool
        Krylov methods: every residual reached ``tol``. ``"randomized"`` (no stopping test):
        whether the final residuals happen to be below ``tol``.
    residuals : ndarray (k,)
        ``‖Ãv_i − d_i u_i‖ / d_1`` from computed products ``M X`` (the Krylov passes' or the
        final pass's): the true residuals, not estimates.
    row_means, row_sds : ndarray (m,) or None
        μ and the scaling SDs (population SD, variance floored) when centring / scaling.
    sq_norm : float
        ‖Ã‖²_F, the total variance the explained variance refers to.
    """

    U: np.ndarray
    d: np.ndarray
    v_blocks: list
    bounds: np.ndarray
    method: str
    passes: int
    iterations: int
    restarts: int
    converged: bool
    residuals: np.ndarray
    row_means: np.ndarray | None
    row_sds: np.ndarray | None
    sq_norm: float
    seconds: float = 0.0
    pass_seconds: list[float] = field(default_factory=list)
    config: SVDConfig | None = None
    _executor: Any = field(default=None, repr=False)

    @property
    def variance_ratio(self) -> np.ndarray:
        """``d² / ‖Ã‖²``: the share of the total sum of squares each factor explains."""
        return self.d ** 2 / self.sq_norm if self.sq_norm > 0 else np.zeros_like(self.d)

    def V(self) -> np.ndarray:
        """Gather the right singular vectors, (n, k)."""
        parts = self._executor.gather(self.v_blocks) if self._executor else self.v_blocks
        k = self.d.size
        return np.vstack([np.asarray(p, dtype=np.float64).reshape(-1, k) for p in parts])


# --------------------------------------------------------------------------------------------
# the driver


def sign_flips(U: np.ndarray) -> np.ndarray:
    """±1 per column so that each column's largest-magnitude entry is positive (first on ties)."""
    if U.shape[0] == 0:
        return np.ones(U.shape[1])
    idx = np.argmax(np.abs(U), axis=0)
    f = np.sign(U[idx, np.arange(U.shape[1])])
    f[f == 0] = 1.0
    return f


def row_statistics(mom, m: int, n: int, *, center: bool, scale: bool, dtype_eps: float):
    """Turn the merged moments into (μ or None, SDs or None, ‖Ã‖²)."""
    _, mean, m2, sumsq, _ = mom
    if not center:
        return None, None, float(sumsq)
    if not scale:
        return mean, None, float(np.sum(m2))
    var = m2 / n
    floor = VAR_FLOOR_EPS * dtype_eps
    var_f = np.maximum(var, floor)
    return mean, np.sqrt(var_f), float(np.sum(m2 / var_f))


def fit_svd(
    bm: BlockedMatrix,
    k: int,
    *,
    method: str = "lanczos",
    center: bool = False,
    scale: bool = False,
    seed: int | None = None,
    tol: float | None = None,
    maxit: int | None = None,
    block_size: int | None = None,
    client=None,
    config: SVDConfig | None = None,
    moments=None,
    sq_norm: float | None = None,
    on_pass: Callable[[int, np.ndarray], Any] | None = None,
) -> SVDState:
    """Truncated SVD of ``Ã = D⁻¹(A − μ1ᵀ)`` (or of A) on Dask, k triplets.

    Parameters
    ----------
    bm : BlockedMatrix
        The data, (m, n) features × samples.
    k : int
        Number of singular triplets, ``1 <= k < min(m, n)`` (checked by the caller).
    method : {"lanczos", "irlba", "randomized", "auto"}
    center, scale : bool
        Implicit centring by the row means; ``scale`` divides rows by their population SD
        (and implies ``center``).
    seed : int, optional
        Seed of the start block (numpy ``default_rng``); None means 42.
    tol : float, optional
        Krylov methods stop when ``‖Ãv − σu‖ ≤ tol·σ₁`` for all k pairs (default 1e-8).
    maxit : int, optional
        Passes over A for the Krylov methods (default 200), power iterations for
        ``"randomized"`` (default 3).
    block_size : int, optional
        Vectors per pass of the Krylov methods (default: see :func:`svd_config`).
    client : distributed.Client, optional
        Run there; default: the active client if any, else dask's current scheduler.
    config : SVDConfig, optional
        Overrides the settings above (block and basis sizes included).
    moments : tuple, optional
        A previous :meth:`GramPasses.moments` result for this matrix (saves the statistics pass).
    sq_norm : float, optional
        ‖A‖²_F, already known (and A already checked for NaN): an uncentred SVD then needs no
        statistics pass.
    on_pass : callable(passes, relative residuals), optional
        Progress hook after every Krylov pass.

    Returns
    -------
    SVDState
    """
    with blas_single_thread():
        return _fit_svd(bm, k, method=method, center=center, scale=scale, seed=seed, tol=tol,
                        maxit=maxit, block_size=block_size, client=client, config=config,
                        moments=moments, sq_norm=sq_norm, on_pass=on_pass)


def _fit_svd(bm, k, *, method, center, scale, seed, tol, maxit, block_size, client, config,
             moments, sq_norm, on_pass) -> SVDState:
    m, n = bm.shape
    cfg = config or svd_config(k, m, n, method=method, center=center, scale=scale, seed=seed,
                               tol=tol, maxit=maxit, block_size=block_size,
                               io_bound=bm.source is not None)
    k = cfg.k
    t0 = time.perf_counter()
    width = cfg.block_size if cfg.method != "randomized" else min(k + cfg.oversample, m)
    passes = GramPasses(bm, client, row_major=width >= ROW_MAJOR_MIN_WIDTH)
    rng = np.random.default_rng(cfg.seed)
    mom = passes.prepare(moments is None and (cfg.center or sq_norm is None))
    moments = moments if moments is not None else mom
    if moments is not None:
        if int(moments[4]):
            raise ValueError(f"A: contains {int(moments[4])} NaN or infinite value(s); expected "
                             f"finite values")
        mu, sd, sq_norm = row_statistics(moments, m, n, center=cfg.center, scale=cfg.scale,
                                         dtype_eps=float(np.finfo(np.float64).eps))
    else:
        mu = sd = None
    passes.mu, passes.sd = mu, sd

    if cfg.method == "randomized":
        X, iters = randomized_range(passes.apply, m, width, cfg.power_iters, rng=rng)
        MX = None
        kres = None
        restarts = 0
    else:
        kres: KrylovResult = block_lanczos(
            passes.apply, m, k, block_size=cfg.block_size, basis_size=cfg.basis_size,
            keep=cfg.keep, tol=cfg.tol, maxit=cfg.maxit, rng=rng, on_pass=on_pass)
        X, MX, iters, restarts = kres.X, kres.MX, kres.passes, kres.restarts
        if X.shape[1] < k:  # maxit hit before the basis held k vectors
            X, _, _ = orthonormalize(np.hstack([X, rng.standard_normal((m, k - X.shape[1]))]),
                                     None, rng, 1.0)
            MX = None

    # final pass: Rayleigh–Ritz on span(X) from Y = ÃᵀX = Q_Y R (TSQR). With R = W Σ Sᵀ,
    # Ãᵀ(XS) = (Q_Y W) Σ, so U = XS, d = Σ and V = Y S Σ⁻¹ (formed on the workers). The SVD of
    # R — not the eigenvalues of YᵀY — keeps small σ accurate to about ε·σ₁. M X comes from the
    # Krylov passes' products when they have it (the pass then only computes ÃᵀX).
    y_handles, MX_pass, R = passes.final(X, products=MX is None)
    MX = MX_pass if MX is None else MX
    _, sig, St = np.linalg.svd(R)
    S = St.T[:, :k]
    d = sig[:k].copy()
    if d.size < k:  # fewer rows in Y than k (n < k never happens: k < min(m, n))
        d = np.concatenate([d, np.zeros(k - d.size)])
    U = X @ S
    flips = sign_flips(U)
    U *= flips
    S = S * flips
    d1 = d[0] if d.size else 0.0
    tiny = d <= (VAR_FLOOR_EPS * np.finfo(np.float64).eps * d1 if d1 > 0 else np.inf)
    inv = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, d))
    T = S * inv
    # true residuals ‖Ãv − σu‖ = ‖M X S/σ − σ U‖
    R = (MX @ S) * inv - U * d
    R[:, tiny] = 0.0
    residuals = np.linalg.norm(R, axis=0) / d1 if d1 > 0 else np.zeros(k)
    v_blocks = passes.right_vectors(y_handles, T)
    if kres is not None:
        converged = bool(kres.converged)
    else:  # randomized: no stopping test; report whether the true residuals meet tol anyway
        converged = bool(np.all(residuals <= cfg.tol))
    return SVDState(
        U=np.ascontiguousarray(U), d=d, v_blocks=v_blocks, bounds=bm.bounds, method=cfg.method,
        passes=passes.count, iterations=iters, restarts=restarts, converged=converged,
        residuals=residuals, row_means=mu, row_sds=sd, sq_norm=sq_norm,
        seconds=time.perf_counter() - t0, pass_seconds=list(passes.seconds), config=cfg,
        _executor=passes.ex,
    )
