"""The SVD layer of a graph: a real truncated SVD of the layer's matrix, inside the sweeps.

RcppML's graph runs an ``svd_layer`` as unconstrained ALS (docs/graphs.md); we make it a real
truncated SVD (docs/decisions.md). In the joint block-coordinate schedule each layer's update
minimises its own loss given its current input (RcppML: one ALS iteration towards that minimiser);
for an SVD layer the minimiser is known exactly (Eckart–Young), so every update of an SVD layer *is*
the rank-k truncated SVD of its current matrix.

The matrix is the one an NMF layer in its place factorises, in the engine's orientation: ``M``
(R × n), features × samples — an input (or ``factor_shared``/``factor_condition`` rows), or,
for a layer fed by layers, the upstream H (k_up × n, stacked by ``factor_concat``, summed by
``factor_add``). The layer is ``svd()`` of M: ``M̃ = D⁻¹(M − μ1ᵀ) ≈ U diag(σ) Vᵀ`` with μ and D
the row means and population SDs over the samples (``center``/``scale``), ``U`` and ``V``
orthonormal, σ decreasing, the largest-magnitude entry of every column of U positive. So the
samples are the observations in every layer, and for a layer fed by layers ``svd_layer(fine)`` is
the PCA of ``fine``'s H. In the user's orientation (docs/graphs.md, input ``t(H_up)``) U is W on
inputs and Hᵀ when fed by layers, V the other one.

* A layer that reads inputs has a fixed matrix: its SVD is computed once, before the sweeps, by
  the truncated-SVD engine (:func:`.svd.fit_svd`: Krylov passes over the column blocks, A never
  densified; several row parts are stacked block by block). It is *constant*: the sweeps only
  report its loss.
* A layer fed by layers has a small R: every update is exact, in two passes over the sample
  blocks. Each block task builds ``X_p = M_pᵀ`` (n_p × R) from the upstream blocks and returns
  its count, column means and the R factor of its centred rows; the fixed-order tree merges them
  (a tall-skinny QR with Chan's mean update: ``R = qr([R_a; R_b; √(n_a n_b/n)(μ_a − μ_b)ᵀ])``),
  so ``RᵀR`` is the centred scatter of M. One task scales R's columns by 1/SD, takes its SVD
  ``R D⁻¹ = Q Σ Uᵀ`` and builds the package; then ``V_p = (X_p − 1μᵀ) D⁻¹ U Σ⁻¹`` where the
  blocks live.

Downstream layers read the layer's per-sample factor V (unit columns; signed; ``d`` not applied),
as they read an NMF layer's normalised H.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import dask
import numpy as np
import scipy.sparse as sp

from . import checkpoint
from .blocks import BlockedMatrix
from .driver import stats_of, user_stacklevel
from .executor import Executor
from .plan import ConditionPart, GraphData, InputPart, LayerArrays, LayerSpec, Sources
from .svd import VAR_FLOOR_EPS, fit_svd, sign_flips

__all__ = ["SVDSpec", "SVDPack", "KRYLOV_METHODS"]

#: methods of the truncated-SVD engine (RcppML's constrained ``deflation``/``krylov`` are not)
KRYLOV_METHODS = ("auto", "lanczos", "irlba", "randomized")
_EPS = float(np.finfo(np.float64).eps)


@checkpoint.register
@dataclass
class SVDPack:
    """The state of an SVD layer (engine orientation, ``M ≈ U diag(σ) Vᵀ``).

    U : (R, k) the loadings over the layer's rows (W of a layer on inputs, Hᵀ of one fed by
        layers), orthonormal columns, the largest-|entry| of each positive.
    sigma : (k,) singular values, decreasing.
    stats : ``{"sse", "ssq"}`` of the centred/scaled matrix.
    method, iterations, converged : the SVD engine's report (a layer on inputs).
    row_means, row_sds : μ and the scaling SDs of M's rows over the samples (centring/scaling).

    The per-sample blocks (V_p, n_p × k) are stored normalised.
    """

    U: np.ndarray
    sigma: np.ndarray
    stats: dict | None = None
    method: str = "exact"
    iterations: int = 0
    converged: bool = True
    row_means: np.ndarray | None = None
    row_sds: np.ndarray | None = None

    def d(self, embedding: bool = False) -> np.ndarray:
        return self.sigma

    def per_sample(self, V) -> np.ndarray:
        return np.asarray(V, dtype=np.float64)


@dataclass(frozen=True)
class SVDSpec(LayerSpec):
    """A truncated SVD layer (PCA with ``center=True``); see the module docstring.

    Extra attributes: ``center``, ``scale`` (implies centring), ``method``, ``tol``, ``maxit``
    (the SVD engine's settings, for a layer on inputs; ``seed`` seeds its start block).
    """

    center: bool = False
    scale: bool = False
    method: str = "auto"
    tol: float | None = None
    maxit: int | None = None

    kind: ClassVar[str] = "svd"
    needs_init: ClassVar[bool] = False

    @property
    def constant(self) -> bool:
        return not self.embedding

    def to_dict(self) -> dict:
        return {**super().to_dict(), "center": self.center, "scale": self.scale,
                "method": self.method}

    # ---- on the driver

    def check(self, n: int) -> None:
        where = f"svd_layer {self.name!r}"
        if self.method not in KRYLOV_METHODS:
            raise NotImplementedError(
                f"{where}: method={self.method!r} (constrained SVD) is not implemented; use "
                f"'auto', 'lanczos', 'irlba' or 'randomized'")
        if self.W.constrained or self.H.constrained:
            raise NotImplementedError(
                f"{where}: constrained SVD (L1/L2/L21/angular/nonneg/bounds) is not implemented; "
                f"an svd_layer is an unconstrained truncated SVD")
        if self.constant and self.k >= min(self.rows, n):
            raise ValueError(f"{where}: k={self.k} must be < min(rows, samples) = "
                             f"{min(self.rows, n)} for a truncated SVD of its input "
                             f"{self.input_label!r} ({self.rows} × {n})")

    def warmup_iterations(self, warm: int) -> int:
        # exact: once per warm-up of its level is enough; a layer on inputs never changes
        return 0 if self.constant else min(1, warm)

    def initial_state(self, gd: GraphData, init, arrays: LayerArrays):
        if not self.constant:  # replaced by the first update before anything reads it
            k = self.k
            pack = SVDPack(U=np.zeros((self.rows, k)), sigma=np.zeros(k),
                           stats={"sse": 0.0, "ssq": 0.0})
            return pack, [np.zeros((int(gd.bounds[p + 1] - gd.bounds[p]), k))
                          for p in range(gd.nb)]
        bm = stacked_rows(self, gd)
        st = fit_svd(bm, self.k, method=self.method, center=self.center, scale=self.scale,
                     seed=self.seed, tol=self.tol, maxit=self.maxit, client=gd.client,
                     sq_norm=None if self.center else self.fixed_sq_norm(gd.input_sq,
                                                                         gd.fixed))
        if not st.converged and st.method != "randomized":
            warnings.warn(f"svd_layer {self.name!r}: the residuals did not reach the tolerance "
                          f"(largest {float(np.max(st.residuals)):.2e}); raise its maxit or tol",
                          RuntimeWarning, stacklevel=user_stacklevel())
        blocks = [np.ascontiguousarray(np.asarray(b, dtype=np.float64))
                  for b in Executor(gd.client).gather(st.v_blocks)]
        d = np.asarray(st.d, dtype=np.float64)
        pack = SVDPack(U=np.ascontiguousarray(st.U, dtype=np.float64), sigma=d,
                       stats={"sse": max(float(st.sq_norm) - float(d @ d), 0.0),
                              "ssq": float(st.sq_norm)},
                       method=st.method, iterations=int(st.iterations),
                       converged=bool(st.converged), row_means=st.row_means,
                       row_sds=st.row_sds)
        return pack, blocks

    def build(self, g, src: Sources, static: dict, t: int, ssq: float):
        L = self.index
        if self.constant:
            return src.packs[L], list(src.vs[L]), g.task(f"L{L}-stats", (), stats_of,
                                                          src.packs[L])
        spec = self.light
        nb = len(src.vs[L])
        args = [self.args(src, p) for p in range(nb)]
        qr = [g.task(f"L{L}-block-qr", (p,), qr_task, spec, *args[p]) for p in range(nb)]
        red = g.reduce(qr, qr_combine, label=f"L{L}-qr-reduce")
        pack = g.task(f"L{L}-svd-update", (), svd_update, red, spec)
        vkeys = [g.task(f"L{L}-block-v", (p,), v_task, pack, spec, *args[p])
                 for p in range(nb)]
        return pack, vkeys, g.task(f"L{L}-stats", (), stats_of, pack)

    def describe_fit(self, pack: SVDPack) -> dict:
        out = {"method": pack.method, "center": self.center, "scale": self.scale,
               "row_means": pack.row_means, "row_sds": pack.row_sds}
        if self.constant:
            out.update(iterations=int(pack.iterations), converged=bool(pack.converged))
        return out


# --------------------------------------------------------------------------------------------
# a layer on inputs: its row parts stacked block by block for the SVD engine


def _stack_block(sparse: bool, dtype, *blocks):
    if len(blocks) == 1:
        return blocks[0]
    if sparse:
        return sp.vstack([sp.csc_matrix(b, dtype=dtype) for b in blocks], format="csc")
    return np.ascontiguousarray(np.vstack([b.toarray() if sp.issparse(b) else b
                                           for b in blocks]), dtype=dtype)


def stacked_rows(spec: LayerSpec, gd: GraphData) -> BlockedMatrix:
    """The layer's matrix ``[A_1; …; Z]`` as column blocks (each block stacked in its task)."""
    parts = spec.parts
    if len(parts) == 1 and isinstance(parts[0], InputPart):
        return gd.data[parts[0].source]
    ins = [gd.data[p.source] for p in parts if isinstance(p, InputPart)]
    dtype = ins[0].dtype
    sparse = any(bm.sparse for bm in ins)
    name = f"stack-{spec.index}-{ins[0].name}"
    blocks = []
    for b in range(gd.nb):
        lo, hi = int(gd.bounds[b]), int(gd.bounds[b + 1])
        items = [gd.data[p.source].blocks[b] if isinstance(p, InputPart)
                 else np.ascontiguousarray(gd.fixed[p.source][:, lo:hi], dtype=dtype)
                 for p in parts if isinstance(p, (InputPart, ConditionPart))]
        blocks.append(dask.delayed(_stack_block, pure=True)(
            sparse, dtype, *items, dask_key_name=f"block-{name}-{b}"))
    return BlockedMatrix(blocks, np.asarray(gd.bounds, dtype=np.int64),
                         (spec.rows, int(gd.bounds[-1])), np.dtype(dtype), sparse, name=name)


# --------------------------------------------------------------------------------------------
# a layer fed by layers: task functions (inside Dask tasks)


def sample_rows(spec: SVDSpec, args) -> np.ndarray:
    """``X_p = M_pᵀ`` (n_p × R, float64): one sample block, a row per sample."""
    M = np.vstack([b.toarray() if sp.issparse(b) else np.asarray(b, dtype=np.float64)
                   for b in spec.rows_of(args)])
    return np.array(M.T, dtype=np.float64, order="C")


def qr_task(spec: SVDSpec, *args):
    """``(n_p, μ_p, R_p)``: the block's sample count, column means (None without centring) and
    the R factor of its rows (centred on μ_p)."""
    X = sample_rows(spec, args)
    mu = None
    if spec.center:
        mu = X.mean(axis=0)
        X -= mu
    return X.shape[0], mu, np.linalg.qr(X, mode="r")


def qr_combine(*parts):
    """Tall-skinny QR of stacked blocks, in the order given; with means, Chan's update keeps
    ``RᵀR`` the scatter about the merged mean.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).random((10, 3))
    >>> def part(Y):
    ...     return len(Y), Y.mean(axis=0), np.linalg.qr(Y - Y.mean(axis=0), mode="r")
    >>> n, mu, R = qr_combine(part(X[:4]), part(X[4:]))
    >>> Xc = X - X.mean(axis=0)
    >>> n, bool(np.allclose(mu, X.mean(axis=0))), bool(np.allclose(R.T @ R, Xc.T @ Xc))
    (10, True, True)
    """
    if len(parts) == 1:
        return parts[0]
    n, mu, rows = parts[0][0], parts[0][1], [parts[0][2]]
    for nb, mub, Rb in parts[1:]:
        rows.append(Rb)
        if mu is not None:
            tot = n + nb
            rows.append(np.sqrt(n * nb / tot) * (mub - mu)[None, :])
            mu = mu + (mub - mu) * (nb / tot)
        n += nb
    return n, mu, np.linalg.qr(np.vstack(rows), mode="r")


def svd_update(red, spec: SVDSpec) -> SVDPack:
    """The SVD of the merged R (columns scaled by 1/SD when scaling): U, σ, the signs, the loss.

    A singular value below 100·ε·σ₁ gets a zero V column (as ``svd()``).
    """
    n, mu, R = red
    sd = None
    if spec.scale:
        var = (R * R).sum(axis=0) / n
        sd = np.sqrt(np.maximum(var, VAR_FLOOR_EPS * _EPS))
        R = R / sd
    _, sig, Ut = np.linalg.svd(R, full_matrices=False)
    k = spec.k
    U = np.ascontiguousarray(Ut[:k].T)
    U *= sign_flips(U)
    d = sig[:k].copy()
    d1 = d[0] if d.size else 0.0
    d[d <= (VAR_FLOOR_EPS * _EPS * d1 if d1 > 0 else np.inf)] = 0.0
    ssq = float(np.sum(R * R))
    return SVDPack(U=U, sigma=d, stats={"sse": max(ssq - float(d @ d), 0.0), "ssq": ssq},
                   row_means=mu, row_sds=sd)


def v_task(pack: SVDPack, spec: SVDSpec, *args):
    """``V_p = (X_p − 1μᵀ) D⁻¹ U Σ⁻¹`` for one sample block."""
    X = sample_rows(spec, args)
    if pack.row_means is not None:
        X -= pack.row_means
    if pack.row_sds is not None:
        X /= pack.row_sds
    inv = np.where(pack.sigma > 0, 1.0 / np.where(pack.sigma > 0, pack.sigma, 1.0), 0.0)
    return np.ascontiguousarray(X @ (pack.U * inv))
