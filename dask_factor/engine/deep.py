"""The joint schedule of a factorization graph: warm-up fits, then one iteration per layer a sweep.

RcppML's ``fit()`` of a multi-layer graph (docs/graphs.md) optimises all layers jointly by an
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

What one iteration of a layer is belongs to its type (:class:`~.plan.LayerSpec` subclasses:
:class:`~.nmf_layer.NMFSpec`, :class:`~.svd_layer.SVDSpec`); what its input rows are belongs to
its parts (:class:`~.plan.Part`). This module only schedules them. An exact layer (an SVD) warms
up once; a layer whose input never changes (an SVD of inputs) is solved before the sweeps.

Convergence: the relative change of every layer's loss must stay below ``tol`` for 5
consecutive sweeps (nmf()'s rule applied per layer; RcppML tests the sum of the layers' MSEs,
which the largest layer dominates).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blocks import BlockedMatrix, block_graph
from .driver import Built, FitKind, Report, drive
from .executor import Executor
from .multi import project_task, projection_pack
from .plan import GraphData, LayerArrays, LayerSpec, Sources

__all__ = ["GraphKind", "LayerArrays", "LayerState", "GraphState", "fit_graph", "project_graph",
           "WARMUP"]

#: warm-up iterations per layer (RcppML: min(10, maxit))
WARMUP = 10


@dataclass
class LayerState:
    """A fitted layer in the engine's orientation: ``M ≈ U diag(d) Vᵀ``, V normalised (n × k)."""

    spec: LayerSpec
    U: np.ndarray
    d: np.ndarray
    V: np.ndarray
    sse: float
    ssq: float
    sse_history: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)


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
    depth: list[int] = []
    for s in specs:
        ups = s.upstream
        depth.append(1 + max(depth[j] for j in ups) if ups else 0)
    return depth


def _warmup_schedule(specs: list[LayerSpec], warm: int) -> list[list[int]]:
    """The warm-up steps: every level of the graph (upstream first) runs its layers' warm-up
    iterations (``warm`` for an iterative layer, fewer for exact ones)."""
    depth = _depths(specs)
    out = []
    for level in sorted(set(depth)):
        its = {L: specs[L].warmup_iterations(warm) for L in range(len(specs))
               if depth[L] == level}
        for s in range(max(its.values())):
            out.append([L for L, n in its.items() if n > s])
    return out


def _digest(a) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


class GraphKind(FitKind):
    """The layers of a graph: warm-up steps (one level), then sweeps (every layer, in order).

    State: per layer ``pack{L}`` (its small package) and ``v{L}`` (its per-sample blocks).
    """

    prefix = "factor-net"

    def __init__(self, specs, data: list[BlockedMatrix], fixed: list[np.ndarray],
                 arrays: list[LayerArrays], bounds: np.ndarray, ssq: list[float],
                 init: list | None = None, *, warm: int = 0, client=None,
                 input_sq: list[float] | None = None):
        self.specs = list(specs)
        self.arrays = arrays
        self.gd = GraphData(data=data, fixed=fixed, bounds=np.asarray(bounds, dtype=np.int64),
                            input_sq=list(input_sq or []), client=client)
        self.bounds = self.gd.bounds
        self.nb = self.gd.nb
        self.ssq = ssq
        self.init = init if init is not None else [None] * len(self.specs)
        self.schedule = _warmup_schedule(self.specs, warm)
        self.warmup_steps = len(self.schedule)

    # ---- static data and state

    def setup(self, ctx):
        gd = self.gd
        self.bkeys = [ctx.blocks(bm) for bm in gd.data]
        self.fkeys = [[ctx.put(f"fixed{z}-{p}", np.ascontiguousarray(
            Z[:, self.bounds[p]:self.bounds[p + 1]], dtype=np.float64)) for p in range(self.nb)]
            for z, Z in enumerate(gd.fixed)]
        self.static = [spec.place(ctx, self.arrays[L], gd) for L, spec in enumerate(self.specs)]

    def initial_state(self):
        st = {}
        for L, spec in enumerate(self.specs):
            st[f"pack{L}"], st[f"v{L}"] = spec.initial_state(self.gd, self.init[L],
                                                             self.arrays[L])
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
        n_layers = len(self.specs)
        src = Sources(inputs=self.bkeys, fixed=self.fkeys,
                      vs=[list(st[f"v{L}"]) for L in range(n_layers)],
                      packs=[st[f"pack{L}"] for L in range(n_layers)])
        layers = self.layers_of(step)
        stats = []
        for L in layers:
            pk, vk, sk = self.specs[L].build(g, src, self.static[L],
                                             self.iterations_before(L, step), self.ssq[L])
            src.packs[L], src.vs[L] = pk, vk
            stats.append(sk)
        new = dict(st)
        for L in layers:
            new[f"pack{L}"], new[f"v{L}"] = src.packs[L], src.vs[L]
        return Built(new, stats)

    def record(self, step, stats):
        if step <= self.warmup_steps:
            return None
        n = int(self.bounds[-1])
        mses = [s["sse"] / (spec.rows * n) for s, spec in zip(stats, self.specs)]
        return Report(float(sum(mses)), tuple(float(s["sse"]) for s in stats))

    def fingerprint(self):
        return {"kind": "graph", "bounds": [int(b) for b in self.bounds],
                "inputs": [[list(bm.shape), np.dtype(bm.dtype).name] for bm in self.gd.data],
                "ssq": [float(x) for x in self.ssq], "warmup": self.warmup_steps,
                "layers": [repr(spec) for spec in self.specs],
                "init": [None if x is None else _digest(np.asarray(x, dtype=np.float64))
                         for x in self.init]}


def fit_graph(
    specs: list[LayerSpec],
    data: list[BlockedMatrix],
    fixed: list[np.ndarray],
    arrays: list[LayerArrays],
    init: list,
    *,
    bounds: np.ndarray,
    ssq: list[float],
    maxit: int,
    tol: float,
    warmup: int | None = None,
    input_sq: list[float] | None = None,
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
    init : list
        Per layer, what its ``initial_state`` starts from: U0 (R × k) for an NMF layer on inputs,
        V0 (n × k) for an NMF layer fed by layers, None for an SVD layer.
    bounds : ndarray of int64
        Sample block bounds shared by every layer.
    ssq : list of float
        Per layer ‖M‖² of its fixed parts (inputs and conditions).
    maxit, tol : sweeps and the convergence tolerance (5 consecutive sweeps, every layer).
    warmup : int, optional
        Warm-up iterations per layer (default ``min(10, maxit)``).
    input_sq : list of float, optional
        ‖A‖² per input (layers on inputs that need it).
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
    kind = GraphKind(specs, data, fixed, arrays, bounds, ssq, init, warm=warm, client=client,
                     input_sq=input_sq)
    for spec in specs:
        spec.check(int(kind.bounds[-1]))
    res = drive(kind, maxit=maxit, tol=tol, client=client, on_iteration=on_sweep,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                name="factor_net")
    ex = Executor(client)
    n = int(kind.bounds[-1])
    scored = res.stats[kind.warmup_steps:]
    layers = []
    for L, spec in enumerate(specs):
        vals = ex.gather([res.state[f"pack{L}"], *res.state[f"v{L}"]])
        pack = vals[0]
        U, d, V = spec.finish(pack, vals[1:])
        s = scored[-1][L] if scored else {"sse": math.nan, "ssq": math.nan}
        layers.append(LayerState(
            spec=spec, U=U, d=d, V=V, sse=float(s["sse"]), ssq=float(s["ssq"]),
            sse_history=[float(st[L]["sse"]) for st in scored], info=spec.describe_fit(pack)))
    layer_hist = [[float(st[L]["sse"]) / (spec.rows * n) for st in scored]
                  for L, spec in enumerate(specs)]
    return GraphState(layers=layers, sweeps=res.iterations, warmup=warm,
                      converged=res.converged, history=list(res.scores),
                      layer_history=layer_hist, tol_history=list(res.rels),
                      seconds=res.seconds, graph_sizes=res.graph_sizes)


def project_graph(specs: list[LayerSpec], U: list[np.ndarray], d: list[np.ndarray],
                  data: list[BlockedMatrix], fixed: list[np.ndarray], bounds: np.ndarray,
                  client=None) -> list[np.ndarray]:
    """Project new samples through fitted NMF layers; one Dask graph for the whole net.

    ``specs`` are projection specs (cold coordinate descent, 100 sweeps, tol 1e-8). Returns per
    layer the normalised V (n_new × k): ``Hᵀ`` of a layer on inputs, ``W`` of an embedding layer.
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
    src = Sources(inputs=bkeys, fixed=fkeys, vs=[], packs=[])
    for L, spec in enumerate(specs):
        pk = f"ppack{L}-{tok}"
        dsk[pk] = projection_pack(spec, U[L], d[L])
        src.packs.append(pk)
        keys = []
        for p in range(nb):
            key = f"pv{L}-{p}-{tok}"
            dsk[key] = (project_task, pk, spec.light, *spec.args(src, p))
            keys.append(key)
        src.vs.append(keys)
    flat = [k for keys in src.vs for k in keys]
    _, vals = ex.run(dsk, [], flat)
    out, pos = [], 0
    for L in range(len(specs)):
        blocks = vals[pos:pos + nb]
        pos += nb
        out.append(np.vstack([np.asarray(b, dtype=np.float64) for b in blocks]) / d[L])
    return out
