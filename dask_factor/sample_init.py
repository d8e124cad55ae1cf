"""A starting W for a large fit from an NMF of a sample of its columns (fewer passes over A).

A fit from a random W spends its first iterations finding the programs, each one a full pass over
A.  The programs of a few thousand cells are, for data with many cells per program, close to
those of all of them: :func:`sample_w_init` fits NMF to evenly spaced column blocks of A held in
memory and returns its W, to pass as ``nmf(A, k, w_init=...)``.  The full fit is still the exact
one-pass ALS, started elsewhere; ``benchmarks/bench_atlas.py --sample-init`` measures the
passes it saves.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import scipy.sparse as sp

from ._params import validate_params
from .engine.inputs import open_lazy


def sample_blocks(bounds: np.ndarray, columns: int) -> list[int]:
    """Evenly spaced column blocks (``bounds``: block starts and n) holding at least
    ``columns`` columns (all blocks when they hold fewer).

    Examples
    --------
    >>> sample_blocks(np.array([0, 10, 20, 30, 40, 50]), 25)
    [0, 2, 4]
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    widths = np.diff(bounds)
    n_blocks = widths.size
    take = 1
    while take < n_blocks:
        idx = np.unique(np.round(np.linspace(0, n_blocks - 1, take)).astype(int))
        if widths[idx].sum() >= columns:
            return idx.tolist()
        take += 1
    return list(range(n_blocks))


def sample_w_init(A: Any, k: int, *, fraction: float = 0.05, min_columns: int = 2000,
                  seed: int | None = None, client=None, **nmf_kwargs) -> np.ndarray:
    """W of an NMF fitted to evenly spaced column blocks of ``A`` (a start for the full fit).

    Parameters
    ----------
    A : array-like or path of shape (m, n)
        Anything :func:`dask_factor.nmf` takes; only the sampled blocks are read (in tasks).
    k : int
        Rank.
    fraction : float in (0, 1]
        Share of the columns to sample (at least ``min_columns``), in whole stored blocks.
    min_columns : int
    seed : int, optional
        Seed of the sample's fit (the blocks are chosen by position, not at random).
    client : distributed.Client, optional
        Where the blocks are read and the sample fitted.
    **nmf_kwargs
        Passed to the sample's :func:`~dask_factor.nmf` (``tol``, ``maxit``, ``L1``, ...).

    Returns
    -------
    ndarray of shape (m, k)
        Non-negative, columns normalised as ``nmf`` returns them; use as ``w_init``.

    Examples
    --------
    >>> from dask_factor import nmf
    >>> from dask_factor.datasets import simulate_counts
    >>> A = simulate_counts(20_000, 300, 5, seed=1, block_cols=1024)
    >>> W0 = sample_w_init(A, 5, seed=1)
    >>> W0.shape
    (300, 5)
    >>> model = nmf(A, 5, seed=1, w_init=W0, maxit=5, tol=0)
    """
    from .nmf import nmf

    validate_params({"k": k, "seed": seed, "fraction": fraction, "min_columns": min_columns},
                    entry="sample_w_init")
    x = open_lazy(A, "A")
    if not hasattr(x, "blocks"):  # in memory: cut like the engine would (views, no copy)
        import dask.array as da

        from .engine.blocks import default_bounds

        X = sp.csc_matrix(x) if sp.issparse(x) else np.asarray(x)
        widths = tuple(int(w) for w in np.diff(default_bounds(X)))
        x = da.from_array(X, chunks=(X.shape[0], widths), asarray=False)
    n = int(x.shape[1])
    bounds = np.concatenate([[0], np.cumsum(x.chunks[1])]).astype(np.int64)
    idx = sample_blocks(bounds, max(int(min_columns), int(np.ceil(fraction * n))))
    parts = [x.blocks[:, c] for c in idx]
    got = client.gather(client.compute(parts)) if client is not None else dask.compute(*parts)
    if all(sp.issparse(p) for p in got):
        S = sp.hstack([sp.csc_matrix(p) for p in got], format="csc")
    else:
        S = np.hstack([p.toarray() if sp.issparse(p) else np.asarray(p) for p in got])
    model = nmf(S, k, seed=seed, client=client, **nmf_kwargs)
    return np.asarray(model.W, dtype=np.float64)
