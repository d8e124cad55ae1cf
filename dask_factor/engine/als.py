"""Alternating least squares NMF as one Dask pass over the column blocks per iteration.

Per iteration t (DESIGN.md):

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

import math
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np

from ..kernels.als import h_step_dense, h_step_sparse, w_solve
from ..kernels.nnls import gram_cholesky
from .blocks import BlockedMatrix, add_reduction, block_stats, sum_stats, tree_keys
from .executor import Executor, local_blas_limit

EPS_GRAM = 1e-15
EPS_D = 1e-15
#: rows of W solved per task in the W half-step
W_ROWS_PER_TASK = 4096
#: partials of this many blocks are summed per reduction task (in block order)
REDUCE_FANIN = 8
#: how many times a fit on a cluster resumes after losing a worker's data
MAX_RECOVERIES = 3
#: consecutive iterations the relative loss change must stay under ``tol`` (RcppML's NMF_PATIENCE)
CONVERGENCE_PATIENCE = 5


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


# --------------------------------------------------------------------------------------------
# task functions (run on workers)


def _h_task(block, wpack, hprev, target, cfg: ALSConfig):
    """H half-step on one block plus its W-update partials."""
    W = wpack.W
    m, k = W.shape
    n_p = block.shape[1]
    Ht = np.empty((n_p, k), dtype=cfg.dtype)
    warm = hprev is not None and cfg.solver == "cd"
    Xprev = hprev if warm else np.zeros((1, k), dtype=cfg.dtype)
    xscale = wpack.xscale
    use_chol = cfg.solver == "cholesky"
    L = wpack.L if use_chol else wpack.G
    nonneg, ub, l1 = cfg.nonneg[1], cfg.upper_bound[1], cfg.L1[1]
    tlam = cfg.target_lambda if (target is not None and cfg.target_lambda > 0) else 0.0
    Tt = target if tlam != 0.0 else np.zeros((1, k), dtype=np.float64)
    if hasattr(block, "indptr"):
        P = np.zeros((m, k), dtype=W.dtype)
        Q = np.zeros((k, k), dtype=np.float64)
        s = np.zeros(k, dtype=np.float64)
        s2 = np.zeros(k, dtype=np.float64)
        sweeps = h_step_sparse(
            block.indptr, block.indices, block.data, W, wpack.G, L, l1, Tt, tlam, use_chol,
            nonneg, ub, Xprev, xscale, warm, cfg.cd_maxit, cfg.cd_tol, Ht, P, Q, s, s2,
        )
    else:
        P, Q, s, s2, sweeps = h_step_dense(
            block, W, wpack.G, L, l1, Tt, tlam, use_chol, nonneg, ub, Xprev, xscale, warm,
            cfg.cd_maxit, cfg.cd_tol, Ht,
        )
    return Ht, (P.astype(np.float64, copy=False), Q, s, s2, float(sweeps))


def _first(x):
    return x[0]


def _add_partials(*parts):
    """Sum block partials in the order given; an ``_h_task`` output contributes its [1]."""
    parts = [q[1] if len(q) == 2 else q for q in parts]
    P, Q, s, s2, sw = (np.array(a, copy=True) if isinstance(a, np.ndarray) else a
                       for a in parts[0])
    for q in parts[1:]:
        P += q[0]
        Q += q[1]
        s += q[2]
        s2 += q[3]
        sw += q[4]
    return P, Q, s, s2, sw


def _h_scale(s, s2, norm):
    if norm == "L1":
        return s + EPS_D
    if norm == "L2":
        return np.sqrt(s2) + EPS_D
    return np.ones_like(s)


def _w_rows_task(red, wpack, r0, r1, cfg: ALSConfig):
    """Solve rows r0:r1 of W from the reduced partials of the normalised H."""
    P, Q, s, s2, _ = red
    dh = _h_scale(s, s2, cfg.norm)
    k = Q.shape[0]
    Qn = Q / np.outer(dh, dh)
    G = Qn + (cfg.L2[0] + EPS_GRAM) * np.eye(k)
    Bt = P[r0:r1] / dh - cfg.L1[0]
    use_chol = cfg.solver == "cholesky"
    L = gram_cholesky(G) if use_chol else G
    warm = wpack.t > 0 and not use_chol
    Xwarm = (np.asarray(wpack.W[r0:r1], dtype=np.float64) * dh) if warm else None
    return w_solve(G, Bt, L, use_chol, cfg.nonneg[0], cfg.upper_bound[0], Xwarm, warm,
                   cfg.cd_maxit, cfg.cd_tol, np.float64)


def make_wpack(W, t, cfg: ALSConfig, *, dh=None, d=None, gram_target=None):
    """The small package broadcast to every block task: W, its Gram (and Cholesky factor)."""
    W = np.ascontiguousarray(W, dtype=cfg.dtype)
    k = W.shape[1]
    W64 = W.astype(np.float64)
    WtW = W64.T @ W64
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


def _w_finish(red, wpack_prev, sq_norm, cfg: ALSConfig, gram_target, *rows):
    """Assemble W, extract d, compute the loss and the next iteration's package."""
    P, Q, s, s2, sweeps = red
    dh = _h_scale(s, s2, cfg.norm)
    Wt = np.vstack(rows) if len(rows) > 1 else rows[0]
    if cfg.norm == "L1":
        d = np.abs(Wt).sum(axis=0) + EPS_D
    elif cfg.norm == "L2":
        d = np.sqrt((Wt * Wt).sum(axis=0)) + EPS_D
    else:
        d = np.ones(Wt.shape[1])
    Wn = Wt / d
    Wn_store = Wn.astype(cfg.dtype)
    W64 = Wn_store.astype(np.float64)
    Pn = P / dh
    Qn = Q / np.outer(dh, dh)
    cross = float(np.sum(d * np.einsum("ik,ik->k", W64, Pn)))
    quad = float(np.sum(np.outer(d, d) * (W64.T @ W64) * Qn))
    sse = sq_norm - 2.0 * cross + quad
    pack = make_wpack(Wn_store, wpack_prev.t + 1, cfg, dh=dh, d=d, gram_target=gram_target)
    pack.stats = {"sse": max(sse, 0.0), "sweeps": sweeps}
    return pack


def _first_pack(W0, cfg: ALSConfig, gram_target):
    return make_wpack(W0, 0, cfg, gram_target=gram_target)


def _stats(pack):
    return pack.stats


# --------------------------------------------------------------------------------------------
# the driver


def _compute(obj, client):
    if client is not None:
        return client.compute(obj).result()
    return dask.compute(obj)[0]


def compute_block_stats(bm: BlockedMatrix, client=None) -> np.ndarray:
    """One validation pass: (Σa², #non-finite, #negative, #non-zero) over all blocks."""
    parts = [dask.delayed(block_stats, pure=True)(b, dask_key_name=f"stats-{bm.name}-{i}")
             for i, b in enumerate(bm.blocks)]
    total = dask.delayed(sum_stats, pure=True)(*parts, dask_key_name=f"stats-{bm.name}")
    return np.asarray(_compute(total, client))


def block_graph(bm: BlockedMatrix, ex: Executor, rename: bool = False) -> tuple[dict, list[str]]:
    """The graph that produces the blocks (read tasks, or the in-memory values) and their keys.

    ``rename`` gives in-memory blocks fresh keys (after a lost worker, the old ones may linger).
    """
    dsk: dict = {}
    keys = []
    for b, blk in enumerate(bm.blocks):
        key = blk.key
        g = blk.__dask_graph__()
        g = g if isinstance(g, dict) else dict(g)
        if rename and not _is_task_like(g[key]):
            g = {f"block-{bm.name}-{b}": g[key]}
            key = f"block-{bm.name}-{b}"
        keys.append(key)
        dsk.update(g)
    if ex.distributed:
        # values already computed (in-memory inputs, persisted blocks) travel once, as futures
        for key in keys:
            v = dsk[key]
            if not _is_task_like(v):
                dsk[key] = ex.scatter(key, v)
    return dsk, keys


def _is_task_like(v) -> bool:
    return isinstance(v, tuple) or type(v).__module__.startswith(("dask.", "distributed."))


def _fit_als(
    bm: BlockedMatrix,
    W0: np.ndarray,
    cfg: ALSConfig,
    *,
    sq_norm: float,
    client=None,
    target_blocks: list | None = None,
    gram_target: np.ndarray | None = None,
    on_iteration: Callable[[int, float, float], Any] | None = None,
    w_rows_per_task: int = W_ROWS_PER_TASK,
) -> ALSState:
    """Run ALS iterations until convergence or ``cfg.maxit``.

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

    Returns
    -------
    ALSState
    """
    m, n = bm.shape
    k = cfg.k
    ex = Executor(client)
    tok = uuid.uuid4().hex[:8]
    static, bkeys = block_graph(bm, ex)
    tkeys: list = [None] * bm.n_blocks
    if target_blocks is not None:
        for b, t in enumerate(target_blocks):
            tkeys[b] = f"target-{tok}-{b}"
            static[tkeys[b]] = ex.scatter(tkeys[b], t) if ex.distributed else t
    pack_key = f"wpack-{tok}-0"
    kept, _ = ex.run({pack_key: (_first_pack, W0, cfg, gram_target)}, [pack_key], [])
    prev = {pack_key: kept[pack_key]}
    hkeys: list = [None] * bm.n_blocks
    row_bounds = list(range(0, m, max(1, int(w_rows_per_task)))) + [m]
    schedule = tree_keys(bm.n_blocks, REDUCE_FANIN)
    history: list[float] = []
    tols: list[float] = []
    sizes: list[int] = []
    below = 0
    converged = False
    t0 = time.perf_counter()
    it = 0
    recoveries = 0
    last_pack = None
    if ex.distributed:
        (last_pack,) = ex.gather([prev[pack_key]])
    while it < cfg.maxit:
        it += 1
        dsk = dict(static)
        dsk.update(prev)
        new_h = []
        parts = []
        for b in range(bm.n_blocks):
            hk = f"h-{tok}-{it}-{b}"
            dsk[hk] = (_h_task, bkeys[b], pack_key, hkeys[b], tkeys[b], cfg)
            dsk[f"ht-{tok}-{it}-{b}"] = (_first, hk)
            new_h.append(f"ht-{tok}-{it}-{b}")
            parts.append(hk)  # the reduction reads the partials straight from the block task
        red = add_reduction(dsk, parts, schedule, f"red-{tok}-{it}", _add_partials)
        rows = []
        for c in range(len(row_bounds) - 1):
            wk = f"w-{tok}-{it}-{c}"
            dsk[wk] = (_w_rows_task, red, pack_key, row_bounds[c], row_bounds[c + 1], cfg)
            rows.append(wk)
        new_pack = f"wpack-{tok}-{it}"
        dsk[new_pack] = (_w_finish, red, pack_key, sq_norm, cfg, gram_target, *rows)
        stats_key = f"stats-{tok}-{it}"
        dsk[stats_key] = (_stats, new_pack)
        size = len(dsk) - len(static)
        try:
            if ex.distributed:  # W's package comes back too: a lost worker costs only warm starts
                kept, (stats, last_pack) = ex.run(dsk, new_h + [new_pack], [stats_key, new_pack])
            else:
                kept, (stats,) = ex.run(dsk, new_h + [new_pack], [stats_key])
        except Exception as exc:
            if not (ex.distributed and is_worker_loss(exc)) or recoveries >= MAX_RECOVERIES:
                raise
            recoveries += 1
            warnings.warn(f"nmf: lost data on the cluster at iteration {it} ({exc!r}); "
                          f"resuming from the last W with cold-started H solves "
                          f"({recoveries}/{MAX_RECOVERIES})", RuntimeWarning, stacklevel=3)
            tok = uuid.uuid4().hex[:8]  # fresh keys: the failed graph's keys may linger
            bm.name = f"{bm.name[:10]}-r{recoveries}"
            static, bkeys = block_graph(bm, ex, rename=True)
            for b, t in enumerate(target_blocks or []):
                tkeys[b] = f"target-{tok}-{b}"
                static[tkeys[b]] = ex.scatter(tkeys[b], t)
            pack_key = f"wpack-{tok}-{it - 1}"
            prev = {pack_key: ex.scatter(pack_key, last_pack)}
            hkeys = [None] * bm.n_blocks
            it -= 1  # redo this iteration
            continue
        sizes.append(size)
        try:
            kept = ex.rebase(kept)  # a cluster's scheduler forgets the previous iterations
        except Exception as exc:
            if not is_worker_loss(exc) or recoveries >= MAX_RECOVERIES:
                raise
            kept = {}
        hkeys = new_h
        pack_key = new_pack
        prev = kept  # the previous iteration's factors are dropped here
        if ex.distributed and len(kept) < len(new_h) + 1:
            # lost right after the iteration (its H with it): redo it from its new W, cold H,
            # without recording it, so a fit never ends without its H
            recoveries += 1
            warnings.warn(f"nmf: lost data on the cluster after iteration {it}; resuming from "
                          f"the last W with cold-started H solves ({recoveries}/"
                          f"{MAX_RECOVERIES})", RuntimeWarning, stacklevel=3)
            tok = uuid.uuid4().hex[:8]
            bm.name = f"{bm.name[:10]}-r{recoveries}"
            static, bkeys = block_graph(bm, ex, rename=True)
            for b, t in enumerate(target_blocks or []):
                tkeys[b] = f"target-{tok}-{b}"
                static[tkeys[b]] = ex.scatter(tkeys[b], t)
            pack_key = f"wpack-{tok}-resume"
            prev = {pack_key: ex.scatter(pack_key, last_pack)}
            hkeys = [None] * bm.n_blocks
            sizes.pop()
            it -= 1
            continue
        sse = float(stats["sse"])
        rel = math.nan
        if history:
            last = history[-1]
            rel = abs(last - sse) / (abs(last) + 1e-15)
            tols.append(rel)
            below = below + 1 if rel < cfg.tol else 0
        history.append(sse)
        stop = False
        if on_iteration is not None:
            stop = bool(on_iteration(it, sse / (m * n) if m * n else 0.0, rel))
        if below >= CONVERGENCE_PATIENCE:
            converged = True
            break
        if stop:
            break
    (final,) = [last_pack] if ex.distributed else ex.gather([prev[pack_key]])
    d = final.d if final.d is not None else np.ones(k)
    dh = final.dh if final.dh is not None else np.ones(k)
    return ALSState(
        W=np.asarray(final.W), d=np.asarray(d, dtype=np.float64),
        h_blocks=[prev[h] for h in hkeys], h_scale=np.asarray(dh, dtype=np.float64),
        iterations=it, converged=converged, sse=history[-1] if history else float(sq_norm),
        loss_history=history, tol_history=tols, sq_norm=sq_norm,
        seconds=time.perf_counter() - t0, graph_sizes=sizes,
    )


def is_worker_loss(exc: BaseException) -> bool:
    """Whether a failed iteration lost data with a worker (and may be resumed)."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"FutureCancelledError", "CancelledError", "KilledWorker",
                         "CommClosedError", "_LostData"}) or "lost dependencies" in str(exc)


def fit_als(bm: BlockedMatrix, W0: np.ndarray, cfg: ALSConfig, **kwargs) -> ALSState:
    """Run ALS iterations until convergence or ``cfg.maxit`` (see :func:`_fit_als` for the
    arguments); BLAS is held to one thread while the fit runs on local threads."""
    with local_blas_limit(Executor(kwargs.get("client"))):
        return _fit_als(bm, W0, cfg, **kwargs)
