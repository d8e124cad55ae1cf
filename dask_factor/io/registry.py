"""The format registry: one entry point to open, describe and write every supported matrix.

Every reader turns its source into a ``dask.array.Array`` of shape (m features, n samples) whose
chunks are column blocks: ``scipy.sparse.csc_matrix`` with sorted indices (sparse sources) or
C-contiguous numpy arrays (dense sources), one row chunk, column chunks chosen by non-zeros.
A block's task holds only a small picklable *reader* (a frozen dataclass with a path and a column
range) and calls it on the worker, so nothing but headers and block boundaries is read on the
client.

Formats live in their own modules and are imported lazily (h5py and anndata only when needed).
Each format module provides ``open_array(path, *, block_nnz, dtype, **opts)``,
``read_metadata(path, **opts)``, ``info(path)`` and, if it can be written,
``write(stream, path, **opts)`` consuming a :class:`~dask_factor.io.blocks.BlockStream`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .blocks import (
    BlockStream,
    PathLike,
    atomic_path,
    from_dask,
    from_memory,
    stream_from_array,
)
from .errors import MatrixFormatError, reading
from .targets import check_target, describe

# --------------------------------------------------------------------------- format table


@dataclass(frozen=True)
class FormatSpec:
    """A registered on-disk format.

    Attributes
    ----------
    name : str
        Short name used by ``format=`` arguments (``"zarr"``, ``"spz"``, ...).
    module : str
        Module implementing ``open_array``, ``read_metadata``, ``info`` (and ``write``).
    suffixes : tuple of str
        Lower-case file name endings, used when the content cannot be sniffed.
    writable : bool
        Whether :func:`write_matrix` can produce it.

    Examples
    --------
    >>> formats()["spz"].suffixes
    ('.spz',)
    """

    name: str
    module: str
    suffixes: tuple[str, ...]
    writable: bool = True

    def load(self):
        """Import and return the implementing module."""
        return importlib.import_module(self.module)


_FORMATS: dict[str, FormatSpec] = {}


def register_format(spec: FormatSpec) -> None:
    """Add (or replace) a format in the registry.

    Examples
    --------
    >>> register_format(FormatSpec("zarr", "dask_factor.io.zarr_csc", (".zarr",)))
    """
    _FORMATS[spec.name] = spec


for _spec in (
    FormatSpec("zarr", "dask_factor.io.zarr_csc", (".zarr", ".zarr/")),
    FormatSpec("spz", "dask_factor.io.spz_source", (".spz",)),
    FormatSpec("h5ad", "dask_factor.io.anndata_io", (".h5ad", ".h5")),
    FormatSpec("anndata-zarr", "dask_factor.io.anndata_io", (), writable=False),
    FormatSpec("mtx", "dask_factor.io.mtx", (".mtx", ".mtx.gz"), writable=False),
    # 10x Cell Ranger outputs: recognised by content only (detect_format), never written
    FormatSpec("10x-mtx", "dask_factor.io.tenx", (), writable=False),
    FormatSpec("10x-h5", "dask_factor.io.tenx", (), writable=False),
):
    register_format(_spec)


def formats() -> dict[str, FormatSpec]:
    """The registered formats by name.

    Examples
    --------
    >>> sorted(formats())
    ['10x-h5', '10x-mtx', 'anndata-zarr', 'h5ad', 'mtx', 'spz', 'zarr']
    """
    return dict(_FORMATS)


def _zarr_root_attrs(path: Path) -> dict | None:
    """Attributes of the zarr node at ``path`` (v3 ``zarr.json`` or v2 ``.zattrs``), or None."""
    import json

    for meta in ("zarr.json", ".zattrs"):
        f = path / meta
        if f.is_file():
            doc = json.loads(f.read_text())
            attrs = doc.get("attributes", {}) if isinstance(doc, dict) and meta == "zarr.json" \
                else doc
            if not isinstance(attrs, dict):
                raise MatrixFormatError(f"path={str(path)!r}: {meta} holds "
                                        f"{type(attrs).__name__} attributes, not a JSON object")
            return attrs
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return {}
    return None


def check_openable(path: PathLike) -> None:
    """Refuse anything but a regular file or a directory, before anything opens it.

    Opening a FIFO (or a device) named ``x.spz`` would block, or read forever.

    Raises
    ------
    FileNotFoundError
        Nothing exists at ``path``.
    MatrixFormatError
        It is a FIFO, socket or device.

    Examples
    --------
    >>> check_openable("/dev/null")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: path='/dev/null' is a device, not a regular file ...
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"path={str(path)!r}: no such file or directory") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise MatrixFormatError(f"path={str(path)!r} is {describe(path, follow=True)}, not a "
                                f"regular file or directory; refusing to open it")


def detect_format(path: PathLike) -> str:
    """Name of the registered format of the file or directory at ``path``.

    The content decides when it can (the ``SPRZ`` magic, the HDF5 signature, a Matrix Market
    banner, the zarr root's ``encoding-type``); the name's suffix is the fallback.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``path``.
    ValueError
        If the format cannot be recognised.

    Examples
    --------
    >>> detect_format("counts.zarr")  # doctest: +SKIP
    'zarr'
    """
    p = Path(path)
    check_openable(p)
    if p.is_dir():
        from .tenx import is_10x_dir

        if is_10x_dir(p):
            return "10x-mtx"
        with reading(p, "read its zarr metadata"):
            attrs = _zarr_root_attrs(p)
        if attrs is None:
            raise ValueError(f"path={str(path)!r} is a directory but not a zarr store")
        if attrs.get("encoding-type") == "anndata":
            return "anndata-zarr"
        return "zarr"
    with open(p, "rb") as f:
        head = f.read(16)
    if head[:4] == b"SPRZ":
        return "spz"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        from .tenx import is_10x_h5

        with reading(p, "read its HDF5 structure"):
            return "10x-h5" if is_10x_h5(p) else "h5ad"
    if head.startswith(b"%%MatrixMarket") or (
        head[:2] == b"\x1f\x8b" and p.name.lower().endswith(".mtx.gz")
    ):
        return "mtx"
    name = p.name.lower()
    for spec in _FORMATS.values():
        if any(name.endswith(s) for s in spec.suffixes):
            return spec.name
    raise ValueError(
        f"path={str(path)!r}: unrecognised matrix format (expected .spz, a zarr store, .h5ad, "
        f".mtx or .mtx.gz)"
    )


def format_from_suffix(path: PathLike) -> str:
    """Format to *write* at ``path``, from its name (``.zarr``, ``.spz``, ``.h5ad``).

    Examples
    --------
    >>> format_from_suffix("out/counts.spz")
    'spz'
    """
    name = str(path).rstrip("/").lower()
    for spec in _FORMATS.values():
        if spec.writable and any(name.endswith(s.rstrip("/")) for s in spec.suffixes):
            return spec.name
    raise ValueError(
        f"path={str(path)!r}: cannot infer the output format from the name; pass "
        f"format= one of {sorted(s.name for s in _FORMATS.values() if s.writable)}"
    )


def _spec(name: str) -> FormatSpec:
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(f"format={name!r}: unknown; expected one of {sorted(_FORMATS)}") from None


# --------------------------------------------------------------------------- public readers


def _is_anndata(obj) -> bool:
    return type(obj).__name__ == "AnnData" and hasattr(obj, "obs") and hasattr(obj, "var")


def open_matrix(
    source,
    *,
    block_nnz: int | None = None,
    dtype=None,
    verify_crc: bool = True,
    format: str | None = None,
    **opts,
) -> da.Array:
    """Open any supported matrix as a features × samples dask array of column blocks.

    Parameters
    ----------
    source : path-like, ndarray, scipy.sparse matrix, dask.array.Array or anndata.AnnData
        A path to a ``.spz`` file (v2 sparse or v3 dense), our zarr CSC store, an AnnData
        ``.h5ad`` file or zarr store (read backed; cells × genes on disk is read as its
        genes × cells transpose without copying), or a Matrix Market ``.mtx``/``.mtx.gz`` (read
        into memory once: it cannot be read by column range; use ``convert`` for big files).
        In-memory objects are cut into column blocks by non-zeros.
    block_nnz : int, optional
        Target stored entries per block.  Default
        (:func:`~dask_factor.io.default_block_nnz`): about 400 entries per row of A,
        between 2 and 8 million; a dask array keeps its chunks, a zarr store the blocks it was
        written with; ``.spz`` blocks are runs of whole chunks (``block_nnz=1``: one chunk
        each).  What the client reads to cut blocks:
        attributes and headers only, except the cell pointer of a CSR AnnData X (n + 1
        integers), a zarr store's column pointer when smaller blocks than the stored ones are
        asked for, and one counting pass over a dask array's blocks when ``block_nnz`` is given
        for it.
    dtype : numpy dtype, optional
        Value dtype of the blocks (default: the source's).
    verify_crc : bool
        ``.spz`` only: check the whole-file CRC once on the client before building the graph
        (streams the bytes without decoding; tasks never re-check).
    format : str, optional
        Force a registered format instead of detecting it.
    **opts
        Format options: ``layer=`` and ``raw=`` for AnnData sources.

    Returns
    -------
    dask.array.Array of shape (m features, n samples)
        One row chunk; column chunks are ``scipy.sparse.csc_matrix`` with sorted indices, or
        C-contiguous ndarrays for dense sources.  Each task reads one block.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> A = open_matrix(sp.random(50, 200, density=0.1, format="csc"), block_nnz=300)
    >>> A.shape, A.npartitions > 1
    ((50, 200), True)
    """
    if block_nnz is not None and (not isinstance(block_nnz, int | np.integer) or block_nnz < 1):
        raise ValueError(f"block_nnz must be a positive integer, got {block_nnz!r}")
    if dtype is not None:
        dtype = np.dtype(dtype)
    if isinstance(source, da.Array):
        _no_opts(opts, "a dask array")
        return from_dask(source, block_nnz=block_nnz, dtype=dtype)
    if isinstance(source, np.ndarray) or sp.issparse(source):
        _no_opts(opts, "an in-memory matrix")
        return from_memory(source, block_nnz=block_nnz, dtype=dtype)
    if _is_anndata(source):
        from .anndata_io import open_anndata

        return open_anndata(source, block_nnz=block_nnz, dtype=dtype, **opts)
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"source: expected a path, ndarray, scipy.sparse matrix, dask array or AnnData, "
            f"got {type(source).__name__}"
        )
    check_openable(source)
    fmt = format or detect_format(source)
    module = _spec(fmt).load()
    if fmt == "spz":
        opts["verify_crc"] = verify_crc
    _check_options(module.open_array, opts, f"reading format {fmt!r}",
                   {"block_nnz", "dtype"})
    with reading(source, f"open it as {fmt!r}"):
        return module.open_array(source, block_nnz=block_nnz, dtype=dtype, **opts)


def _check_options(func, opts: dict, what: str, internal: set[str] = frozenset()) -> None:
    """Raise a TypeError naming unknown keyword options of ``func`` and listing valid ones."""
    import inspect

    params = inspect.signature(func).parameters
    valid = sorted(n for n, p in params.items()
                   if p.kind == p.KEYWORD_ONLY and n not in internal)
    bad = sorted(set(opts) - set(valid))
    if bad:
        raise TypeError(f"unexpected option(s) {bad} for {what}; valid options: {valid}")


def _no_opts(opts: dict, what: str) -> None:
    if opts:
        raise TypeError(f"unexpected option(s) {sorted(opts)} for {what}")


def read_metadata(source, *, format: str | None = None, **opts):
    """Row (feature) and column (sample) metadata of a matrix, without reading the matrix.

    For ``.spz`` files obs is per row and var per column (RcppML's convention), so
    ``(obs, var)`` is returned; for AnnData (cells × genes) ``(var, obs)``.

    Returns
    -------
    row_meta : pandas.DataFrame or None
        One row per feature (m rows).
    col_meta : pandas.DataFrame or None
        One row per sample (n rows).

    Examples
    --------
    >>> rows, cols = read_metadata("pbmc3k.spz")  # doctest: +SKIP
    >>> cols["cell_type"].value_counts().head(1)  # doctest: +SKIP
    """
    if _is_anndata(source):
        return (source.raw.var if opts.get("raw") else source.var).copy(), source.obs.copy()
    if isinstance(source, np.ndarray | da.Array) or sp.issparse(source):
        return None, None
    check_openable(source)
    fmt = format or detect_format(source)
    module = _spec(fmt).load()
    with reading(source, "read its metadata"):
        return module.read_metadata(source, **opts)


def matrix_info(path: PathLike, *, format: str | None = None) -> dict:
    """Describe a matrix file from its header: shape, nnz, format, version, chunking, dtype.

    Returns
    -------
    dict
        Keys always present: ``path``, ``format``, ``shape`` (m, n), ``nnz`` (None if unknown
        without a pass, e.g. dense), ``dense``, ``value_type``, ``version``, ``chunking``
        (a short description), ``n_blocks``, ``row_meta_columns``, ``col_meta_columns``; formats
        may add more.

    Examples
    --------
    >>> matrix_info("counts.zarr")["shape"]  # doctest: +SKIP
    (20000, 100000)
    """
    check_openable(path)
    fmt = format or detect_format(path)
    info = {"path": str(path), "format": fmt}
    module = _spec(fmt).load()
    with reading(path, "read its header"):
        info.update(module.info(path))
    return info


# --------------------------------------------------------------------------- streaming writes


def _source_nnz(source) -> int | None:
    if sp.issparse(source):
        return int(source.nnz)
    with contextlib.suppress(Exception):
        if isinstance(source, str | os.PathLike):
            return matrix_info(source).get("nnz")
    return None


def open_stream(source, *, block_nnz: int | None = None, dtype=None, **opts) -> BlockStream:
    """Any source as a :class:`BlockStream` (Matrix Market is streamed in bounded memory).

    Examples
    --------
    >>> s = open_stream(np.eye(3))
    >>> s.shape, s.n_blocks
    ((3, 3), 1)
    """
    if isinstance(source, str | os.PathLike) and detect_format(source) == "mtx":
        from .mtx import mtx_stream

        return mtx_stream(source, block_nnz=block_nnz, dtype=dtype, **opts)
    row_meta, col_meta = read_metadata(source, **{k: v for k, v in opts.items()
                                                  if k in ("raw",)})
    x = open_matrix(source, block_nnz=block_nnz, dtype=dtype, **opts)
    return stream_from_array(x, row_meta=row_meta, col_meta=col_meta, nnz=_source_nnz(source))


def write_matrix(
    source,
    path: PathLike,
    format: str | None = None,
    *,
    block_nnz: int | None = None,
    dtype=None,
    overwrite: bool = False,
    progress: bool = False,
    row_meta: pd.DataFrame | None = None,
    col_meta: pd.DataFrame | None = None,
    read_opts: dict | None = None,
    **opts,
) -> Path:
    """Write a matrix to ``path`` block by block, atomically.

    Parameters
    ----------
    source : anything :func:`open_matrix` accepts, or a :class:`BlockStream`
        Features × samples.  Column blocks are computed a few at a time, side by side
        (``io.blocks.STREAM_PREFETCH``: the cores, at most 8) and written in order, so memory
        stays O(block × cores) whatever the matrix size.
    path : path-like
        Destination; written to a temporary sibling and renamed at the end.
    format : {"zarr", "spz", "h5ad"}, optional
        Default: from the suffix of ``path``.
    block_nnz : int, optional
        Target entries per block (the zarr block bounds follow it).
    dtype : numpy dtype, optional
        Value dtype to store.
    overwrite : bool
        Replace an existing ``path`` (only after the new one is complete), and only if it is a
        file or store of ``format`` that we recognise: a zarr store with our attributes, a file
        with the ``.spz`` magic, an HDF5 file for ``h5ad``.  Anything else (a directory of other
        files, another format) is refused.
    progress : bool
        Show a tqdm progress bar over blocks.
    row_meta, col_meta : DataFrame, optional
        Feature and sample metadata (default: those of the source, see :func:`read_metadata`).
    read_opts : dict, optional
        Options for opening ``source`` (e.g. ``{"layer": "counts"}``).
    **opts
        Format options: zarr ``chunk_nnz``, ``layout`` (``"csc"`` or ``"scan"``, see
        :func:`dask_factor.io.zarr_csc.write`); spz ``value_type``, ``chunk_cols``,
        ``include_transpose``; h5ad ``compression``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError, TypeError, FileExistsError
        Bad arguments, an existing ``path`` without ``overwrite`` or one that ``overwrite`` may
        not replace: detected before anything is created on disk.
    MatrixFormatError
        A block of the source is malformed (nothing is left on disk).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> write_matrix(sp.random(100, 500, density=0.05), "A.zarr")  # doctest: +SKIP
    PosixPath('A.zarr')
    """
    path = Path(path)
    fmt = format or format_from_suffix(path)
    spec = _spec(fmt)
    if not spec.writable:
        raise ValueError(f"format={fmt!r} cannot be written; expected one of "
                         f"{sorted(s.name for s in _FORMATS.values() if s.writable)}")
    module = spec.load()
    _check_options(module.check_write_options, opts, f"writing format {fmt!r}")
    module.check_write_options(**opts)
    check_target(path, fmt=fmt, overwrite=overwrite)
    if isinstance(source, BlockStream):
        stream = source
    else:
        stream = open_stream(source, block_nnz=block_nnz, dtype=dtype, **(read_opts or {}))
    if row_meta is not None:
        stream.row_meta = row_meta
    if col_meta is not None:
        stream.col_meta = col_meta
    _check_meta(stream)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=stream.n_blocks, unit="block", desc=f"writing {path.name}")
        stream.progress = bar.update
    try:
        with atomic_path(path, overwrite=overwrite, format=fmt) as tmp:
            module.write(stream, tmp, block_nnz=block_nnz, **opts)
    finally:
        if bar is not None:
            bar.close()
    return path


def _check_meta(stream: BlockStream) -> None:
    m, n = stream.shape
    for what, df, want in (("row_meta", stream.row_meta, m), ("col_meta", stream.col_meta, n)):
        if df is not None and len(df) != want:
            raise ValueError(f"{what} has {len(df)} rows, expected {want} (matrix shape {m}x{n})")
