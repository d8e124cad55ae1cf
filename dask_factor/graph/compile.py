"""``factor_net()``: check a graph as a whole and compile it into an ordered plan of layers.

Checks, each with a message naming the nodes involved, before any data are read: node types,
cycles, declared inputs that the output does not reach (and inputs used but not declared),
duplicate names, sample counts (``factor_shared``, merges, conditions), ranks of ``factor_add``,
layer ranks against their input's size, and the shapes of per-factor targets and Laplacians.

The result holds the engine's own layer objects (:mod:`dask_factor.engine.plan`: one
``LayerSpec`` subclass per layer type, each with the ``Part`` objects of its input matrix), in graph
order (depth first, upstream first, each layer once; not alphabetical). Every node compiles itself
(``row_parts``, ``ref``, ``compile``); this module walks the graph, names and checks it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..engine.plan import LayerSpec, Part, SideSpec
from .config import FactorNetConfig, FactorOptions, factor_config
from .merge import (
    FactorAdd,
    FactorCondition,
    FactorShared,
    check_add_ranks,
    check_same_samples,
    orient_z,
)
from .nodes import FactorInput, LayerNode, Node

__all__ = ["FactorNet", "factor_net"]

#: old names of the compiled types (one set now, in dask_factor.engine.plan)
_DEPRECATED = {"LayerPlan": LayerSpec, "PartPlan": Part, "SideOptions": SideSpec}


def __getattr__(name: str):
    if name in _DEPRECATED:
        warnings.warn(f"dask_factor.graph.compile.{name} is deprecated; the compiled graph's types "
                      f"are dask_factor.engine.plan.{_DEPRECATED[name].__name__} (and its "
                      f"subclasses)", DeprecationWarning, stacklevel=2)
        return _DEPRECATED[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(eq=False)
class FactorNet:
    """A compiled factorization graph (made by :func:`factor_net`; run it with ``fit``).

    Attributes
    ----------
    inputs : tuple of FactorInput
        Declared inputs, in the order given.
    output : Node
    config : FactorNetConfig
    layers : tuple of LayerSpec
        The compiled layers (:mod:`dask_factor.engine.plan`), graph order (upstream first).
    conditions : tuple of FactorCondition
        The factor_condition nodes, with ``Zs`` their Z oriented p × n.
    n : int
        Number of samples.
    """

    inputs: tuple[FactorInput, ...]
    output: Node
    config: FactorNetConfig
    layers: tuple[LayerSpec, ...]
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

    def layer(self, name: str) -> LayerSpec:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(f"no layer named {name!r}; layers: {self.layer_names}")

    @property
    def nmf_path(self) -> bool:
        """True when the graph is one NMF layer on one input with options ``nmf()`` has."""
        return len(self.layers) == 1 and self.layers[0].nmf_compatible

    def describe(self) -> list[dict]:
        """The plan as JSON-friendly dicts (saved with results; enough to ``predict``)."""
        return [lp.to_dict() for lp in self.layers]

    def __repr__(self) -> str:
        chain = ", ".join(f"{lp.name}(k={lp.k}, {lp.input_label})" for lp in self.layers)
        return f"FactorNet(inputs={self.input_names}, n={self.n}, layers=[{chain}])"


@dataclass
class _Compiler:
    """What the nodes' ``row_parts``/``ref``/``compile`` read: names and positions."""

    names: dict[int, str]
    shapes: dict[int, tuple[int, int]]
    inputs: dict[int, int]
    layers: dict[int, int]
    conditions: dict[int, int]
    Zs: tuple[np.ndarray, ...]

    def name(self, node: Node) -> str:
        return self.names[id(node)]

    def input_shape(self, node: FactorInput) -> tuple[int, int]:
        return self.shapes[id(node)]

    def input_pos(self, node: FactorInput) -> int:
        return self.inputs[id(node)]

    def layer_pos(self, node: Node) -> int:
        return self.layers[id(node)]

    def condition_pos(self, node: FactorCondition) -> int:
        return self.conditions[id(node)]

    def condition_z(self, node: FactorCondition) -> np.ndarray:
        return self.Zs[self.conditions[id(node)]]


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


def _side(node: Node, side: str) -> SideSpec:
    idx = 0 if side == "W" else 1
    opts: FactorOptions | None = getattr(node, side)

    def pick(name, layer_value):
        v = getattr(opts, name) if opts is not None else None
        return layer_value if v is None else v

    def layer_val(name, default):
        pair = getattr(node, name, None)
        return default if pair is None else pair[idx]

    arrays = {}
    if opts is not None:
        arrays = dict(graph=opts.graph, target=opts.target,
                      graph_lambda=float(opts.graph_lambda or 0.0),
                      target_lambda=float(opts.target_lambda or 0.0))
    return SideSpec(
        L1=float(pick("L1", layer_val("L1", 0.0))), L2=float(pick("L2", layer_val("L2", 0.0))),
        L21=float(pick("L21", layer_val("L21", 0.0))),
        angular=float(pick("angular", layer_val("angular", 0.0))),
        upper_bound=float(pick("upper_bound", layer_val("upper_bound", 0.0))),
        nonneg=bool(pick("nonneg", layer_val("nonneg", True))), **arrays)


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
    if not isinstance(output, LayerNode):
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
    layer_nodes = [x for x in nodes if isinstance(x, LayerNode)]
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
            check_same_samples(f"factor_shared({', '.join(repr(names[id(i)]) for i in x.inputs)})",
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
    c = _Compiler(names=names, shapes=shapes,
                  inputs={id(x): i for i, x in enumerate(inputs)},
                  layers={id(x): i for i, x in enumerate(layer_nodes)},
                  conditions={id(x): i for i, x in enumerate(conds)}, Zs=Zs)
    layers = []
    for i, node in enumerate(layer_nodes):
        name = names[id(node)]
        where = f"{node.kind}_layer {name!r}"
        parts = tuple(node.input.row_parts(c))
        label = node.input.ref(c)
        embedding = any(p.layers for p in parts)
        R = int(sum(p.rows for p in parts))
        k = node.k
        if k > min(R, n):
            raise ValueError(f"{where}: k={k} exceeds min(rows, samples) = {min(R, n)} of its "
                             f"input {label!r} ({R} × {n})")
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
        layers.append(node.compile(index=i, name=name, parts=parts, input_label=label, W=Wopt,
                                   H=Hopt, shared=node.input.shares_samples()))
    layers = _resolve_losses(layers, layer_nodes, config)
    return FactorNet(inputs=tuple(inputs), output=output, config=config, layers=tuple(layers),
                     conditions=tuple(conds), Zs=Zs, n=int(n), names=names)


def _resolve_losses(layers: list, layer_nodes: list, config: FactorNetConfig) -> list:
    """Give every NMF layer its loss (its own ``nmf_layer(loss=)``, else ``factor_config``'s) and
    refuse a count-data loss where only least squares is fitted: a count-data loss is fitted by
    the ``nmf()`` path, a graph of one plain NMF layer on one input."""
    out = []
    for lp, node in zip(layers, layer_nodes):
        if lp.kind == "nmf" and getattr(node, "loss", None) is None:
            lp = dataclasses.replace(lp, loss=config.loss)
        out.append(lp)
    counted = [lp for lp in out if getattr(lp, "loss", "mse") != "mse"]
    if config.loss != "mse" and any(lp.kind != "nmf" for lp in out):
        svd = next(lp.name for lp in out if lp.kind != "nmf")
        raise NotImplementedError(
            f"factor_config: loss={config.loss!r}: svd_layer {svd!r} fits least squares only; "
            f"give the loss to the NMF layer instead (nmf_layer(..., loss={config.loss!r}))")
    if counted and not (len(out) == 1 and out[0].nmf_compatible):
        lp = counted[0]
        raise NotImplementedError(
            f"nmf_layer {lp.name!r}: loss={lp.loss!r} is fitted only by a graph of one NMF "
            f"layer on one input without graph/L21/angular/W-target options (the nmf() path); "
            f"this graph has {len(out)} layer(s). Use loss='mse' here, or fit the matrix with "
            f"nmf(A, k, loss={lp.loss!r}) (docs/losses.md)")
    return out
