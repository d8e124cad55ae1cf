"""``fit()``: run a compiled factorization graph on Dask.

* A graph of one NMF layer on one input whose options ``nmf()`` has runs **exactly** the
  ``nmf()`` path (same seed → the same factors, bit for bit, for every k and L1; the solver is
  picked by ``nmf()``'s rule).
* A graph of one ``svd_layer`` on one input runs ``svd()`` (:mod:`.svd_bridge`).
* Every other graph runs on :mod:`dask_factor.engine.deep`: layers in graph order, warm-up fits,
  then RcppML's joint block-coordinate sweeps, one Dask graph per sweep (independent branches in
  the same submission). ``factor_shared`` never forms the row-bound matrix. The compiled layers
  are the engine's own objects; this module only picks their numerical settings and initial
  factors and turns the fitted state into results.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import checks as V
from ..engine.deep import fit_graph
from ..engine.inputs import prepare_input
from ..engine.masked import Penalties
from ..engine.plan import InputPart
from ..engine.shared_blocks import blocked_inputs
from ..nmf import initial_w, nmf, resolve_solver
from ..nmf_fit import fit_nmf
from ..progress import iteration_progress
from .compile import FactorNet
from .result import GraphResult, LayerResult
from .svd_bridge import fit_svd_layer, runs_on_svd

__all__ = ["fit"]


def _draw_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**31 - 1))


def _progress(net: FactorNet, progress: bool | None) -> bool:
    """Whether to show the bar: ``fit(progress=)`` if given, else ``factor_config(verbose=)``."""
    return bool(net.config.verbose if progress is None else progress)


def fit_nmf_path(net: FactorNet, seed: int, client, on_iteration, layer=None,
                  ckpt=None, progress: bool = False) -> GraphResult:
    cfg = net.config
    lp = layer if layer is not None else net.layers[0]
    inp = net.inputs[lp.parts[0].source]
    cv = {}
    if cfg.test_fraction > 0:  # speckled hold-out; cv_seed 0 → the init seed (as nmf())
        cv = dict(test_fraction=cfg.test_fraction, cv_seed=cfg.cv_seed or seed,
                  patience=cfg.patience, mask_zeros=cfg.mask_zeros)
    extra = {}
    if not lp.nmf_compatible:  # graph, L21, angular or W's target: the masked engine's options
        a = lp.engine_arrays(net.n)
        extra["penalties"] = Penalties(W=lp.U.bare(), H=lp.V.bare(), w_graph=a.ugraph,
                                       w_target=a.utarget, h_graph=a.vgraph, h_target=a.vtarget)
    fitter = fit_nmf if extra else nmf
    res = fitter(inp.data, lp.k, tol=cfg.tol, maxit=cfg.maxit, L1=(lp.W.L1, lp.H.L1),
              L2=(lp.W.L2, lp.H.L2), upper_bound=(lp.W.upper_bound, lp.H.upper_bound),
              nonneg=(lp.W.nonneg, lp.H.nonneg), seed=seed, norm=cfg.norm,
              solver=cfg.solver, cd_maxit=cfg.cd_maxit, cd_tol=cfg.cd_tol,
              sort_model=cfg.sort_model, rng=cfg.rng,
              target_H=None if extra else lp.H.target,
              target_lambda=(lp.H.target_lambda if lp.H.target is not None and not extra
                             else 0.0),
              chunks=cfg.chunks, block_nnz=cfg.block_nnz, dtype=cfg.dtype, client=client,
              progress=progress, on_iteration=on_iteration, **cv, **(ckpt or {}), **extra,
              **({"loss": lp.loss} if lp.loss != "mse" else {}))
    layer = LayerResult(name=lp.name, kind="nmf", W=res.W, d=res.d, H=np.asarray(res.H),
                        iterations=res.iterations, converged=res.converged, sse=res.sse,
                        mse=res.mse, loss_history=list(res.loss_history), input=lp.input_label)
    settings = dict(path="nmf", seed=seed, solver_used=res.settings["solver_used"],
                    cd_maxit=res.settings["cd_maxit"], cd_tol=res.settings["cd_tol"],
                    chunks=res.settings["chunks"], n_negative=res.settings["n_negative"])
    if res.loss != "mse":  # a count-data loss: its objective (and held-out loss below)
        settings.update(loss=res.loss, objective=res.objective,
                        objective_history=list(res.objective_history))
        if cv:
            settings.update(test_objective=res.test_objective,
                            train_objective=res.train_objective,
                            test_objective_history=list(res.test_objective_history))
    if cv:
        settings.update(test_loss=res.test_loss, train_loss=res.train_loss,
                        best_iter=res.best_iter, cv_seed=res.settings["cv_seed"],
                        test_loss_history=list(res.test_loss_history),
                        train_loss_history=list(res.train_loss_history))
    return GraphResult(layers={lp.name: layer}, loss_history=list(res.loss_history),
                       iterations=res.iterations, warmup=0, converged=res.converged,
                       config=cfg.to_dict(), settings=settings, plan=net.describe(),
                       input_names=net.input_names, runtime=res.runtime, _client=client)


def _masked_layer(net: FactorNet) -> bool:
    """One NMF layer on one input (any per-factor options): the masked engine can fit it."""
    if len(net.layers) != 1:
        return False
    lp = net.layers[0]
    return (lp.kind == "nmf" and not lp.embedding and len(lp.parts) == 1
            and isinstance(lp.parts[0], InputPart))


def fit(net: FactorNet, *, client=None, on_iteration=None, checkpoint=None,
        checkpoint_every: int | None = None, resume=None,
        progress: bool | None = None) -> GraphResult:
    """Fit a compiled factorization graph.

    Parameters
    ----------
    net : FactorNet
        From :func:`factor_net`.
    client : distributed.Client, optional
        Run there; default: the active client if any, else dask's threads.
    on_iteration : callable(iteration, loss, rel_change), optional
        Called after every iteration (one-layer graphs) or sweep (the sum of the layers' MSE);
        return True to stop.
    checkpoint : path, optional
        Write the state of every layer (a zarr group, replaced atomically) every
        ``checkpoint_every`` steps (default 10), so an interrupted fit can continue.
    checkpoint_every : int, optional
    resume : path or bool, optional
        Continue from this checkpoint (``True``: from ``checkpoint`` if it exists) to the
        factors the uninterrupted fit would have reached. It must come from the same graph,
        inputs and config (``factor_config(seed=...)`` set); anything else is refused.
    progress : bool, optional
        Show a progress bar (iteration or sweep out of ``maxit``, the loss, its relative change,
        the time left; see :mod:`dask_factor.progress`). Default: ``factor_config(verbose=)``.

    Returns
    -------
    GraphResult
        ``result["name"]`` (or ``result.name``) gives a layer's ``W``, ``H``, ``d``, ``loss``,
        ``iterations``, ``converged``; ``result.loss_history`` the whole graph's history.

    Raises
    ------
    TypeError, ValueError
        Bad input data (named by input), before any factorisation work.
    NotImplementedError
        ``test_fraction > 0`` on a graph other than one NMF layer on one input (see
        ``cross_validate_graph`` for deep graphs), or a constrained ``svd_layer`` (penalties,
        ``method="deflation"``/``"krylov"``).

    With ``test_fraction > 0`` a graph of one NMF layer on one input runs the masked engine
    (``nmf(test_fraction=…)``, with the layer's graph, L21, angular and target options on every
    column's and row's own Gram): the result's ``settings`` hold ``test_loss``, ``train_loss``,
    ``best_iter`` and their histories.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="methylation")
    >>> net = factor_net(inp, nmf_layer(nmf_layer(inp, 10, name="fine"), 3, name="coarse"),
    ...                  factor_config(maxit=30, seed=42))
    >>> res = fit(net)
    >>> res["fine"].H.shape, res.coarse.W.shape, res.coarse.H.shape
    ((10, 135), (135, 3), (3, 10))
    """
    if not isinstance(net, FactorNet):
        raise TypeError(f"fit: expected a FactorNet from factor_net(), got {type(net).__name__}")
    if client is not None and not hasattr(client, "persist"):
        raise TypeError(f"client: expected a distributed.Client, got {type(client).__name__}")
    cfg = net.config
    if cfg.test_fraction > 0 and not (net.nmf_path or _masked_layer(net)):
        raise NotImplementedError(
            "fit: test_fraction > 0 runs the masked engine on one NMF layer over one input; "
            "this graph has other layers or merges (cross_validate_graph scores a deep graph by "
            "its input layer's held-out reconstruction)")
    checkpoint, checkpoint_every, resume = V.checkpoint_args(checkpoint, checkpoint_every,
                                                             resume)
    ckpt = dict(checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    if resume is not None and cfg.seed is None:
        raise ValueError("resume: set factor_config(seed=...) to the seed of the interrupted fit "
                         "(a drawn seed cannot be matched)")
    if runs_on_svd(net):
        if checkpoint is not None or resume is not None:
            raise ValueError("checkpoint/resume: a graph of one svd_layer on one input runs "
                             "svd() in one go; there is nothing to resume")
        return fit_svd_layer(net, client, progress=_progress(net, progress))
    for lp in net.layers:  # what a layer type cannot fit, before any work
        lp.check(net.n)
    seed = cfg.seed if cfg.seed is not None else _draw_seed()
    if net.nmf_path or (cfg.test_fraction > 0 and _masked_layer(net)):
        return fit_nmf_path(net, seed, client, on_iteration, ckpt=ckpt,
                             progress=_progress(net, progress))
    return fit_engine(net, seed, client, on_iteration, ckpt, progress=_progress(net, progress))


def fit_engine(net: FactorNet, seed: int, client, on_iteration, ckpt=None,
               progress: bool = False) -> GraphResult:
    """Fit ``net`` on the graph engine, even where ``fit`` would take the ``nmf()`` path.

    ``fit`` routes a one-layer NMF graph through ``nmf()``; this runs the same graph through
    the graph schedule, so that the two paths can be compared.

    Parameters
    ----------
    net : FactorNet
    seed : int
        The graph's seed (layer ``i`` uses ``seed + i``).
    client : distributed.Client or None
    on_iteration : callable or None
        As for ``fit``.
    ckpt : dict, optional
        ``checkpoint``/``checkpoint_every``/``resume`` as for ``fit``.
    progress : bool

    Returns
    -------
    GraphResult

    Examples
    --------
    >>> import numpy as np
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config
    >>> A = np.random.default_rng(0).random((30, 20))
    >>> inp = factor_input(A, name="A")
    >>> net = factor_net(inp, nmf_layer(inp, 2, name="l"), factor_config(maxit=3, seed=1))
    >>> fit_engine(net, 1, None, None).l.W.shape
    (30, 2)
    """
    cfg = net.config
    t0 = time.perf_counter()
    dt = np.dtype(cfg.dtype)
    names = net.input_names
    preps, datas = [], []
    for name, inp in zip(names, net.inputs):
        preps.append(prepare_input(inp.data, name=f"input {name!r}", dtype=dt,
                                   block_nnz=cfg.block_nnz, client=client))
        datas.append(inp.data)
    for name, inp, prep in zip(names, net.inputs, preps):
        if tuple(prep.shape) != tuple(inp.shape):
            raise ValueError(f"input {name!r}: read shape {prep.shape}, expected {inp.shape}")
    bms, bounds = blocked_inputs(preps, datas, dtype=dt, chunks=cfg.chunks,
                                 block_nnz=cfg.block_nnz)
    n = net.n
    input_sq = [p.sq_norm for p in preps]
    specs = []
    for lp in net.layers:  # the solver rule per layer: a push-away target keeps CD
        solver, cdm, cdt = resolve_solver(cfg.solver, cfg.cd_maxit, cfg.cd_tol,
                                          push_away=lp.pushes_away)
        specs.append(lp.tuned(norm=cfg.norm, solver=solver, cd_maxit=cdm, cd_tol=cdt, dtype=dt,
                              seed=seed + lp.index))
    arrays = [lp.engine_arrays(n) for lp in specs]
    inits = [initial_w(lp.init_rows(n), lp.k, seed + lp.index, cfg.rng) if lp.needs_init
             else None for lp in specs]
    ssq = [lp.fixed_sq_norm(input_sq, list(net.Zs)) for lp in specs]
    single = len(net.layers) == 1
    # a graph whose only layer is fixed (an SVD of shared inputs) is solved before the sweeps
    fixed = all(lp.constant for lp in specs)
    maxit = 1 if fixed else cfg.maxit
    what = f"factor_net ({len(specs)} layer{'s' if len(specs) > 1 else ''})"
    with iteration_progress(progress, maxit, what, on_iteration) as cb:
        state = fit_graph(specs, bms, list(net.Zs), arrays, inits, bounds=bounds, ssq=ssq,
                          maxit=maxit, tol=0.0 if fixed else cfg.tol,
                          warmup=0 if single else cfg.warmup, input_sq=input_sq,
                          client=client, on_sweep=cb, **(ckpt or {}))
    if fixed:
        state.converged = all(ls.info.get("converged", True) for ls in state.layers)
    layers: dict[str, LayerResult] = {}
    for lp, ls in zip(specs, state.layers):
        perm = (np.argsort(-ls.d, kind="stable") if single and cfg.sort_model
                else np.arange(lp.k))
        d = np.asarray(ls.d, dtype=np.float64)[perm]
        W, Hm = lp.to_user(np.asarray(ls.U)[:, perm], ls.V[:, perm])
        size = float(lp.rows) * float(n)
        layers[lp.name] = LayerResult(
            name=lp.name, kind=lp.kind, W=W, d=d, H=Hm, iterations=state.sweeps,
            converged=state.converged, sse=ls.sse, mse=ls.sse / size,
            loss_history=list(state.layer_history[lp.index]), input=lp.input_label,
            embedding=lp.embedding)
    settings: dict[str, Any] = dict(
        path="graph", seed=seed, solver_used={lp.name: lp.solver for lp in specs},
        cd_maxit=cdm, cd_tol=cdt,
        chunks=[int(x) for x in np.diff(bounds)],
        n_negative={nm: p.n_negative for nm, p in zip(names, preps)},
        graph_sizes=list(state.graph_sizes[len(state.graph_sizes) - state.sweeps:]))
    info = {ls.spec.name: ls.info for ls in state.layers if ls.info}
    if info:
        settings["layers"] = info
    return GraphResult(layers=layers, loss_history=list(state.history),
                       iterations=state.sweeps, warmup=state.warmup, converged=state.converged,
                       config=cfg.to_dict(), settings=settings, plan=net.describe(),
                       input_names=names, runtime=time.perf_counter() - t0, _client=client)
