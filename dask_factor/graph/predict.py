"""Projecting new samples through a fitted graph (``GraphResult.predict``).

Works from the result's saved plan alone, so a loaded result predicts too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..engine.deep import project_graph
from ..engine.inputs import prepare_input
from ..engine.nmf_layer import NMFSpec
from ..engine.plan import ConditionPart, InputPart, SideSpec, part_from_dict
from ..engine.shared_blocks import blocked_inputs
from .merge import orient_z

#: RcppML's predict: coordinate descent to convergence
PREDICT_CD_MAXIT = 100
PREDICT_CD_TOL = 1e-8


def _projection_spec(layer: dict, dtype, remap: dict[int, int]) -> NMFSpec:
    """A saved layer as a projection layer: its sample-side options, the graph inputs
    renumbered onto the new data, coordinate descent to convergence."""
    side = layer["W"] if layer["embedding"] else layer["H"]
    V = SideSpec(L1=side["L1"], L2=side["L2"], upper_bound=side["upper_bound"],
                 nonneg=side["nonneg"])
    parts = tuple(part_from_dict(p).with_inputs(remap) for p in layer["parts"])
    W, H = (V, SideSpec()) if layer["embedding"] else (SideSpec(), V)
    return NMFSpec(index=layer["index"], name=layer["name"], k=layer["k"], parts=parts, W=W,
                   H=H, solver="cd", cd_maxit=PREDICT_CD_MAXIT, cd_tol=PREDICT_CD_TOL,
                   dtype=np.dtype(dtype))


def predict_graph(result, new_data, *, conditions: Mapping | None = None, client=None
                  ) -> dict[str, np.ndarray]:
    """See :meth:`GraphResult.predict`."""
    plan = result.plan
    if any(layer["kind"] != "nmf" for layer in plan):
        raise NotImplementedError("predict: graphs with an svd_layer are not supported yet")
    names = list(result.input_names)
    if not isinstance(new_data, Mapping):
        if len(names) != 1:
            raise TypeError(f"predict: the graph has inputs {names}; pass new_data as a dict "
                            f"{{input name: matrix}}")
        new_data = {names[0]: new_data}
    unknown = [k for k in new_data if k not in names]
    if unknown:
        raise KeyError(f"predict: unknown input(s) {unknown}; inputs: {names}")
    rows: dict[int, int] = {}
    fixed_names: dict[int, str] = {}
    for layer in plan:
        for p in map(part_from_dict, layer["parts"]):
            if isinstance(p, InputPart):
                rows[p.source] = p.rows
            elif isinstance(p, ConditionPart):
                fixed_names[p.source] = p.name
    missing = [names[i] for i in rows if names[i] not in new_data]
    if missing:
        raise ValueError(f"predict: new_data lacks input(s) {missing}")
    dtype = np.dtype(result.config.get("dtype", "float32"))
    preps, datas = [], []
    for i, name in enumerate(names):
        if i not in rows:
            continue
        prep = prepare_input(new_data[name], name=f"new_data[{name!r}]", dtype=dtype,
                             client=client)
        if prep.shape[0] != rows[i]:
            raise ValueError(f"predict: new_data[{name!r}] has {prep.shape[0]} rows; the input "
                             f"was fitted with {rows[i]} features")
        preps.append(prep)
        datas.append(new_data[name])
    ns = {p.shape[1] for p in preps}
    if len(ns) != 1:
        raise ValueError(f"predict: the new inputs have different sample counts {sorted(ns)}")
    n_new = ns.pop()
    conditions = dict(conditions or {})
    Zs = []
    for z in range(len(fixed_names)):
        name = fixed_names[z]
        if name not in conditions:
            raise ValueError(f"predict: the graph conditions on {name!r}; pass "
                             f"conditions={{{name!r}: Z_new}} with Z_new p × n_new")
        Z = np.asarray(conditions[name], dtype=np.float64)
        Zs.append(orient_z(f"predict: conditions[{name!r}]", np.atleast_2d(Z), n_new))
    bms, bounds = blocked_inputs(preps, datas, dtype=dtype)
    # data part sources index the graph's inputs; map them onto the prepared list
    order = [i for i in range(len(names)) if i in rows]
    remap = {i: j for j, i in enumerate(order)}
    specs, Us, ds = [], [], []
    for layer in plan:
        spec = _projection_spec(layer, dtype, remap)
        lr = result.layers[layer["name"]]
        U = lr.H.T if layer["embedding"] else lr.W_stacked
        specs.append(spec)
        Us.append(np.asarray(U, dtype=np.float64))
        ds.append(np.asarray(lr.d, dtype=np.float64))
    Vs = project_graph(specs, Us, ds, bms, Zs, bounds, client=client)
    out = {}
    for layer, V in zip(plan, Vs):
        out[layer["name"]] = V if layer["embedding"] else np.ascontiguousarray(V.T)
    return out
