"""Per-factor options (``W()``, ``H()``) and the graph-wide settings (``factor_config()``).

A field left at ``None`` in ``W()``/``H()`` inherits the layer's value, then the default
(docs/graphs.md): the explicit per-factor field wins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._params import check_value, constraints_for, validate_params

__all__ = ["FactorOptions", "FactorNetConfig", "W", "H", "factor_config"]


@dataclass(eq=False)
class FactorOptions:
    """Overrides for one factor of a layer (made by :func:`W` or :func:`H`).

    Attributes
    ----------
    side : {"W", "H"}
    L1, L2, L21, angular, upper_bound : float or None
    nonneg : bool or None
    graph : ndarray or scipy.sparse matrix or None
        A graph Laplacian over the factor's length (W: its rows; H: its columns), used as is.
    graph_lambda : float or None
    target : ndarray or None
        Target of the factor, same shape as the factor (W: rows × k, H: k × columns).
    target_lambda : float or None
    """

    side: str
    L1: float | None = None
    L2: float | None = None
    L21: float | None = None
    angular: float | None = None
    upper_bound: float | None = None
    nonneg: bool | None = None
    graph: Any = None
    graph_lambda: float | None = None
    target: np.ndarray | None = None
    target_lambda: float | None = None

    def __repr__(self) -> str:
        set_ = []
        for f in fields(self):
            if f.name == "side":
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name in ("graph", "target"):
                set_.append(f"{f.name}=<{v.shape[0]}×{v.shape[1]}>")
            else:
                set_.append(f"{f.name}={v!r}")
        return f"{self.side}({', '.join(set_)})"


def _option(side: str, name: str, value):
    """A scalar option of W()/H(), checked against the parameter table (entry ``"factor"``)."""
    return check_value(f"{side}({name}=)", value, constraints_for(name, "factor"))


def _matrix(side: str, name: str, value, *, allow_sparse: bool):
    if value is None:
        return None
    if sp.issparse(value):
        if not allow_sparse:
            value = value.toarray()
        else:
            value = sp.csr_matrix(value, dtype=np.float64)
            if not np.all(np.isfinite(value.data)):
                raise ValueError(f"{side}({name}=): expected finite values")
            if value.shape[0] != value.shape[1]:
                raise ValueError(f"{side}({name}=): expected a square Laplacian, got shape "
                                 f"{value.shape}")
            return value
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{side}({name}=): expected a numeric matrix, got "
                        f"{type(value).__name__}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{side}({name}=): expected a 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{side}({name}=): expected finite values")
    if name == "graph" and arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{side}({name}=): expected a square Laplacian, got shape {arr.shape}")
    return arr


def _factor(side, L1, L2, L21, angular, upper_bound, nonneg, graph, graph_lambda, target,
            target_lambda) -> FactorOptions:
    opts = FactorOptions(
        side=side,
        L1=_option(side, "L1", L1),
        L2=_option(side, "L2", L2),
        L21=_option(side, "L21", L21),
        angular=_option(side, "angular", angular),
        upper_bound=_option(side, "upper_bound", upper_bound),
        nonneg=_option(side, "nonneg", nonneg),
        graph=_matrix(side, "graph", graph, allow_sparse=True),
        graph_lambda=_option(side, "graph_lambda", graph_lambda),
        target=_matrix(side, "target", target, allow_sparse=False),
        target_lambda=_option(side, "target_lambda", target_lambda),
    )
    if opts.target_lambda and opts.target is None:
        raise ValueError(f"{side}(target_lambda=): set target= too (a matrix the shape of "
                         f"{side}), or leave target_lambda at 0")
    if opts.graph_lambda and opts.graph is None:
        raise ValueError(f"{side}(graph_lambda=): set graph= too (a Laplacian), or leave "
                         f"graph_lambda at 0")
    return opts


def W(L1=None, L2=None, L21=None, angular=None, upper_bound=None, nonneg=None, graph=None,
      graph_lambda=None, target=None, target_lambda=None) -> FactorOptions:
    """Options for a layer's W (feature loadings; for a layer fed by another layer, the
    per-sample embedding).

    Every argument left at None inherits the layer's value.

    Parameters
    ----------
    L1 : float in [0, 1), optional
        Lasso: subtracted from the NNLS right-hand side.
    L2 : float >= 0, optional
        Ridge: added to the Gram diagonal.
    L21 : float >= 0, optional
        Group sparsity: ``G_ii += L21 / ‖W_:,i‖`` from the current W.
    angular : float >= 0, optional
        Decorrelation of the factors after each solve (orthogonality pressure).
    upper_bound : float >= 0, optional
        Box constraint ``W <= upper_bound`` (0: none).
    nonneg : bool, optional
    graph : (rows, rows) ndarray or sparse, optional
        A graph Laplacian over W's rows, used as is; with ``graph_lambda`` adds
        ``graph_lambda · Wᵀ graph W`` (from the current W) to the Gram.
    graph_lambda : float >= 0, optional
    target : (rows, k) ndarray, optional
        Target of W in the solver's scale; with ``target_lambda > 0`` each row solves
        ``(G + λI) w = b + λ t``; ``target_lambda < 0`` removes the target's subspace from the
        Gram (docs/graphs.md).
    target_lambda : float, optional

    Returns
    -------
    FactorOptions

    Examples
    --------
    >>> W(L1=0.1, nonneg=True)
    W(L1=0.1, nonneg=True)
    """
    return _factor("W", L1, L2, L21, angular, upper_bound, nonneg, graph, graph_lambda, target,
                   target_lambda)


def H(L1=None, L2=None, L21=None, angular=None, upper_bound=None, nonneg=None, graph=None,
      graph_lambda=None, target=None, target_lambda=None) -> FactorOptions:
    """Options for a layer's H (sample embedding; for a layer fed by another layer, the
    connecting matrix ``k × k_up``).

    Same parameters as :func:`W`; ``target`` has H's shape (k × columns) and ``graph`` is a
    Laplacian over H's columns (the samples for a layer that reads an input).

    Returns
    -------
    FactorOptions

    Examples
    --------
    >>> import numpy as np
    >>> T = np.zeros((8, 1183))
    >>> H(target=T, target_lambda=0.3)
    H(target=<8×1183>, target_lambda=0.3)
    """
    return _factor("H", L1, L2, L21, angular, upper_bound, nonneg, graph, graph_lambda, target,
                   target_lambda)


@dataclass(frozen=True)
class FactorNetConfig:
    """Graph-wide settings (made by :func:`factor_config`); see there for the fields."""

    maxit: int = 100
    tol: float = 1e-4
    loss: str = "mse"
    verbose: bool = False
    seed: int | None = None
    norm: str = "L1"
    solver: str = "auto"
    cd_maxit: int | None = None
    cd_tol: float | None = None
    rng: str = "numpy"
    dtype: str = "float32"
    warmup: int | None = None
    sort_model: bool = True
    test_fraction: float = 0.0
    cv_seed: int = 0
    mask_zeros: bool = False
    patience: int = 5
    chunks: int | None = None
    block_nnz: int | None = None

    def to_dict(self) -> dict:
        """The settings as a JSON-friendly dict."""
        return asdict(self)


def factor_config(
    maxit: int = 100,
    tol: float = 1e-4,
    loss: str = "mse",
    verbose: bool = False,
    seed: int | None = None,
    norm: str = "L1",
    solver: str = "auto",
    *,
    cd_maxit: int | None = None,
    cd_tol: float | None = None,
    rng: str = "numpy",
    dtype: str = "float32",
    warmup: int | None = None,
    sort_model: bool = True,
    test_fraction: float = 0.0,
    cv_seed: int = 0,
    mask_zeros: bool = False,
    patience: int = 5,
    chunks: int | None = None,
    block_nnz: int | None = None,
) -> FactorNetConfig:
    """Settings shared by every layer of a graph.

    Parameters
    ----------
    maxit : int, default 100
        Maximum iterations (one-layer graphs) or outer sweeps (multi-layer graphs).
    tol : float, default 1e-4
        Stop when the relative loss change stays below ``tol`` for 5 consecutive iterations
        (multi-layer graphs: for every layer).
    loss : str, default "mse"
        The loss of every NMF layer that does not set its own (``nmf_layer(loss=)``): ``"mse"``
        or a count-data loss (``"kl"``, ``"nb"``, ``"gp"``, ``"gamma"``,
        ``"inverse_gaussian"``, ``"tweedie"``; docs/losses.md). A count-data loss is fitted by
        a graph of one NMF layer on one input, exactly as ``nmf(A, k, loss=...)`` (also under
        :func:`cross_validate_graph`); ``factor_net`` refuses it in other graphs.
    verbose : bool, default False
        Show a progress bar.
    seed : int, optional
        Seed of the initial factors; layer ``i`` (graph order, 0-based) uses ``seed + i``. None
        draws a seed (recorded in the result).
    norm : {"L1", "L2", "none"}, default "L1"
    solver : {"auto", "cd", "cholesky"}, default "auto"
        The rule of :func:`dask_factor.nmf.resolve_solver`, the same as ``nmf()``.
    cd_maxit, cd_tol : optional
        Coordinate-descent budget overrides.
    rng : {"numpy", "rcppml"}, default "numpy"
        ``"rcppml"`` draws initial factors like R's ``set.seed(); runif()``.
    dtype : {"float32", "float64"}, default "float32"
    warmup : int, optional
        Warm-up iterations per layer before the joint sweeps (default ``min(10, maxit)``).
    sort_model : bool, default True
        One-layer graphs: sort factors by decreasing d (multi-layer graphs are never sorted).
    test_fraction : float in [0, 1), default 0
        Held-out fraction for :func:`cross_validate_graph`.
    cv_seed : int, default 0
    mask_zeros : bool, default False
    patience : int, default 5
        Cross-validation patience (iterations without a test-loss improvement).
    chunks, block_nnz : int, optional
        Columns per block, or stored entries per block, for the column blocking of the inputs.

    Returns
    -------
    FactorNetConfig

    Raises
    ------
    TypeError, ValueError
        Here, not at fit time, for a bad argument: every argument is checked against the same
        table as ``nmf()``'s (numbers must be finite; a negative ``seed`` needs
        ``rng="rcppml"``).

    Examples
    --------
    >>> cfg = factor_config(maxit=50, seed=42)
    >>> cfg.maxit, cfg.seed, cfg.solver
    (50, 42, 'auto')
    """
    p = validate_params(dict(locals()), entry="factor_config")  # the arguments, as given
    return FactorNetConfig(**{**p, "dtype": p["dtype"].name})
