"""Masked ALS (cross-validation hold-out, NaN and ``mask="zeros"``) as one Dask pass per iteration.

The same shape as :mod:`dask_factor.engine.als` (one task per column block, fixed-order tree
reduction, W solved by row ranges, factors persisted each iteration), with the masked kernels of
:mod:`dask_factor.kernels.masked`:

    per block p   H_p with per-column Grams; P_p (train entries), Q_p, C_p (per-row Gram terms,
                  m × k(k+1)/2), s_p, s2_p, and the test/train SSE of the model (W, H_p)
    tree          Σ over blocks, in block order
    W rows        per row i: G_i = Q̂ − Ĉ_i (or Ĉ_i when only stored entries are observed)

The hold-out is regenerated inside every block task from the block's global column offset, so it
never exists outside a task and a recomputed task (lost worker) regenerates the same mask.

**Which model a loss belongs to.** The block task evaluates the losses of ``(W_{t−1}, H_t)``, the
model right after the H half-step of iteration t, with no extra pass over A. That model is
consistent (``W diag(d) H`` with d the scale of H's rows), so the fit returns the factors of the
iteration with the best test loss exactly as they were scored.

Memory per task: the block, W, and the per-row Gram terms C (m·k(k+1)/2 float64: 8.8 MB for
m = 20,000, k = 10) — independent of n, like the m × k partial P of the unmasked engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernels.masked import cv_hash_seed, holdout_threshold, masked_h_step, masked_w_rows
from ..kernels.products import gram
from .als import (
    EPS_GRAM,
    ALSConfig,
    config_fingerprint,
    fit_fingerprint,
    make_wpack,
)
from .blocks import W_ROWS_PER_TASK, BlockedMatrix, row_ranges
from .driver import BlockOutput, Built, FitKind, Report, drive, kept_value, stats_of
from .executor import Executor
from .multi import (
    SideSpec,
    angular_transform,
    apply_angular,
    column_scale,
    factor_scale,
    graph_term,
    side_gram_extra,
    v_graph_term_data,
)

__all__ = ["MaskSpec", "MaskedState", "fit_masked", "cv_hash_seed"]


@dataclass(frozen=True)
class MaskSpec:
    """Which entries leave the fit.

    Attributes
    ----------
    test_fraction : float
        Held-out fraction (0: no test set, only missing values).
    cv_seed : int
        Hash seed (see :func:`cv_hash_seed`).
    mask_zeros : bool
        Only non-zero entries can be test entries (O(nnz) hashing: the scalable path).
    observed_only : bool
        Only stored entries are observed (``mask="zeros"``): zeros are missing.
    """

    test_fraction: float = 0.0
    cv_seed: int = 12345
    mask_zeros: bool = False
    observed_only: bool = False

    @property
    def thr(self) -> np.uint64:
        return np.uint64(holdout_threshold(self.test_fraction))

    @property
    def seed(self) -> np.uint64:
        return np.uint64(cv_hash_seed(self.cv_seed))


@dataclass
class MaskedState:
    """A finished masked fit: the factors of the best (CV) or last iteration, and histories."""

    W: np.ndarray  # m × k, normalised columns
    d: np.ndarray
    h_blocks: list  # raw Ht_p
    h_scale: np.ndarray  # divide raw H rows by this
    iterations: int
    best_iter: int  # 1-based
    converged: bool
    train_sse: float
    test_sse: float
    n_train: float
    n_test: float
    train_history: list[float] = field(default_factory=list)  # MSE
    test_history: list[float] = field(default_factory=list)  # MSE
    seconds: float = 0.0
    graph_sizes: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# task functions


def _csc_arrays(block, observed_only: bool = False):
    """CSC arrays of a block; a dense block becomes 'every entry stored' (NaN kept).

    With ``observed_only`` (``mask="zeros"``) zeros are missing values: they are dropped, also
    when a sparse block stores them explicitly.
    """
    if hasattr(block, "indptr"):
        if observed_only and block.nnz and not np.all(block.data != 0):
            block = block.copy()
            block.eliminate_zeros()
        return block.indptr, block.indices, block.data, True
    if observed_only:
        import scipy.sparse as sp

        b = sp.csc_matrix(np.asarray(block))
        b.sort_indices()
        return b.indptr, b.indices, b.data, False
    m, n_p = block.shape
    # int32 offsets when they fit, as sparse blocks have: one compiled kernel for both
    indptr = np.arange(n_p + 1, dtype=np.int32 if m * n_p < 2**31 else np.int64) * m
    indices = np.tile(np.arange(m, dtype=np.int32), n_p)
    data = np.ascontiguousarray(np.asarray(block).T).ravel()
    return indptr, indices, data, False


NO_MASK = np.zeros(0, dtype=np.int64)
NO_GRAM = np.zeros((0, 0))


@dataclass(frozen=True)
class Penalties:
    """Per-factor options of a masked fit beyond L1, L2 and bounds (RcppML's ``W()``/``H()``).

    ``W`` and ``H`` are :class:`~.multi.SideSpec` (their ``graph_lambda``, ``L21``, ``angular``
    and ``target_lambda`` act here); ``w_graph`` (m × m) and ``h_graph`` (n × n) are Laplacians,
    ``w_target`` (m × k) and ``h_target`` (n × k, samples × k) targets. They act on the normal
    equations as in an unmasked fit (:func:`~.multi.side_gram`), every column's or row's own
    masked Gram receiving the same extra terms.
    """

    W: SideSpec = SideSpec()
    H: SideSpec = SideSpec()
    w_graph: Any = None
    w_target: np.ndarray | None = None
    h_graph: Any = None
    h_target: np.ndarray | None = None

    @property
    def any(self) -> bool:
        return any((self.W.graph_lambda and self.w_graph is not None, self.W.L21,
                    self.W.angular, self.W.target_lambda and self.w_target is not None,
                    self.H.graph_lambda and self.h_graph is not None, self.H.L21,
                    self.H.angular, self.H.target_lambda and self.h_target is not None))

    def gram_target(self, T):
        return None if T is None else (T.T @ T) / T.shape[0]

    def fingerprint(self) -> dict:
        import hashlib

        def dig(x):
            if x is None:
                return None
            x = x.toarray() if hasattr(x, "toarray") else np.asarray(x, dtype=np.float64)
            return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()

        return {"W": repr(self.W), "H": repr(self.H), "w_graph": dig(self.w_graph),
                "w_target": dig(self.w_target), "h_graph": dig(self.h_graph),
                "h_target": dig(self.h_target)}


def mask_arrays(mblock):
    """CSC ``indptr``/``indices`` (sorted) of a block of the user's mask (True = missing)."""
    if mblock is None:
        return NO_MASK, NO_MASK
    import scipy.sparse as sp

    M = sp.csc_matrix(mblock)
    M.eliminate_zeros()
    M.sort_indices()
    return M.indptr.astype(np.int64), M.indices.astype(np.int64)


def _h_task(block, wpack, hprev, j0, cfg: ALSConfig, ms: MaskSpec, mblock=None, bx=None,
            tm=None):
    """The masked H half-step of one block and its partials.

    With ``tm`` (the second phase of H's angular step) ``hprev`` is this iteration's solve and
    is transformed, ``H ← max(H Tm, 0)``, instead of solved again.
    """
    W = wpack.W
    m, k = W.shape
    indptr, indices, data, sparse = _csc_arrays(block, ms.observed_only)
    n_p = indptr.size - 1
    Ht = np.empty((n_p, k), dtype=cfg.dtype)
    fixed = tm is not None
    if fixed:
        X = np.asarray(hprev, dtype=np.float64) @ tm
        if cfg.nonneg[1]:
            np.maximum(X, 0.0, out=X)
        Xprev, warm = X.astype(cfg.dtype), True
    else:
        warm = hprev is not None
        Xprev = hprev if warm else np.zeros((1, k), dtype=cfg.dtype)
    kk = k * (k + 1) // 2
    P = np.zeros((m, k))
    Q = np.zeros((k, k))
    C = np.zeros((m, kk))
    s = np.zeros(k)
    s2 = np.zeros(k)
    stats = np.zeros(4)
    # zeros that a sparse block does not store can be test entries: hash every row
    all_rows = sparse and ms.test_fraction > 0 and not ms.mask_zeros and not ms.observed_only
    mptr, midx = mask_arrays(mblock)
    gx = wpack.gx if wpack.gx is not None else NO_GRAM
    sweeps = masked_h_step(
        indptr, indices, data, int(j0), m, W, wpack.G, cfg.L1[1], cfg.nonneg[1],
        cfg.upper_bound[1], Xprev, wpack.xscale, warm, cfg.cd_maxit, cfg.cd_tol,
        cfg.solver == "active", ms.seed, ms.thr, all_rows, ms.mask_zeros, ms.observed_only,
        cfg.L2[1] + EPS_GRAM,
        Ht, P, Q, C, s, s2, stats, mptr, midx, gx,
        bx if bx is not None else np.zeros((0, k)), fixed,
    )
    return BlockOutput((Ht, (P, Q, C, s, s2, stats, float(sweeps))))


def _h_gram(out):
    """Phase one of H's angular step: the raw Gram ``HᵀH`` of a block's solve."""
    H = np.asarray(out[0], dtype=np.float64)
    return (gram(H),)


def _angular_tm(red, lam: float):
    return angular_transform(red[0], lam)


def _w_rows_task(red, wpack, r0, r1, cfg: ALSConfig, ms: MaskSpec, pen: Penalties | None = None,
                 w_gram_target=None, wtarget=None):
    P, Q, C, s, s2, _, _ = red
    dh = factor_scale(s, s2, cfg.norm)
    Qn = Q / np.outer(dh, dh)
    Pn = P[r0:r1] / dh
    warm = wpack.t > 0
    k = Q.shape[0]
    Xwarm = (np.asarray(wpack.W[r0:r1], dtype=np.float64) * dh) if warm else np.zeros((1, 1))
    Xt = np.empty((r1 - r0, k))
    gx, bx = NO_GRAM, np.zeros((0, k))
    if pen is not None:
        side = pen.W
        norms = None
        if side.L21 and warm:
            W64 = np.asarray(wpack.W, dtype=np.float64)
            norms = np.sqrt((W64 * W64).sum(axis=0))
        has_t = wtarget is not None
        gx = side_gram_extra(Qn, side, graph_term=wpack.wg, norms=norms,
                             gram_target=w_gram_target, has_target=has_t)
        if has_t and side.target_lambda > 0:
            bx = np.ascontiguousarray(side.target_lambda * wtarget[r0:r1], dtype=np.float64)
    masked_w_rows(Qn, C[r0:r1], dh, Pn, cfg.L1[0], cfg.L2[0] + EPS_GRAM, ms.observed_only,
                  cfg.nonneg[0], cfg.upper_bound[0], Xwarm, warm, cfg.cd_maxit, cfg.cd_tol,
                  cfg.solver == "active", Xt, gx, bx)
    return Xt


def _h_graph_term(Lg, lam: float, red, norm: str, *blocks):
    """``λ Hn Lg Hnᵀ`` (k × k) of the H just solved (gathers the blocks: n × k)."""
    return v_graph_term_data(Lg, lam, (None, None, red[3], red[4]), norm, *blocks)


def _w_finish(red, wpack_prev, cfg: ALSConfig, pen: Penalties | None, hterm, h_gram_target,
              w_graph, *rows):
    _, _, _, s, s2, stats, sweeps = red
    dh = factor_scale(s, s2, cfg.norm)
    Wt = np.vstack(rows) if len(rows) > 1 else rows[0]
    if pen is not None and pen.W.angular > 0:
        Wt = apply_angular(Wt, pen.W.angular, pen.W.nonneg)
    d = column_scale(Wt, cfg.norm)
    pack = make_wpack((Wt / d).astype(cfg.dtype), wpack_prev.t + 1, cfg, dh=dh, d=d)
    if pen is not None:
        W64 = np.asarray(pack.W, dtype=np.float64)
        hn = np.sqrt(s2) / dh
        pack.gx = side_gram_extra(gram(W64), pen.H, graph_term=hterm,
                                  norms=hn if pen.H.L21 else None, gram_target=h_gram_target,
                                  has_target=pen.h_target is not None)
        if w_graph is not None and pen.W.graph_lambda:
            pack.wg = graph_term(W64, w_graph, pen.W.graph_lambda)
    pack.stats = {"test_sse": float(stats[0]), "train_sse": float(stats[1]),
                  "n_test": float(stats[2]), "n_train": float(stats[3]),
                  "s": s, "s2": s2, "sweeps": sweeps}
    return pack


def _first_pack(W0, cfg: ALSConfig, pen: Penalties | None, h_gram_target):
    """The package of the first H solve: W0, its Gram and (with penalties) the H extras that
    need no H yet (a target; L21 and the graph terms wait for a first solve, as in RcppML)."""
    pack = make_wpack(W0, 0, cfg)
    if pen is not None:
        W64 = np.asarray(pack.W, dtype=np.float64)
        pack.gx = side_gram_extra(gram(W64), pen.H, gram_target=h_gram_target,
                                  has_target=pen.h_target is not None)
    return pack


# --------------------------------------------------------------------------------------------
# the fit kind


class MaskedKind(FitKind):
    """Masked ALS: the score is the test MSE (CV) or the train MSE; the model of a step is the W
    that went in with the H it produced (what the block tasks scored)."""

    prefix = "nmf-masked"

    def __init__(self, bm: BlockedMatrix, W0, cfg: ALSConfig, ms: MaskSpec, *, patience: int,
                 w_rows_per_task: int = W_ROWS_PER_TASK, mask: BlockedMatrix | None = None,
                 penalties: Penalties | None = None):
        self.bm, self.W0, self.cfg, self.ms = bm, W0, cfg, ms
        self.mask = mask
        self.pen = penalties if penalties is not None and penalties.any else None
        self.cv = ms.test_fraction > 0
        self.select_best = self.cv
        self.patience = patience if self.cv else None
        m = bm.shape[0]
        self.row_bounds = row_ranges(m, w_rows_per_task)

    def setup(self, ctx):
        self.bkeys = ctx.blocks(self.bm)
        self.mkeys = ctx.blocks(self.mask) if self.mask is not None else [None] * len(self.bkeys)
        pen, b = self.pen, self.bm.bounds
        self.bx = [None] * len(self.bkeys)
        self.wt = self.w_gram_target = self.h_gram_target = self.h_graph = self.w_graph = None
        if pen is None:
            return
        if pen.h_target is not None:
            self.h_gram_target = ctx.put("h-gram-target", pen.gram_target(pen.h_target))
            if pen.H.target_lambda > 0:
                self.bx = [ctx.put(f"h-target-{p}", np.ascontiguousarray(
                    pen.H.target_lambda * pen.h_target[b[p]:b[p + 1]], dtype=np.float64))
                    for p in range(len(self.bkeys))]
        if pen.w_target is not None:
            self.wt = ctx.put("w-target", np.asarray(pen.w_target, dtype=np.float64))
            self.w_gram_target = ctx.put("w-gram-target", pen.gram_target(pen.w_target))
        if pen.h_graph is not None and pen.H.graph_lambda:
            self.h_graph = ctx.put("h-graph", pen.h_graph)
        if pen.w_graph is not None and pen.W.graph_lambda:
            self.w_graph = ctx.put("w-graph", pen.w_graph)

    def initial_state(self):
        pen = self.pen
        hgt = None if pen is None else pen.gram_target(pen.h_target)
        return {"pack": _first_pack(self.W0, self.cfg, pen, hgt),
                "h": [None] * self.bm.n_blocks}

    def build(self, g, st, step):
        cfg, ms, pack, pen = self.cfg, self.ms, st["pack"], self.pen
        parts, new_h = [], []
        for b in range(self.bm.n_blocks):
            hk = g.task("block-solve", (b,), _h_task, self.bkeys[b], pack, st["h"][b],
                        int(self.bm.bounds[b]), cfg, ms, self.mkeys[b], self.bx[b])
            new_h.append(g.task("h", (b,), kept_value, hk))
            parts.append(hk)
        if pen is not None and pen.H.angular > 0:  # phase two: transform H, then the partials
            grams = [g.task("h-gram", (b,), _h_gram, hk) for b, hk in enumerate(parts)]
            tm = g.task("h-angular", (), _angular_tm, g.reduce(grams, label="h-gram-reduce"),
                        pen.H.angular)
            parts, new_h = [], []
            for b in range(self.bm.n_blocks):
                hk = g.task("block-angular", (b,), _h_task, self.bkeys[b], pack,
                            g.key("h", b), int(self.bm.bounds[b]), cfg, ms, self.mkeys[b],
                            None, tm)
                new_h.append(g.task("ha", (b,), kept_value, hk))
                parts.append(hk)
        red = g.reduce(parts)
        rb = self.row_bounds
        rows = [g.task("w-rows", (c,), _w_rows_task, red, pack, rb[c], rb[c + 1], cfg, ms, pen,
                       self.w_gram_target, self.wt)
                for c in range(len(rb) - 1)]
        hterm = None
        if self.h_graph is not None:
            hterm = g.task("h-graph", (), _h_graph_term, self.h_graph, pen.H.graph_lambda, red,
                           cfg.norm, *new_h)
        new_pack = g.task("w-update", (), _w_finish, red, pack, cfg, pen, hterm,
                          self.h_gram_target, self.w_graph, *rows)
        return Built({"pack": new_pack, "h": new_h}, [g.task("stats", (), stats_of, new_pack)])

    def record(self, step, stats):
        st = stats[0]
        train = st["train_sse"] / max(st["n_train"], 1.0)
        test = st["test_sse"] / st["n_test"] if st["n_test"] > 0 else math.nan
        return Report(test if self.cv else train, loss=train)

    def model(self, prev, new):
        return {"pack": prev["pack"], "h": new["h"]}

    def fingerprint(self):
        fp = fit_fingerprint(self.bm, 0.0, self.W0, {
            "kind": "masked", **config_fingerprint(self.cfg),
            "mask": {k: (float(v) if isinstance(v, float) else v)
                     for k, v in self.ms.__dict__.items()}})
        if self.mask is not None:
            fp["user mask"] = list(self.mask.shape)
        if self.pen is not None:
            fp["penalties"] = self.pen.fingerprint()
        return fp


def fit_masked(
    bm: BlockedMatrix,
    W0: np.ndarray,
    cfg: ALSConfig,
    ms: MaskSpec,
    *,
    patience: int = 5,
    client=None,
    on_iteration: Callable[[int, float, float], object] | None = None,
    w_rows_per_task: int = W_ROWS_PER_TASK,
    checkpoint=None,
    checkpoint_every: int | None = None,
    resume=None,
    mask: BlockedMatrix | None = None,
    penalties: Penalties | None = None,
) -> MaskedState:
    """Run masked ALS until convergence, early stop or ``cfg.maxit``.

    With a test set (``ms.test_fraction > 0``) the score is the test MSE: the fit stops when it
    has not improved for ``patience`` iterations, or when its relative change stayed below
    ``cfg.tol`` for 5 consecutive iterations (converged), and the best iteration's model is
    returned. Without one the score is the train MSE (over the observed entries) with the usual
    rule, and the last model is returned. ``on_iteration(t, score, rel)`` may return True to stop.
    ``mask`` (blocked like ``bm``, True/non-zero = missing) adds the user's missing entries;
    ``penalties`` the per-factor options of :class:`Penalties`.
    """
    if cfg.solver == "cholesky":
        cfg = ALSConfig(**{**cfg.__dict__, "solver": "cd"})
    kind = MaskedKind(bm, W0, cfg, ms, patience=patience, w_rows_per_task=w_rows_per_task,
                      mask=mask, penalties=penalties)
    res = drive(kind, maxit=cfg.maxit, tol=cfg.tol, client=client, on_iteration=on_iteration,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                name="nmf")
    st = res.stats[res.best_iter - 1][0]
    (pack,) = Executor(client).gather([res.best["pack"]])
    Wu = np.asarray(pack.W, dtype=np.float64)
    c = column_scale(Wu, cfg.norm)
    e = factor_scale(np.asarray(st["s"]), np.asarray(st["s2"]), cfg.norm)
    hist = [kind_stats[0] for kind_stats in res.stats]
    train_h = [x["train_sse"] / max(x["n_train"], 1.0) for x in hist]
    test_h = [x["test_sse"] / x["n_test"] if x["n_test"] > 0 else math.nan for x in hist]
    return MaskedState(
        W=(Wu / c).astype(cfg.dtype), d=c * e, h_blocks=list(res.best["h"]), h_scale=e,
        iterations=res.iterations, best_iter=res.best_iter, converged=res.converged,
        train_sse=float(st["train_sse"]), test_sse=float(st["test_sse"]),
        n_train=float(st["n_train"]), n_test=float(st["n_test"]),
        train_history=train_h, test_history=test_h, seconds=res.seconds,
        graph_sizes=res.graph_sizes,
    )
