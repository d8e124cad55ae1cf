"""The blocks of a factorization graph: inputs, layers and merge nodes (plain dataclasses).

Constructors check their own arguments at once; checks that need the whole graph (cycles,
reachability, sample counts, names) run in :func:`dask_factor.graph.factor_net`.

Orientation as in RcppML: an input is features × samples; a layer fed by an input factorises it as
``A ≈ W diag(d) H`` (W: features × k, H: k × samples); a layer fed by another layer factorises that
layer's ``t(H)`` (samples × k_up), so its W (samples × k) is the per-sample embedding and its H
(k × k_up) the connecting matrix.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp

from .. import _validate as V
from .config import FactorOptions

__all__ = [
    "Node", "FactorInput", "NMFLayer", "SVDLayer", "FactorShared", "FactorConcat", "FactorAdd",
    "FactorCondition", "factor_input", "nmf_layer", "svd_layer", "factor_shared",
    "factor_concat", "factor_add", "factor_condition",
]

SVD_METHODS = ("auto", "deflation", "krylov", "lanczos", "irlba", "randomized")


class Node:
    """Base class of every graph block."""

    name: str | None = None

    def upstream(self) -> tuple[Node, ...]:
        """The nodes this one reads, in order."""
        return ()

    @property
    def label(self) -> str:
        return self.name or type(self).__name__


def _check_node(where: str, arg: str, x) -> Node:
    if not isinstance(x, Node):
        raise TypeError(f"{where}: '{arg}' must be a graph node (factor_input, a layer, "
                        f"factor_shared, …), got {type(x).__name__}")
    return x


def _check_name(where: str, name) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{where}: name must be a non-empty string without '/', got {name!r}")
    return name


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(eq=False)
class FactorInput(Node):
    """A graph input: a features × samples matrix, or a path read inside the tasks.

    Attributes
    ----------
    data : ndarray, scipy.sparse, dask.array.Array, AnnData or path
    name : str or None
        Assigned (``input1``, …) by ``factor_net`` when None.
    shape : (m, n) or None
        Known without reading the data (None when it cannot be determined up front).
    """

    data: Any
    name: str | None = None
    shape: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"factor_input(name={self.name!r}, shape={self.shape})"


def _input_shape(data) -> tuple[int, int] | None:
    if type(data).__name__ == "AnnData" and hasattr(data, "obsm"):
        n_obs, n_vars = data.shape
        return int(n_vars), int(n_obs)
    if isinstance(data, (str, os.PathLike)):
        try:
            from ..io import matrix_info

            return tuple(int(s) for s in matrix_info(data)["shape"])
        except Exception:  # noqa: BLE001 - the reader raises the real error at fit time
            return None
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0]), int(shape[1])
    return None


def factor_input(data, name: str | None = None) -> FactorInput:
    """Wrap a matrix (features × samples) as a graph input.

    Parameters
    ----------
    data : array-like of shape (m, n), or a path
        numpy, scipy.sparse, dask array, AnnData (cells × genes, used as its transpose) or a path
        to a ``.spz``/zarr/``.h5ad``/``.mtx`` file, read inside the Dask tasks.
    name : str, optional
        The input's name (default: the file stem for a path, else ``input<i>``).

    Returns
    -------
    FactorInput

    Raises
    ------
    TypeError
        ``data`` is not a matrix type we read.
    ValueError
        ``data`` is not 2-D or is empty; the path does not exist.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> A, rows, cols = datasets.load("aml")
    >>> factor_input(A, name="methylation")
    factor_input(name='methylation', shape=(824, 135))
    """
    name = _check_name("factor_input", name)
    if isinstance(data, (str, os.PathLike)):
        if not os.path.exists(data):
            raise ValueError(f"factor_input: path {str(data)!r} does not exist")
        if name is None:
            base = os.path.basename(os.fspath(data).rstrip("/"))
            name = base.split(".")[0] or None
    elif isinstance(data, (list, tuple)):
        data = np.asarray(data)
    ok = (isinstance(data, (np.ndarray, da.Array, str, os.PathLike)) or sp.issparse(data)
          or type(data).__name__ == "AnnData")
    if not ok:
        raise TypeError(f"factor_input: 'data' must be a dense matrix, scipy.sparse matrix, "
                        f"dask array, AnnData or a path to a matrix file, got "
                        f"{type(data).__name__}")
    shape = _input_shape(data)
    if shape is not None and isinstance(data, (np.ndarray, da.Array)) and data.ndim != 2:
        raise ValueError(f"factor_input: expected a 2-D matrix, got shape {data.shape}")
    if isinstance(data, np.ndarray) and data.ndim != 2:
        raise ValueError(f"factor_input: expected a 2-D matrix, got shape {data.shape}")
    if shape is not None and (shape[0] == 0 or shape[1] == 0):
        raise ValueError(f"factor_input: input matrix cannot be empty, got shape {shape}")
    if isinstance(data, np.ndarray):
        V.check_matrix_dtype("factor_input", data.dtype)
    return FactorInput(data=data, name=name, shape=shape)


# --------------------------------------------------------------------------------------------
# layers


def _pair(where: str, name: str, value, lo: float, hi: float | None = None):
    p = V.pair(f"{where}: {name}", value)
    V.check_range(f"{where}: {name}", p, lo, hi)
    return p


def _check_side(where: str, arg: str, value, side: str) -> FactorOptions | None:
    if value is None:
        return None
    if not isinstance(value, FactorOptions) or value.side != side:
        raise TypeError(f"{where}: '{arg}' must be created by {side}(), got "
                        f"{type(value).__name__}")
    return value


@dataclass(eq=False)
class NMFLayer(Node):
    """An NMF layer ``input ≈ W diag(d) H`` (non-negative by default).

    Layer-level penalties are pairs ``(W side, H side)``; ``W``/``H`` options override them.
    """

    input: Node
    k: int
    name: str | None = None
    L1: tuple[float, float] = (0.0, 0.0)
    L2: tuple[float, float] = (0.0, 0.0)
    L21: tuple[float, float] = (0.0, 0.0)
    angular: tuple[float, float] = (0.0, 0.0)
    upper_bound: tuple[float, float] = (0.0, 0.0)
    nonneg: tuple[bool, bool] = (True, True)
    W: FactorOptions | None = None
    H: FactorOptions | None = None

    kind = "nmf"

    def upstream(self):
        return (self.input,)

    @property
    def rank(self) -> int:
        return self.k

    def __repr__(self) -> str:
        return f"nmf_layer(name={self.name!r}, k={self.k}, input={self.input.label!r})"


def _layer_common(where, input, k, name, W, H):
    _check_node(where, "input", input)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{where}: k must be an integer rank, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"{where}: k must be >= 1, got {k}")
    return (int(k), _check_name(where, name), _check_side(where, "W", W, "W"),
            _check_side(where, "H", H, "H"))


def nmf_layer(
    input: Node,
    k: int,
    *,
    name: str | None = None,
    L1: float | tuple[float, float] = 0.0,
    L2: float | tuple[float, float] = 0.0,
    L21: float | tuple[float, float] = 0.0,
    angular: float | tuple[float, float] = 0.0,
    upper_bound: float | tuple[float, float] = 0.0,
    nonneg: bool | tuple[bool, bool] = True,
    W: FactorOptions | None = None,
    H: FactorOptions | None = None,
    mask=None,
    robust: bool = False,
    projective: bool = False,
    symmetric: bool = False,
    zi: str = "none",
) -> NMFLayer:
    """An NMF layer on a graph node: ``input ≈ W diag(d) H``.

    Parameters
    ----------
    input : Node
        A ``factor_input`` (m × n), ``factor_shared``, ``factor_condition``, another layer (then
        this layer factorises its ``t(H)``, n × k_up), ``factor_concat`` or ``factor_add``.
    k : int
        Rank.
    name : str, optional
        The layer's name in the result (default ``L<i>`` in graph order).
    L1, L2, L21, angular, upper_bound : float or (W side, H side)
        Penalties as in ``nmf()`` (L1 in [0, 1)); L21 and angular as in :func:`W`.
    nonneg : bool or (bool, bool), default True
    W, H : FactorOptions, optional
        Per-factor overrides from :func:`W` / :func:`H` (targets, graph Laplacians, …).
    mask, robust, projective, symmetric, zi
        RcppML options that are not implemented yet; anything but the default raises
        ``NotImplementedError`` here, before any work.

    Returns
    -------
    NMFLayer
        W is m × k (or n × k for a layer fed by a layer), H is k × n (or k × k_up).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="methylation")
    >>> fine = nmf_layer(inp, 10, name="fine")
    >>> nmf_layer(fine, 3, name="coarse")
    nmf_layer(name='coarse', k=3, input='fine')
    """
    where = f"nmf_layer({name!r})" if name else "nmf_layer"
    k, name, W, H = _layer_common(where, input, k, name, W, H)
    if mask is not None:
        raise NotImplementedError(
            f"{where}: mask= needs the masked NNLS engine (the cross-validation issue), which "
            f"has not landed yet")
    for flag, val in (("robust", robust), ("projective", projective),
                      ("symmetric", symmetric)):
        if val:
            raise NotImplementedError(f"{where}: {flag}=True is not implemented (later work, "
                                      f"SPEC-nmf.md decision 6)")
    if zi != "none":
        raise NotImplementedError(f"{where}: zi={zi!r} is not implemented (later work)")
    return NMFLayer(
        input=input, k=k, name=name, L1=_pair(where, "L1", L1, 0.0, 1.0),
        L2=_pair(where, "L2", L2, 0.0), L21=_pair(where, "L21", L21, 0.0),
        angular=_pair(where, "angular", angular, 0.0),
        upper_bound=_pair(where, "upper_bound", upper_bound, 0.0),
        nonneg=V.pair(f"{where}: nonneg", nonneg, kind=bool), W=W, H=H)


@dataclass(eq=False)
class SVDLayer(Node):
    """A truncated SVD / PCA layer ``input ≈ U diag(d) Vᵀ`` (W = U, H = Vᵀ, signed)."""

    input: Node
    k: int
    name: str | None = None
    center: bool = False
    scale: bool = False
    method: str = "auto"
    tol: float | None = None
    maxit: int | None = None
    L1: tuple[float, float] = (0.0, 0.0)
    L2: tuple[float, float] = (0.0, 0.0)
    upper_bound: tuple[float, float] = (0.0, 0.0)
    nonneg: tuple[bool, bool] = (False, False)
    W: FactorOptions | None = None
    H: FactorOptions | None = None

    kind = "svd"

    def upstream(self):
        return (self.input,)

    @property
    def rank(self) -> int:
        return self.k

    def __repr__(self) -> str:
        return (f"svd_layer(name={self.name!r}, k={self.k}, input={self.input.label!r}, "
                f"center={self.center}, scale={self.scale}, method={self.method!r})")


def svd_layer(
    input: Node,
    k: int,
    *,
    name: str | None = None,
    center: bool = False,
    scale: bool = False,
    method: str = "auto",
    tol: float | None = None,
    maxit: int | None = None,
    L1: float | tuple[float, float] = 0.0,
    L2: float | tuple[float, float] = 0.0,
    upper_bound: float | tuple[float, float] = 0.0,
    nonneg: bool | tuple[bool, bool] = False,
    W: FactorOptions | None = None,
    H: FactorOptions | None = None,
) -> SVDLayer:
    """A truncated SVD (PCA with ``center=True``) layer: ``input ≈ W diag(d) H``, W = U, H = Vᵀ.

    A real truncated SVD with implicit centring/scaling (SPEC-nmf.md §4), not unconstrained ALS.

    Parameters
    ----------
    input : Node
    k : int
    name : str, optional
    center : bool, default False
        Subtract the row (feature) means, implicitly.
    scale : bool, default False
        Divide rows by their standard deviation (implies ``center``).
    method : {"auto", "lanczos", "irlba", "randomized", "deflation", "krylov"}
    tol, maxit : optional
        Solver tolerance and iteration budget (method defaults when None).
    L1, L2, upper_bound, nonneg
        Constrained SVD options; only the defaults (unconstrained) are supported with the
        Krylov methods.
    W, H : FactorOptions, optional

    Returns
    -------
    SVDLayer
        W is m × k (left singular vectors), d the singular values, H is k × n.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> A, rows, cols = datasets.load("aml")
    >>> svd_layer(factor_input(A, name="aml"), 5, center=True, name="pca")
    svd_layer(name='pca', k=5, input='aml', center=True, scale=False, method='auto')
    """
    where = f"svd_layer({name!r})" if name else "svd_layer"
    k, name, W, H = _layer_common(where, input, k, name, W, H)
    V.choice(f"{where}: method", method, SVD_METHODS)
    for flag, val in (("center", center), ("scale", scale)):
        if not isinstance(val, (bool, np.bool_)):
            raise TypeError(f"{where}: {flag} must be True or False, got {val!r}")
    if tol is not None and (not isinstance(tol, numbers.Real) or not tol > 0):
        raise ValueError(f"{where}: tol must be a number > 0, got {tol!r}")
    if maxit is not None:
        V.positive_int(f"{where}: maxit", maxit)
    return SVDLayer(
        input=input, k=k, name=name, center=bool(center or scale), scale=bool(scale),
        method=method, tol=tol, maxit=maxit, L1=_pair(where, "L1", L1, 0.0, 1.0),
        L2=_pair(where, "L2", L2, 0.0), upper_bound=_pair(where, "upper_bound", upper_bound, 0.0),
        nonneg=V.pair(f"{where}: nonneg", nonneg, kind=bool), W=W, H=H)


# --------------------------------------------------------------------------------------------
# merge nodes


def _branch_labels(nodes) -> str:
    return ", ".join(repr(n.label) for n in nodes)


@dataclass(eq=False)
class FactorShared(Node):
    """Row-binds inputs that share their samples; one layer on it shares H across them."""

    inputs: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.inputs)

    @property
    def label(self) -> str:
        return self.name or f"factor_shared({_branch_labels(self.inputs)})"

    def __repr__(self) -> str:
        return f"factor_shared({_branch_labels(self.inputs)})"


def factor_shared(*inputs: FactorInput, name: str | None = None) -> FactorShared:
    """Row-bind several inputs with the same samples; a layer on it shares one H.

    The row-bound matrix is never formed: the layer's Gram and right-hand side are sums over the
    inputs' blocks, and its W comes back as a dict of per-input blocks (input order).

    Parameters
    ----------
    *inputs : FactorInput
        At least 2 inputs (m_i × n, same n), dense or sparse.
    name : str, optional
        A label for messages.

    Returns
    -------
    FactorShared

    Raises
    ------
    TypeError
        An argument is not a ``factor_input``.
    ValueError
        Fewer than 2 inputs, or their sample counts differ.

    Examples
    --------
    >>> import numpy as np
    >>> a = factor_input(np.ones((5, 20)), name="rna")
    >>> b = factor_input(np.ones((3, 20)), name="protein")
    >>> factor_shared(a, b)
    factor_shared('rna', 'protein')
    """
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    if len(inputs) < 2:
        raise ValueError(f"factor_shared: requires at least 2 inputs, got {len(inputs)}")
    for i, x in enumerate(inputs):
        _check_node("factor_shared", f"inputs[{i}]", x)
        if not isinstance(x, FactorInput):
            raise TypeError(f"factor_shared: inputs[{i}] ({x.label!r}) is not a factor_input; "
                            f"factor_shared row-binds inputs (use factor_concat to combine "
                            f"layers)")
    if len({id(x) for x in inputs}) != len(inputs):
        raise ValueError(f"factor_shared: the same input is given twice "
                         f"({_branch_labels(inputs)})")
    _check_same_samples("factor_shared", inputs)
    return FactorShared(inputs=tuple(inputs), name=_check_name("factor_shared", name))


def _check_same_samples(where: str, inputs) -> None:
    known = [(x, x.shape[1]) for x in inputs if isinstance(x, FactorInput) and x.shape]
    if len({n for _, n in known}) > 1:
        desc = ", ".join(f"{x.label!r} has {n}" for x, n in known)
        raise ValueError(f"{where}: inputs must share the samples (columns): {desc}")


def _is_layer(x) -> bool:
    return isinstance(x, (NMFLayer, SVDLayer))


def branch_rank(x: Node) -> int | None:
    """The number of rows a node contributes to a downstream layer's input (None if unknown)."""
    if _is_layer(x):
        return x.k
    if isinstance(x, FactorConcat):
        ranks = [branch_rank(b) for b in x.branches]
        return None if any(r is None for r in ranks) else int(sum(ranks))
    if isinstance(x, FactorAdd):
        return branch_rank(x.branches[0])
    if isinstance(x, FactorCondition):
        r = branch_rank(x.input)
        return None if r is None else r + x.p
    return None


def _check_branches(where: str, branches) -> tuple[Node, ...]:
    if len(branches) == 1 and isinstance(branches[0], (list, tuple)):
        branches = tuple(branches[0])
    if len(branches) < 2:
        raise ValueError(f"{where}: requires at least 2 branches, got {len(branches)}")
    for i, b in enumerate(branches):
        _check_node(where, f"branches[{i}]", b)
        if isinstance(b, (FactorInput, FactorShared)) or (
                isinstance(b, FactorCondition) and branch_rank(b) is None):
            raise TypeError(f"{where}: branches[{i}] ({b.label!r}) is an input; {where} combines "
                            f"the H of layers (use factor_shared to combine inputs)")
    return tuple(branches)


@dataclass(eq=False)
class FactorConcat(Node):
    """Stacks the H of parallel branches: rank = the sum of the branch ranks."""

    branches: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.branches)

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_concat({_branch_labels(self.branches)})"

    def __repr__(self) -> str:
        return f"factor_concat({_branch_labels(self.branches)})"


def factor_concat(*branches: Node, name: str | None = None) -> FactorConcat:
    """Stack the H matrices of parallel branches (rank = sum of the branch ranks).

    A layer on it factorises ``t([H_1; H_2; …])`` (samples × Σk).

    Parameters
    ----------
    *branches : Node
        At least 2 layers (or merges of layers) over the same samples.
    name : str, optional

    Returns
    -------
    FactorConcat

    Examples
    --------
    >>> from dask_factor import datasets
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> both = factor_concat(nmf_layer(inp, 3, name="lo"), nmf_layer(inp, 10, name="hi"))
    >>> both.rank
    13
    """
    branches = _check_branches("factor_concat", branches)
    return FactorConcat(branches=branches, name=_check_name("factor_concat", name))


@dataclass(eq=False)
class FactorAdd(Node):
    """Element-wise sum of the H of branches with equal rank (a skip connection)."""

    branches: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.branches)

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_add({_branch_labels(self.branches)})"

    def __repr__(self) -> str:
        return f"factor_add({_branch_labels(self.branches)})"


def check_add_ranks(where: str, branches) -> None:
    ranks = [(b, branch_rank(b)) for b in branches]
    known = [(b, r) for b, r in ranks if r is not None]
    if len({r for _, r in known}) > 1:
        desc = ", ".join(f"{b.label!r} (k={r})" for b, r in known)
        raise ValueError(f"{where}: requires all branches to have the same rank k, got: {desc}")


def factor_add(*branches: Node, name: str | None = None) -> FactorAdd:
    """Element-wise sum of the H of branches with the same rank (a skip connection).

    Parameters
    ----------
    *branches : Node
        At least 2 layers (or sums of layers) with equal k, over the same samples.
    name : str, optional

    Returns
    -------
    FactorAdd

    Raises
    ------
    ValueError
        Fewer than 2 branches or different ranks (the message lists each branch's k).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> factor_add(nmf_layer(inp, 4, name="a"), nmf_layer(inp, 4, name="b")).rank
    4
    """
    branches = _check_branches("factor_add", branches)
    for i, b in enumerate(branches):
        if not (_is_layer(b) or isinstance(b, FactorAdd)):
            raise TypeError(f"factor_add: branches[{i}] ({b.label!r}) must be a layer or a "
                            f"factor_add of layers")
    check_add_ranks("factor_add", branches)
    return FactorAdd(branches=branches, name=_check_name("factor_add", name))


@dataclass(eq=False)
class FactorCondition(Node):
    """Appends the rows of a fixed matrix Z (p × n) to its input."""

    input: Node
    Z: np.ndarray
    name: str | None = None

    def upstream(self):
        return (self.input,)

    @property
    def p(self) -> int:
        """Rows appended (Z's covariates); orientation settled once n is known."""
        return int(self.Z.shape[0])

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_condition({self.input.label!r})"

    def __repr__(self) -> str:
        return (f"factor_condition({self.input.label!r}, Z=<{self.Z.shape[0]}×"
                f"{self.Z.shape[1]}>)")


def factor_condition(input: Node, Z, *, name: str | None = None) -> FactorCondition:
    """Append external covariates Z as extra rows of a node's matrix.

    On an input, a layer then factorises ``[A; Z]`` and its W gains Z's rows; on a layer (or a
    merge of layers), the downstream layer factorises ``t([H; Z])``. Z is used as p × n when its
    column count equals the samples, transposed when only its row count does (as RcppML).

    Parameters
    ----------
    input : Node
    Z : array-like of shape (p, n) or (n, p)
        Numeric, finite.
    name : str, optional
        Name of Z's row block (W blocks, messages); default ``"Z"``.

    Returns
    -------
    FactorCondition

    Examples
    --------
    >>> import numpy as np
    >>> inp = factor_input(np.ones((5, 20)), name="x")
    >>> factor_condition(inp, np.zeros((2, 20)))
    factor_condition('x', Z=<2×20>)
    """
    _check_node("factor_condition", "input", input)
    if sp.issparse(Z):
        Z = Z.toarray()
    if hasattr(Z, "to_numpy"):
        Z = Z.to_numpy()
    try:
        Z = np.asarray(Z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"factor_condition: 'Z' must be a numeric matrix, got "
                        f"{type(Z).__name__}") from exc
    if Z.ndim == 1:
        Z = Z[None, :]
    if Z.ndim != 2 or Z.size == 0:
        raise ValueError(f"factor_condition: 'Z' must be a non-empty 2-D matrix, got shape "
                         f"{Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ValueError("factor_condition: 'Z' must hold finite values")
    n = _samples_of(input)
    if n is not None:
        Z = orient_z("factor_condition", Z, n)
    return FactorCondition(input=input, Z=Z, name=_check_name("factor_condition", name))


def orient_z(where: str, Z: np.ndarray, n: int) -> np.ndarray:
    """Z as p × n (used as is if it has n columns, transposed if only its rows match)."""
    if Z.shape[1] == n:
        return Z
    if Z.shape[0] == n:
        return np.ascontiguousarray(Z.T)
    raise ValueError(f"{where}: Z has shape {Z.shape}; expected p × n or n × p with n = {n} "
                     f"samples")


def _samples_of(node: Node, _seen=None) -> int | None:
    """The sample count of a node, if an input upstream knows its shape."""
    _seen = _seen or set()
    if id(node) in _seen:
        return None
    _seen.add(id(node))
    if isinstance(node, FactorInput):
        return node.shape[1] if node.shape else None
    for up in node.upstream():
        n = _samples_of(up, _seen)
        if n is not None:
            return n
    return None
