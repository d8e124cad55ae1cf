"""Which loss suits the data: RcppML's score test on the mean–variance relation.

For a model ``μ = W diag(d) H`` of A, a variance function ``V(μ) = φ μ^p`` with φ = 1 predicts
``E[(y − μ)²] = μ^p``, so the statistic

    T_p = mean over the entries of ( (y − μ)² / μ^p − 1 )

is near 0 for the power that describes the data. :func:`auto_distribution` computes ``T_p`` for
p = 0, 1, 2, 3 (Gaussian with unit variance, Poisson, Gamma, inverse Gaussian) and picks the
smallest ``|T_p|`` — RcppML's ``score_test_distribution`` statistic — with two differences:

- on integer data (counts) the negative binomial statistic ``T_NB = mean(((y − μ)² − μ)/μ²)``
  above 0.1 (variance in excess of Poisson, growing like μ²) picks ``"nb"`` whichever power wins:
  RcppML consults it only when the Poisson power wins, but strongly overdispersed counts
  (Var = μ + μ²/r with μ ≫ r) have ``T_2`` nearer 0 than ``T_1`` and would be called Gamma,
  a continuous family that leaves their zeros out;
- every entry of A counts (RcppML uses the non-zeros of a sparse A and every entry of a dense
  one), as in our losses.

μ is floored at 1e-6.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

__all__ = ["auto_distribution", "DistributionChoice", "POWER_LOSS"]

#: variance power → the loss it names
POWER_LOSS = {0: "mse", 1: "kl", 2: "gamma", 3: "inverse_gaussian"}
#: T_NB above this on integer data with the Poisson power chosen: negative binomial
NB_THRESHOLD = 0.1
MIN_MU = 1e-6


@njit(nogil=True, cache=True, fastmath=False)
def _block_scores(indptr, indices, data, Wd, Ht, out):
    """Add ``[Σ r², Σ r²/μ, Σ r²/μ², Σ r²/μ³, Σ (r² − μ)/μ², count, non-integers]`` of a CSC
    block (every entry, zeros included) to ``out`` (7,)."""
    m, k = Wd.shape
    n = indptr.size - 1
    for j in range(n):
        q = indptr[j]
        end = indptr[j + 1]
        for i in range(m):
            mu = 0.0
            for f in range(k):
                mu += Wd[i, f] * Ht[j, f]
            mu = max(mu, MIN_MU)
            y = 0.0
            if q < end and indices[q] == i:
                y = np.float64(data[q])
                q += 1
                if y != np.floor(y):
                    out[6] += 1.0
            r2 = (y - mu) * (y - mu)
            out[0] += r2
            out[1] += r2 / mu
            out[2] += r2 / (mu * mu)
            out[3] += r2 / (mu * mu * mu)
            out[4] += (r2 - mu) / (mu * mu)
            out[5] += 1.0


def _scores_task(block, Wd, Ht):
    import scipy.sparse as sp

    X = sp.csc_matrix(block)
    X.sort_indices()
    out = np.zeros(7)
    _block_scores(X.indptr, X.indices, X.data, Wd, np.ascontiguousarray(Ht, np.float64), out)
    return out


@dataclass
class DistributionChoice:
    """What :func:`auto_distribution` found.

    Attributes
    ----------
    loss : str
        The chosen ``nmf(loss=...)``.
    table : pandas.DataFrame
        ``power``, ``loss``, ``T`` (the statistic) and ``abs_T`` for p = 0..3.
    T_nb : float
        The negative binomial statistic (NaN unless every entry is an integer).
    model : Any
        The model the statistics were computed with.
    """

    loss: str
    table: Any
    T_nb: float
    model: Any = field(repr=False, default=None)


def auto_distribution(A, model=None, *, k: int = 10, seed: int = 0, client=None,
                      **nmf_kwargs) -> DistributionChoice:
    """Pick a loss for A from the mean–variance relation of a model's residuals.

    Parameters
    ----------
    A : matrix-like of shape (m, n)
        Anything ``nmf`` accepts; read once, block by block.
    model : NMFResult or (W, d, H), optional
        The model of A's means; default: ``nmf(A, k, seed=seed, **nmf_kwargs)`` (least
        squares).
    k, seed, **nmf_kwargs
        For the default model.
    client : distributed.Client, optional

    Returns
    -------
    DistributionChoice

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W, H = rng.gamma(1.0, 1.0, (60, 3)), rng.gamma(1.0, 2.0, (3, 400))
    >>> A = rng.poisson(W @ H).astype(float)
    >>> auto_distribution(A, (W, np.ones(3), H)).loss
    'kl'
    """
    import dask
    import pandas as pd

    from .engine.als import compute_on
    from .engine.inputs import prepare_input
    from .nmf import nmf

    if model is None:
        model = nmf(A, k, seed=seed, client=client, **nmf_kwargs)
    if isinstance(model, (tuple, list)):
        W, d, H = (np.asarray(x, dtype=np.float64) for x in model)
        h_of = lambda a, b: H[:, a:b].T  # noqa: E731
    else:
        W, d = np.asarray(model.W, np.float64), np.asarray(model.d, np.float64)
        h_of = lambda a, b: model.H_dask[:, a:b].T  # noqa: E731
    prep = prepare_input(A, name="A", dtype=np.float64, client=client)
    if prep.shape != (W.shape[0], (H.shape[1] if isinstance(model, (tuple, list))
                                   else model.H_dask.shape[1])):
        raise ValueError(f"model: expected factors of A's shape {prep.shape}")
    tok = uuid.uuid4().hex[:8]
    Wd = dask.delayed(np.ascontiguousarray(W * d), name=f"adwd-{tok}")
    b = prep.bm.bounds
    parts = [dask.delayed(_scores_task, pure=True)(blk, Wd, h_of(int(b[i]), int(b[i + 1])),
                                                   dask_key_name=f"adist-{tok}-{i}")
             for i, blk in enumerate(prep.bm.blocks)]
    from .engine.driver import sum_partials

    s = np.asarray(compute_on(dask.delayed(sum_partials, pure=True)(
        *parts, dask_key_name=f"adist-{tok}"), client))
    count = s[5]
    T = np.array([s[p] / count - 1.0 for p in range(4)])
    table = pd.DataFrame({"power": [0, 1, 2, 3], "loss": [POWER_LOSS[p] for p in range(4)],
                          "T": T, "abs_T": np.abs(T)})
    best = int(np.argmin(np.abs(T)))
    integer = s[6] == 0
    T_nb = float(s[4] / count) if integer else float("nan")
    loss = POWER_LOSS[best]
    if integer and T_nb > NB_THRESHOLD:
        loss = "nb"
    return DistributionChoice(loss=loss, table=table, T_nb=T_nb, model=model)
