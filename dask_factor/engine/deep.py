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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .als import CONVERGENCE_PATIENCE, W_ROWS_PER_TASK, block_graph
from .blocks import BlockedMatrix, tree_keys
from .executor import Executor
from .multi import (
    LayerPack,
    LayerSpec,
    add_tree,
    angular_tm,
    build_embedding_parts,
    first,
    initial_pack,
    m_partials,
    pack_stats,
    project_task,
    projection_pack,
    second,
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
#: blocks summed per reduction task (a fixed-order tree: results do not depend on the scheduler)
REDUCE_FANIN = 4


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


class GraphRun:
    """Builds and runs the per-step graphs of a set of layers, holding their persisted state."""

    def __init__(self, specs, data: list[BlockedMatrix], fixed: list[np.ndarray],
                 arrays: list[LayerArrays], bounds: np.ndarray, ssq: list[float], client=None,
                 w_rows_per_task: int = W_ROWS_PER_TASK):
        self.specs = list(specs)
        self.ex = Executor(client)
        self.tok = uuid.uuid4().hex[:8]
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.nb = self.bounds.size - 1
        self.ssq = ssq
        self.rows_per_task = max(1, int(w_rows_per_task))
        self.schedule = tree_keys(self.nb, REDUCE_FANIN)
        self.static: dict = {}
        self.bkeys = []
        for bm in data:
            dsk, keys = block_graph(bm, self.ex)
            self.static.update(dsk)
            self.bkeys.append(keys)
        self.fkeys = [[self._put(f"fixed{z}-{p}", np.ascontiguousarray(
            Z[:, self.bounds[p]:self.bounds[p + 1]], dtype=np.float64)) for p in range(self.nb)]
            for z, Z in enumerate(fixed)]
        self.arr = []
        for L, a in enumerate(arrays):
            keys = {}
            for name in ("utarget", "ugram_target", "ugraph", "vgram_target", "vgraph"):
                v = getattr(a, name)
                keys[name] = None if v is None else self._put(f"{name}{L}", v)
            keys["vtarget"] = (None if a.vtarget is None else [
                self._put(f"vtarget{L}-{p}", np.ascontiguousarray(
                    a.vtarget[self.bounds[p]:self.bounds[p + 1]], dtype=np.float64))
                for p in range(self.nb)])
            self.arr.append(keys)
        self.held: dict = {}
        self.pack: list = [None] * len(self.specs)
        self.vkeys: list = [[None] * self.nb for _ in self.specs]
        self.t = [0] * len(self.specs)
        self.count = 0
        self.graph_sizes: list[int] = []

    # ---- state

    def _put(self, name: str, value) -> str:
        key = f"{name}-{self.tok}"
        self.static[key] = self.ex.scatter(key, value) if self.ex.distributed else value
        return key

    def _hold(self, key: str, value) -> str:
        self.held[key] = self.ex.scatter(key, value) if self.ex.distributed else value
        return key

    def init_layer(self, L: int, init: np.ndarray, arrays: LayerArrays):
        """Data layer: ``init`` is U0 (R × k); embedding layer: V0 (n × k)."""
        spec = self.specs[L]
        has_vt = arrays.vtarget is not None
        if spec.embedding:
            pack = initial_pack(spec, None)
            V0 = np.asarray(init, dtype=spec.dtype)
            self.vkeys[L] = [self._hold(f"v0-{L}-{p}-{self.tok}", np.ascontiguousarray(
                V0[self.bounds[p]:self.bounds[p + 1]])) for p in range(self.nb)]
        else:
            pack = initial_pack(spec, init, arrays.vgram_target, has_vt)
        self.pack[L] = self._hold(f"pack0-{L}-{self.tok}", pack)

    # ---- graph building

    def _tree(self, dsk, parts: list, name: str) -> str:
        for lvl, groups in enumerate(self.schedule):
            nxt = []
            for gi, g in enumerate(groups):
                if len(g) == 1:
                    nxt.append(parts[g[0]])
                    continue
                rk = f"{name}-r{lvl}-{gi}"
                dsk[rk] = (add_tree, *[parts[i] for i in g])
                nxt.append(rk)
            parts = nxt
        return parts[0]

    def _row_tasks(self, dsk, spec, red, pack_key, base, L):
        a = self.arr[L]
        rows = []
        for i, part in enumerate(spec.parts):
            for r0 in range(0, part.rows, self.rows_per_task):
                r1 = min(part.rows, r0 + self.rows_per_task)
                key = f"{base}-u{i}-{r0}"
                dsk[key] = (u_rows_task, red, pack_key, i, r0, r1, spec, a["utarget"],
                            a["ugram_target"])
                rows.append(key)
        return rows

    def _v_phase(self, dsk, spec, L, base, parts_of, pack_key, vprev, want, up_args=None):
        """V solve tasks (and the angular second phase); returns (V keys, extras keys).

        Data layers pass ``parts_of(p)``; embedding layers ``up_args[p]`` (upstream blocks).
        """
        a = self.arr[L]
        vt = a["vtarget"]
        first_want = "gram" if spec.V.angular > 0 else want
        extra = (lambda p: up_args[p]) if up_args is not None else (lambda p: [])
        vkeys, extras = [], []
        for p in range(self.nb):
            key = f"{base}-v-{p}"
            dsk[key] = (v_task, parts_of(p), pack_key, vprev[p], None if vt is None else vt[p],
                        spec, first_want, *extra(p))
            dsk[key + "-V"] = (first, key)
            dsk[key + "-x"] = (second, key)
            vkeys.append(key + "-V")
            extras.append(key + "-x")
        if spec.V.angular > 0:
            red = self._tree(dsk, extras, f"{base}-ag")
            tm = f"{base}-tm"
            dsk[tm] = (angular_tm, red, spec.V.angular)
            new_v, extras = [], []
            for p in range(self.nb):
                key = f"{base}-va-{p}"
                dsk[key] = (v_angular_task, parts_of(p), pack_key, vkeys[p], tm, spec, want,
                            *extra(p))
                dsk[key + "-V"] = (first, key)
                dsk[key + "-x"] = (second, key)
                new_v.append(key + "-V")
                extras.append(key + "-x")
            vkeys = new_v
        return vkeys, extras

    def _data_parts(self, spec):
        def parts_of(p):
            return [self.bkeys[part.source][p] if part.kind == "data"
                    else self.fkeys[part.source][p] for part in spec.parts]
        return parts_of

    def _layer(self, dsk, L: int, cur_pack: list, cur_v: list):
        spec = self.specs[L]
        a = self.arr[L]
        base = f"L{L}-{self.count}-{self.tok}"
        pack_key = cur_pack[L]
        vprev = cur_v[L] if self.t[L] > 0 else [None] * self.nb
        has_vt = a["vtarget"] is not None
        if not spec.embedding:
            parts_of = self._data_parts(spec)
            vkeys, extras = self._v_phase(dsk, spec, L, base, parts_of, pack_key, vprev,
                                          "partials")
            red = self._tree(dsk, extras, f"{base}-red")
            rows = self._row_tasks(dsk, spec, red, pack_key, base, L)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda:
                vterm = f"{base}-vg"
                dsk[vterm] = (v_graph_term_data, a["vgraph"], spec.V.graph_lambda, red,
                              spec.norm, *vkeys)
            new_pack = f"{base}-pack"
            dsk[new_pack] = (u_finish_data, red, pack_key, self.ssq[L], spec, a["ugraph"],
                             a["vgram_target"], has_vt, vterm, *rows)
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
            pp = []
            for p in range(self.nb):
                key = f"{base}-mp-{p}"
                dsk[key] = (m_partials, spec, cur_v[L][p], *up_args[p])
                pp.append(key)
            red1 = self._tree(dsk, pp, f"{base}-red1")
            rows = self._row_tasks(dsk, spec, red1, pack_key, base, L)
            vterm = None
            if a["vgraph"] is not None and spec.V.graph_lambda and self.t[L] > 0:
                vterm = f"{base}-vg"
                dsk[vterm] = (v_graph_term_pack, a["vgraph"], spec.V.graph_lambda, pack_key,
                              *cur_v[L])
            upack = f"{base}-upack"
            dsk[upack] = (u_finish_embedding, red1, pack_key, spec, a["ugraph"],
                          a["vgram_target"], has_vt, vterm, *rows)
            vkeys, extras = self._v_phase(dsk, spec, L, base, lambda p: None, upack, vprev,
                                          "loss", up_args)
            red2 = self._tree(dsk, extras, f"{base}-red2")
            new_pack = f"{base}-pack"
            dsk[new_pack] = (v_finish_embedding, red2, upack, spec)
        stats = f"{base}-stats"
        dsk[stats] = (pack_stats, new_pack)
        return new_pack, vkeys, stats

    def step(self, layers: list[int]) -> list[dict]:
        """One iteration of ``layers`` (in order) as one graph; returns their stats."""
        dsk = dict(self.static)
        dsk.update(self.held)
        n0 = len(dsk)
        cur_pack = list(self.pack)
        cur_v = [list(v) for v in self.vkeys]
        stats_keys = []
        for L in layers:
            pk, vk, sk = self._layer(dsk, L, cur_pack, cur_v)
            cur_pack[L], cur_v[L] = pk, vk
            stats_keys.append(sk)
        self.graph_sizes.append(len(dsk) - n0)
        keep = [cur_pack[L] for L in layers] + [k for L in layers for k in cur_v[L]]
        kept, stats = self.ex.run(dsk, keep, stats_keys)
        kept = self.ex.rebase(kept)  # the scheduler forgets the previous sweeps
        for L in layers:
            for old in [self.pack[L], *self.vkeys[L]]:
                self.held.pop(old, None)
            self.pack[L] = cur_pack[L]
            self.vkeys[L] = cur_v[L]
            for key in [cur_pack[L], *cur_v[L]]:
                self.held[key] = kept[key]
            self.t[L] += 1
        self.count += 1
        return list(stats)

    def gather(self, L: int) -> tuple[LayerPack, list]:
        vals = self.ex.gather([self.held[self.pack[L]]] + [self.held[k] for k in self.vkeys[L]])
        return vals[0], [np.asarray(v) for v in vals[1:]]


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
) -> GraphState:
    """Fit the layers of a graph jointly (warm-up, then block-coordinate sweeps).

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

    Returns
    -------
    GraphState
    """
    t0 = time.perf_counter()
    run = GraphRun(specs, data, fixed, arrays, bounds, ssq, client)
    for L in range(len(specs)):
        run.init_layer(L, init[L], arrays[L])
    n = int(bounds[-1])
    sizes = [spec.rows * n for spec in specs]
    warm = min(WARMUP, maxit) if warmup is None else int(warmup)
    depth = _depths(specs)
    for level in sorted(set(depth)):
        layers = [L for L in range(len(specs)) if depth[L] == level]
        for _ in range(warm):
            run.step(layers)
    order = list(range(len(specs)))
    history: list[float] = []
    layer_hist: list[list[float]] = [[] for _ in specs]
    sse_hist: list[list[float]] = [[] for _ in specs]
    tols: list[float] = []
    below = 0
    converged = False
    sweeps = 0
    last_stats = None
    for sweeps in range(1, maxit + 1):
        stats = run.step(order)
        last_stats = stats
        mses = [s["sse"] / sizes[L] for L, s in enumerate(stats)]
        rels = []
        for L, s in enumerate(stats):
            if sse_hist[L]:
                prev = sse_hist[L][-1]
                rels.append(abs(prev - s["sse"]) / (abs(prev) + 1e-15))
            sse_hist[L].append(s["sse"])
            layer_hist[L].append(mses[L])
        total = float(sum(mses))
        rel = max(rels) if rels else math.nan
        if rels:
            tols.append(rel)
            below = below + 1 if rel < tol else 0
        history.append(total)
        stop = bool(on_sweep(sweeps, total, rel)) if on_sweep is not None else False
        if below >= CONVERGENCE_PATIENCE:
            converged = True
            break
        if stop:
            break
    layers = []
    for L, spec in enumerate(specs):
        pack, vblocks = run.gather(L)
        s = last_stats[L] if last_stats is not None else {"sse": math.nan, "ssq": math.nan}
        layers.append(LayerState(spec=spec, U=np.asarray(pack.U), dU=np.asarray(pack.dU),
                                 dV=np.asarray(pack.dV), v_blocks=vblocks, sse=float(s["sse"]),
                                 ssq=float(s["ssq"]), sse_history=sse_hist[L]))
    return GraphState(layers=layers, sweeps=sweeps, warmup=warm, converged=converged,
                      history=history, layer_history=layer_hist, tol_history=tols,
                      seconds=time.perf_counter() - t0, graph_sizes=run.graph_sizes)


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
