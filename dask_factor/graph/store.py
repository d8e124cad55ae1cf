"""Saving and loading graph results (zarr), and writing them into AnnData.

zarr layout (one store, written to a temporary sibling and renamed into place)::

    /                  attrs: format, version, config, settings, plan, input_names, iterations,
                              warmup, converged, loss_history, runtime, layer_names
    /layers/<i>/       attrs: name, kind, iterations, converged, sse, mse, loss_history, input,
                              embedding, w_parts (names of the per-input W blocks, or null)
    /layers/<i>/W      (m, k) — or /layers/<i>/W/<j> per input block, in input order
    /layers/<i>/d      (k,)
    /layers/<i>/H      (k, n)
/names/samples     (n,) strings   — when ``result.names`` has them
/names/features/<j> (m_j,) strings — features of input j; attrs ``inputs``: their input names

Groups are numbered in graph order, so any layer or input name is allowed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._optional import require
from ..engine.plan import InputPart, part_from_dict
from ..io.blocks import atomic_path
from .result import GraphResult, LayerResult

FORMAT = "dask_factor.factor_net_result"
VERSION = 1


def _json(x):
    """Round-trip through JSON so attributes hold plain types only."""
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)
    return json.loads(json.dumps(x, default=default, allow_nan=True))


def _floats(xs) -> list[float]:
    return [float(v) for v in xs]


def save_result(result: GraphResult, path, *, overwrite: bool = False) -> Path:
    """Write ``result`` to a zarr store at ``path``; see :meth:`GraphResult.save`."""
    import zarr

    path = Path(path)
    with atomic_path(path, overwrite=overwrite, format="factor_net_result") as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update(_json({
            "format": FORMAT, "version": VERSION, "config": result.config,
            "settings": result.settings, "plan": result.plan,
            "input_names": result.input_names, "iterations": int(result.iterations),
            "warmup": int(result.warmup), "converged": bool(result.converged),
            "loss_history": _floats(result.loss_history), "runtime": float(result.runtime),
            "layer_names": list(result.layers)}))
        layers = root.create_group("layers")
        for i, lr in enumerate(result.layers.values()):
            g = layers.create_group(str(i))
            parts = list(lr.W) if isinstance(lr.W, Mapping) else None
            g.attrs.update(_json({
                "name": lr.name, "kind": lr.kind, "iterations": int(lr.iterations),
                "converged": bool(lr.converged), "sse": float(lr.sse), "mse": float(lr.mse),
                "loss_history": _floats(lr.loss_history), "input": lr.input,
                "embedding": bool(lr.embedding), "w_parts": parts}))
            if parts is None:
                g.create_array("W", data=np.ascontiguousarray(lr.W))
            else:
                wg = g.create_group("W")
                for j, name in enumerate(parts):
                    wg.create_array(str(j), data=np.ascontiguousarray(lr.W[name]))
            g.create_array("d", data=np.asarray(lr.d, dtype=np.float64))
            g.create_array("H", data=np.ascontiguousarray(lr.H))
        if result.names:
            _save_names(root, result.names)
    return path


def _strings(group, name: str, values) -> None:
    values = np.asarray([str(v) for v in values], dtype=object)
    arr = group.create_array(name, shape=values.shape, dtype=str)
    if values.size:
        arr[...] = values


def _save_names(root, names: Mapping) -> None:
    g = root.create_group("names")
    if names.get("samples") is not None:
        _strings(g, "samples", names["samples"])
    features = {k: v for k, v in (names.get("features") or {}).items() if v is not None}
    fg = g.create_group("features")
    fg.attrs["inputs"] = list(features)
    for j, values in enumerate(features.values()):
        _strings(fg, str(j), values)


def _load_names(root) -> dict | None:
    if "names" not in root:
        return None
    g = root["names"]
    names: dict = {}
    if "samples" in g:
        names["samples"] = [str(v) for v in g["samples"][...]]
    if "features" in g:
        fg = g["features"]
        names["features"] = {name: [str(v) for v in fg[str(j)][...]]
                             for j, name in enumerate(fg.attrs.get("inputs", []))}
    return names


def load_result(path) -> GraphResult:
    """Read a result written by :func:`save_result`.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        Not a saved result, or a newer format.
    MatrixFormatError
        A damaged or incomplete result (a layer's array or attribute missing, unreadable
        metadata), naming the path and what is missing.
    """
    from ..io.errors import reading

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    with reading(path, "load the saved result"):
        return _load(path)


def _load(path: Path) -> GraphResult:
    import zarr

    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT:
        raise ValueError(f"path={str(path)!r} is not a saved factor_net result (format "
                         f"{attrs.get('format')!r})")
    if int(attrs.get("version", 0)) > VERSION:
        raise ValueError(f"path={str(path)!r}: format version {attrs['version']} is newer than "
                         f"this dask_factor reads ({VERSION})")
    layers: dict[str, LayerResult] = {}
    for i in range(len(attrs["layer_names"])):
        g = root["layers"][str(i)]
        a = dict(g.attrs)
        if a["w_parts"] is None:
            W = np.asarray(g["W"][...])
        else:
            W = {name: np.asarray(g["W"][str(j)][...]) for j, name in enumerate(a["w_parts"])}
        layers[a["name"]] = LayerResult(
            name=a["name"], kind=a["kind"], W=W, d=np.asarray(g["d"][...]),
            H=np.asarray(g["H"][...]), iterations=int(a["iterations"]),
            converged=bool(a["converged"]), sse=float(a["sse"]), mse=float(a["mse"]),
            loss_history=list(a["loss_history"]), input=a["input"],
            embedding=bool(a["embedding"]))
    return GraphResult(layers=layers, loss_history=list(attrs["loss_history"]),
                       iterations=int(attrs["iterations"]), warmup=int(attrs["warmup"]),
                       converged=bool(attrs["converged"]), config=dict(attrs["config"]),
                       settings=dict(attrs["settings"]), plan=list(attrs["plan"]),
                       input_names=list(attrs["input_names"]), runtime=float(attrs["runtime"]),
                       names=_load_names(root))


def w_blocks(result: GraphResult, name: str) -> list[tuple]:
    """Layer ``name``'s W cut at the row parts of its input, in order.

    Returns ``[(part, block), ...]``: a :class:`~dask_factor.engine.plan.InputPart` (``source``
    = the graph input's position) with that input's feature rows (m_i × k), a condition's Z rows,
    an upstream layer's k_up rows; empty for a layer fed by layers (its W is per sample).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
    >>> A = datasets.load("aml").matrix
    >>> res = fit(factor_net(inp := factor_input(A, name="aml"), nmf_layer(inp, 3, name="l"),
    ...                      factor_config(maxit=3)))
    >>> [(type(p).__name__, p.name, block.shape) for p, block in w_blocks(res, "l")]
    [('InputPart', 'aml', (824, 3))]
    """
    layer = next((entry for entry in result.plan if entry["name"] == name), None)
    if layer is None:
        raise KeyError(f"no layer named {name!r}; layers: {list(result.layers)}")
    if layer["embedding"]:
        return []
    Wst = result.layers[name].W_stacked
    out, o = [], 0
    for p in map(part_from_dict, layer["parts"]):
        out.append((p, Wst[o:o + p.rows]))
        o += p.rows
    return out


def to_anndata(result: GraphResult, adata, *, input: str | None = None,
               uns_key: str = "factor_net", copy: bool = False, overwrite: bool = False):
    """See :meth:`GraphResult.to_anndata`."""
    if isinstance(adata, (str, os.PathLike)):
        return _to_h5ad(result, Path(adata), input=input, uns_key=uns_key, overwrite=overwrite)
    if not (type(adata).__name__ == "AnnData" and hasattr(adata, "obsm")):
        raise TypeError(f"to_anndata: expected an anndata.AnnData, got {type(adata).__name__}")
    names = list(result.input_names)
    input = names[0] if input is None else input
    if input not in names:
        raise ValueError(f"to_anndata: input={input!r} is not an input of the graph {names}")
    src = names.index(input)
    n = None
    for layer in result.plan:
        lr = result.layers[layer["name"]]
        n = lr.W.shape[0] if layer["embedding"] else lr.H.shape[1]
        break
    if adata.n_obs != n:
        raise ValueError(f"to_anndata: adata has {adata.n_obs} cells (n_obs); the graph was "
                         f"fitted on {n} samples")
    if copy:
        adata = adata.copy()
    uns_layers = {}
    for layer in result.plan:
        name = layer["name"]
        lr = result.layers[name]
        info = {"d": np.asarray(lr.d), "loss_history": np.asarray(lr.loss_history, dtype=float),
                "mse": float(lr.mse), "sse": float(lr.sse), "iterations": int(lr.iterations),
                "converged": bool(lr.converged), "input": lr.input, "kind": lr.kind}
        if layer["embedding"]:
            adata.obsm[f"X_{name}"] = np.asarray(lr.W)
            info["H"] = np.asarray(lr.H)
        else:
            adata.obsm[f"X_{name}"] = np.ascontiguousarray(np.asarray(lr.H).T)
            others = {}
            for p, block in w_blocks(result, name):
                if isinstance(p, InputPart) and p.source == src and p.rows == adata.n_vars:
                    adata.varm[f"{name}_W"] = np.asarray(block)
                else:
                    others[p.name] = np.asarray(block)
            if others:
                info["W"] = others
        uns_layers[name] = info
    adata.uns[uns_key] = {
        "config": {k: v for k, v in result.config.items() if v is not None},
        "loss_history": np.asarray(result.loss_history, dtype=float),
        "iterations": int(result.iterations), "converged": bool(result.converged),
        "input": input, "layers": uns_layers}
    return adata


# --------------------------------------------------------------------------- .h5ad in place


def anndata_keys(result_or_plan, input: str | None, input_names: list[str],
                 uns_key: str = "factor_net") -> list[tuple[str, str]]:
    """The ``(group, key)`` elements :func:`to_anndata` writes, from the compiled plan.

    ``obsm/X_<layer>`` for every layer, ``varm/<layer>_W`` for the layers that read ``input``
    (default: the first input) and ``uns/<uns_key>``.
    """
    plan = getattr(result_or_plan, "plan", result_or_plan)
    input = input_names[0] if input is None else input
    if input not in input_names:
        raise ValueError(f"to_anndata: input={input!r} is not an input of the graph "
                         f"{input_names}")
    src = input_names.index(input)
    keys = []
    for layer in plan:
        keys.append(("obsm", f"X_{layer['name']}"))
        if not layer["embedding"] and any(
                isinstance(p, InputPart) and p.source == src
                for p in map(part_from_dict, layer["parts"])):
            keys.append(("varm", f"{layer['name']}_W"))
    keys.append(("uns", uns_key))
    return keys


def check_h5ad_keys(path, keys, *, overwrite: bool, what: str = "path") -> None:
    """Refuse (``FileExistsError``) when one of ``keys`` exists in the ``.h5ad`` at ``path``
    and ``overwrite`` is False; ``ValueError`` when ``path`` is not an ``.h5ad`` file."""
    from ..io.anndata_io import anndata_backend, h5ad_taken

    if anndata_backend(path) != "h5":
        raise ValueError(f"{what}={str(path)!r}: only .h5ad files can be updated in place")
    if overwrite:
        return
    taken = h5ad_taken(path, keys)
    if taken:
        raise FileExistsError(f"{what}={str(path)!r} already has {', '.join(taken)}; pass "
                              f"overwrite=True to replace them")


def _to_h5ad(result: GraphResult, path: Path, *, input, uns_key, overwrite) -> Path:
    import pandas as pd

    from ..io.anndata_io import h5ad_shape, write_h5ad_elements

    ad = require("anndata", "writing into an .h5ad")
    names = list(result.input_names)
    keys = anndata_keys(result, input, names, uns_key)
    check_h5ad_keys(path, keys, overwrite=overwrite)
    n_cells, n_genes = h5ad_shape(path)
    shell = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n_cells)]),
                       var=pd.DataFrame(index=[str(i) for i in range(n_genes)]))
    to_anndata(result, shell, input=input, uns_key=uns_key)
    items = [("obsm", k, v) for k, v in shell.obsm.items()]
    items += [("varm", k, v) for k, v in shell.varm.items()]
    items.append(("uns", uns_key, shell.uns[uns_key]))
    write_h5ad_elements(path, items, overwrite=True)  # the keys were checked above
    return path
