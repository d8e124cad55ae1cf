"""Checkpoints of a driven fit: the state after a step, written atomically as a zarr group.

Layout (zarr v3)::

    <path>/                     attrs: format, step, fingerprint, stats (JSON), slots
      state/<slot>/<i>          one node per value: an array, or a group for a package
      best/<slot>/<i>           the best step's model (cross-validation), when there is one

A slot holds one value (a small package, e.g. W and its Gram) or a list of per-block values (the
H blocks, chunked like A). Packages are dataclasses registered with :func:`register`; their
arrays become zarr arrays and their scalars attributes, so reading a checkpoint never unpickles
anything. The fingerprint (input shape, non-zeros, ‖A‖², block bounds, rank, graph, settings) is
compared field by field on resume; a mismatch is refused with the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "dask_factor-checkpoint/1"

_TYPES: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow a package dataclass in checkpoints (used as a class decorator)."""
    _TYPES[cls.__name__] = cls
    return cls


@dataclass
class Snapshot:
    """The state after ``step`` steps: slot values (client side), the best model, statistics."""

    step: int
    state: dict[str, Any]
    best: dict[str, Any] | None
    stats: list


# --------------------------------------------------------------------------------------------
# JSON for statistics and fingerprints (arrays as tagged lists; NaN allowed)


def _enc(x):
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": x.dtype.str, "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _enc(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    return x


def _dec(x):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.asarray(x["__ndarray__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
        return {k: _dec(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_dec(v) for v in x]
    return x


def to_json(x) -> str:
    return json.dumps(_enc(x), sort_keys=True)


# --------------------------------------------------------------------------------------------
# values <-> zarr nodes


def _contiguous(a: np.ndarray) -> np.ndarray:
    """C order without changing the shape (``np.ascontiguousarray`` makes 0-d arrays 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _write_value(group, name: str, v) -> None:
    if isinstance(v, (np.generic, int, float)) and not isinstance(v, bool):
        v = np.asarray(v)  # a scalar state value: a 0-d array
    if isinstance(v, np.ndarray):
        group.create_array(name, data=_contiguous(v))
        return
    if dataclasses.is_dataclass(v) and type(v).__name__ in _TYPES:
        g = group.create_group(name)
        scalars, nones, blobs = {}, [], {}
        for f in dataclasses.fields(v):
            x = getattr(v, f.name)
            if x is None:
                nones.append(f.name)
            elif isinstance(x, np.ndarray):
                g.create_array(f.name, data=_contiguous(x))
            elif isinstance(x, (bool, int, float, str, np.generic)):
                scalars[f.name] = _enc(x)
            else:
                blobs[f.name] = to_json(x)
        g.attrs.update({"type": type(v).__name__, "none": nones, "scalars": scalars,
                        "json": blobs})
        return
    raise TypeError(f"checkpoint: cannot store a {type(v).__name__}")


def _read_value(node, where: str):
    import zarr

    if isinstance(node, zarr.Array):
        return node[...]
    attrs = dict(node.attrs)
    cls = _TYPES.get(attrs.get("type", ""))
    if cls is None:
        raise ValueError(f"resume: {where} holds an unknown package type {attrs.get('type')!r}")
    kw = {f: None for f in attrs.get("none", [])}
    kw.update(attrs.get("scalars", {}))
    kw.update({k: _dec(json.loads(v)) for k, v in attrs.get("json", {}).items()})
    for name, arr in node.arrays():
        kw[name] = arr[...]
    return cls(**kw)


def _write_tree(root, name: str, tree: dict[str, Any]) -> dict:
    g = root.create_group(name)
    layout = {}
    for slot, v in tree.items():
        sg = g.create_group(slot)
        vals = v if isinstance(v, list) else [v]
        layout[slot] = {"list": isinstance(v, list), "n": len(vals),
                        "none": [i for i, x in enumerate(vals) if x is None]}
        for i, x in enumerate(vals):
            if x is not None:
                _write_value(sg, str(i), x)
    return layout


def _read_tree(root, name: str, layout: dict) -> dict[str, Any]:
    out = {}
    for slot, lay in layout.items():
        vals = []
        for i in range(int(lay["n"])):
            if i in lay["none"]:
                vals.append(None)
            else:
                vals.append(_read_value(root[f"{name}/{slot}/{i}"], f"{name}/{slot}/{i}"))
        out[slot] = vals if lay["list"] else vals[0]
    return out


# --------------------------------------------------------------------------------------------
# public entry points


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a checkpoint written by this module (so it may be replaced)."""
    p = Path(path)
    meta = p / "zarr.json"
    if not (p.is_dir() and meta.is_file()):
        return False
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get("format") == FORMAT


def check_path(path, *, name: str = "checkpoint") -> Path:
    """Validate a checkpoint path before any work: its parent exists, and an existing path is one
    of our checkpoints (it will be replaced) rather than anything else (never replaced)."""
    p = Path(os.fspath(path))
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{name}: the directory {str(p.parent)!r} does not exist")
    if p.exists() and not is_checkpoint(p):
        raise FileExistsError(f"{name}: {str(p)!r} exists and is not a dask_factor checkpoint; "
                              f"choose another path (it is never replaced)")
    return p


def save(path, snap: Snapshot, fingerprint: dict) -> None:
    """Write ``snap`` to ``path`` atomically (a temporary sibling renamed into place)."""
    import zarr

    from ..io.blocks import atomic_path

    p = check_path(path)
    with atomic_path(p, overwrite=True) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        layout = {"state": _write_tree(root, "state", snap.state)}
        if snap.best is not None:
            layout["best"] = _write_tree(root, "best", snap.best)
        root.attrs.update({"format": FORMAT, "step": int(snap.step),
                           "fingerprint": to_json(fingerprint), "stats": to_json(snap.stats),
                           "layout": layout})


def load(path, fingerprint: dict, *, name: str = "fit") -> Snapshot:
    """Read a checkpoint and verify it belongs to this fit (``fingerprint``, field by field).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a checkpoint, or was written by another fit (the field is named).
    """
    import zarr

    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"resume: no checkpoint at {str(p)!r}")
    if not is_checkpoint(p):
        raise ValueError(f"resume: {str(p)!r} is not a dask_factor checkpoint")
    root = zarr.open_group(str(p), mode="r")
    attrs = dict(root.attrs)
    theirs = json.loads(attrs["fingerprint"])
    ours = json.loads(to_json(fingerprint))
    for key in list(fingerprint) + [k for k in theirs if k not in fingerprint]:
        if ours.get(key) != theirs.get(key):
            raise ValueError(
                f"resume: the checkpoint {str(p)!r} belongs to another {name} fit: its {key} is "
                f"{_short(theirs.get(key))}, this fit's is {_short(ours.get(key))}")
    layout = attrs["layout"]
    state = _read_tree(root, "state", layout["state"])
    best = _read_tree(root, "best", layout["best"]) if "best" in layout else None
    return Snapshot(step=int(attrs["step"]), state=state, best=best,
                    stats=_dec(json.loads(attrs["stats"])))


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 80 else s[:77] + "..."
