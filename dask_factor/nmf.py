"""``nmf()``: non-negative matrix factorization ``A ≈ W diag(d) H`` of a chunked matrix on Dask.

The algorithm is RcppML's (SPEC-nmf.md §1): alternating updates, H first then W, each an NNLS
solve on the normal equations; L1 subtracted from the right-hand side, L2 added to the Gram
diagonal; the scale of each factor is pulled into ``d`` (L1 norms by default) and factors are sorted
by decreasing ``d``; ``tol`` is the relative change of the loss, which must hold for 5 consecutive
iterations. Every iteration is one pass of Dask tasks over the column blocks of A
(DESIGN.md), so A may live on disk or on a cluster.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from . import _validate as V
from .engine.als import ALSConfig, ALSState, fit_als
from .engine.inputs import check_shape, open_lazy, prepare_input
from .engine.project import project_blocks, reconstruction_sse
from .kernels.rng import r_runif

__all__ = ["nmf", "NMFResult", "resolve_solver", "initial_w"]

#: the ``solver="auto"`` rule, chosen by measured time to a given loss (benchmarks/bench_nmf.py):
#: coordinate descent with warm starts and a small sweep budget reaches RcppML's 50-iteration
#: Cholesky loss on pbmc3k in a fraction of the iterations (true NNLS solves each half-step,
#: where Cholesky-then-clip is only a projected least-squares step)
AUTO_CD_MAXIT = 10
AUTO_CD_TOL = 1e-4


def resolve_solver(
    solver: str, cd_maxit: int | None, cd_tol: float | None
) -> tuple[str, int, float]:
    """Map ``solver="auto"|"cd"|"cholesky"`` to (solver, cd_maxit, cd_tol).

    ``"auto"`` → coordinate descent with warm starts, at most ``AUTO_CD_MAXIT`` sweeps per solve
    and a relative tolerance of ``AUTO_CD_TOL`` (unless given); ``"cd"`` → RcppML's coordinate
    descent (100 sweeps, tol 1e-8); ``"cholesky"`` → RcppML's solve-then-clip, which reproduces
    RcppML's runs exactly.

    Examples
    --------
    >>> resolve_solver("auto", None, None)
    ('cd', 10, 0.0001)
    """
    V.choice("solver", solver, ("auto", "cd", "cholesky"))
    if solver == "auto":
        return "cd", int(cd_maxit or AUTO_CD_MAXIT), float(cd_tol if cd_tol is not None
                                                            else AUTO_CD_TOL)
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

    def evaluate(self, A, *, client=None) -> float:
        """Mean squared error of the model against a matrix, exactly (float64).

        Parameters
        ----------
        A : matrix-like of shape (m, n)
            Anything ``nmf`` accepts (numpy, scipy.sparse, dask array, path).

        Returns
        -------
        float
            ``mean((A − W diag(d) H)²)`` over all m·n entries.

        Examples
        --------
        >>> from dask_factor import datasets, nmf
        >>> A = datasets.load("hawaiibirds").matrix
        >>> model = nmf(A, 4, seed=1, maxit=5)
        >>> abs(model.evaluate(A) - model.mse) < 1e-6
        True
        """
        client = client or self._client
        prep = prepare_input(A, name="A", dtype=np.float64, client=client)
        m, n = prep.shape
        if (m, n) != (self.W.shape[0], self.H_dask.shape[1]):
            raise ValueError(f"A: expected shape {(self.W.shape[0], self.H_dask.shape[1])} "
                             f"(the fitted matrix), got {(m, n)}")
        Wd = self.W.astype(np.float64) * self.d
        # slices of the distributed H: nothing is gathered on the client or embedded in graphs
        h_blocks = [self.H_dask[:, a:b].T
                    for a, b in zip(prep.bm.bounds[:-1], prep.bm.bounds[1:])]
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
    Ht = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    scale = state.h_scale
    return (Ht / scale.astype(dtype)).T[perm]


def nmf(
    A,
    k: int | list[int] | str,
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
    cv_seed: int | list[int] | None = None,
    patience: int = 5,
    mask: str | None = None,
    mask_zeros: bool = False,
    cv_k_range: tuple[int, int] = (2, 50),
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | bool | None = None,
):
    """Non-negative matrix factorization ``A ≈ W diag(d) H`` by alternating NNLS on Dask.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples (genes × cells). A numpy array, any ``scipy.sparse`` matrix or array,
        a ``dask.array`` of numpy or scipy.sparse chunks (2-D chunking allowed), an ``AnnData``
        or a path to a ``.spz``/zarr/``.h5ad``/``.mtx`` file (read inside the tasks).
    k : int
        Rank, ``1 <= k <= min(m, n)``.
    tol : float, default 1e-4
        Stop when the relative change of the loss stays below ``tol`` for 5 consecutive
        iterations (RcppML's rule). ``tol=0`` runs ``maxit`` iterations.
    maxit : int, default 100
        Maximum number of iterations (one H and one W update each).
    L1, L2 : float or (float, float), default 0
        Lasso and ridge penalties, ``(W side, H side)`` or one value for both. L1 is subtracted
        from the NNLS right-hand side (with L1-normalised factors it lives in [0, 1)); L2 is
        added to the Gram diagonal.
    upper_bound : float or pair, default 0
        Box constraint ``x <= ub`` on each side; 0 means none.
    nonneg : bool or pair, default True
        Non-negativity per side; False gives unconstrained least squares on that side.
    seed : int, optional
        Seed of the initial W; None draws one (recorded in ``settings["seed"]``).
    w_init : ndarray of shape (m, k) or (k, m), optional
        Initial W (overrides ``seed``).
    norm : {"L1", "L2", "none"}, default "L1"
        How the scale of each factor is extracted into ``d``.
    solver : {"auto", "cd", "cholesky"}, default "auto"
        ``"cholesky"`` is RcppML's solve-then-clip and reproduces its runs; ``"cd"`` is RcppML's
        coordinate descent (100 sweeps, tol 1e-8, warm started); ``"auto"`` is warm-started
        coordinate descent with ``AUTO_CD_MAXIT`` sweeps and tol ``AUTO_CD_TOL``, chosen by
        measured time to a given loss (see ``resolve_solver``).
    cd_maxit, cd_tol : optional
        Override the coordinate descent budget.
    sort_model : bool, default True
        Sort factors by decreasing ``d``.
    rng : {"numpy", "rcppml"}, default "numpy"
        ``"rcppml"`` draws W0 exactly like R's ``set.seed(seed); runif(m*k)``.
    target_H : ndarray of shape (k, n), optional
        Target regularization of H (SPEC-nmf.md §2): ``target_lambda > 0`` pulls each column of
        H towards the target, ``< 0`` pushes the solution away from the target's subspace.
    target_lambda : float, default 0
    chunks : int, optional
        Columns per block (default: blocks of about one million stored entries, at least 8).
    block_nnz : int, optional
        Target stored entries per block for in-memory inputs.
    dtype : {"float32", "float64"}, default "float32"
        Storage and product dtype of A, W and H (sums and Grams are always float64).
    cache : {"auto", "memory", "none"}, default "auto"
        For lazy inputs: ``"memory"`` keeps the decoded blocks in (worker) memory across
        iterations, ``"none"`` re-reads them every iteration (out-of-core); ``"auto"`` is
        ``"none"`` for lazy inputs. In-memory inputs are always held in memory.
    client : distributed.Client, optional
        Run on this cluster; default: the active client if any, else dask's threads.
    progress : bool, default False
        Show a progress bar with the loss.
    on_iteration : callable(iteration, mse, rel_change), optional
        Called after every iteration; return True to stop.
    test_fraction : float in [0, 1), default 0
        > 0: speckled cross-validation (docs/cross_validation.md). Entry (i, j) is held out iff
        ``splitmix64(cv_seed + i·φ + j·ψ) < ⌊f·2⁶⁴⌋``, recomputed inside each block task; test
        entries are excluded from both updates, test and train MSE are tracked every iteration,
        the fit stops after ``patience`` iterations without a test improvement and returns the
        best test iteration's (consistent) model, with ``test_loss``/``train_loss``/``best_iter``.
    cv_seed : int, optional
        Seed of the hold-out hash (default: ``seed``). A list of seeds with a list ``k`` gives
        one repetition per seed.
    patience : int, default 5
        Iterations without a test-loss improvement before a cross-validated fit stops.
    mask : {None, "zeros", "NA"}, default None
        ``"zeros"``: zeros are missing values (only stored entries are observed); ``"NA"``: NaN
        entries are missing values (excluded from the fit and the loss). Without ``"NA"`` a NaN
        is an error.
    mask_zeros : bool, default False
        With ``test_fraction``: only non-zero entries can be test entries (O(nnz) hashing: the
        scalable path for very large sparse inputs).
    cv_k_range : (int, int), default (2, 50)
        Rank bounds of ``k="auto"``.
    checkpoint : path, optional
        Write the fit's state (W, d, the H blocks, the histories; a zarr group, replaced
        atomically) there every ``checkpoint_every`` iterations, so an interrupted fit (a killed
        job, Ctrl-C) can continue. An existing checkpoint is only replaced by a fit resuming it.
    checkpoint_every : int, optional
        Iterations between checkpoints (default 10 with ``checkpoint``).
    resume : path or bool, optional
        Continue from this checkpoint to the factors the uninterrupted fit would have reached
        (``True``: from ``checkpoint`` if it exists, else start afresh). A checkpoint of another
        matrix, rank, seed or settings is refused with the field that differs; ``maxit`` and
        ``tol`` may change.

    Returns
    -------
    NMFResult or RankSearchResult
        A ``RankSearchResult`` (``table``: a DataFrame of k, rep, train_mse, test_mse, best_iter,
        total_iter; ``models``; ``best_k``) when ``k`` is a list or ``"auto"``; otherwise
        ``W`` (m × k), ``d`` (k,), ``H`` (k × n), ``iterations``, ``converged``, ``sse``,
        ``mse``, ``loss_history`` (MSE), ``tol_history``, ``settings``; ``evaluate(A)`` and
        ``predict(A_new)``.

    Raises
    ------
    TypeError, ValueError
        Before any work, for a bad argument (named in the message).

    Examples
    --------
    >>> from dask_factor import datasets, nmf
    >>> A, rows, cols = datasets.load("aml")
    >>> model = nmf(A, 6, seed=42, rng="rcppml", solver="cholesky")
    >>> model.W.shape, model.H.shape, model.iterations
    ((824, 6), (6, 135), 48)
    >>> round(model.mse, 5)
    0.0214
    """
    # ---- validate every argument before touching the data
    if isinstance(k, (list, tuple, np.ndarray)) or isinstance(k, str):
        if checkpoint is not None or resume not in (None, False):
            raise ValueError("checkpoint/resume: only for a single fit (an integer k)")
        from .rank import rank_search

        return rank_search(A, k, dict(
            tol=tol, maxit=maxit, L1=L1, L2=L2, upper_bound=upper_bound, nonneg=nonneg,
            seed=seed, norm=norm, solver=solver, cd_maxit=cd_maxit, cd_tol=cd_tol,
            sort_model=sort_model, rng=rng, chunks=chunks, block_nnz=block_nnz, dtype=dtype,
            cache=cache, client=client, patience=patience, mask=mask, mask_zeros=mask_zeros),
            test_fraction=test_fraction, cv_seed=cv_seed, cv_k_range=cv_k_range)
    from .rank import check_cv_args

    test_fraction, cv_seed, patience = check_cv_args(test_fraction, cv_seed, patience, mask,
                                                     mask_zeros)
    checkpoint, checkpoint_every, resume = V.checkpoint_args(checkpoint, checkpoint_every, resume)
    ckpt = dict(checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    if resume is not None and seed is None and w_init is None:
        raise ValueError("resume: pass seed= (the seed of the interrupted fit); a drawn seed "
                         "cannot be matched")
    k = V.positive_int("k", k)
    maxit = V.positive_int("maxit", maxit)
    tol = V.real_number("tol", tol, minimum=0.0)
    target_lambda = V.real_number("target_lambda", target_lambda)
    L1p = V.pair("L1", L1)
    V.check_range("L1", L1p, 0.0, 1.0)
    L2p = V.pair("L2", L2)
    V.check_range("L2", L2p, 0.0)
    ubp = V.pair("upper_bound", upper_bound)
    V.check_range("upper_bound", ubp, 0.0)
    nnp = V.pair("nonneg", nonneg, kind=bool)
    V.choice("norm", norm, ("L1", "L2", "none"))
    V.choice("rng", rng, ("numpy", "rcppml"))
    V.choice("cache", cache, ("auto", "memory", "none"))
    solver_r, cdm, cdt = resolve_solver(solver, cd_maxit, cd_tol)
    if cd_maxit is not None:
        V.positive_int("cd_maxit", cd_maxit)
    if cd_tol is not None:
        V.real_number("cd_tol", cd_tol, minimum=0.0)
    dt = V.float_dtype(dtype)
    if chunks is not None:
        chunks = V.positive_int("chunks", chunks)
    if block_nnz is not None:
        block_nnz = V.positive_int("block_nnz", block_nnz)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an integer or None, got {seed!r}")
        if rng == "numpy" and seed < 0:
            raise ValueError(f"seed: expected a non-negative integer with rng='numpy' (R-style "
                             f"negative seeds need rng='rcppml'), got {seed}")
    if client is not None and not hasattr(client, "persist"):
        raise TypeError(f"client: expected a distributed.Client, got {type(client).__name__}")
    W0 = None
    if w_init is not None:
        W0 = np.asarray(w_init, dtype=np.float64)
        if W0.ndim != 2:
            raise ValueError(f"w_init: expected a 2-D (m, k) matrix, got shape {W0.shape}")
        if not np.all(np.isfinite(W0)):
            raise ValueError("w_init: expected finite values")
    T = None
    if target_H is not None:
        T = np.asarray(target_H, dtype=np.float64)
        if T.ndim != 2 or T.shape[0] != k:
            raise ValueError(f"target_H: expected shape (k={k}, n), got {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError("target_H: expected finite values")
    elif target_lambda != 0:
        raise ValueError("target_lambda: set target_H too (a k × n target), or leave it at 0")
    if T is not None and target_lambda < 0 and solver_r == "cholesky":
        warnings.warn("target_lambda < 0 with solver='cholesky': the pushed-away Gram is nearly "
                      "singular and solve-then-clip can diverge; prefer solver='auto' or 'cd'",
                      UserWarning, stacklevel=2)

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

    has_nan = mask == "NA" and _has_nan(A)
    masked = test_fraction > 0 or mask is not None
    if masked and T is not None:
        raise ValueError("target_H: not supported together with test_fraction, mask or NaN "
                         "entries")
    prep = prepare_input(A, name="A", dtype=dt, chunks=chunks, block_nnz=block_nnz,
                         cache=cache, client=client,
                         allow_nonfinite=has_nan or mask == "NA")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31 - 1))
    if W0 is None:
        W0 = initial_w(m, k, int(seed), rng)

    cfg = ALSConfig(k=k, maxit=maxit, tol=float(tol), L1=L1p, L2=L2p, upper_bound=ubp,
                    nonneg=nnp, norm=norm, solver=solver_r, cd_maxit=cdm, cd_tol=cdt,
                    target_lambda=float(target_lambda) if T is not None else 0.0, dtype=dt)
    target_blocks = gram_target = None
    if T is not None:
        b = prep.bm.bounds
        target_blocks = [np.ascontiguousarray(T[:, b[i]:b[i + 1]].T) for i in range(b.size - 1)]
        gram_target = T @ T.T / n

    bar = None
    callback = on_iteration
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxit, desc=f"nmf k={k}", unit="it", leave=True)

        def callback(it, mse, rel):
            bar.update(1)
            bar.set_postfix(mse=f"{mse:.6g}", rel=("-" if np.isnan(rel) else f"{rel:.2e}"))
            return bool(on_iteration(it, mse, rel)) if on_iteration is not None else False

    if masked:  # held-out / missing entries: the masked engine (on_iteration gets the score)
        from .rank import fit_masked_model

        try:
            return fit_masked_model(
                prep, W0, cfg, m=m, n=n, seed=int(seed), cv_seed=cv_seed,
                test_fraction=test_fraction, patience=patience, mask=mask,
                mask_zeros=mask_zeros, sort_model=sort_model, client=client,
                on_iteration=callback, ckpt=ckpt, settings_extra=dict(
                    rng=rng, solver=solver, w_init=w_init is not None, cache=cache))
        finally:
            if bar is not None:
                bar.close()
    try:
        state = fit_als(prep.bm, W0, cfg, sq_norm=prep.sq_norm, client=client,
                        target_blocks=target_blocks, gram_target=gram_target,
                        on_iteration=callback, **ckpt)
    finally:
        if bar is not None:
            bar.close()

    d = state.d
    perm = np.argsort(-d, kind="stable") if sort_model else np.arange(k)
    W = np.ascontiguousarray(state.W[:, perm])
    H_dask = _h_dask(state, prep.bm.bounds, perm, dt)
    mn = float(m) * float(n)
    settings = dict(k=k, tol=float(tol), maxit=maxit, L1=L1p, L2=L2p, upper_bound=ubp,
                    nonneg=nnp, seed=int(seed), rng=rng, norm=norm, solver=solver,
                    solver_used=solver_r, cd_maxit=cdm, cd_tol=cdt, sort_model=sort_model,
                    dtype=dt.name, chunks=[int(x) for x in np.diff(prep.bm.bounds)],
                    target_lambda=float(target_lambda), cache=cache,
                    n_negative=prep.n_negative, w_init=w_init is not None)
    return NMFResult(
        W=W, d=d[perm].copy(), H_dask=H_dask, iterations=state.iterations,
        converged=state.converged, sse=state.sse, mse=state.sse / mn,
        loss_history=[x / mn for x in state.loss_history], tol_history=list(state.tol_history),
        settings=settings, runtime=state.seconds, graph_sizes=state.graph_sizes, _client=client,
    )


