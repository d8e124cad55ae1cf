"""What ``fit()`` returns: per-layer factors by name, the whole-graph history, and ``predict``.

Loss units are the same everywhere (docs/decisions.md): every layer reports ``sse`` and
``mse`` of its own input (``‖input − W diag(d) H‖²`` and that over the input's entries), histories
are MSE, and the graph's history is the sum of the layers' MSE after every sweep (for a one-layer
graph, that layer's history).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LayerResult", "GraphResult"]


@dataclass
class LayerResult:
    """One fitted layer: ``input ≈ W diag(d) H``.

    Attributes
    ----------
    name : str
    kind : {"nmf", "svd"}
    W : ndarray of shape (m, k), or dict of ndarray
        Feature loadings of a layer that reads an input (for ``factor_shared``: a dict of
        per-input blocks ``(m_i, k)`` keyed by input name, in input order); for a layer fed by
        another layer, the per-sample embedding (n × k).
    d : ndarray of shape (k,)
    H : ndarray of shape (k, n) or (k, k_up)
        Sample embedding, or the connecting matrix of a layer fed by another layer.
    iterations : int
        Iterations (one-layer graphs) or outer sweeps (multi-layer graphs; every layer reports
        the same count).
    converged : bool
    sse, mse : float
        Of the layer's own input matrix.
    loss_history : list of float
        MSE after every iteration / sweep.
    input : str
        The layer's input, e.g. ``"input:aml"``, ``"shared:species,geography"``,
        ``"layer:fine"``, ``"concat:lo,hi"``.
    embedding : bool
        True for a layer fed by layers (W is then per sample).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> layer = fit(factor_net(inp, nmf_layer(inp, 4, name="l"), factor_config(maxit=5)))["l"]
    >>> layer.W.shape, layer.d.shape, layer.H.shape, layer.loss == layer.mse
    ((824, 4), (4,), (4, 135), True)
    """

    name: str
    kind: str
    W: np.ndarray | dict[str, np.ndarray]
    d: np.ndarray
    H: np.ndarray
    iterations: int
    converged: bool
    sse: float
    mse: float
    loss_history: list[float]
    input: str
    embedding: bool = False

    @property
    def k(self) -> int:
        return int(np.asarray(self.d).size)

    @property
    def loss(self) -> float:
        """The final MSE (same unit as ``loss_history``)."""
        return self.mse

    @property
    def W_stacked(self) -> np.ndarray:
        """W as one matrix (the per-input blocks of a shared layer row-bound, input order)."""
        if isinstance(self.W, Mapping):
            return np.vstack([np.asarray(w) for w in self.W.values()])
        return np.asarray(self.W)

    def __repr__(self) -> str:
        if isinstance(self.W, Mapping):
            w = "{" + ", ".join(f"{k}: {v.shape[0]}×{v.shape[1]}" for k, v in self.W.items()) + "}"
        else:
            w = f"{self.W.shape[0]}×{self.W.shape[1]}"
        return (f"LayerResult({self.name!r}, {self.kind}, k={self.k}, W={w}, "
                f"H={self.H.shape[0]}×{self.H.shape[1]}, input={self.input!r}, "
                f"mse={self.mse:.6g}, iterations={self.iterations})")


@dataclass
class GraphResult:
    """A fitted factorization graph.

    Layers are reached by name, ``result["fine"]`` or ``result.fine``, and iterate in graph
    order (upstream first).

    Attributes
    ----------
    layers : dict of str to LayerResult
        Graph order.
    loss_history : list of float
        Whole-graph loss after every iteration/sweep: the sum of the layers' MSE.
    iterations : int
        Iterations (one layer) or outer sweeps (several layers).
    warmup : int
        Warm-up iterations each layer ran before the sweeps (0 for one-layer graphs).
    converged : bool
    config : dict
        ``factor_config`` settings.
    settings : dict
        What was actually used: seed, solver, blocks, path (``"nmf"`` or ``"graph"``).
    plan : list of dict
        The compiled graph (layer order, inputs, options): enough to ``predict`` after a load.
    input_names : list of str
    runtime : float
        Seconds.
    names : dict or None
        Names of the rows and columns, when known (``dask-factor fit SPEC.yaml`` reads them from
        the inputs' metadata): ``{"samples": [...], "features": {input name: [...]}}``, either
        key may be missing. Layers that read inputs have W rows = their inputs' features (in
        input order) and H columns = the samples; layers fed by layers have W rows = the
        samples. Saved and loaded with the result.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> res = fit(factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 2, name="coarse"),
    ...                      factor_config(maxit=5, seed=1)))
    >>> list(res), res["coarse"] is res.coarse, len(res.loss_history) == res.iterations
    (['fine', 'coarse'], True, True)
    """

    layers: dict[str, LayerResult]
    loss_history: list[float]
    iterations: int
    warmup: int
    converged: bool
    config: dict
    settings: dict
    plan: list[dict]
    input_names: list[str]
    runtime: float = 0.0
    names: dict | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    # ---- mapping access

    def __getitem__(self, name: str) -> LayerResult:
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r}; layers: {list(self.layers)}") from None

    def __getattr__(self, name: str) -> LayerResult:
        if name.startswith("_") or name in ("layers",):
            raise AttributeError(name)
        layers = self.__dict__.get("layers", {})
        if name in layers:
            return layers[name]
        raise AttributeError(f"GraphResult has no attribute or layer {name!r}; layers: "
                             f"{list(layers)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __contains__(self, name) -> bool:
        return name in self.layers

    def keys(self):
        return self.layers.keys()

    @property
    def total_loss(self) -> float:
        """The last value of ``loss_history``."""
        return float(self.loss_history[-1]) if self.loss_history else float("nan")

    def __repr__(self) -> str:
        state = "converged" if self.converged else "not converged"
        inner = "\n".join(f"  {lr!r}" for lr in self.layers.values())
        return (f"GraphResult({len(self.layers)} layer(s), iterations={self.iterations} "
                f"({state}), total_loss={self.total_loss:.6g})\n{inner}")

    # ---- persistence and interop (implemented in .store)

    def save(self, path, *, overwrite: bool = False):
        """Write the result to a zarr store (atomically: a temporary sibling, then a rename).

        Stores every layer's W (per-input blocks for shared layers), d, H and history, the
        config, the settings, the compiled plan, the graph history and ``names`` (sample and
        feature names) when set. Targets and Laplacians (inputs of the fit) are not stored.

        Parameters
        ----------
        path : str or path-like
            A directory that becomes the zarr store.
        overwrite : bool, default False

        Returns
        -------
        pathlib.Path

        Examples
        --------
        >>> import os, tempfile
        >>> from dask_factor import datasets
        >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
        >>> A, rows, cols = datasets.load("aml")
        >>> inp = factor_input(A, name="aml")
        >>> result = fit(factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 3,
        ...                                        name="coarse"), factor_config(maxit=5)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = result.save(os.path.join(tmp, "deep.zarr"))
        ...     path.name, GraphResult.load(path)["coarse"].W.shape
        ('deep.zarr', (135, 3))
        """
        from .store import save_result

        return save_result(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> GraphResult:
        """Read a result written by :meth:`save`.

        Examples
        --------
        >>> import os, tempfile
        >>> from dask_factor import datasets
        >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
        >>> A, rows, cols = datasets.load("aml")
        >>> inp = factor_input(A, name="aml")
        >>> result = fit(factor_net(inp, nmf_layer(inp, 4, name="l"), factor_config(maxit=5)))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     res = GraphResult.load(result.save(os.path.join(tmp, "nmf.zarr")))
        >>> list(res), res["l"].W.shape, res.iterations == result.iterations
        (['l'], (824, 4), True)
        """
        from .store import load_result

        return load_result(path)

    def to_anndata(self, adata, *, input: str | None = None, uns_key: str = "factor_net",
                   copy: bool = False, overwrite: bool = False):
        """Store the factors in an AnnData (cells × genes) the AnnData way.

        For every layer ``name``:

        * ``obsm[f"X_{name}"]`` = the per-sample embedding, cells × k (``Hᵀ`` of a layer that
          reads an input, ``W`` of a layer fed by a layer);
        * ``varm[f"{name}_W"]`` = the W rows of ``input`` (genes × k), for layers that read it;
        * ``uns[uns_key]["layers"][name]`` = d, the loss history, mse, iterations, the input,
          the connecting H of a deep layer and W blocks of other inputs;

        and ``uns[uns_key]`` also gets ``config``, ``loss_history``, ``iterations``, ``converged``.

        Parameters
        ----------
        adata : anndata.AnnData or path to an ``.h5ad``
            ``n_obs`` must equal the graph's samples. A file is updated in place without
            reading X: each element is written under a temporary key, then renamed.
        input : str, optional
            The graph input whose features are ``adata.var`` (default: the first input).
        uns_key : str, default "factor_net"
        copy : bool, default False
            Return an updated copy instead of updating ``adata`` in place (objects only).
        overwrite : bool, default False
            A file only: replace keys that exist (without it, an existing key is refused before
            anything is written). An object's keys are always replaced.

        Returns
        -------
        anndata.AnnData, or the path of the updated file

        Examples
        --------
        >>> import anndata as ad
        >>> from dask_factor import datasets
        >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
        >>> A, rows, cols = datasets.load("aml")                  # genes × samples
        >>> inp = factor_input(A, name="aml")
        >>> result = fit(factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 3,
        ...                                        name="coarse"), factor_config(maxit=5)))
        >>> adata = result.to_anndata(ad.AnnData(A.T))             # samples × genes
        >>> adata.obsm["X_fine"].shape, adata.obsm["X_coarse"].shape, adata.varm["fine_W"].shape
        ((135, 6), (135, 3), (824, 6))
        """
        from .store import to_anndata

        return to_anndata(self, adata, input=input, uns_key=uns_key, copy=copy,
                          overwrite=overwrite)

    def predict(self, new_data, *, conditions: Mapping | None = None, client=None
                ) -> dict[str, np.ndarray]:
        """Project new samples through the graph, layer by layer.

        Each layer that reads inputs solves ``H_new = NNLS(WᵀW + L2, Σ_i W_iᵀ A_i,new − L1)``
        (coordinate descent to convergence, the layer's H-side options); a layer fed by layers
        then projects the new samples' normalised ``t(H_new)`` onto its fitted H. One Dask
        graph for the whole net.

        Parameters
        ----------
        new_data : array-like of shape (m, n_new), or dict of str to array-like
            The new samples over the same features; a dict keyed by input name when the graph
            has several inputs.
        conditions : dict of str to array-like (p, n_new), optional
            New Z for every ``factor_condition`` (keyed by its name).
        client : distributed.Client, optional

        Returns
        -------
        dict of str to ndarray
            Per layer, the new samples' embedding in the orientation of the fitted result:
            ``H_new`` (k × n_new) for a layer that reads inputs, ``W_new`` (n_new × k) for a
            layer fed by layers. Scaled like the fitted factors
            (``A_new ≈ W diag(d) H_new``).

        Examples
        --------
        >>> from dask_factor import datasets
        >>> from dask_factor.graph import factor_input, nmf_layer, factor_net, factor_config, fit
        >>> A, rows, cols = datasets.load("aml")
        >>> inp = factor_input(A, name="aml")
        >>> net = factor_net(inp, nmf_layer(nmf_layer(inp, 6, name="fine"), 2, name="coarse"),
        ...                  factor_config(maxit=5, seed=1))
        >>> out = fit(net).predict(A[:, :7])
        >>> out["fine"].shape, out["coarse"].shape
        ((6, 7), (7, 2))
        """
        from .predict import predict_graph

        return predict_graph(self, new_data, conditions=conditions,
                             client=client or self._client)
