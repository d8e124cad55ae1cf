"""Fit specifications: a factorization graph, its settings and its outputs in one YAML file.

``dask-factor fit SPEC.yaml`` reads a spec with :func:`load_spec`, which checks all of it before
anything runs (inputs by their headers, every field's type and range, the graph's references,
ranks and shapes, the checkpoint and the output paths) and raises :class:`SpecError` naming the
YAML path of the first bad field (``layers[1].k: expected an integer >= 1, got 'ten'``), with
the file and line. Only then does the command start or connect to a cluster and call
:func:`run_spec`, which fits the graph and writes the result (a zarr store with the sample,
feature and layer names) and, optionally, the factors into an AnnData ``.h5ad`` input.

The format (documented with a complete example in ``docs/spec.md``)::

    inputs:                       # name: path (relative paths: from the spec's directory)
      rna: cells.h5ad
    layers:                       # graph nodes, upstream first; the last one is the output
      - {name: fine, type: nmf_layer, input: rna, k: 10, L1: [0, 0.1]}
      - {name: coarse, input: fine, k: 3, H: {L2: 0.01}}
    config: {maxit: 200, seed: 42}   # factor_config()
    checkpoint: {path: fit.ckpt, every: 10, resume: true}
    output: {path: fit.zarr, anndata: true}
    cluster: {type: local, local: {n_workers: 2}}

Examples
--------
>>> import os, tempfile
>>> import anndata as ad
>>> from dask_factor import datasets
>>> A, rows, cols = datasets.load("hawaiibirds")
>>> tmp = tempfile.mkdtemp()
>>> ad.AnnData(A.T.tocsr(), obs=cols, var=rows).write_h5ad(os.path.join(tmp, "birds.h5ad"))
>>> text = '''
... inputs: {birds: birds.h5ad}
... layers:
...   - {name: fine, input: birds, k: 6}
...   - {name: coarse, input: fine, k: 2}
... config: {maxit: 10, seed: 1}
... output: {path: fit.zarr}
... '''
>>> spec = parse_spec(text, base_dir=tmp)
>>> spec.net.layer_names, spec.output.path.name
(['fine', 'coarse'], 'fit.zarr')
>>> report = run_spec(spec)
>>> from dask_factor.graph import load_result
>>> res = load_result(report.written["zarr"])
>>> res["coarse"].W.shape, res.names["samples"][:2], res.names["features"]["birds"][0]
((1183, 2), ['grid1', 'grid2'], 'Common Myna')
>>> parse_spec(text.replace("k: 6", "k: six"), base_dir=tmp)
Traceback (most recent call last):
    ...
dask_factor.spec.SpecError: <spec>:4: layers[0].k: expected an integer >= 1, got 'six'
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._params import (
    NONE,
    PARAMETERS,
    Boolean,
    Constraint,
    Interval,
    Pair,
    StrOptions,
    check_value,
    checkpoint_args,
    constraints_for,
)

__all__ = ["SpecError", "FitSpec", "OutputSpec", "AnnDataOutput", "ClusterSpec", "RunReport",
           "NODE_TYPES", "load_spec", "parse_spec", "run_spec", "start_client"]

#: what the ``type`` of an entry of ``layers`` may be, and the keys each takes
NODE_TYPES: dict[str, tuple[str, ...]] = {
    "nmf_layer": ("type", "name", "input", "k", "L1", "L2", "L21", "angular", "upper_bound",
                  "nonneg", "W", "H"),
    "svd_layer": ("type", "name", "input", "k", "center", "scale", "method", "tol", "maxit"),
    "factor_shared": ("type", "name", "inputs"),
    "factor_concat": ("type", "name", "branches"),
    "factor_add": ("type", "name", "branches"),
    "factor_condition": ("type", "name", "input", "Z"),
}
_LAYER_TYPES = ("nmf_layer", "svd_layer")
_TOP_KEYS = ("inputs", "layers", "config", "checkpoint", "output", "cluster", "scheduler")
_FACTOR_KEYS = ("L1", "L2", "L21", "angular", "upper_bound", "nonneg", "graph", "graph_lambda",
                "target", "target_lambda")
_CONFIG_SKIP = ("verbose",)  # the progress bar is the command's (-q)
_CLUSTER_TYPES = ("local", "slurm", "kubernetes")
_REAL = numbers.Real
_RANK = [Interval(numbers.Integral, 1, None)]
_NONNEG_PAIR = [Pair(Interval(_REAL, 0.0, None))]


# --------------------------------------------------------------------------------------------
# errors and YAML


class SpecError(ValueError):
    """A bad spec: ``path`` is the YAML path of the field (``layers[1].k``), ``message`` what is
    wrong with it; ``source`` and ``line`` locate it in the file when known.

    Examples
    --------
    >>> str(SpecError("layers[1].k", "expected an integer >= 1, got 'ten'"))
    "layers[1].k: expected an integer >= 1, got 'ten'"
    >>> str(SpecError("layers[1].k", "expected an integer >= 1, got 'ten'", "fit.yaml", 7))
    "fit.yaml:7: layers[1].k: expected an integer >= 1, got 'ten'"
    """

    def __init__(self, path: str, message: str, source: str | None = None,
                 line: int | None = None):
        self.path, self.message, self.source, self.line = path, message, source, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        if self.source is None:
            return f"{where}{self.message}"
        at = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{at}: {where}{self.message}"


def _loader_class():
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML 1.2 numbers: ``1e-4`` is a float (PyYAML's YAML 1.1 reads it as a string)."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def _construct(loader, node, path: str, lines: dict[str, int]):
    """The Python value of a YAML node, recording each path's line; refuses duplicate keys."""
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str):
                raise SpecError(path, f"keys must be names, got {key!r}",
                                line=knode.start_mark.line + 1)
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise SpecError(sub, f"given twice (lines {lines[sub]} and "
                                     f"{knode.start_mark.line + 1})",
                                line=knode.start_mark.line + 1)
            lines[sub] = knode.start_mark.line + 1
            out[key] = _construct(loader, vnode, sub, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, f"{path}[{i}]", lines) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _read_yaml(text: str) -> tuple[Any, dict[str, int]]:
    import yaml

    lines: dict[str, int] = {}
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _construct(loader, node, "", lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError("", f"not valid YAML: {problem}",
                        line=None if mark is None else mark.line + 1) from None
    finally:
        loader.dispose()
    return data, lines


# --------------------------------------------------------------------------------------------
# field helpers


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _mapping(path: str, value, allowed: tuple[str, ...], required: tuple[str, ...] = (),
             what: str = "a mapping", owner: str | None = None) -> dict:
    owner = owner or path or "the spec"
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected {what}, got {_show(value)}")
    for key in value:
        if key not in allowed:
            hint = _suggest(key, allowed)
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no keys"
            raise SpecError(_at(path, key), f"unknown key{hint}; {owner} {takes}")
    for key in required:
        if key not in value:
            raise SpecError(_at(path, key), f"required ({owner} has no {key!r})")
    return dict(value)


def _suggest(word, options) -> str:
    """`` (did you mean 'x'?)`` for the nearest option (case-insensitive, prefixes too), or ''.

    Examples
    --------
    >>> _suggest("l1", ["L1", "L2"]), _suggest("nmf", ["nmf_layer", "svd_layer"])
    (" (did you mean 'L1'?)", " (did you mean 'nmf_layer'?)")
    >>> _suggest("q", ["k"])
    ''
    """
    word = str(word)
    lower = {o.lower(): o for o in options}
    close = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    if not close and len(word) >= 3:
        close = [o for o in lower if o.startswith(word.lower())][:1]
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def _show(value) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _value(path: str, value, constraints) -> Any:
    """``check_value`` with the YAML path as the name (its message: ``path: expected …``)."""
    try:
        return check_value(path, value, constraints)
    except (TypeError, ValueError) as exc:
        raise SpecError(path, _strip(str(exc), path)) from None


def _strip(msg: str, name: str) -> str:
    for prefix in (f"{name}: ", f"{name}="):
        if msg.startswith(prefix):
            return msg[len(prefix):] if prefix.endswith(": ") else msg
    return msg


def _name(path: str, value) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise SpecError(path, f"expected a non-empty name without '/', got {_show(value)}")
    return value


def _string(path: str, value, what: str = "a string") -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(path, f"expected {what}, got {_show(value)}")
    return value


def _bool(path: str, value) -> bool:
    return _value(path, value, [Boolean()])


def _file(path: str, value, base: Path, *, must_exist: bool = True) -> Path:
    p = Path(_string(path, value, "a path"))
    p = p if p.is_absolute() else base / p
    p = Path(os.path.abspath(p))
    if must_exist and not (p.exists() or p.is_symlink()):
        raise SpecError(path, f"no such file or directory: {str(p)!r}")
    return p


def _matrix_file(path: str, value, base: Path, *, sparse_ok: bool = False):
    """A small dense (or, for Laplacians, sparse) matrix from a file: .npy, .npz (a
    ``scipy.sparse.save_npz`` file or one array), .csv/.tsv/.txt (numbers only), .mtx."""
    import scipy.sparse as sp

    p = _file(path, value, base)
    name = p.name.lower()
    try:
        if name.endswith(".npy"):
            arr = np.load(p, allow_pickle=False)
        elif name.endswith(".npz"):
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
            if "indptr" in keys or "row" in keys:
                arr = sp.load_npz(p)
            elif len(keys) == 1:
                arr = np.load(p, allow_pickle=False)[keys[0]]
            else:
                raise ValueError(f"an .npz with several arrays ({', '.join(keys)})")
        elif name.endswith((".csv", ".tsv", ".txt")):
            arr = np.loadtxt(p, delimiter="," if name.endswith(".csv") else None, ndmin=2)
        elif name.endswith((".mtx", ".mtx.gz")):
            import scipy.io

            arr = scipy.io.mmread(p)
        else:
            raise ValueError("expected .npy, .npz, .csv, .tsv, .txt or .mtx")
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error is the user's file
        raise SpecError(path, f"cannot read the matrix {str(p)!r}: {exc}") from None
    if sp.issparse(arr):
        arr = arr.tocsr() if sparse_ok else arr.toarray()
    else:
        try:
            arr = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SpecError(path, f"{str(p)!r} is not numeric: {exc}") from None
        if arr.ndim == 1:
            arr = arr[None, :]
    if arr.ndim != 2 or 0 in arr.shape:
        raise SpecError(path, f"{str(p)!r}: expected a non-empty 2-D matrix, got shape "
                              f"{arr.shape}")
    data = arr.data if sp.issparse(arr) else arr
    if not np.all(np.isfinite(data)):
        raise SpecError(path, f"{str(p)!r} holds non-finite values")
    return arr


# --------------------------------------------------------------------------------------------
# the parsed spec


@dataclass
class InputSpec:
    """An input: its name, file, format and (m, n) from the header."""

    name: str
    path: Path
    format: str
    shape: tuple[int, int]
    yaml_path: str
    obj: Any = field(default=None, repr=False)  # its factor_input


@dataclass
class AnnDataOutput:
    """Write the factors into the ``.h5ad`` of input ``input`` (``GraphResult.to_anndata``)."""

    input: str
    path: Path
    uns_key: str = "factor_net"
    overwrite: bool = False


@dataclass
class OutputSpec:
    """Where the result goes: a zarr store (``GraphResult.save``), and optionally an AnnData."""

    path: Path
    overwrite: bool = False
    anndata: AnnDataOutput | None = None


@dataclass
class ClusterSpec:
    """Where the fit runs: ``type`` (local/slurm/kubernetes, or None: this process's threads),
    the options of each :mod:`dask_factor.cluster` entry point, or a scheduler's address."""

    type: str | None = None
    options: dict[str, dict] = field(default_factory=dict)
    scheduler: str | None = None


@dataclass
class FitSpec:
    """A checked spec, ready to run (:func:`run_spec`).

    Attributes
    ----------
    net : FactorNet
        The compiled graph (inputs are paths, read inside the tasks).
    inputs : dict of str to InputSpec
    checkpoint : dict
        ``checkpoint``, ``checkpoint_every``, ``resume`` for ``fit()`` (checked).
    output : OutputSpec
    cluster : ClusterSpec
    names : dict
        ``{"samples": [...], "features": {input: [...]}}`` from the inputs' metadata (what is
        known).
    source : str
        The spec's file name (or ``"<spec>"``) for messages.
    """

    net: Any
    inputs: dict[str, InputSpec]
    checkpoint: dict
    output: OutputSpec
    cluster: ClusterSpec
    names: dict
    source: str = "<spec>"


@dataclass
class _Node:
    """A parsed entry of ``layers`` (or an input): what later entries need to know."""

    name: str
    kind: str  # "input" or a NODE_TYPES key
    obj: Any  # the graph node
    rows: int  # rows it contributes to a downstream layer's matrix
    from_layers: bool  # made of layers' H (a layer on it gets an embedding W)
    yaml_path: str
    upstream: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# parsing


def load_spec(path, *, resume: bool | None = None, overwrite: bool | None = None) -> FitSpec:
    """Read and check the spec file at ``path`` (see :func:`parse_spec`).

    Relative paths in the spec are taken from the spec file's directory.

    Parameters
    ----------
    path : str or path-like
        A ``.yaml``/``.yml`` file.
    resume, overwrite : bool, optional
        Override ``checkpoint.resume`` and ``output.overwrite`` (the command's ``--resume``
        and ``--overwrite``).

    Returns
    -------
    FitSpec

    Raises
    ------
    SpecError
        The first bad field, named by its YAML path, with the file and line.
    FileNotFoundError
        No file at ``path``.

    Examples
    --------
    >>> load_spec("fit.yaml").net  # doctest: +SKIP
    FactorNet(inputs=['rna'], n=2638, layers=[fine(k=10, input:rna), coarse(k=3, layer:fine)])
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SPEC={str(p)!r}: no such file")
    return parse_spec(p.read_text(), base_dir=p.parent, source=str(path), resume=resume,
                      overwrite=overwrite)


def parse_spec(text: str, *, base_dir=".", source: str = "<spec>", resume: bool | None = None,
               overwrite: bool | None = None) -> FitSpec:
    """Check a spec given as YAML text and build its graph, before anything runs.

    Checked, in order, each failure a :class:`SpecError` naming the YAML path: the YAML itself
    (duplicate keys too); unknown keys anywhere (with the closest known one); ``inputs`` (the
    files exist and their headers read; all share the samples); every entry of ``layers`` (its
    ``type``, its fields' types and ranges, its references to inputs or earlier entries, the
    rank against its input's rows and samples, the shapes of ``Z``, targets and Laplacians);
    that the last entry is a layer every other entry leads to; ``config``
    (``factor_config()``'s arguments, e.g. ``config.tol``); ``checkpoint`` (an earlier fit's
    checkpoint is never overwritten unless resumed); ``output`` (the zarr path is new or, with
    ``overwrite``, an earlier result; the ``.h5ad`` for ``anndata`` does not already hold the
    keys); ``cluster``/``scheduler``.

    Parameters
    ----------
    text : str
        The YAML.
    base_dir : path, default "."
        Where relative paths start.
    source : str
        The file name used in messages.
    resume, overwrite : bool, optional
        As for :func:`load_spec`.

    Returns
    -------
    FitSpec

    Examples
    --------
    >>> parse_spec("inputs: {}\\nlayers: []\\noutput: x.zarr\\nconfgi: {}")
    Traceback (most recent call last):
        ...
    dask_factor.spec.SpecError: <spec>:4: confgi: unknown key (did you mean 'config'?); ...
    """
    lines: dict[str, int] = {}
    try:
        data, lines = _read_yaml(text)
        return _parse(data, Path(os.path.abspath(base_dir)), source, resume, overwrite)
    except SpecError as err:
        if err.source is None:
            err.source = source
        if err.line is None:
            err.line = _line(lines, err.path)
        raise


def _line(lines: dict[str, int], path: str) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _parse(data, base: Path, source: str, resume, overwrite) -> FitSpec:
    top = _mapping("", data, _TOP_KEYS, ("inputs", "layers", "output"),
                   what="a mapping with inputs, layers and output")
    inputs = _parse_inputs(top["inputs"], base)
    nodes = _parse_layers(top["layers"], inputs, base)
    config = _parse_config(top.get("config"))
    net = _compile(inputs, nodes, config)
    ckpt = _parse_checkpoint(top.get("checkpoint"), base, net, config, resume)
    output = _parse_output(top.get("output"), base, inputs, net, ckpt, overwrite)
    cluster = _parse_cluster(top.get("cluster"), top.get("scheduler"), base)
    names = _read_names(inputs)
    return FitSpec(net=net, inputs=inputs, checkpoint=ckpt, output=output, cluster=cluster,
                   names=names, source=source)


# ---- inputs


def _parse_inputs(value, base: Path) -> dict[str, InputSpec]:
    from .graph import factor_input
    from .io import matrix_info

    if not isinstance(value, Mapping) or not value:
        raise SpecError("inputs", f"expected a mapping of input names to paths, got "
                                  f"{_show(value)}")
    out: dict[str, InputSpec] = {}
    for name, entry in value.items():
        path = _at("inputs", name)
        _name(path, name)
        if isinstance(entry, Mapping):
            entry = _mapping(path, entry, ("path",), ("path",))["path"]
            path = _at(path, "path")
        file = _file(path, entry, base)
        try:
            info = matrix_info(file)
        except Exception as exc:  # noqa: BLE001 - the reader's message says what is wrong
            raise SpecError(path, f"cannot read {str(file)!r}: {exc}") from None
        shape = tuple(int(s) for s in info["shape"])
        if 0 in shape:
            raise SpecError(path, f"{str(file)!r} is empty (shape {shape})")
        out[name] = InputSpec(name=name, path=file, format=info["format"], shape=shape,
                              yaml_path=path, obj=factor_input(str(file), name=name))
    first = next(iter(out.values()))
    for inp in out.values():
        if inp.shape[1] != first.shape[1]:
            raise SpecError(inp.yaml_path,
                            f"{inp.name!r} has {inp.shape[1]} samples (columns) but "
                            f"{first.name!r} has {first.shape[1]}; the inputs of a graph share "
                            f"their samples")
    return out


# ---- layers


def _parse_layers(value, inputs: dict[str, InputSpec], base: Path) -> list[_Node]:
    if not isinstance(value, list) or not value:
        raise SpecError("layers", f"expected a non-empty list of graph nodes, got "
                                  f"{_show(value)}")
    n = next(iter(inputs.values())).shape[1]
    known: dict[str, _Node] = {}
    for name, inp in inputs.items():
        known[name] = _Node(name=name, kind="input", obj=inp.obj, rows=inp.shape[0],
                            from_layers=False, yaml_path=inp.yaml_path)
    later = {}
    for i, entry in enumerate(value):
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            later.setdefault(entry["name"], _at("layers", i))
    nodes: list[_Node] = []
    for i, entry in enumerate(value):
        path = _at("layers", i)
        if not isinstance(entry, Mapping):
            raise SpecError(path, f"expected a mapping (a graph node), got {_show(entry)}")
        kind = entry.get("type", "nmf_layer")
        if kind not in NODE_TYPES:
            hint = _suggest(kind, NODE_TYPES)
            raise SpecError(_at(path, "type"), f"unknown node type {kind!r}{hint}; expected one "
                                               f"of {', '.join(NODE_TYPES)}")
        required = {"nmf_layer": ("name", "input", "k"), "svd_layer": ("name", "input", "k"),
                    "factor_shared": ("name", "inputs"), "factor_concat": ("name", "branches"),
                    "factor_add": ("name", "branches"),
                    "factor_condition": ("name", "input", "Z")}[kind]
        entry = _mapping(path, entry, NODE_TYPES[kind], required, owner=f"{path} ({kind})")
        name = _name(_at(path, "name"), entry["name"])
        if name in known:
            where = known[name].yaml_path
            raise SpecError(_at(path, "name"), f"{name!r} is already the name of {where}")
        ctx = _Ctx(path=path, known=known, later=later, n=n, base=base, inputs=inputs)
        node = _BUILDERS[kind](ctx, name, entry)
        known[name] = node
        nodes.append(node)
    return nodes


@dataclass
class _Ctx:
    path: str
    known: dict[str, _Node]
    later: dict[str, str]
    n: int
    base: Path
    inputs: dict[str, InputSpec]

    def ref(self, key: str, value) -> _Node:
        path = _at(self.path, key) if isinstance(key, str) else key
        if not isinstance(value, str):
            raise SpecError(path, f"expected the name of an input or of an earlier entry of "
                                  f"layers, got {_show(value)}")
        if value in self.known:
            return self.known[value]
        if value in self.later:
            raise SpecError(path, f"{value!r} is defined later, at {self.later[value]}; list "
                                  f"the nodes upstream first")
        names = list(self.known)
        hint = _suggest(value, names)
        raise SpecError(path, f"{value!r} is not an input or an earlier entry of layers{hint}; "
                              f"known: {', '.join(names)}")

    def refs(self, key: str, value, minimum: int = 2) -> list[_Node]:
        path = _at(self.path, key)
        if not isinstance(value, list) or len(value) < minimum:
            raise SpecError(path, f"expected a list of at least {minimum} names, got "
                                  f"{_show(value)}")
        out = [self.ref(_at(path, j), v) for j, v in enumerate(value)]
        seen = set()
        for j, node in enumerate(out):
            if node.name in seen:
                raise SpecError(_at(path, j), f"{node.name!r} is listed twice")
            seen.add(node.name)
        return out

    def build(self, what: Callable[[], Any]):
        """Run a graph constructor; its error (already checked cases aside) names this entry."""
        try:
            return what()
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise SpecError(self.path, str(exc)) from None


def _rank(ctx: _Ctx, entry: dict, src: _Node, *, svd: bool) -> int:
    k = _value(_at(ctx.path, "k"), entry["k"], _RANK)
    rows, n = src.rows, ctx.n
    limit = min(rows, n)
    exact = svd and not src.from_layers  # a truncated SVD of a fixed matrix: k < min
    if k > limit or (exact and k >= limit):
        need = f"< min(rows, samples) = {limit}" if exact else f"<= min(rows, samples) = {limit}"
        raise SpecError(_at(ctx.path, "k"), f"{k} is too large: the input {src.name!r} is "
                                            f"{rows} × {n}, so k must be {need}")
    return k


def _factor_options(ctx: _Ctx, side: str, value, shape: tuple[int, int]):
    from .graph import H, W

    path = _at(ctx.path, side)
    opts = _mapping(path, value, _FACTOR_KEYS)
    args = {}
    for key, v in opts.items():
        sub = _at(path, key)
        if key in ("target", "graph"):
            arr = _matrix_file(sub, v, ctx.base, sparse_ok=key == "graph")
            want = shape if key == "target" else (
                (shape[0], shape[0]) if side == "W" else (shape[1], shape[1]))
            if tuple(arr.shape) != want:
                over = "the rows of W" if side == "W" else "the columns of H"
                what = f"the shape of {side}" if key == "target" else f"a Laplacian over {over}"
                raise SpecError(sub, f"has shape {tuple(arr.shape)}; expected {want}, {what}")
            args[key] = arr
        else:
            args[key] = _value(sub, v, constraints_for(key, "factor"))
    make = W if side == "W" else H
    try:
        return make(**args)
    except (TypeError, ValueError) as exc:
        raise SpecError(path, str(exc)) from None


def _build_nmf(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import nmf_layer

    src = ctx.ref("input", entry["input"])
    k = _rank(ctx, entry, src, svd=False)
    kw: dict[str, Any] = {}
    for key, cons in (("L1", PARAMETERS["L1"]), ("L2", PARAMETERS["L2"]), ("L21", _NONNEG_PAIR),
                      ("angular", _NONNEG_PAIR), ("upper_bound", PARAMETERS["upper_bound"]),
                      ("nonneg", PARAMETERS["nonneg"])):
        if key in entry:
            kw[key] = _value(_at(ctx.path, key), entry[key], cons)
    rows = src.rows
    w_shape = (ctx.n, k) if src.from_layers else (rows, k)
    h_shape = (k, rows) if src.from_layers else (k, ctx.n)
    for side, shape in (("W", w_shape), ("H", h_shape)):
        if side in entry:
            kw[side] = _factor_options(ctx, side, entry[side], shape)
    obj = ctx.build(lambda: nmf_layer(src.obj, k, name=name, **kw))
    return _Node(name=name, kind="nmf_layer", obj=obj, rows=k, from_layers=True,
                 yaml_path=ctx.path, upstream=(src.name,))


def _build_svd(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import svd_layer
    from .graph.nodes import SVD_METHODS

    src = ctx.ref("input", entry["input"])
    k = _rank(ctx, entry, src, svd=True)
    kw: dict[str, Any] = {}
    for key in ("center", "scale"):
        if key in entry:
            kw[key] = _bool(_at(ctx.path, key), entry[key])
    if "method" in entry:
        kw["method"] = _value(_at(ctx.path, "method"), entry["method"],
                              [StrOptions(tuple(m for m in SVD_METHODS
                                                if m not in ("deflation", "krylov")))])
    if "tol" in entry:
        kw["tol"] = _value(_at(ctx.path, "tol"), entry["tol"],
                           [Interval(_REAL, 0.0, None, closed="neither")])
    if "maxit" in entry:
        kw["maxit"] = _value(_at(ctx.path, "maxit"), entry["maxit"], _RANK)
    obj = ctx.build(lambda: svd_layer(src.obj, k, name=name, **kw))
    return _Node(name=name, kind="svd_layer", obj=obj, rows=k, from_layers=True,
                 yaml_path=ctx.path, upstream=(src.name,))


def _build_shared(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import factor_shared

    srcs = ctx.refs("inputs", entry["inputs"])
    for j, s in enumerate(srcs):
        if s.kind != "input":
            raise SpecError(_at(_at(ctx.path, "inputs"), j),
                            f"{s.name!r} is a {s.kind}, not an input; factor_shared row-binds "
                            f"inputs (factor_concat combines layers)")
    obj = ctx.build(lambda: factor_shared(*[s.obj for s in srcs], name=name))
    return _Node(name=name, kind="factor_shared", obj=obj, rows=sum(s.rows for s in srcs),
                 from_layers=False, yaml_path=ctx.path, upstream=tuple(s.name for s in srcs))


def _branches(ctx: _Ctx, entry: dict, kind: str) -> list[_Node]:
    srcs = ctx.refs("branches", entry["branches"])
    for j, s in enumerate(srcs):
        ok = s.from_layers if kind == "factor_concat" else s.kind in (*_LAYER_TYPES,
                                                                       "factor_add")
        if not ok:
            what = "a layer or a factor_add of layers" if kind == "factor_add" else \
                "made of layers"
            raise SpecError(_at(_at(ctx.path, "branches"), j),
                            f"{s.name!r} ({s.kind}) is not {what}; {kind} combines the H of "
                            f"layers (factor_shared combines inputs)")
    return srcs


def _build_concat(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import factor_concat

    srcs = _branches(ctx, entry, "factor_concat")
    obj = ctx.build(lambda: factor_concat(*[s.obj for s in srcs], name=name))
    return _Node(name=name, kind="factor_concat", obj=obj, rows=sum(s.rows for s in srcs),
                 from_layers=True, yaml_path=ctx.path, upstream=tuple(s.name for s in srcs))


def _build_add(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import factor_add

    srcs = _branches(ctx, entry, "factor_add")
    if len({s.rows for s in srcs}) > 1:
        ranks = ", ".join(f"{s.name!r} has k={s.rows}" for s in srcs)
        raise SpecError(_at(ctx.path, "branches"), f"the branches' ranks differ ({ranks}); "
                                                   f"factor_add sums H matrices of one rank")
    obj = ctx.build(lambda: factor_add(*[s.obj for s in srcs], name=name))
    return _Node(name=name, kind="factor_add", obj=obj, rows=srcs[0].rows, from_layers=True,
                 yaml_path=ctx.path, upstream=tuple(s.name for s in srcs))


def _covariates(ctx: _Ctx, value) -> np.ndarray:
    """Z: a matrix file, or ``{obs: [columns], input: name}`` from an input's sample metadata
    (numeric columns as they are, other columns one-hot)."""
    path = _at(ctx.path, "Z")
    if isinstance(value, str):
        return _matrix_file(path, value, ctx.base)
    z = _mapping(path, value, ("path", "obs", "input"), what="a path or a mapping with path, "
                                                             "or obs (and input)")
    if ("path" in z) == ("obs" in z):
        raise SpecError(path, "give either path (a matrix file) or obs (sample metadata "
                              "columns)")
    if "path" in z:
        if "input" in z:
            raise SpecError(_at(path, "input"), "only used with obs")
        return _matrix_file(_at(path, "path"), z["path"], ctx.base)
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    from .io import read_metadata

    in_path = _at(path, "input")
    inp_name = z.get("input", next(iter(ctx.inputs)))
    if inp_name not in ctx.inputs:
        raise SpecError(in_path, f"{inp_name!r} is not an input; inputs: "
                                 f"{', '.join(ctx.inputs)}")
    cols = z["obs"]
    cols = [cols] if isinstance(cols, str) else cols
    obs_path = _at(path, "obs")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
        raise SpecError(obs_path, f"expected a column name or a list of them, got "
                                  f"{_show(z['obs'])}")
    try:
        meta = read_metadata(str(ctx.inputs[inp_name].path))[1]
    except Exception as exc:  # noqa: BLE001
        raise SpecError(obs_path, f"cannot read the sample metadata of {inp_name!r}: "
                                  f"{exc}") from None
    have = [] if meta is None else [str(c) for c in meta.columns]
    rows = []
    for j, c in enumerate(cols):
        if c not in have:
            raise SpecError(_at(obs_path, j), f"{inp_name!r} has no sample column {c!r}; it has "
                                              f"{', '.join(have) or 'none'}")
        col = meta[c]
        if is_numeric_dtype(col) and not is_bool_dtype(col):
            vals = col.to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(vals)):
                raise SpecError(_at(obs_path, j), f"column {c!r} has missing or non-finite "
                                                  f"values")
            rows.append(vals)
        else:
            labels = col.astype(str).to_numpy()
            rows.extend((labels == lev).astype(np.float64) for lev in np.unique(labels))
    return np.vstack(rows)


def _build_condition(ctx: _Ctx, name: str, entry: dict) -> _Node:
    from .graph import factor_condition
    from .graph.merge import orient_z

    src = ctx.ref("input", entry["input"])
    Z = _covariates(ctx, entry["Z"])
    try:
        Z = orient_z("", Z, ctx.n)
    except ValueError:
        raise SpecError(_at(ctx.path, "Z"), f"has shape {Z.shape}; expected p × n or n × p "
                                            f"with n = {ctx.n} samples") from None
    obj = ctx.build(lambda: factor_condition(src.obj, Z, name=name))
    return _Node(name=name, kind="factor_condition", obj=obj, rows=src.rows + Z.shape[0],
                 from_layers=src.from_layers, yaml_path=ctx.path, upstream=(src.name,))


_BUILDERS: dict[str, Callable[[_Ctx, str, dict], _Node]] = {
    "nmf_layer": _build_nmf, "svd_layer": _build_svd, "factor_shared": _build_shared,
    "factor_concat": _build_concat, "factor_add": _build_add,
    "factor_condition": _build_condition,
}


# ---- config and the compiled graph


def _config_keys() -> tuple[str, ...]:
    from .graph import factor_config

    return tuple(k for k in inspect.signature(factor_config).parameters if k not in _CONFIG_SKIP)


def _parse_config(value) -> dict:
    if value is None:
        return {}
    keys = _config_keys()
    cfg = _mapping("config", value, keys)
    for key, v in cfg.items():
        _value(_at("config", key), v, constraints_for(key, "factor_config"))
    return cfg


def _compile(inputs: dict[str, InputSpec], nodes: list[_Node], config: dict):
    from .graph import factor_config, factor_net

    out = nodes[-1]
    if out.kind not in _LAYER_TYPES:
        raise SpecError(out.yaml_path, f"the last entry of layers is the graph's output and "
                                       f"must be an nmf_layer or svd_layer, not {out.kind}")
    by_name = {n.name: n for n in nodes}
    reached, todo = set(), [out.name]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo.extend(by_name[name].upstream if name in by_name else ())
    for node in nodes:
        if node.name not in reached:
            raise SpecError(node.yaml_path, f"{node.name!r} does not lead to the output layer "
                                            f"{out.name!r} (the last entry of layers)")
    for inp in inputs.values():
        if inp.name not in reached:
            raise SpecError(inp.yaml_path, f"input {inp.name!r} is not read by any node leading "
                                           f"to the output layer {out.name!r}")
    try:
        cfg = factor_config(**config)
    except (TypeError, ValueError, NotImplementedError) as exc:
        msg = str(exc)
        key = next((k for k in config if msg.startswith((f"{k}:", f"{k}="))), None)
        raise SpecError(_at("config", key) if key else "config",
                        _strip(msg, key) if key else msg) from None
    ins = [inp.obj for inp in inputs.values()]
    try:
        net = factor_net(ins, out.obj, cfg)
    except (TypeError, ValueError) as exc:
        raise SpecError("layers", str(exc)) from None
    paths = {n.name: n.yaml_path for n in nodes}
    for lp in net.layers:
        try:
            lp.check(net.n)
        except (ValueError, NotImplementedError) as exc:
            raise SpecError(paths.get(lp.name, "layers"), str(exc)) from None
    if cfg.test_fraction > 0 and not net.nmf_path:
        raise SpecError("config.test_fraction",
                        "cross-validation (test_fraction > 0) fits one nmf_layer on one input "
                        "(without L21, angular, graph or a W target); this graph has "
                        f"{len(net.layers)} layer(s): {', '.join(net.layer_names)}")
    return net


# ---- checkpoint, output, cluster


_CKPT_NAMES = {"checkpoint_every": "checkpoint.every", "checkpoint": "checkpoint.path",
               "resume": "checkpoint.resume"}


def _spec_words(msg: str) -> str:
    """A fit() argument message in the spec's words."""
    msg = msg.replace("resume=True", "checkpoint.resume: true (or --resume)")
    msg = msg.replace("set checkpoint=PATH too", "set checkpoint.path too")
    return msg


def _parse_checkpoint(value, base: Path, net, config: dict, resume: bool | None) -> dict:
    none = dict(checkpoint=None, checkpoint_every=None, resume=None)
    if value is None:
        if resume:
            raise SpecError("checkpoint", "--resume needs a checkpoint: set checkpoint.path")
        return none
    if isinstance(value, str):
        value = {"path": value}
    ck = _mapping("checkpoint", value, ("path", "every", "resume"), ("path",),
                  what="a path or a mapping with path, every, resume")
    path = _file("checkpoint.path", ck["path"], base, must_exist=False)
    every = None
    if "every" in ck:
        every = _value("checkpoint.every", ck["every"], _RANK)
    want = ck.get("resume", False)
    if not isinstance(want, bool):
        want = _file("checkpoint.resume", _value("checkpoint.resume", want, PARAMETERS["resume"]),
                     base)
    if resume:
        want = True
    if want is not False and config.get("seed") is None:
        raise SpecError("checkpoint.resume", "set config.seed to the seed of the fit to resume "
                                             "(a drawn seed cannot be matched)")
    from .graph.svd_bridge import runs_on_svd

    if runs_on_svd(net):
        raise SpecError("checkpoint", "a graph of one svd_layer on one input runs svd() in one "
                                      "go; there is nothing to checkpoint")
    try:
        c, e, r = checkpoint_args(str(path), every, None if want is False else
                                  (want if want is True else str(want)))
    except (TypeError, ValueError, FileNotFoundError, FileExistsError) as exc:
        msg = str(exc)
        key = next((k for k in ("checkpoint_every", "checkpoint", "resume")
                    if msg.startswith(f"{k}:") or msg.startswith(f"{k}=")), None)
        where = _CKPT_NAMES[key] if key else "checkpoint"
        raise SpecError(where, _spec_words(_strip(msg, key) if key else msg)) from None
    return dict(checkpoint=c, checkpoint_every=e, resume=r)


def _target_words(msg: str, what: str, switch: str) -> str:
    """A writer's message about ``what`` in the spec's words (``switch``: its overwrite key)."""
    msg = msg.replace(f"{what}=", "", 1)
    msg = msg.replace("pass overwrite=True", f"set {switch}: true (or pass --overwrite)")
    return msg.replace("overwrite=True only", f"{switch} only")


def _parse_output(value, base: Path, inputs: dict[str, InputSpec], net, ckpt: dict,
                  overwrite: bool | None) -> OutputSpec:
    from .graph.store import anndata_keys, check_h5ad_keys
    from .io.targets import check_target

    if isinstance(value, str):
        value = {"path": value}
    out = _mapping("output", value, ("path", "overwrite", "anndata"), ("path",),
                   what="a path or a mapping with path, overwrite, anndata")
    path = _file("output.path", out["path"], base, must_exist=False)
    ow = _bool("output.overwrite", out["overwrite"]) if "overwrite" in out else False
    if overwrite:
        ow = True
    for inp in inputs.values():
        if os.path.abspath(inp.path) == str(path):
            raise SpecError("output.path", f"{str(path)!r} is the input {inp.name!r}")
    if ckpt.get("checkpoint") and os.path.abspath(ckpt["checkpoint"]) == str(path):
        raise SpecError("output.path", f"{str(path)!r} is the checkpoint (checkpoint.path)")
    try:
        check_target(path, fmt="factor_net_result", overwrite=ow, what="output.path")
    except (FileNotFoundError, FileExistsError) as exc:
        raise SpecError("output.path", _target_words(str(exc), "output.path",
                                                     "output.overwrite")) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise SpecError("output.path", f"cannot write in the directory {str(path.parent)!r}")
    spec = OutputSpec(path=path, overwrite=ow)
    ann = out.get("anndata", False)
    if ann is False:
        return spec
    if ann is True:
        ann = {}
    a = _mapping("output.anndata", ann, ("input", "uns_key", "overwrite"),
                 what="true, false or a mapping with input, uns_key, overwrite")
    h5ad = [i for i in inputs.values() if i.format == "h5ad"]
    if "input" in a:
        name = a["input"]
        if name not in inputs:
            raise SpecError("output.anndata.input", f"{name!r} is not an input; inputs: "
                                                    f"{', '.join(inputs)}")
        if inputs[name].format != "h5ad":
            raise SpecError("output.anndata.input", f"input {name!r} is a {inputs[name].format} "
                                                    f"file, not an AnnData .h5ad")
        target = inputs[name]
    else:
        if not h5ad:
            kinds = ", ".join(f"{i.name} ({i.format})" for i in inputs.values())
            raise SpecError("output.anndata", f"no input is an AnnData .h5ad file (inputs: "
                                              f"{kinds})")
        target = h5ad[0]
    uns_key = _name("output.anndata.uns_key", a.get("uns_key", "factor_net"))
    a_ow = _bool("output.anndata.overwrite", a["overwrite"]) if "overwrite" in a else False
    if overwrite:
        a_ow = True
    if not os.access(target.path, os.W_OK):
        raise SpecError("output.anndata", f"cannot write {str(target.path)!r} (input "
                                          f"{target.name!r})")
    keys = anndata_keys(net.describe(), target.name, net.input_names, uns_key)
    try:
        check_h5ad_keys(target.path, keys, overwrite=a_ow, what="output.anndata")
    except (ValueError, FileExistsError) as exc:
        raise SpecError("output.anndata", _target_words(str(exc), "output.anndata",
                                                        "output.anndata.overwrite")) from None
    spec.anndata = AnnDataOutput(input=target.name, path=target.path, uns_key=uns_key,
                                 overwrite=a_ow)
    return spec


def _entry_points() -> dict[str, Callable]:
    from . import cluster

    return {"local": cluster.local, "slurm": cluster.slurm, "kubernetes": cluster.kubernetes}


class _AnyString(Constraint):
    def matches(self, value):
        return isinstance(value, str)

    def __str__(self):
        return "a string"


class _AnyMapping(Constraint):
    def matches(self, value):
        return isinstance(value, Mapping)

    def check(self, name, value):
        return dict(value)

    def __str__(self):
        return "a mapping"


def _option_constraints(param: inspect.Parameter) -> list[Constraint]:
    """What a cluster entry point's option may be, from its annotation (none: anything)."""
    ann = str(param.annotation)
    kinds: list[Constraint] = []
    if "bool" in ann:
        kinds.append(Boolean())
    if "int" in ann:
        kinds.append(Interval(numbers.Integral, 0, None))
    if "float" in ann:
        kinds.append(Interval(_REAL, 0.0, None))
    if "str" in ann or "PathLike" in ann:
        kinds.append(_AnyString())
    if "Mapping" in ann or "dict" in ann:
        kinds.append(_AnyMapping())
    if kinds and ("None" in ann or param.default is None):
        kinds.append(NONE)
    return kinds


def _parse_cluster(value, scheduler, base: Path) -> ClusterSpec:
    spec = ClusterSpec()
    if scheduler is not None:
        spec.scheduler = _string("scheduler", scheduler, "a scheduler address (tcp://host:port)")
    if value is None:
        return spec
    c = _mapping("cluster", value, ("type", *_CLUSTER_TYPES))
    if "type" in c:
        spec.type = _value("cluster.type", c["type"], [StrOptions(_CLUSTER_TYPES)])
        if spec.scheduler is not None:
            raise SpecError("scheduler", "give either scheduler (a running cluster) or "
                                         "cluster.type (a cluster to start), not both")
    entry = _entry_points()
    for kind in _CLUSTER_TYPES:
        if kind not in c:
            continue
        path = _at("cluster", kind)
        sig = inspect.signature(entry[kind]).parameters
        params = {k: p for k, p in sig.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        # what the entry point passes on to LocalCluster/SLURMCluster/KubeCluster: unchecked
        passes_on = any(p.kind == p.VAR_KEYWORD for p in sig.values())
        opts = _mapping(path, c[kind] or {}, (*params, *(("kwargs",) if passes_on else ())))
        extra = opts.pop("kwargs", None)
        if extra is not None:
            extra = _mapping(_at(path, "kwargs"), extra, tuple(str(k) for k in extra))
            clash = sorted(set(extra) & set(params))
            if clash:
                raise SpecError(_at(_at(path, "kwargs"), clash[0]),
                                f"a named option of cluster.{kind}; set it there")
        for key, v in opts.items():
            cons = _option_constraints(params[key])
            if cons:
                opts[key] = _value(_at(path, key), v, cons)
            if key in ("config", "log_directory") and opts[key] is not None:
                opts[key] = str(_file(_at(path, key), opts[key], base,
                                      must_exist=key == "config"))
        spec.options[kind] = {**opts, **(extra or {})}
    return spec


def matrix_names(path, shape: tuple[int, int]) -> tuple[list[str] | None, list[str] | None]:
    """``(features, samples)``: the row and column names of the matrix file at ``path``, each
    None when the file has none (or not one per row/column of ``shape``).

    What a fit from a file records (``dask-factor fit``, a spec's inputs). Reads the metadata
    only (``dask_factor.io.read_metadata``); its errors propagate.

    Examples
    --------
    >>> features, samples = matrix_names("cells.h5ad", (33538, 5000))  # doctest: +SKIP
    """
    from .io import read_metadata

    rows, cols = read_metadata(str(path))
    features = ([str(x) for x in rows.index] if rows is not None and len(rows) == shape[0]
                else None)
    samples = ([str(x) for x in cols.index] if cols is not None and len(cols) == shape[1]
               else None)
    return features, samples


def _read_names(inputs: dict[str, InputSpec]) -> dict:
    names: dict[str, Any] = {"features": {}}
    for inp in inputs.values():
        try:
            features, samples = matrix_names(inp.path, inp.shape)
        except ImportError:  # a missing extra says what to install
            raise
        except Exception as exc:  # noqa: BLE001
            raise SpecError(inp.yaml_path, f"cannot read the row/column names of "
                                           f"{str(inp.path)!r}: {exc}") from None
        if features is not None:
            names["features"][inp.name] = features
        if "samples" not in names and samples is not None:
            names["samples"] = samples
    return names


# --------------------------------------------------------------------------------------------
# running


def start_client(cluster: ClusterSpec, *, kind: str | None = None, scheduler: str | None = None,
                 connect_timeout: float | None = None):
    """The ``Client`` a spec's fit runs on, or None for this process's threads.

    ``scheduler`` (the command's ``--scheduler``) wins, then ``kind`` (``--cluster``), then the
    spec's ``scheduler``/``cluster.type``; a started cluster uses the spec's options for its
    type (``cluster.local``, ``cluster.slurm``, ``cluster.kubernetes``).

    Examples
    --------
    >>> start_client(ClusterSpec()) is None
    True
    """
    from . import cluster as clusters

    address = scheduler or (None if kind else cluster.scheduler)
    if address:
        timeout = clusters.CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        return clusters.connect(address, timeout=timeout)
    kind = kind or cluster.type
    if kind is None:
        return None
    return _entry_points()[kind](**cluster.options.get(kind, {}))


@dataclass
class RunReport:
    """What :func:`run_spec` did: the result, what it wrote, how long the fit took."""

    result: Any
    written: dict[str, Path]
    seconds: float

    def summary(self) -> dict:
        """A JSON-friendly summary (the command's ``--json``)."""
        res = self.result
        out = {"iterations": int(res.iterations), "converged": bool(res.converged),
               "loss": float(res.total_loss), "seconds": round(self.seconds, 3),
               "layers": {name: {"k": lr.k, "mse": float(lr.mse)}
                          for name, lr in res.layers.items()},
               "written": {k: str(v) for k, v in self.written.items()}}
        for key in ("test_loss", "train_loss", "best_iter"):
            if key in res.settings:
                out[key] = res.settings[key]
        return out


def run_spec(spec: FitSpec, *, client=None, progress: bool = False,
             on_iteration=None) -> RunReport:
    """Fit a checked spec's graph and write its outputs.

    The result is saved to ``output.path`` (a zarr store, :meth:`GraphResult.save`) with the
    names read from the inputs; with ``output.anndata`` the factors are also written into that
    ``.h5ad`` input (``obsm["X_<layer>"]``, ``varm["<layer>_W"]``, ``uns[uns_key]``).

    Parameters
    ----------
    spec : FitSpec
        From :func:`load_spec` / :func:`parse_spec`.
    client : distributed.Client, optional
        Default: this process's threads (or the active client).
    progress : bool, default False
        Show the fit's progress bar.
    on_iteration : callable(iteration, loss, rel_change), optional

    Returns
    -------
    RunReport

    Examples
    --------
    >>> report = run_spec(load_spec("fit.yaml"), progress=True)  # doctest: +SKIP
    >>> report.written  # doctest: +SKIP
    {'zarr': PosixPath('/data/fit.zarr'), 'anndata': PosixPath('/data/cells.h5ad')}
    """
    from .graph import fit

    t0 = time.perf_counter()
    result = fit(spec.net, client=client, on_iteration=on_iteration, progress=progress,
                 **spec.checkpoint)
    seconds = time.perf_counter() - t0
    result.names = spec.names
    written = {"zarr": result.save(spec.output.path, overwrite=spec.output.overwrite)}
    ann = spec.output.anndata
    if ann is not None:
        written["anndata"] = result.to_anndata(str(ann.path), input=ann.input,
                                               uns_key=ann.uns_key, overwrite=ann.overwrite)
    return RunReport(result=result, written=written, seconds=seconds)
