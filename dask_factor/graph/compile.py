"""``factor_net()``: check a graph as a whole and compile it into an ordered plan of layers.

Checks, each with a message naming the nodes involved, before any data are read: node types,
cycles, declared inputs that the output does not reach (and inputs used but not declared),
duplicate names, sample counts (``factor_shared``, merges, conditions), ranks of ``factor_add``,
layer ranks against their input's size, and the shapes of per-factor targets and Laplacians.

The plan lists the layers in graph order (depth first, upstream first, each layer once; not
alphabetical), each with the row parts of its input matrix (see :mod:`dask_factor.engine.multi`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import FactorNetConfig, FactorOptions, factor_config
from .merge import (
    FactorAdd,
    FactorConcat,
    FactorCondition,
    FactorShared,
    _check_same_samples,
    check_add_ranks,
    orient_z,
)
from .nodes import FactorInput, NMFLayer, Node, SVDLayer

__all__ = ["FactorNet", "LayerPlan", "PartPlan", "SideOptions", "factor_net"]

_SIDE_FIELDS = ("L1", "L2", "L21", "angular", "upper_bound", "nonneg", "graph_lambda",
                "target_lambda")


@dataclass(frozen=True)
class PartPlan:
    """One row part of a layer's input matrix.

    kind : ``"data"`` (graph input ``source``, an index into ``FactorNet.inputs``), ``"fixed"``
    (``FactorNet.conditions[source]``'s Z), ``"layer"`` (the H of layer ``source``) or ``"add"``
    (the sum of the H of the layers ``source``).
    """

    kind: str
    rows: int
    source: Any
    name: str

    def to_dict(self) -> dict:
        src = list(self.source) if isinstance(self.source, tuple) else self.source
        return {"kind": self.kind, "rows": self.rows, "source": src, "name": self.name}


@dataclass(eq=False)
class SideOptions:
    """The resolved options of one factor (W or H) of a layer."""

    L1: float = 0.0
    L2: float = 0.0
    L21: float = 0.0
    angular: float = 0.0
    upper_bound: float = 0.0
    nonneg: bool = True
    graph_lambda: float = 0.0
    target_lambda: float = 0.0
    graph: Any = None
    target: np.ndarray | None = None

    def scalars(self) -> dict:
        return {f: getattr(self, f) for f in _SIDE_FIELDS}


@dataclass(eq=False)
class LayerPlan:
    """A layer in graph order with its resolved input and options.

    ``embedding`` is True for a layer fed by layers (its input is ``t(H_up)``).
    """

    index: int
    name: str
    kind: str
    k: int
    node: Node
    embedding: bool
    parts: tuple[PartPlan, ...]
    input_label: str
    W: SideOptions
    H: SideOptions
    shared: bool

    @property
    def rows(self) -> int:
        return int(sum(p.rows for p in self.parts))

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "kind": self.kind, "k": self.k,
                "embedding": self.embedding, "input": self.input_label, "shared": self.shared,
                "parts": [p.to_dict() for p in self.parts], "W": self.W.scalars(),
                "H": self.H.scalars()}


@dataclass(eq=False)
class FactorNet:
    """A compiled factorization graph (made by :func:`factor_net`; run it with ``fit``).

    Attributes
    ----------
    inputs : tuple of FactorInput
        Declared inputs, in the order given.
    output : Node
    config : FactorNetConfig
    layers : tuple of LayerPlan
        Graph order (upstream first).
    conditions : tuple of FactorCondition
        The factor_condition nodes, with ``Zs`` their Z oriented p × n.
    n : int
        Number of samples.
    """

    inputs: tuple[FactorInput, ...]
    output: Node
    config: FactorNetConfig
    layers: tuple[LayerPlan, ...]
    conditions: tuple[FactorCondition, ...]
    Zs: tuple[np.ndarray, ...]
    n: int
    names: dict = field(default_factory=dict, repr=False)

    @property
    def input_names(self) -> list[str]:
        return [self.names[id(x)] for x in self.inputs]

    @property
    def layer_names(self) -> list[str]:
        return [lp.name for lp in self.layers]

    def layer(self, name: str) -> LayerPlan:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(f"no layer named {name!r}; layers: {self.layer_names}")

    @property
    def nmf_path(self) -> bool:
        """True when the graph is one NMF layer on one input with options ``nmf()`` has."""
        if len(self.layers) != 1:
            return False
        lp = self.layers[0]
        if lp.kind != "nmf" or lp.embedding or len(lp.parts) != 1 or lp.parts[0].kind != "data":
            return False
        plain = all(s.L21 == 0 and s.angular == 0 and s.graph is None for s in (lp.W, lp.H))
        return plain and lp.W.target is None

    def describe(self) -> list[dict]:
        """The plan as JSON-friendly dicts (saved with results; enough to ``predict``)."""
        return [lp.to_dict() for lp in self.layers]

    def __repr__(self) -> str:
        chain = ", ".join(f"{lp.name}(k={lp.k}, {lp.input_label})" for lp in self.layers)
        return f"FactorNet(inputs={self.input_names}, n={self.n}, layers=[{chain}])"


# --------------------------------------------------------------------------------------------


def _walk(output: Node) -> list[Node]:
    """Post-order (upstream first) of every node reached from ``output``; raises on a cycle."""
    state: dict[int, int] = {}
    order: list[Node] = []

    def visit(node: Node, path: list[Node]):
        st = state.get(id(node))
        if st == 1:
            return
        if st == 0:
            i = next(j for j, x in enumerate(path) if x is node)
            loop = " → ".join(repr(x.label) for x in [*path[i:], node])
            raise ValueError(f"factor_net: the graph has a cycle: {loop}")
        if not isinstance(node, Node):
            where = path[-1].label if path else "output"
            raise TypeError(f"factor_net: {where!r} reads a {type(node).__name__}, not a graph "
                            f"node")
        state[id(node)] = 0
        for up in node.upstream():
            visit(up, [*path, node])
        state[id(node)] = 1
        order.append(node)

    visit(output, [])
    return order


def _resolve_shape(inp: FactorInput, label: str) -> tuple[int, int]:
    if inp.shape is not None:
        return inp.shape
    from ..engine.inputs import open_lazy

    try:
        shape = tuple(int(s) for s in open_lazy(inp.data, label).shape)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"factor_net: cannot determine the shape of input {label!r}: "
                         f"{exc}") from exc
    inp.shape = shape
    return shape


def _side(node: Node, side: str) -> SideOptions:
    idx = 0 if side == "W" else 1
    opts: FactorOptions | None = getattr(node, side)

    def pick(name, layer_value):
        v = getattr(opts, name) if opts is not None else None
        return layer_value if v is None else v

    def layer_val(name, default):
        pair = getattr(node, name, None)
        return default if pair is None else pair[idx]

    out = SideOptions(
        L1=float(pick("L1", layer_val("L1", 0.0))), L2=float(pick("L2", layer_val("L2", 0.0))),
        L21=float(pick("L21", layer_val("L21", 0.0))),
        angular=float(pick("angular", layer_val("angular", 0.0))),
        upper_bound=float(pick("upper_bound", layer_val("upper_bound", 0.0))),
        nonneg=bool(pick("nonneg", layer_val("nonneg", True))),
    )
    if opts is not None:
        out.graph, out.target = opts.graph, opts.target
        out.graph_lambda = float(opts.graph_lambda or 0.0)
        out.target_lambda = float(opts.target_lambda or 0.0)
    return out


def factor_net(inputs, output: Node, config: FactorNetConfig | None = None) -> FactorNet:
    """Compile and check a factorization graph.

    Parameters
    ----------
    inputs : FactorInput or list of FactorInput
        The graph's inputs (every one must be reached from ``output``).
    output : Node
        The last layer (``nmf_layer`` or ``svd_layer``).
    config : FactorNetConfig, optional
        From :func:`factor_config` (default settings when None).

    Returns
    -------
    FactorNet
        Layers in graph order (upstream first); unnamed layers become ``L1, L2, …``, unnamed
        inputs ``input1, …``.

    Raises
    ------
    TypeError
        A wrong node or config type.
    ValueError
        A cycle; an input not reached from the output (or used but not declared); duplicate
        names; inputs with different sample counts; ``factor_add`` branches of different ranks;
        a rank larger than the layer's input; a target or Laplacian of the wrong shape. Each
        message names the nodes involved.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_config
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="methylation")
    >>> net = factor_net(inp, nmf_layer(nmf_layer(inp, 10, name="fine"), 3, name="coarse"),
    ...                  factor_config(maxit=100, seed=42))
    >>> net.layer_names, net.n
    (['fine', 'coarse'], 135)
    """
    if isinstance(inputs, Node):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise TypeError(f"factor_net: 'inputs' must be a factor_input or a non-empty list of "
                        f"them, got {type(inputs).__name__}")
    for i, x in enumerate(inputs):
        if not isinstance(x, FactorInput):
            raise TypeError(f"factor_net: inputs[{i}] must be a factor_input node, got "
                            f"{type(x).__name__}")
    if not isinstance(output, Node):
        raise TypeError(f"factor_net: 'output' must be a graph node, got "
                        f"{type(output).__name__}")
    if not isinstance(output, (NMFLayer, SVDLayer)):
        raise TypeError(f"factor_net: 'output' must be a layer (nmf_layer or svd_layer), got "
                        f"{output.label!r}")
    if config is None:
        config = factor_config()
    if not isinstance(config, FactorNetConfig):
        raise TypeError(f"factor_net: 'config' must be from factor_config(), got "
                        f"{type(config).__name__}")
    if len({id(x) for x in inputs}) != len(inputs):
        raise ValueError("factor_net: an input is listed twice in 'inputs'")

    nodes = _walk(output)
    reached = [x for x in nodes if isinstance(x, FactorInput)]
    reached_ids = {id(x) for x in reached}
    declared_ids = {id(x) for x in inputs}

    # ---- names
    names: dict[int, str] = {}
    for i, x in enumerate(inputs):
        names[id(x)] = x.name or f"input{i + 1}"
    missing = [names[id(x)] for x in inputs if id(x) not in reached_ids]
    if missing:
        raise ValueError(f"factor_net: declared input(s) {missing} not reachable from output "
                         f"{output.label!r}")
    undeclared = [x.label for x in reached if id(x) not in declared_ids]
    if undeclared:
        raise ValueError(f"factor_net: input(s) {undeclared} are used by the graph but not "
                         f"listed in 'inputs'")
    layer_nodes = [x for x in nodes if isinstance(x, (NMFLayer, SVDLayer))]
    for i, x in enumerate(layer_nodes):
        names[id(x)] = x.name or f"L{i + 1}"
    conds = [x for x in nodes if isinstance(x, FactorCondition)]
    for i, x in enumerate(conds):
        names[id(x)] = x.name or ("Z" if len(conds) == 1 else f"Z{i + 1}")
    seen: dict[str, list[str]] = {}
    for x in [*inputs, *layer_nodes, *conds]:
        seen.setdefault(names[id(x)], []).append(type(x).__name__)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    if dups:
        desc = "; ".join(f"{k!r} used by {len(v)} nodes ({', '.join(v)})" for k, v in dups.items())
        raise ValueError(f"factor_net: duplicate names: {desc}")

    # ---- samples
    shapes = {id(x): _resolve_shape(x, names[id(x)]) for x in inputs}
    for x in nodes:
        if isinstance(x, FactorShared):
            _check_same_samples(f"factor_shared({', '.join(repr(names[id(i)]) for i in x.inputs)})",
                                x.inputs)
    ns = {names[id(x)]: shapes[id(x)][1] for x in inputs}
    if len(set(ns.values())) > 1:
        desc = ", ".join(f"{k!r} has {v}" for k, v in ns.items())
        raise ValueError(f"factor_net: all inputs of a graph must share the samples (columns): "
                         f"{desc}")
    n = next(iter(ns.values()))
    Zs = tuple(orient_z(f"factor_condition({names[id(c)]!r})", c.Z, n) for c in conds)
    for x in nodes:
        if isinstance(x, FactorAdd):
            check_add_ranks(f"factor_add({', '.join(repr(b.label) for b in x.branches)})",
                            x.branches)

    # ---- layers
    input_index = {id(x): i for i, x in enumerate(inputs)}
    layer_index = {id(x): i for i, x in enumerate(layer_nodes)}
    cond_index = {id(x): i for i, x in enumerate(conds)}

    def parts_of(node: Node) -> list[PartPlan]:
        if isinstance(node, FactorInput):
            return [PartPlan("data", shapes[id(node)][0], input_index[id(node)], names[id(node)])]
        if isinstance(node, FactorShared):
            return [p for x in node.inputs for p in parts_of(x)]
        if isinstance(node, FactorCondition):
            z = Zs[cond_index[id(node)]]
            return [*parts_of(node.input),
                    PartPlan("fixed", int(z.shape[0]), cond_index[id(node)], names[id(node)])]
        if isinstance(node, (NMFLayer, SVDLayer)):
            return [PartPlan("layer", node.k, layer_index[id(node)], names[id(node)])]
        if isinstance(node, FactorConcat):
            return [p for b in node.branches for p in parts_of(b)]
        if isinstance(node, FactorAdd):
            flat = []

            def collect(b):
                if isinstance(b, FactorAdd):
                    for c in b.branches:
                        collect(c)
                else:
                    flat.append(b)
            collect(node)
            return [PartPlan("add", flat[0].k, tuple(layer_index[id(b)] for b in flat),
                             "+".join(names[id(b)] for b in flat))]
        raise TypeError(f"factor_net: unsupported node {type(node).__name__}")

    def label_of(node: Node) -> str:
        if isinstance(node, FactorInput):
            return f"input:{names[id(node)]}"
        if isinstance(node, (NMFLayer, SVDLayer)):
            return f"layer:{names[id(node)]}"
        if isinstance(node, FactorShared):
            return "shared:" + ",".join(names[id(x)] for x in node.inputs)
        if isinstance(node, FactorConcat):
            return "concat:" + ",".join(label_of(b).split(":", 1)[1] for b in node.branches)
        if isinstance(node, FactorAdd):
            return "add:" + ",".join(label_of(b).split(":", 1)[1] for b in node.branches)
        return f"cond:{names[id(node)]}({label_of(node.input)})"

    plans = []
    for i, node in enumerate(layer_nodes):
        name = names[id(node)]
        where = f"{node.kind}_layer {name!r}"
        parts = tuple(parts_of(node.input))
        embedding = any(p.kind in ("layer", "add") for p in parts)
        R = int(sum(p.rows for p in parts))
        k = node.k
        if k > min(R, n):
            raise ValueError(f"{where}: k={k} exceeds min(rows, samples) = {min(R, n)} of its "
                             f"input {label_of(node.input)!r} ({R} × {n})")
        Wopt, Hopt = _side(node, "W"), _side(node, "H")
        w_shape = (n, k) if embedding else (R, k)
        h_shape = (k, R) if embedding else (k, n)
        for side, opt, shape in (("W", Wopt, w_shape), ("H", Hopt, h_shape)):
            if opt.target is not None and opt.target.shape != shape:
                raise ValueError(f"{where}: {side}(target=) has shape {opt.target.shape}; "
                                 f"expected {shape}, the shape of {side}")
            length = shape[0] if side == "W" else shape[1]
            if opt.graph is not None and opt.graph.shape != (length, length):
                raise ValueError(f"{where}: {side}(graph=) has shape {opt.graph.shape}; "
                                 f"expected ({length}, {length}), a Laplacian over "
                                 f"{'the rows of W' if side == 'W' else 'the columns of H'}")
        if isinstance(node, SVDLayer) and any(s.target is not None or s.graph is not None
                                              for s in (Wopt, Hopt)):
            raise ValueError(f"{where}: targets and graph Laplacians are NMF options")
        shared = isinstance(node.input, FactorShared) or (
            isinstance(node.input, FactorCondition) and isinstance(node.input.input, FactorShared))
        plans.append(LayerPlan(index=i, name=name, kind=node.kind, k=k, node=node,
                               embedding=embedding, parts=parts, input_label=label_of(node.input),
                               W=Wopt, H=Hopt, shared=shared))
    return FactorNet(inputs=tuple(inputs), output=output, config=config, layers=tuple(plans),
                     conditions=tuple(conds), Zs=Zs, n=int(n), names=names)
