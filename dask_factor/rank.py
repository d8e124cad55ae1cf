"""Cross-validated NMF: masked fits behind ``nmf()``, multi-rank tables and ``k="auto"``.

``nmf(A, k, test_fraction=f)`` holds out a speckled set of entries (a hash of the seed and the
entry's position, SPEC-nmf.md §5.1 with the Decisions' threshold ``⌊f·2⁶⁴⌋``) and fits on the rest;
``nmf(A, [k1, k2, …])`` fits every rank (and every ``cv_seed`` repetition) concurrently and returns
a :class:`RankSearchResult`; ``nmf(A, "auto")`` searches the rank (SPEC-nmf.md §1.13).
"""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validate as V
from .engine.masked import MaskSpec, fit_masked

__all__ = ["RankSearchResult", "rank_search", "check_cv_args", "fit_masked_model",
           "plot_test_loss"]

#: fits of a rank search run at most this many at a time (each is itself parallel over blocks)
MAX_CONCURRENT_FITS = 4


def check_test_fraction(test_fraction, *, allow_zero: bool = True) -> float:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    f = float(test_fraction)
    if not (0.0 < f < 1.0 or (allow_zero and f == 0.0)):
        raise ValueError(f"test_fraction: expected a number in (0, 1) (0 = no hold-out), got "
                         f"{test_fraction!r}")
    return f


def _check_seed(name, s):
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {s!r}")
    return int(s)


def check_cv_args(test_fraction, cv_seed, patience, mask, mask_zeros):
    """Validate the CV/mask arguments of a single ``nmf()`` fit (before any work)."""
    f = check_test_fraction(test_fraction)
    if cv_seed is not None:
        if isinstance(cv_seed, (list, tuple, np.ndarray)):
            raise TypeError("cv_seed: a list of seeds needs a list of ranks k; got an integer k")
        cv_seed = _check_seed("cv_seed", cv_seed)
    patience = V.positive_int("patience", patience)
    if mask is not None:
        V.choice("mask", mask, ("zeros", "NA"))
    if not isinstance(mask_zeros, (bool, np.bool_)):
        raise TypeError(f"mask_zeros: expected a bool, got {mask_zeros!r}")
    if mask_zeros and f == 0:
        raise ValueError("mask_zeros: only meaningful with test_fraction > 0")
    return f, cv_seed, patience


def fit_masked_model(prep, W0, cfg, *, m, n, seed, cv_seed, test_fraction, patience, mask,
                     mask_zeros, sort_model, client, on_iteration, settings_extra, ckpt=None):
    """Run the masked engine for ``nmf()`` and wrap the result as an ``NMFResult``."""
    from .nmf import NMFResult, _h_dask

    ms = MaskSpec(test_fraction=float(test_fraction),
                  cv_seed=int(cv_seed if cv_seed is not None else seed),
                  mask_zeros=bool(mask_zeros), observed_only=(mask == "zeros"))
    st = fit_masked(prep.bm, W0, cfg, ms, patience=patience, client=client,
                    on_iteration=on_iteration, **(ckpt or {}))
    k = cfg.k
    perm = np.argsort(-st.d, kind="stable") if sort_model else np.arange(k)
    score = st.test_history if test_fraction > 0 else st.train_history
    tols = [abs(a - b) / (abs(a) + 1e-15) for a, b in zip(score[:-1], score[1:])]
    settings = dict(k=k, tol=cfg.tol, maxit=cfg.maxit, L1=cfg.L1, L2=cfg.L2,
                    upper_bound=cfg.upper_bound, nonneg=cfg.nonneg, seed=int(seed),
                    norm=cfg.norm, solver_used="cd", cd_maxit=cfg.cd_maxit, cd_tol=cfg.cd_tol,
                    sort_model=sort_model, dtype=np.dtype(cfg.dtype).name,
                    chunks=[int(x) for x in np.diff(prep.bm.bounds)], target_lambda=0.0,
                    n_negative=prep.n_negative, test_fraction=float(test_fraction),
                    cv_seed=ms.cv_seed, patience=patience, mask=mask,
                    mask_zeros=bool(mask_zeros), n_test=st.n_test, n_train=st.n_train,
                    **settings_extra)
    train = st.train_sse / max(st.n_train, 1.0)
    test = st.test_sse / st.n_test if st.n_test > 0 else math.nan
    return NMFResult(
        W=np.ascontiguousarray(st.W[:, perm]), d=np.asarray(st.d)[perm].copy(),
        H_dask=_h_dask(st, prep.bm.bounds, perm, cfg.dtype), iterations=st.iterations,
        converged=st.converged, sse=st.train_sse, mse=train,
        loss_history=list(st.train_history), tol_history=tols, settings=settings,
        runtime=st.seconds, graph_sizes=st.graph_sizes, test_loss=test, train_loss=train,
        best_iter=st.best_iter, test_loss_history=list(st.test_history),
        train_loss_history=list(st.train_history), _client=client)


@dataclass
class RankSearchResult:
    """Cross-validation over ranks (``nmf(A, [k, …])`` or ``nmf(A, "auto")``).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per fit: ``k``, ``rep``, ``cv_seed``, ``train_mse``, ``test_mse`` (the best test
        MSE of the fit), ``best_iter`` (1-based), ``total_iter``; sorted by k then rep.
    models : dict (k, rep) → NMFResult
        The fitted (best test iteration) models.
    best_k : int
        The rank with the lowest mean test MSE.
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
        """Test MSE against rank with standard-error bars (matplotlib)."""
        return plot_test_loss(self.summary, x="k", ax=ax)


def plot_test_loss(summary, x: str = "k", *, by: str | None = None, ax=None):
    """Draw mean test loss against ``x`` with ±1 se error bars, one line per value of ``by``.

    ``summary`` is a DataFrame with ``mean_test_loss`` and ``se_test_loss`` columns (from
    :class:`RankSearchResult` or ``cross_validate_graph``). Needs matplotlib (imported here).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    groups = [(None, summary)] if by is None else list(summary.groupby(by))
    for key, df in groups:
        df = df.sort_values(x)
        se = df["se_test_loss"].fillna(0.0)
        ax.errorbar(df[x], df["mean_test_loss"], yerr=se, marker="o", capsize=3,
                    label=None if key is None else f"{by}={key}")
    ax.set_xlabel(x)
    ax.set_ylabel("test MSE")
    if by is not None:
        ax.legend()
    return ax


def _check_ranks(k, cv_k_range):
    if isinstance(k, str):
        if k != "auto":
            raise TypeError(f"k: expected an integer, a list of integers or 'auto', got {k!r}")
        lo, hi = (V.positive_int("cv_k_range", int(x)) for x in cv_k_range)
        if lo > hi:
            raise ValueError(f"cv_k_range: expected (min, max) with min <= max, got {cv_k_range}")
        return "auto", (lo, hi)
    ks = list(np.asarray(k).ravel().tolist())
    if not ks:
        raise ValueError("k: expected a non-empty list of ranks")
    return [V.positive_int("k", x) for x in ks], None


def rank_search(A, k, kwargs: dict, *, test_fraction=0.0, cv_seed=None, cv_k_range=(2, 50)):
    """Fit each rank × each CV repetition and tabulate test/train MSE (see :func:`nmf`)."""
    import pandas as pd

    from .nmf import nmf

    ks, bounds = _check_ranks(k, cv_k_range)
    f = check_test_fraction(test_fraction)
    if f == 0:
        f = 0.1  # RcppML: a vector k forces test_fraction 0.1
    seed = kwargs.pop("seed")
    if seed is not None:
        seed = _check_seed("seed", seed)
    if cv_seed is None:
        seeds = [seed if seed is not None else 42]
    elif isinstance(cv_seed, (list, tuple, np.ndarray)):
        seeds = [_check_seed("cv_seed", s) for s in cv_seed]
        if not seeds:
            raise ValueError("cv_seed: expected a non-empty list of seeds")
    else:
        seeds = [_check_seed("cv_seed", cv_seed)]
    V.positive_int("patience", kwargs["patience"])
    client = kwargs.get("client")
    models: dict = {}

    def one(kr):
        kk, rep = kr
        s = seeds[rep]
        init = seed if seed is not None else (s + kk) % (2**31 - 1)
        return kr, nmf(A, kk, seed=init, test_fraction=f, cv_seed=s, **kwargs)

    def run(pairs):
        pairs = [p for p in pairs if p not in models]
        if not pairs:
            return
        if client is None and len(pairs) > 1:
            with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT_FITS, len(pairs))) as pool:
                done = list(pool.map(one, pairs))
        elif len(pairs) > 1:  # a cluster: submit the fits side by side
            with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
                done = list(pool.map(one, pairs))
        else:
            done = [one(pairs[0])]
        models.update(done)

    def mean_test(kk):
        run([(kk, r) for r in range(len(seeds))])
        return float(np.mean([models[(kk, r)].test_loss for r in range(len(seeds))]))

    if ks == "auto":
        _auto_search(mean_test, *bounds)
    else:
        run([(kk, r) for kk in ks for r in range(len(seeds))])
    rows = [dict(k=kk, rep=r, cv_seed=seeds[r], train_mse=mod.train_loss,
                 test_mse=mod.test_loss, best_iter=mod.best_iter, total_iter=mod.iterations)
            for (kk, r), mod in models.items()]
    table = pd.DataFrame(rows).sort_values(["k", "rep"]).reset_index(drop=True)
    means = table.groupby("k")["test_mse"].mean()
    return RankSearchResult(table=table, models=models, best_k=int(means.idxmin()))


_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


def _auto_search(score, lo_k: int, hi_k: int) -> int:
    """Exponential search 2, 4, 8, … (the max always tried), then golden section on integers.

    The exponential phase stops at the first rank whose test loss is above the previous rank's
    (RcppML additionally requires the train loss to change by < 1%; a rising test loss alone is
    the overfitting signal we use). The minimum is then bracketed by the ranks before and after
    the best one, and golden-section search narrows the bracket until it is ≤ 1 wide.
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
