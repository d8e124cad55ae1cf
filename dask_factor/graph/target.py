"""Targets from labels (``compute_target``), label refinement (``refine``), a separability score.

A target steers a factor during the fit (``H(target=T, target_lambda=λ)``, docs/graphs.md): λ > 0
solves ``(G + λI) h = b + λt`` (pull towards T), λ < 0 removes T's subspace from the Gram (push
away; B unchanged). ``compute_target`` makes T from class labels: centred, optionally whitened,
class centroids.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

__all__ = ["compute_target", "refine", "separability"]


def _labels(labels, n: int, where: str):
    lab = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series)
                    else labels.to_numpy(dtype=object))
    if lab.size != n:
        raise ValueError(f"{where}: labels has {lab.size} entries; expected one per sample "
                         f"(n = {n})")
    missing = lab.isna().to_numpy()
    codes, classes = pd.factorize(lab[~missing], sort=True)
    full = np.full(n, -1, dtype=np.int64)
    full[~missing] = codes
    return full, list(classes)


def _matrix(H, where: str) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2:
        raise ValueError(f"{where}: H must be a 2-D (k × n) matrix, got shape {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{where}: H must hold finite values")
    return H


def _oas_whitener(C: np.ndarray, mu: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ZCA whitening matrix of the between-class scatter, with OAS shrinkage."""
    k = C.shape[0]
    N = float(counts.sum())
    X = (C - mu[:, None]) * np.sqrt(counts)[None, :]
    S = X @ X.T / N
    trS = float(np.trace(S))
    trS2 = float(np.sum(S * S))
    den = (N + 1.0 - 2.0 / k) * (trS2 - trS * trS / k)
    rho = 1.0 if abs(den) < 1e-12 else ((1.0 - 2.0 / k) * trS2 + trS * trS) / den
    rho = min(max(rho, 0.0), 1.0)
    Sp = (1.0 - rho) * S + rho * (trS / k) * np.eye(k)
    e, V = np.linalg.eigh(Sp)
    return (V / np.sqrt(np.maximum(e, 1e-10))) @ V.T


def compute_target(H, labels, *, whiten: bool = True) -> np.ndarray:
    """A target matrix from class labels: each sample's (whitened) class centroid, centred.

    1. class centroids ``c_c`` of the columns of H (missing labels ignored);
    2. ``μ`` = the unweighted mean of the centroids;
    3. if ``whiten`` and there are ≥ 2 classes: ZCA-whiten with the OAS-shrunk between-class
       scatter ``S = Σ_c n_c (c_c − μ)(c_c − μ)ᵀ / N``;
    4. column j of the target = ``c_{label_j} − μ`` (0 for a missing label).

    Parameters
    ----------
    H : array-like of shape (k, n)
        An embedding (e.g. ``nmf(...).H``).
    labels : array-like of length n
        Class of every sample; None/NaN for unlabelled.
    whiten : bool, default True

    Returns
    -------
    ndarray of shape (k, n)
        A centred (signed) target for ``H(target=..., target_lambda=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 1.2, 0.1, 0.0], [0.0, 0.1, 1.0, 0.9]])
    >>> T = compute_target(H, ["a", "a", "b", "b"], whiten=False)
    >>> T.round(3)
    array([[ 0.525,  0.525, -0.525, -0.525],
           [-0.45 , -0.45 ,  0.45 ,  0.45 ]])
    """
    H = _matrix(H, "compute_target")
    k, n = H.shape
    codes, classes = _labels(labels, n, "compute_target")
    C = len(classes)
    if C == 0:
        raise ValueError("compute_target: every label is missing")
    cents = np.zeros((k, C))
    counts = np.zeros(C)
    for c in range(C):
        idx = codes == c
        counts[c] = idx.sum()
        cents[:, c] = H[:, idx].mean(axis=1)
    mu = cents.mean(axis=1)
    if whiten and C > 1:
        Z = _oas_whitener(cents, mu, counts)
        cents, mu = Z @ cents, Z @ mu
    T = np.zeros((k, n))
    ok = codes >= 0
    T[:, ok] = cents[:, codes[ok]] - mu[:, None]
    return T


def separability(H, labels) -> float:
    """Between- over within-class scatter of the columns of H: ``tr(S_B) / tr(S_W)``.

    ``tr(S_B) = Σ_c n_c ‖μ_c − μ‖²`` and ``tr(S_W) = Σ_c Σ_{j∈c} ‖h_j − μ_c‖²`` (μ the mean of
    all labelled columns, μ_c the class means; unlabelled samples are left out). Higher means the
    classes are better separated — RcppML's factor-graph article reports this ratio.

    Parameters
    ----------
    H : array-like of shape (k, n)
    labels : array-like of length n

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 1.2, 0.1, 0.0], [0.0, 0.1, 1.0, 0.9]])
    >>> round(separability(H, ["a", "a", "b", "b"]), 3)
    54.643
    """
    H = _matrix(H, "separability")
    codes, classes = _labels(labels, H.shape[1], "separability")
    Hl = H[:, codes >= 0]
    cl = codes[codes >= 0]
    mu = Hl.mean(axis=1)
    between = within = 0.0
    for c in range(len(classes)):
        X = Hl[:, cl == c]
        mc = X.mean(axis=1)
        between += X.shape[1] * float(np.sum((mc - mu) ** 2))
        within += float(np.sum((X - mc[:, None]) ** 2))
    return between / max(within, np.finfo(float).eps)


def _label_shift(H, labels, lam, nonneg, whiten):
    T = compute_target(H, labels, whiten=whiten)
    tn = np.linalg.norm(T)
    if tn > 0:
        T *= np.linalg.norm(H) / tn
    Hc = H + lam * T
    return np.maximum(Hc, 0.0) if nonneg else Hc


def _dense(data):
    import scipy.sparse as sp

    from ..engine.inputs import open_lazy

    data = open_lazy(data, "data")
    if hasattr(data, "compute"):
        data = data.compute()
    return data.tocsc() if sp.issparse(data) else np.asarray(data, dtype=np.float64)


def refine(x, data=None, *, labels, batch=None, lam: float = 0.8, cycles: int = 0,
           nonneg: bool = True, whiten: bool = True):
    """Move an embedding towards its label structure (RcppML's ``refine``, with its fixes).

    1. ``T = compute_target(H, labels)`` rescaled to ``‖T‖_F = ‖H‖_F``; ``H ← H + lam·T``
       (clipped at 0 when ``nonneg``).
    2. Each of ``cycles`` rounds (needs ``data``): ``W = A Pᵀ (P Pᵀ + 1e-8 I)⁻¹`` with
       ``P = diag(d) H`` (clipped); then H from W — a least-squares projection, or, with
       ``batch``, one ``nmf()`` iteration pushing away from the batch target
       (``target_lambda = −lam``); rows of H normalised into d; the label shift re-applied.
       (RcppML applies d twice in this step; here W stays normalised and d carries the scale.)

    Parameters
    ----------
    x : NMFResult, LayerResult, or array-like of shape (k, n)
        A model (its H, W and d are used) or an embedding H.
    data : array-like of shape (m, n), optional
        The fitted matrix (needed when ``cycles > 0``).
    labels : array-like of length n
    batch : array-like of length n, optional
        Batch labels to remove during the cycles.
    lam : float in [0, 1], default 0.8
    cycles : int, default 0
    nonneg : bool, default True
    whiten : bool, default True

    Returns
    -------
    Same type as ``x``: a model with the refined H (and W, d after cycles), or the refined
    (k × n) matrix.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 1.2, 0.1, 0.0], [0.0, 0.1, 1.0, 0.9]])
    >>> refine(H, labels=["a", "a", "b", "b"], lam=0.5).shape
    (2, 4)
    """
    if not (0.0 <= float(lam) <= 1.0):
        raise ValueError(f"refine: lam must be in [0, 1], got {lam!r}")
    if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)) or cycles < 0:
        raise ValueError(f"refine: cycles must be an integer >= 0, got {cycles!r}")
    if cycles > 0 and data is None:
        raise ValueError("refine: cycles > 0 needs data= (the fitted matrix)")
    is_model = hasattr(x, "H") and hasattr(x, "d")
    H = _matrix(x.H if is_model else x, "refine")
    if is_model and isinstance(getattr(x, "W", None), dict):
        raise TypeError("refine: shared layers (W per input) are not supported")
    k, n = H.shape
    _labels(labels, n, "refine")
    if batch is not None:
        _labels(batch, n, "refine(batch=)")
    Hc = _label_shift(H, labels, lam, nonneg, whiten)
    W = np.asarray(x.W, dtype=np.float64) if is_model else None
    d = np.asarray(x.d, dtype=np.float64) if is_model else np.ones(k)
    if cycles:
        A = _dense(data)
        if A.shape[1] != n:
            raise ValueError(f"refine: data has {A.shape[1]} columns; H has n = {n}")
        for _ in range(cycles):
            P = d[:, None] * Hc
            W = np.asarray(A @ P.T) @ np.linalg.inv(P @ P.T + 1e-8 * np.eye(k))
            if nonneg:
                W = np.maximum(W, 0.0)
            wn = np.maximum(np.abs(W).sum(axis=0), 1e-10)
            W = W / wn
            if batch is not None:
                from ..nmf import nmf

                Tb = compute_target(Hc, batch, whiten=False)
                m1 = nmf(data, k, w_init=W, maxit=1, tol=0, target_H=Tb,
                         target_lambda=-float(lam), dtype="float64")
                Hn, d = np.asarray(m1.H), np.asarray(m1.d)
                W = np.asarray(m1.W)
            else:
                G = W.T @ W + 1e-8 * np.eye(k)
                Hraw = np.linalg.solve(G, np.asarray((A.T @ W).T))
                if nonneg:
                    Hraw = np.maximum(Hraw, 0.0)
                d = np.maximum(np.sqrt((Hraw * Hraw).sum(axis=1)), 1e-10)
                Hn = Hraw / d[:, None]
            Hc = _label_shift(Hn, labels, lam, nonneg, whiten)
    if not is_model:
        return Hc
    if hasattr(x, "H_dask"):  # an NMFResult: H is held as a dask array
        import dask.array as da

        return replace(x, W=W, d=d, H_dask=da.from_array(Hc, chunks=Hc.shape), _H=Hc)
    return replace(x, W=W, d=d, H=Hc)
