"""The NMF layer of a graph: one RcppML ALS iteration per step, on the per-layer tasks of
:mod:`.multi`.

A layer that reads inputs updates V (= Hᵀ) first, block by block, then U (= W) from the reduced
partials: one pass over the blocks, exactly like ``engine.als``. An embedding layer (fed by
layers) updates U (= Hᵀ, the connecting matrix) first from a pass of partials of the current V,
then V (= W, the per-sample embedding) block by block. An angular penalty on V adds one pass
(V's Gram first); a Laplacian over the samples gathers V into one task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .blocks import row_ranges
from .driver import kept_value, stats_of
from .multi import (
    angular_tm,
    initial_pack,
    m_partials,
    u_finish_data,
    u_finish_embedding,
    u_rows_task,
    v_angular_task,
    v_finish_embedding,
    v_graph_term_data,
    v_graph_term_pack,
    v_task,
)
from .plan import GraphData, InputPart, LayerArrays, LayerSpec, Sources

__all__ = ["NMFSpec"]


@dataclass(frozen=True)
class NMFSpec(LayerSpec):
    """An NMF layer ``M ≈ U diag(d) Vᵀ`` (non-negative unless a side says otherwise).

    Examples
    --------
    Two layers as ``factor_net`` compiles ``nmf_layer(nmf_layer(aml, 6), 3)``:

    >>> from dask_factor.engine.plan import InputPart, LayerPart
    >>> fine = NMFSpec(0, "fine", 6, (InputPart(824, "aml", source=0),))
    >>> coarse = NMFSpec(1, "coarse", 3, (LayerPart(6, "fine", source=0),))
    >>> fine.nmf_compatible, fine.embedding, coarse.embedding, coarse.upstream
    (True, False, True, (0,))
    >>> coarse.U is coarse.H, coarse.V is coarse.W      # fed by layers: U = Hᵀ, V = W
    (True, True)
    """

    kind: ClassVar[str] = "nmf"
    #: the layer's loss (``nmf_layer(loss=)`` or ``factor_config(loss=)``); a count-data loss is
    #: fitted only on the ``nmf()`` path (``factor_net`` refuses it elsewhere)
    loss: str = "mse"

    @property
    def nmf_compatible(self) -> bool:
        return (len(self.parts) == 1 and isinstance(self.parts[0], InputPart)
                and self.W.plain and self.H.plain and self.W.target is None)

    # ---- static data and state

    def place(self, ctx, arrays: LayerArrays, gd: GraphData) -> dict:
        L = self.index
        keys = {}
        for name in ("utarget", "ugram_target", "ugraph", "vgram_target", "vgraph"):
            v = getattr(arrays, name)
            keys[name] = None if v is None else ctx.put(f"{name}{L}", v)
        keys["vtarget"] = (None if arrays.vtarget is None else [
            ctx.put(f"vtarget{L}-{p}", gd.sample_block(arrays.vtarget, p))
            for p in range(gd.nb)])
        return keys

    def initial_state(self, gd: GraphData, init, arrays: LayerArrays):
        if self.embedding:
            V0 = np.asarray(init, dtype=self.dtype)
            return initial_pack(self, None), [gd.sample_block(V0, p) for p in range(gd.nb)]
        return (initial_pack(self, init, arrays.vgram_target, arrays.vtarget is not None),
                [None] * gd.nb)

    # ---- one iteration

    def build(self, g, src: Sources, static: dict, t: int, ssq: float):
        L = self.index
        spec = self.light
        a = static
        nb = len(src.vs[L])
        pack_key = src.packs[L]
        vprev = src.vs[L] if t > 0 else [None] * nb
        has_vt = a["vtarget"] is not None
        args = [self.args(src, p) for p in range(nb)]
        if not self.embedding:
            vkeys, outs = self._v_phase(g, spec, a, pack_key, vprev, "partials", args)
            red = g.reduce(outs, label=f"L{L}-reduce")
            rows = self._row_tasks(g, spec, a, red, pack_key)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda:
                vterm = g.task(f"L{L}-v-graph", (), v_graph_term_data, a["vgraph"],
                               spec.V.graph_lambda, red, spec.norm, *vkeys)
            new_pack = g.task(f"L{L}-u-update", (), u_finish_data, red, pack_key, ssq, spec,
                              a["ugraph"], a["vgram_target"], has_vt, vterm, *rows)
        else:
            pp = [g.task(f"L{L}-partials", (p,), m_partials, spec, src.vs[L][p], *args[p])
                  for p in range(nb)]
            red1 = g.reduce(pp, label=f"L{L}-reduce")
            rows = self._row_tasks(g, spec, a, red1, pack_key)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda and t > 0:
                vterm = g.task(f"L{L}-v-graph", (), v_graph_term_pack, a["vgraph"],
                               spec.V.graph_lambda, pack_key, *src.vs[L])
            upack = g.task(f"L{L}-u-update", (), u_finish_embedding, red1, pack_key, spec,
                           a["ugraph"], a["vgram_target"], has_vt, vterm, *rows)
            vkeys, outs = self._v_phase(g, spec, a, upack, vprev, "loss", args)
            red2 = g.reduce(outs, label=f"L{L}-loss-reduce")
            new_pack = g.task(f"L{L}-v-update", (), v_finish_embedding, red2, upack, spec)
        return new_pack, vkeys, g.task(f"L{L}-stats", (), stats_of, new_pack)

    def _row_tasks(self, g, spec, a, red, pack_key):
        L = self.index
        rows = []
        for i, part in enumerate(spec.parts):
            rb = row_ranges(part.rows)
            for r0, r1 in zip(rb[:-1], rb[1:]):
                rows.append(g.task(f"L{L}-u-rows", (i, r0), u_rows_task, red, pack_key, i, r0,
                                   r1, spec, a["utarget"], a["ugram_target"]))
        return rows

    def _v_phase(self, g, spec, a, pack_key, vprev, want, args):
        """V solve tasks (and the angular second phase); returns (V keys, partials keys)."""
        L = self.index
        vt = a["vtarget"]
        first_want = "gram" if spec.V.angular > 0 else want
        vkeys, outs = [], []
        for p in range(len(args)):
            key = g.task(f"L{L}-block-solve", (p,), v_task, pack_key, vprev[p],
                         None if vt is None else vt[p], spec, first_want, *args[p])
            vkeys.append(g.task(f"L{L}-v", (p,), kept_value, key))
            outs.append(key)
        if spec.V.angular > 0:
            red = g.reduce(outs, label=f"L{L}-angular-reduce")
            tm = g.task(f"L{L}-angular", (), angular_tm, red, spec.V.angular)
            new_v, outs = [], []
            for p in range(len(args)):
                key = g.task(f"L{L}-block-angular", (p,), v_angular_task, pack_key, vkeys[p],
                             tm, spec, want, *args[p])
                new_v.append(g.task(f"L{L}-va", (p,), kept_value, key))
                outs.append(key)
            vkeys = new_v
        return vkeys, outs

