"""One NMF fit of one rank, ``A ≈ W diag(d) H`` of a chunked matrix on Dask, and its result.

:func:`fit_nmf` is what ``nmf(A, k)`` runs for an integer ``k``, and what the rank search
(:mod:`dask_factor.rank`) runs for every rank; :func:`dask_factor.nmf.nmf` dispatches between them.

The algorithm is RcppML's (docs/concepts.md): alternating updates, H first then W, each an NNLS
solve on the normal equations; L1 subtracted from the right-hand side, L2 added to the Gram
diagonal; the scale of each factor is pulled into ``d`` (L1 norms by default) and factors are sorted
by decreasing ``d``; ``tol`` is the relative change of the loss, which must hold for 5 consecutive
iterations. Every iteration is one pass of Dask tasks over the column blocks of A
(docs/design.md), so A may live on disk or on a cluster. Masked fits (``test_fraction``, ``mask``)
run the masked engine and return the same :class:`NMFResult`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import dask
import dask.array as da
import numpy as np

from ._params import PARAMETERS, check_value, validate_params
from .engine.als import ALSConfig, ALSState, fit_als
from .engine.blocks import as_blocked
from .engine.driver import relative_change
from .engine.inputs import check_shape, open_lazy, prepare_input
from .engine.irls import LossSpec, evaluate_loss, fit_irls
from .engine.masked import MaskSpec, Penalties, fit_masked
from .engine.multi import SideSpec
from .engine.project import project_blocks, reconstruction_sse
from .kernels.rng import r_runif
from .progress import iteration_progress

__all__ = ["fit_nmf", "NMFResult", "resolve_solver", "initial_w", "AUTO_CD_MAXIT", "AUTO_CD_TOL"]

#: the ``solver="auto"`` rule, chosen by measured time to a given loss (benchmarks/bench_nmf.py):
#: exact NNLS solves (``"active"``: a warm start's free set solved by Cholesky and checked for
#: optimality, coordinate-descent sweeps only until the free set settles) reach RcppML's
#: 50-iteration Cholesky loss on pbmc3k in a fraction of the iterations, where Cholesky-then-clip
#: is only a projected least-squares step; the sweep budget and tolerance bound the sweeps of a
#: solve whose free set has not settled
AUTO_CD_MAXIT = 10
AUTO_CD_TOL = 1e-4


def resolve_solver(
    solver: str, cd_maxit: int | None, cd_tol: float | None, *, push_away: bool = False
) -> tuple[str, int, float]:
    """Map ``solver="auto"|"cd"|"cholesky"`` to (solver, cd_maxit, cd_tol).

    ``"auto"`` → ``"active"``: exact NNLS solves with warm starts. Each solve first tries the
    previous solution's free set (the coordinates above zero), solved by Cholesky and accepted
    when the optimality conditions hold; otherwise coordinate-descent sweeps (at most
    ``AUTO_CD_MAXIT`` for a warm start, tolerance ``AUTO_CD_TOL``, unless given) run until the
    free set settles and the solve is finished the same way. ``"cd"`` → RcppML's coordinate
    descent (100 sweeps, tol 1e-8); ``"cholesky"`` → RcppML's solve-then-clip, which reproduces
    RcppML's runs exactly.

    ``push_away`` (a target with ``target_lambda < 0``): ``"auto"`` keeps the sweep-limited
    coordinate descent (``"cd"`` with the auto budget). The pushed-away Gram is clipped to be
    barely positive definite, and exact solves follow its near-null directions: on hawaiibirds
    (k = 8, λ = −0.3) exact solves lost the lower separability that the push exists for.

    Examples
    --------
    >>> resolve_solver("auto", None, None)
    ('active', 10, 0.0001)
    >>> resolve_solver("cd", None, None)
    ('cd', 100, 1e-08)
    >>> resolve_solver("auto", None, None, push_away=True)
    ('cd', 10, 0.0001)
    """
    check_value("solver", solver, PARAMETERS["solver"])
    if solver == "auto":
        tol = float(cd_tol if cd_tol is not None else AUTO_CD_TOL)
        return "cd" if push_away else "active", int(cd_maxit or AUTO_CD_MAXIT), tol
    return solver, int(cd_maxit or 100), float(cd_tol if cd_tol is not None else 1e-8)


def initial_w(m: int, k: int, seed: int, rng: str) -> np.ndarray:
    """The initial W (m × k, uniform on [0, 1)) for a seed.

    ``rng="rcppml"`` reproduces R's ``set.seed(seed); matrix(runif(m*k), m, k)``; ``"numpy"`` uses
    ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> initial_w(3, 2, 42, "rcppml")[:, 0].round(7)   # R: set.seed(42); runif(3)
    array([0.914806 , 0.9370754, 0.2861395])
    """
    if rng == "rcppml":
        return r_runif(seed, m * k).reshape(k, m).T.copy()
    return np.random.default_rng(seed).random((m, k))


@dataclass
class NMFResult:
    """A fitted NMF model ``A ≈ W diag(d) H``.

    Attributes
    ----------
    W : ndarray of shape (m, k)
        Feature loadings; columns sum to 1 (``norm="L1"``) or have unit L2 norm.
    d : ndarray of shape (k,)
        Scale of each factor, sorted decreasing when ``sort_model``.
    H : ndarray of shape (k, n)
        Sample embedding, rows normalised like W's columns (gathered from the workers on first
        access; ``H_dask`` keeps it distributed).
    iterations : int
    converged : bool
        True when the relative loss change stayed below ``tol`` for 5 consecutive iterations.
    sse, mse : float
        ‖A − W diag(d) H‖²_F and the same divided by m·n.
    loss_history : list of float
        MSE after every iteration.
    loss : str
        The fit's loss (``"mse"`` or a count-data loss, docs/losses.md).
    objective, objective_history : float, list of float
        Count-data losses: the sum of the per-entry loss (Poisson/Gamma/inverse Gaussian/
        Tweedie deviance, NB or GP negative log-likelihood) of the returned model, and after
        every iteration (what ``tol`` watches). NaN/empty for ``"mse"`` (see ``sse``).
    dispersion : ndarray of shape (m,) or None
        ``loss="nb"``: the size r of each row; ``loss="gp"``: θ of each row.
    pi : ndarray of shape (m,) or (n,), or None
        Zero inflation (``zi="row"``/``"col"``): the probability of an extra zero per row or
        per column.
    tol_history : list of float
        Relative loss change from the 2nd iteration on.
    settings : dict
        Every setting used, including the seed actually drawn and the resolved solver.
    test_loss, train_loss : float
        Masked fits (``test_fraction``, ``mask``): MSE over the held-out and the training
        entries of the returned model (the best test iteration's); ``sse``/``mse`` are then the
        training SSE/MSE. NaN for ordinary fits.
    best_iter : int
        1-based iteration of the returned model (masked fits).
    test_loss_history, train_loss_history : list of float
        Per-iteration MSE of masked fits (docs/cross_validation.md).
    test_objective, train_objective : float
        Masked fits under a count-data loss: the mean per-entry loss (the fit's own ℓ) over
        the held-out and the training entries the loss covers, of the returned model; the
        score a cross-validated fit selects by. NaN otherwise.
    test_objective_history : list of float
        ``test_objective`` after every iteration.
    """

    W: np.ndarray
    d: np.ndarray
    H_dask: da.Array
    iterations: int
    converged: bool
    sse: float
    mse: float
    loss_history: list[float]
    tol_history: list[float]
    settings: dict[str, Any]
    runtime: float = 0.0
    graph_sizes: list[int] = field(default_factory=list, repr=False)
    #: cross-validated / masked fits (``test_fraction``, ``mask``, NaN): MSE of the returned
    #: (best test) iteration over the test and the training entries, and their histories
    test_loss: float = float("nan")
    train_loss: float = float("nan")
    best_iter: int = 0
    test_loss_history: list[float] = field(default_factory=list)
    train_loss_history: list[float] = field(default_factory=list)
    _H: np.ndarray | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)
    #: names of the m features (rows of A) and n samples (columns), when known: set by
    #: ``dask_factor.tl``, the estimators and :meth:`load`; saved and written to AnnData
    feature_names: list[str] | None = field(default=None, repr=False)
    sample_names: list[str] | None = field(default=None, repr=False)
    #: the fit's loss (docs/losses.md); under a count-data loss its objective (the sum of the
    #: per-entry loss over the entries it covers), per-iteration history, and the NB size /
    #: GP θ per row (m,)
    loss: str = "mse"
    objective: float = float("nan")
    objective_history: list[float] = field(default_factory=list, repr=False)
    dispersion: np.ndarray | None = field(default=None, repr=False)
    #: masked fits under a count-data loss: mean held-out / training loss (own ℓ) per entry
    test_objective: float = float("nan")
    train_objective: float = float("nan")
    test_objective_history: list[float] = field(default_factory=list, repr=False)
    pi: np.ndarray | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return int(self.d.size)

    @property
    def H(self) -> np.ndarray:
        if self._H is None:
            if self._client is not None:
                self._H = np.asarray(self._client.compute(self.H_dask).result())
            else:
                self._H = np.asarray(self.H_dask.compute())
        return self._H

    def __repr__(self) -> str:
        m, k = self.W.shape
        state = "converged" if self.converged else "not converged"
        return (f"NMFResult(m={m}, n={self.H_dask.shape[1]}, k={k}, iterations={self.iterations}"
                f" ({state}), mse={self.mse:.6g})")

    def _cfg(self, k: int | None = None) -> ALSConfig:
        s = self.settings
        return ALSConfig(k=k or self.k, L1=tuple(s["L1"]), L2=tuple(s["L2"]),
                         upper_bound=tuple(s["upper_bound"]), nonneg=tuple(s["nonneg"]),
                         solver="cd", cd_maxit=100, cd_tol=1e-8, dtype=np.dtype(s["dtype"]))

    def evaluate(self, A, *, loss: str | None = None, dispersion=None,
                 tweedie_power: float | None = None, robust: bool | str | float = False,
                 zi: str = "none", pi=None, client=None) -> float:
        """Mean squared error, or a count-data loss, of the model against a matrix, exactly.

        One pass over A's column blocks (out of core for file inputs), float64 sums in a fixed
        order; only the totals reach the client.

        Parameters
        ----------
        A : matrix-like of shape (m, n)
            Anything ``nmf`` accepts (numpy, scipy.sparse, dask array, path).
        loss : str, optional
            ``None`` or ``"mse"``: the mean squared error. A count-data loss (``"kl"``,
            ``"nb"``, ``"gp"``, ``"gamma"``, ``"inverse_gaussian"``, ``"tweedie"``): the sum of
            its per-entry loss, the unit of ``objective`` (docs/losses.md).
        dispersion : float or array of shape (m,), optional
            NB size r or GP θ per row; default: the model's own when it was fitted with that
            loss (required otherwise for ``"nb"``/``"gp"``).
        tweedie_power : float, optional
            Default: the model's ``tweedie_power`` setting, else 1.5.
        robust : bool, "mae" or float > 0, default False
            Score the Huber-robust objective of ``nmf(robust=...)`` (True is δ = 1.345,
            ``"mae"`` δ = 1e-4), under ``loss`` (least squares included: then the sum, not the
            mean). The default scores the plain loss whatever the model was fitted with.
        zi : {"none", "row", "col"}, default "none"
            Score the zero-inflated negative log-likelihood of ``nmf(zi=...)`` (``loss="nb"``
            or ``"gp"``) with the extra-zero probabilities ``pi``.
        pi : array of shape (m,) for ``zi="row"``, (n,) for ``zi="col"``, optional
            Probabilities in [0, 1); default: the model's own ``pi`` when it was fitted with
            that ``zi`` (required otherwise).

        Returns
        -------
        float
            ``mean((A − W diag(d) H)²)`` over all m·n entries, or ``Σ ℓ(A_ij, μ_ij)`` (robust
            or zero-inflated as asked): a model's own settings give its ``objective``.

        Examples
        --------
        >>> from dask_factor import datasets, nmf
        >>> A = datasets.load("hawaiibirds").matrix
        >>> model = nmf(A, 4, seed=1, maxit=5)
        >>> abs(model.evaluate(A) - model.mse) < 1e-6
        True
        >>> kl = nmf(A, 4, seed=1, maxit=5, loss="kl")
        >>> abs(kl.evaluate(A, loss="kl") - kl.objective) < 1e-6 * kl.objective
        True
        >>> nb = nmf(A, 4, seed=1, maxit=5, loss="nb", zi="row")
        >>> abs(nb.evaluate(A, loss="nb", zi="row") - nb.objective) < 1e-6 * nb.objective
        True
        """
        client = client or self._client
        v = validate_params({"loss": "mse" if loss is None else loss, "robust": robust,
                             "zi": zi}, entry="evaluate")
        delta = huber_delta(v["robust"])
        if v["robust"] is not False:
            loss = v["loss"]
        disp = None
        if loss in ("nb", "gp"):
            disp = dispersion if dispersion is not None else (
                self.dispersion if self.loss == loss else None)
            if disp is None:
                what = "size r" if loss == "nb" else "θ"
                raise ValueError(f"dispersion: loss={loss!r} needs the {what} of each row (the "
                                 f"model was fitted with loss={self.loss!r})")
            disp = np.broadcast_to(np.asarray(disp, dtype=np.float64),
                                   (self.W.shape[0],)).copy()
        power = tweedie_power if tweedie_power is not None else float(
            self.settings.get("tweedie_power", 1.5))
        zpi = None
        if pi is not None and zi == "none":
            raise ValueError("pi: extra-zero probabilities are scored with zi='row' or "
                             "zi='col' (got zi='none')")
        if zi != "none":
            size = self.W.shape[0] if zi == "row" else self.H_dask.shape[1]
            zpi = pi if pi is not None else (
                self.pi if self.settings.get("zi", "none") == zi else None)
            if zpi is None:
                raise ValueError(f"pi: zi={zi!r} needs the probability of an extra zero per "
                                 f"{zi} (the model was fitted with zi="
                                 f"{self.settings.get('zi', 'none')!r})")
            zpi = np.asarray(zpi, dtype=np.float64)
            if zpi.shape != (size,):
                raise ValueError(f"pi: expected {size} probabilities (one per {zi}), got shape "
                                 f"{zpi.shape}")
            if not np.all((zpi >= 0) & (zpi < 1)):
                raise ValueError(f"pi: expected probabilities in [0, 1), got values from "
                                 f"{np.min(zpi)} to {np.max(zpi)}")
        prep = prepare_input(A, name="A", dtype=np.float64, client=client)
        m, n = prep.shape
        if (m, n) != (self.W.shape[0], self.H_dask.shape[1]):
            raise ValueError(f"A: expected shape {(self.W.shape[0], self.H_dask.shape[1])} "
                             f"(the fitted matrix), got {(m, n)}")
        Wd = self.W.astype(np.float64) * self.d
        # slices of the distributed H: nothing is gathered on the client or embedded in graphs
        h_blocks = [self.H_dask[:, a:b].T
                    for a, b in zip(prep.bm.bounds[:-1], prep.bm.bounds[1:])]
        if (loss is not None and loss != "mse") or delta > 0:
            if loss != "mse" and prep.n_negative:
                raise ValueError(f"A: loss={loss!r} needs non-negative data; found "
                                 f"{prep.n_negative} negative entries")
            return evaluate_loss(prep.bm, Wd, h_blocks, loss, disp, power, client, delta=delta,
                                 pi=zpi, zi=zi)[0]
        sse, _ = reconstruction_sse(prep.bm, Wd, h_blocks, client)
        return sse / (m * n)

    def predict(self, A_new, *, client=None) -> np.ndarray:
        """Project new samples onto W: ``H_new = NNLS(WᵀW + L2, WᵀA_new − L1)``.

        Uses the model's H-side L1, L2 and upper bound and coordinate descent to convergence
        (100 sweeps, tol 1e-8), block by block on Dask.

        Parameters
        ----------
        A_new : matrix-like of shape (m, n_new)
            New samples over the same m features.

        Returns
        -------
        H_new : ndarray of shape (k, n_new)
            Scaled like ``H``: ``A_new ≈ W diag(d) H_new``. (RcppML's ``predict`` returns
            ``diag(d) H_new``.)

        Examples
        --------
        >>> from dask_factor import datasets, nmf
        >>> A = datasets.load("hawaiibirds").matrix
        >>> model = nmf(A, 4, seed=1, maxit=5)
        >>> model.predict(A[:, :10]).shape
        (4, 10)
        """
        client = client or self._client
        prep = prepare_input(A_new, name="A_new", dtype=np.dtype(self.settings["dtype"]),
                             client=client)
        if prep.shape[0] != self.W.shape[0]:
            raise ValueError(f"A_new: expected {self.W.shape[0]} rows (the model's features), "
                             f"got {prep.shape[0]}")
        blocks = project_blocks(prep.bm, self.W, self._cfg(), client)
        parts = (client.compute(blocks, sync=True) if client is not None
                 else dask.compute(*blocks))
        Ht = np.vstack([np.asarray(p, dtype=np.float64) for p in parts])
        return (Ht / self.d).T


    # ---- results that travel (dask_factor._nmf_result_io) --------------------------------

    def save(self, path: str | os.PathLike, *, overwrite: bool = False):
        """Save the model to a zarr store, atomically, with its feature and sample names.

        Parameters
        ----------
        path : path-like
            The store (a directory). Written to a temporary sibling and renamed when complete.
        overwrite : bool, default False
            Replace an existing store — only one written by ``save``.

        Returns
        -------
        pathlib.Path

        Examples
        --------
        >>> import tempfile, os
        >>> from dask_factor import datasets, nmf, NMFResult
        >>> A, rows, cols = datasets.load("hawaiibirds")
        >>> model = nmf(A, 3, seed=1, maxit=5)
        >>> model.feature_names = list(rows.index)
        >>> path = model.save(os.path.join(tempfile.mkdtemp(), "model.zarr"))
        >>> back = NMFResult.load(path)
        >>> back.W.shape, back.feature_names[:2] == list(rows.index[:2])
        ((183, 3), True)
        """
        from ._nmf_result_io import save

        return save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NMFResult:
        """Read a model written by :meth:`save` (``evaluate``/``predict`` work on it).

        Also reads the ``.npz`` that ``dask-factor fit SRC OUT.npz`` writes (and wrote before
        results were zarr stores: W, d, H, loss history and settings; ``converged`` is then
        recomputed from the history with the fit's rule).

        Parameters
        ----------
        path : path-like
            A zarr store from :meth:`save` or ``dask-factor fit``, or such an ``.npz``.

        Returns
        -------
        NMFResult

        Examples
        --------
        >>> import tempfile, os
        >>> from dask_factor import datasets, nmf, NMFResult
        >>> model = nmf(datasets.load("aml").matrix, 3, seed=1, maxit=5)
        >>> back = NMFResult.load(model.save(os.path.join(tempfile.mkdtemp(), "m.zarr")))
        >>> bool((back.W == model.W).all()), back.iterations == model.iterations
        (True, True)
        """
        from ._nmf_result_io import load

        return load(cls, path)

    def to_anndata(self, adata=None, *, key: str = "nmf", overwrite: bool = True):
        """The model the AnnData way (AnnData is samples × features).

        Writes ``obsm[f"X_{key}"]`` = ``Hᵀ`` (samples × k), ``varm[f"{KEY}_W"]`` = ``W``
        (features × k) and ``uns[key]`` = ``{"d", "loss", "params", "iterations", "converged",
        "mse"}``.

        Parameters
        ----------
        adata : anndata.AnnData, path to an ``.h5ad``, or None
            None builds a new AnnData (no X) indexed by the result's names. A path is updated in
            place without reading X.
        key : str, default "nmf"
        overwrite : bool, default True
            Replace existing keys.

        Returns
        -------
        anndata.AnnData, or the path

        Examples
        --------
        >>> from dask_factor import datasets, nmf
        >>> A, rows, cols = datasets.load("hawaiibirds")
        >>> model = nmf(A, 3, seed=1, maxit=5)
        >>> adata = model.to_anndata()
        >>> adata.shape, adata.obsm["X_nmf"].shape, adata.varm["NMF_W"].shape
        ((1183, 183), (1183, 3), (183, 3))
        """
        from ._nmf_result_io import to_anndata

        return to_anndata(self, adata, key=key, overwrite=overwrite)

    def top_features(self, n: int = 10, *, weights: bool = False):
        """The ``n`` features of largest weight in each factor (a column of W).

        Parameters
        ----------
        n : int, default 10
        weights : bool, default False
            Return a long table (factor, rank, feature, weight) instead.

        Returns
        -------
        pandas.DataFrame
            ``n`` rows (rank) × k columns (``nmf0``, ``nmf1``, ...) of feature names
            (``feature{i}`` when the result has none).

        Examples
        --------
        >>> from dask_factor import datasets, nmf
        >>> A, rows, cols = datasets.load("hawaiibirds")
        >>> model = nmf(A, 3, seed=1, maxit=5)
        >>> model.feature_names = list(rows.index)
        >>> model.top_features(5).shape
        (5, 3)
        """
        from ._nmf_result_io import top_features

        return top_features(self, n, weights=weights)


def _has_nan(A) -> bool:
    """NaN entries in an in-memory input (they are missing values: the masked engine runs)."""
    import scipy.sparse as sp

    vals = A if isinstance(A, np.ndarray) else (A.data if sp.issparse(A) else None)
    if vals is None:
        return True  # lazy input: NaN allowed (mask="NA"); infinities still count in the check
    if vals.dtype.kind != "f" or np.isfinite(vals).all():
        return False
    n_inf = int(np.isinf(vals).sum())
    if n_inf:
        raise ValueError(f"A: contains {n_inf} NaN or infinite value(s); expected finite values "
                         f"(with mask='NA', NaN entries are missing values)")
    return True


def _h_dask(state: ALSState, bounds: np.ndarray, perm: np.ndarray, dtype) -> da.Array:
    k = state.W.shape[1]
    parts = []
    for i, b in enumerate(state.h_blocks):
        if isinstance(b, np.ndarray):
            parts.append(da.from_array(b, chunks=b.shape))
        else:  # a future on the cluster: H stays there until asked for
            parts.append(da.from_delayed(dask.delayed(b), dtype=dtype,
                                         shape=(int(bounds[i + 1] - bounds[i]), k)))
    if getattr(state, "h_mult", None) is not None:  # block-sequential ALS: a scale per block
        parts = [p * np.asarray(c, dtype=dtype) for p, c in zip(parts, state.h_mult)]
        Ht = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return Ht.T[perm]
    Ht = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    scale = state.h_scale
    return (Ht / scale.astype(dtype)).T[perm]


def fit_masked_model(prep, W0, cfg: ALSConfig, *, m, n, seed, cv_seed, test_fraction, patience,
                     mask, mask_zeros, sort_model, client, on_iteration, settings_extra,
                     ckpt=None, mask_blocks=None, penalties=None) -> NMFResult:
    """Run the masked engine (held-out or missing entries) and wrap its state as an NMFResult."""
    ms = MaskSpec(test_fraction=float(test_fraction),
                  cv_seed=int(cv_seed if cv_seed is not None else seed),
                  mask_zeros=bool(mask_zeros), observed_only=(mask == "zeros"))
    st = fit_masked(prep.bm, W0, cfg, ms, patience=patience, client=client,
                    on_iteration=on_iteration, mask=mask_blocks, penalties=penalties,
                    **(ckpt or {}))
    k = cfg.k
    perm = np.argsort(-st.d, kind="stable") if sort_model else np.arange(k)
    score = st.test_history if test_fraction > 0 else st.train_history
    tols = [relative_change(a, b) for a, b in zip(score[:-1], score[1:])]
    settings = dict(k=k, tol=cfg.tol, maxit=cfg.maxit, L1=cfg.L1, L2=cfg.L2,
                    upper_bound=cfg.upper_bound, nonneg=cfg.nonneg, seed=int(seed),
                    norm=cfg.norm, solver_used=cfg.solver, cd_maxit=cfg.cd_maxit, cd_tol=cfg.cd_tol,
                    sort_model=sort_model, dtype=np.dtype(cfg.dtype).name,
                    chunks=[int(x) for x in np.diff(prep.bm.bounds)],
                    n_negative=prep.n_negative, test_fraction=float(test_fraction),
                    cv_seed=ms.cv_seed, patience=patience, mask=mask,
                    mask_zeros=bool(mask_zeros), n_test=st.n_test, n_train=st.n_train,
                    **settings_extra)
    train = st.train_sse / max(st.n_train, 1.0)
    test = st.test_sse / st.n_test if st.n_test > 0 else math.nan
    return NMFResult(
        W=np.ascontiguousarray(st.W[:, perm]), d=np.asarray(st.d)[perm].copy(),
        H_dask=_h_dask(st, prep.bm.bounds, perm, cfg.dtype), iterations=st.iterations,
        converged=st.converged, sse=st.train_sse, mse=train,
        loss_history=list(st.train_history), tol_history=tols, settings=settings,
        runtime=st.seconds, graph_sizes=st.graph_sizes, test_loss=test, train_loss=train,
        best_iter=st.best_iter, test_loss_history=list(st.test_history),
        train_loss_history=list(st.train_history), _client=client)


def loss_spec(p: dict) -> LossSpec:
    """The :class:`~.engine.irls.LossSpec` of validated ``nmf()`` arguments."""
    loss = p["loss"]
    init, lo, hi = ((p["nb_size_init"], p["nb_size_min"], p["nb_size_max"]) if loss == "nb"
                    else (p["theta_init"], p["theta_min"], p["theta_max"]) if loss == "gp"
                    else (0.0, 0.0, 0.0))
    return LossSpec(loss=loss, dispersion=p["dispersion"], disp_init=float(init),
                    disp_min=float(lo), disp_max=float(hi), power=float(p["tweedie_power"]),
                    irls_max_iter=int(p["irls_max_iter"]), irls_tol=float(p["irls_tol"]),
                    irls_gain_tol=float(p["irls_gain_tol"]), robust=huber_delta(p["robust"]),
                    zi=p["zi"])


def huber_delta(robust) -> float:
    """δ of ``robust=``: False → 0 (off), True → 1.345, ``"mae"`` → 1e-4, a number → itself."""
    if robust is False:
        return 0.0
    if robust is True:
        return 1.345
    if robust == "mae":
        return 1e-4
    return float(robust)


def fit_irls_model(prep, W0, cfg: ALSConfig, p: dict, *, m, n, seed, client, on_iteration,
                   ckpt, settings_extra, mask=None, mask_blocks=None) -> NMFResult:
    """Run the IRLS fit kind (a count-data loss) and wrap its state as an NMFResult.

    ``mask`` (``"NA"``, ``"zeros"``, ``"matrix"`` with ``mask_blocks``) or ``test_fraction`` in
    ``p``: a masked fit (held-out and missing entries get zero weight)."""
    spec = loss_spec(p)
    cfg = replace(cfg, solver="cd")
    tf = float(p["test_fraction"])
    masked = tf > 0 or mask is not None
    ms = None
    if masked:
        ms = MaskSpec(test_fraction=tf,
                      cv_seed=int(p["cv_seed"] if p["cv_seed"] is not None else seed),
                      mask_zeros=bool(p["mask_zeros"]), observed_only=(mask == "zeros"))
    st = fit_irls(prep.bm, W0, cfg, spec, client=client, on_iteration=on_iteration,
                  ms=ms, mask=mask_blocks, patience=int(p["patience"]), **(ckpt or {}))
    k = cfg.k
    perm = np.argsort(-st.d, kind="stable") if p["sort_model"] else np.arange(k)
    mn = float(m) * float(n)
    settings = dict(k=k, tol=cfg.tol, maxit=cfg.maxit, L1=cfg.L1, L2=cfg.L2,
                    upper_bound=cfg.upper_bound, nonneg=cfg.nonneg, seed=int(seed),
                    norm=cfg.norm, solver_used="cd", cd_maxit=cfg.cd_maxit, cd_tol=cfg.cd_tol,
                    sort_model=p["sort_model"], dtype=np.dtype(cfg.dtype).name,
                    chunks=[int(x) for x in np.diff(prep.bm.bounds)],
                    n_negative=prep.n_negative, target_lambda=0.0, loss=spec.loss,
                    dispersion=spec.dispersion, irls_max_iter=spec.irls_max_iter,
                    irls_tol=spec.irls_tol, irls_gain_tol=spec.irls_gain_tol,
                    tweedie_power=spec.power, robust=spec.robust,
                    zi=spec.zi,
                    dispersion_init=spec.disp_init, dispersion_bounds=(spec.disp_min,
                                                                       spec.disp_max),
                    **settings_extra)
    if masked:
        sc = st.scores
        settings.update(test_fraction=tf, cv_seed=ms.cv_seed, patience=int(p["patience"]),
                        mask=mask, mask_zeros=bool(p["mask_zeros"]), n_test=sc["n_test"],
                        n_train=sc["n_train"])
        train = sc["sse"] / max(sc["n_train"], 1.0)
        test = sc["test_sse"] / sc["n_test"] if sc["n_test"] > 0 else math.nan
        score = st.test_history if tf > 0 else st.objective_history
        return NMFResult(
            W=np.ascontiguousarray(st.W[:, perm]), d=np.asarray(st.d)[perm].copy(),
            H_dask=_h_dask(st, prep.bm.bounds, perm, cfg.dtype), iterations=st.iterations,
            converged=st.converged, sse=st.sse, mse=train,
            loss_history=list(st.train_mse_history),
            tol_history=[relative_change(a, b) for a, b in zip(score[:-1], score[1:])],
            settings=settings, runtime=st.seconds, graph_sizes=st.graph_sizes,
            test_loss=test, train_loss=train, best_iter=st.best_iter,
            test_loss_history=list(st.test_mse_history) if tf > 0 else [],
            train_loss_history=list(st.train_mse_history), _client=client,
            loss=spec.loss, objective=st.objective,
            objective_history=list(st.objective_history), dispersion=st.dispersion,
            test_objective=(sc["test_objective"] / sc["n_test_loss"]
                            if sc["n_test_loss"] > 0 else math.nan),
            train_objective=sc["objective"] / max(sc["n_train_loss"], 1.0),
            test_objective_history=list(st.test_history) if tf > 0 else [], pi=st.pi)
    return NMFResult(
        W=np.ascontiguousarray(st.W[:, perm]), d=np.asarray(st.d)[perm].copy(),
        H_dask=_h_dask(st, prep.bm.bounds, perm, cfg.dtype), iterations=st.iterations,
        converged=st.converged, sse=st.sse, mse=st.sse / mn,
        loss_history=[x / mn for x in st.sse_history], tol_history=list(st.tol_history),
        settings=settings, runtime=st.seconds, graph_sizes=st.graph_sizes, _client=client,
        loss=spec.loss, objective=st.objective, objective_history=list(st.objective_history),
        dispersion=st.dispersion, pi=st.pi)


def fit_nmf(
    A,
    k: int,
    *,
    tol: float = 1e-4,
    maxit: int = 100,
    L1: float | tuple[float, float] = 0.0,
    L2: float | tuple[float, float] = 0.0,
    upper_bound: float | tuple[float, float] = 0.0,
    nonneg: bool | tuple[bool, bool] = True,
    seed: int | None = None,
    w_init: np.ndarray | None = None,
    norm: str = "L1",
    solver: str = "auto",
    cd_maxit: int | None = None,
    cd_tol: float | None = None,
    sort_model: bool = True,
    rng: str = "numpy",
    target_H: np.ndarray | None = None,
    target_lambda: float = 0.0,
    chunks: int | None = None,
    block_nnz: int | None = None,
    dtype: str | np.dtype = "float32",
    cache: str = "auto",
    client=None,
    progress: bool = False,
    on_iteration: Callable[[int, float, float], Any] | None = None,
    test_fraction: float = 0.0,
    cv_seed: int | None = None,
    patience: int = 5,
    mask: str | None = None,
    mask_zeros: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | bool | None = None,
    updates_per_pass: int = 1,
    penalties: Penalties | None = None,
    loss: str = "mse",
    dispersion: str = "per_row",
    irls_max_iter: int = 5,
    irls_tol: float = 1e-4,
    irls_gain_tol: float = 0.05,
    tweedie_power: float = 1.5,
    nb_size_init: float = 10.0,
    nb_size_min: float = 0.01,
    nb_size_max: float = 1e6,
    theta_init: float = 0.1,
    theta_min: float = 0.0,
    theta_max: float = 5.0,
    robust: bool | str | float = False,
    zi: str = "none",
) -> NMFResult:
    """One NMF fit of rank ``k``: ``nmf(A, k)`` for an integer ``k``.

    The single fit that :func:`dask_factor.nmf.nmf` and the rank search
    (:func:`dask_factor.rank.rank_search`) both run. The arguments are ``nmf()``'s, with ``k`` an
    integer and ``cv_seed`` one seed; they are checked against the parameter table
    (``dask_factor._params``) before the data are touched, and the input's shape (read from a
    file's header) before any pass over it.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples, any input ``nmf()`` accepts.
    k : int
        Rank, ``1 <= k <= min(m, n)``.
    **kwargs
        As for :func:`dask_factor.nmf.nmf`.
    penalties : engine.masked.Penalties, optional
        Per-factor options beyond ``nmf()``'s (graph Laplacians, L21, angular, targets on W and
        H) for a masked or cross-validated fit: a graph ``fit()`` of one NMF layer with such
        options and ``test_fraction`` runs here.

    Returns
    -------
    NMFResult

    Raises
    ------
    TypeError, ValueError
        Before any work, for a bad argument (named in the message).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.nmf_fit import fit_nmf
    >>> A = datasets.load("hawaiibirds").matrix
    >>> fit_nmf(A, 3, seed=1, maxit=5).W.shape
    (183, 3)
    """
    args = dict(locals())  # the arguments as given, before any other local exists
    del args["A"]
    # ---- every argument against the table, before touching the data
    p = validate_params(args, entry="fit_nmf")
    k, maxit, tol, dt, seed = p["k"], p["maxit"], p["tol"], p["dtype"], p["seed"]
    W0, T = p["w_init"], p["target_H"]
    solver_r, cdm, cdt = resolve_solver(solver, p["cd_maxit"], p["cd_tol"],
                                        push_away=T is not None and p["target_lambda"] < 0)
    ckpt = {name: p[name] for name in ("checkpoint", "checkpoint_every", "resume")}
    if T is not None and p["target_lambda"] < 0 and solver_r == "cholesky":
        warnings.warn("target_lambda < 0 with solver='cholesky': the pushed-away Gram is nearly "
                      "singular and solve-then-clip can diverge; prefer solver='auto' or 'cd'",
                      UserWarning, stacklevel=3)

    # opening a file reads its header only; the shape checks then come before any data pass
    A = open_lazy(A, "A")
    m, n = check_shape("A", A)
    if k > min(m, n):
        raise ValueError(f"k: expected 1 <= k <= min(m, n) = {min(m, n)}, got {k}")
    if T is not None and T.shape[1] != n:
        raise ValueError(f"target_H: expected shape (k={k}, n={n}), got {T.shape}")
    if W0 is not None:
        if W0.shape == (k, m) and W0.shape != (m, k):
            W0 = W0.T.copy()
        if W0.shape != (m, k):
            raise ValueError(f"w_init: expected shape (m, k) = ({m}, {k}) or (k, m), got "
                             f"{W0.shape}")

    mask = p["mask"]
    if penalties is not None and not (p["test_fraction"] > 0 or mask is not None):
        raise ValueError("penalties: only for masked or cross-validated fits (set test_fraction "
                         "or mask)")
    if penalties is not None and (p["loss"] != "mse" or p["robust"] is not False):
        raise ValueError(f"penalties: per-factor penalties are fitted under loss='mse' only; "
                         f"got loss={p['loss']!r}")
    user_mask = None if mask is None or isinstance(mask, str) else mask
    if user_mask is not None:
        if tuple(user_mask.shape) != (m, n):
            raise ValueError(f"mask: expected a matrix of A's shape ({m}, {n}), got "
                             f"{tuple(user_mask.shape)}")
        mask = "matrix"
    has_nan = mask == "NA" and _has_nan(A)
    masked = p["test_fraction"] > 0 or mask is not None
    prep = prepare_input(A, name="A", dtype=dt, chunks=p["chunks"], block_nnz=p["block_nnz"],
                         cache=cache, client=client,
                         allow_nonfinite=has_nan or mask == "NA")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31 - 1))
    if W0 is None:
        W0 = initial_w(m, k, int(seed), rng)

    target_lambda = p["target_lambda"] if T is not None else 0.0
    cfg = ALSConfig(k=k, maxit=maxit, tol=tol, L1=p["L1"], L2=p["L2"],
                    upper_bound=p["upper_bound"], nonneg=p["nonneg"], norm=norm,
                    solver=solver_r, cd_maxit=cdm, cd_tol=cdt, target_lambda=target_lambda,
                    dtype=dt)
    target_blocks = gram_target = None
    if T is not None:
        b = prep.bm.bounds
        target_blocks = [np.ascontiguousarray(T[:, b[i]:b[i + 1]].T) for i in range(b.size - 1)]
        gram_target = T @ T.T / n

    if p["loss"] != "mse" and prep.n_negative:
        raise ValueError(f"A: loss={p['loss']!r} needs non-negative data; found "
                         f"{prep.n_negative} negative entries")
    # the score of a cross-validated fit is the held-out MSE (the held-out loss under IRLS)
    loss_name = ("test_loss" if p["loss"] == "mse" else f"test_{p['loss']}") \
        if p["test_fraction"] > 0 else ("loss" if p["loss"] == "mse" else p["loss"])
    with iteration_progress(progress, maxit, f"nmf k={k}", on_iteration,
                            loss_name=loss_name) as callback:
        mask_blocks = None if user_mask is None else as_blocked(
            user_mask, dtype=np.float32, bounds=prep.bm.bounds, name="mask")
        if p["loss"] != "mse" or p["robust"] is not False:  # the IRLS fit kind (masked or not)
            return fit_irls_model(prep, W0, cfg, p, m=m, n=n, seed=int(seed), client=client,
                                  on_iteration=callback, ckpt=ckpt, mask=mask,
                                  mask_blocks=mask_blocks,
                                  settings_extra=dict(rng=rng, solver=solver, cache=cache,
                                                      w_init=w_init is not None))
        if masked:  # held-out / missing entries: the masked engine (on_iteration gets the score)
            if T is not None:  # H's target acts on every column's own masked Gram
                penalties = Penalties(H=SideSpec(target_lambda=float(target_lambda),
                                                 nonneg=p["nonneg"][1]),
                                      h_target=np.ascontiguousarray(T.T))
                cfg = replace(cfg, target_lambda=0.0)
            return fit_masked_model(
                prep, W0, cfg, m=m, n=n, seed=int(seed), cv_seed=p["cv_seed"],
                test_fraction=p["test_fraction"], patience=p["patience"], mask=mask,
                mask_zeros=p["mask_zeros"], sort_model=p["sort_model"], client=client,
                on_iteration=callback, ckpt=ckpt, mask_blocks=mask_blocks, penalties=penalties,
                settings_extra=dict(rng=rng, solver=solver, w_init=w_init is not None,
                                    cache=cache, target_lambda=float(target_lambda)))
        state = fit_als(prep.bm, W0, cfg, sq_norm=prep.sq_norm, client=client,
                        target_blocks=target_blocks, gram_target=gram_target,
                        on_iteration=callback, updates_per_pass=p["updates_per_pass"], **ckpt)

    d = state.d
    perm = np.argsort(-d, kind="stable") if p["sort_model"] else np.arange(k)
    W = np.ascontiguousarray(state.W[:, perm])
    H_dask = _h_dask(state, prep.bm.bounds, perm, dt)
    mn = float(m) * float(n)
    settings = dict(k=k, tol=tol, maxit=maxit, L1=p["L1"], L2=p["L2"],
                    upper_bound=p["upper_bound"], nonneg=p["nonneg"], seed=int(seed), rng=rng,
                    norm=norm, solver=solver, solver_used=solver_r, cd_maxit=cdm, cd_tol=cdt,
                    sort_model=p["sort_model"], dtype=dt.name,
                    chunks=[int(x) for x in np.diff(prep.bm.bounds)],
                    target_lambda=p["target_lambda"], cache=cache,
                    n_negative=prep.n_negative, w_init=w_init is not None,
                    updates_per_pass=min(p["updates_per_pass"], prep.bm.n_blocks))
    return NMFResult(
        W=W, d=d[perm].copy(), H_dask=H_dask, iterations=state.iterations,
        converged=state.converged, sse=state.sse, mse=state.sse / mn,
        loss_history=[x / mn for x in state.loss_history], tol_history=list(state.tol_history),
        settings=settings, runtime=state.seconds, graph_sizes=state.graph_sizes, _client=client,
    )
