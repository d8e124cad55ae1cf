"""Shared test helpers: factor comparison and independent NumPy/SciPy references.

The references here never call dask_factor's kernels: they are plain NumPy/SciPy replicas of the
algorithm in docs/concepts.md (H update first, then W, scale pulled into ``d``), so a test can
compare the engine against them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment, lsq_linear, nnls

EPS = 1e-15


# ------------------------------------------------------------------------------------------
# comparing factorizations


def factors_of(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W, d, H)`` in float64 from an NMFResult-like object or a ``(W, d, H)`` tuple."""
    if isinstance(x, tuple | list):
        W, d, H = x
    else:
        W, d, H = x.W, x.d, x.H
    return (np.asarray(W, dtype=np.float64), np.asarray(d, dtype=np.float64),
            np.asarray(H, dtype=np.float64))


def normalise_factors(W, d, H):
    """Put each factor on a common scale: W columns and H rows with unit L1 norm, the scale in d.

    A factor that is identically zero keeps a zero column/row and ``d = 0``.
    """
    W, d, H = (np.array(a, dtype=np.float64, copy=True) for a in (W, d, H))
    sw = np.abs(W).sum(axis=0)
    sh = np.abs(H).sum(axis=1)
    scale = d * sw * sh
    sw[sw == 0] = 1.0
    sh[sh == 0] = 1.0
    return W / sw, scale, H / sh[:, None]


def match_factors(Wa, Ha, Wb, Hb) -> np.ndarray:
    """Permutation ``perm`` so that factor ``perm[i]`` of b best matches factor ``i`` of a.

    Factors are matched on the cosine similarity of their W columns and H rows (Hungarian
    assignment), so ties in ``d`` cannot scramble the comparison.
    """
    def unit(X):
        n = np.linalg.norm(X, axis=0)
        n[n == 0] = 1.0
        return X / n

    sim = unit(Wa).T @ unit(Wb) + unit(Ha.T).T @ unit(Hb.T)
    _, perm = linear_sum_assignment(-sim)
    return perm


def max_rel_diff(a, b) -> float:
    """``max|a − b| / max|b|`` (0 when both are zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.abs(b).max() if b.size else 0.0
    num = np.abs(a - b).max() if b.size else 0.0
    if den == 0.0:
        return float(num)
    return float(num / den)


def factor_differences(a, b, *, match: bool = True) -> dict[str, float]:
    """Max relative differences of W, d, H after normalising scale and (optionally) order."""
    Wa, da, Ha = normalise_factors(*factors_of(a))
    Wb, db, Hb = normalise_factors(*factors_of(b))
    if Wa.shape != Wb.shape or Ha.shape != Hb.shape:
        raise AssertionError(f"shapes differ: W {Wa.shape} vs {Wb.shape}, H {Ha.shape} vs "
                             f"{Hb.shape}")
    if match:
        perm = match_factors(Wa, Ha, Wb, Hb)
        Wb, db, Hb = Wb[:, perm], db[perm], Hb[perm]
    return {"W": max_rel_diff(Wa, Wb), "d": max_rel_diff(da, db), "H": max_rel_diff(Ha, Hb)}


def assert_factors_close(a, b, rtol: float = 1e-6, *, match: bool = True) -> None:
    """Assert two factorizations ``W diag(d) H`` agree up to factor order and scale.

    Each factor is rescaled to unit-L1 W column and H row (its scale moved into ``d``); factors of
    ``b`` are matched to those of ``a`` by similarity (``match=False`` keeps the given order); then
    ``max|x_a − x_b| / max|x_b| <= rtol`` must hold for W, d and H separately.

    Parameters
    ----------
    a, b : NMFResult or tuple (W, d, H)
        W of shape (m, k), d of shape (k,), H of shape (k, n).
    rtol : float
    """
    diffs = factor_differences(a, b, match=match)
    bad = {name: v for name, v in diffs.items() if not v <= rtol}
    assert not bad, f"factors differ beyond rtol={rtol:g}: {diffs}"


# ------------------------------------------------------------------------------------------
# independent references


def dense(A) -> np.ndarray:
    """A float64 dense copy of a numpy/scipy matrix."""
    if sp.issparse(A):
        return A.toarray().astype(np.float64)
    return np.asarray(A, dtype=np.float64)


def dense_mse(A, W, d, H) -> float:
    """``mean((A − W diag(d) H)²)`` computed densely in float64."""
    R = dense(A) - (np.asarray(W, np.float64) * np.asarray(d, np.float64)) @ np.asarray(
        H, np.float64)
    return float(np.mean(R * R))


def nnls_gram(G, b, ub: float = 0.0, nonneg: bool = True) -> np.ndarray:
    """Exact bounded least squares in normal-equation form, via SciPy.

    ``argmin ½xᵀGx − bᵀx`` subject to ``x >= 0`` (if ``nonneg``) and ``x <= ub`` (if ub > 0).
    With ``G = LLᵀ`` the objective is ``½‖Lᵀx − L⁻¹b‖²`` + const, a least-squares problem for
    ``scipy.optimize.nnls`` or ``scipy.optimize.lsq_linear``. G must be positive definite.
    """
    G = np.asarray(G, dtype=np.float64)
    L = np.linalg.cholesky(G)
    y = np.linalg.solve(L, np.asarray(b, dtype=np.float64))
    if nonneg and ub <= 0:
        return nnls(L.T, y, maxiter=50 * G.shape[0])[0]
    if not nonneg and ub <= 0:
        return np.linalg.solve(G, b)
    lo = 0.0 if nonneg else -np.inf
    return lsq_linear(L.T, y, bounds=(lo, ub), method="bvls", tol=1e-14).x


def _solve_side(G, B, solver, nonneg, ub):
    """Solve every column of ``B`` (k × c) against ``G``.

    ``"cholesky"``: RcppML's ``clip(G⁻¹B)``; ``"nnls"``: the exact bounded solution per column.
    """
    if solver == "cholesky":
        X = np.linalg.solve(G, B)
        if nonneg:
            X = np.maximum(X, 0.0)
        if ub > 0:
            X = np.minimum(X, ub)
        return X
    return np.column_stack([nnls_gram(G, B[:, j], ub, nonneg) for j in range(B.shape[1])])


def _scale(F, norm):
    """Row scale of F (k × c) and F with its rows normalised (docs/concepts.md)."""
    if norm == "L1":
        s = np.abs(F).sum(axis=1) + EPS
    elif norm == "L2":
        s = np.sqrt((F * F).sum(axis=1)) + EPS
    else:
        s = np.ones(F.shape[0])
    return s, F / s[:, None]


def reference_nmf(
    A,
    W0,
    iterations: int,
    *,
    solver: str = "cholesky",
    L1=(0.0, 0.0),
    L2=(0.0, 0.0),
    nonneg=(True, True),
    upper_bound=(0.0, 0.0),
    norm: str = "L1",
    target_H=None,
    target_lambda: float = 0.0,
):
    """Dense NumPy replica of RcppML's ALS (docs/concepts.md), unsorted, float64.

    ``solver="cholesky"`` is solve-then-clip; ``solver="nnls"`` solves each column exactly with
    SciPy. Returns ``(W, d, H, sse_history)`` with W columns and H rows normalised.
    """
    A = dense(A)
    W = np.asarray(W0, dtype=np.float64).copy()  # m × k, raw init at iteration 0
    k = W.shape[1]
    d = np.ones(k)
    H = None
    history = []
    for _ in range(iterations):
        G = W.T @ W + (L2[1] + EPS) * np.eye(k)
        B = W.T @ A - L1[1]
        if target_H is not None and target_lambda > 0:
            G = G + target_lambda * np.eye(k)
            B = B + target_lambda * np.asarray(target_H, dtype=np.float64)
        H = _solve_side(G, B, solver, nonneg[1], upper_bound[1])
        _, H = _scale(H, norm)
        G = H @ H.T + (L2[0] + EPS) * np.eye(k)
        B = H @ A.T - L1[0]
        Wt = _solve_side(G, B, solver, nonneg[0], upper_bound[0])
        d, Wt = _scale(Wt, norm)
        W = Wt.T
        R = A - (W * d) @ H
        history.append(float(np.sum(R * R)))
    return W, d, H, history


def random_csc(rng, m, n, density, *, dtype=np.float64, empty_cols=(), index_dtype=np.int32):
    """A random non-negative CSC matrix with sorted indices and the given empty columns."""
    A = sp.random(m, n, density=density, format="csc", random_state=rng,
                  data_rvs=lambda s: rng.random(s) + 0.1).astype(dtype)
    if len(empty_cols):
        A = A.tolil()
        A[:, list(empty_cols)] = 0
        A = sp.csc_matrix(A)
        A.eliminate_zeros()
    A.sort_indices()
    A.indptr = A.indptr.astype(index_dtype)
    A.indices = A.indices.astype(index_dtype)
    return A


#: Optional extra cross-checks against RcppML's own exports (the project's shared data folder:
#: the pbmc3k ``.spz`` files, the full conformance corpus, the ``.mtx`` twins of the datasets).
#: They run only when ``DASK_FACTOR_RCPPML_DATA`` names that folder; the suite never needs it.
RCPPML_DATA = Path(os.environ.get("DASK_FACTOR_RCPPML_DATA", "/nonexistent-rcppml-export"))


# ------------------------------------------------------------------------------------------
# bounded-memory cluster tests

#: RSS allowance for a warmed-up worker process (python, dask, zarr, numba kernels) in the
#: bounded-memory tests, which give each worker ``memory_limit = WORKER_BASELINE + budget`` and
#: check the *growth* during a fit against ``budget``. Measured on this project's 2-core
#: machines: 280-430 MiB with a warm numba cache; 457-470 MiB with a fresh one
#: (``NUMBA_CACHE_DIR`` empty, every kernel compiled inside the workers; a clean clone's CI run
#: peaked at 379 MiB, over the earlier 350 MiB allowance). The test session turns distributed's
#: pausing and restarting off (tests/conftest.py), so the limit is informative; the bound under
#: test is the growth.
WORKER_BASELINE = 520 * 2**20
