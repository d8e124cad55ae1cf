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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..kernels.masked import cv_hash_seed, holdout_threshold, masked_h_step, masked_w_rows
from .als import (
    CONVERGENCE_PATIENCE,
    EPS_D,
    EPS_GRAM,
    REDUCE_FANIN,
    W_ROWS_PER_TASK,
    ALSConfig,
    _h_scale,
    block_graph,
    make_wpack,
)
from .blocks import BlockedMatrix, add_reduction, tree_keys
from .executor import Executor

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
    indptr = np.arange(n_p + 1, dtype=np.int64) * m
    indices = np.tile(np.arange(m, dtype=np.int32), n_p)
    data = np.ascontiguousarray(np.asarray(block).T).ravel()
    return indptr, indices, data, False


def _h_task(block, wpack, hprev, j0, cfg: ALSConfig, ms: MaskSpec):
    W = wpack.W
    m, k = W.shape
    indptr, indices, data, sparse = _csc_arrays(block, ms.observed_only)
    n_p = indptr.size - 1
    Ht = np.empty((n_p, k), dtype=cfg.dtype)
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
    sweeps = masked_h_step(
        indptr, indices, data, int(j0), m, W, wpack.G, cfg.L1[1], cfg.nonneg[1],
        cfg.upper_bound[1], Xprev, wpack.xscale, warm, cfg.cd_maxit, cfg.cd_tol,
        ms.seed, ms.thr, all_rows, ms.mask_zeros, ms.observed_only, cfg.L2[1] + EPS_GRAM,
        Ht, P, Q, C, s, s2, stats,
    )
    return Ht, (P, Q, C, s, s2, stats, float(sweeps))


def _first(x):
    return x[0]


def _add_partials(*parts):
    parts = [q[1] if len(q) == 2 else q for q in parts]
    acc = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in parts[0]]
    for q in parts[1:]:
        for i in range(len(acc)):
            acc[i] = acc[i] + q[i]
    return tuple(acc)


def _w_rows_task(red, wpack, r0, r1, cfg: ALSConfig, ms: MaskSpec):
    P, Q, C, s, s2, _, _ = red
    dh = _h_scale(s, s2, cfg.norm)
    Qn = Q / np.outer(dh, dh)
    Pn = P[r0:r1] / dh
    warm = wpack.t > 0
    Xwarm = (np.asarray(wpack.W[r0:r1], dtype=np.float64) * dh) if warm else np.zeros((1, 1))
    Xt = np.empty((r1 - r0, Q.shape[0]))
    masked_w_rows(Qn, C[r0:r1], dh, Pn, cfg.L1[0], cfg.L2[0] + EPS_GRAM, ms.observed_only,
                  cfg.nonneg[0], cfg.upper_bound[0], Xwarm, warm, cfg.cd_maxit, cfg.cd_tol, Xt)
    return Xt


def _w_finish(red, wpack_prev, cfg: ALSConfig, *rows):
    _, _, _, s, s2, stats, sweeps = red
    dh = _h_scale(s, s2, cfg.norm)
    Wt = np.vstack(rows) if len(rows) > 1 else rows[0]
    d = _w_scale(Wt, cfg.norm)
    pack = make_wpack((Wt / d).astype(cfg.dtype), wpack_prev.t + 1, cfg, dh=dh, d=d)
    pack.stats = {"test_sse": float(stats[0]), "train_sse": float(stats[1]),
                  "n_test": float(stats[2]), "n_train": float(stats[3]),
                  "s": s, "s2": s2, "sweeps": sweeps}
    return pack


def _w_scale(Wt, norm):
    if norm == "L1":
        return np.abs(Wt).sum(axis=0) + EPS_D
    if norm == "L2":
        return np.sqrt((Wt * Wt).sum(axis=0)) + EPS_D
    return np.ones(Wt.shape[1])


def _first_pack(W0, cfg):
    return make_wpack(W0, 0, cfg)


def _stats(pack):
    return pack.stats


def _pack_w(pack):
    return pack.W


# --------------------------------------------------------------------------------------------
# the driver


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
) -> MaskedState:
    """Run masked ALS until convergence, early stop or ``cfg.maxit``.

    With a test set (``ms.test_fraction > 0``) the score is the test MSE: the fit stops when it
    has not improved for ``patience`` iterations, or when its relative change stayed below
    ``cfg.tol`` for 5 consecutive iterations (converged), and the best iteration's model is
    returned. Without one the score is the train MSE (over the observed entries) with the usual
    rule, and the last model is returned. ``on_iteration(t, score, rel)`` may return True to stop.
    """
    if cfg.solver != "cd":
        cfg = ALSConfig(**{**cfg.__dict__, "solver": "cd"})
    m = bm.shape[0]
    ex = Executor(client)
    tok = uuid.uuid4().hex[:8]
    static, bkeys = block_graph(bm, ex)
    pack_key = f"mpack-{tok}-0"
    kept, _ = ex.run({pack_key: (_first_pack, W0, cfg)}, [pack_key], [])
    prev = dict(kept)
    hkeys: list = [None] * bm.n_blocks
    row_bounds = list(range(0, m, max(1, int(w_rows_per_task)))) + [m]
    schedule = tree_keys(bm.n_blocks, REDUCE_FANIN)
    cv = ms.test_fraction > 0
    train_h: list[float] = []
    test_h: list[float] = []
    sizes: list[int] = []
    best = None  # (score, it, pack handle, h handles, stats)
    since_best = 0
    below = 0
    converged = False
    last_score = None
    t0 = time.perf_counter()
    it = 0
    for it in range(1, cfg.maxit + 1):
        dsk = dict(static)
        dsk.update(prev)
        new_h, parts = [], []
        for b in range(bm.n_blocks):
            hk = f"mh-{tok}-{it}-{b}"
            dsk[hk] = (_h_task, bkeys[b], pack_key, hkeys[b], int(bm.bounds[b]), cfg, ms)
            dsk[f"mht-{tok}-{it}-{b}"] = (_first, hk)
            new_h.append(f"mht-{tok}-{it}-{b}")
            parts.append(hk)
        red = add_reduction(dsk, parts, schedule, f"mred-{tok}-{it}", _add_partials)
        rows = []
        for c in range(len(row_bounds) - 1):
            wk = f"mw-{tok}-{it}-{c}"
            dsk[wk] = (_w_rows_task, red, pack_key, row_bounds[c], row_bounds[c + 1], cfg, ms)
            rows.append(wk)
        new_pack = f"mpack-{tok}-{it}"
        dsk[new_pack] = (_w_finish, red, pack_key, cfg, *rows)
        stats_key = f"mstats-{tok}-{it}"
        dsk[stats_key] = (_stats, new_pack)
        sizes.append(len(dsk) - len(static))
        kept, (stats,) = ex.run(dsk, new_h + [new_pack], [stats_key])
        kept = ex.rebase(kept)  # the scheduler forgets the previous iterations
        # the model scored in this iteration: the W that went in, and the new H
        model = (prev[pack_key], [kept[h] for h in new_h], stats)
        hkeys = new_h
        pack_key = new_pack
        prev = kept
        train = stats["train_sse"] / max(stats["n_train"], 1.0)
        test = stats["test_sse"] / stats["n_test"] if stats["n_test"] > 0 else math.nan
        train_h.append(train)
        test_h.append(test)
        score = test if cv else train
        rel = math.nan
        if last_score is not None:
            rel = abs(last_score - score) / (abs(last_score) + 1e-15)
            below = below + 1 if rel < cfg.tol else 0
        last_score = score
        if best is None or not cv or score < best[0]:
            best = (score, it, *model)
            since_best = 0
        else:
            since_best += 1
        stop = bool(on_iteration(it, score, rel)) if on_iteration is not None else False
        if below >= CONVERGENCE_PATIENCE:
            converged = True
            break
        if cv and since_best >= patience:
            break
        if stop:
            break
    _, best_it, pack_h, h_handles, st = best
    (pack,) = ex.gather([pack_h])
    Wu = np.asarray(pack.W, dtype=np.float64)
    c = _w_scale(Wu, cfg.norm)
    e = _h_scale(np.asarray(st["s"]), np.asarray(st["s2"]), cfg.norm)
    return MaskedState(
        W=(Wu / c).astype(cfg.dtype), d=c * e, h_blocks=h_handles, h_scale=e,
        iterations=it, best_iter=best_it, converged=converged,
        train_sse=float(st["train_sse"]), test_sse=float(st["test_sse"]),
        n_train=float(st["n_train"]), n_test=float(st["n_test"]),
        train_history=train_h, test_history=test_h, seconds=time.perf_counter() - t0,
        graph_sizes=sizes,
    )
