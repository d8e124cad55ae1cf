"""A scikit-learn style estimator over :func:`dask_factor.nmf` (samples × features orientation)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ._params import validate_params
from .nmf import NMFResult, nmf

#: ``nmf()``'s defaults, completed by the estimator's parameters before the table checks them
_NMF_DEFAULTS = {name: p.default for name, p in inspect.signature(nmf).parameters.items()
                 if p.default is not inspect.Parameter.empty}


def _transpose(X):
    """Samples × features → features × samples without copying (CSR ↔ CSC, numpy/dask views)."""
    if isinstance(X, (str, bytes)) or hasattr(X, "__fspath__"):
        raise TypeError("X: the estimator takes an in-memory matrix (samples × features); call "
                        "dask_factor.nmf(path, k) for files, which are features × samples")
    if type(X).__name__ == "AnnData":
        X = X.X
    return X.T


class NMF:
    """Non-negative matrix factorization with scikit-learn's conventions.

    ``X`` is **samples × features** (cells × genes, as in scikit-learn and AnnData); internally the
    model fits ``Xᵀ ≈ W diag(d) H`` with :func:`dask_factor.nmf`. Parameters are those of
    ``nmf()`` (``n_components`` is ``k``); fitted attributes end in ``_``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        ``Wᵀ``: the feature loadings, rows normalised.
    scale_ : ndarray of shape (n_components,)
        ``d``.
    model_ : NMFResult
        The full result (histories, settings, ``evaluate``, ``predict``).
    n_iter_ : int
    reconstruction_err_ : float
        Frobenius norm ‖X − X̂‖ (scikit-learn's definition).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.estimator import NMF
    >>> X = datasets.load("hawaiibirds").matrix.T          # grid cells × species
    >>> est = NMF(n_components=5, random_state=0, max_iter=20)
    >>> Z = est.fit_transform(X)
    >>> Z.shape, est.components_.shape
    ((1183, 5), (5, 183))
    """

    def __init__(self, n_components: int = 10, *, max_iter: int = 100, tol: float = 1e-4,
                 random_state: int | None = None, L1: Any = 0.0, L2: Any = 0.0,
                 solver: str = "auto", dtype: str = "float32", **nmf_kwargs: Any) -> None:
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.L1 = L1
        self.L2 = L2
        self.solver = solver
        self.dtype = dtype
        self.nmf_kwargs = nmf_kwargs

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"n_components": self.n_components, "max_iter": self.max_iter, "tol": self.tol,
                "random_state": self.random_state, "L1": self.L1, "L2": self.L2,
                "solver": self.solver, "dtype": self.dtype, **self.nmf_kwargs}

    def set_params(self, **params: Any) -> NMF:
        for key, value in params.items():
            if hasattr(self, key) and key != "nmf_kwargs":
                setattr(self, key, value)
            else:
                self.nmf_kwargs[key] = value
        return self

    def fit(self, X, y=None) -> NMF:
        """Fit the model to ``X`` (n_samples × n_features).

        The parameters are checked against the same table as ``nmf()``'s before ``X`` is
        touched; messages name them as the estimator does (``n_components``, ``max_iter``,
        ``random_state``).
        """
        own = {"k", "maxit", "seed"}  # given here under the estimator's names
        params = validate_params(
            {**{n: v for n, v in _NMF_DEFAULTS.items() if n not in own}, **self.get_params()},
            entry="NMF")
        model = nmf(_transpose(X), **params)
        self._set_fitted(model)
        return self

    def _set_fitted(self, model: NMFResult) -> None:
        self.model_ = model
        self.components_ = np.ascontiguousarray(model.W.T)
        self.scale_ = model.d
        self.n_iter_ = model.iterations
        self.reconstruction_err_ = float(np.sqrt(model.sse))
        self.n_components_ = model.k

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit and return the sample embedding ``Hᵀ diag(d)`` (n_samples × n_components)."""
        self.fit(X)
        return np.ascontiguousarray((self.model_.H * self.model_.d[:, None]).T)

    def transform(self, X) -> np.ndarray:
        """Project samples onto the fitted loadings: NNLS, (n_samples × n_components)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("NMF: call fit() before transform()")
        H = self.model_.predict(_transpose(X))
        return np.ascontiguousarray((H * self.model_.d[:, None]).T)

    def inverse_transform(self, Z) -> np.ndarray:
        """Map an embedding back to feature space: ``Z @ components_``."""
        return np.asarray(Z) @ self.components_
