"""Matrix Market (``.mtx``, ``.mtx.gz``) sources.

A Matrix Market file is text with entries in any order, so it cannot be read by column range:

* :func:`open_array` (what ``open_matrix`` uses) reads the file once into memory with
  ``scipy.io.mmread`` and cuts it into column blocks.  Meant for small files.
* :func:`mtx_stream` (what ``write_matrix``/``dask-factor convert`` use) streams it in bounded
  memory with two passes: pass 1 counts the entries of each column and fixes the block bounds;
  pass 2 parses the entries in slices and spills each to a temporary file per column block
  (``rows, cols, values`` records), then every block is loaded, sorted into CSC and handed to
  the writer.  Memory is O(slice + block); temporary disk is about 24 bytes per entry.

Orientation is the file's: rows are features, columns samples.  Sidecar metadata next to a
``matrix.mtx[.gz]`` is read by :func:`read_metadata`: 10x Genomics ``features.tsv``/``genes.tsv``
and ``barcodes.tsv`` (optionally gzipped), or RcppML exports' ``obs.csv`` (rows), ``var.csv``
(columns), ``rownames.txt``/``colnames.txt``.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from .blocks import BlockStream, PathLike, from_memory
from .chunking import default_block_nnz, default_column_bounds
from .errors import MatrixFormatError, reading

#: entries parsed per slice when streaming
SLICE_ENTRIES = 1 << 21
_RECORD = np.dtype([("row", "<i8"), ("col", "<i8"), ("val", "<f8")])


@dataclass(frozen=True)
class MtxHeader:
    """The banner and size line of a Matrix Market file.

    Attributes
    ----------
    layout : {"coordinate", "array"}
    field : {"real", "integer", "pattern"}
    symmetry : {"general", "symmetric"}
    shape : (m, n)
    entries : int
        Stored entries (coordinate) or m·n (array).
    header_lines : int
        Lines before the first entry (banner, comments and the size line).

    Examples
    --------
    >>> MtxHeader("coordinate", "integer", "general", (3, 2), 4, 2).dtype
    dtype('int64')
    """

    layout: str
    field: str
    symmetry: str
    shape: tuple[int, int]
    entries: int
    header_lines: int

    @property
    def dtype(self) -> np.dtype:
        """Value dtype as ``scipy.io.mmread`` returns it."""
        return np.dtype(np.int64 if self.field == "integer" else np.float64)


def _open_text(path: PathLike):
    p = str(path)
    with open(p, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(p, "rt") if gz else open(p)


def read_header(path: PathLike) -> MtxHeader:
    """Parse the Matrix Market banner and size line (reads only the top of the file).

    Raises
    ------
    ValueError
        If the banner is missing or the matrix is complex, Hermitian or skew-symmetric.

    Examples
    --------
    >>> read_header("matrix.mtx.gz").shape  # doctest: +SKIP
    (13714, 2638)
    """
    with reading(path, "read its Matrix Market header"), _open_text(path) as f:
        banner = f.readline()
        parts = banner.strip().lower().split()
        if len(parts) != 5 or parts[0] != "%%matrixmarket" or parts[1] != "matrix":
            raise ValueError(f"path={str(path)!r}: not a Matrix Market matrix file "
                             f"(banner {banner.strip()[:60]!r})")
        layout, field, symmetry = parts[2:]
        if layout not in ("coordinate", "array"):
            raise ValueError(f"path={str(path)!r}: unknown Matrix Market layout {layout!r}")
        if field not in ("real", "integer", "pattern", "double"):
            raise ValueError(f"path={str(path)!r}: field {field!r} not supported "
                             "(expected real, integer or pattern)")
        if symmetry not in ("general", "symmetric") or (symmetry == "symmetric"
                                                           and layout == "array"):
            raise ValueError(f"path={str(path)!r}: symmetry {symmetry!r} with layout {layout!r} "
                             "is not supported (general, or symmetric coordinate)")
        n_lines = 1
        line = f.readline()
        while line.startswith("%") or not line.strip():
            if not line:
                raise ValueError(f"path={str(path)!r}: no size line")
            n_lines += 1
            line = f.readline()
        n_lines += 1
        want = 3 if layout == "coordinate" else 2
        try:
            size = [int(v) for v in line.split()]
        except ValueError:
            size = []
        if len(size) != want or min(size) < 0:
            raise MatrixFormatError(
                f"path={str(path)!r}: bad size line {line.strip()[:60]!r} (expected {want} "
                f"non-negative integers: rows, columns{', entries' if want == 3 else ''})")
    field = "real" if field == "double" else field
    if layout == "coordinate":
        m, n, entries = size
    else:
        m, n = size
        entries = m * n
    return MtxHeader(layout, field, symmetry, (m, n), entries, n_lines)


def check_declared(path: PathLike, header: MtxHeader, *, whole: bool) -> None:
    """Refuse a header that declares more than the file can hold or a read may allocate.

    Text needs at least 2 bytes per value of an array ("0" and a line end) and 4 per coordinate
    entry ("1 1" and a line end; 6 with a value), so an uncompressed file of ``size`` bytes holds
    at most ``size / 2`` values; gzipped files are bounded by the size limits alone
    (:mod:`dask_factor.io.limits`).  ``whole``: the matrix is read into memory at once
    (:func:`open_array`), else streamed (8 bytes per row and per column only).

    Examples
    --------
    >>> check_declared("x.mtx", MtxHeader("array", "real", "general", (9, 9), 81, 2),
    ...                whole=True)  # doctest: +SKIP
    """
    from .limits import check_size, source_size

    size = source_size(path)
    m, n = header.shape
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    per_entry = 2 if header.layout == "array" else (4 if header.field == "pattern" else 6)
    if not gz and header.entries * per_entry > size:
        raise MatrixFormatError(
            f"path={str(path)!r}: the header declares {header.entries} "
            f"{'values' if header.layout == 'array' else 'entries'} ({m} x {n}), but a "
            f"{size}-byte text file holds at most {size // per_entry}; truncated or corrupt")
    where = f"path={str(path)!r}"
    check_size(8 * (max(m, n) + 1), source_bytes=size, where=where,
               what=f"declares shape {m} x {n} (8 bytes per row and per column)")
    if whole:
        stored = header.entries * (2 if header.symmetry == "symmetric" else 1)
        need = 16 * m * n if header.layout == "array" else 48 * stored + 16 * (n + 1)
        unit = "values" if header.layout == "array" else "entries"
        check_size(need, source_bytes=size, where=where,
                   what=f"declares {header.entries} {unit} ({m} x {n}), read whole")


def _slices(path: PathLike, header: MtxHeader, size: int) -> Iterator[list[np.ndarray]]:
    """Entry lines as lists of column arrays (int64 indices, float64 values), ``size`` at most."""
    ncols = {"coordinate": 2 if header.field == "pattern" else 3, "array": 1}[header.layout]
    if header.entries == 0:
        return
    with reading(path, "parse its entries"):
        reader = pd.read_csv(
            path, sep=r"\s+", header=None, skiprows=header.header_lines, comment="%",
            chunksize=size, usecols=list(range(ncols)), engine="c", compression="infer",
            float_precision="round_trip",
            dtype={i: np.float64 if (i == 2 or header.layout == "array") else np.int64
                   for i in range(ncols)},
        )
    with reader:
        while True:
            with reading(path, "parse its entries"):
                df = next(reader, None)
            if df is None:
                return
            yield [df[c].to_numpy() for c in range(ncols)]
            del df


def _coords(arr: list[np.ndarray], header: MtxHeader):
    rows = arr[0] - 1
    cols = arr[1] - 1
    vals = np.ones(rows.size) if header.field == "pattern" else arr[2]
    if header.symmetry == "symmetric":
        off = rows != cols
        rows, cols = np.concatenate([rows, cols[off]]), np.concatenate([cols, rows[off]])
        vals = np.concatenate([vals, vals[off]])
    return rows, cols, vals


def _check(rows, cols, header: MtxHeader, path) -> None:
    m, n = header.shape
    if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= n):
        raise ValueError(f"path={str(path)!r}: an entry index is outside the declared shape "
                         f"{m}x{n}")


def mtx_stream(path: PathLike, *, block_nnz: int | None = None, dtype=None,
               slice_entries: int | None = None, tmpdir: PathLike | None = None) -> BlockStream:
    """Stream a Matrix Market file as column blocks in bounded memory (two passes).

    Parameters
    ----------
    path : path-like
        ``.mtx`` or ``.mtx.gz``.
    block_nnz : int, optional
        Target entries per block (default: :func:`~dask_factor.io.default_block_nnz`
        of the rows).
    dtype : numpy dtype, optional
        Value dtype (default as ``scipy.io.mmread``: int64 for integer files, else float64).
    slice_entries : int, optional
        Lines parsed at a time (default ``block_nnz`` within [65536, 2**21]).
    tmpdir : path-like, optional
        Where the spill files go (default: the system temporary directory).

    Returns
    -------
    BlockStream
        Pass 1 (counting) has run when this returns; pass 2 runs as the blocks are consumed.

    Examples
    --------
    >>> s = mtx_stream("matrix.mtx.gz", block_nnz=500_000)  # doctest: +SKIP
    >>> for col_start, block in s: ...  # doctest: +SKIP
    """
    header = read_header(path)
    check_declared(path, header, whole=False)
    m, n = header.shape
    dtype = np.dtype(dtype or header.dtype)
    target = int(block_nnz or default_block_nnz(m))
    if slice_entries is None:
        slice_entries = min(SLICE_ENTRIES, max(target, 1 << 16))
    if not isinstance(slice_entries, int | np.integer) or slice_entries < 1:
        raise ValueError(f"slice_entries must be a positive integer, got {slice_entries!r}")
    row_meta, col_meta = read_metadata(path)
    if header.layout == "array":
        cols = max(1, target // max(m, 1))
        bounds = np.unique(np.append(np.arange(0, n, cols), n)).astype(np.int64)

        def dense_blocks():
            yield from _dense_blocks(path, header, bounds, dtype)

        return BlockStream((m, n), dtype, False, bounds, dense_blocks, None, row_meta, col_meta)
    counts = np.zeros(n, dtype=np.int64)
    lines = 0
    for arr in _slices(path, header, slice_entries):
        lines += arr[0].size
        rows, cols, _ = _coords(arr, header)
        _check(rows, cols, header, path)
        counts += np.bincount(cols, minlength=n)
    if lines != header.entries:
        raise MatrixFormatError(f"path={str(path)!r}: the header declares {header.entries} "
                                f"entries but the file holds {lines}; truncated or corrupt")
    indptr = np.concatenate([[0], np.cumsum(counts)])
    bounds = default_column_bounds(indptr, m, block_nnz) if n else np.array([0], dtype=np.int64)

    def sparse_blocks():
        yield from _spilled_blocks(path, header, bounds, dtype, slice_entries, tmpdir)

    return BlockStream((m, n), dtype, True, bounds, sparse_blocks, int(indptr[-1]),
                       row_meta, col_meta)


def _dense_blocks(path, header: MtxHeader, bounds, dtype) -> Iterator[np.ndarray]:
    m = header.shape[0]
    buf = np.empty(0)
    b = 0
    widths = np.diff(bounds)
    for arr in _slices(path, header, max(int(widths.max(initial=1)) * max(m, 1), 1)):
        buf = np.concatenate([buf, arr[0]])
        while b < widths.size and buf.size >= widths[b] * m:
            take = int(widths[b] * m)
            yield np.ascontiguousarray(buf[:take].reshape(int(widths[b]), m).T, dtype=dtype)
            buf = buf[take:]
            b += 1
    while b < widths.size and widths[b] * m == 0:
        yield np.empty((m, int(widths[b])), dtype=dtype)
        b += 1
    if b != widths.size or buf.size:
        raise MatrixFormatError(f"path={str(path)!r}: {'fewer' if b != widths.size else 'more'}"
                                f" values than the declared {m}x{header.shape[1]}")


def _spilled_blocks(path, header: MtxHeader, bounds, dtype, slice_entries,
                    tmpdir) -> Iterator[sp.csc_matrix]:
    m = header.shape[0]
    n_blocks = bounds.size - 1
    spill = Path(tempfile.mkdtemp(prefix="mtx-spill-", dir=tmpdir))
    try:
        for arr in _slices(path, header, slice_entries):
            rows, cols, vals = _coords(arr, header)
            block = np.searchsorted(bounds, cols, side="right") - 1
            order = np.argsort(block, kind="stable")
            block = block[order]
            starts = np.searchsorted(block, np.arange(n_blocks + 1))
            for b in np.unique(block):
                sel = order[starts[b] : starts[b + 1]]
                rec = np.empty(sel.size, dtype=_RECORD)
                rec["row"], rec["col"], rec["val"] = rows[sel], cols[sel], vals[sel]
                with open(spill / f"{b}.bin", "ab") as f:
                    rec.tofile(f)
        for b in range(n_blocks):
            a, z = int(bounds[b]), int(bounds[b + 1])
            f = spill / f"{b}.bin"
            rec = np.fromfile(f, dtype=_RECORD) if f.exists() else np.empty(0, dtype=_RECORD)
            blk = sp.csc_matrix((rec["val"].astype(dtype), (rec["row"], rec["col"] - a)),
                                shape=(m, z - a))
            del rec
            f.unlink(missing_ok=True)
            blk.sort_indices()
            yield blk
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def open_array(path: PathLike, *, block_nnz: int | None = None, dtype=None):
    """Read a Matrix Market file into memory (once) and cut it into column blocks.

    Matrix Market cannot be read by column range, so this is for files that fit in memory;
    for big ones convert first (``dask-factor convert matrix.mtx.gz matrix.zarr``), which
    streams in bounded memory.

    Examples
    --------
    >>> A = open_array("matrix.mtx.gz")  # doctest: +SKIP
    """
    check_declared(path, read_header(path), whole=True)  # before scipy allocates anything
    try:
        A = scipy.io.mmread(str(path))
    except ValueError as exc:  # scipy's parser names neither the file nor the line's number
        raise MatrixFormatError(f"path={str(path)!r}: not a valid Matrix Market file: {exc}") \
            from exc
    if sp.issparse(A):
        A = sp.csc_matrix(A)
    return from_memory(A, block_nnz=block_nnz, dtype=dtype)


def _read_names(f: Path) -> pd.DataFrame:
    return pd.read_csv(f, header=None, sep="\t", dtype=str, compression="infer")


def _sidecar(d: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for suffix in ("", ".gz"):
            if (d / (name + suffix)).is_file():
                return d / (name + suffix)
    return None


def _sidecar_rows(d: Path) -> pd.DataFrame | None:
    f = _sidecar(d, ("features.tsv", "genes.tsv"))
    if f is not None:
        df = _read_names(f)
        cols = ["gene_ids", "gene_symbols", "feature_types"][: df.shape[1]]
        df.columns = cols + [f"col{i}" for i in range(len(cols), df.shape[1])]
        return df.set_index(df.columns[min(1, df.shape[1] - 1)], drop=False)
    return _csv_with_names(d, "obs.csv", "rownames.txt")


def _sidecar_cols(d: Path) -> pd.DataFrame | None:
    f = _sidecar(d, ("barcodes.tsv",))
    if f is not None:
        df = _read_names(f)
        return pd.DataFrame(index=pd.Index(df.iloc[:, 0], name="barcode"))
    return _csv_with_names(d, "var.csv", "colnames.txt")


def _csv_with_names(d: Path, csv: str, names: str) -> pd.DataFrame | None:
    df = pd.read_csv(d / csv) if (d / csv).is_file() else None
    if (d / names).is_file():
        idx = pd.Index((d / names).read_text().splitlines())
        if df is None:
            df = pd.DataFrame(index=idx)
        elif len(df) == len(idx) and idx.is_unique:
            df.index = idx
    return df


def read_metadata(path: PathLike):
    """Row and column metadata from sidecar files of a ``matrix.mtx[.gz]`` (None if absent).

    Examples
    --------
    >>> rows, cols = read_metadata("filtered_feature_bc_matrix/matrix.mtx.gz")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.name.lower().startswith("matrix.mtx"):
        return None, None
    m, n = read_header(p).shape
    rows, cols = _sidecar_rows(p.parent), _sidecar_cols(p.parent)
    out = []
    for what, df, want in (("row", rows, m), ("column", cols, n)):
        if df is not None and len(df) != want:
            warnings.warn(f"{p.parent}: {what} metadata has {len(df)} rows, expected {want}; "
                          "ignored", stacklevel=2)
            df = None
        out.append(df)
    return tuple(out)


def info(path: PathLike) -> dict:
    """Header facts of a Matrix Market file (reads only the banner and size line).

    Examples
    --------
    >>> info("matrix.mtx.gz")["nnz"]  # doctest: +SKIP
    2238732
    """
    h = read_header(path)
    rows, cols = read_metadata(path)
    return {
        "shape": h.shape, "nnz": h.entries if h.layout == "coordinate" else None,
        "dense": h.layout == "array", "value_type": h.field, "version": "MatrixMarket",
        "encoding": f"{h.layout} {h.field} {h.symmetry}", "n_blocks": None,
        "chunking": "none (text: read whole by open_matrix, streamed by convert)",
        "row_meta_columns": [] if rows is None else [str(c) for c in rows.columns],
        "col_meta_columns": [] if cols is None else [str(c) for c in cols.columns],
    }
