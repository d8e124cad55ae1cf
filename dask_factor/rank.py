"""Rank search: cross-validated NMF over a list of ranks or ``k="auto"``, on the single fit.

``nmf(A, [k1, k2, …])`` fits every rank (and every ``cv_seed`` repetition) concurrently, each a
speckled hold-out fit (docs/cross_validation.md, threshold ``⌊f·2⁶⁴⌋``), and returns a
:class:`RankSearchResult`; ``nmf(A, "auto")`` searches the rank (docs/cross_validation.md). Every
fit is the public single fit :func:`dask_factor.nmf_fit.fit_nmf`; this module does not import
:mod:`dask_factor.nmf` (which dispatches to it).
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._params import validate_params
from .nmf_fit import fit_nmf

__all__ = ["RankSearchResult", "rank_search", "side_by_side"]

#: fits of a rank search run at most this many at a time (each is itself parallel over blocks)
MAX_CONCURRENT_FITS = 4
#: fits submitted at once to a cluster (each holds a client thread while it drives its steps)
MAX_CLUSTER_FITS = 32


def side_by_side(fn, items, client=None) -> list:
    """``[fn(item) for item in items]``, the calls run side by side (each an independent fit).

    On a cluster (``client`` given) up to :data:`MAX_CLUSTER_FITS` calls are submitted at once,
    so the tasks of the fits interleave on the workers; on dask's threads at most
    :data:`MAX_CONCURRENT_FITS` run at a time. The results are in the order of ``items`` and do
    not depend on the schedule. The one runner of the rank search, the consensus replicates,
    the splits of a ``dclust`` level and the fits of ``cross_validate_graph``.

    Parameters
    ----------
    fn : callable
        Called with one item.
    items : iterable
    client : distributed.Client, optional

    Returns
    -------
    list
        ``fn(item)`` for every item, in order.

    Examples
    --------
    >>> side_by_side(lambda x: x * x, [1, 2, 3])
    [1, 4, 9]
    """
    items = list(items)
    if len(items) <= 1:
        return [fn(item) for item in items]
    cap = MAX_CLUSTER_FITS if client is not None else MAX_CONCURRENT_FITS
    workers = min(cap, len(items))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


@dataclass
class RankSearchResult:
    """Cross-validation over ranks (``nmf(A, [k, …])`` or ``nmf(A, "auto")``).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per fit: ``k``, ``rep``, ``cv_seed``, ``train_mse``, ``test_mse`` (the best test
        MSE of the fit), ``best_iter`` (1-based), ``total_iter``; sorted by k then rep. Under
        a count-data loss also ``train_objective``, ``test_objective`` (mean per-entry loss,
        ``NMFResult.test_objective``).
    models : dict (k, rep) → NMFResult
        The fitted (best test iteration) models.
    best_k : int
        The rank with the lowest mean test MSE (under a count-data loss: the lowest mean
        held-out loss, ``test_objective``).
    """

    table: Any
    models: dict = field(repr=False)
    best_k: int

    @property
    def summary(self):
        """Mean/se of the test MSE and mean train MSE per rank."""
        g = self.table.groupby("k")
        out = g.agg(mean_test_loss=("test_mse", "mean"), mean_train_loss=("train_mse", "mean"),
                    n_valid=("test_mse", "count"))
        sd = g["test_mse"].std(ddof=1)
        out["se_test_loss"] = sd / np.sqrt(out["n_valid"])
        return out.reset_index()[["k", "mean_test_loss", "se_test_loss", "mean_train_loss",
                                  "n_valid"]]

    @property
    def model(self):
        """The first repetition's model at ``best_k``."""
        return self.models[(self.best_k, 0)]

    def plot(self, ax=None):
        """Test MSE against rank with standard-error bars (:func:`dask_factor.plot.cv_curve`)."""
        from .plot import cv_curve

        return cv_curve(self.summary, x="k", ax=ax)


def rank_search(A, k, *, test_fraction: float = 0.0, cv_seed=None,
                cv_k_range: tuple[int, int] = (2, 50), seed: int | None = None,
                **fit_kwargs) -> RankSearchResult:
    """Fit each rank × each CV repetition and tabulate test/train MSE.

    What ``nmf(A, k)`` runs for a list of ranks or ``k="auto"``: every fit is
    :func:`dask_factor.nmf_fit.fit_nmf` with a speckled hold-out, up to
    ``MAX_CONCURRENT_FITS`` at a time (side by side on a cluster).

    Parameters
    ----------
    A : array-like of shape (m, n)
        Any input ``nmf()`` accepts.
    k : list of int or "auto"
        The ranks to fit, or ``"auto"``: exponential then golden-section search within
        ``cv_k_range`` on the mean test MSE.
    test_fraction : float, default 0
        Held-out fraction; 0 means 0.1 (RcppML: a vector k forces a hold-out).
    cv_seed : int or list of int, optional
        One repetition per seed (default: ``seed``, else 42).
    cv_k_range : (int, int), default (2, 50)
        Rank bounds of ``k="auto"``.
    seed : int, optional
        Seed of every fit's initial W (default: ``cv_seed + k`` per fit).
    **fit_kwargs
        Passed to every fit (``maxit``, ``L1``, ``client``, …; see :func:`dask_factor.nmf.nmf`).

    Returns
    -------
    RankSearchResult

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.rank import rank_search
    >>> A = datasets.load("hawaiibirds").matrix
    >>> res = rank_search(A, [2, 3], seed=1, maxit=5)
    >>> list(res.table["k"]), res.best_k in (2, 3)
    ([2, 3], True)
    """
    import pandas as pd

    p = validate_params(dict(k=k, test_fraction=test_fraction, cv_seed=cv_seed,
                             cv_k_range=cv_k_range, seed=seed, **fit_kwargs),
                        entry="rank_search")
    ks, seed, cv_seed = p["k"], p["seed"], p["cv_seed"]
    f = p["test_fraction"] or 0.1  # RcppML: a vector k forces test_fraction 0.1
    if cv_seed is None:
        seeds = [seed if seed is not None else 42]
    else:
        seeds = cv_seed if isinstance(cv_seed, list) else [cv_seed]
    client = fit_kwargs.get("client")
    models: dict = {}

    def one(kr):
        kk, rep = kr
        s = seeds[rep]
        init = seed if seed is not None else (s + kk) % (2**31 - 1)
        return kr, fit_nmf(A, kk, seed=init, test_fraction=f, cv_seed=s, **fit_kwargs)

    def run(pairs):
        pairs = [p for p in pairs if p not in models]
        models.update(side_by_side(one, pairs, client))

    # under a count-data loss the ranks are compared by the held-out loss itself
    own = fit_kwargs.get("loss", "mse") != "mse"
    crit = "test_objective" if own else "test_mse"

    def mean_test(kk):
        run([(kk, r) for r in range(len(seeds))])
        return float(np.mean([getattr(models[(kk, r)], "test_objective" if own else "test_loss")
                              for r in range(len(seeds))]))

    if ks == "auto":
        auto_search(mean_test, *p["cv_k_range"])
    else:
        run([(kk, r) for kk in ks for r in range(len(seeds))])
    rows = [dict(k=kk, rep=r, cv_seed=seeds[r], train_mse=mod.train_loss,
                 test_mse=mod.test_loss, best_iter=mod.best_iter, total_iter=mod.iterations,
                 **({"train_objective": mod.train_objective,
                     "test_objective": mod.test_objective} if own else {}))
            for (kk, r), mod in models.items()]
    table = pd.DataFrame(rows).sort_values(["k", "rep"]).reset_index(drop=True)
    means = table.groupby("k")[crit].mean()
    return RankSearchResult(table=table, models=models, best_k=int(means.idxmin()))


_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


def auto_search(score, lo_k: int, hi_k: int) -> int:
    """Exponential search 2, 4, 8, … (the max always tried), then golden section on integers.

    The exponential phase stops at the first rank whose test loss is above the previous rank's
    (RcppML additionally requires the train loss to change by < 1%; a rising test loss alone is
    the overfitting signal we use). The minimum is then bracketed by the ranks before and after
    the best one, and golden-section search narrows the bracket until it is ≤ 1 wide.

    Parameters
    ----------
    score : callable(k) -> float
        The test loss at rank ``k`` (memoised by the caller: ranks are asked for again).
    lo_k, hi_k : int
        The range searched.

    Returns
    -------
    int
        The rank with the lowest score found.

    Examples
    --------
    >>> auto_search(lambda k: (k - 13) ** 2, 2, 50)
    13
    """
    tried = []
    kk = lo_k
    while True:
        tried.append(kk)
        if len(tried) >= 2 and score(kk) > score(tried[-2]):
            break
        score(kk)
        if kk >= hi_k:
            break
        kk = min(kk * 2, hi_k)
    best_i = int(np.argmin([score(x) for x in tried]))
    a = tried[best_i - 1] if best_i > 0 else tried[0]
    b = tried[best_i + 1] if best_i + 1 < len(tried) else tried[best_i]
    while b - a > 2:
        c = int(round(b - _GOLD * (b - a)))
        d = int(round(a + _GOLD * (b - a)))
        if c == d:
            d = c + 1
        if score(c) <= score(d):
            b = d
        else:
            a = c
    return min(range(a, b + 1), key=score)


# --------------------------------------------------------------------------------------------
# deprecated: the helpers nmf() used before the parameter table and the nmf_fit module


def check_cv_args(test_fraction, cv_seed, patience, mask, mask_zeros):
    """Deprecated: the parameter table (``dask_factor._params``) checks these arguments."""
    warnings.warn("dask_factor.rank.check_cv_args is deprecated; nmf() checks its arguments "
                  "against dask_factor._params.PARAMETERS", DeprecationWarning, stacklevel=2)
    p = validate_params(dict(test_fraction=test_fraction, cv_seed=cv_seed, patience=patience,
                             mask=mask, mask_zeros=mask_zeros), entry="fit_nmf")
    return p["test_fraction"], p["cv_seed"], p["patience"]


def fit_masked_model(*args, **kwargs):
    """Deprecated: moved to :func:`dask_factor.nmf_fit.fit_masked_model`."""
    from . import nmf_fit

    warnings.warn("dask_factor.rank.fit_masked_model moved to dask_factor.nmf_fit",
                  DeprecationWarning, stacklevel=2)
    return nmf_fit.fit_masked_model(*args, **kwargs)
