"""Alternating least squares NMF as one Dask pass over the column blocks per iteration.

Per iteration t (docs/concepts.md):

    per block p, one task   H_p, P_p = A_p H_pᵀ, Q_p = H_p H_pᵀ, s_p, s2_p    (kernels.als)
    fixed-order tree        P = Σ P_p, Q = Σ Q_p, s = Σ s_p, ...
    W tasks by row range    Wᵀ = NNLS(Q̂ + L2, P̂ᵀ − L1)   with P̂, Q̂ the partials of the
                            normalised H (a diagonal rescaling of P, Q)
    one small task          d = column norms of W, W ← W/d, next Gram WᵀW, the loss

The factors of the iteration are persisted (``dask.persist`` / ``client.persist``) and the previous
ones dropped, so the graph of every iteration has the same number of tasks. H stays with the
blocks (``Ht_p``, samples × k) as its raw solve; the global row scale ``d_h`` is carried in the
small W package and applied lazily.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np

from ..io.delta_csc import DeltaCSC
from ..kernels.als import h_step_dense, h_step_sparse, w_solve
from ..kernels.nnls import gram_cholesky
from ..kernels.products import gram
from . import checkpoint
from .blocks import W_ROWS_PER_TASK, BlockedMatrix, block_stats, row_ranges, sum_stats
from .driver import (
    CONVERGENCE_PATIENCE,
    BlockOutput,
    Built,
    FitKind,
    Report,
    drive,
    kept_value,
    stats_of,
)
from .executor import Executor
from .multi import column_scale, factor_scale

EPS_GRAM = 1e-15
EPS_D = 1e-15
__all__ = ["ALSConfig", "ALSState", "WPack", "fit_als", "compute_block_stats",
           "CONVERGENCE_PATIENCE"]


@dataclass(frozen=True)
class ALSConfig:
    """Numerical settings of one ALS fit (already validated by the caller).

    Pairs are ``(W side, H side)`` as in RcppML.
    """

    k: int
    maxit: int = 100
    tol: float = 1e-4
    L1: tuple[float, float] = (0.0, 0.0)
    L2: tuple[float, float] = (0.0, 0.0)
    upper_bound: tuple[float, float] = (0.0, 0.0)
    nonneg: tuple[bool, bool] = (True, True)
    norm: str = "L1"
    solver: str = "cd"  # "cd" or "cholesky"
    cd_maxit: int = 100
    cd_tol: float = 1e-8
    target_lambda: float = 0.0  # H side
    dtype: Any = np.float32


@checkpoint.register
@dataclass
class WPack:
    """The small package every block task receives: W, its Gram, and scales (opaque to Dask)."""

    W: np.ndarray
    G: np.ndarray
    L: np.ndarray | None
    t: int
    xscale: np.ndarray
    d: np.ndarray | None
    dh: np.ndarray | None
    stats: dict | None = None
    #: masked fits with penalties: the extra Gram of the next H solves, and λ Wn Lg Wnᵀ of W
    gx: np.ndarray | None = None
    wg: np.ndarray | None = None
    #: block-sequential fits (engine.online): per batch, the scale of its statistics (B × k)
    bscale: np.ndarray | None = None


@dataclass
class ALSState:
    """What a finished (or interrupted) fit leaves: factors in the solver's layout and histories."""

    W: np.ndarray  # m × k, normalised columns
    d: np.ndarray  # k
    h_blocks: list  # raw Ht_p (n_p × k): values, or futures on a cluster
    h_scale: np.ndarray  # divide raw H rows by this to normalise
    iterations: int
    converged: bool
    sse: float
    loss_history: list[float] = field(default_factory=list)  # SSE per iteration
    tol_history: list[float] = field(default_factory=list)
    sq_norm: float = 0.0
    seconds: float = 0.0
    graph_sizes: list[int] = field(default_factory=list)
    #: block-sequential fits: per block, multiply its raw H by this instead (``h_scale`` unused)
    h_mult: list | None = None


# --------------------------------------------------------------------------------------------
# task functions (run on workers)


def h_block_task(block, wpack, hprev, target, cfg: ALSConfig):
    """H half-step on one block plus its W-update partials (a CSC or dense block, or a
    scan-layout store's block as stored, :class:`~dask_factor.io.delta_csc.DeltaCSC`)."""
    W = wpack.W
    m, k = W.shape
    n_p = block.shape[1]
    Ht = np.empty((n_p, k), dtype=cfg.dtype)
    warm = hprev is not None and cfg.solver != "cholesky"
    exact = cfg.solver == "active"
    Xprev = hprev if warm else np.zeros((1, k), dtype=cfg.dtype)
    xscale = wpack.xscale
    use_chol = cfg.solver == "cholesky"
    L = wpack.L if use_chol else wpack.G
    nonneg, ub, l1 = cfg.nonneg[1], cfg.upper_bound[1], cfg.L1[1]
    tlam = cfg.target_lambda if (target is not None and cfg.target_lambda > 0) else 0.0
    Tt = target if tlam != 0.0 else np.zeros((1, k), dtype=np.float64)
    if hasattr(block, "indptr"):  # CSC, or a scan-layout block as stored (DeltaCSC)
        coded = isinstance(block, DeltaCSC)
        P = np.zeros((m, k), dtype=W.dtype)
        Q = np.zeros((k, k), dtype=np.float64)
        s = np.zeros(k, dtype=np.float64)
        s2 = np.zeros(k, dtype=np.float64)
        sweeps = h_step_sparse(
            block.indptr, block.deltas if coded else block.indices, block.data, W, wpack.G, L,
            l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm, cfg.cd_maxit, cfg.cd_tol,
            exact, Ht, P, Q, s, s2, delta=coded,
        )
    else:
        P, Q, s, s2, sweeps = h_step_dense(
            block, W, wpack.G, L, l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm,
            cfg.cd_maxit, cfg.cd_tol, exact, Ht,
        )
    # P stays in the storage dtype: the reduction sums in float64 (each value converted exactly),
    # and a float32 partial is half the bytes to hold and to move between workers
    return BlockOutput((Ht, (P, Q, s, s2, float(sweeps))))


def w_rows_task(red, wpack, r0, r1, cfg: ALSConfig):
    """Solve rows r0:r1 of W from the reduced partials ``red = (P (m × k), Q (k × k), s, s2,
    sweeps)`` of the normalised H; returns the rows' raw solve (r1 − r0 × k, float64)."""
    P, Q, s, s2, _ = red
    dh = factor_scale(s, s2, cfg.norm)
    k = Q.shape[0]
    Qn = Q / np.outer(dh, dh)
    G = Qn + (cfg.L2[0] + EPS_GRAM) * np.eye(k)
    Bt = P[r0:r1] / dh - cfg.L1[0]
    use_chol = cfg.solver == "cholesky"
    L = gram_cholesky(G) if use_chol else G
    warm = wpack.t > 0 and not use_chol
    Xwarm = (np.asarray(wpack.W[r0:r1], dtype=np.float64) * dh) if warm else None
    return w_solve(G, Bt, L, use_chol, cfg.nonneg[0], cfg.upper_bound[0], Xwarm, warm,
                   cfg.cd_maxit, cfg.cd_tol, cfg.solver == "active", np.float64)


def w_update_task(red, wpack_prev, sq_norm, cfg: ALSConfig, gram_target, m: int):
    """:func:`w_rows_task` for all ``m`` rows and :func:`w_finish` in one task (the same bits:
    each row is solved on its own)."""
    return w_finish(red, wpack_prev, sq_norm, cfg, gram_target,
                    w_rows_task(red, wpack_prev, 0, m, cfg))


def make_wpack(W, t, cfg: ALSConfig, *, dh=None, d=None, gram_target=None, wtw=None):
    """The small package broadcast to every block task: W, its Gram (and Cholesky factor).

    ``wtw`` is ``gram(W)`` of the stored W when the caller has it already.
    """
    W = np.ascontiguousarray(W, dtype=cfg.dtype)
    k = W.shape[1]
    WtW = gram(W.astype(np.float64)) if wtw is None else wtw
    G = WtW + (cfg.L2[1] + EPS_GRAM) * np.eye(k)
    if cfg.target_lambda > 0:
        G += cfg.target_lambda * np.eye(k)
    elif cfg.target_lambda < 0 and gram_target is not None:
        tr_t = np.trace(gram_target)
        alpha = np.trace(G) / tr_t if tr_t > 1e-10 else 0.0
        G = G - abs(cfg.target_lambda) * alpha * gram_target
        evals, evecs = np.linalg.eigh(G)
        if evals.min() < 1e-8:
            G = (evecs * np.maximum(evals, 1e-8)) @ evecs.T
    L = gram_cholesky(G) if cfg.solver == "cholesky" else None
    # warm start for the next H solve: H_raw ≈ d_w ⊙ H_norm = H_raw_prev · d_w / d_h
    xscale = (d / dh) if (d is not None and dh is not None) else np.ones(k)
    return WPack(W=W, G=G, L=L, t=t, xscale=xscale, d=d, dh=dh)


def w_finish(red, wpack_prev, sq_norm, cfg: ALSConfig, gram_target, *rows):
    """Assemble W from its row solves, extract d, compute the loss (``stats["sse"]``) and the
    next iteration's package (:class:`WPack`)."""
    P, Q, s, s2, sweeps = red
    dh = factor_scale(s, s2, cfg.norm)
    Wt = np.vstack(rows) if len(rows) > 1 else rows[0]
    d = column_scale(Wt, cfg.norm)
    Wn_store = (Wt / d).astype(cfg.dtype)
    W64 = Wn_store.astype(np.float64)
    Qn = Q / np.outer(dh, dh)
    WtW = gram(W64)
    cross = float(np.sum(d * np.einsum("ik,ik->k", W64, P) / dh))  # no m × k temporary P/dh
    quad = float(np.sum(np.outer(d, d) * WtW * Qn))
    sse = sq_norm - 2.0 * cross + quad
    pack = make_wpack(Wn_store, wpack_prev.t + 1, cfg, dh=dh, d=d, gram_target=gram_target,
                      wtw=WtW)
    pack.stats = {"sse": max(sse, 0.0), "sweeps": sweeps}
    return pack


# --------------------------------------------------------------------------------------------
# the fit kind


def compute_on(obj, client):
    if client is not None:
        return client.compute(obj).result()
    return dask.compute(obj)[0]


def compute_block_stats(bm: BlockedMatrix, client=None) -> np.ndarray:
    """One validation pass: (Σa², #non-finite, #negative, #non-zero) over all blocks."""
    parts = [dask.delayed(block_stats, pure=True)(b, dask_key_name=f"stats-{bm.name}-{i}")
             for i, b in enumerate(bm.blocks)]
    total = dask.delayed(sum_stats, pure=True)(*parts, dask_key_name=f"stats-{bm.name}")
    return np.asarray(compute_on(total, client))


def _digest(a) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def fit_fingerprint(bm: BlockedMatrix, sq_norm: float, W0, settings: dict) -> dict:
    """What a checkpoint of this fit must match: the input, the settings and the initial W
    (in the order a mismatch is reported)."""
    return {"shape": list(bm.shape), **settings,
            "seed/initial W": _digest(np.asarray(W0, dtype=np.float64)),
            "dtype": np.dtype(bm.dtype).name, "sq_norm": float(sq_norm),
            "column blocks": _digest(np.asarray(bm.bounds, dtype=np.int64))}


def config_fingerprint(cfg) -> dict:
    """A config's fields that define the fit (``maxit`` and ``tol`` may change on resume)."""
    out = {}
    for k, v in cfg.__dict__.items():
        if k in ("maxit", "tol"):
            continue
        out[k] = np.dtype(v).name if k == "dtype" else (list(v) if isinstance(v, tuple) else v)
    return out


#: on a cluster, W solves of at most this m·k² (pbmc3k at k = 10: 1.4·10⁶, about 7 ms of
#: solving) run inside the W-update task instead of as row-range tasks of their own
FUSED_W_WORK = 4_000_000


class ALSKind(FitKind):
    """Plain ALS: per block the H solve and the W-update partials; the tree; W by row ranges."""

    prefix = "nmf"

    def __init__(self, bm: BlockedMatrix, W0, cfg: ALSConfig, *, sq_norm: float,
                 target_blocks=None, gram_target=None, w_rows_per_task=W_ROWS_PER_TASK):
        self.bm, self.W0, self.cfg, self.sq_norm = bm, W0, cfg, sq_norm
        self.target_blocks, self.gram_target = target_blocks, gram_target
        m = bm.shape[0]
        self.row_bounds = row_ranges(m, w_rows_per_task)

    def setup(self, ctx):
        # on a cluster a small W solve and the W update run in the reduction's last task: a
        # task of its own costs a scheduler round trip (several ms), more than a split saves
        m, k = self.W0.shape
        self.fused_w = ctx.ex.distributed and m * k * k <= FUSED_W_WORK
        self.bkeys = ctx.blocks(self.bm, delta=True)  # h_block_task reads DeltaCSC blocks
        self.tkeys = ([ctx.put(f"target-{b}", t) for b, t in enumerate(self.target_blocks)]
                      if self.target_blocks is not None else [None] * self.bm.n_blocks)

    def initial_state(self):
        return {"pack": make_wpack(self.W0, 0, self.cfg, gram_target=self.gram_target),
                "h": [None] * self.bm.n_blocks}

    def build(self, g, st, step):
        cfg, pack = self.cfg, st["pack"]
        parts, new_h = [], []
        for b in range(self.bm.n_blocks):
            hk = g.task("block-solve", (b,), h_block_task, self.bkeys[b], pack, st["h"][b],
                        self.tkeys[b], cfg)
            new_h.append(g.task("h", (b,), kept_value, hk))
            parts.append(hk)  # the reduction reads the partials straight from the block task
        rb = self.row_bounds
        if self.fused_w:  # the sum's last task goes on to solve W and update it
            new_pack = g.reduce(parts, then=(w_update_task, pack, self.sq_norm, cfg,
                                             self.gram_target, rb[-1]), then_label="w-update")
        else:
            red = g.reduce(parts)
            rows = [g.task("w-rows", (c,), w_rows_task, red, pack, rb[c], rb[c + 1], cfg)
                    for c in range(len(rb) - 1)]
            new_pack = g.task("w-update", (), w_finish, red, pack, self.sq_norm, cfg,
                              self.gram_target, *rows)
        return Built({"pack": new_pack, "h": new_h}, [g.task("stats", (), stats_of, new_pack)])

    def record(self, step, stats):
        return Report(float(stats[0]["sse"]))

    def fingerprint(self):
        return fit_fingerprint(self.bm, self.sq_norm, self.W0, {
            "kind": "als", **config_fingerprint(self.cfg),
            "target": None if self.target_blocks is None else _digest(
                np.vstack(self.target_blocks))})


def _fit_als(bm: BlockedMatrix, W0: np.ndarray, cfg: ALSConfig, *, sq_norm: float,
             client=None, target_blocks: list | None = None,
             gram_target: np.ndarray | None = None,
             on_iteration: Callable[[int, float, float], Any] | None = None,
             w_rows_per_task: int = W_ROWS_PER_TASK, checkpoint=None,
             checkpoint_every: int | None = None, resume=None,
             updates_per_pass: int = 1) -> ALSState:
    m, n = bm.shape
    if updates_per_pass > 1:  # block-sequential ALS (engine.online); targets are refused before
        from .online import OnlineKind

        kind = OnlineKind(bm, W0, cfg, sq_norm=sq_norm, updates_per_pass=updates_per_pass,
                          w_rows_per_task=w_rows_per_task)
    else:
        kind = ALSKind(bm, W0, cfg, sq_norm=sq_norm, target_blocks=target_blocks,
                       gram_target=gram_target, w_rows_per_task=w_rows_per_task)
    mn = float(m) * float(n)
    cb = None
    if on_iteration is not None:
        def cb(it, sse, rel):
            return on_iteration(it, sse / mn if mn else 0.0, rel)
    res = drive(kind, maxit=cfg.maxit, tol=cfg.tol, client=client, on_iteration=cb,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                name="nmf")
    (final,) = Executor(client).gather([res.state["pack"]])
    k = cfg.k
    d = final.d if final.d is not None else np.ones(k)
    dh = final.dh if final.dh is not None else np.ones(k)
    h_mult = kind.h_multipliers(final) if final.bscale is not None else None
    return ALSState(
        W=np.asarray(final.W), d=np.asarray(d, dtype=np.float64),
        h_blocks=list(res.state["h"]), h_scale=np.asarray(dh, dtype=np.float64),
        iterations=res.iterations, converged=res.converged,
        sse=res.scores[-1] if res.scores else float(sq_norm),
        loss_history=list(res.scores), tol_history=list(res.rels), sq_norm=sq_norm,
        seconds=res.seconds, graph_sizes=res.graph_sizes, h_mult=h_mult,
    )


def fit_als(bm: BlockedMatrix, W0: np.ndarray, cfg: ALSConfig, **kwargs) -> ALSState:
    """Run ALS iterations until convergence or ``cfg.maxit`` on the driver.

    Parameters
    ----------
    bm : BlockedMatrix
        The data, (m, n).
    W0 : ndarray (m, k)
        Initial W (used as is for the first H solve, like RcppML).
    cfg : ALSConfig
    sq_norm : float
        ‖A‖²_F, for the loss.
    client : distributed.Client, optional
        Where to run; default: dask's current scheduler (threads, or the active client).
    target_blocks : list of (n_p × k) float64 arrays, optional
        H-side target per block (with ``cfg.target_lambda > 0``).
    gram_target : (k, k) ndarray, optional
        ``T Tᵀ / n`` for a negative ``target_lambda``.
    on_iteration : callable(t, mse, rel), optional
        Called after every iteration (progress bars); returning True stops the fit.
    checkpoint, checkpoint_every, resume : optional
        See :func:`dask_factor.engine.driver.drive`.
    updates_per_pass : int, default 1
        W updates per pass over the blocks; above 1, block-sequential ALS
        (:mod:`dask_factor.engine.online`, no target).

    Returns
    -------
    ALSState
    """
    return _fit_als(bm, W0, cfg, **kwargs)
