"""Where a writer may write: it never replaces what it was not asked to, and cleans up after itself.

Rules every writer follows (:func:`check_target` and :func:`replacing`, used by
:func:`~dask_factor.io.blocks.atomic_path`, ``write_matrix``, ``write_spz`` and the CLI):

* an existing path is refused unless ``overwrite=True``;
* ``overwrite=True`` replaces only a file or store *of the format being written* that we can
  recognise as such: a zarr store carrying our ``dask_factor_format`` attribute, a file starting
  with the ``.spz`` magic ``SPRZ``, a file with the HDF5 signature for ``.h5ad``, an ``.npz`` of a
  fit.  Anything else — a directory of the user's files, a text file, another format — is
  refused with a message saying what is there;
* the new content is written to a temporary sibling (``.<name>.tmp-<host>-<pid>-<random>``) and
  renamed over the target only when complete; on failure the temporary is removed, and
  temporaries left by a killed writer (same host, process gone) are removed by the next write to
  the same target.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "my_project").mkdir()
>>> (d / "my_project" / "notes.txt").write_text("precious")
8
>>> check_target(d / "my_project", fmt="spz", overwrite=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
FileExistsError: path='.../my_project': refusing to replace it: it is a directory with 1 entry ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import uuid
import zipfile
from pathlib import Path

PathLike = str | os.PathLike

#: saved results (zarr stores): the ``fmt`` name → their root's ``format`` attribute, and how
#: :func:`describe` calls them
RESULT_FORMATS = {
    "factor_net_result": ("dask_factor.factor_net_result", "a saved factor_net result"),
    "nmf_result": ("dask_factor.nmf_result", "a saved NMF result"),
}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SPZ_MAGIC = b"SPRZ"

#: what ``overwrite=True`` may replace, by the format being written
REPLACEABLE = {
    "zarr": "zarr matrix store written by dask_factor (attribute dask_factor_format)",
    "spz": ".spz file (starting with the SPRZ magic)",
    "h5ad": ".h5ad file (an HDF5 file)",
    "npz": ".npz of a dask-factor fit (a zip holding W.npy)",
    "factor_net_result": "saved factor_net result (zarr store with format "
                         "'dask_factor.factor_net_result')",
    "nmf_result": "saved NMF result (zarr store with format 'dask_factor.nmf_result')",
    None: "file, or a zarr store (a directory is never replaced unless it is a zarr store)",
}


# --------------------------------------------------------------------------- recognising


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _zarr_attrs(path: Path) -> dict | None:
    for meta in ("zarr.json", ".zattrs"):
        f = path / meta
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(doc, dict):
                return None
            return doc.get("attributes", {}) if meta == "zarr.json" else doc
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return {}
    return None


def describe(path: PathLike, *, follow: bool = False) -> str:
    """What is at ``path``, in a few words, for error messages (``follow``: what a symbolic
    link points to, rather than the link).

    Examples
    --------
    >>> describe("/")
    'a directory ...'
    """
    p = Path(path)
    try:
        st = os.stat(p) if follow else os.lstat(p)
    except FileNotFoundError:
        return "nothing"
    if stat.S_ISLNK(st.st_mode):
        return f"a symbolic link to {os.readlink(p)!r}"
    if stat.S_ISDIR(st.st_mode):
        try:
            k = len(os.listdir(p))
        except OSError:
            k = None
        what = "a directory" + ("" if k is None else f" with {k} entr{'y' if k == 1 else 'ies'}")
        attrs = _zarr_attrs(p)
        if attrs is None:
            return what + " (not a zarr store)"
        for fmt_attr, called in RESULT_FORMATS.values():
            if attrs.get("format") == fmt_attr:
                return what + f" ({called})"
        return what + (" (a dask_factor zarr store)" if "dask_factor_format" in attrs
                       else " (a zarr store not written by dask_factor)")
    if stat.S_ISREG(st.st_mode):
        try:
            head = _head(p, 8)
        except OSError:
            head = b""
        kind = (" (a .spz file)" if head[:4] == SPZ_MAGIC else
                " (an HDF5 file)" if head == HDF5_SIGNATURE else
                " (a zip file)" if head[:4] == b"PK\x03\x04" else "")
        return f"a regular file of {st.st_size} bytes{kind}"
    return {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
            stat.S_IFBLK: "a device"}.get(stat.S_IFMT(st.st_mode), "not a regular file")


def is_replaceable(path: PathLike, fmt: str | None) -> bool:
    """Whether ``overwrite=True`` may replace what is at ``path`` with a new ``fmt``.

    Examples
    --------
    >>> is_replaceable("/", "zarr")
    False
    """
    p = Path(path)
    try:
        st = os.stat(p)  # a symlink: judged by what it points to (the link is what is replaced)
    except OSError:
        return os.path.islink(p)  # a dangling link holds nothing
    if stat.S_ISDIR(st.st_mode):
        attrs = _zarr_attrs(p)
        if fmt == "zarr":
            return attrs is not None and "dask_factor_format" in attrs
        if fmt in RESULT_FORMATS:
            return attrs is not None and attrs.get("format") == RESULT_FORMATS[fmt][0]
        return fmt is None and attrs is not None
    if not stat.S_ISREG(st.st_mode):
        return False
    if fmt is None:
        return True
    try:
        head = _head(p, 8)
    except OSError:
        return False
    if fmt == "spz":
        return head[:4] == SPZ_MAGIC
    if fmt == "h5ad":
        return head == HDF5_SIGNATURE
    if fmt == "npz":
        try:
            with zipfile.ZipFile(p) as z:
                return "W.npy" in z.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
    return False


def check_target(path: PathLike, *, fmt: str | None, overwrite: bool,
                 what: str = "path") -> Path:
    """Refuse to write ``path`` unless it is new, or ``overwrite`` and replaceable by ``fmt``.

    Parameters
    ----------
    path : path-like
    fmt : str or None
        Format being written (a key of :data:`REPLACEABLE`); None: any regular file or a zarr
        store may be replaced, never another directory.
    overwrite : bool
    what : str
        The argument's name in messages.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        The parent directory does not exist.
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it holds something ``fmt`` may not
        replace (the message says what is there).

    Examples
    --------
    >>> check_target("/", fmt="zarr", overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: path='/' exists (a directory ...); pass overwrite=True to replace it
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{what}={str(p)!r}: parent directory does not exist")
    if not (p.exists() or p.is_symlink()):
        return p
    if not overwrite:
        raise FileExistsError(f"{what}={str(p)!r} exists ({describe(p)}); pass overwrite=True "
                              f"to replace it")
    if not is_replaceable(p, fmt):
        raise FileExistsError(
            f"{what}={str(p)!r}: refusing to replace it: it is {describe(p)}, and "
            f"overwrite=True only replaces a {REPLACEABLE.get(fmt, fmt)}; remove it yourself "
            f"or choose another path")
    return p


# --------------------------------------------------------------------------- temporaries


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_sibling(path: PathLike, kind: str = "tmp") -> Path:
    """A fresh hidden name next to ``path``: ``.<name>.<kind>-<host>-<pid>-<random>``.

    Examples
    --------
    >>> temp_sibling("/data/a.spz").name.startswith(".a.spz.tmp-")
    True
    """
    p = Path(path)
    return p.with_name(f".{p.name}.{kind}-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove(path: PathLike) -> None:
    """Remove a file, link or directory tree; nothing if it is gone."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale(path: PathLike) -> list[Path]:
    """Remove the temporaries of earlier writes to ``path`` whose process is gone (this host).

    A ``.old-`` sibling (the previous content, moved aside while a directory was swapped) is
    moved back if ``path`` itself is missing, else removed.  Returns what was cleaned.

    Examples
    --------
    >>> clean_stale("/nonexistent/a.spz")
    []
    """
    p = Path(path)
    # also a temporary's own temporary (".." + name): write_spz's file inside atomic_path's
    pat = re.compile(rf"^\.\.?{re.escape(p.name)}\.(tmp|old|spill)-([0-9a-f]{{8}})-(\d+)-"
                     rf"[0-9a-f]+")
    try:
        names = os.listdir(p.parent)
    except OSError:
        return []
    host = _host_tag()
    done = []
    for name in sorted(names):
        mt = pat.match(name)
        if not mt or mt.group(2) != host or _pid_alive(int(mt.group(3))):
            continue
        q = p.parent / name
        if mt.group(1) == "old" and not (p.exists() or p.is_symlink()):
            os.replace(q, p)  # killed between the two renames of a swap: put it back
        else:
            remove(q)
        done.append(q)
    return done


@contextlib.contextmanager
def replacing(path: PathLike, *, fmt: str | None, overwrite: bool, what: str = "path"):
    """Yield a temporary sibling of ``path``; move it over ``path`` only if the block succeeds.

    :func:`check_target` first (nothing is created when it refuses), stale temporaries of
    ``path`` are removed, and on any error the temporary is removed and ``path`` left as it was.
    A file replaces a file atomically; a directory is swapped with two renames.

    Examples
    --------
    >>> with replacing("out.npz", fmt="npz", overwrite=False) as tmp:  # doctest: +SKIP
    ...     np.savez(tmp, W=W)
    """
    p = check_target(path, fmt=fmt, overwrite=overwrite, what=what)
    clean_stale(p)
    tmp = temp_sibling(p)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if not (tmp.exists() or tmp.is_symlink()):
        raise RuntimeError(f"the writer produced nothing at the temporary {tmp}")
    try:
        if (p.exists() or p.is_symlink()) and (tmp.is_dir() or (p.is_dir() and
                                                                not p.is_symlink())):
            old = temp_sibling(p, "old")
            os.replace(p, old)
            try:
                os.replace(tmp, p)
            except BaseException:
                os.replace(old, p)
                raise
            remove(old)
        else:
            os.replace(tmp, p)  # atomic, also over an existing file
    except BaseException:
        remove(tmp)
        raise
