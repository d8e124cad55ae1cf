"""The SVD layer of a graph: a real truncated SVD of the layer's matrix, inside the sweeps.

RcppML's graph runs an ``svd_layer`` as unconstrained ALS (SPEC-nmf.md §3.2.3); the SPEC's
decision 3 makes it a real truncated SVD. In the joint block-coordinate schedule each layer's
update minimises its own loss given its current input (RcppML: one ALS iteration towards that
minimiser); for an SVD layer the minimiser is known exactly (Eckart–Young), so every update of
an SVD layer *is* the rank-k truncated SVD of its current input, with ``center``/``scale`` as in
``svd()`` applied to that input (``X ≈ W diag(d) H``, ``W`` and ``Hᵀ`` orthonormal, ``d`` the
singular values, decreasing; the largest-magnitude entry of every column of W positive).

* A layer that reads inputs (``factor_input``, ``factor_shared``, ``factor_condition`` of them)
  has a fixed matrix: its SVD is computed once, before the sweeps, by the truncated-SVD engine
  (:func:`.svd.fit_svd`: Krylov passes over the column blocks, A never densified; several row
  parts are stacked block by block). It is *constant*: the sweeps only report its loss.
* A layer fed by layers factorises ``X = t(H_up)`` (n × R, R = the upstream ranks): tall and
  thin, rebuilt every sweep from the upstream blocks. One step is exact and takes two passes
  over the sample blocks: a tall-skinny QR of the (row-centred/scaled) ``X_p`` reduced in the
  fixed-order tree, the SVD of the small R on one task (``R = Ur Σ Vrᵀ``: H = Vrᵀ), then
  ``W_p = X_p Vr Σ⁻¹`` where ``X_p`` lives, with a max-|W| reduction for the sign rule.

Downstream layers read the layer's normalised per-sample factor like an NMF layer's: ``t(H)``
(= the right singular vectors V, unit columns) of a layer on inputs, W (the left singular
vectors) of a layer fed by layers; ``d`` is not applied.
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
from .driver import BlockOutput, kept_value, stats_of, user_stacklevel
from .executor import Executor
from .plan import ConditionPart, GraphData, InputPart, LayerArrays, LayerSpec, Sources
from .svd import VAR_FLOOR_EPS, fit_svd

__all__ = ["SVDSpec", "SVDPack", "KRYLOV_METHODS"]

#: methods of the truncated-SVD engine (RcppML's constrained ``deflation``/``krylov`` are not)
KRYLOV_METHODS = ("auto", "lanczos", "irlba", "randomized")
_EPS = float(np.finfo(np.float64).eps)


@checkpoint.register
@dataclass
class SVDPack:
    """The state of an SVD layer (engine orientation, ``M ≈ U diag(σ) Vᵀ``).

    U : (R, k) the factor over the layer's rows (W of a layer on inputs, Hᵀ of one fed by
        layers), orthonormal columns.
    sigma : (k,) singular values, decreasing.
    dV : (k,) ±1: the stored per-sample blocks times ``1/dV`` are the normalised factor.
    stats : ``{"sse", "ssq"}`` of the centred/scaled matrix.
    method, iterations, converged : the SVD engine's report (a layer on inputs).
    row_means, row_sds : μ and the scaling SDs of a centred/scaled layer on inputs.
    """

    U: np.ndarray
    sigma: np.ndarray
    dV: np.ndarray
    stats: dict | None = None
    method: str = "exact"
    iterations: int = 0
    converged: bool = True
    row_means: np.ndarray | None = None
    row_sds: np.ndarray | None = None

    def d(self, embedding: bool = False) -> np.ndarray:
        return self.sigma

    def per_sample(self, V) -> np.ndarray:
        return np.asarray(V, dtype=np.float64) / self.dV


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
            pack = SVDPack(U=np.zeros((self.rows, k)), sigma=np.zeros(k), dV=np.ones(k),
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
                       dV=np.ones(self.k),
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
        rot = g.task(f"L{L}-svd", (), rotation, red, spec)
        outs, vkeys = [], []
        for p in range(nb):
            key = g.task(f"L{L}-block-w", (p,), w_task, rot, spec, *args[p])
            vkeys.append(g.task(f"L{L}-v", (p,), kept_value, key))
            outs.append(key)
        peak = g.reduce(outs, first_peak, label=f"L{L}-sign-reduce")
        pack = g.task(f"L{L}-svd-update", (), finish, rot, peak)
        return pack, vkeys, g.task(f"L{L}-stats", (), stats_of, pack)

    def describe_fit(self, pack: SVDPack) -> dict:
        out = {"method": pack.method, "center": self.center, "scale": self.scale}
        if self.constant:
            out.update(iterations=int(pack.iterations), converged=bool(pack.converged),
                       row_means=pack.row_means, row_sds=pack.row_sds)
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


def centred_rows(spec: SVDSpec, args) -> np.ndarray:
    """``X_p = t(M_p)`` (n_p × R, float64) with every row (sample) centred / scaled as
    ``svd()`` centres and scales the rows of its input (population SD, variance floored)."""
    M = np.vstack([b.toarray() if sp.issparse(b) else np.asarray(b, dtype=np.float64)
                   for b in spec.rows_of(args)])
    X = np.array(M.T, dtype=np.float64, order="C")
    if spec.center or spec.scale:
        X -= X.mean(axis=1, keepdims=True)
    if spec.scale:
        var = (X * X).mean(axis=1)
        X /= np.sqrt(np.maximum(var, VAR_FLOOR_EPS * _EPS))[:, None]
    return X


def qr_task(spec: SVDSpec, *args):
    """This block's R factor (a QR of ``X_p``) and ‖X_p‖²."""
    X = centred_rows(spec, args)
    return np.linalg.qr(X, mode="r"), float(np.sum(X * X))


def qr_combine(*parts):
    """Tall-skinny QR: the R of the stacked R factors (in the order given); ‖X‖² summed."""
    if len(parts) == 1:
        return parts[0]
    R = np.linalg.qr(np.vstack([p[0] for p in parts]), mode="r")
    return R, float(sum(p[1] for p in parts))


def rotation(red, spec: SVDSpec):
    """From ``R = Ur Σ Vrᵀ``: ``(T = Vr Σ⁻¹, Vr, σ, ‖X‖²)`` for the first k triplets; a
    singular value below 100·ε·σ₁ gives a zero column (as ``svd()``)."""
    R, ssq = red
    _, sig, Vt = np.linalg.svd(R, full_matrices=False)
    k = spec.k
    Vk = np.ascontiguousarray(Vt[:k].T)
    d = sig[:k].copy()
    d1 = d[0] if d.size else 0.0
    tiny = d <= (VAR_FLOOR_EPS * _EPS * d1 if d1 > 0 else np.inf)
    inv = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, d))
    return Vk * inv, Vk, np.where(tiny, 0.0, d), float(ssq)


def w_task(rot, spec: SVDSpec, *args):
    """``W_p = X_p Vr Σ⁻¹`` (kept with the block) and its signed largest-|·| entry per column."""
    W = centred_rows(spec, args) @ rot[0]
    if W.shape[0] == 0:
        return BlockOutput((W, (np.zeros(W.shape[1]),)))
    idx = np.argmax(np.abs(W), axis=0)
    return BlockOutput((W, (W[idx, np.arange(W.shape[1])],)))


def first_peak(*parts):
    """The signed entry of largest magnitude per column, the first one on ties (block order)."""
    vals = [p[1][0] if isinstance(p, BlockOutput) else p[0] for p in parts]
    best = np.array(vals[0], dtype=np.float64, copy=True)
    for v in vals[1:]:
        take = np.abs(v) > np.abs(best)
        best[take] = v[take]
    return (best,)


def finish(rot, peak) -> SVDPack:
    """The package: signs from the peaks (largest-|W| entry positive), the loss."""
    _, Vk, d, ssq = rot
    f = np.sign(peak[0])
    f[f == 0] = 1.0
    sse = max(ssq - float(d @ d), 0.0)
    return SVDPack(U=Vk * f, sigma=d, dV=f, stats={"sse": sse, "ssq": ssq})
