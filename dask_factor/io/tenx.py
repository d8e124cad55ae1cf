"""10x Genomics Cell Ranger outputs: ``filtered_feature_bc_matrix/`` directories and ``.h5`` files.

Both are features × barcodes — already our orientation (genes × cells), so nothing is transposed.

* A directory holding ``matrix.mtx[.gz]`` and ``barcodes.tsv[.gz]`` with ``features.tsv[.gz]``
  (Cell Ranger ≥ 3) or ``genes.tsv`` (Cell Ranger 2) — format ``"10x-mtx"``. Matrix Market
  cannot be read by column range, so the matrix is read once (see :mod:`dask_factor.io.mtx`);
  convert big ones (``dask-factor convert DIR out.zarr``).
* A Cell Ranger HDF5 file — format ``"10x-h5"``: ``/matrix/{data,indices,indptr,shape,
  barcodes}`` and ``/matrix/features/{id,name,feature_type}`` (Cell Ranger ≥ 3), or one group per
  genome with ``{data,indices,indptr,shape,barcodes,genes,gene_names}`` (Cell Ranger 2). The
  CSC arrays are read lazily: each task reads its barcodes' slice; the client reads only the
  pointer (n + 1 integers) to cut blocks by non-zeros.

Row metadata is indexed by the gene symbols (scanpy's default ``var_names``; not made unique) with
columns ``gene_ids``, ``gene_symbols`` and ``feature_types``; column metadata by the barcodes.

Examples
--------
>>> from dask_factor.io import open_matrix, read_metadata
>>> A = open_matrix("filtered_feature_bc_matrix/")             # doctest: +SKIP
>>> genes, cells = read_metadata("sample_filtered_feature_bc_matrix.h5")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._optional import require
from .blocks import PathLike, array_from_reader, file_token
from .chunking import default_column_bounds
from .errors import MatrixFormatError, reading
from .limits import check_budget, get_limits, source_size
from .stamp import Stamp, check_stamp, stamp
from .validate import cast_values, check_full_pointer, check_pointer_slice, csc_from_arrays

__all__ = ["is_10x_dir", "is_10x_h5", "open_array", "read_metadata", "info", "TenxH5Reader"]


def _find(d: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for suffix in (".gz", ""):
            if (d / (name + suffix)).is_file():
                return d / (name + suffix)
    return None


def _matrix_file(d: Path) -> Path | None:
    return _find(d, ("matrix.mtx",))


def is_10x_dir(path: PathLike) -> bool:
    """Whether ``path`` is a Cell Ranger matrix directory (matrix.mtx + barcodes.tsv).

    Examples
    --------
    >>> is_10x_dir("/")
    False
    """
    p = Path(path)
    return p.is_dir() and _matrix_file(p) is not None and _find(p, ("barcodes.tsv",)) is not None


def _h5_group(f, genome: str | None = None) -> str | None:
    """The group holding the CSC arrays: ``matrix`` (v3) or a genome's (v2)."""
    def is_matrix(g) -> bool:
        return all(k in g for k in ("data", "indices", "indptr", "shape", "barcodes"))

    if genome is not None:
        return genome if genome in f and is_matrix(f[genome]) else None
    if "matrix" in f and is_matrix(f["matrix"]):
        return "matrix"
    groups = [k for k in f if hasattr(f[k], "keys") and is_matrix(f[k])]
    return groups[0] if len(groups) >= 1 and "X" not in f else None


def is_10x_h5(path: PathLike) -> bool:
    """Whether ``path`` is a Cell Ranger ``.h5`` (and not an ``.h5ad``).

    Examples
    --------
    >>> is_10x_h5("/")
    False

    Raises
    ------
    MissingExtra
        ``path`` is a file and h5py (the ``[anndata]`` extra) is not installed.
    """
    p = Path(path)
    if not p.is_file():
        return False
    h5py = require("h5py", f"reading the HDF5 file {str(path)!r}")
    try:
        with h5py.File(p, "r") as f:
            return "X" not in f and _h5_group(f) is not None
    except OSError:
        return False


def _str(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _open_h5(path: PathLike):
    return require("h5py", "reading a 10x .h5 file").File(path, "r")


def _group_or_raise(f, path, genome):
    group = _h5_group(f, genome)
    if group is None:
        raise MatrixFormatError(f"path={str(path)!r}: not a Cell Ranger .h5 matrix"
                                + (f" (no genome {genome!r})" if genome else ""))
    return group


@dataclass(frozen=True)
class TenxH5Reader:
    """Reads barcodes ``start:stop`` of a Cell Ranger ``.h5`` as features × barcodes (a task).

    Examples
    --------
    >>> r = TenxH5Reader("pbmc.h5", "matrix", n_features=33538)  # doctest: +SKIP
    >>> r(0, 100).shape  # doctest: +SKIP
    (33538, 100)
    """

    path: str
    group: str
    n_features: int
    dtype: str | None = None
    #: what one block may allocate, and the file as opened (issue 17: limits, changed sources)
    max_bytes: int | None = None
    stamp: Stamp | None = None
    n_barcodes: int | None = None

    def __call__(self, start: int, stop: int):
        check_stamp(self.stamp)
        with reading(self.path, f"read barcodes {start}:{stop}"):
            return self._read(start, stop)

    def _read(self, start: int, stop: int):
        where = f"{self.path!r} ({self.group}), barcodes {start}:{stop}"
        with _open_h5(self.path) as f:
            g = f[self.group]
            ip = np.asarray(g["indptr"][start: stop + 1], dtype=np.int64)
            p0, p1 = check_pointer_slice(ip, start, stop, int(g["indices"].shape[0]),
                                         where=where, n_major=self.n_barcodes)
            check_budget(32 * (p1 - p0) + 16 * (stop - start + 1), self.max_bytes, where=where,
                         what=f"indptr gives the block {p1 - p0} entries")
            data = np.asarray(g["data"][p0:p1])
            indices = np.asarray(g["indices"][p0:p1])
        if self.dtype is not None:
            data = cast_values(data, self.dtype, where=where)
        return csc_from_arrays(data, indices, ip - p0, (self.n_features, stop - start),
                               where=where, major="barcode", minor="feature", offset=start)


def open_array(path: PathLike, *, block_nnz: int | None = None, dtype=None,
               genome: str | None = None):
    """Open a 10x directory or Cell Ranger ``.h5`` as a features × barcodes dask array.

    Parameters
    ----------
    path : path-like
        A ``filtered_feature_bc_matrix/`` (or ``raw_…``) directory, or an ``.h5`` file.
    block_nnz : int, optional
        Target stored entries per block.
    dtype : numpy dtype, optional
    genome : str, optional
        Cell Ranger 2 ``.h5`` files hold one matrix per genome; default the first.

    Returns
    -------
    dask.array.Array of shape (n_features, n_barcodes)

    Examples
    --------
    >>> A = open_array("filtered_feature_bc_matrix")  # doctest: +SKIP
    """
    p = Path(path)
    if p.is_dir():
        from .mtx import open_array as open_mtx

        if genome is not None:
            raise TypeError("genome: only meaningful for a Cell Ranger .h5 file")
        mtx = _matrix_file(p)
        if mtx is None:
            raise MatrixFormatError(f"path={str(path)!r}: no matrix.mtx[.gz] in the directory")
        return open_mtx(mtx, block_nnz=block_nnz, dtype=dtype)
    budget = get_limits().budget(source_size(p))
    st = stamp(p.resolve())
    with _open_h5(p) as f:
        group = _group_or_raise(f, path, genome)
        g = f[group]
        shape = np.asarray(g["shape"][:]).reshape(-1)
        if shape.size != 2 or shape.min() < 0:
            raise MatrixFormatError(f"path={str(path)!r}: {group}/shape is {shape.tolist()}, "
                                    f"expected [features, barcodes]")
        m, n = (int(s) for s in shape)
        check_budget(8 * (max(m, n) + 1), budget, where=f"path={str(path)!r}",
                     what=f"declares shape {m} x {n} (8 bytes per row and per column)")
        if g["indptr"].shape[0] != n + 1:
            raise MatrixFormatError(f"path={str(path)!r}: indptr has {g['indptr'].shape[0]} "
                                    f"entries, expected {n + 1} (shape {(m, n)})")
        indptr = np.asarray(g["indptr"][:], dtype=np.int64)
        nnz = int(g["indices"].shape[0])
        if g["data"].shape[0] != nnz:
            raise MatrixFormatError(f"path={str(path)!r}: {nnz} indices but "
                                    f"{g['data'].shape[0]} values")
        src_dtype = g["data"].dtype
    check_full_pointer(indptr, nnz, major="barcode",
                       where=f"{str(p.resolve())!r} ({group}), barcodes 0:{n}")
    bounds = default_column_bounds(indptr, m, block_nnz)
    out_dtype = np.dtype(dtype or src_dtype)
    reader = TenxH5Reader(str(p.resolve()), group, m, None if dtype is None else out_dtype.str,
                          budget, st, n)
    return array_from_reader(reader, (m, n), bounds, out_dtype, True,
                             f"{file_token(p)}:{group}", "open-10x-h5")


def read_metadata(path: PathLike, *, genome: str | None = None):
    """(features, barcodes) DataFrames of a 10x directory or ``.h5``.

    Returns
    -------
    rows : pandas.DataFrame
        Indexed by gene symbol; columns ``gene_ids``, ``gene_symbols``, ``feature_types``
        (when stored).
    cols : pandas.DataFrame
        Indexed by barcode (no columns).

    Examples
    --------
    >>> genes, cells = read_metadata("filtered_feature_bc_matrix")  # doctest: +SKIP
    """
    p = Path(path)
    if p.is_dir():
        from .mtx import read_metadata as mtx_meta

        mtx = _matrix_file(p)
        if mtx is None:
            raise MatrixFormatError(f"path={str(path)!r}: no matrix.mtx[.gz] in the directory")
        return mtx_meta(mtx)
    with _open_h5(p) as f:
        g = f[_group_or_raise(f, path, genome)]
        barcodes = _str(g["barcodes"][:])
        if "features" in g:
            fg = g["features"]
            rows = {"gene_ids": _str(fg["id"][:]), "gene_symbols": _str(fg["name"][:])}
            if "feature_type" in fg:
                rows["feature_types"] = _str(fg["feature_type"][:])
        else:
            rows = {"gene_ids": _str(g["genes"][:]), "gene_symbols": _str(g["gene_names"][:])}
    df = pd.DataFrame(rows)
    return (df.set_index("gene_symbols", drop=False),
            pd.DataFrame(index=pd.Index(barcodes, name="barcode")))


def info(path: PathLike) -> dict:
    """Header facts of a 10x directory or ``.h5`` (no pass over the entries).

    Examples
    --------
    >>> info("filtered_feature_bc_matrix")["shape"]  # doctest: +SKIP
    (33538, 5025)
    """
    p = Path(path)
    rows, cols = read_metadata(p)
    if p.is_dir():
        from .mtx import info as mtx_info

        out = mtx_info(_matrix_file(p))
        out["version"] = "10x Cell Ranger directory (Matrix Market)"
        return out
    with _open_h5(p) as f:
        group = _group_or_raise(f, path, None)
        g = f[group]
        m, n = (int(s) for s in np.asarray(g["shape"][:]))
        nnz = int(g["data"].shape[0])
        value_type = str(g["data"].dtype)
    return {
        "shape": (m, n), "nnz": nnz, "dense": False, "value_type": value_type,
        "version": "10x Cell Ranger HDF5 (" + ("v3" if group == "matrix" else "v2") + ")",
        "encoding": f"CSC features × barcodes in /{group}", "n_blocks": None,
        "chunking": "by barcodes (pointer read on the client)",
        "row_meta_columns": [str(c) for c in rows.columns], "col_meta_columns": [],
    }
