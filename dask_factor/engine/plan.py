"""The compiled factorization graph: the one set of types the compiler builds and the engine runs.

``dask_factor.graph.factor_net`` compiles a net straight into these objects; the engine never
sees the user-facing nodes (the arrows point graph → engine → kernels).

* A **part** is one row block ``M_i`` (``rows`` × n) of a layer's matrix ``M`` (R × n, samples as
  columns). Its class says where the rows come from and how one sample block of them is built
  inside a task:

  ========================  =====================================================  ==========
  class                     rows of ``M_i`` for the sample block p                 ``kind``
  ========================  =====================================================  ==========
  :class:`InputPart`        the block of graph input ``source``                     ``data``
  :class:`ConditionPart`    the block of a condition's Z (``factor_condition``)     ``fixed``
  :class:`LayerPart`        ``t`` of layer ``source``'s normalised per-sample       ``layer``
                            factor (its H, for a layer that reads inputs)
  :class:`SumPart`          the sum of those of the layers ``sources``              ``add``
                            (``factor_add``)
  ========================  =====================================================  ==========

  ``kind`` only names the class in saved plans (:meth:`Part.to_dict`, :func:`part_from_dict`).
* A **layer** (:class:`LayerSpec`, subclassed per layer type: ``engine.nmf_layer.NMFSpec``,
  ``engine.svd_layer.SVDSpec``) holds its rank, parts, per-factor options (:class:`SideSpec`, in
  the user's W/H orientation) and numerical settings, and knows how to run itself on the driver:
  its static data, its initial state, the tasks of one iteration and its final factors. A new
  layer type is one subclass; a new way of feeding a layer is one :class:`Part` subclass.

Orientation: every layer factorises ``M ≈ U diag(d) Vᵀ`` with ``V`` (n × k) the distributed
per-sample factor (one row block per sample block) and ``U`` (R × k) small and global. For a layer
that reads inputs ``U = W`` and ``V = Hᵀ``; for a layer fed by layers (an *embedding* layer,
RcppML's input ``t(H_up)``) ``U = Hᵀ`` and ``V = W``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "SideSpec", "Part", "InputPart", "ConditionPart", "LayerPart", "SumPart", "part_from_dict",
    "LayerSpec", "LayerArrays", "Sources", "GraphData", "SIDE_FIELDS",
]

SIDE_FIELDS = ("L1", "L2", "L21", "angular", "upper_bound", "nonneg", "graph_lambda",
               "target_lambda")


@dataclass(frozen=True)
class SideSpec:
    """The resolved options of one factor (W or H) of a layer.

    The scalars act on the factor's normal equations (:func:`.multi.side_gram`); ``graph`` (a
    Laplacian over the factor's length) and ``target`` (the factor's shape) are the arrays behind
    ``graph_lambda`` and ``target_lambda``, which act only when the array is given. The arrays
    are not part of equality or ``repr`` and never travel with tasks (:meth:`bare`).
    """

    L1: float = 0.0
    L2: float = 0.0
    L21: float = 0.0
    angular: float = 0.0
    upper_bound: float = 0.0
    nonneg: bool = True
    graph_lambda: float = 0.0
    target_lambda: float = 0.0
    graph: Any = field(default=None, compare=False, repr=False)
    target: np.ndarray | None = field(default=None, compare=False, repr=False)

    def scalars(self) -> dict:
        return {f: getattr(self, f) for f in SIDE_FIELDS}

    def bare(self) -> SideSpec:
        """The same options without the arrays (what the tasks receive)."""
        if self.graph is None and self.target is None:
            return self
        return dataclasses.replace(self, graph=None, target=None)

    @property
    def plain(self) -> bool:
        """No L21, angular or Laplacian (the options ``nmf()`` has)."""
        return self.L21 == 0 and self.angular == 0 and self.graph is None

    @property
    def constrained(self) -> bool:
        """Any penalty, bound or sign constraint (what a truncated SVD does not have)."""
        return bool(self.L1 or self.L2 or self.L21 or self.angular or self.upper_bound
                    or self.nonneg)


# --------------------------------------------------------------------------------------------
# row parts


@dataclass
class Sources:
    """Where the parts of one step read from, per sample block (graph keys, or values).

    inputs : per graph input, its blocks.
    fixed : per ``factor_condition``, its Z blocks (p × n_p, float64).
    vs : per layer, its current per-sample factor blocks (raw; the layer's package normalises).
    packs : per layer, its current package.
    """

    inputs: list
    fixed: list
    vs: list
    packs: list


@dataclass(frozen=True)
class Part:
    """One row part ``M_i`` (``rows`` × n) of a layer's matrix (see the module docstring).

    Examples
    --------
    A layer on an input with a condition's Z appended (``factor_condition(input, Z)``):

    >>> import numpy as np
    >>> layer = LayerSpec(0, "l", 2, (InputPart(3, "a", source=0), ConditionPart(1, "Z", source=0)))
    >>> layer.rows, layer.offsets, layer.embedding, layer.upstream
    (4, (0, 3, 4), False, ())
    >>> src = Sources(inputs=[["a-block-0"]], fixed=[["Z-block-0"]], vs=[], packs=[])
    >>> layer.args(src, 0)                       # the task arguments of sample block 0
    ['a-block-0', 'Z-block-0']
    >>> [b.shape for b in layer.rows_of([np.ones((3, 5)), np.zeros((1, 5))])]  # in the task
    [(3, 5), (1, 5)]
    >>> part_from_dict(SumPart(4, "x+y", sources=(0, 1)).to_dict())
    SumPart(rows=4, name='x+y', sources=(0, 1))
    """

    rows: int
    name: str

    kind: ClassVar[str] = ""
    #: task arguments one sample block of this part takes (see :meth:`args`)
    n_args: ClassVar[int] = 1

    @property
    def layers(self) -> tuple[int, ...]:
        """The upstream layers whose factors these rows are (empty: fixed data)."""
        return ()

    def args(self, src: Sources, p: int) -> list:
        """The task arguments holding sample block ``p`` of these rows."""
        raise NotImplementedError

    def block(self, args: list):
        """Sample block ``p`` of ``M_i`` (rows × n_p) from what :meth:`args` gave (in a task)."""
        raise NotImplementedError

    def sq_norm(self, input_sq: list[float], Zs: list[np.ndarray]) -> float:
        """‖M_i‖² when the rows are fixed data (0 for rows that change with the fit)."""
        return 0.0

    @property
    def source_json(self):
        return None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rows": int(self.rows), "source": self.source_json,
                "name": self.name}

    def with_inputs(self, remap: dict[int, int]) -> Part:
        """The part with graph inputs renumbered (``predict`` on a subset of the inputs)."""
        return self


@dataclass(frozen=True)
class InputPart(Part):
    """The rows of graph input ``source`` (its column blocks, sparse or dense, as read)."""

    source: int = 0
    kind: ClassVar[str] = "data"

    def args(self, src, p):
        return [src.inputs[self.source][p]]

    def block(self, args):
        return args[0]

    def sq_norm(self, input_sq, Zs):
        return float(input_sq[self.source])

    @property
    def source_json(self):
        return self.source

    def with_inputs(self, remap):
        return dataclasses.replace(self, source=remap[self.source])


@dataclass(frozen=True)
class ConditionPart(Part):
    """The rows of condition ``source``'s Z (``factor_condition``), p × n, fixed."""

    source: int = 0
    kind: ClassVar[str] = "fixed"

    def args(self, src, p):
        return [src.fixed[self.source][p]]

    def block(self, args):
        return np.asarray(args[0], dtype=np.float64)

    def sq_norm(self, input_sq, Zs):
        return float(np.sum(Zs[self.source] ** 2))

    @property
    def source_json(self):
        return self.source


@dataclass(frozen=True)
class LayerPart(Part):
    """``t`` of layer ``source``'s normalised per-sample factor (k_up × n): its H."""

    source: int = 0
    kind: ClassVar[str] = "layer"
    n_args: ClassVar[int] = 2

    @property
    def layers(self):
        return (self.source,)

    def args(self, src, p):
        return [src.vs[self.source][p], src.packs[self.source]]

    def block(self, args):
        V, pack = args
        return np.ascontiguousarray(pack.per_sample(V).T)

    @property
    def source_json(self):
        return self.source


@dataclass(frozen=True)
class SumPart(Part):
    """The sum of the parts of layers ``sources`` (``factor_add``: equal ranks)."""

    sources: tuple[int, ...] = ()
    kind: ClassVar[str] = "add"

    @property
    def n_args(self) -> int:  # type: ignore[override]
        return 2 * len(self.sources)

    @property
    def layers(self):
        return tuple(self.sources)

    def args(self, src, p):
        return [x for j in self.sources for x in (src.vs[j][p], src.packs[j])]

    def block(self, args):
        acc = None
        for i in range(0, len(args), 2):
            X = args[i + 1].per_sample(args[i])
            acc = X if acc is None else acc + X
        return np.ascontiguousarray(acc.T)

    @property
    def source_json(self):
        return list(self.sources)


_PARTS = {cls.kind: cls for cls in (InputPart, ConditionPart, LayerPart, SumPart)}


def part_from_dict(d: dict) -> Part:
    """A part from :meth:`Part.to_dict` (saved plans)."""
    cls = _PARTS[d["kind"]]
    src = d["source"]
    if cls is SumPart:
        return SumPart(int(d["rows"]), d["name"], sources=tuple(int(s) for s in src))
    return cls(int(d["rows"]), d["name"], source=int(src))


# --------------------------------------------------------------------------------------------
# layers


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
class GraphData:
    """What every layer of a fit reads: the inputs' column blocks, the conditions' Z (p × n),
    the sample block bounds shared by all, ‖input‖² per input, and where to run."""

    data: list
    fixed: list
    bounds: np.ndarray
    input_sq: list = field(default_factory=list)
    client: Any = None

    @property
    def nb(self) -> int:
        return int(len(self.bounds) - 1)

    def sample_block(self, X: np.ndarray, p: int) -> np.ndarray:
        """Rows ``bounds[p]:bounds[p+1]`` of an n × k array."""
        return np.ascontiguousarray(X[self.bounds[p]:self.bounds[p + 1]])


@dataclass(frozen=True)
class LayerSpec:
    """One compiled layer (base class; see the module docstring).

    Attributes
    ----------
    index : int
        Position in graph order (upstream first).
    name : str
    k : int
    parts : tuple of Part
        The row parts of the layer's matrix, in order.
    W, H : SideSpec
        Per-factor options, user orientation.
    input_label : str
        RcppML's ``input_ref`` (``input:aml``, ``shared:a,b``, ``layer:fine``, ``concat:lo,hi``, …).
    shared : bool
        Reads a ``factor_shared`` (W comes back per input).
    norm, solver, cd_maxit, cd_tol, dtype
        Numerical settings (set by ``fit`` with :meth:`tuned`).
    seed : int or None
        The layer's seed (``fit``: the graph's seed + index).
    """

    index: int
    name: str
    k: int
    parts: tuple[Part, ...]
    W: SideSpec = SideSpec()
    H: SideSpec = SideSpec()
    input_label: str = ""
    shared: bool = False
    norm: str = "L1"
    solver: str = "cd"
    cd_maxit: int = 10
    cd_tol: float = 1e-4
    dtype: Any = np.dtype(np.float32)
    seed: int | None = None

    #: names the layer type in results and saved plans
    kind: ClassVar[str] = ""
    #: whether the layer starts from a random factor (``init`` of :meth:`initial_state`)
    needs_init: ClassVar[bool] = True

    # ---- structure

    @cached_property
    def embedding(self) -> bool:
        """Fed by layers (its matrix is ``t(H_up)``-like): then ``U = Hᵀ`` and ``V = W``."""
        return any(p.layers for p in self.parts)

    @property
    def U(self) -> SideSpec:
        return self.H if self.embedding else self.W

    @property
    def V(self) -> SideSpec:
        return self.W if self.embedding else self.H

    @property
    def rows(self) -> int:
        return int(sum(p.rows for p in self.parts))

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        off = [0]
        for p in self.parts:
            off.append(off[-1] + p.rows)
        return tuple(off)

    @property
    def upstream(self) -> tuple[int, ...]:
        """The layers this one reads (sorted, each once)."""
        return tuple(sorted({j for p in self.parts for j in p.layers}))

    @property
    def constant(self) -> bool:
        """Whether the layer's factors never change during the sweeps (see ``SVDSpec``)."""
        return False

    def args(self, src: Sources, p: int) -> list:
        """Every part's task arguments for sample block ``p``, in part order."""
        return [a for part in self.parts for a in part.args(src, p)]

    def rows_of(self, args) -> list:
        """The row parts (``M_i`` blocks) of one sample block from :meth:`args`' values."""
        out, pos = [], 0
        for part in self.parts:
            n = part.n_args
            out.append(part.block(list(args[pos:pos + n])))
            pos += n
        return out

    def fixed_sq_norm(self, input_sq: list[float], Zs: list[np.ndarray]) -> float:
        """‖M‖² over the parts that are fixed data."""
        return float(sum(p.sq_norm(input_sq, Zs) for p in self.parts))

    # ---- variants

    def tuned(self, **settings) -> LayerSpec:
        """The layer with numerical settings (``norm``, ``solver``, ``dtype``, …) replaced."""
        return dataclasses.replace(self, **settings)

    @cached_property
    def light(self) -> LayerSpec:
        """The layer without its arrays (targets, Laplacians): what its tasks receive."""
        W, H = self.W.bare(), self.H.bare()
        if W is self.W and H is self.H:
            return self
        return dataclasses.replace(self, W=W, H=H)

    @property
    def pushes_away(self) -> bool:
        """Whether a side has a target with ``target_lambda < 0`` (see ``resolve_solver``)."""
        return any(s.target is not None and s.target_lambda < 0 for s in (self.W, self.H))

    @property
    def nmf_compatible(self) -> bool:
        """Whether ``nmf()`` itself can fit this layer (one NMF layer on one input)."""
        return False

    # ---- user orientation

    def engine_arrays(self, n: int) -> LayerArrays:
        """Targets and Laplacians in the engine's orientation."""
        U_opts, V_opts = self.U, self.V
        ut = U_opts.target
        if ut is not None and self.embedding:
            ut = ut.T  # H (k × R) → U (R × k)
        vt = V_opts.target
        if vt is not None and not self.embedding:
            vt = vt.T  # H (k × n) → V (n × k)
        a = LayerArrays(ugraph=U_opts.graph, vgraph=V_opts.graph)
        if ut is not None:
            a.utarget = np.ascontiguousarray(ut, dtype=np.float64)
            a.ugram_target = a.utarget.T @ a.utarget / a.utarget.shape[0]
        if vt is not None:
            a.vtarget = np.ascontiguousarray(vt, dtype=np.float64)
            a.vgram_target = a.vtarget.T @ a.vtarget / n
        return a

    def to_user(self, U: np.ndarray, V: np.ndarray):
        """(W, H) from the engine's U (R × k) and V (n × k); a shared layer's W is a dict of
        per-input blocks."""
        if self.embedding:
            return V, np.ascontiguousarray(U.T, dtype=np.float64)
        if not self.shared:
            return U, np.ascontiguousarray(V.T)
        out, o = {}, 0
        for p in self.parts:
            out[p.name] = np.ascontiguousarray(U[o:o + p.rows])
            o += p.rows
        return out, np.ascontiguousarray(V.T)

    def init_rows(self, n: int) -> int:
        """Rows of the random initial factor: V (n) for an embedding layer, else U (R)."""
        return n if self.embedding else self.rows

    def to_dict(self) -> dict:
        """The layer as JSON-friendly data (saved with results; enough to ``predict``)."""
        return {"index": self.index, "name": self.name, "kind": self.kind, "k": self.k,
                "embedding": self.embedding, "input": self.input_label, "shared": self.shared,
                "parts": [p.to_dict() for p in self.parts], "W": self.W.scalars(),
                "H": self.H.scalars()}

    # ---- on the driver (engine.deep.GraphKind)

    def check(self, n: int) -> None:
        """Refuse, before any work, what this layer type cannot fit (``n`` samples)."""

    def warmup_iterations(self, warm: int) -> int:
        """Warm-up iterations of this layer (RcppML: ``min(10, maxit)``)."""
        return warm

    def place(self, ctx, arrays: LayerArrays, gd: GraphData) -> dict:
        """Put the layer's static data where its tasks run; returns their keys."""
        return {}

    def initial_state(self, gd: GraphData, init, arrays: LayerArrays) -> tuple[Any, list]:
        """(package, per-sample blocks) before the first iteration (client side)."""
        raise NotImplementedError

    def build(self, g, src: Sources, static: dict, t: int, ssq: float):
        """The tasks of one iteration of this layer; returns (package key, V block keys, stats
        key). ``src`` holds the current factors of every layer (upstream ones already updated
        in this step); ``t`` counts the layer's earlier iterations."""
        raise NotImplementedError

    def finish(self, pack, v_blocks: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(U, d, V) of the fitted layer in the engine's orientation, V normalised (n × k)."""
        V = np.vstack([pack.per_sample(b) for b in v_blocks])
        return np.asarray(pack.U), np.asarray(pack.d(self.embedding), dtype=np.float64), V

    def describe_fit(self, pack) -> dict:
        """Layer-specific settings of a finished fit (for ``result.settings``)."""
        return {}
