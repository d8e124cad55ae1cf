"""The joint schedule of a factorization graph: warm-up fits, then one iteration per layer a sweep.

RcppML's ``fit()`` of a multi-layer graph (SPEC-nmf.md §3.2.5) optimises all layers jointly by an
outer block-coordinate loop:

1. warm-up: every layer, upstream first, runs ``min(10, maxit)`` iterations on its input;
2. sweeps: each sweep runs **one** iteration of every layer in graph order, each layer reading
   its upstream layers' factors as updated earlier in the same sweep.

Here one warm-up iteration of a level of the graph (layers with the same depth) and one whole
sweep are each **one Dask graph**: layers that do not depend on each other (the branches under a
``factor_concat``) are in the same submission and run in parallel; a downstream layer's tasks
depend on its upstream layer's blocks of the same sweep only, so they start as soon as those
blocks exist. The graph of every sweep has the same tasks; the factors of a sweep stay persisted
where they were computed (futures on a cluster) and the previous ones are released.

Convergence: the relative change of every layer's loss must stay below ``tol`` for 5
consecutive sweeps (nmf()'s rule applied per layer; RcppML tests the sum of the layers' MSEs,
which the largest layer dominates).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .als import W_ROWS_PER_TASK, _digest
from .blocks import BlockedMatrix, block_graph
from .driver import Built, FitKind, Report, drive, kept_value, stats_of
from .executor import Executor
from .multi import (
    LayerSpec,
    angular_tm,
    build_embedding_parts,
    initial_pack,
    m_partials,
    project_task,
    projection_pack,
    u_finish_data,
    u_finish_embedding,
    u_rows_task,
    v_angular_task,
    v_finish_embedding,
    v_graph_term_data,
    v_graph_term_pack,
    v_task,
)

#: warm-up iterations per layer (RcppML: min(10, maxit))
WARMUP = 10


@dataclass
class LayerArrays:
    """Large per-layer settings, in the engine's orientation (float64).

    utarget : (R, k) target of U; ugram_target ``utargetᵀ utarget / R`` (negative λ).
    ugraph : (R, R) Laplacian over U's rows.
    vtarget : (n, k) target of V; vgram_target ``vtargetᵀ vtarget / n``.
    vgraph : (n, n) Laplacian over the samples.
    """

    utarget: np.ndarray | None = None
    ugram_target: np.ndarray | None = None
    ugraph: Any = None
    vtarget: np.ndarray | None = None
    vgram_target: np.ndarray | None = None
    vgraph: Any = None


@dataclass
class LayerState:
    """A fitted layer in the engine's orientation: ``M ≈ U diag(d) Vᵀ``."""

    spec: LayerSpec
    U: np.ndarray  # (R, k) normalised
    dU: np.ndarray
    dV: np.ndarray
    v_blocks: list  # raw V_p (n_p × k); V_norm = V_raw / dV
    sse: float
    ssq: float
    sse_history: list[float] = field(default_factory=list)

    @property
    def d(self) -> np.ndarray:
        return self.dV if self.spec.embedding else self.dU

    @property
    def V(self) -> np.ndarray:
        """(n, k) normalised V."""
        return np.vstack([np.asarray(b, dtype=np.float64) for b in self.v_blocks]) / self.dV


@dataclass
class GraphState:
    layers: list[LayerState]
    sweeps: int
    warmup: int
    converged: bool
    history: list[float]  # Σ of the layers' MSE after every sweep
    layer_history: list[list[float]]  # per layer: MSE after every sweep
    tol_history: list[float]
    seconds: float
    graph_sizes: list[int]


def _depths(specs: list[LayerSpec]) -> list[int]:
    depth = []
    for s in specs:
        ups = [j for p in s.parts if p.kind in ("layer", "add")
               for j in ((p.source,) if p.kind == "layer" else p.source)]
        depth.append(1 + max(depth[j] for j in ups) if ups else 0)
    return depth


def _warmup_schedule(specs: list[LayerSpec], warm: int) -> list[list[int]]:
    """The warm-up steps: every level of the graph (upstream first) runs ``warm`` iterations."""
    depth = _depths(specs)
    out = []
    for level in sorted(set(depth)):
        layers = [L for L in range(len(specs)) if depth[L] == level]
        out.extend([layers] * warm)
    return out


class GraphKind(FitKind):
    """The layers of a graph: warm-up steps (one level), then sweeps (every layer, in order).

    State: per layer ``pack{L}`` (its small :class:`LayerPack`) and ``v{L}`` (its V blocks).
    """

    prefix = "factor-net"

    def __init__(self, specs, data: list[BlockedMatrix], fixed: list[np.ndarray],
                 arrays: list[LayerArrays], bounds: np.ndarray, ssq: list[float],
                 init: list | None = None, *, warm: int = 0,
                 w_rows_per_task: int = W_ROWS_PER_TASK):
        self.specs = list(specs)
        self.data, self.fixed, self.arrays = data, fixed, arrays
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.nb = self.bounds.size - 1
        self.ssq = ssq
        self.init = init
        self.rows_per_task = max(1, int(w_rows_per_task))
        self.schedule = _warmup_schedule(self.specs, warm)
        self.warmup_steps = len(self.schedule)

    # ---- static data and state

    def setup(self, ctx):
        self.bkeys = [ctx.blocks(bm) for bm in self.data]
        self.fkeys = [[ctx.put(f"fixed{z}-{p}", np.ascontiguousarray(
            Z[:, self.bounds[p]:self.bounds[p + 1]], dtype=np.float64)) for p in range(self.nb)]
            for z, Z in enumerate(self.fixed)]
        self.arr = []
        for L, a in enumerate(self.arrays):
            keys = {}
            for name in ("utarget", "ugram_target", "ugraph", "vgram_target", "vgraph"):
                v = getattr(a, name)
                keys[name] = None if v is None else ctx.put(f"{name}{L}", v)
            keys["vtarget"] = (None if a.vtarget is None else [
                ctx.put(f"vtarget{L}-{p}", np.ascontiguousarray(
                    a.vtarget[self.bounds[p]:self.bounds[p + 1]], dtype=np.float64))
                for p in range(self.nb)])
            self.arr.append(keys)

    def initial_state(self):
        st = {}
        for L, spec in enumerate(self.specs):
            a = self.arrays[L]
            if spec.embedding:
                st[f"pack{L}"] = initial_pack(spec, None)
                V0 = np.asarray(self.init[L], dtype=spec.dtype)
                st[f"v{L}"] = [np.ascontiguousarray(V0[self.bounds[p]:self.bounds[p + 1]])
                               for p in range(self.nb)]
            else:
                st[f"pack{L}"] = initial_pack(spec, self.init[L], a.vgram_target,
                                              a.vtarget is not None)
                st[f"v{L}"] = [None] * self.nb
        return st

    def layers_of(self, step: int) -> list[int]:
        if step <= self.warmup_steps:
            return self.schedule[step - 1]
        return list(range(len(self.specs)))

    def iterations_before(self, L: int, step: int) -> int:
        """How many earlier steps updated layer ``L`` (0: its V is still the initial one)."""
        warm = sum(L in self.schedule[s] for s in range(min(step - 1, self.warmup_steps)))
        return warm + max(0, step - 1 - self.warmup_steps)

    # ---- one step

    def build(self, g, st, step):
        cur_pack = [st[f"pack{L}"] for L in range(len(self.specs))]
        cur_v = [list(st[f"v{L}"]) for L in range(len(self.specs))]
        layers = self.layers_of(step)
        stats = []
        for L in layers:
            pk, vk, sk = self._layer(g, L, cur_pack, cur_v, self.iterations_before(L, step))
            cur_pack[L], cur_v[L] = pk, vk
            stats.append(sk)
        new = dict(st)
        for L in layers:
            new[f"pack{L}"], new[f"v{L}"] = cur_pack[L], cur_v[L]
        return Built(new, stats)

    def record(self, step, stats):
        if step <= self.warmup_steps:
            return None
        n = int(self.bounds[-1])
        mses = [s["sse"] / (spec.rows * n) for s, spec in zip(stats, self.specs)]
        return Report(float(sum(mses)), tuple(float(s["sse"]) for s in stats))

    def fingerprint(self):
        return {"kind": "graph", "bounds": [int(b) for b in self.bounds],
                "inputs": [[list(bm.shape), np.dtype(bm.dtype).name] for bm in self.data],
                "ssq": [float(x) for x in self.ssq], "warmup": self.warmup_steps,
                "layers": [repr(spec) for spec in self.specs],
                "init": [_digest(np.asarray(x, dtype=np.float64)) for x in self.init]}

    # ---- graph building

    def _row_tasks(self, g, spec, red, pack_key, L):
        a = self.arr[L]
        rows = []
        for i, part in enumerate(spec.parts):
            for r0 in range(0, part.rows, self.rows_per_task):
                r1 = min(part.rows, r0 + self.rows_per_task)
                rows.append(g.task(f"L{L}-u-rows", (i, r0), u_rows_task, red, pack_key, i, r0,
                                   r1, spec, a["utarget"], a["ugram_target"]))
        return rows

    def _v_phase(self, g, spec, L, parts_of, pack_key, vprev, want, up_args=None):
        """V solve tasks (and the angular second phase); returns (V keys, partials keys).

        Data layers pass ``parts_of(p)``; embedding layers ``up_args[p]`` (upstream blocks).
        """
        vt = self.arr[L]["vtarget"]
        first_want = "gram" if spec.V.angular > 0 else want
        extra = (lambda p: up_args[p]) if up_args is not None else (lambda p: [])
        vkeys, outs = [], []
        for p in range(self.nb):
            key = g.task(f"L{L}-block-solve", (p,), v_task, parts_of(p), pack_key, vprev[p],
                         None if vt is None else vt[p], spec, first_want, *extra(p))
            vkeys.append(g.task(f"L{L}-v", (p,), kept_value, key))
            outs.append(key)
        if spec.V.angular > 0:
            red = g.reduce(outs, label=f"L{L}-angular-reduce")
            tm = g.task(f"L{L}-angular", (), angular_tm, red, spec.V.angular)
            new_v, outs = [], []
            for p in range(self.nb):
                key = g.task(f"L{L}-block-angular", (p,), v_angular_task, parts_of(p), pack_key,
                             vkeys[p], tm, spec, want, *extra(p))
                new_v.append(g.task(f"L{L}-va", (p,), kept_value, key))
                outs.append(key)
            vkeys = new_v
        return vkeys, outs

    def _data_parts(self, spec):
        def parts_of(p):
            return [self.bkeys[part.source][p] if part.kind == "data"
                    else self.fkeys[part.source][p] for part in spec.parts]
        return parts_of

    def _layer(self, g, L: int, cur_pack: list, cur_v: list, t: int):
        spec = self.specs[L]
        a = self.arr[L]
        pack_key = cur_pack[L]
        vprev = cur_v[L] if t > 0 else [None] * self.nb
        has_vt = a["vtarget"] is not None
        if not spec.embedding:
            parts_of = self._data_parts(spec)
            vkeys, outs = self._v_phase(g, spec, L, parts_of, pack_key, vprev, "partials")
            red = g.reduce(outs, label=f"L{L}-reduce")
            rows = self._row_tasks(g, spec, red, pack_key, L)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda:
                vterm = g.task(f"L{L}-v-graph", (), v_graph_term_data, a["vgraph"],
                               spec.V.graph_lambda, red, spec.norm, *vkeys)
            new_pack = g.task(f"L{L}-u-update", (), u_finish_data, red, pack_key, self.ssq[L],
                              spec, a["ugraph"], a["vgram_target"], has_vt, vterm, *rows)
        else:
            up_args = []
            for p in range(self.nb):
                args = []
                for part in spec.parts:
                    if part.kind == "fixed":
                        args.append(self.fkeys[part.source][p])
                        continue
                    ups = (part.source,) if part.kind == "layer" else part.source
                    for j in ups:
                        args.extend([cur_v[j][p], cur_pack[j]])
                up_args.append(args)
            pp = [g.task(f"L{L}-partials", (p,), m_partials, spec, cur_v[L][p], *up_args[p])
                  for p in range(self.nb)]
            red1 = g.reduce(pp, label=f"L{L}-reduce")
            rows = self._row_tasks(g, spec, red1, pack_key, L)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda and t > 0:
                vterm = g.task(f"L{L}-v-graph", (), v_graph_term_pack, a["vgraph"],
                               spec.V.graph_lambda, pack_key, *cur_v[L])
            upack = g.task(f"L{L}-u-update", (), u_finish_embedding, red1, pack_key, spec,
                           a["ugraph"], a["vgram_target"], has_vt, vterm, *rows)
            vkeys, outs = self._v_phase(g, spec, L, lambda p: None, upack, vprev, "loss",
                                        up_args)
            red2 = g.reduce(outs, label=f"L{L}-loss-reduce")
            new_pack = g.task(f"L{L}-v-update", (), v_finish_embedding, red2, upack, spec)
        return new_pack, vkeys, g.task(f"L{L}-stats", (), stats_of, new_pack)


def fit_graph(
    specs: list[LayerSpec],
    data: list[BlockedMatrix],
    fixed: list[np.ndarray],
    arrays: list[LayerArrays],
    init: list[np.ndarray],
    *,
    bounds: np.ndarray,
    ssq: list[float],
    maxit: int,
    tol: float,
    warmup: int | None = None,
    client=None,
    on_sweep: Callable[[int, float, float], Any] | None = None,
    checkpoint=None,
    checkpoint_every: int | None = None,
    resume=None,
) -> GraphState:
    """Fit the layers of a graph jointly (warm-up, then block-coordinate sweeps) on the driver.

    Parameters
    ----------
    specs : list of LayerSpec
        In graph order (upstream first); ``specs[i].index == i``.
    data : list of BlockedMatrix
        The graph's inputs, all with the column block ``bounds``.
    fixed : list of ndarray (p, n)
        Fixed row parts (factor_condition's Z).
    arrays : list of LayerArrays
        Targets and Laplacians per layer.
    init : list of ndarray
        Per layer: U0 (R × k) for a data layer, V0 (n × k) for an embedding layer.
    bounds : ndarray of int64
        Sample block bounds shared by every layer.
    ssq : list of float
        Per data layer ‖M‖² (inputs and fixed parts); ignored for embedding layers.
    maxit, tol : sweeps and the convergence tolerance (5 consecutive sweeps, every layer).
    warmup : int, optional
        Warm-up iterations per layer (default ``min(10, maxit)``).
    client : distributed.Client, optional
    on_sweep : callable(sweep, total mse, rel), optional
        Called after every sweep; returning True stops.
    checkpoint, checkpoint_every, resume : optional
        See :func:`dask_factor.engine.driver.drive`.

    Returns
    -------
    GraphState
    """
    warm = min(WARMUP, maxit) if warmup is None else int(warmup)
    kind = GraphKind(specs, data, fixed, arrays, bounds, ssq, init, warm=warm)
    res = drive(kind, maxit=maxit, tol=tol, client=client, on_iteration=on_sweep,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                name="factor_net")
    ex = Executor(client)
    n = int(kind.bounds[-1])
    scored = res.stats[kind.warmup_steps:]
    layers = []
    for L, spec in enumerate(specs):
        vals = ex.gather([res.state[f"pack{L}"], *res.state[f"v{L}"]])
        pack, vblocks = vals[0], [np.asarray(v) for v in vals[1:]]
        s = scored[-1][L] if scored else {"sse": math.nan, "ssq": math.nan}
        layers.append(LayerState(
            spec=spec, U=np.asarray(pack.U), dU=np.asarray(pack.dU), dV=np.asarray(pack.dV),
            v_blocks=vblocks, sse=float(s["sse"]), ssq=float(s["ssq"]),
            sse_history=[float(st[L]["sse"]) for st in scored]))
    layer_hist = [[float(st[L]["sse"]) / (spec.rows * n) for st in scored]
                  for L, spec in enumerate(specs)]
    return GraphState(layers=layers, sweeps=res.iterations, warmup=warm,
                      converged=res.converged, history=list(res.scores),
                      layer_history=layer_hist, tol_history=list(res.rels),
                      seconds=res.seconds, graph_sizes=res.graph_sizes)


def project_graph(specs: list[LayerSpec], U: list[np.ndarray], d: list[np.ndarray],
                  data: list[BlockedMatrix], fixed: list[np.ndarray], bounds: np.ndarray,
                  client=None) -> list[np.ndarray]:
    """Project new samples through fitted layers; one Dask graph for the whole net.

    ``specs`` are projection specs (cold coordinate descent, 100 sweeps, tol 1e-8). Returns per
    layer the normalised V (n_new × k): ``Hᵀ`` of a data layer, ``W`` of an embedding layer.
    """
    ex = Executor(client)
    tok = uuid.uuid4().hex[:8]
    bounds = np.asarray(bounds, dtype=np.int64)
    nb = bounds.size - 1
    dsk: dict = {}
    bkeys = []
    for bm in data:
        g, keys = block_graph(bm, ex)
        dsk.update(g)
        bkeys.append(keys)
    fkeys = []
    for z, Z in enumerate(fixed):
        keys = []
        for p in range(nb):
            key = f"pfixed{z}-{p}-{tok}"
            dsk[key] = np.ascontiguousarray(Z[:, bounds[p]:bounds[p + 1]], dtype=np.float64)
            keys.append(key)
        fkeys.append(keys)
    packs, vkeys = [], []
    for L, spec in enumerate(specs):
        pk = f"ppack{L}-{tok}"
        dsk[pk] = projection_pack(spec, U[L], d[L])
        packs.append(pk)
        keys = []
        for p in range(nb):
            if spec.embedding:
                args = []
                for part in spec.parts:
                    if part.kind == "fixed":
                        args.append(fkeys[part.source][p])
                        continue
                    ups = (part.source,) if part.kind == "layer" else part.source
                    for j in ups:
                        args.extend([vkeys[j][p], packs[j]])
                mk = f"pm{L}-{p}-{tok}"
                dsk[mk] = (build_embedding_parts, spec, *args)
                parts = mk
            else:
                parts = [bkeys[part.source][p] if part.kind == "data" else fkeys[part.source][p]
                         for part in spec.parts]
            key = f"pv{L}-{p}-{tok}"
            dsk[key] = (project_task, parts, pk, spec)
            keys.append(key)
        vkeys.append(keys)
    flat = [k for keys in vkeys for k in keys]
    _, vals = ex.run(dsk, [], flat)
    out, pos = [], 0
    for L in range(len(specs)):
        blocks = vals[pos:pos + nb]
        pos += nb
        out.append(np.vstack([np.asarray(b, dtype=np.float64) for b in blocks]) / d[L])
    return out
