"""Subspace drivers of the truncated SVD, in NumPy, around an abstract "apply the Gram operator".

Both drivers work in the feature space (m-vectors): the operator is ``M = Ã Ãᵀ`` with
``Ã = D⁻¹(A − μ1ᵀ)`` the implicitly centred/scaled matrix, and one call of ``apply(X)`` (m × b →
m × b) is one Dask pass over A (:mod:`dask_factor.engine.svd`). The eigenpairs ``(σ², u)`` of M
are the squared singular values and left singular vectors of Ã.

* :func:`block_lanczos` — block Lanczos with full reorthogonalisation and thick restarts
  (Krylov–Schur style: the best Ritz vectors are kept, the next block continues the recurrence).
  Each pass extends the basis by one block of ``b`` vectors; a Rayleigh–Ritz step after every pass
  decides convergence from the exact residual norms ``‖M u − θ u‖ = ‖B s_last‖``. The products
  ``M q`` of the basis vectors are kept (rotated with the basis at a restart), so ``M X`` of the
  returned Ritz vectors costs no further pass.
* :func:`randomized_range` — a Gaussian start block refined by ``q`` orthonormalised power steps.

Neither touches A: they see only ``apply`` and the m × b blocks it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas

#: a column of a new block is "numerically dependent" below this fraction of ‖M‖
DEFLATION_RTOL = 1e-12
#: a second Gram–Schmidt sweep runs when a column keeps less than this share of its norm
REORTH_ETA = 0.7
#: residuals of Ritz pairs with σ below this fraction of σ₁ are judged against it instead
SIGMA_FLOOR = 1e-4


@dataclass
class KrylovResult:
    """What a subspace driver hands back: Ritz values and vectors of M, and how it got there."""

    theta: np.ndarray  # (k,) Ritz values, descending (σ² estimates)
    X: np.ndarray  # (m, k) orthonormal Ritz vectors (u estimates)
    passes: int
    restarts: int
    converged: bool
    residuals: np.ndarray  # (k,) ‖M u − θ u‖ / (σ₁ · max(σ, floor·σ₁)), i.e. relative to σ₁
    MX: np.ndarray | None = None  # (m, k) M X, from the products the passes computed


def _subtract_product(Z: np.ndarray, X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``Z − X C`` in place on a Fortran-ordered ``Z`` (one BLAS call, no m × b temporary)."""
    return blas.dgemm(-1.0, X, C, beta=1.0, c=Z, overwrite_c=True)


def orthonormalize(Z: np.ndarray, basis: np.ndarray | None, rng: np.random.Generator,
                   scale: float, *, local: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormalise ``Z`` (m × b) against ``basis`` (m × s, orthonormal) and itself.

    Block classical Gram–Schmidt: first against the last ``local`` basis columns (where a Lanczos
    block has its large components), then against the whole basis, repeated once more only for
    the columns that lost more than ``1 − REORTH_ETA`` of their norm in that sweep (the DGKS
    test: "twice is enough"). A column-pivoted QR finishes. Columns whose pivot falls below
    ``DEFLATION_RTOL · scale`` (the Krylov space is exhausted or A is rank deficient) are replaced
    by random vectors orthogonal to everything, with zero coupling.

    Returns
    -------
    Q : (m, b) orthonormal, orthogonal to ``basis``
    B : (b, b) coupling, ``Z − basis C = Q B``
    C : (s, b) projection coefficients on ``basis``
    """
    m, b = Z.shape
    Z = np.array(Z, dtype=np.float64, copy=True, order="F")
    s = 0 if basis is None else basis.shape[1]
    C = np.zeros((s, b))
    if s:
        lo = max(0, s - int(local)) if local else s
        if lo < s:
            L = basis[:, lo:]
            Cl = L.T @ Z
            Z = _subtract_product(Z, L, Cl)
            C[lo:] += Cl
        for _ in range(2):
            before = np.linalg.norm(Z, axis=0)
            Cf = basis.T @ Z
            Z = _subtract_product(Z, basis, Cf)
            C += Cf
            after = np.linalg.norm(Z, axis=0)
            if np.all(after >= REORTH_ETA * before):
                break
    Q, R, piv = sla.qr(Z, mode="economic", pivoting=True, overwrite_a=True, check_finite=False)
    B = np.empty_like(R)
    B[:, piv] = R
    diag = np.abs(np.diag(R))
    thresh = DEFLATION_RTOL * scale if scale > 0 else np.inf
    bad = np.flatnonzero(~(diag > thresh))  # pivoted: a suffix; NaN counts as bad
    if bad.size:
        r = int(bad[0])
        B[r:, :] = 0.0
        fill = rng.standard_normal((m, b - r))
        against = Q[:, :r] if not s else np.hstack([basis, Q[:, :r]])
        for _ in range(2):
            if against.shape[1]:
                fill -= against @ (against.T @ fill)
        Q[:, r:] = np.linalg.qr(fill)[0]
    return Q, B, C


def _relative_residuals(res: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """‖M u − θu‖ → the SVD residual ‖Ãv − σu‖ = ‖Mu − θu‖/σ, relative to σ₁."""
    sig = np.sqrt(np.maximum(theta, 0.0))
    s1 = sig[0] if sig.size else 0.0
    if not s1 > 0:
        return np.zeros_like(res)
    return res / (s1 * np.maximum(sig, SIGMA_FLOOR * s1))


def block_lanczos(
    apply: Callable[[np.ndarray], np.ndarray],
    m: int,
    k: int,
    *,
    block_size: int,
    basis_size: int,
    keep: int,
    tol: float,
    maxit: int,
    rng: np.random.Generator,
    on_pass: Callable[[int, np.ndarray], object] | None = None,
) -> KrylovResult:
    """Top-k eigenpairs of the PSD operator behind ``apply`` by thick-restart block Lanczos.

    Parameters
    ----------
    apply : callable, (m, b) ndarray → (m, b) ndarray
        The operator ``M`` (one pass over A per call).
    m : int
        Dimension of M.
    k : int
        Number of wanted eigenpairs.
    block_size : int
        Vectors per pass, b.
    basis_size : int
        Columns of the basis before a restart (at least ``keep + block_size``).
    keep : int
        Ritz vectors kept at a restart (≥ k).
    tol : float
        Stop when every wanted pair has ``‖Ãv − σu‖ ≤ tol · σ₁``.
    maxit : int
        Maximum passes (calls of ``apply``).
    rng : numpy Generator
        Start block and the replacement vectors of exhausted directions.
    on_pass : callable(passes, relative residuals), optional
        Progress hook after every pass.

    Returns
    -------
    KrylovResult
        With ``MX = M X`` formed from the products of the passes (no extra pass).
    """
    b = max(1, min(int(block_size), m))
    keep = max(int(keep), k)
    # the basis plus the next block must fit in R^m, so that exhausted directions can always be
    # replaced by fresh random ones
    s_want = max(int(basis_size), keep + b)
    if m <= s_want + b:
        # the basis would span (almost) all of R^m anyway: one pass on the identity is exact
        return _full_space(apply, m, k)
    s_max = min(s_want, m - b)
    basis = np.empty((m, s_max), order="F")
    products = np.empty((m, s_max), order="F")  # M · basis, column by column
    H = np.zeros((s_max, s_max))
    nxt, _, _ = orthonormalize(rng.standard_normal((m, b)), None, rng, 1.0)
    s = 0
    passes = restarts = 0
    scale = 0.0
    while True:
        Z = apply(nxt)
        passes += 1
        s1 = s + b
        basis[:, s:s1] = nxt
        products[:, s:s1] = Z
        scale = max(scale, float(np.abs(Z).max(initial=0.0)) * np.sqrt(m))
        nxt, B, C = orthonormalize(Z, basis[:, :s1], rng, scale, local=2 * b)
        H[:s1, s:s1] = C
        H[s:s1, :s] = C[:s].T
        H[s:s1, s:s1] = 0.5 * (C[s:s1] + C[s:s1].T)
        theta, S = np.linalg.eigh(H[:s1, :s1])
        theta, S = theta[::-1], S[:, ::-1]
        kk = min(k, s1)
        # M·basis = basis·H + nxt·B·E_lastᵀ, so ‖M u − θ u‖ = ‖B · (last block rows of s)‖
        res = np.linalg.norm(B @ S[s:s1, :kk], axis=0)
        rel = _relative_residuals(res, theta[:kk])
        if on_pass is not None:
            on_pass(passes, rel)
        done = kk == k and bool(np.all(rel <= tol))
        if done or passes >= maxit:
            X = basis[:, :s1] @ S[:, :kk]
            MX = products[:, :s1] @ S[:, :kk]
            return KrylovResult(theta[:kk].copy(), X, passes, restarts, done, rel, MX)
        if s1 + b > s_max:
            # thick restart: keep the best Ritz vectors; nxt stays orthogonal to them and
            # continues the recurrence (its coupling to them is recomputed by the next pass)
            basis[:, :keep] = basis[:, :s1] @ S[:, :keep]
            products[:, :keep] = products[:, :s1] @ S[:, :keep]
            H[:] = 0.0
            H[np.arange(keep), np.arange(keep)] = theta[:keep]
            s = keep
            restarts += 1
        else:
            s = s1


def _full_space(apply: Callable[[np.ndarray], np.ndarray], m: int, k: int) -> KrylovResult:
    """Small m: apply M to the identity in one pass and diagonalise it exactly."""
    H = apply(np.eye(m))
    theta, S = np.linalg.eigh(0.5 * (H + H.T))
    theta, S = theta[::-1][:k], S[:, ::-1][:, :k]
    return KrylovResult(theta.copy(), np.ascontiguousarray(S), 1, 0, True, np.zeros(k), H @ S)


def randomized_range(
    apply: Callable[[np.ndarray], np.ndarray],
    m: int,
    width: int,
    power_iters: int,
    *,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """An orthonormal basis (m × width) of ``M^q G`` for a Gaussian G, by q power passes.

    Each power step is orthonormalised (the numerically stable subspace iteration). The
    Rayleigh–Ritz step on the returned basis is the caller's last pass.

    Returns
    -------
    X : (m, width) orthonormal basis
    passes : int
    """
    X, _, _ = orthonormalize(rng.standard_normal((m, width)), None, rng, 1.0)
    scale = 0.0
    for _ in range(int(power_iters)):
        Z = apply(X)
        scale = max(scale, float(np.abs(Z).max(initial=0.0)) * np.sqrt(m))
        X, _, _ = orthonormalize(Z, None, rng, scale)
    return X, int(power_iters)
