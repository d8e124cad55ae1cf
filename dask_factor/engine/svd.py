"""Truncated SVD of a column-blocked matrix: every product is one Dask pass over A.

The matrix is ``Ã = D⁻¹(A − μ1ᵀ)`` — A itself, or implicitly centred (μ = row means) and scaled
(D = row standard deviations) — and is never densified. The engine solves the eigenproblem of the
feature-space Gram operator ``M = Ã Ãᵀ`` (m × m) with the drivers of :mod:`.svd_krylov`; one
application ``M X`` (X: m × b) is one pass of block tasks (:func:`kernels.svd.csc_gram_apply`):

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
NMF's H_p).

Signs are fixed at the end: the largest-magnitude entry of every left singular vector is positive
(the first such entry on ties), so results are reproducible across methods and schedulers.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels.svd import (
    csc_gram_apply,
    csc_row_moments,
    csc_to_csr,
    csr_gram_kernel,
    dense_gram_apply,
    dense_row_moments,
    merge_moments,
)
from .als import block_graph
from .blocks import BlockedMatrix, tree_keys
from .executor import Executor
from .svd_krylov import KrylovResult, block_lanczos, orthonormalize, randomized_range

METHODS = ("lanczos", "irlba", "randomized")
#: the variance floor of ``scale=True``, as a multiple of float64 machine epsilon (RcppML: 100 ε)
VAR_FLOOR_EPS = 100.0
#: default residual tolerance, ‖Ãv − σu‖ ≤ tol · σ₁ for every pair
DEFAULT_TOL = 1e-8
#: default passes over A for the Krylov methods, and power iterations for "randomized"
DEFAULT_MAXIT = 200
DEFAULT_POWER_ITERS = 3
#: partial sums reduced per task (fixed-order tree): few tasks per pass, small fan-in memory
REDUCE_FANIN = 8


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
    """``method="auto"`` → a concrete method, by RcppML's CPU rule (SPEC-nmf.md §4).

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
    traversal of A whatever b is small (pbmc3k, 2 cores' worth of CPU per pass: 10 ms at b = 4
    with the specialised kernel, 17 ms at b = 8, 23 ms at b = 16), so small blocks and more
    passes win (0.31 s of CPU in total at b = 4 against 0.47 s at b = 16 for k = 10); from disk
    every pass is a read, so wide blocks win. Every size is capped by ``m``.
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
        Every residual below ``tol`` (always True for ``"randomized"``, which has no test).
    residuals : ndarray (k,)
        ``‖Ãv_i − d_i u_i‖ / d_1`` from the final pass (the true residuals, not estimates).
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
# task functions (run on workers)


class _Pack:
    """The broadcast of one pass: X pre-divided by the row SDs, and the centring correction."""

    __slots__ = ("Q", "c")

    def __init__(self, Q: np.ndarray, c: np.ndarray):
        self.Q = Q
        self.c = c


class RowMajorBlock:
    """A sparse column block kept row-major (CSR of ``A_p``) for the faster product kernel."""

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.shape = shape


def _moments(block):
    m, n_p = block.shape
    if sp.issparse(block):
        mean, m2, sumsq, n_bad = csc_row_moments(block.indptr, block.indices, block.data, m)
    else:
        mean, m2, sumsq, n_bad = dense_row_moments(block)
    return n_p, mean, m2, float(sumsq), int(n_bad)


def _prepare_task(block, want_moments: bool, convert: bool):
    """(row-major copy or None, moments or None) of one block, in one read."""
    mom = _moments(block) if want_moments else None
    rb = None
    if convert:
        if sp.issparse(block):
            rp, ci, cv = csc_to_csr(block.indptr, block.indices, block.data, block.shape[0])
            rb = RowMajorBlock(rp, ci, cv, block.shape)
        else:
            rb = block
    return rb, mom


def _merge_moments_task(*parts):
    n, mean, m2, sq, bad = parts[0]
    for q in parts[1:]:
        n, mean, m2 = merge_moments(n, mean, m2, q[0], q[1], q[2])
        sq += q[3]
        bad += q[4]
    return n, mean, m2, sq, bad


def _gram_apply(block, pack: _Pack):
    if isinstance(block, RowMajorBlock):
        kernel = csr_gram_kernel(pack.Q.shape[1])
        return kernel(block.indptr, block.indices, block.data, pack.Q, pack.c, block.shape[1])
    if sp.issparse(block):
        return csc_gram_apply(block.indptr, block.indices, block.data, pack.Q, pack.c,
                              block.shape[0])
    return dense_gram_apply(block, pack.Q, pack.c)


def _gram_partial(block, pack: _Pack):
    """One block's share of ``M X``: ``(Z_p, s_p)``."""
    _, Z, s = _gram_apply(block, pack)
    return Z, s


def _r_factor(Y: np.ndarray) -> np.ndarray:
    """The R of a QR of Y, as (min(rows, cols) × cols)."""
    return np.linalg.qr(Y, mode="r")


def _gram_final(block, pack: _Pack):
    """One block's share of the final pass: ``(Y_p, (Z_p, s_p, R_p))`` with ``Y_p = Q_p R_p``."""
    Y, Z, s = _gram_apply(block, pack)
    return Y, (Z, s, _r_factor(Y))


def _add_final_parts(*parts):
    """Sum the Z and s partials; combine the R factors by a QR of their stack (TSQR)."""
    Z, s, _ = _add_parts(*[(p[0], p[1], np.zeros(1)) for p in parts])
    R = _r_factor(np.vstack([p[2] for p in parts])) if len(parts) > 1 else parts[0][2]
    return Z, s, R


def _first(x):
    return x[0]


def _second(x):
    return x[1]


def _add_parts(*parts):
    """Sum tuples of arrays element-wise, in the given (fixed) order."""
    out = [np.array(a, copy=True) for a in parts[0]]
    for q in parts[1:]:
        for a, b in zip(out, q):
            a += b
    return tuple(out)


def _v_task(Y, T):
    return np.ascontiguousarray(Y @ T)


# --------------------------------------------------------------------------------------------
# passes


def _is_resident(v) -> bool:
    """Whether a graph entry is data already in memory (a value or a future), not a read task."""
    if isinstance(v, tuple):
        return False
    mod = type(v).__module__
    if mod.startswith("distributed"):
        return True
    if mod.startswith("dask"):
        return type(v).__name__ == "DataNode"
    return True


class GramPasses:
    """Builds and runs the one-pass graphs over a :class:`BlockedMatrix`.

    ``apply(X)`` returns ``M X`` for the implicit ``Ã``; ``final(X)`` also keeps ``Y_p = ÃᵀX``
    block by block on the workers. Sparse blocks already in memory (in-memory inputs, persisted
    or scattered blocks) are copied once to row-major form by :meth:`prepare`, which makes every
    later pass faster; blocks read from disk are used as they come (CSC), each pass.
    """

    def __init__(self, bm: BlockedMatrix, client=None, *, row_major: bool = True):
        self.bm = bm
        self.ex = Executor(client)
        self.static, self.bkeys = block_graph(bm, self.ex)
        self.schedule = tree_keys(bm.n_blocks, REDUCE_FANIN)
        self.tok = uuid.uuid4().hex[:8]
        self.count = 0
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.seconds: list[float] = []
        self.convert = [bool(row_major and bm.sparse and _is_resident(self.static[k]))
                        for k in self.bkeys]

    def _tree(self, dsk: dict, parts: list[str], func, tag: str) -> str:
        for lvl, groups in enumerate(self.schedule):
            nxt = []
            for gi, g in enumerate(groups):
                if len(g) == 1:
                    nxt.append(parts[g[0]])
                    continue
                rk = f"{tag}-red-{lvl}-{gi}"
                dsk[rk] = (func, *[parts[i] for i in g])
                nxt.append(rk)
            parts = nxt
        return parts[0]

    def prepare(self, want_moments: bool):
        """One read of every block (if needed): the row moments, and the row-major copies.

        Returns
        -------
        (n, row means, row Σ squared deviations, Σa², #non-finite), or None when
        ``want_moments`` is False.
        """
        todo = [b for b in range(self.bm.n_blocks) if want_moments or self.convert[b]]
        if not todo:
            return None
        self.count += 1
        tag = f"svdprep-{self.tok}"
        dsk = dict(self.static)
        keep, parts = [], []
        for b in todo:
            key = f"{tag}-{b}"
            dsk[key] = (_prepare_task, self.bkeys[b], want_moments, self.convert[b])
            if self.convert[b]:
                dsk[f"{key}-rm"] = (_first, key)
                keep.append(f"{key}-rm")
            if want_moments:
                dsk[f"{key}-mom"] = (_second, key)
                parts.append(f"{key}-mom")
        fetch = []
        if want_moments:
            schedule, self.schedule = self.schedule, tree_keys(len(parts), REDUCE_FANIN)
            fetch = [self._tree(dsk, parts, _merge_moments_task, tag)]
            self.schedule = schedule
        t0 = time.perf_counter()
        kept, out = self.ex.run(dsk, keep, fetch)
        self.seconds.append(time.perf_counter() - t0)
        for b in todo:
            if self.convert[b]:
                rk = f"{tag}-{b}-rm"
                self.static[rk] = kept[rk]
                self.bkeys[b] = rk
                self.convert[b] = False
        return out[0] if want_moments else None

    def _pass_graph(self, X: np.ndarray, keep_y: bool):
        self.count += 1
        tag = f"svdpass-{self.tok}-{self.count}"
        Q = X if self.sd is None else X / self.sd[:, None]
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        c = (self.mu @ Q) if self.mu is not None else np.zeros(Q.shape[1])
        pack_key = f"{tag}-pack"
        pack = _Pack(Q, np.ascontiguousarray(c))
        dsk = dict(self.static)
        dsk[pack_key] = self.ex.scatter(pack_key, pack) if self.ex.distributed else pack
        ykeys, parts = [], []
        for b, bk in enumerate(self.bkeys):
            key = f"{tag}-{b}"
            if keep_y:
                dsk[key] = (_gram_final, bk, pack_key)
                dsk[f"{key}-y"] = (_first, key)
                dsk[f"{key}-p"] = (_second, key)
                ykeys.append(f"{key}-y")
                parts.append(f"{key}-p")
            else:
                dsk[key] = (_gram_partial, bk, pack_key)
                parts.append(key)
        root = self._tree(dsk, parts, _add_final_parts if keep_y else _add_parts, tag)
        return dsk, ykeys, root

    def _finish(self, Z, s):
        MX = Z if self.mu is None else Z - np.outer(self.mu, s)
        if self.sd is not None:
            MX = MX / self.sd[:, None]
        return MX

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``M X = Ã Ãᵀ X`` (m × b) in one pass."""
        dsk, _, root = self._pass_graph(X, False)
        t0 = time.perf_counter()
        _, ((Z, s),) = self.ex.run(dsk, [], [root])
        self.seconds.append(time.perf_counter() - t0)
        return self._finish(Z, s)

    def final(self, X: np.ndarray):
        """One pass keeping ``Y_p = ÃᵀX`` per block.

        Returns (Y handles, M X, R) with R the triangular factor of a QR of the stacked
        ``Y = ÃᵀX`` (a tall-skinny QR reduced in the same fixed-order tree as the sums).
        """
        dsk, ykeys, root = self._pass_graph(X, True)
        t0 = time.perf_counter()
        kept, ((Z, s, R),) = self.ex.run(dsk, ykeys, [root])
        self.seconds.append(time.perf_counter() - t0)
        return [kept[y] for y in ykeys], self._finish(Z, s), R

    def right_vectors(self, y_handles: list, T: np.ndarray) -> list:
        """``V_p = Y_p T`` on the workers; returns the handles (values or futures)."""
        tag = f"svdv-{self.tok}-{self.count}"
        dsk: dict = {}
        vkeys = []
        for b, h in enumerate(y_handles):
            yk, vk = f"{tag}-y-{b}", f"{tag}-{b}"
            dsk[yk] = h
            dsk[vk] = (_v_task, yk, T)
            vkeys.append(vk)
        kept, _ = self.ex.run(dsk, vkeys, [])
        return [kept[v] for v in vkeys]


# --------------------------------------------------------------------------------------------
# the driver


def blas_single_thread():
    """Limit BLAS to one thread while the fit runs (restored afterwards).

    The client-side linear algebra is on thin m × b blocks and the tasks run on Dask's threads,
    so BLAS's own threads only oversubscribe the cores: on a busy 2-core machine a 13,714 × 10 QR
    went from 1 ms to 100 ms. Without threadpoolctl this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


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
    passes = GramPasses(bm, client)
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
        width = min(k + cfg.oversample, m)
        X, iters = randomized_range(passes.apply, m, width, cfg.power_iters, rng=rng)
        kres = None
        restarts = 0
    else:
        kres: KrylovResult = block_lanczos(
            passes.apply, m, k, block_size=cfg.block_size, basis_size=cfg.basis_size,
            keep=cfg.keep, tol=cfg.tol, maxit=cfg.maxit, rng=rng, on_pass=on_pass)
        X, iters, restarts = kres.X, kres.passes, kres.restarts
        if X.shape[1] < k:  # maxit hit before the basis held k vectors
            X, _, _ = orthonormalize(np.hstack([X, rng.standard_normal((m, k - X.shape[1]))]),
                                     None, rng, 1.0)

    # final pass: Rayleigh–Ritz on span(X) from Y = ÃᵀX = Q_Y R (TSQR); with R = W Σ Sᵀ,
    # Ã(XS) = ... and Ãᵀ(XS) = (Q_Y W) Σ, so U = XS, d = Σ and V = Y S Σ⁻¹ (formed on the
    # workers). The SVD of R — not the eigenvalues of YᵀY — keeps small σ accurate to ε·σ₁.
    y_handles, MX, R = passes.final(X)
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
    converged = bool(kres.converged) if kres is not None else True
    return SVDState(
        U=np.ascontiguousarray(U), d=d, v_blocks=v_blocks, bounds=bm.bounds, method=cfg.method,
        passes=passes.count, iterations=iters, restarts=restarts, converged=converged,
        residuals=residuals, row_means=mu, row_sds=sd, sq_norm=sq_norm,
        seconds=time.perf_counter() - t0, pass_seconds=list(passes.seconds), config=cfg,
        _executor=passes.ex,
    )
