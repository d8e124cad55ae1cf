"""Argument checks one value at a time, for the graph builders and the input layer.

The public functions' arguments are declared in one table, :mod:`dask_factor._params`; these
helpers apply the same constraints to single values where a caller checks them itself (the graph
nodes, ``cross_validate_graph``, the input layer). Fail before any work, name the argument.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from ._params import PARAMETERS, Interval, check_value, checkpoint_args

__all__ = ["pair", "check_range", "positive_int", "choice", "float_dtype", "is_path",
           "check_matrix_dtype", "real_number", "checkpoint_args"]


def pair(name: str, value: Any, *, kind=float) -> tuple:
    """A scalar or a length-2 sequence (W side, H side) → a 2-tuple, RcppML's ``c(w, h)``."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a number or a pair (W side, H side), got {value!r}")
    if np.ndim(value) == 0:
        return (kind(value), kind(value))
    vals = list(np.asarray(value).ravel())
    if len(vals) != 2:
        raise ValueError(f"{name}: expected a scalar or a pair (W side, H side), got {len(vals)} "
                         f"values")
    return (kind(vals[0]), kind(vals[1]))


def check_range(name: str, values: tuple, lo: float, hi: float | None = None,
                hi_open: bool = True) -> None:
    for v in values:
        if not np.isfinite(v) or v < lo or (hi is not None and (v >= hi if hi_open else v > hi)):
            bound = "" if hi is None else (f", {hi})" if hi_open else f", {hi}]")
            expect = f"in [{lo}{bound}" if hi is not None else f">= {lo}"
            raise ValueError(f"{name}: expected values {expect}, got {v!r}")


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    return check_value(name, value, [Interval(numbers.Integral, minimum, None)])


def choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def float_dtype(value: Any) -> np.dtype:
    return check_value("dtype", value, PARAMETERS["dtype"])


def is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def check_matrix_dtype(name: str, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind in "cOSUVMm":
        raise TypeError(f"{name}: expected a real numeric matrix, got dtype {dtype}")


def real_number(name: str, value: Any, *, minimum: float | None = None) -> float:
    """A finite real number (not a string or a bool), optionally ``>= minimum``."""
    return check_value(name, value, [Interval(numbers.Real, minimum, None)])
