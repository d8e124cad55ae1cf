"""Block-sequential ALS: several W updates per pass over the column blocks (``updates_per_pass``).

Exact ALS (:mod:`.als`) solves H for every column block against one W, then solves W once: one
W update per pass over the data. When the pass is the cost (a matrix streamed from disk), W can
be updated more often from the same pass. The column blocks are dealt into ``B`` batches
(``b, b + B, b + 2B, …`` for batch ``b``: each batch is spread over the whole matrix) and a pass
runs them in turn::

    for batch j = 0 … B−1:
        per block p of batch j   H_p = NNLS(W, A_p), P_p = A_p H_pᵀ, Q_p = H_p H_pᵀ, s_p, s2_p
        fixed-order tree         the batch's statistics S_j = (Σ P_p, Σ Q_p, Σ s_p, Σ s2_p)
        one task                 S = Σ_b S_b, every batch's statistics in the current scale
        W tasks by row range     W = NNLS(Q̂ + L2, P̂ᵀ − L1)     (the ALS W solve on S)
        one small task           d, W ← W/d, the loss, the next Gram

The statistics of a batch are *replaced* when its blocks are solved again (no forgetting factor):
every W update solves W exactly against the current H of every block seen so far, and every H
solve is exact against the current W, so each update is a block-coordinate step on the same
least-squares objective as exact ALS. In the first pass W is solved from the batches seen so far
(a start from the first batch's columns); from the second pass on, from all of them.

**Scales.** W is kept with normalised columns and ``d`` apart, as in ALS. A W update changes the
scale in which the H of every block is expressed: a block solved against the previous normalised
W holds ``H``, and the new model is ``W_new diag(d) (H / d_h)``, so relative to ``W_new`` that
block's H is ``H ⊙ d/d_h``. Each batch keeps the product of these factors since its solve (a k
vector, ``WPack.bscale``): its statistics enter the next W update rescaled (``P diag(c)``,
``diag(c) Q diag(c)``, ``c ⊙ s``, ``c² ⊙ s2``), its blocks' warm starts likewise, and the
returned H is ``H_raw ⊙ c / d`` per block. Nothing is recomputed: the rescaling is exact
arithmetic on k-vectors, in a fixed order.

The loss recorded after each pass is that of the model the fit returns (the last W, every
block's latest H), computed from the statistics as in ALS. With ``updates_per_pass=1`` the kind
performs exactly ALS's arithmetic (tested bit for bit against :class:`.als.ALSKind`).

The pass is one step of the one driver (:func:`.driver.drive`): the reduction of each batch is
:meth:`.driver.Step.reduce` (fixed order: bitwise identical results on any scheduler and worker
count), the W update is ALS's row-range solve and finish, the block solve ALS's block task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import checkpoint
from .als import (
    ALSConfig,
    WPack,
    config_fingerprint,
    fit_fingerprint,
    h_block_task,
    make_wpack,
    w_finish,
    w_rows_task,
)
from .blocks import W_ROWS_PER_TASK, BlockedMatrix, row_ranges
from .driver import Built, FitKind, Report, kept_value, stats_of, sum_partials

__all__ = ["OnlineKind", "BatchStats", "batches_of"]


@checkpoint.register
@dataclass
class BatchStats:
    """The W-update statistics of one batch of column blocks, as computed by its last solve
    (in the scale of the W it was solved against; ``WPack.bscale`` converts them)."""

    P: np.ndarray  # m × k, Σ A_p H_pᵀ
    Q: np.ndarray  # k × k, Σ H_p H_pᵀ
    s: np.ndarray  # k, Σ |H| per factor
    s2: np.ndarray  # k, Σ H² per factor
    sweeps: float = 0.0


def batches_of(n_blocks: int, updates_per_pass: int) -> list[list[int]]:
    """The batches of one pass: block ``p`` belongs to batch ``p mod B``, with ``B`` the
    number of W updates per pass capped at the number of blocks.

    Examples
    --------
    >>> batches_of(7, 3)
    [[0, 3, 6], [1, 4], [2, 5]]
    >>> batches_of(2, 4)
    [[0], [1]]
    """
    B = max(1, min(int(updates_per_pass), int(n_blocks)))
    return [list(range(b, n_blocks, B)) for b in range(B)]


def _batch_stats(red) -> BatchStats:
    P, Q, s, s2, sweeps = red
    return BatchStats(P=P, Q=Q, s=s, s2=s2, sweeps=float(sweeps))


def _batch_view(pack: WPack, j: int) -> WPack:
    """The package batch ``j``'s block tasks receive: the warm start of its blocks' previous H
    in the current scale (``xscale = bscale[j]``)."""
    if pack.bscale is None:
        return pack
    return dataclasses.replace(pack, xscale=np.asarray(pack.bscale[j]))


def _combine(pack: WPack, fresh: int, *batches):
    """Σ of every batch's statistics in the current scale (batch order), as ALS's reduction
    result ``(P, Q, s, s2, sweeps)``; batch ``fresh`` was just solved against ``pack``."""
    P = Q = s = s2 = None
    sweeps = 0.0
    for b, st in enumerate(batches):
        if st is None:  # first pass: not visited yet
            continue
        if b == fresh or pack.bscale is None:
            c = None
            sweeps = float(st.sweeps) if b == fresh else sweeps
        else:
            c = np.asarray(pack.bscale[b], dtype=np.float64)
        Pb = st.P if c is None else st.P * c
        Qb = st.Q if c is None else st.Q * np.outer(c, c)
        sb = st.s if c is None else st.s * c
        s2b = st.s2 if c is None else st.s2 * (c * c)
        if P is None:
            P, Q, s, s2 = (np.array(Pb, dtype=np.float64, copy=True), np.array(Qb, copy=True),
                           np.array(sb, copy=True), np.array(s2b, copy=True))
        else:
            P, Q, s, s2 = P + Pb, Q + Qb, s + sb, s2 + s2b
    return P, Q, s, s2, sweeps


def _finish(red, pack_prev: WPack, sq_norm: float, cfg: ALSConfig, fresh: int, n_batches: int,
            *rows) -> WPack:
    """ALS's W finish, then every batch's scale: ``c_b ⊙ d/d_h`` (1 for the fresh batch)."""
    pack = w_finish(red, pack_prev, sq_norm, cfg, None, *rows)
    k = pack.W.shape[1]
    prev = (np.ones((n_batches, k)) if pack_prev.bscale is None
            else np.array(pack_prev.bscale, dtype=np.float64, copy=True))
    prev[fresh] = 1.0
    pack.bscale = prev * (pack.d / pack.dh)[None, :]
    return pack


class OnlineKind(FitKind):
    """Block-sequential ALS: one pass a step, ``B`` W updates per pass (module docstring)."""

    prefix = "nmf"

    def __init__(self, bm: BlockedMatrix, W0, cfg: ALSConfig, *, sq_norm: float,
                 updates_per_pass: int, w_rows_per_task=W_ROWS_PER_TASK):
        self.bm, self.W0, self.cfg, self.sq_norm = bm, W0, cfg, sq_norm
        self.batches = batches_of(bm.n_blocks, updates_per_pass)
        self.row_bounds = row_ranges(bm.shape[0], w_rows_per_task)

    @property
    def n_batches(self) -> int:
        return len(self.batches)

    def setup(self, ctx):
        self.bkeys = ctx.blocks(self.bm, delta=True)  # h_block_task reads DeltaCSC blocks

    def initial_state(self):
        return {"pack": make_wpack(self.W0, 0, self.cfg),
                "h": [None] * self.bm.n_blocks, "batches": [None] * self.n_batches}

    def build(self, g, st, step):
        cfg, pack = self.cfg, st["pack"]
        new_h = list(st["h"])
        batches = list(st["batches"])
        rb = self.row_bounds
        for j, blocks in enumerate(self.batches):
            view = g.task("batch-pack", (j,), _batch_view, pack, j)
            parts = []
            for b in blocks:
                hk = g.task("block-solve", (b,), h_block_task, self.bkeys[b], view, st["h"][b],
                            None, cfg)
                new_h[b] = g.task("h", (b,), kept_value, hk)
                parts.append(hk)
            red = g.reduce(parts, sum_partials, f"reduce-{j}")
            batches[j] = g.task("batch-stats", (j,), _batch_stats, red)
            total = g.task("w-stats", (j,), _combine, pack, j, *batches)
            rows = [g.task("w-rows", (j, c), w_rows_task, total, pack, rb[c], rb[c + 1], cfg)
                    for c in range(len(rb) - 1)]
            pack = g.task("w-update", (j,), _finish, total, pack, self.sq_norm, cfg, j,
                          self.n_batches, *rows)
        return Built({"pack": pack, "h": new_h, "batches": batches},
                     [g.task("stats", (), stats_of, pack)])

    def record(self, step, stats):
        return Report(float(stats[0]["sse"]))

    def h_multipliers(self, pack: WPack) -> list[np.ndarray]:
        """Per block, the k-vector that turns its raw H into the returned (normalised) H of the
        model ``pack`` ends: ``H = H_raw ⊙ c_b / d`` (``c_b`` the scale of the block's batch)."""
        d = np.asarray(pack.d, dtype=np.float64)
        of = {b: j for j, blocks in enumerate(self.batches) for b in blocks}
        return [np.asarray(pack.bscale[of[b]], dtype=np.float64) / d
                for b in range(self.bm.n_blocks)]

    def fingerprint(self):
        return fit_fingerprint(self.bm, self.sq_norm, self.W0, {
            "kind": "online", "updates_per_pass": self.n_batches,
            **config_fingerprint(self.cfg), "target": None})

