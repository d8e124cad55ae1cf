"""Simulated single-cell-like count matrices with planted non-negative factors.

Model (genes i, cells j, programs f)::

    W[i, f]  = base_i · (0.1 + active_if · Gamma(1, 10)),  columns normalised to sum 1
               base_i ~ LogNormal(0, 1.2)  (gene expression level), active_if ~ Bernoulli(0.15)
    h̃[:, j]  ~ Gamma(0.3, 1) per program, normalised to sum 1    (sparse-ish composition)
    L_j      ~ LogNormal(0, 0.5)                                   (library size)
    H[f, j]  = s · L_j · h̃[f, j]        so that  E[A] = W H  exactly
    A[i, j]  ~ NegativeBinomial(mean (W H)[i, j], size r_i),  1/r_i ~ LogNormal(log 0.3, 0.5)

The scale ``s`` is found by bisection so that the expected density over a fixed pilot (256
cells, at most 2048 genes, drawn from the seed) equals ``density``.  Counts are drawn by
inverting the NB CDF with one uniform per entry (zero for most entries after one comparison), in
a numba kernel.

Determinism: W, r and s come from ``seed`` alone; cells are generated in fixed groups of
:data:`GROUP_COLS` columns, group ``g`` from ``SeedSequence(seed, spawn_key=(1, g))``, whatever
the block size of the output.  So a seed gives the same matrix for every ``block_cols``, on every
scheduler.  Each block task holds only the model parameters (a few numbers), never data.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numba import njit

from ..io.blocks import array_from_reader
from ..io.chunking import default_block_nnz, min_blocks
from ..io.registry import write_matrix

#: columns per random-number group (fixed: changing it changes every simulated matrix)
GROUP_COLS = 256
_SUB = 64  # columns per kernel call inside a group (fixed for the same reason)
_PILOT = 256
_PILOT_GENES = 2048


@njit(nogil=True, cache=True, fastmath=False)
def _nb_counts(W, r, H, U):
    """NB counts by inverse CDF: mean (W H)[i, j], size r[i], uniform U[j, i].

    Returns CSC ``indptr`` (n + 1,), ``indices`` int32, ``data`` float64 of the m × n counts.
    """
    m, k = W.shape
    n = H.shape[1]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(m * n, dtype=np.int32)
    data = np.empty(m * n, dtype=np.float64)
    nz = 0
    for j in range(n):
        for i in range(m):
            mu = 0.0
            for f in range(k):
                mu += W[i, f] * H[f, j]
            if mu <= 0.0:
                continue
            ri = r[i]
            q = mu / (ri + mu)
            p0 = np.exp(ri * np.log1p(-q))
            u = U[j, i]
            if u < p0:
                continue
            if p0 <= 0.0:  # beyond double range: the mean is a fine stand-in
                c = np.floor(mu + 0.5)
            else:
                c = 0.0
                pmf = p0
                cdf = p0
                while u >= cdf and c < 1e7:
                    pmf *= (c + ri) / (c + 1.0) * q
                    c += 1.0
                    cdf += pmf
                    if pmf <= 0.0:
                        break
            if c > 0.0:
                indices[nz] = i
                data[nz] = c
                nz += 1
        indptr[j + 1] = nz
    return indptr, indices[:nz].copy(), data[:nz].copy()


@njit(nogil=True, cache=True, fastmath=False)
def _expected_density(M, r, s):
    """Mean over entries of P(count > 0) when the means are ``s · M`` (M genes × cells)."""
    g, n = M.shape
    acc = 0.0
    for i in range(g):
        ri = r[i]
        for j in range(n):
            mu = s * M[i, j]
            acc += 1.0 - np.exp(ri * np.log1p(-mu / (ri + mu)))
    return acc / (g * n)


@njit(nogil=True, cache=True, fastmath=False)
def _means(W, H):
    """W H with a fixed summation order (no BLAS: the same bits on every machine)."""
    m, k = W.shape
    n = H.shape[1]
    out = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for f in range(k):
                acc += W[i, f] * H[f, j]
            out[i, j] = acc
    return out


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@functools.lru_cache(maxsize=8)
def _genes(seed: int, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """W (m × k, columns sum to 1) and the NB sizes r (m,), from the seed alone."""
    rng = _rng(seed, 0)
    base = rng.lognormal(0.0, 1.2, size=m)
    active = rng.random((m, k)) < 0.15
    load = rng.gamma(1.0, 10.0, size=(m, k))
    W = base[:, None] * (0.1 + active * load)
    W /= W.sum(axis=0, keepdims=True)
    r = 1.0 / rng.lognormal(np.log(0.3), 0.5, size=m)
    return np.ascontiguousarray(W), np.minimum(r, 50.0)


def _cells(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """Composition × library size (k × n) before the global scale."""
    h = rng.gamma(0.3, 1.0, size=(k, n)) + 1e-12
    h /= h.sum(axis=0, keepdims=True)
    return h * rng.lognormal(0.0, 0.5, size=n)[None, :]


@functools.lru_cache(maxsize=8)
def _scale(seed: int, m: int, k: int, density: float) -> float:
    """Global library scale s giving the requested expected density (bisection in log s).

    The expectation is taken over a fixed pilot: :data:`_PILOT` cells and at most
    :data:`_PILOT_GENES` genes drawn from the seed (an unbiased estimate of the mean over genes).
    """
    W, r = _genes(seed, m, k)
    rng = _rng(seed, 2)
    H = _cells(rng, k, _PILOT)
    genes = np.sort(rng.choice(m, size=min(m, _PILOT_GENES), replace=False))
    M = _means(np.ascontiguousarray(W[genes]), H)
    rg = np.ascontiguousarray(r[genes])
    lo, hi = -12.0, 30.0
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        if _expected_density(M, rg, float(np.exp(mid) * m)) < density:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)) * m)


@dataclass(frozen=True)
class CountModel:
    """Parameters of a simulated matrix; calling it generates columns ``start:stop``.

    Everything else (W, r, s) is derived from these fields, so the object is tiny and is
    what each block's task carries.

    Examples
    --------
    >>> CountModel(100, 1000, 3, 0.06, seed=0)(0, 10).shape
    (100, 10)
    """

    n_features: int
    n_samples: int
    k: int
    density: float
    seed: int
    dtype: str = "float32"

    @property
    def scale(self) -> float:
        return _scale(self.seed, self.n_features, self.k, self.density)

    def _group(self, g: int):
        """(H (k × cols), counts CSC m × cols) of sample group ``g``."""
        W, r = _genes(self.seed, self.n_features, self.k)
        cols = min(GROUP_COLS, self.n_samples - g * GROUP_COLS)
        rng = _rng(self.seed, 1, g)
        H = _cells(rng, self.k, cols) * self.scale
        parts = []
        for a in range(0, cols, _SUB):
            b = min(a + _SUB, cols)
            U = rng.random((b - a, self.n_features))
            ip, ind, dat = _nb_counts(W, r, np.ascontiguousarray(H[:, a:b]), U)
            parts.append(sp.csc_matrix((dat.astype(self.dtype), ind, ip),
                                       shape=(self.n_features, b - a)))
        return H, sp.hstack(parts, format="csc")

    def __call__(self, start: int, stop: int) -> sp.csc_matrix:
        return self._slice(start, stop, factors=False)

    def factors_h(self, start: int, stop: int) -> np.ndarray:
        """Planted H[:, start:stop] (k × cols)."""
        return self._slice(start, stop, factors=True)

    def _slice(self, start: int, stop: int, factors: bool):
        out = []
        for g in range(start // GROUP_COLS, -(-stop // GROUP_COLS)):
            g0 = g * GROUP_COLS
            a, b = max(start, g0) - g0, min(stop, g0 + GROUP_COLS) - g0
            if factors:
                H = _cells(_rng(self.seed, 1, g), self.k,
                           min(GROUP_COLS, self.n_samples - g0)) * self.scale
                out.append(H[:, a:b])
            else:
                out.append(self._group(g)[1][:, a:b])
        if factors:
            return np.ascontiguousarray(np.concatenate(out, axis=1)) if out else \
                np.zeros((self.k, 0))
        if not out:
            return sp.csc_matrix((self.n_features, 0), dtype=self.dtype)
        blk = sp.hstack(out, format="csc") if len(out) > 1 else out[0]
        return sp.csc_matrix(blk, dtype=self.dtype)


def _check(n_samples, n_features, k, density, seed, block_cols, dtype) -> None:
    for name, v in (("n_samples", n_samples), ("n_features", n_features), ("k", k)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if k > n_features:
        raise ValueError(f"k={k} must not exceed n_features={n_features}")
    if not 0.0 < float(density) < 1.0:
        raise ValueError(f"density must be in (0, 1), got {density!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if block_cols is not None and (not isinstance(block_cols, int | np.integer) or block_cols < 1):
        raise ValueError(f"block_cols must be a positive integer, got {block_cols!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def simulate_counts(
    n_samples: int,
    n_features: int,
    k: int,
    density: float = 0.06,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    format: str | None = None,
    block_cols: int | None = None,
    *,
    dtype="float32",
    return_factors: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    **write_opts,
):
    """Simulate an NB count matrix (features × samples) from planted non-negative factors.

    Parameters
    ----------
    n_samples : int
        Columns n (cells).
    n_features : int
        Rows m (genes).
    k : int
        Number of planted programs.
    density : float
        Wanted fraction of non-zero entries (the expected density is matched exactly on a
        pilot; the realised one is within a few percent of it).
    seed : int
        Same seed ⇒ the same matrix, whatever ``block_cols`` or scheduler.
    path : path-like, optional
        Write the matrix there (zarr, ``.spz`` or ``.h5ad``, streamed block by block) instead of
        returning a lazy dask array.
    format : str, optional
        Output format (default: from the suffix of ``path``).
    block_cols : int, optional
        Columns per block (default: the expected non-zeros of
        :func:`~dask_factor.io.default_block_nnz`, 8,000,000 at 20,000 genes, a
        multiple of 256).  Changes only the chunking, never the values.
    dtype : {"float32", "float64"}
        Value dtype (counts are exact in both).
    return_factors : bool
        Also return the planted factors with ``E[A] = W @ H``.
    overwrite, progress, **write_opts
        Passed to :func:`~dask_factor.io.write_matrix` when ``path`` is given.

    Returns
    -------
    A : dask.array.Array of shape (n_features, n_samples), or the path written
        CSC column blocks (``scipy.sparse.csc_matrix``).
    W : ndarray of shape (n_features, k), only with ``return_factors``
        Programs; columns sum to 1.
    H : dask.array.Array of shape (k, n_samples), only with ``return_factors``
        Per-cell program activity times library size, chunked like A.

    Examples
    --------
    >>> A = simulate_counts(2000, 500, k=5, seed=1)
    >>> A.shape
    (500, 2000)
    >>> 0.04 < A.compute().nnz / (500 * 2000) < 0.08
    True
    """
    _check(n_samples, n_features, k, density, seed, block_cols, dtype)
    model = CountModel(int(n_features), int(n_samples), int(k), float(density), int(seed),
                       np.dtype(dtype).name)
    if block_cols is None:
        per_col = max(density * n_features, 1.0)
        block_cols = max(GROUP_COLS, int(default_block_nnz(n_features) / per_col) // GROUP_COLS
                         * GROUP_COLS)
        # at least the engine's minimum of blocks (a fit would otherwise re-cut a store's
        # blocks through a rechunk), in whole random-number groups
        fewest = max(1, n_samples // (min_blocks(n_samples) * GROUP_COLS)) * GROUP_COLS
        block_cols = max(GROUP_COLS, min(block_cols, fewest))
    bounds = np.unique(np.append(np.arange(0, n_samples, block_cols), n_samples)).astype(np.int64)
    token = repr(model)
    model.scale  # noqa: B018 -- calibrate once on the client, not in every task
    A = array_from_reader(model, (n_features, n_samples), bounds, np.dtype(dtype), True, token,
                          "simulate")
    out = A
    if path is not None:
        out = write_matrix(A, Path(path), format, overwrite=overwrite, progress=progress,
                           **write_opts)
    if not return_factors:
        return out
    W, _ = _genes(model.seed, model.n_features, model.k)
    H = array_from_reader(model.factors_h, (k, n_samples), bounds, np.float64, False, token,
                          "simulate-h")
    return out, W.copy(), H
