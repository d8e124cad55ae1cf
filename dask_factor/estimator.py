"""scikit-learn estimators over :func:`dask_factor.nmf` and :func:`dask_factor.svd`.

``X`` is **samples × features** here (scikit-learn's and AnnData's orientation); the functional
API is features × samples, so each estimator factorizes ``A = Xᵀ``. scikit-learn is an optional
extra: this module imports without it, and creating an estimator then raises an ``ImportError``
naming ``pip install "dask_factor[sklearn]"``.

Inputs: numpy arrays (and array-likes such as lists), ``scipy.sparse`` matrices, pandas
DataFrames (``feature_names_in_``), dask arrays (kept lazy: the fit runs on their blocks) and dask
DataFrames.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from ._optional import MissingExtra, install_hint
from ._params import validate_params
from .nmf import NMFResult, nmf

try:
    from sklearn.base import (
        BaseEstimator,
        ClassNamePrefixFeaturesOutMixin,
        TransformerMixin,
        _fit_context,
    )
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.validation import (
        _check_feature_names,
        _check_n_features,
        check_is_fitted,
        check_non_negative,
        check_random_state,
        validate_data,
    )

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised in a subprocess test
    HAVE_SKLEARN = False

    class _Missing:
        """Stands in for scikit-learn's bases: instantiating says what to install."""

        def __new__(cls, *args, **kwargs):
            raise MissingExtra(install_hint("sklearn", "dask_factor.estimator"), name="sklearn")

    class ClassNamePrefixFeaturesOutMixin:  # noqa: D101
        pass

    class TransformerMixin:  # noqa: D101
        pass

    BaseEstimator = _Missing

    def _fit_context(**_kw):
        return lambda f: f

    def Interval(*a, **k):  # noqa: N802
        return None

    def StrOptions(*a, **k):  # noqa: N802
        return None

__all__ = ["NMF", "TruncatedSVD", "PCA", "NMFResult", "HAVE_SKLEARN"]


def _is_dask_array(X) -> bool:
    return type(X).__module__.startswith("dask.array") and hasattr(X, "chunks")


def _is_dask_frame(X) -> bool:
    return type(X).__module__.startswith("dask") and hasattr(X, "columns") \
        and hasattr(X, "to_dask_array")


def _check_X(est, X, *, reset: bool, nonneg: bool = False):
    """Validate ``X`` like scikit-learn's ``validate_data``, keeping dask inputs lazy."""
    if isinstance(X, (str, bytes)) or hasattr(X, "__fspath__"):
        raise TypeError(f"{type(est).__name__}: X must be an in-memory matrix (samples × "
                        f"features); for files call dask_factor.nmf(path, k) (features × samples)")
    if type(X).__name__ == "AnnData":
        X = X.X
    if _is_dask_frame(X):
        _check_feature_names(est, X, reset=reset)
        X = X.to_dask_array(lengths=True)
    elif _is_dask_array(X):
        _check_feature_names(est, X, reset=reset)
    else:
        X = validate_data(est, X, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32],
                          reset=reset)
        if nonneg:
            check_non_negative(X, f"{type(est).__name__} (input X)")
        return X
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    _check_n_features(est, X, reset=reset)
    return X


def _out_dtype(X):
    return X.dtype if X.dtype in (np.float32, np.float64) else np.float64


def _seed(random_state) -> int | None:
    if random_state is None or isinstance(random_state, Integral):
        return None if random_state is None else int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _dense(X) -> np.ndarray:
    if _is_dask_array(X):
        X = X.compute()
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


class _Base(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared plumbing: output names, fitted checks, tags."""

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]

    def _check_rank(self, n_samples: int, n_features: int) -> int:
        k = self.n_components if self.n_components is not None else min(n_samples, n_features)
        if k > min(n_samples, n_features):
            raise ValueError(f"n_components={k} must be between 1 and min(n_samples, n_features)="
                             f"{min(n_samples, n_features)}")
        return int(k)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def inverse_transform(self, X):
        """Map an embedding back to feature space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        out = X @ self.components_.astype(X.dtype, copy=False)
        return out + self.mean_.astype(X.dtype) if hasattr(self, "mean_") else out


class NMF(_Base):
    """Non-negative matrix factorization with scikit-learn's conventions.

    ``X`` (samples × features) is fitted as ``Xᵀ ≈ W diag(d) H`` by :func:`dask_factor.nmf`
    (alternating NNLS on Dask). The embedding is ``Hᵀ diag(d)``; ``components_`` is ``Wᵀ``, so
    ``X ≈ transform(X) @ components_`` as in :class:`sklearn.decomposition.NMF`.

    Parameters
    ----------
    n_components : int or None, default None
        Rank; None means ``min(n_samples, n_features)``.
    tol : float, default 1e-4
        Relative loss change that must hold for 5 iterations (``nmf(tol=)``).
    max_iter : int, default 100
        ``nmf(maxit=)``.
    L1, L2 : float or (float, float), default 0.0
        Lasso and ridge penalties, one value or ``(W side, H side)`` (``nmf(L1=, L2=)``).
    solver : {"auto", "cd", "cholesky"}, default "auto"
    random_state : int, RandomState instance or None, default None
        Seed of the initial W.
    dtype : {"float32", "float64"}, default "float64"
        Storage dtype of the fit (``nmf(dtype=)``).
    chunks : int or None, default None
        Samples per Dask block (``nmf(chunks=)``).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        ``Wᵀ``: the feature loadings, each row summing to 1.
    scale_ : ndarray of shape (n_components,)
        ``d``.
    model_ : NMFResult
        The full result (loss history, settings, ``top_features``, ``to_anndata``, ``save``).
    n_components_ : int
    n_iter_ : int
    reconstruction_err_ : float
        Frobenius norm ‖X − X̂‖ (scikit-learn's definition).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.estimator import NMF
    >>> X = datasets.load("hawaiibirds").matrix.T          # grid cells × species
    >>> est = NMF(n_components=5, random_state=0, max_iter=20)
    >>> Z = est.fit_transform(X)
    >>> Z.shape, est.components_.shape
    ((1183, 5), (5, 183))
    >>> est.get_feature_names_out()[:2]
    array(['nmf0', 'nmf1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "L1": [Interval(Real, 0, 1, closed="left"), tuple],
        "L2": [Interval(Real, 0, None, closed="left"), tuple],
        "solver": [StrOptions({"auto", "cd", "cholesky"})],
        "random_state": ["random_state"],
        "dtype": [StrOptions({"float32", "float64"})],
        "chunks": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, n_components=None, *, tol=1e-4, max_iter=100, L1=0.0, L2=0.0,
                 solver="auto", random_state=None, dtype="float64", chunks=None):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.L1 = L1
        self.L2 = L2
        self.solver = solver
        self.random_state = random_state
        self.dtype = dtype
        self.chunks = chunks

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)
            Non-negative data.
        y : ignored

        Returns
        -------
        self
        """
        self._fit(X)
        return self

    def _fit(self, X) -> np.ndarray:
        # scikit-learn's constraints have run (types, ranges); nmf()'s own table checks the rest
        # (pairs, finiteness) before X is touched, in the estimator's names
        validate_params({"n_components": self.n_components or 1, "max_iter": self.max_iter,
                         "tol": self.tol, "L1": self.L1, "L2": self.L2, "solver": self.solver,
                         "dtype": self.dtype, "chunks": self.chunks}, entry="NMF")
        X = _check_X(self, X, reset=True, nonneg=True)
        k = self._check_rank(*X.shape)
        model = nmf(X.T, k, tol=self.tol, maxit=self.max_iter, L1=self.L1, L2=self.L2,
                    solver=self.solver, seed=_seed(self.random_state), dtype=self.dtype,
                    chunks=self.chunks)
        if hasattr(self, "feature_names_in_"):
            model.feature_names = [str(v) for v in self.feature_names_in_]
        self.model_ = model
        self.components_ = np.ascontiguousarray(model.W.T, dtype=_out_dtype(X))
        self.scale_ = np.asarray(model.d)
        self.n_components_ = model.k
        self.n_iter_ = int(model.iterations)
        self.reconstruction_err_ = float(np.sqrt(max(model.sse, 0.0)))
        return np.ascontiguousarray((model.H * model.d[:, None]).T, dtype=_out_dtype(X))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit and return the embedding ``Hᵀ diag(d)``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return self._fit(X)

    def transform(self, X):
        """Project samples onto the fitted loadings (NNLS).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        X = _check_X(self, X, reset=False, nonneg=True)
        H = self.model_.predict(X.T)
        return np.ascontiguousarray((H * self.model_.d[:, None]).T, dtype=_out_dtype(X))


class _SVDBase(_Base):
    _center = False

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "algorithm": [StrOptions({"auto", "lanczos", "irlba", "randomized"})],
        "n_iter": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, n_components=2, *, algorithm="auto", n_iter=None, tol=None,
                 random_state=None):
        self.n_components = n_components
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit and return the scores ``V diag(d)``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return self._fit(X)

    def _fit(self, X) -> np.ndarray:
        from .svd import svd

        X = _check_X(self, X, reset=True)
        n, p = X.shape
        k = self._check_rank(n, p)
        dtype = _out_dtype(X)
        if k < min(n, p):
            res = svd(X.T, k, method=self.algorithm, center=self._center,
                      seed=_seed(self.random_state), tol=self.tol, maxit=self.n_iter)
            U, d, V = res.U, res.d, res.V
            mean = res.row_means if self._center else None
            total_sq = res.total_sq
            self.n_iter_ = int(res.iterations)
        else:  # the full rank of a thin matrix: a dense SVD of its small side
            Xd = _dense(X).astype(np.float64)
            mean = Xd.mean(axis=0) if self._center else None
            if mean is not None:
                Xd = Xd - mean
            Vt_u, d_full, Ut = np.linalg.svd(Xd, full_matrices=False)
            U, d, V = Ut[:k].T, d_full[:k], Vt_u[:, :k]
            big = np.argmax(np.abs(U), axis=0)
            signs = np.sign(U[big, np.arange(k)])
            signs[signs == 0] = 1.0
            U, V = U * signs, V * signs
            total_sq = float(np.sum(Xd ** 2))
            self.n_iter_ = 1
        if mean is not None:
            self.mean_ = np.asarray(mean, dtype=dtype)
        scores = np.asarray(V * d)
        self.components_ = np.ascontiguousarray(U.T, dtype=dtype)
        self.singular_values_ = np.asarray(d, dtype=dtype)
        self.n_components_ = k
        self.explained_variance_ = np.asarray(d ** 2 / max(n - 1, 1), dtype=dtype)
        total_var = total_sq / max(n - 1, 1)
        if not self._center:  # TruncatedSVD: variances of the columns around their means
            self.explained_variance_ = np.var(scores, axis=0).astype(dtype)
            total_var = float(_column_var_sum(X))
        self.explained_variance_ratio_ = (self.explained_variance_ / total_var if total_var > 0
                                          else np.zeros(k)).astype(dtype)
        self.reconstruction_err_ = float(np.sqrt(max(total_sq - float(np.sum(d ** 2)), 0.0)))
        return np.ascontiguousarray(scores, dtype=dtype)

    def transform(self, X):
        """Project samples onto the components.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        check_is_fitted(self)
        X = _check_X(self, X, reset=False)
        dtype = _out_dtype(X)
        C = self.components_.astype(dtype, copy=False)
        out = X @ C.T
        if _is_dask_array(out):
            out = out.compute()
        out = np.asarray(out)
        if self._center:
            out = out - self.mean_.astype(dtype) @ C.T
        return np.ascontiguousarray(out, dtype=dtype)


def _column_var_sum(X) -> float:
    """Σ_j var(X[:, j]) for numpy, scipy.sparse or dask X, in float64."""
    n = X.shape[0]
    if _is_dask_array(X):
        import dask

        s, sq = dask.compute(X.sum(axis=0), (X ** 2).sum(axis=0))
    elif hasattr(X, "multiply"):
        s, sq = X.sum(axis=0), X.multiply(X).sum(axis=0)
    else:
        s, sq = X.sum(axis=0, dtype=np.float64), (X.astype(np.float64) ** 2).sum(axis=0)
    s = np.asarray(s, dtype=np.float64).ravel()
    sq = np.asarray(sq, dtype=np.float64).ravel()
    return float(np.sum(sq / n - (s / n) ** 2))


class TruncatedSVD(_SVDBase):
    """Truncated SVD (no centring) with scikit-learn's conventions, over :func:`dask_factor.svd`.

    Parameters
    ----------
    n_components : int, default 2
        ``1 <= n_components <= min(n_samples, n_features)``.
    algorithm : {"auto", "lanczos", "irlba", "randomized"}, default "auto"
        ``svd(method=)``.
    n_iter : int or None, default None
        ``svd(maxit=)``.
    tol : float or None, default None
        ``svd(tol=)``.
    random_state : int, RandomState instance or None, default None

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    singular_values_, explained_variance_, explained_variance_ratio_ : ndarray (n_components,)
    n_components_, n_iter_ : int
    reconstruction_err_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.estimator import TruncatedSVD
    >>> X = datasets.load("hawaiibirds").matrix.T
    >>> Z = TruncatedSVD(n_components=3, random_state=0).fit_transform(X)
    >>> Z.shape
    (1183, 3)
    """


class PCA(_SVDBase):
    """Principal component analysis with scikit-learn's conventions, over :func:`dask_factor.svd`.

    Sparse and dask inputs are centred implicitly (never densified), unlike
    :class:`sklearn.decomposition.PCA`.

    Parameters
    ----------
    n_components : int or None, default None
        None keeps ``min(n_samples, n_features)`` components. A full-rank request
        (``n_components == min(n_samples, n_features)``, also for ``TruncatedSVD``) is computed
        by a dense in-memory SVD; smaller ranks by the out-of-core Krylov methods.
    algorithm : {"auto", "lanczos", "irlba", "randomized"}, default "auto"
    n_iter : int or None, default None
    tol : float or None, default None
    random_state : int, RandomState instance or None, default None

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    mean_ : ndarray of shape (n_features,)
    explained_variance_, explained_variance_ratio_, singular_values_ : ndarray (n_components,)
    n_components_, n_iter_ : int
    reconstruction_err_ : float
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.estimator import PCA
    >>> X = datasets.load("aml").matrix.T                 # samples × features
    >>> pca = PCA(n_components=4, random_state=0).fit(X)
    >>> pca.components_.shape, bool((pca.explained_variance_ratio_ < 1).all())
    ((4, 824), True)
    """

    _center = True

    def __init__(self, n_components=None, *, algorithm="auto", n_iter=None, tol=None,
                 random_state=None):
        super().__init__(n_components, algorithm=algorithm, n_iter=n_iter, tol=tol,
                         random_state=random_state)
