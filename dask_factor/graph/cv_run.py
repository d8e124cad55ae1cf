"""Running ``cross_validate_graph``: combinations, paired masks, concurrent fits, the tables.

* Combinations: the full grid (``itertools.product`` over the parameter lists, in the order
  given) or ``n_random`` distinct rows of it drawn with ``numpy.random.default_rng(seed)``.
* Every combination's graph is built (``layer_fn(p)`` and ``factor_net``) before any fit, with a
  parameter dict that records which keys ``layer_fn`` reads: a grid key it never reads is an
  error, as is a ``layer_fn`` that fails for some combination.
* Repetition ``r`` uses ``cv_seed = seed + r`` for **every** combination, so the combinations of
  a repetition are compared on the same held-out entries (paired). The init seed is the config's
  seed (``seed`` when the config has none) for every fit, as in RcppML.
* Scoring: the held-out MSE of the reconstruction of the graph's input. For a one-layer graph
  that is the layer's test loss. For a deep graph, the input is reconstructed by the layer that
  reads it (``W₁ diag(d₁) H₁``); the joint engine never feeds a downstream layer back into an
  upstream one, so that layer's masked fit is exactly what the graph's input reconstruction is,
  and it is what is fitted and scored (its downstream layers cannot change the score).
* The fits are independent and are submitted side by side from a thread pool (each fit is itself
  parallel over its blocks; on a cluster they share the workers).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..rank import side_by_side
from .config import FactorNetConfig


class _ReadTracker(dict):
    """A parameter dict that records the keys ``layer_fn`` reads."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def combinations(params: dict, strategy: str, n_random: int, seed: int) -> list[dict]:
    keys = list(params)
    grid = [dict(zip(keys, vals)) for vals in itertools.product(*(list(params[k])
                                                                  for k in keys))]
    if strategy == "random" and n_random < len(grid):
        idx = np.sort(np.random.default_rng(seed).choice(len(grid), n_random, replace=False))
        grid = [grid[i] for i in idx]
    return grid


def _plain_value(v):
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class CVResult:
    """What ``cross_validate_graph`` returns.

    Attributes
    ----------
    results : pandas.DataFrame
        One row per (combination, rep): the parameters, ``combo``, ``rep``, ``cv_seed``,
        ``test_loss``, ``train_loss`` (MSE of the best test iteration), ``test_objective``
        (a layer under a count-data loss: its mean held-out loss in its own units, the score
        its fit selected by; NaN under least squares), ``best_iter``, ``iterations``,
        ``converged``; NaN losses for a fit that failed. Combinations are compared by the
        held-out MSE, the one unit every loss shares (``params={"loss": [...]}`` compares
        losses).
    summary : pandas.DataFrame
        Per combination: the parameters, ``mean_test_loss``, ``se_test_loss`` (sd/√n_valid, NaN
        when n_valid < 2), ``mean_train_loss``, ``n_valid``; sorted by ``mean_test_loss``.
    best_params : dict
        The first row of ``summary``.
    """

    results: Any
    summary: Any
    best_params: dict
    config: FactorNetConfig
    params: dict
    strategy: str
    reps: int
    fits: dict = field(default_factory=dict, repr=False)

    def plot(self, x: str = "k", by: str | None = None, ax=None):
        """Mean test loss against ``x`` with ±1 se bars, one line per value of ``by``
        (:func:`dask_factor.plot.cv_curve`; ``by`` defaults to the first other parameter)."""
        from ..plot import cv_curve

        if by is None:
            others = [p for p in self.params if p != x]
            by = others[0] if others else None
        return cv_curve(self.summary, x=x, by=by, ax=ax)


def _build(ins, layer_fn, combos, params, config):
    from .compile import factor_net

    nodes = []
    read: set = set()
    for p in combos:
        tp = _ReadTracker(p)
        try:
            node = layer_fn(tp)
        except KeyError as exc:
            raise ValueError(f"cross_validate_graph: layer_fn reads parameter {exc} which "
                             f"'params' does not define (params: {list(params)})") from exc
        except Exception as exc:
            raise ValueError(f"cross_validate_graph: layer_fn failed for parameters {p}: "
                             f"{type(exc).__name__}: {exc}") from exc
        read |= tp.read
        nodes.append(node)
    unused = [k for k in params if k not in read]
    if unused:
        raise ValueError(f"cross_validate_graph: params {unused} name argument(s) layer_fn "
                         f"does not take (it never reads them); it read {sorted(read)}")
    nets = []
    for p, node in zip(combos, nodes):
        net = factor_net(ins, node, config)
        if not net.nmf_path:
            lp = net.layers[0]
            if not lp.nmf_compatible:
                raise NotImplementedError(
                    f"cross_validate_graph: the graph for {p} has no plain NMF layer reading "
                    f"its input first ({lp.name!r}); masked fits of shared/svd/regularised input "
                    f"layers are not implemented")
        nets.append(net)
    return nets


def run_cv(ins, layer_fn, params, config, *, reps, strategy, n_random, seed, verbose, client):
    import pandas as pd

    from .compile import factor_net
    from .fit import fit, fit_nmf_path

    f = float(config.test_fraction) or 0.1
    init_seed = config.seed if config.seed is not None else seed
    combos = combinations(params, strategy, n_random, seed)
    base = _build(ins, layer_fn, combos, params, config)  # every error before any fit

    def one(job):
        ci, rep = job
        cfg = dataclasses.replace(config, test_fraction=f, cv_seed=int(seed + rep),
                                  seed=int(init_seed), verbose=False)
        try:
            if base[ci].nmf_path:
                res = fit(factor_net(ins, layer_fn(dict(combos[ci])), cfg), client=client)
            else:
                net = factor_net(ins, layer_fn(dict(combos[ci])), cfg)
                res = fit_nmf_path(net, int(init_seed), client, None, layer=net.layers[0])
            return job, res, None
        except Exception as exc:  # a failed fit becomes a NaN row (RcppML does the same)
            return job, None, exc

    jobs = [(ci, r) for r in range(reps) for ci in range(len(combos))]
    done = side_by_side(one, jobs, client)
    rows, fits = [], {}
    for (ci, rep), res, exc in done:
        row = {k: _plain_value(v) for k, v in combos[ci].items()}
        row.update(combo=ci + 1, rep=rep + 1, cv_seed=seed + rep)
        if res is None:
            if verbose:
                warnings.warn(f"cross_validate_graph: fit failed for {combos[ci]} rep {rep + 1}: "
                              f"{exc}", RuntimeWarning, stacklevel=3)
            row.update(test_loss=math.nan, train_loss=math.nan, test_objective=math.nan,
                       best_iter=0, iterations=0,
                       converged=False)
        else:
            st = res.settings
            row.update(test_loss=float(st["test_loss"]), train_loss=float(st["train_loss"]),
                       best_iter=int(st["best_iter"]), iterations=int(res.iterations),
                       converged=bool(res.converged),
                       test_objective=float(st.get("test_objective", math.nan)))
            fits[(ci + 1, rep + 1)] = res
        rows.append(row)
    results = pd.DataFrame(rows).sort_values(["combo", "rep"]).reset_index(drop=True)
    keys = list(params)
    g = results.groupby("combo", sort=True)
    summary = g[keys].first()
    summary["mean_test_loss"] = g["test_loss"].mean()
    n_valid = g["test_loss"].count()
    sd = g["test_loss"].std(ddof=1)
    summary["se_test_loss"] = np.where(n_valid >= 2, sd / np.sqrt(n_valid.clip(lower=1)), np.nan)
    summary["mean_train_loss"] = g["train_loss"].mean()
    summary["n_valid"] = n_valid
    summary = (summary.sort_values("mean_test_loss", kind="stable", na_position="last")
               .reset_index(drop=True))
    best = {k: _plain_value(summary.iloc[0][k]) for k in keys}
    for k in keys:  # keep integers integral in best_params
        vals = [c[k] for c in combos]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            best[k] = int(best[k])
    return CVResult(results=results, summary=summary, best_params=best, config=config,
                    params=params, strategy=strategy, reps=reps, fits=fits)
