"""Size limits of the readers: what a file may make us allocate, checked *before* allocating.

A compressed file can declare far more than it holds: a 534-byte ``.spz`` can validly say "one
million rows of ones in each of 100 columns" (rANS over a one-symbol alphabet costs no bits), a
200-byte one can declare 2³² columns, a 22-byte Matrix Market header a 60000 × 60000 dense
array.  Every reader therefore estimates the memory a read will take (the arrays it returns plus
its decoding temporaries) and compares it with the *budget* of the source::

    budget(size) = min(max_bytes, max(min_bytes, max_ratio * size))

where ``size`` is the number of bytes of the file (or store) on disk.  So any file may decode
``min_bytes`` per read, a bigger one up to ``max_ratio`` times its size, and nothing more than
``max_bytes`` (default: the machine's physical memory).  Real data sits far below the ratio:
RcppML's pbmc3k.spz (2.1 MB) decodes to 27 MB, a ratio of 13.  What is checked:

* declared dimensions (8 bytes per row and per column: pointers, factors), at open;
* every ``.spz`` chunk or panel (entries × bytes per entry while decoding), at open;
* every read's result (a block, a range of columns, the whole matrix), before decoding;
* Matrix Market: the declared entries against the bytes the text can hold, and the result;
* zarr / h5ad: declared array lengths and every block's slice of ``indices``/``data``.

A read over the budget raises :class:`~dask_factor.io.errors.SizeLimitError` (a
``MatrixFormatError``; ``SpzFormatError`` too for ``.spz``) naming the file, what it declares and
how to raise the limit: :func:`set_limits`, the :func:`limits` context manager, or the
environment variables ``DASK_FACTOR_IO_MAX_BYTES``, ``DASK_FACTOR_IO_MAX_RATIO`` and
``DASK_FACTOR_IO_MIN_BYTES`` (read when no limit was set in the process, so they reach Dask
workers too; byte counts accept suffixes: ``64M``, ``2G``, ``1T``).  Readers capture the limits
in force when a file is opened and ship them to the workers with the tasks.

Examples
--------
>>> lim = Limits(max_bytes=2**30, max_ratio=1000.0, min_bytes=2**26)
>>> lim.budget(238) == 2**26, lim.budget(10**6) == 10**9, lim.budget(10**9) == 2**30
(True, True, True)
>>> with limits(min_bytes="1M", max_ratio=10):
...     get_limits().budget(1000)
1048576
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

from .errors import SizeLimitError

__all__ = ["Limits", "get_limits", "set_limits", "limits", "check_size", "check_budget",
           "source_size",
           "format_bytes", "parse_bytes", "ENV_MAX_BYTES", "ENV_MAX_RATIO", "ENV_MIN_BYTES"]

ENV_MAX_BYTES = "DASK_FACTOR_IO_MAX_BYTES"
ENV_MAX_RATIO = "DASK_FACTOR_IO_MAX_RATIO"
ENV_MIN_BYTES = "DASK_FACTOR_IO_MIN_BYTES"

DEFAULT_MAX_RATIO = 1000.0
DEFAULT_MIN_BYTES = 64 << 20
_FALLBACK_MAX_BYTES = 16 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return _FALLBACK_MAX_BYTES


def parse_bytes(value: int | float | str, what: str = "size") -> int:
    """A byte count from an int or a string such as ``"64M"``, ``"2G"``, ``"1.5GiB"``.

    Examples
    --------
    >>> parse_bytes("64M"), parse_bytes("1.5GiB"), parse_bytes(100)
    (67108864, 1610612736, 100)
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a byte count, got {value!r}")
    if isinstance(value, int | float):
        out = value
    else:
        mt = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", str(value), re.I)
        if not mt:
            raise ValueError(f"{what}: expected a byte count such as 1000, '64M' or '2G', got "
                             f"{value!r}")
        out = float(mt.group(1)) * _UNITS[mt.group(2).upper()]
    if not out == out or out < 0 or out == float("inf"):
        raise ValueError(f"{what}: expected a finite byte count >= 0, got {value!r}")
    return int(out)


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> format_bytes(238), format_bytes(34359738368)
    ('238 B', '32.0 GiB')
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


@dataclass(frozen=True)
class Limits:
    """How much one read of a source may allocate (see the module docstring).

    Attributes
    ----------
    max_bytes : int
        Ceiling for any read, whatever the size of the file.
    max_ratio : float
        Bytes a read may allocate per byte of the file on disk.
    min_bytes : int
        What any file, however small, may make a read allocate.
    """

    max_bytes: int
    max_ratio: float = DEFAULT_MAX_RATIO
    min_bytes: int = DEFAULT_MIN_BYTES

    def __post_init__(self) -> None:
        for name in ("max_bytes", "min_bytes"):
            object.__setattr__(self, name, parse_bytes(getattr(self, name), name))
        try:
            ratio = float(self.max_ratio)
        except (TypeError, ValueError):
            raise ValueError(f"max_ratio: expected a number, got {self.max_ratio!r}") from None
        if not ratio >= 0 or ratio == float("inf"):
            raise ValueError(f"max_ratio: expected a finite number >= 0, got {self.max_ratio!r}")
        object.__setattr__(self, "max_ratio", ratio)

    def budget(self, source_bytes: int | None) -> int:
        """Bytes one read of a source of ``source_bytes`` bytes may allocate."""
        size = max(int(source_bytes or 0), 0)
        return int(min(self.max_bytes, max(self.min_bytes, self.max_ratio * size)))

    def explain(self, source_bytes: int | None) -> str:
        """The budget of a source and how it was reached, for error messages."""
        size = max(int(source_bytes or 0), 0)
        return (f"{format_bytes(self.budget(size))} = min(max_bytes "
                f"{format_bytes(self.max_bytes)}, max(min_bytes {format_bytes(self.min_bytes)}, "
                f"max_ratio {self.max_ratio:g} x {format_bytes(size)} on disk))")


_lock = threading.Lock()
_set: Limits | None = None
_local = threading.local()


def _from_env() -> Limits:
    env = os.environ
    return Limits(
        max_bytes=parse_bytes(env[ENV_MAX_BYTES], ENV_MAX_BYTES) if env.get(ENV_MAX_BYTES)
        else _physical_memory(),
        max_ratio=float(env[ENV_MAX_RATIO]) if env.get(ENV_MAX_RATIO) else DEFAULT_MAX_RATIO,
        min_bytes=parse_bytes(env[ENV_MIN_BYTES], ENV_MIN_BYTES) if env.get(ENV_MIN_BYTES)
        else DEFAULT_MIN_BYTES,
    )


def get_limits() -> Limits:
    """The limits in force: a :func:`limits` block, else :func:`set_limits`, else the
    environment, else the defaults (max_bytes = physical memory, max_ratio = 1000,
    min_bytes = 64 MiB).

    Examples
    --------
    >>> get_limits().max_ratio > 0
    True
    """
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    return _set if _set is not None else _from_env()


def set_limits(*, max_bytes=None, max_ratio=None, min_bytes=None, reset: bool = False) -> Limits:
    """Set the limits for this process (fields not given keep their value); return the old ones.

    ``reset=True`` goes back to the environment and defaults.

    Examples
    --------
    >>> old = set_limits(max_ratio=5000)
    >>> get_limits().max_ratio
    5000.0
    >>> _ = set_limits(reset=True)
    """
    global _set
    with _lock:
        old = get_limits()
        if reset:
            _set = None
        else:
            _set = _updated(_set if _set is not None else _from_env(), max_bytes, max_ratio,
                            min_bytes)
        return old


def _updated(base: Limits, max_bytes, max_ratio, min_bytes) -> Limits:
    kw = {k: v for k, v in (("max_bytes", max_bytes), ("max_ratio", max_ratio),
                            ("min_bytes", min_bytes)) if v is not None}
    return replace(base, **kw)


@contextlib.contextmanager
def limits(*, max_bytes=None, max_ratio=None, min_bytes=None) -> Iterator[Limits]:
    """Temporarily change the limits (in this thread); files opened inside keep them.

    Examples
    --------
    >>> with limits(max_bytes="1G") as lim:
    ...     lim.max_bytes
    1073741824
    """
    new = _updated(get_limits(), max_bytes, max_ratio, min_bytes)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(new)
    try:
        yield new
    finally:
        stack.pop()


def check_size(nbytes: int | float, *, source_bytes: int | None, what: str, where: str,
               limits_: Limits | None = None, error: type[Exception] = SizeLimitError) -> None:
    """Refuse a read that would allocate more than the budget of its source.

    Parameters
    ----------
    nbytes : int
        Estimated allocation (result plus decoding temporaries).
    source_bytes : int or None
        Size of the file or store on disk.
    what : str
        What the source declares, e.g. ``"chunk 0 declares 100000000 entries"``.
    where : str
        The source (path), first in the message.
    limits_ : Limits, optional
        Default :func:`get_limits`.
    error : exception class
        :class:`SizeLimitError` or a format's subclass.

    Raises
    ------
    SizeLimitError

    Examples
    --------
    >>> check_size(2**40, source_bytes=238, what="chunk 0 declares 10**11 entries",
    ...            where="x.spz", limits_=Limits(2**34))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.SizeLimitError: x.spz: chunk 0 declares 10**11 entries: reading it ...
    """
    lim = limits_ or get_limits()
    if nbytes > lim.budget(source_bytes):
        raise error(f"{where}: {what}: reading it needs {format_bytes(nbytes)}, more than the "
                    f"limit {lim.explain(source_bytes)}; {_ADVICE}")


_ADVICE = ("the file is corrupt or a decompression bomb. If it is genuine, raise the limit "
           f"(dask_factor.io.limits.set_limits(...), or the environment variables "
           f"{ENV_MAX_RATIO} / {ENV_MIN_BYTES} / {ENV_MAX_BYTES})")


def check_budget(nbytes: int | float, budget: int | None, *, what: str, where: str,
                 error: type[Exception] = SizeLimitError) -> None:
    """Like :func:`check_size` with a budget computed earlier (readers inside Dask tasks get
    the budget of their source from the client, which measured the source once).

    Examples
    --------
    >>> check_budget(10, 100, what="a block", where="a.zarr")
    """
    if budget is not None and nbytes > budget:
        raise error(f"{where}: {what}: reading it needs {format_bytes(nbytes)}, more than the "
                    f"limit {format_bytes(budget)} for this source (max_ratio x its size on "
                    f"disk, within [min_bytes, max_bytes], when it was opened); {_ADVICE}")


def source_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a directory (a zarr store).

    Examples
    --------
    >>> source_size(__file__) > 0
    True
    """
    p = os.fspath(path)
    if not os.path.isdir(p):
        return os.stat(p).st_size
    total = 0
    stack = [p]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
    return total
