"""NMF under a count-data loss (KL, NB, GP, Gamma, inverse Gaussian, Tweedie): IRLS on the driver.

One more fit kind of :mod:`.driver`. Per iteration t (docs/losses.md):

    per column block p, one task   H_p by per-column IRLS against W_{t−1}     (kernels.irls)
                                   partials s_p = Σ|h|, s2_p = Σh² per factor
    fixed-order tree               s, s2  →  d_h (the scale of H's rows)
    per row block r, one task      W_r by per-row IRLS against the normalised H, reading the
                                   rows of A from a transposed copy (Aᵀ's column blocks);
                                   then each row's dispersion (NB size, GP θ) and the block's
                                   objective and squared error (one pass over its rows)
    fixed-order tree               Σ objective, Σ squared error
    one small task                 d = column scale of W, W ← W/d, the next package

**Masked fits and cross-validation.** With a :class:`~.masked.MaskSpec` (and optionally the
user's mask blocks) the held-out and missing entries get zero IRLS weight in both half-steps:
each task regenerates them from the hash of (row, column) (kernels.masked), the H tasks from the
block's column offset, the W tasks from the rows' offset on the transposed copy (the mask
itself is transposed by the same shuffle). They leave the dispersion estimates and the training
objective, and the W tasks score them: the held-out objective (the fit's own loss) and squared
error of the model ``(W_t, H_t)``, the score of a cross-validated fit (the best iteration is
returned, with early stopping after ``patience`` iterations without improvement, as for
least squares).

**Why a transposed copy for the W half-step.** Each row's IRLS needs that row's own weighted
Gram ``Σⱼ wᵢⱼ hⱼhⱼᵀ``, and the weights change at every IRLS step. Reducing per-row k×k partials
over column blocks would move ``m·k(k+1)/2`` float64 per block per IRLS step (8.8 MB per block at
m = 20,000, k = 10; about 10 GB per IRLS step for 1M cells in 1,200 blocks), against the
transposed copy's one broadcast of H per worker (n·k·4 = 40 MB at 1M cells) and W's rows back
(docs/decisions.md has the numbers). The copy is built once per fit, by one shuffle of the
column blocks (each block split by row ranges, each row block stacked from its pieces), and held
where the tasks run (worker memory on a cluster); it is rebuilt from the column blocks if a
worker is lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..kernels.irls import (
    LOSS_CODES,
    NO_FT,
    NO_HOLDOUT,
    NO_MASK,
    NO_PI,
    ROW_STATS,
    block_objective,
    irls_block,
    row_passes,
    row_update,
)
from . import checkpoint
from .als import EPS_GRAM, ALSConfig, compute_on, config_fingerprint, fit_fingerprint
from .blocks import MIN_BLOCKS, BlockedMatrix
from .driver import BlockOutput, Built, FitKind, Report, drive, stats_of
from .executor import Executor
from .masked import MaskSpec, mask_arrays
from .multi import column_scale, factor_scale

__all__ = ["LossSpec", "IRLSState", "IRLSKind", "fit_irls", "evaluate_loss", "row_bounds"]

#: median (NB size) or mean (GP θ) of the per-row estimates in ``dispersion="global"`` mode
GLOBAL_REDUCER = {"nb": "median", "gp": "mean"}


@dataclass(frozen=True)
class LossSpec:
    """The loss of an IRLS fit and its settings (validated by the caller).

    Attributes
    ----------
    loss : str
        ``"kl"``, ``"nb"``, ``"gp"``, ``"gamma"``, ``"inverse_gaussian"`` or ``"tweedie"``.
    dispersion : {"per_row", "global", "none"}
        NB size / GP θ estimated per row, shared (median of the row estimates for NB, mean for
        GP), or fixed at ``disp_init``.
    disp_init, disp_min, disp_max : float
        NB: ``nb_size_init/min/max``; GP: ``theta_init/min/max``.
    power : float
        Tweedie variance power.
    irls_max_iter, irls_tol : int, float
        IRLS steps per column and their stopping rule (max relative change of x).
    irls_gain_tol : float
        A column's IRLS also stops at a step that lowers its objective by at most this share
        of what its earlier steps did (0: off; kernels.irls.irls_column).
    robust : float
        Huber δ of ``robust=`` (0: off; kernels.irls.robust_parts).
    zi : {"none", "row", "col"}
        Zero inflation (NB, GP): a probability π of an extra zero per row or per column of A,
        one EM step per iteration (kernels.irls.zi_pi_step).
    """

    loss: str
    dispersion: str = "per_row"
    disp_init: float = 0.0
    disp_min: float = 0.0
    disp_max: float = 0.0
    power: float = 1.5
    irls_max_iter: int = 5
    irls_tol: float = 1e-4
    irls_gain_tol: float = 0.05
    robust: float = 0.0
    zi: str = "none"

    @property
    def code(self) -> int:
        return LOSS_CODES[self.loss]

    @property
    def has_dispersion(self) -> bool:
        return self.loss in ("nb", "gp")


@checkpoint.register
@dataclass
class IRLSPack:
    """The small package every task receives: W (normalised), scales and the dispersion."""

    W: np.ndarray
    t: int
    xscale: np.ndarray
    disp: np.ndarray  # (m,) NB size r or GP θ per row (unused by the other losses)
    d: np.ndarray | None = None
    pi: np.ndarray | None = None  # zi="row": π per row (m,)
    dh: np.ndarray | None = None
    stats: dict | None = None


@dataclass
class IRLSState:
    """A finished (or interrupted) IRLS fit: factors in the solver's layout and histories."""

    W: np.ndarray  # m × k, normalised columns
    d: np.ndarray
    h_blocks: list  # raw Ht_p (n_p × k)
    h_scale: np.ndarray  # divide raw H rows by this to normalise
    dispersion: np.ndarray | None  # (m,) for nb/gp
    iterations: int
    converged: bool
    objective: float
    sse: float
    objective_history: list[float] = field(default_factory=list)
    sse_history: list[float] = field(default_factory=list)
    tol_history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    graph_sizes: list[int] = field(default_factory=list)
    #: masked fits: the returned model's (best test iteration's) :data:`ROW_STATS` and, per
    #: iteration, the mean held-out loss (own loss and squared error) and training MSE
    best_iter: int = 0
    scores: dict = field(default_factory=dict)
    test_history: list[float] = field(default_factory=list)
    test_mse_history: list[float] = field(default_factory=list)
    train_mse_history: list[float] = field(default_factory=list)
    #: zero inflation: π per row (m,) or per column (n,) of the returned model
    pi: np.ndarray | None = None


#: the initial zero-inflation probability from a zero rate (RcppML: min(0.5·rate, 0.3))
def initial_pi(zero_rate: np.ndarray) -> np.ndarray:
    """π₀ = min(0.5·zero rate, 0.3) per row or column (RcppML's start)."""
    return np.minimum(0.5 * np.asarray(zero_rate, dtype=np.float64), 0.3)


def h_of(out):
    """H of an H task's kept value ``(H, π)``."""
    return out[0][0]


def pi_of(out):
    """The columns' π of an H task's kept value ``(H, π)`` (zi="col")."""
    return out[0][1]


def row_nnz(tblock):
    """Stored entries per row of A in a block of Aᵀ (its columns)."""
    return np.diff(tblock.indptr)


def hold_out(ms: MaskSpec | None, g0: int, transposed: bool) -> tuple:
    """The kernels' hold-out tuple (kernels.irls.exclusions) of a block whose first column is
    column ``g0`` of A (or, ``transposed``, row ``g0`` of A in a block of Aᵀ)."""
    if ms is None:
        return NO_HOLDOUT
    all_rows = ms.test_fraction > 0 and not ms.mask_zeros and not ms.observed_only
    return (True, ms.seed, ms.thr, bool(all_rows), bool(ms.mask_zeros),
            bool(ms.observed_only), bool(transposed), np.int64(g0))


def _mask_csc(mblock):
    return (NO_MASK, NO_MASK) if mblock is None else mask_arrays(mblock)


# --------------------------------------------------------------------------------------------
# task functions


def csc_arrays(block):
    """CSC ``indptr, indices, data`` of a block without explicit zeros (dense blocks too)."""
    if sp.issparse(block):
        X = sp.csc_matrix(block)
        if X.nnz and not np.all(X.data != 0):
            X = X.copy()
            X.eliminate_zeros()
    else:
        X = sp.csc_matrix(np.asarray(block))
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    return X.indptr, X.indices, X.data


def row_bounds(m: int, n_col_blocks: int) -> list[int]:
    """Row ranges of the W half-step: ``max(MIN_BLOCKS, n_col_blocks)`` near-equal ranges (a
    function of the shape and the column blocking only, so the fit does not depend on where it
    runs)."""
    parts = max(1, min(m, max(MIN_BLOCKS, n_col_blocks)))
    return [int(x) for x in np.linspace(0, m, parts + 1).round().astype(np.int64)]


def split_rows(block, bounds):
    """One column block's pieces of Aᵀ: piece r is ``A[bounds[r]:bounds[r+1], cols]ᵀ`` (CSC)."""
    X = sp.csr_matrix(block) if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
    X.eliminate_zeros()
    X.sort_indices()
    return [X[a:b].T.tocsc() for a, b in zip(bounds[:-1], bounds[1:])]


def stack_piece(r, *splits):
    """Column block r of Aᵀ (n × rows) from every column block's piece r."""
    out = sp.vstack([s[r] for s in splits], format="csc")
    out.sort_indices()
    return out


def h_task(block, pack: IRLSPack, hprev, cfg: ALSConfig, spec: LossSpec, mk=NO_HOLDOUT,
           mblock=None, piblock=None):
    """H half-step of one column block by per-column IRLS, and the partials of H's scale
    (``mk``, ``mblock``: the block's hold-out and mask, :func:`hold_out`). Kept: ``(H, π)``,
    π the block's columns' zero inflation after its EM step (zi="col", from ``piblock`` or,
    at the start, the columns' zero rates), else None."""
    indptr, indices, data = csc_arrays(block)
    mptr, midx = _mask_csc(mblock)
    m = pack.W.shape[0]
    zpi, by_col, zpi_out = NO_PI, False, NO_PI
    if spec.zi == "row":
        zpi = pack.pi
    elif spec.zi == "col":
        zpi = (np.asarray(piblock, dtype=np.float64) if piblock is not None
               else initial_pi(1.0 - np.diff(indptr) / m))
        by_col, zpi_out = True, np.empty(indptr.size - 1)
    k = pack.W.shape[1]
    n_p = indptr.size - 1
    # F and the solutions in float64, as in the W step: irls_block is compiled once for both
    # steps (about 15 s less compilation in a fresh process). The same bits: the kernel
    # multiplies every entry of F by a float64, and rounding the solutions to the stored dtype
    # after the solve equals rounding them in the store.
    Hx = np.empty((n_p, k))
    # Wᵀ for the passes over every row of W, in float32 when W is stored so (the same values:
    # half the bytes each pass streams; a million-cell atlas's 20,000 genes then fit in L2)
    Ft = NO_FT
    if row_passes(spec.code, spec.power, spec.robust, spec.zi != "none"):
        dt = np.float32 if np.dtype(pack.W.dtype).itemsize <= 4 else np.float64
        Ft = np.ascontiguousarray(pack.W.T, dtype=dt)
    warm = hprev is not None
    Xprev = hprev if warm else np.zeros((1, k), dtype=cfg.dtype)
    irls_block(indptr, indices, data, np.asarray(pack.W, dtype=np.float64), pack.disp, False,
               spec.code, spec.power, cfg.L1[1], cfg.L2[1] + EPS_GRAM, cfg.nonneg[1],
               cfg.upper_bound[1], Xprev, pack.xscale, warm, cfg.cd_maxit, cfg.cd_tol,
               spec.irls_max_iter, spec.irls_tol, Hx, mk, mptr, midx, spec.robust, zpi, by_col,
               zpi_out, spec.irls_gain_tol, Ft)
    Ht = Hx.astype(cfg.dtype, copy=False)  # the kept H: rounded to the stored dtype
    H64 = Ht.astype(np.float64, copy=False)
    return BlockOutput(((Ht, zpi_out if by_col else None),
                        (np.abs(H64).sum(axis=0), (H64 * H64).sum(axis=0))))


def w_task(tblock, red, pack: IRLSPack, r0: int, r1: int, cfg: ALSConfig, spec: LossSpec,
           mk, tmblock, pi_blocks, *h_blocks):
    """W half-step of rows r0:r1 (a column block of Aᵀ) against the normalised H, then the
    rows' dispersion and the block's :data:`~dask_factor.kernels.irls.ROW_STATS` (``mk``,
    ``tmblock``: the rows' hold-out and the mask's block of Aᵀ; ``pi_blocks``: the columns' π
    under zi="col", else None). Returns the rows' W, dispersion and π (zi="row")."""
    mptr, midx = _mask_csc(tmblock)
    s, s2 = red
    dh = factor_scale(s, s2, cfg.norm)
    Hn = np.vstack([np.asarray(h, dtype=np.float64) for h in h_blocks]) / dh
    indptr, indices, data = csc_arrays(tblock)
    k = Hn.shape[1]
    rows = r1 - r0
    warm = pack.t > 0
    Wt = np.empty((rows, k))
    # one dtype either way: the kernel is compiled once, not again at the second iteration
    Xprev = pack.W[r0:r1] if warm else np.zeros((1, k), dtype=pack.W.dtype)
    disp_old = np.ascontiguousarray(pack.disp[r0:r1], dtype=np.float64)
    zpi, by_col, zpi_out = NO_PI, False, NO_PI
    if spec.zi == "row":
        zpi, by_col, zpi_out = np.ascontiguousarray(pack.pi[r0:r1]), True, np.empty(rows)
    elif spec.zi == "col":
        zpi = np.concatenate([np.asarray(p, dtype=np.float64) for p in pi_blocks])
    irls_block(indptr, indices, data, Hn, disp_old, True, spec.code, spec.power, cfg.L1[0],
               cfg.L2[0] + EPS_GRAM, cfg.nonneg[0], cfg.upper_bound[0], Xprev, dh, warm,
               cfg.cd_maxit, cfg.cd_tol, spec.irls_max_iter, spec.irls_tol, Wt, mk, mptr, midx,
               spec.robust, zpi, by_col, NO_PI, spec.irls_gain_tol, NO_FT)  # every argument
    new_disp = np.empty(rows)
    st = np.zeros(len(ROW_STATS))
    estimate = spec.has_dispersion and spec.dispersion != "none"
    row_update(indptr, indices, data, Hn, disp_old, spec.code, spec.power, estimate,
               spec.dispersion == "per_row", np.array([spec.disp_min, spec.disp_max]), Wt,
               new_disp, st, mk, mptr, midx, spec.robust, zpi, by_col, zpi_out)
    return BlockOutput(((Wt, new_disp, zpi_out if spec.zi == "row" else None), st))


def finish_task(red_rows, red_cols, pack: IRLSPack, cfg: ALSConfig, spec: LossSpec, *rows):
    """Assemble W, extract d, the next dispersion and package, and the step's statistics."""
    s, s2 = red_cols
    dh = factor_scale(s, s2, cfg.norm)
    Wt = np.vstack([r[0][0] for r in rows])
    disp = np.concatenate([r[0][1] for r in rows])
    pi = np.concatenate([r[0][2] for r in rows]) if spec.zi == "row" else None
    scored = pack.disp
    if spec.has_dispersion and spec.dispersion == "global":
        val = np.median(disp) if GLOBAL_REDUCER[spec.loss] == "median" else np.mean(disp)
        disp = np.full_like(disp, val)
    elif spec.dispersion == "per_row":
        scored = disp
    d = column_scale(Wt, cfg.norm)
    Wn = (Wt / d).astype(cfg.dtype)
    new = IRLSPack(W=Wn, t=pack.t + 1, xscale=d / dh, disp=disp, d=d, dh=dh, pi=pi)
    new.stats = {name: float(v) for name, v in zip(ROW_STATS, red_rows)}
    new.stats["sse"] = max(new.stats["sse"], 0.0)
    new.stats["disp"] = np.asarray(scored, dtype=np.float64)
    return new


# --------------------------------------------------------------------------------------------
# the fit kind


class IRLSKind(FitKind):
    """IRLS NMF: column blocks for H, a transposed copy's blocks for W (module docstring).

    With ``ms`` (and ``mask``, the user's missing entries blocked like ``bm``) a masked fit:
    the score is the mean held-out loss (cross-validation, the best iteration is kept) or the
    training objective."""

    prefix = "nmf-irls"

    def __init__(self, bm: BlockedMatrix, W0, cfg: ALSConfig, spec: LossSpec,
                 ms: MaskSpec | None = None, mask: BlockedMatrix | None = None,
                 patience: int = 5):
        self.bm, self.W0, self.cfg, self.spec = bm, W0, cfg, spec
        self.ms, self.mask = ms, mask
        self.cv = ms is not None and ms.test_fraction > 0
        self.select_best = self.cv
        self.patience = patience if self.cv else None
        self.rb = row_bounds(bm.shape[0], bm.n_blocks)

    def _transpose(self, ctx, bkeys, name):
        """Aᵀ's column blocks (row ranges ``self.rb`` of A) from A's column blocks: one shuffle,
        held where the tasks run."""
        tag = f"{ctx.prefix}-{{}}-{ctx.token}-{{}}"
        dsk = dict(ctx.static)
        splits = []
        for c, bk in enumerate(bkeys):
            key = tag.format(f"{name}split", c)
            dsk[key] = (split_rows, bk, self.rb)
            splits.append(key)
        tkeys = []
        for r in range(len(self.rb) - 1):
            key = tag.format(f"{name}block", r)
            dsk[key] = (stack_piece, r, *splits)
            tkeys.append(key)
        kept, _ = ctx.ex.run(dsk, tkeys, [])
        for key in tkeys:
            ctx.static[key] = kept[key]
        return tkeys

    def setup(self, ctx):
        self.bkeys = ctx.blocks(self.bm)
        self.tkeys = self._transpose(ctx, self.bkeys, "t")
        n_rb = len(self.rb) - 1
        if self.spec.zi == "row":  # each row's stored entries, for π's start
            dsk = dict(ctx.static)
            keys = [f"{ctx.prefix}-nnz-{ctx.token}-{r}" for r in range(len(self.tkeys))]
            for key, tk in zip(keys, self.tkeys):
                dsk[key] = (row_nnz, tk)
            _, counts = ctx.ex.run(dsk, [], keys)
            self.row_nnz = np.concatenate(counts)
        if self.mask is not None:
            self.mkeys = ctx.blocks(self.mask)
            self.tmkeys = self._transpose(ctx, self.mkeys, "tm")
        else:
            self.mkeys, self.tmkeys = [None] * self.bm.n_blocks, [None] * n_rb

    def initial_state(self):
        W0 = np.ascontiguousarray(self.W0, dtype=self.cfg.dtype)
        m, k = W0.shape
        disp = np.full(m, float(self.spec.disp_init))
        pi = None
        if self.spec.zi == "row":  # π₀ from each row's zero rate (counted in setup)
            pi = initial_pi(1.0 - self.row_nnz / self.bm.shape[1])
        state = {"pack": IRLSPack(W=W0, t=0, xscale=np.ones(k), disp=disp, pi=pi),
                 "h": [None] * self.bm.n_blocks}
        if self.spec.zi == "col":
            state["pi"] = [None] * self.bm.n_blocks
        return state

    def build(self, g, st, step):
        cfg, spec, pack = self.cfg, self.spec, st["pack"]
        parts, new_h = [], []
        bounds = self.bm.bounds
        zcol = spec.zi == "col"
        new_pi = []
        for b in range(self.bm.n_blocks):
            hk = g.task("block-solve", (b,), h_task, self.bkeys[b], pack, st["h"][b], cfg, spec,
                        hold_out(self.ms, int(bounds[b]), False), self.mkeys[b],
                        st["pi"][b] if zcol else None)
            new_h.append(g.task("h", (b,), h_of, hk))
            if zcol:
                new_pi.append(g.task("pi", (b,), pi_of, hk))
            parts.append(hk)
        red = g.reduce(parts)
        rb = self.rb
        rows = [g.task("w-rows", (r,), w_task, self.tkeys[r], red, pack, rb[r], rb[r + 1], cfg,
                       spec, hold_out(self.ms, rb[r], True), self.tmkeys[r],
                       new_pi if zcol else None, *new_h)
                for r in range(len(rb) - 1)]
        red_rows = g.reduce(rows, label="row-reduce")
        new_pack = g.task("w-update", (), finish_task, red_rows, red, pack, cfg, spec, *rows)
        state = {"pack": new_pack, "h": new_h}
        if zcol:
            state["pi"] = new_pi
        return Built(state, [g.task("stats", (), stats_of, new_pack)])

    def record(self, step, stats):
        st = stats[0]
        if self.cv:
            return Report(held_out_mean(st), loss=float(st["objective"]))
        return Report(float(st["objective"]))

    def fingerprint(self):
        fp = fit_fingerprint(self.bm, 0.0, self.W0, {
            "kind": "irls", **config_fingerprint(self.cfg),
            "loss": {k: (float(v) if isinstance(v, float) else v)
                     for k, v in self.spec.__dict__.items()}})
        if self.ms is not None:
            fp["mask"] = {k: (float(v) if isinstance(v, float) else v)
                          for k, v in self.ms.__dict__.items()}
        if self.mask is not None:
            fp["user mask"] = list(self.mask.shape)
        return fp


def held_out_mean(st: dict) -> float:
    """The mean held-out loss of an iteration's statistics (NaN without held-out entries the
    loss covers)."""
    return st["test_objective"] / st["n_test_loss"] if st["n_test_loss"] > 0 else math.nan


def _mean(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def fit_irls(bm: BlockedMatrix, W0: np.ndarray, cfg: ALSConfig, spec: LossSpec, *,
             client=None, on_iteration: Callable[[int, float, float], Any] | None = None,
             checkpoint=None, checkpoint_every: int | None = None, resume=None,
             ms: MaskSpec | None = None, mask: BlockedMatrix | None = None,
             patience: int = 5) -> IRLSState:
    """Run IRLS NMF iterations on the driver until convergence or ``cfg.maxit``.

    Parameters
    ----------
    bm : BlockedMatrix
        The data, (m, n), non-negative.
    W0 : ndarray (m, k)
        Initial W (used as is for the first H solve).
    cfg : ALSConfig
        L1/L2/bounds/nonneg pairs, ``norm``, the coordinate-descent budget (``solver`` must be
        ``"cd"``), ``maxit``, ``tol``, ``dtype``.
    spec : LossSpec
    client, on_iteration, checkpoint, checkpoint_every, resume : optional
        As for :func:`dask_factor.engine.als.fit_als`; ``on_iteration(t, score, rel)``.
    ms : MaskSpec, optional
        Held-out entries (``test_fraction``), ``mask="zeros"`` (``observed_only``); NaN values
        are missing whenever ``ms`` is given. They get zero weight.
    mask : BlockedMatrix, optional
        The user's missing entries (non-zero = missing), blocked like ``bm``.
    patience : int
        Cross-validation: stop after this many iterations without a better held-out loss.

    Returns
    -------
    IRLSState
        The last iteration's model (cross-validated: the best held-out iteration's);
        ``objective`` is ``Σ ℓ(A_ij, (W diag(d) H)_ij)`` over the (training) entries the loss
        covers (docs/losses.md), ``sse`` the squared error over all (training) entries.
    """
    if cfg.solver != "cd":
        raise ValueError(f"solver: IRLS losses need coordinate descent ('cd' or 'auto'), got "
                         f"{cfg.solver!r}")
    kind = IRLSKind(bm, W0, cfg, spec, ms=ms, mask=mask, patience=patience)
    res = drive(kind, maxit=cfg.maxit, tol=cfg.tol, client=client, on_iteration=on_iteration,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                name="nmf")
    model = res.best if kind.select_best else res.state
    ex = Executor(client)
    (final,) = ex.gather([model["pack"]])
    pi = final.pi
    if spec.zi == "col":
        pi = np.concatenate([np.asarray(p, dtype=np.float64) for p in ex.gather(model["pi"])])
    hist = [st[0] for st in res.stats]
    k = cfg.k
    best = res.best_iter if kind.select_best else len(hist)
    last = hist[best - 1] if hist else {"objective": math.nan, "sse": math.nan, "disp": None}
    return IRLSState(
        W=np.asarray(final.W), d=np.asarray(final.d if final.d is not None else np.ones(k)),
        h_blocks=list(model["h"]),
        h_scale=np.asarray(final.dh if final.dh is not None else np.ones(k)),
        dispersion=(np.asarray(last["disp"], dtype=np.float64) if spec.has_dispersion
                    else None),
        iterations=res.iterations, converged=res.converged, objective=float(last["objective"]),
        sse=float(last["sse"]), objective_history=[float(x["objective"]) for x in hist],
        sse_history=[float(x["sse"]) for x in hist], tol_history=list(res.rels),
        seconds=res.seconds, graph_sizes=res.graph_sizes, best_iter=best,
        scores={name: float(last[name]) for name in ROW_STATS if name in last},
        test_history=[held_out_mean(x) for x in hist],
        test_mse_history=[_mean(x["test_sse"], x["n_test"]) for x in hist],
        train_mse_history=[_mean(x["sse"], x["n_train"]) for x in hist], pi=pi)


# --------------------------------------------------------------------------------------------
# evaluation of any model under a loss


def _block_loss(block, Wd, Ht, code, disp, power, delta, zpi, zpi_by_col):
    indptr, indices, data = csc_arrays(block)
    obj, sse = block_objective(indptr, indices, data, Wd, np.ascontiguousarray(Ht, np.float64),
                               disp, False, code, power, float(delta), zpi, zpi_by_col)
    return np.array([obj, sse])


def evaluate_loss(bm: BlockedMatrix, Wd: np.ndarray, h_blocks: list, loss: str,
                  dispersion: np.ndarray | None = None, power: float = 1.5, client=None, *,
                  delta: float = 0.0, pi: np.ndarray | None = None, zi: str = "none"):
    """``(Σ ℓ(A_ij, μ_ij), Σ (A_ij − μ_ij)²)`` of ``μ = Wd Hᵀ`` (``h_blocks[p]`` = H_pᵀ), exact,
    in float64, one task per column block and a fixed-order sum; nothing gathered but the two
    numbers. ``dispersion`` (m,) is the NB size or GP θ per row; ``delta`` > 0 scores the
    robust objective; ``zi`` ``"row"``/``"col"`` the zero-inflated one with ``pi`` (m,) / (n,)."""
    import uuid

    import dask

    from .driver import sum_partials

    tok = uuid.uuid4().hex[:8]
    code = LOSS_CODES[loss]
    disp = np.zeros(bm.shape[0]) if dispersion is None else np.asarray(dispersion, np.float64)
    Wd = dask.delayed(np.ascontiguousarray(Wd, dtype=np.float64), name=f"lwd-{tok}")
    dd = dask.delayed(disp, name=f"ldisp-{tok}")
    bounds = bm.bounds
    if zi == "none":
        zpis = [NO_PI] * len(bm.blocks)
    else:
        pi = np.asarray(pi, dtype=np.float64)
        zpis = ([dask.delayed(pi, name=f"lpi-{tok}")] * len(bm.blocks) if zi == "row" else
                [pi[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])])
    parts = [dask.delayed(_block_loss, pure=True)(b, Wd, h, code, dd, float(power),
                                                  float(delta), z, zi == "col",
                                                  dask_key_name=f"loss-{tok}-{i}")
             for i, (b, h, z) in enumerate(zip(bm.blocks, h_blocks, zpis))]
    total = dask.delayed(sum_partials, pure=True)(*parts, dask_key_name=f"loss-{tok}")
    out = compute_on(total, client)
    return float(out[0]), max(float(out[1]), 0.0)
