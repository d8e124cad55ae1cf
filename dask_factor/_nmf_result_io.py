"""The travelling side of :class:`~dask_factor.nmf_fit.NMFResult`: AnnData, zarr, top features.

Kept out of ``nmf_fit`` (the fit) so the result's methods stay thin. The zarr layout::

    /            attrs: format "dask_factor.nmf_result", version, settings, iterations,
                        converged, sse, mse, loss_history, tol_history, runtime, test_loss,
                        train_loss, best_iter, test_loss_history, train_loss_history,
                        loss, objective, objective_history, test_objective,
                        train_objective, test_objective_history (masked count-data fits)
    /W (m, k)  /d (k,)  /H (k, n)  /dispersion (m,) — NB/GP fits  /pi — zero inflation
    /names/features (m,) strings, /names/samples (n,) strings — when the result has them

The older ``.npz`` of ``dask-factor fit SRC OUT.npz`` (W, d, H, loss_history, settings as JSON;
feature_names and sample_names when known) is still written for an ``OUT`` ending in ``.npz``
(:func:`save_npz`) and read by :func:`load`.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "dask_factor.nmf_result"
VERSION = 1

def _json(x):
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)
    return json.loads(json.dumps(x, default=default, allow_nan=True))


def _strings(group, name: str, values) -> None:
    values = np.asarray([str(v) for v in values], dtype=object)
    arr = group.create_array(name, shape=values.shape, dtype=str)
    if values.size:
        arr[...] = values


def _names(values, size: int, what: str) -> list[str] | None:
    if values is None:
        return None
    values = [str(v) for v in values]
    if len(values) != size:
        raise ValueError(f"{what}: expected {size} names, got {len(values)}")
    return values


def save(result, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``result`` to a zarr store, atomically; see :meth:`NMFResult.save`."""
    import zarr

    from .io.blocks import atomic_path

    path = Path(path)
    m, n = result.W.shape[0], result.H_dask.shape[1]
    features = _names(result.feature_names, m, "feature_names")
    samples = _names(result.sample_names, n, "sample_names")
    with atomic_path(path, overwrite=overwrite, format="nmf_result") as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update(_json({
            "format": FORMAT, "version": VERSION, "settings": result.settings,
            "iterations": int(result.iterations), "converged": bool(result.converged),
            "sse": float(result.sse), "mse": float(result.mse),
            "loss_history": [float(v) for v in result.loss_history],
            "tol_history": [float(v) for v in result.tol_history],
            "runtime": float(result.runtime), "test_loss": float(result.test_loss),
            "train_loss": float(result.train_loss), "best_iter": int(result.best_iter),
            "test_loss_history": [float(v) for v in result.test_loss_history],
            "train_loss_history": [float(v) for v in result.train_loss_history],
            "loss": result.loss, "objective": float(result.objective),
            "objective_history": [float(v) for v in result.objective_history],
            "test_objective": float(result.test_objective),
            "train_objective": float(result.train_objective),
            "test_objective_history": [float(v) for v in result.test_objective_history]}))
        if result.dispersion is not None:
            root.create_array("dispersion", data=np.asarray(result.dispersion, np.float64))
        if result.pi is not None:
            root.create_array("pi", data=np.asarray(result.pi, np.float64))
        root.create_array("W", data=np.ascontiguousarray(result.W))
        root.create_array("d", data=np.asarray(result.d, dtype=np.float64))
        root.create_array("H", data=np.ascontiguousarray(result.H))
        if features is not None or samples is not None:
            g = root.create_group("names")
            if features is not None:
                _strings(g, "features", features)
            if samples is not None:
                _strings(g, "samples", samples)
    return path


def load(cls, path: str | os.PathLike):
    """Read a store written by :func:`save`; see :meth:`NMFResult.load`."""
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    if path.is_file() and zipfile.is_zipfile(path):
        return _load_npz(cls, path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except (ValueError, OSError) as err:  # zarr's GroupNotFoundError: another file or directory
        from .io.targets import describe

        raise ValueError(f"path={str(path)!r} is not a saved NMF result (a zarr store written "
                         f"by NMFResult.save, or an .npz): it is {describe(path)}") from err
    a = dict(root.attrs)
    if a.get("format") != FORMAT:
        raise ValueError(f"path={str(path)!r} is not a saved NMF result (format "
                         f"{a.get('format')!r})")
    if int(a.get("version", 0)) > VERSION:
        raise ValueError(f"path={str(path)!r}: format version {a['version']} is newer than this "
                         f"dask_factor reads ({VERSION})")
    settings = _pairs(dict(a["settings"]))
    H = np.asarray(root["H"][...])
    names = root["names"] if "names" in root else None

    def strings(key):
        if names is None or key not in names:
            return None
        return [str(v) for v in names[key][...]]

    return cls(W=np.asarray(root["W"][...]), d=np.asarray(root["d"][...]),
               H_dask=da.from_array(H, chunks=H.shape), iterations=int(a["iterations"]),
               converged=bool(a["converged"]), sse=float(a["sse"]), mse=float(a["mse"]),
               loss_history=list(a["loss_history"]), tol_history=list(a["tol_history"]),
               settings=settings, runtime=float(a["runtime"]), test_loss=float(a["test_loss"]),
               train_loss=float(a["train_loss"]), best_iter=int(a["best_iter"]),
               test_loss_history=list(a["test_loss_history"]),
               train_loss_history=list(a["train_loss_history"]), _H=H,
               feature_names=strings("features"), sample_names=strings("samples"),
               loss=a.get("loss", "mse"), objective=float(a.get("objective", math.nan)),
               objective_history=list(a.get("objective_history", [])),
               test_objective=float(a.get("test_objective", math.nan)),
               train_objective=float(a.get("train_objective", math.nan)),
               test_objective_history=list(a.get("test_objective_history", [])),
               dispersion=(np.asarray(root["dispersion"][...]) if "dispersion" in root
                           else None),
               pi=np.asarray(root["pi"][...]) if "pi" in root else None)


def _pairs(settings: dict) -> dict:
    for key in ("L1", "L2", "upper_bound", "nonneg"):  # JSON lists back to the fit's pairs
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    return settings


def save_npz(result, path: str | os.PathLike) -> Path:
    """Write the older ``.npz`` of ``dask-factor fit SRC OUT.npz``, atomically (it replaces only
    an earlier fit's ``.npz``): W, d, H, loss_history, settings (JSON) and the names if known."""
    from .io.targets import replacing

    path = Path(path)
    m, n = result.W.shape[0], result.H_dask.shape[1]
    arrays = dict(W=result.W, d=result.d, H=result.H,
                  loss_history=np.asarray(result.loss_history),
                  settings=json.dumps(result.settings, default=str))
    for key, values, size in (("feature_names", result.feature_names, m),
                              ("sample_names", result.sample_names, n)):
        names = _names(values, size, key)
        if names is not None:
            arrays[key] = np.asarray(names, dtype=str)
    with replacing(path, fmt="npz", overwrite=True, what="OUT") as tmp, \
            open(tmp, "wb") as fh:  # a file handle: numpy adds no suffix
        np.savez(fh, **arrays)
    return path


def _load_npz(cls, path: Path):
    import dask.array as da

    with np.load(path, allow_pickle=False) as z:
        if "W" not in z.files or "H" not in z.files or "d" not in z.files:
            raise ValueError(f"path={str(path)!r} is not a saved NMF result (an .npz without "
                             f"W, d and H)")
        W, d, H = np.asarray(z["W"]), np.asarray(z["d"]), np.asarray(z["H"])
        loss = [float(v) for v in z["loss_history"]] if "loss_history" in z.files else []
        settings = _pairs(json.loads(str(z["settings"]))) if "settings" in z.files else {}
        features = [str(v) for v in z["feature_names"]] if "feature_names" in z.files else None
        samples = [str(v) for v in z["sample_names"]] if "sample_names" in z.files else None
    from .engine.driver import converged_history, relative_change

    mse = loss[-1] if loss else float("nan")
    tol = [relative_change(a, b) for a, b in zip(loss, loss[1:])]
    # the .npz kept no convergence flag: the driver's test on the saved history
    converged = converged_history(loss, float(settings.get("tol", 0.0)))
    return cls(W=W, d=d, H_dask=da.from_array(H, chunks=H.shape), iterations=len(loss),
               converged=converged, sse=mse * W.shape[0] * H.shape[1], mse=mse,
               loss_history=loss, tol_history=tol, settings=settings, _H=H,
               feature_names=features, sample_names=samples)


def params(result) -> dict[str, Any]:
    """The settings AnnData can store (scalars and pairs)."""
    out = {}
    for key, value in result.settings.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float))
                                                      for v in value):
            out[key] = np.asarray(value)
    out["k"] = result.k
    return out


def to_anndata(result, adata=None, *, key: str = "nmf", overwrite: bool = True):
    """See :meth:`NMFResult.to_anndata`."""
    import pandas as pd

    from ._optional import require

    ad = require("anndata", "NMFResult.to_anndata")

    from .io.anndata_io import write_nmf_to_anndata

    m, n = result.W.shape[0], result.H_dask.shape[1]
    if adata is None:
        features = result.feature_names or [f"feature{i}" for i in range(m)]
        samples = result.sample_names or [f"sample{j}" for j in range(n)]
        adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index(samples, dtype=object)),
                           var=pd.DataFrame(index=pd.Index(features, dtype=object)))
    elif not isinstance(adata, (str, os.PathLike)):
        if adata.shape != (n, m):
            raise ValueError(f"adata: expected shape (n_samples, n_features) = ({n}, {m}) (the "
                             f"factorized matrix, transposed), got {adata.shape}")
        for names, index, what in ((result.feature_names, adata.var_names, "var_names"),
                                   (result.sample_names, adata.obs_names, "obs_names")):
            if names is not None and list(map(str, index)) != list(names):
                raise ValueError(f"adata.{what} differ from the result's names")
    history = {"loss": np.asarray(result.loss_history, dtype=float)}
    target = write_nmf_to_anndata(adata, result.W, result.d, result.H,
                                  loss=history["loss"], params=params(result),
                                  obsm_key=f"X_{key}", varm_key=f"{key.upper()}_W", uns_key=key,
                                  overwrite=overwrite)
    if not isinstance(target, (str, os.PathLike)):
        uns = target.uns[key]
        uns["iterations"] = int(result.iterations)
        uns["converged"] = bool(result.converged)
        uns["mse"] = float(result.mse)
    return target


def top_features(result, n: int = 10, *, weights: bool = False):
    """See :meth:`NMFResult.top_features`."""
    import pandas as pd

    m, k = result.W.shape
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    n = min(int(n), m)
    names = np.asarray(result.feature_names if result.feature_names is not None
                       else [f"feature{i}" for i in range(m)], dtype=object)
    order = np.argsort(-result.W, axis=0, kind="stable")[:n]  # (n, k)
    columns = [f"nmf{j}" for j in range(k)]
    if not weights:
        return pd.DataFrame(names[order], columns=columns,
                            index=pd.RangeIndex(n, name="rank"))
    rows = [(columns[j], r, names[order[r, j]], float(result.W[order[r, j], j]))
            for j in range(k) for r in range(n)]
    return pd.DataFrame(rows, columns=["factor", "rank", "feature", "weight"])
