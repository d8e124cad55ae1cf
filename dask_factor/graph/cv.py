"""``cross_validate_graph()``: hyper-parameter search over a graph by held-out reconstruction.

RcppML's graph cross-validation with our changes (docs/cross_validation.md): the same masks for
every parameter combination within a repetition (``cv_seed = seed + rep``: paired comparisons),
every graph scored by the held-out MSE of its input's reconstruction (deep graphs included), one
loss unit (MSE). Arguments are checked and every combination's graph is built before any fit starts;
the fits then run concurrently.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

from .. import checks as V
from .config import FactorNetConfig, factor_config
from .cv_run import CVResult, run_cv
from .nodes import FactorInput, Node

__all__ = ["cross_validate_graph", "CVResult"]


def cross_validate_graph(
    inputs,
    layer_fn: Callable[[dict], Node],
    params: Mapping[str, list],
    config: FactorNetConfig | None = None,
    *,
    reps: int = 3,
    strategy: str = "grid",
    n_random: int = 20,
    seed: int = 42,
    verbose: bool = True,
    client=None,
) -> CVResult:
    """Cross-validate a graph over a parameter grid (held-out reconstruction MSE).

    Parameters
    ----------
    inputs : FactorInput or list of FactorInput
        The graph's inputs.
    layer_fn : callable(dict) -> Node
        Builds the output layer from one parameter combination ``p`` (e.g.
        ``lambda p: nmf_layer(inp, p["k"], L1=p["L1"], name="cv")``).
    params : dict of str to list
        Values to search, e.g. ``{"k": [3, 5, 8, 12], "L1": [0, 0.01, 0.1]}``.
    config : FactorNetConfig, optional
        ``test_fraction`` (0 → 0.1), ``cv_seed``, ``maxit``, … of every fit.
    reps : int, default 3
        Repetitions (different hold-out masks; the same mask for every combination of a rep).
    strategy : {"grid", "random"}, default "grid"
        Every combination, or ``n_random`` of them drawn with ``seed``.
    n_random : int, default 20
    seed : int, default 42
    verbose : bool, default True
        Warn about failed fits and show progress.
    client : distributed.Client, optional
        Run the fits there (side by side); default: the active client, else dask's threads.

    Returns
    -------
    CVResult
        ``results`` (a DataFrame per combination and rep: the parameters, ``combo``, ``rep``,
        ``cv_seed``, ``test_loss``, ``train_loss``, ``best_iter``, ``iterations``,
        ``converged``), ``summary`` (the parameters, ``mean_test_loss``, ``se_test_loss``,
        ``mean_train_loss``, ``n_valid``; sorted by ``mean_test_loss``), ``best_params``,
        ``fits`` and ``plot()``.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, a grid key ``layer_fn`` never reads, a ``layer_fn`` that fails for a
        combination, ``test_fraction`` outside (0, 1): before any fit starts.

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer, factor_config
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> cv = cross_validate_graph(inp, lambda p: nmf_layer(inp, p["k"], L1=p["L1"], name="cv"),
    ...                           {"k": [3, 8], "L1": [0, 0.1]},
    ...                           factor_config(test_fraction=0.1, cv_seed=42, maxit=20),
    ...                           reps=2, verbose=False)
    >>> len(cv.results), list(cv.summary.columns[:3]), int(cv.summary["n_valid"].min())
    (8, ['k', 'L1', 'mean_test_loss'], 2)
    >>> sorted(cv.best_params), cv.best_params["L1"] == 0  # L1 only costs held-out accuracy here
    (['L1', 'k'], True)
    """
    ins = [inputs] if isinstance(inputs, Node) else inputs
    if not isinstance(ins, (list, tuple)) or not ins or not all(
            isinstance(x, FactorInput) for x in ins):
        raise TypeError("cross_validate_graph: 'inputs' must be a factor_input or a non-empty "
                        "list of them")
    if not callable(layer_fn):
        raise TypeError("cross_validate_graph: 'layer_fn' must be a function(p) returning the "
                        "output layer for a parameter dict p")
    if not isinstance(params, Mapping) or not params:
        raise ValueError("cross_validate_graph: 'params' must be a non-empty dict of "
                         "name → list of values")
    for key, values in params.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"cross_validate_graph: all elements of 'params' must be named, "
                             f"got key {key!r}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not len(values):
            raise ValueError(f"cross_validate_graph: params[{key!r}] must be a non-empty list "
                             f"of values, got {values!r}")
    if config is None:
        config = factor_config()
    if not isinstance(config, FactorNetConfig):
        raise TypeError(f"cross_validate_graph: 'config' must be from factor_config(), got "
                        f"{type(config).__name__}")
    V.positive_int("reps", reps)
    V.choice("strategy", strategy, ("grid", "random"))
    V.positive_int("n_random", n_random)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an integer, got {seed!r}")
    if not 0 <= float(config.test_fraction) < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got "
                         f"{config.test_fraction!r}")
    return run_cv(ins, layer_fn, dict(params), config, reps=int(reps), strategy=strategy,
                  n_random=int(n_random), seed=int(seed), verbose=verbose, client=client)
