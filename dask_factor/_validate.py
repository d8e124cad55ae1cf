"""Argument checking shared by the public functions: fail before any work, name the argument."""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def float_dtype(value: Any) -> np.dtype:
    try:
        dt = np.dtype(value)
    except TypeError as exc:
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {value!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {dt}")
    return dt


def is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def check_matrix_dtype(name: str, dtype: np.dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind in "cOSUVMm":
        raise TypeError(f"{name}: expected a real numeric matrix, got dtype {dtype}")


def real_number(name: str, value: Any, *, minimum: float | None = None) -> float:
    """A finite real number (not a string or a bool), optionally ``>= minimum``."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        expect = "a number" if minimum is None else f"a number >= {minimum}"
        raise TypeError(f"{name}: expected {expect}, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        expect = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"{name}: expected {expect}, got {value!r}")
    return value


def checkpoint_args(checkpoint: Any, checkpoint_every: Any, resume: Any
                    ) -> tuple[Any, int | None, Any]:
    """Check ``checkpoint``/``checkpoint_every``/``resume`` before any work.

    Returns ``(checkpoint path or None, every or None, resume path or None)``. ``resume=True``
    continues from ``checkpoint`` when it exists and starts afresh otherwise (a re-queued batch
    job runs the same command); an existing checkpoint is never overwritten by a fit that was not
    asked to resume it.
    """
    from .engine.checkpoint import check_path, is_checkpoint

    if checkpoint is not None and not is_path(checkpoint):
        raise TypeError(f"checkpoint: expected a path, got {type(checkpoint).__name__}")
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every: set checkpoint=PATH too")
        checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    elif checkpoint is not None:
        checkpoint_every = 10
    if resume is None or resume is False:
        resume = None
    elif resume is True:
        if checkpoint is None:
            raise ValueError("resume=True: set checkpoint=PATH too (the checkpoint to resume)")
        resume = checkpoint if os.path.exists(checkpoint) else None
    elif is_path(resume):
        if not os.path.exists(resume):
            raise FileNotFoundError(f"resume: no checkpoint at {str(resume)!r}")
        if not is_checkpoint(resume):
            raise ValueError(f"resume: {str(resume)!r} is not a dask_factor checkpoint")
    else:
        raise TypeError(f"resume: expected a path, True or None, got {resume!r}")
    if checkpoint is not None:
        check_path(checkpoint)
        if os.path.exists(checkpoint) and (resume is None or
                                           os.path.abspath(resume) != os.path.abspath(checkpoint)):
            raise FileExistsError(
                f"checkpoint: {str(checkpoint)!r} holds the checkpoint of an earlier fit; pass "
                f"resume=True to continue it, or remove it to start over")
    return checkpoint, checkpoint_every, resume
