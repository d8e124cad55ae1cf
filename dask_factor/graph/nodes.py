"""The blocks of a factorization graph: inputs, layers and merge nodes (plain dataclasses).

Constructors check their own arguments at once; checks that need the whole graph (cycles,
reachability, sample counts, names) run in :func:`dask_factor.graph.factor_net`. The merge nodes
(``factor_shared``, ``factor_concat``, ``factor_add``, ``factor_condition``) are in
:mod:`.merge`.

Orientation as in RcppML: an input is features × samples; a layer fed by an input factorises it as
``A ≈ W diag(d) H`` (W: features × k, H: k × samples); a layer fed by another layer factorises that
layer's ``t(H)`` (samples × k_up), so its W (samples × k) is the per-sample embedding and its H
(k × k_up) the connecting matrix.

Each node compiles itself (``factor_net`` only walks the graph): :meth:`Node.row_parts` gives the
engine parts (:mod:`dask_factor.engine.plan`) it contributes to a downstream layer's matrix,
:meth:`Node.ref` its RcppML ``input_ref`` label, and a layer's :meth:`LayerNode.compile` the
engine layer itself. A new kind of block is one class here or in :mod:`.merge`.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse as sp

from .. import checks as V
from .._params import PARAMETERS, check_value
from ..engine.nmf_layer import NMFSpec
from ..engine.plan import InputPart, LayerPart, LayerSpec, SideSpec
from ..engine.svd_layer import SVDSpec
from .config import FactorOptions

__all__ = ["Node", "FactorInput", "LayerNode", "NMFLayer", "SVDLayer", "factor_input",
           "nmf_layer", "svd_layer"]

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

    # ---- compilation (called by factor_net with its context ``c``)

    def row_parts(self, c) -> list:
        """The engine parts (:class:`~dask_factor.engine.plan.Part`) this node contributes, in
        order, to the matrix of a layer that reads it."""
        raise TypeError(f"factor_net: unsupported node {type(self).__name__}")

    def ref(self, c) -> str:
        """RcppML's ``input_ref`` of a layer reading this node (``input:aml``, …)."""
        return f"{type(self).__name__}:{c.name(self)}"

    def shares_samples(self) -> bool:
        """Whether a layer on this node has one W block per input (``factor_shared``)."""
        return False


def check_node(where: str, arg: str, x) -> Node:
    if not isinstance(x, Node):
        raise TypeError(f"{where}: '{arg}' must be a graph node (factor_input, a layer, "
                        f"factor_shared, …), got {type(x).__name__}")
    return x


def check_name(where: str, name) -> str | None:
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

    def row_parts(self, c):
        return [InputPart(c.input_shape(self)[0], c.name(self), source=c.input_pos(self))]

    def ref(self, c) -> str:
        return f"input:{c.name(self)}"

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
    name = check_name("factor_input", name)
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


class LayerNode(Node):
    """Base of the layer blocks: a layer reads one node and compiles to an engine layer."""

    input: Node
    k: int

    #: the engine layer type this block compiles to
    spec_type: type[LayerSpec] = LayerSpec

    def upstream(self):
        return (self.input,)

    @property
    def rank(self) -> int:
        return self.k

    def row_parts(self, c):
        return [LayerPart(self.k, c.name(self), source=c.layer_pos(self))]

    def ref(self, c) -> str:
        return f"layer:{c.name(self)}"

    def spec_options(self, where: str, W: SideSpec, H: SideSpec) -> dict:
        """Layer-type settings of the compiled layer (beyond the common ones)."""
        return {}

    def compile(self, *, index: int, name: str, parts: tuple, input_label: str, W: SideSpec,
                H: SideSpec, shared: bool) -> LayerSpec:
        """The engine layer of this block (see :mod:`dask_factor.engine.plan`)."""
        where = f"{self.kind}_layer {name!r}"
        return self.spec_type(index=index, name=name, k=self.k, parts=parts, W=W, H=H,
                              input_label=input_label, shared=shared,
                              **self.spec_options(where, W, H))


@dataclass(eq=False)
class NMFLayer(LayerNode):
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
    loss: str | None = None

    kind = "nmf"
    spec_type = NMFSpec

    def spec_options(self, where, W, H):
        return {} if self.loss is None else {"loss": self.loss}

    def __repr__(self) -> str:
        return f"nmf_layer(name={self.name!r}, k={self.k}, input={self.input.label!r})"


def _layer_common(where, input, k, name, W, H):
    check_node(where, "input", input)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{where}: k must be an integer rank, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"{where}: k must be >= 1, got {k}")
    return (int(k), check_name(where, name), _check_side(where, "W", W, "W"),
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
    loss: str | None = None,
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
        RcppML options that graphs do not fit; anything but the default raises
        ``NotImplementedError`` here, before any work (``robust`` and ``zi`` are ``nmf()``
        options: the message says how to fit them).
    loss : str, optional
        The layer's loss (``"mse"``, ``"kl"``, ``"nb"``, ``"gp"``, ``"gamma"``,
        ``"inverse_gaussian"``, ``"tweedie"``; docs/losses.md); default: ``factor_config``'s.
        A count-data loss is fitted by a graph of this one layer on one input (exactly as
        ``nmf(A, k, loss=...)``; also under ``cross_validate_graph``); ``factor_net`` refuses
        it in any other graph.

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
    for flag, val in (("projective", projective), ("symmetric", symmetric)):
        if val:
            raise NotImplementedError(f"{where}: {flag}=True is not implemented "
                                      f"(later work)")
    if robust is not False:
        raise NotImplementedError(f"{where}: robust={robust!r} is fitted by nmf() only; fit the "
                                  f"matrix with nmf(A, k, robust={robust!r}) (docs/losses.md)")
    if zi != "none":
        raise NotImplementedError(f"{where}: zi={zi!r} is fitted by nmf() only; fit the matrix "
                                  f"with nmf(A, k, loss='nb', zi={zi!r}) (docs/losses.md)")
    if loss is not None:
        loss = check_value(f"{where}: loss", loss, PARAMETERS["loss"])
    return NMFLayer(loss=loss,
        input=input, k=k, name=name, L1=_pair(where, "L1", L1, 0.0, 1.0),
        L2=_pair(where, "L2", L2, 0.0), L21=_pair(where, "L21", L21, 0.0),
        angular=_pair(where, "angular", angular, 0.0),
        upper_bound=_pair(where, "upper_bound", upper_bound, 0.0),
        nonneg=V.pair(f"{where}: nonneg", nonneg, kind=bool), W=W, H=H)


@dataclass(eq=False)
class SVDLayer(LayerNode):
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
    spec_type = SVDSpec

    def spec_options(self, where, W, H):
        if any(s.target is not None or s.graph is not None for s in (W, H)):
            raise ValueError(f"{where}: targets and graph Laplacians are NMF options")
        return dict(center=self.center, scale=self.scale, method=self.method, tol=self.tol,
                    maxit=self.maxit)

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

    A real truncated SVD with implicit centring/scaling (docs/decisions.md), not RcppML's
    unconstrained ALS, anywhere in a graph: ``svd()`` of the matrix an ``nmf_layer`` in its place
    would factorise, with the samples as the observations. On an input (or ``factor_shared``/
    ``factor_condition`` rows) that is A itself (features × samples); fed by layers it is the
    upstream H (k_up × n; stacked by ``factor_concat``, summed by ``factor_add``), so
    ``svd_layer(fine, k, center=True)`` is the PCA of ``fine``'s H: W (n × k) holds the samples'
    scores, H (k × k_up) the loadings over the upstream factors.

    * On inputs the matrix is fixed: its SVD is computed once, by the SVD engine, before the
      sweeps.
    * Fed by layers, every update of the layer in the joint schedule is the exact SVD of the
      upstream H as it is then (the step that minimises the layer's loss given its input; a
      tall-skinny QR over the sample blocks and the SVD of its small R factor).

    W and the rows of H are orthonormal, ``d`` holds the singular values (decreasing), and the
    largest-magnitude loading of every factor is positive (W's column on inputs, H's row fed by
    layers). Downstream layers read its per-sample factor like an NMF layer's normalised H
    (``t(H)`` on inputs, W fed by layers; signed; ``d`` not applied).

    Parameters
    ----------
    input : Node
    k : int
        ``k < min(rows, samples)`` on inputs (Krylov methods), ``k <= min(rows, samples)`` when
        fed by layers.
    name : str, optional
    center : bool, default False
        Subtract each feature's mean over the samples, implicitly (fed by layers: each upstream
        factor's mean).
    scale : bool, default False
        Divide each feature by its population standard deviation over the samples (implies
        ``center``).
    method : {"auto", "lanczos", "irlba", "randomized", "deflation", "krylov"}
        The SVD engine's method on inputs (a layer fed by layers is solved exactly);
        ``"deflation"``/``"krylov"`` (RcppML's constrained methods) raise
        ``NotImplementedError`` in ``fit``.
    tol, maxit : optional
        The SVD engine's tolerance and iteration budget on inputs (method defaults when None).
    L1, L2, upper_bound, nonneg
        Constrained SVD options; only the defaults (unconstrained) are supported: anything else
        raises ``NotImplementedError`` in ``fit``, before any work.
    W, H : FactorOptions, optional

    Returns
    -------
    SVDLayer
        W is m × k (left singular vectors), d the singular values, H is k × n (or n × k and
        k × k_up when fed by layers).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_net, factor_config, fit
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> svd_layer(inp, 5, center=True, name="pca")
    svd_layer(name='pca', k=5, input='aml', center=True, scale=False, method='auto')
    >>> deep = svd_layer(nmf_layer(inp, 6, name="fine"), 3, center=True, name="pc")
    >>> res = fit(factor_net(inp, deep, factor_config(maxit=5, tol=0, seed=1)))
    >>> res.pc.W.shape, res.pc.H.shape, bool(np.allclose(res.pc.W.T @ res.pc.W, np.eye(3)))
    ((135, 3), (3, 6), True)
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


def is_layer(x) -> bool:
    return isinstance(x, LayerNode)
