"""The public functions' arguments, declared once, and the one check that enforces them.

Modelled on scikit-learn's ``_parameter_constraints``: :data:`PARAMETERS` maps every argument of
``nmf``/``fit_nmf``/``rank_search``, ``svd``/``pca``, ``factor_config`` (with the per-factor
``W()``/``H()``, entry ``"factor"``) and the ``NMF`` estimator to the list of constraints a value
may satisfy (one is enough); :data:`RULES` declares the few checks that involve two arguments;
:func:`validate_params` applies both, before any work, and returns the values normalised (pairs as
2-tuples, dtypes as ``numpy.dtype``, numbers as ``int``/``float``).

Layout of the table:

- ``PARAMETERS["name"]`` is the meaning an argument has wherever it appears (``maxit`` is an
  integer >= 1 in ``nmf``, ``factor_config`` and the estimator alike);
- ``PARAMETERS["entry.name"]`` overrides it for one entry point where the argument means something
  else (``svd.seed`` must be >= 0, ``nmf.k`` may also be a list of ranks or ``"auto"``);
- :data:`ALIASES` renames an entry point's arguments onto the table (the estimator's
  ``n_components`` is ``k``); messages use the caller's name.

A failed check raises ``TypeError`` when the value is of no accepted kind and ``ValueError`` when it
is of an accepted kind but out of range, with the project's message shape: the argument, what was
expected, the value received (``k: expected an integer >= 1, got 0``). Every number must be finite.
scikit-learn itself is not needed (it is not a core dependency, and its messages read differently).

Examples
--------
>>> validate_params({"k": 3, "L1": 0.1, "dtype": "float64"}, entry="nmf")
{'k': 3, 'L1': (0.1, 0.1), 'dtype': dtype('float64')}
>>> validate_params({"k": 0}, entry="nmf")
Traceback (most recent call last):
    ...
ValueError: k: expected an integer >= 1, got 0
>>> validate_params({"n_components": 2.5}, entry="NMF")
Traceback (most recent call last):
    ...
TypeError: n_components: expected an integer >= 1, got 2.5
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PARAMETERS", "RULES", "ALIASES", "validate_params", "check_value", "checkpoint_args",
           "Interval",
           "StrOptions", "Options", "Boolean", "Pair", "ListOf", "Bounds", "Matrix", "Path",
           "FloatDType", "HasMethods", "InstanceOf", "CallableValue"]


# --------------------------------------------------------------------------------------------
# constraints: one kind of accepted value each


class Constraint:
    """One kind of accepted value.

    ``matches(value)`` says whether the value is of this constraint's kind (its type);
    ``check(name, value)`` returns the normalised value or raises (``ValueError`` for a value of
    the right kind out of range); ``str()`` is what the messages say was expected.
    """

    def matches(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, name: str, value: Any) -> Any:
        return value


class _NoneConstraint(Constraint):
    def matches(self, value):
        return value is None

    def __str__(self):
        return "None"


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite ``int`` or ``float`` (never a bool) between bounds (``None``: unbounded).

    ``closed`` says which bounds belong to the interval: ``"left"``, ``"right"``, ``"both"`` or
    ``"neither"``. ``desc`` replaces the generated description.
    """

    type: type
    left: float | None = None
    right: float | None = None
    closed: str = "left"
    desc: str | None = None

    def matches(self, value):
        return isinstance(value, self.type) and not isinstance(value, (bool, np.bool_))

    def _inside(self, v) -> bool:
        lc = self.closed in ("left", "both")
        rc = self.closed in ("right", "both")
        if self.left is not None and (v < self.left if lc else v <= self.left):
            return False
        return not (self.right is not None and (v > self.right if rc else v >= self.right))

    def check(self, name, value):
        v = int(value) if self.type is numbers.Integral else float(value)
        if (isinstance(v, float) and not math.isfinite(v)) or not self._inside(v):
            raise ValueError(f"{name}: expected {self}, got {v!r}")
        return v

    def __str__(self):
        if self.desc is not None:
            return self.desc
        integer = self.type is numbers.Integral
        noun = "an integer" if integer else "a number"
        if self.left is not None and self.right is not None:
            lb = "[" if self.closed in ("left", "both") else "("
            rb = "]" if self.closed in ("right", "both") else ")"
            return f"{noun} in {lb}{self.left}, {self.right}{rb}"
        if not integer:
            noun = "a finite number"
        if self.left is not None:
            return f"{noun} {'>=' if self.closed in ('left', 'both') else '>'} {self.left}"
        if self.right is not None:
            return f"{noun} {'<=' if self.closed in ('right', 'both') else '<'} {self.right}"
        return noun


@dataclass(frozen=True)
class StrOptions(Constraint):
    """One of a few strings (a string not among them is a ``ValueError``)."""

    options: tuple[str, ...]

    def matches(self, value):
        return isinstance(value, str)

    def check(self, name, value):
        if value not in self.options:
            raise ValueError(f"{name}: expected {self}, got {value!r}")
        return value

    def __str__(self):
        return f"one of {self.options}"


@dataclass(frozen=True)
class Options(Constraint):
    """Exactly these values (of exactly their type), e.g. ``"auto"`` beside integer ranks."""

    values: tuple

    def matches(self, value):
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self):
        return " or ".join(repr(v) for v in self.values)


class Boolean(Constraint):
    """``True`` or ``False`` (Python or numpy bools; not 0/1)."""

    def matches(self, value):
        return isinstance(value, (bool, np.bool_))

    def check(self, name, value):
        return bool(value)

    def __str__(self):
        return "a bool"


@dataclass(frozen=True)
class Pair(Constraint):
    """RcppML's ``c(w, h)``: one value for both sides or a (W side, H side) pair → a 2-tuple."""

    inner: Constraint

    def matches(self, value):
        if isinstance(value, (str, bytes)):
            return False
        return self.inner.matches(value) or isinstance(value, (list, tuple, np.ndarray))

    def check(self, name, value):
        if np.ndim(value) == 0:
            if isinstance(value, np.ndarray):
                value = value.item()
            if not self.inner.matches(value):
                raise TypeError(f"{name}: expected {self}, got {value!r}")
            v = self.inner.check(name, value)
            return (v, v)
        vals = list(np.asarray(value, dtype=object).ravel())
        if len(vals) != 2:
            raise ValueError(f"{name}: expected a scalar or a pair (W side, H side), got "
                             f"{len(vals)} values")
        for v in vals:
            if not self.inner.matches(v):
                raise TypeError(f"{name}: expected {self}, got {value!r}")
        return tuple(self.inner.check(name, v) for v in vals)

    def __str__(self):
        return f"{self.inner}, or a pair of them (W side, H side)"


@dataclass(frozen=True)
class ListOf(Constraint):
    """A non-empty list (tuple, 1-D array) of values of one kind → a list."""

    inner: Constraint
    desc: str

    def matches(self, value):
        return isinstance(value, (list, tuple, np.ndarray))

    def check(self, name, value):
        vals = list(np.asarray(value, dtype=object).ravel())
        if not vals:
            raise ValueError(f"{name}: expected {self}, got {value!r}")
        return [check_value(name, v, [self.inner]) for v in vals]

    def __str__(self):
        return self.desc


@dataclass(frozen=True)
class Bounds(Constraint):
    """A ``(min, max)`` pair of values of one kind with ``min <= max`` → a 2-tuple."""

    inner: Constraint
    desc: str

    def matches(self, value):
        return isinstance(value, (list, tuple, np.ndarray))

    def check(self, name, value):
        vals = list(np.asarray(value, dtype=object).ravel())
        if len(vals) != 2:
            raise ValueError(f"{name}: expected {self}, got {value!r}")
        lo, hi = (check_value(name, v, [self.inner]) for v in vals)
        if lo > hi:
            raise ValueError(f"{name}: expected (min, max) with min <= max, got {value!r}")
        return (lo, hi)

    def __str__(self):
        return self.desc


@dataclass(frozen=True)
class Matrix(Constraint):
    """A finite 2-D numeric array → float64 ``ndarray``; ``desc`` names the expected shape."""

    desc: str

    def matches(self, value):
        return value is not None and not isinstance(value, (str, bytes))

    def check(self, name, value):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected {self}, got {type(value).__name__}") from exc
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected {self}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: expected finite values")
        return arr

    def __str__(self):
        return self.desc


class MaskMatrix(Constraint):
    """The user's mask: a 2-D numpy, scipy.sparse or dask array (non-zero = missing), kept as
    given (blocked like A later, inside the tasks for a dask array)."""

    def matches(self, value):
        import scipy.sparse as sp

        return sp.issparse(value) or hasattr(value, "ndim") and not isinstance(value, str)

    def check(self, name, value):
        if getattr(value, "ndim", 2) != 2:
            raise ValueError(f"{name}: expected a 2-D mask matrix (features × samples), got "
                             f"{value.ndim} dimension(s)")
        kind = np.dtype(value.dtype).kind
        if kind not in "biuf":
            raise TypeError(f"{name}: expected a boolean or numeric mask matrix, got dtype "
                            f"{value.dtype}")
        return value

    def __str__(self):
        return "a boolean matrix of A's shape (True = missing)"


class Path(Constraint):
    """A file-system path (``str`` or ``os.PathLike``)."""

    def matches(self, value):
        return isinstance(value, (str, os.PathLike))

    def __str__(self):
        return "a path"


class FloatDType(Constraint):
    """``float32`` or ``float64`` in any spelling numpy understands → ``numpy.dtype``."""

    def matches(self, value):
        if value is None or isinstance(value, bool):
            return False  # np.dtype(None) is float64: not what a None means here
        try:
            return np.dtype(value) in (np.dtype(np.float32), np.dtype(np.float64))
        except (TypeError, ValueError):
            return False

    def check(self, name, value):
        return np.dtype(value)

    def __str__(self):
        return "'float32' or 'float64'"


@dataclass(frozen=True)
class HasMethods(Constraint):
    """An object with these methods (duck typing, e.g. a ``distributed.Client``)."""

    methods: tuple[str, ...]
    desc: str

    def matches(self, value):
        return all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self):
        return self.desc


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of a type (e.g. ``str`` for a layer name)."""

    type: type
    desc: str

    def matches(self, value):
        return isinstance(value, self.type)

    def __str__(self):
        return self.desc


class CallableValue(Constraint):
    """A function (a callback)."""

    def matches(self, value):
        return callable(value)

    def __str__(self):
        return "a callable"


# --------------------------------------------------------------------------------------------
# the table

_INT = numbers.Integral
_REAL = numbers.Real
NONE = _NoneConstraint()

_RANK = Interval(_INT, 1, None)
_COUNT = Interval(_INT, 1, None)  # iterations, blocks, entries, …: an integer >= 1
# seeds fit in a signed 64-bit integer (they are hashed and offset in int64/uint64 arithmetic);
# R-style seeds may be negative (RULES: rng="rcppml")
_SEED_ANY = Interval(_INT, -(2**63), 2**63 - 1, closed="both",
                     desc="an integer in [-2**63, 2**63)")
_SEED = Interval(_INT, 0, 2**63 - 1, closed="both", desc="an integer in [0, 2**63)")
_RANKS = ListOf(_RANK, "a non-empty list of integers >= 1")
_SEEDS = ListOf(_SEED, "a non-empty list of integers >= 0")
_CLIENT = HasMethods(("persist",), "a distributed.Client")
_CACHE = StrOptions(("auto", "memory", "none"))

#: argument name (or ``"entry.name"``) → the constraints a value may satisfy, one is enough
PARAMETERS: dict[str, list[Constraint]] = {
    # ---- the factorization: nmf, fit_nmf, rank_search, the NMF estimator, factor_config
    "k": [_RANK],
    "tol": [Interval(_REAL, 0.0, None)],
    "maxit": [_COUNT],
    "L1": [Pair(Interval(_REAL, 0.0, 1.0, closed="left"))],
    "L2": [Pair(Interval(_REAL, 0.0, None))],
    "upper_bound": [Pair(Interval(_REAL, 0.0, None))],
    "nonneg": [Pair(Boolean())],
    "seed": [_SEED_ANY, NONE],
    "w_init": [Matrix("a 2-D (m, k) matrix"), NONE],
    "norm": [StrOptions(("L1", "L2", "none"))],
    "solver": [StrOptions(("auto", "cd", "cholesky"))],
    "cd_maxit": [_COUNT, NONE],
    "cd_tol": [Interval(_REAL, 0.0, None), NONE],
    "sort_model": [Boolean()],
    "rng": [StrOptions(("numpy", "rcppml"))],
    "target_H": [Matrix("a 2-D (k, n) matrix"), NONE],
    "target_lambda": [Interval(_REAL)],
    # W updates per pass (block-sequential ALS, engine.online; 1 = exact ALS)
    "updates_per_pass": [_COUNT],
    # ---- sample_w_init: the share of columns its sample fit sees
    "sample_w_init.fraction": [Interval(_REAL, 0.0, 1.0, closed="right",
                                        desc="a number in (0, 1]")],
    "sample_w_init.min_columns": [_COUNT],
    "sample_w_init.k": [_RANK],
    # ---- cross-validation and missing values
    "test_fraction": [Interval(_REAL, 0.0, 1.0, closed="left",
                               desc="a number in (0, 1), or 0 for no hold-out")],
    "cv_seed": [_SEED, _SEEDS, NONE],
    "patience": [_COUNT],
    "mask": [StrOptions(("zeros", "NA")), MaskMatrix(), NONE],
    "mask_zeros": [Boolean()],
    "cv_k_range": [Bounds(_RANK, "a (min, max) pair of integers >= 1")],
    # ---- blocks, execution, feedback
    "chunks": [_COUNT, NONE],
    "block_nnz": [_COUNT, NONE],
    "dtype": [FloatDType()],
    "cache": [_CACHE],
    "client": [_CLIENT, NONE],
    "progress": [Boolean()],
    "verbose": [Boolean()],
    "on_iteration": [CallableValue(), NONE],
    # ---- checkpoints (RULES apply checks.checkpoint_args' semantics)
    "checkpoint": [Path(), NONE],
    "checkpoint_every": [_COUNT, NONE],
    "resume": [Path(), Boolean(), NONE],
    # ---- svd / pca
    "method": [StrOptions(("auto", "lanczos", "irlba", "randomized"))],
    "center": [Boolean()],
    "scale": [Boolean()],
    "block_size": [_COUNT, NONE],
    "on_pass": [CallableValue(), NONE],
    "copy": [Boolean()],
    "layer": [InstanceOf(str, "a layer name"), NONE],
    "penalties": [HasMethods(("fingerprint",), "engine.masked.Penalties"), NONE],
    # ---- the loss (nmf, factor_config, nmf_layer) and its IRLS settings
    "loss": [StrOptions(("mse", "kl", "gp", "nb", "gamma", "inverse_gaussian", "tweedie"))],
    "dispersion": [StrOptions(("per_row", "global", "none"))],
    "irls_max_iter": [_COUNT],
    "irls_tol": [Interval(_REAL, 0.0, None)],
    "irls_gain_tol": [Interval(_REAL, 0.0, 1.0, closed="left")],
    "tweedie_power": [Interval(_REAL, 1.0, None)],
    "nb_size_init": [Interval(_REAL, 0.0, None, closed="neither")],
    "nb_size_min": [Interval(_REAL, 0.0, None, closed="neither")],
    "nb_size_max": [Interval(_REAL, 0.0, None, closed="neither")],
    "theta_init": [Interval(_REAL, 0.0, None)],
    "theta_min": [Interval(_REAL, 0.0, None)],
    "theta_max": [Interval(_REAL, 0.0, None)],
    "robust": [Boolean(), StrOptions(("mae",)), Interval(_REAL, 0.0, None, closed="neither")],
    "zi": [StrOptions(("none", "row", "col"))],
    # ---- factor_config only
    "warmup": [Interval(_INT, 0, None), NONE],
    # ---- per-factor options W(), H() (None: inherit the layer's value)
    "L21": [Interval(_REAL, 0.0, None), NONE],
    "angular": [Interval(_REAL, 0.0, None), NONE],
    "graph_lambda": [Interval(_REAL, 0.0, None), NONE],
    # ---- consensus NMF, divisive clustering (dask_factor.consensus, dask_factor.dclust)
    "reps": [_COUNT],
    "knn": [_COUNT],
    "max_memory": [_COUNT, NONE],
    "ks": [_RANKS],
    "density_threshold": [Interval(_REAL, 0.0, None, closed="neither")],
    "n_neighbors": [Interval(_REAL, 0.0, None, closed="neither")],
    "stability_tol": [Interval(_REAL, 0.0, None)],
    "min_samples": [_COUNT],
    "min_dist": [Interval(_REAL, 0.0, None)],
    "calc_dist": [Boolean()],
    "samples": [ListOf(Interval(_INT, 0, None), "a non-empty list of sample indices >= 0"),
                NONE],
    # ---- per entry point, where an argument means something else there
    "consensus_nmf.method": [StrOptions(("hard", "knn_jaccard"))],
    "consensus_programs.seed": [_SEED],
    "dclust.seed": [_SEED],
    "dclust.nonneg": [Boolean()],
    "bipartition.seed": [_SEED],
    "bipartition.nonneg": [Boolean()],
    "nmf.k": [_RANK, _RANKS, Options(("auto",))],
    "rank_search.k": [_RANKS, Options(("auto",))],
    "fit_nmf.cv_seed": [_SEED, NONE],
    "factor_config.cv_seed": [_SEED],
    "svd.seed": [_SEED, NONE],
    "svd.tol": [Interval(_REAL, 0.0, None), NONE],
    "svd.maxit": [Interval(_INT, 0, None), NONE],  # 0 power iterations: RULES (randomized only)
    "factor.L1": [Interval(_REAL, 0.0, 1.0, closed="left"), NONE],
    "factor.L2": [Interval(_REAL, 0.0, None), NONE],
    "factor.upper_bound": [Interval(_REAL, 0.0, None), NONE],
    "factor.nonneg": [Boolean(), NONE],
    "factor.target_lambda": [Interval(_REAL), NONE],
}

#: entry point → {its argument name: the table's name}; messages keep the caller's name
ALIASES: dict[str, dict[str, str]] = {
    "NMF": {"n_components": "k", "max_iter": "maxit", "random_state": "seed"},
}


# --------------------------------------------------------------------------------------------
# rules: checks that involve more than one argument (after each argument passed the table)


def _is_single(v) -> bool:
    return "k" not in v or isinstance(v["k"], int)


def _seed_needs_rcppml(v, name):
    if v["seed"] is not None and v["seed"] < 0 and v["rng"] == "numpy":
        raise ValueError(f"{name('seed')}: expected a non-negative integer with rng='numpy' "
                         f"(R-style negative seeds need rng='rcppml'), got {v['seed']}")


def _cv_seeds_need_ranks(v, name):
    if isinstance(v["cv_seed"], list) and _is_single(v):
        raise TypeError(f"{name('cv_seed')}: a list of seeds needs a list of ranks "
                        f"{name('k')}; got an integer {name('k')}")


def _mask_zeros_needs_test_fraction(v, name):
    if v["mask_zeros"] and v["test_fraction"] == 0 and _is_single(v):
        raise ValueError(f"{name('mask_zeros')}: only meaningful with test_fraction > 0")


def _single_fit_only(v, name):
    if _is_single(v):
        return
    for arg in ("w_init", "target_H", "checkpoint", "resume"):
        if v.get(arg) is not None and v.get(arg) is not False:
            raise ValueError(f"{name(arg)}: only for a single fit (an integer "
                             f"{name('k')}), not a rank search")


def _target_needs_target_h(v, name):
    T = v["target_H"]
    if T is None and v["target_lambda"] != 0:
        raise ValueError(f"{name('target_lambda')}: set target_H too (a k × n target), or "
                         f"leave it at 0")
    if T is not None and "k" in v and isinstance(v["k"], int) and T.shape[0] != v["k"]:
        raise ValueError(f"{name('target_H')}: expected shape (k={v['k']}, n), got {T.shape}")


def checkpoint_args(checkpoint: Any, checkpoint_every: Any, resume: Any
                    ) -> tuple[Any, int | None, Any]:
    """Check ``checkpoint``/``checkpoint_every``/``resume`` before any work.

    Returns ``(checkpoint path or None, every or None, resume path or None)``. ``resume=True``
    continues from ``checkpoint`` when it exists and starts afresh otherwise (a re-queued batch
    job runs the same command); an existing checkpoint is never overwritten by a fit that was not
    asked to resume it. (``nmf()`` applies it as a rule; ``graph.fit`` calls it directly.)
    """
    from .engine.checkpoint import check_path, is_checkpoint

    checkpoint = check_value("checkpoint", checkpoint, PARAMETERS["checkpoint"])
    checkpoint_every = check_value("checkpoint_every", checkpoint_every,
                                   PARAMETERS["checkpoint_every"])
    resume = check_value("resume", resume, PARAMETERS["resume"])
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every: set checkpoint=PATH too")
    elif checkpoint is not None:
        checkpoint_every = 10
    if resume is None or resume is False:
        resume = None
    elif resume is True:
        if checkpoint is None:
            raise ValueError("resume=True: set checkpoint=PATH too (the checkpoint to resume)")
        resume = checkpoint if os.path.exists(checkpoint) else None
    else:
        if not os.path.exists(resume):
            raise FileNotFoundError(f"resume: no checkpoint at {str(resume)!r}")
        if not is_checkpoint(resume):
            raise ValueError(f"resume: {str(resume)!r} is not a dask_factor checkpoint")
    if checkpoint is not None:
        check_path(checkpoint)
        if os.path.exists(checkpoint) and (resume is None or
                                           os.path.abspath(resume) != os.path.abspath(checkpoint)):
            raise FileExistsError(
                f"checkpoint: {str(checkpoint)!r} holds the checkpoint of an earlier fit; pass "
                f"resume=True to continue it, or remove it to start over")
    return checkpoint, checkpoint_every, resume


def _checkpoints(v, name):
    if _is_single(v):  # a rank search: _single_fit_only refuses them
        v["checkpoint"], v["checkpoint_every"], v["resume"] = checkpoint_args(
            v["checkpoint"], v["checkpoint_every"], v["resume"])


def _resume_needs_seed(v, name):
    if v["resume"] is not None and v["seed"] is None and v["w_init"] is None:
        raise ValueError(f"{name('resume')}: pass {name('seed')}= (the seed of the interrupted "
                         f"fit); a drawn seed cannot be matched")


def _power_iterations(v, name):
    if v["maxit"] == 0 and v["method"] != "randomized":
        raise ValueError(f"{name('maxit')}: expected an integer >= 1, got 0 (0 power "
                         f"iterations: method='randomized' only)")


def _block_size_krylov_only(v, name):
    if v["block_size"] is not None and v["method"] == "randomized":
        raise ValueError(f"{name('block_size')}: only used by the Krylov methods ('lanczos', "
                         f"'irlba'); the randomized method uses k + oversampling columns")


def _irls_settings(v, name):
    """A non-Gaussian loss: what it combines with, and its dispersion bounds."""
    for lo, init, hi in (("nb_size_min", "nb_size_init", "nb_size_max"),
                         ("theta_min", "theta_init", "theta_max")):
        if not v[lo] <= v[init] <= v[hi]:
            raise ValueError(f"{name(init)}: expected {name(lo)} <= {name(init)} <= {name(hi)}, "
                             f"got {v[lo]!r}, {v[init]!r}, {v[hi]!r}")
    loss = v["loss"]
    if loss == "mse":
        return
    if v["solver"] == "cholesky":
        raise ValueError(f"{name('solver')}: loss={loss!r} is fitted by IRLS around coordinate "
                         f"descent; expected 'auto' or 'cd', got 'cholesky'")
    if v["target_H"] is not None:
        raise ValueError(f"{name('target_H')}: not supported with loss={loss!r} (RcppML drops "
                         f"it silently under IRLS; we refuse it)")


def _updates_per_pass_plain_fit(v, name):
    """Block-sequential ALS (``updates_per_pass > 1``) is a plain least-squares fit."""
    if v["updates_per_pass"] == 1:
        return
    given = [arg for arg, off in (("test_fraction", 0), ("mask", None), ("target_H", None),
                                  ("loss", "mse"), ("robust", False))
             if arg in v and not _same(v[arg], off)]
    if not _is_single(v):
        given.insert(0, "k (a rank search cross-validates)")
    if given:
        raise ValueError(f"{name('updates_per_pass')}: several W updates per pass are for plain "
                         f"least-squares fits; expected 1 with {', '.join(given)}, got "
                         f"{v['updates_per_pass']}")


def _same(value, default) -> bool:
    return value is default or (isinstance(value, (str, int, float)) and value == default)


def _robust_settings(v, name):
    """``robust=``: fitted by IRLS around coordinate descent, without targets."""
    if v["robust"] is False:
        return
    if v["solver"] == "cholesky":
        raise ValueError(f"{name('solver')}: robust={v['robust']!r} is fitted by IRLS around "
                         f"coordinate descent; expected 'auto' or 'cd', got 'cholesky'")
    if v["target_H"] is not None:
        raise ValueError(f"{name('target_H')}: not supported with robust={v['robust']!r}")


def _zi_settings(v, name):
    """Zero inflation: NB and GP only (RcppML's rule), not with a robust fit."""
    if v["zi"] == "none":
        return
    if v["loss"] not in ("nb", "gp"):
        raise ValueError(f"{name('zi')}: zi={v['zi']!r} requires loss='nb' or loss='gp', got "
                         f"loss={v['loss']!r}")
    if v["robust"] is not False:
        raise ValueError(f"{name('zi')}: zero inflation is not combined with robust="
                         f"{v['robust']!r}; use one of them")


@dataclass(frozen=True)
class Rule:
    """A check over several arguments, run when an entry point has all of them."""

    names: tuple[str, ...]
    check: Callable[[dict, Callable[[str], str]], None]
    entries: tuple[str, ...] | None = None  # None: every entry point with these arguments


#: in order: a rule sees the values the earlier rules normalised
RULES: list[Rule] = [
    Rule(("seed", "rng"), _seed_needs_rcppml),
    Rule(("cv_seed", "k"), _cv_seeds_need_ranks),
    # factor_config(mask_zeros=True) is a cross_validate_graph setting (test_fraction 0 → 0.1)
    Rule(("mask_zeros", "test_fraction"), _mask_zeros_needs_test_fraction,
         entries=("nmf", "fit_nmf", "NMF")),
    Rule(("k",), _single_fit_only),
    Rule(("target_H", "target_lambda"), _target_needs_target_h),
    Rule(("checkpoint", "checkpoint_every", "resume"), _checkpoints),
    Rule(("resume", "seed", "w_init"), _resume_needs_seed),
    Rule(("method", "maxit"), _power_iterations),
    Rule(("method", "block_size"), _block_size_krylov_only),
    Rule(("loss", "solver", "target_H", "nb_size_init",
          "nb_size_min", "nb_size_max", "theta_init", "theta_min", "theta_max"), _irls_settings),
    Rule(("robust", "solver", "target_H"), _robust_settings),
    Rule(("zi", "loss", "robust"), _zi_settings),
    Rule(("updates_per_pass",), _updates_per_pass_plain_fit),
]


# --------------------------------------------------------------------------------------------
# the check


def _expected(constraints) -> str:
    descs = [str(c) for c in constraints]
    return descs[0] if len(descs) == 1 else ", ".join(descs[:-1]) + " or " + descs[-1]


def check_value(name: str, value: Any, constraints: list[Constraint]) -> Any:
    """Check one value against constraints (one must hold); returns it normalised.

    ``TypeError`` when the value is of none of the accepted kinds, else the error of the first
    constraint of its kind (``ValueError`` for a value out of range).

    Examples
    --------
    >>> check_value("patience", 3, PARAMETERS["patience"])
    3
    >>> check_value("mask", "ones", PARAMETERS["mask"])
    Traceback (most recent call last):
        ...
    ValueError: mask: expected one of ('zeros', 'NA'), got 'ones'
    """
    error = None
    for c in constraints:
        if c.matches(value):
            try:
                return c.check(name, value)
            except (TypeError, ValueError) as exc:
                error = error or exc
    if error is not None:
        raise error
    raise TypeError(f"{name}: expected {_expected(constraints)}, got {value!r}")


def constraints_for(name: str, entry: str) -> list[Constraint]:
    """The table's constraints for an entry point's argument (its override, else the shared)."""
    key = ALIASES.get(entry, {}).get(name, name)
    found = PARAMETERS.get(f"{entry}.{key}", PARAMETERS.get(key))
    if found is None:
        raise TypeError(f"{entry}: unexpected argument {name!r}")
    return found


def validate_params(values: Mapping[str, Any], *, entry: str) -> dict[str, Any]:
    """Check an entry point's arguments against the table and the rules, before any work.

    Parameters
    ----------
    values : mapping of argument name → value
        The arguments as the caller received them (``locals()`` of the entry point).
    entry : str
        The entry point: ``"nmf"``, ``"fit_nmf"``, ``"rank_search"``, ``"svd"``, ``"pca"``,
        ``"factor_config"``, ``"factor"`` (``W()``/``H()``) or ``"NMF"``; selects the
        ``"entry.name"`` overrides and aliases.

    Returns
    -------
    dict
        The normalised values, keyed by the table's names (aliases resolved).

    Raises
    ------
    TypeError, ValueError
        ``name: expected …, got …`` for the first bad argument (``NotImplementedError`` for a
        declared option that is not implemented, such as a non-Gaussian loss).

    Examples
    --------
    >>> validate_params({"k": [2, 4], "cv_seed": [1, 2]}, entry="nmf")
    {'k': [2, 4], 'cv_seed': [1, 2]}
    >>> validate_params({"seed": -1, "rng": "numpy"}, entry="factor_config")
    Traceback (most recent call last):
        ...
    ValueError: seed: expected a non-negative integer with rng='numpy' (R-style negative ...
    """
    aliases = ALIASES.get(entry, {})
    shown = {canonical: own for own, canonical in aliases.items()}
    out: dict[str, Any] = {}
    for own, value in values.items():
        key = aliases.get(own, own)
        if key in out:  # e.g. the estimator's n_components and nmf()'s k, both given
            raise TypeError(f"{own}: given twice (as {shown.get(key, key)!r} and as {key!r})")
        out[key] = check_value(own, value, constraints_for(own, entry))

    def name(canonical: str) -> str:
        return shown.get(canonical, canonical)

    for rule in RULES:
        if (rule.entries is None or entry in rule.entries) and all(n in out for n in rule.names):
            rule.check(out, name)
    return out
