"""Stamps of opened sources: every block read checks that the file is still the one opened.

A fit with ``cache="none"`` reads its input again at every iteration.  If the file is replaced
or rewritten in the meantime, the later iterations would fit other data (a ``.spz`` replaced by
an empty one made a fit report MSE 0.0).  So a reader records a :class:`Stamp` of its source when
it is opened on the client — size, modification time and a CRC32 of the bytes that identify the
content cheaply — and every task checks it before reading a block:

* a file (``.spz``, ``.h5ad``): size, mtime and the CRC32 of its first and last 4 KiB (for a
  ``.spz``: the header and the footer, which holds the CRC of the whole file);
* a store (zarr directory): the same for each of its metadata documents (``zarr.json``,
  ``.zarray``, ``.zattrs``, ``.zgroup``, ``.zmetadata``) at the top and one level down, so that
  rewriting or replacing the store is seen.  A chunk rewritten in place is not (only its own
  file changes); the zstd checksums of stores we write still refuse a damaged one.

A mismatch raises :class:`~dask_factor.io.errors.SourceChangedError` naming the file and what
changed.  Checking costs one ``stat`` and an 8 KiB read per block.

Examples
--------
>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
>>> _ = open(p, "wb").write(b"one")
>>> s = stamp(p)
>>> check_stamp(s)
>>> _ = open(p, "wb").write(b"other")
>>> check_stamp(s)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dask_factor.io.errors.SourceChangedError: path='...x.bin' changed since it was opened (size 3 -> ...
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

from .errors import SourceChangedError

__all__ = ["Stamp", "stamp", "check_stamp"]

_EDGE = 4096
_META = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


@dataclass(frozen=True)
class Stamp:
    """What identifies a source's content cheaply (see the module docstring)."""

    path: str
    size: int
    mtime_ns: int
    crc: int


def _file_parts(path: str) -> tuple[int, int, int]:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        head = f.read(_EDGE)
        tail = b""
        if st.st_size > _EDGE:
            f.seek(max(_EDGE, st.st_size - _EDGE))
            tail = f.read(_EDGE)
    return st.st_size, st.st_mtime_ns, zlib.crc32(tail, zlib.crc32(head))


def _store_parts(path: str) -> tuple[int, int, int]:
    size = mtime = 0
    crc = 0
    dirs = [path] + sorted(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    for d in dirs:
        for name in _META:
            f = os.path.join(d, name)
            if os.path.isfile(f):
                s, t, c = _file_parts(f)
                size += s
                mtime = max(mtime, t)
                crc = zlib.crc32(f"{os.path.relpath(f, path)}:{c}".encode(), crc)
    return size, mtime, crc


def stamp(path: str | os.PathLike) -> Stamp:
    """The stamp of a file or store now.

    Examples
    --------
    >>> stamp(__file__).size > 0
    True
    """
    p = os.fspath(path)
    parts = _store_parts(p) if os.path.isdir(p) else _file_parts(p)
    return Stamp(p, *parts)


def check_stamp(expected: Stamp | None) -> None:
    """Raise :class:`SourceChangedError` if the source differs from ``expected`` (no-op for None).

    Examples
    --------
    >>> check_stamp(None)
    """
    if expected is None:
        return
    try:
        now = stamp(expected.path)
    except FileNotFoundError:
        raise SourceChangedError(f"path={expected.path!r} was removed since it was opened; "
                                 f"reopen it (or restart the fit)") from None
    if now == expected:
        return
    what = []
    if now.size != expected.size:
        what.append(f"size {expected.size} -> {now.size} bytes")
    if now.mtime_ns != expected.mtime_ns:
        what.append("modification time")
    if now.crc != expected.crc:
        what.append("content")
    raise SourceChangedError(
        f"path={expected.path!r} changed since it was opened ({', '.join(what)}): the blocks "
        f"read so far and the ones to come would belong to different data. Reopen it (or "
        f"restart the fit); copy a file that is being rewritten before fitting it")
