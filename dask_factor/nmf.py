"""``nmf()``: non-negative matrix factorization ``A ≈ W diag(d) H`` of a chunked matrix on Dask.

The algorithm is RcppML's (docs/concepts.md): alternating updates, H first then W, each an NNLS
solve on the normal equations; L1 subtracted from the right-hand side, L2 added to the Gram
diagonal; the scale of each factor is pulled into ``d`` (L1 norms by default) and factors are sorted
by decreasing ``d``; ``tol`` is the relative change of the loss, which must hold for 5 consecutive
iterations. Every iteration is one pass of Dask tasks over the column blocks of A
(docs/design.md), so A may live on disk or on a cluster.

``nmf()`` checks its arguments and dispatches once: an integer ``k`` is one fit
(:func:`dask_factor.nmf_fit.fit_nmf`), a list of ranks or ``"auto"`` the rank search
(:func:`dask_factor.rank.rank_search`), which runs the same single fit for every rank. Imports go
one way: this module → ``rank`` → ``nmf_fit``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ._params import validate_params
from .nmf_fit import AUTO_CD_MAXIT, AUTO_CD_TOL, NMFResult, fit_nmf, initial_w, resolve_solver
from .rank import RankSearchResult, rank_search

__all__ = ["nmf", "NMFResult", "resolve_solver", "initial_w", "AUTO_CD_MAXIT", "AUTO_CD_TOL"]


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
    updates_per_pass: int = 1,
    layer: str | None = None,
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
) -> NMFResult | RankSearchResult:
    """Non-negative matrix factorization ``A ≈ W diag(d) H`` by alternating NNLS on Dask.

    Parameters
    ----------
    A : array-like of shape (m, n)
        Features × samples (genes × cells). A numpy array, any ``scipy.sparse`` matrix or array,
        a ``dask.array`` of numpy or scipy.sparse chunks (2-D chunking allowed), an ``AnnData``
        or a path to a ``.spz``/zarr/``.h5ad``/``.mtx`` file (read inside the tasks).
    k : int, list of int or "auto"
        Rank, ``1 <= k <= min(m, n)``. A list of ranks fits each (with ``test_fraction``,
        default 0.1, and one repetition per ``cv_seed``) and returns the cross-validation table;
        ``"auto"`` searches the rank within ``cv_k_range`` (:mod:`dask_factor.rank`).
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
        coordinate descent (100 sweeps, tol 1e-8, warm started); ``"auto"`` solves every NNLS
        problem exactly from its warm start (the free set solved by Cholesky and checked, with
        at most ``AUTO_CD_MAXIT`` coordinate-descent sweeps while the free set changes), chosen
        by measured time to a given loss (see ``resolve_solver``).
    cd_maxit, cd_tol : optional
        Override the coordinate descent budget.
    sort_model : bool, default True
        Sort factors by decreasing ``d``.
    rng : {"numpy", "rcppml"}, default "numpy"
        ``"rcppml"`` draws W0 exactly like R's ``set.seed(seed); runif(m*k)``.
    target_H : ndarray of shape (k, n), optional
        Target regularization of H: ``target_lambda > 0`` pulls each column of H towards the
        target, ``< 0`` pushes the solution away from the target's subspace. Works with
        masked and cross-validated fits too (each column's own Gram gets the same terms).
    target_lambda : float, default 0
    chunks : int, optional
        Columns per block (default: blocks of about 400 stored entries per row of A, between
        2 and 8 million, at least 8 blocks; a zarr store keeps the blocks it was written with,
        a ``.spz`` file is read in runs of whole chunks, a dask array keeps its chunks).
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
        Show a progress bar (``tqdm.auto``: a terminal bar or a notebook widget): the iteration
        out of ``maxit``, the loss (the held-out MSE when cross-validating), its relative change
        and the time left if the fit ran to ``maxit`` (see :mod:`dask_factor.progress`).
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
    mask : {None, "zeros", "NA"} or matrix of shape (m, n), default None
        ``"zeros"``: zeros are missing values (only stored entries are observed); ``"NA"``: NaN
        entries are missing values (excluded from the fit and the loss). Without ``"NA"`` a NaN
        is an error. A boolean matrix (numpy, ``scipy.sparse`` or dask; non-zero = missing,
        RcppML's ``mask = M``) marks the user's missing entries: they are excluded from both
        updates and the losses, whatever their values, and are never test entries.
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
    updates_per_pass : int, default 1
        W updates per pass over the data. 1 is exact ALS (one H solve of every column block,
        then one W solve). ``B > 1`` is block-sequential ALS (docs/online.md): the column
        blocks are dealt into ``B`` interleaved batches and W is solved again after each
        batch's H solves, from the latest statistics of every batch (replaced, not
        forgotten). Every update is exact, the result deterministic like ALS's, and a pass
        costs one read of A plus ``B`` W solves; an "iteration" is then a pass (``maxit``,
        ``tol`` and the histories count passes). Capped at the number of column blocks.
        Plain least-squares fits only (no ``test_fraction``, ``mask``, ``target_H``,
        ``robust`` or count-data ``loss``).
    layer : str, optional
        AnnData input only: factorize ``A.layers[layer]`` (read as genes × cells, lazily)
        instead of ``A.X``. ``dask_factor.tl.nmf`` also stores the result in the AnnData.
    loss : {"mse", "kl", "nb", "gp", "gamma", "inverse_gaussian", "tweedie"}, default "mse"
        The objective (docs/losses.md). ``"mse"`` is least squares; the others are fitted by
        IRLS around coordinate descent (RcppML's), per column for H and per row for W, with
        every entry of A in the objective (zeros included; Gamma and inverse Gaussian, which
        have no mass at 0, leave zeros out). ``"kl"`` is the Poisson deviance
        (generalised KL), ``"nb"`` the negative binomial and ``"gp"`` the generalised Poisson
        negative log-likelihood with a dispersion per row. Count-data losses need non-negative
        A, ``solver`` "auto" or "cd", and no ``target_H``; ``test_fraction``, ``mask`` and
        rank searches work as for least squares (held-out entries get zero weight). The
        result then carries ``loss``, ``objective`` (its sum over the entries),
        ``objective_history``, ``dispersion`` and, when cross-validated, ``test_objective``.
    dispersion : {"per_row", "global", "none"}, default "per_row"
        NB size r / GP θ: estimated per row after each W update (NB by the method of moments,
        GP by RcppML's closed-form MM step), shared by all rows (median of the row estimates
        for NB, mean for GP), or fixed at its initial value.
    irls_max_iter, irls_tol : int, float, default 5, 1e-4
        IRLS steps per column/row and their stop rule (largest relative change of the solve).
    irls_gain_tol : float in [0, 1), default 0.05
        A column's (row's) IRLS also stops at a step that lowers its objective by at most this
        share of what its earlier steps did: the last steps of a column converge slowly and
        gain little (pbmc3k, NB: the H step's first two steps make 99 % of its gain, steps
        3–5 cost more than the first two). 0 keeps RcppML's rule only.
    tweedie_power : float >= 1, default 1.5
        Variance power q of ``loss="tweedie"`` (V(μ) = μ^q; zeros are observed when q < 2).
    nb_size_init, nb_size_min, nb_size_max : float, default 10, 0.01, 1e6
        NB size r: start and bounds (r → ∞ is Poisson).
    theta_init, theta_min, theta_max : float, default 0.1, 0, 5
        GP dispersion θ: start and bounds.
    robust : bool, "mae" or float > 0, default False
        Huber-robust fit under any ``loss`` (``"mse"`` included): True is δ = 1.345, ``"mae"``
        δ = 1e-4 (close to least absolute deviations), a number is δ. Each entry's loss grows
        linearly instead of quadratically in its deviance residual beyond δ (docs/losses.md),
        by IRLS weights ``min(1, δ/|r|)``; every IRLS step is then a dense pass over the
        entries (O(m·n·k²) per iteration). ``objective`` is the robust objective.
    zi : {"none", "row", "col"}, default "none"
        Zero inflation under ``loss="nb"`` or ``"gp"``: each entry is an extra zero with a
        probability π of its row (``"row"``) or column (``"col"``), started at
        min(0.5·zero rate, 0.3) and updated by one EM step per iteration; the zeros' pull in
        every IRLS step is weighted by their posterior share of the count model, and
        ``objective`` is the mixture's negative log-likelihood. The result's ``pi`` holds π.

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
    args = dict(locals())  # the arguments as given, before any other local exists
    del args["A"], args["k"], args["cv_k_range"], args["layer"]
    p = validate_params({"k": k, "cv_k_range": cv_k_range, "layer": layer, **args}, entry="nmf")
    if layer is not None:
        if type(A).__name__ != "AnnData":
            raise ValueError("layer: only meaningful when A is an AnnData")
        if layer not in A.layers:
            raise KeyError(f"layer={layer!r}: not in A.layers (has {list(A.layers)})")
        from .io import open_matrix

        A = open_matrix(A, layer=layer)
    if isinstance(p["k"], int):
        return fit_nmf(A, k, **args)
    return rank_search(A, k, cv_k_range=cv_k_range, **args)
