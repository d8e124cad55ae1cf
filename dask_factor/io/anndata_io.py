"""AnnData sources and sinks: ``.h5ad`` files, AnnData zarr stores and ``AnnData`` objects.

AnnData is cells × genes; we are genes × cells.  A CSR ``X`` holding a range of cells (rows) is,
read through the same ``indptr/indices/data``, the CSC block of that range of columns of the
transpose: the reader slices the three arrays and returns ``csr.T`` (a ``csc_matrix`` sharing the
buffers, no copy).  Readers use h5py / zarr directly, so reading the matrix needs no anndata;
metadata (obs/var DataFrames) goes through ``anndata.io.read_elem``.

Orientation of metadata: AnnData's ``var`` (per gene) is our row metadata, ``obs`` (per cell)
our column metadata.

Results of a factorization go back the AnnData way (:func:`write_nmf_to_anndata`):
``obsm['X_nmf']`` = Hᵀ (cells × k), ``varm['NMF_W']`` = W (genes × k), ``uns['nmf']`` = d,
loss history and parameters.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._optional import require
from .blocks import (
    BlockStream,
    PathLike,
    array_from_reader,
    file_token,
    from_memory,
    to_block,
)
from .chunking import default_block_nnz, default_column_bounds
from .errors import MatrixFormatError, MissingElementError, reading
from .limits import check_budget, get_limits, source_size
from .registry import detect_format
from .stamp import Stamp, check_stamp, stamp
from .validate import (
    cast_values,
    check_block,
    check_full_pointer,
    check_pointer_slice,
    csc_from_arrays,
)

_SCAN = 1 << 22  # entries per slice when a CSC-on-disk X must be scanned


# --------------------------------------------------------------------------- element access


def _element_key(layer: str | None, raw: bool) -> str:
    if layer is not None and raw:
        raise ValueError("pass either layer= or raw=True, not both")
    if raw:
        return "raw/X"
    return f"layers/{layer}" if layer is not None else "X"


def _decode(v) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "OSU":
        return [_decode(x) for x in v.tolist()]
    return v


class _Container:
    """An open h5py file or zarr group, used as a context manager."""

    def __init__(self, path: str, backend: str, mode: str = "r"):
        self.path, self.backend, self.mode = path, backend, mode

    def __enter__(self):
        if self.backend == "h5":
            h5py = require("h5py", f"reading {self.path!r}")
            self._f = h5py.File(self.path, self.mode)
            return self._f
        import zarr

        self._f = zarr.open_group(self.path, mode=self.mode)
        return self._f

    def __exit__(self, *exc):
        if self.backend == "h5":
            self._f.close()


def anndata_backend(path: PathLike) -> str:
    fmt = detect_format(path)
    if fmt == "h5ad":
        return "h5"
    if fmt == "anndata-zarr":
        return "zarr"
    raise ValueError(f"path={str(path)!r} is a {fmt!r} file, not an AnnData .h5ad or zarr store")


def describe_element(node, key: str, path: PathLike | None = None
              ) -> tuple[str, tuple[int, int], np.dtype, int | None]:
    """(encoding, (cells, genes), dtype, nnz) of the element ``key`` of an open container.

    Raises :class:`MatrixFormatError` naming the file for anything malformed (a missing or
    mistyped array or attribute), ``ValueError`` for a layer that is not there.
    """
    where = f"path={str(path)!r}" if path is not None else "AnnData"
    if key not in node:
        if key == "X":
            raise MatrixFormatError(f"{where}: the AnnData store has no X (damaged or written "
                                    f"without a matrix)")
        layers = sorted(node["layers"].keys()) if "layers" in node else []
        raise MissingElementError(f"{where}: AnnData element {key!r} not found (layers: "
                                  f"{layers}; raw: {'raw' in node})")
    el = node[key]
    attrs = {k: _decode(v) for k, v in el.attrs.items()}
    enc = attrs.get("encoding-type") or attrs.get("h5sparse_format")
    if hasattr(el, "shape") and not isinstance(enc, str) or enc == "array":
        shape = tuple(int(s) for s in getattr(el, "shape", ()))
        if len(shape) != 2:
            raise MatrixFormatError(f"{where}: AnnData element {key!r} has shape {shape}, "
                                    f"expected 2-D")
        return "dense", shape, np.dtype(el.dtype), None
    enc = {"csr": "csr_matrix", "csc": "csc_matrix"}.get(enc, enc)
    if enc not in ("csr_matrix", "csc_matrix"):
        raise MatrixFormatError(f"{where}: AnnData element {key!r}: unsupported encoding-type "
                                f"{enc!r}")
    shape = attrs.get("shape")
    shape = attrs.get("h5sparse_shape") if shape is None else shape
    try:
        shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < 0:
        raise MatrixFormatError(f"{where}: AnnData element {key!r}: attribute 'shape' is "
                                f"{attrs.get('shape')!r}, expected [rows, columns]")
    for arr in ("indptr", "indices", "data"):
        if arr not in el or not hasattr(el[arr], "shape") or len(el[arr].shape) != 1:
            raise MatrixFormatError(f"{where}: AnnData element {key!r} has no 1-D array "
                                    f"{arr!r} (a damaged or incomplete store)")
    major = shape[0] if enc == "csr_matrix" else shape[1]
    if el["indptr"].shape[0] != major + 1:
        raise MatrixFormatError(
            f"{where}: AnnData element {key!r}: indptr has {el['indptr'].shape[0]} entries, "
            f"expected {major + 1} for the {major} {'cells' if enc == 'csr_matrix' else 'genes'}"
            f" of its shape {shape}")
    if el["indices"].shape[0] != el["data"].shape[0]:
        raise MatrixFormatError(f"{where} ({key}), cells 0:{shape[0]}: {el['indices'].shape[0]} "
                                f"indices but {el['data'].shape[0]} values")
    return enc[:3], shape, np.dtype(el["data"].dtype), int(el["data"].shape[0])


@dataclass(frozen=True)
class AnnDataReader:
    """Reads cells ``start:stop`` of an AnnData element as genes × cells (runs in a task).

    Attributes
    ----------
    path : str
        ``.h5ad`` file or AnnData zarr store.
    key : str
        ``"X"``, ``"layers/<name>"`` or ``"raw/X"``.
    backend : {"h5", "zarr"}
    encoding : {"csr", "csc", "dense"}
        On-disk layout of the cells × genes element.
    n_genes : int
    dtype : str or None

    Examples
    --------
    >>> r = AnnDataReader("pbmc.h5ad", "X", "h5", "csr", n_genes=13714)  # doctest: +SKIP
    >>> r(0, 100).shape  # genes x cells  # doctest: +SKIP
    (13714, 100)
    """

    path: str
    key: str
    backend: str
    encoding: str
    n_genes: int
    dtype: str | None = None
    n_cells: int | None = None
    #: what one block may allocate (the file's budget, :mod:`dask_factor.io.limits`)
    max_bytes: int | None = None
    #: the file or store as opened (:mod:`dask_factor.io.stamp`): every read checks it
    stamp: Stamp | None = None

    def __call__(self, start: int, stop: int):
        check_stamp(self.stamp)
        with reading(self.path, f"read cells {start}:{stop} of {self.key}"):
            return self._read(start, stop)

    def _read(self, start: int, stop: int):
        with _Container(self.path, self.backend) as f:
            el = f[self.key]
            where = f"{self.path!r} ({self.key}), cells {start}:{stop}"
            if self.encoding == "dense":
                check_budget(16 * self.n_genes * (stop - start), self.max_bytes, where=where,
                             what=f"a block of {self.n_genes} x {stop - start} values")
                return np.ascontiguousarray(np.asarray(el[start:stop]).T, dtype=self.dtype)
            if self.encoding == "csr":
                # the CSR arrays of cells start:stop are the CSC of genes x those cells
                ip = np.asarray(el["indptr"][start : stop + 1], dtype=np.int64)
                p0, p1 = check_pointer_slice(ip, start, stop, int(el["indices"].shape[0]),
                                             where=where, n_major=self.n_cells)
                check_budget(32 * (p1 - p0) + 16 * (stop - start + 1), self.max_bytes,
                             where=where, what=f"indptr gives the block {p1 - p0} entries")
                data = np.asarray(el["data"][p0:p1])
                indices = np.asarray(el["indices"][p0:p1])
                if self.dtype is not None:
                    data = cast_values(data, self.dtype, where=where)
                return csc_from_arrays(data, indices, ip - p0, (self.n_genes, stop - start),
                                       where=where, major="cell", minor="gene", offset=start)
            return self._scan_csc(el, start, stop, where)

    def _scan_csc(self, el, start: int, stop: int, where: str) -> sp.csc_matrix:
        # cells x genes CSC: the cells of a block are spread over every gene, so scan it all
        ip = np.asarray(el["indptr"][:], dtype=np.int64)
        n_stored = int(el["indices"].shape[0])
        check_budget(32 * int(ip[-1] if ip.size else 0), self.max_bytes, where=where,
                     what=f"the genes' indptr gives {int(ip[-1]) if ip.size else 0} entries to "
                          f"scan")
        if ip.size != self.n_genes + 1 or (ip.size and (ip[0] != 0 or ip[-1] > n_stored
                                                         or np.any(np.diff(ip) < 0))):
            raise MatrixFormatError(
                f"{where}: the genes' indptr is not a valid pointer into the {n_stored} "
                f"stored entries (expected {self.n_genes + 1} non-decreasing values from 0)")
        rows, cols, vals = [], [], []
        nnz = int(ip[-1])
        for p0 in range(0, nnz, _SCAN):
            p1 = min(p0 + _SCAN, nnz)
            r = np.asarray(el["indices"][p0:p1])
            if self.n_cells is not None and r.size and (r.min() < 0 or r.max() >= self.n_cells):
                bad = int(np.flatnonzero((r < 0) | (r >= self.n_cells))[0])
                raise MatrixFormatError(f"{where}: cell index {int(r[bad])} (entry {p0 + bad}) "
                                        f"is outside [0, {self.n_cells})")
            keep = (r >= start) & (r < stop)
            if keep.any():
                gene = np.searchsorted(ip, np.arange(p0, p1)[keep], side="right") - 1
                rows.append(gene)
                cols.append(r[keep] - start)
                vals.append(np.asarray(el["data"][p0:p1])[keep])
        if rows:
            coo = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows),
                                np.concatenate(cols))), shape=(self.n_genes, stop - start))
        else:
            coo = sp.coo_matrix((self.n_genes, stop - start), dtype=el["data"].dtype)
        out = to_block(coo.tocsc())
        if self.dtype is not None:
            out = cast_values(out, self.dtype, where=where)
        check_block(out, (self.n_genes, stop - start), where=where)  # built by scipy: cheap
        return out


# --------------------------------------------------------------------------- reading


def open_array(
    path: PathLike,
    *,
    layer: str | None = None,
    raw: bool = False,
    block_nnz: int | None = None,
    dtype=None,
):
    """Open an AnnData ``.h5ad`` file or zarr store lazily as genes × cells column blocks.

    Parameters
    ----------
    path : path-like
    layer : str, optional
        Read ``layers[layer]`` instead of ``X``.
    raw : bool
        Read ``raw.X``.
    block_nnz : int, optional
        Target entries per block (default :func:`~dask_factor.io.default_block_nnz` of the
        genes).  For CSR ``X`` the cell pointer
        (n_cells + 1 integers) is read on the client to cut blocks by non-zeros.
    dtype : numpy dtype, optional

    Returns
    -------
    dask.array.Array of shape (n_genes, n_cells)

    Examples
    --------
    >>> A = open_array("pbmc.h5ad", layer="counts")  # doctest: +SKIP
    >>> A.shape  # genes x cells  # doctest: +SKIP
    """
    backend = anndata_backend(path)
    key = _element_key(layer, raw)
    budget = get_limits().budget(source_size(path))
    st = stamp(Path(path).resolve())
    with _Container(str(path), backend) as f:
        enc, (n_cells, n_genes), src_dtype, nnz = describe_element(f, key, path)
        target = int(block_nnz or default_block_nnz(n_genes))
        check_budget(8 * (max(n_cells, n_genes) + 1), budget, where=f"path={str(path)!r}",
                     what=f"{key} declares {n_cells} cells x {n_genes} genes (8 bytes per cell "
                          f"and per gene)")
        if enc == "csr":
            indptr = np.asarray(f[key]["indptr"][:], dtype=np.int64)
            check_full_pointer(indptr, int(nnz or 0), major="cell",
                               where=f"{str(Path(path).resolve())!r} ({key}), cells 0:{n_cells}")
            bounds = default_column_bounds(indptr, n_genes, block_nnz)
        elif enc == "csc":
            warnings.warn(
                f"{path}: {key} is stored cells x genes CSC, so every block read scans the whole "
                "matrix; convert it once (dask-factor convert) for out-of-core work",
                stacklevel=3,
            )
            per_cell = max((nnz or 0) / max(n_cells, 1), 1.0)
            cols = max(1, int(target / per_cell))
            bounds = np.unique(np.append(np.arange(0, n_cells, cols), n_cells)).astype(np.int64)
        else:
            cols = max(1, target // max(n_genes, 1))
            bounds = np.unique(np.append(np.arange(0, n_cells, cols), n_cells)).astype(np.int64)
    out_dtype = np.dtype(dtype or src_dtype)
    reader = AnnDataReader(str(Path(path).resolve()), key, backend, enc, n_genes,
                           None if dtype is None else out_dtype.str, n_cells, budget, st)
    return array_from_reader(reader, (n_genes, n_cells), bounds, out_dtype, enc != "dense",
                             f"{file_token(path)}:{key}", "open-anndata")


def open_anndata(adata, *, layer: str | None = None, raw: bool = False,
                 block_nnz: int | None = None, dtype=None):
    """Genes × cells column blocks of an ``AnnData`` object (backed or in memory).

    A backed object is read from its file by the workers (it must not be a view); an
    in-memory one is cut into blocks of ``X.T`` (a CSR ``X`` transposes to CSC without copying).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> open_anndata(ad.AnnData(np.ones((5, 3)))).shape
    (3, 5)
    """
    key = _element_key(layer, raw)
    if adata.isbacked:
        if adata.is_view:
            raise ValueError("adata is a view of a backed AnnData; subset it in memory "
                             "(adata[...].to_memory()) or write the subset first")
        return open_array(adata.filename, layer=layer, raw=raw, block_nnz=block_nnz, dtype=dtype)
    X = adata.raw.X if raw else adata.layers[layer] if layer is not None else adata.X
    if X is None:
        raise ValueError(f"adata has no matrix at {key!r}")
    if sp.issparse(X):
        check_block(X, tuple(adata.shape) if key != "raw/X" else None,
                    where=f"adata.{key.replace('/', '.')} (in-memory {type(X).__name__})")
        return from_memory(sp.csc_matrix(X.T), block_nnz=block_nnz, dtype=dtype)
    return from_memory(np.asarray(X).T, block_nnz=block_nnz, dtype=dtype)


def read_metadata(path: PathLike, *, raw: bool = False):
    """``(var, obs)``: per-gene (row) and per-cell (column) DataFrames of an AnnData file.

    Examples
    --------
    >>> genes, cells = read_metadata("pbmc.h5ad")  # doctest: +SKIP
    """
    read_elem = require("anndata.io", f"reading the metadata of {str(path)!r}").read_elem
    with _Container(str(path), anndata_backend(path)) as f:
        var = read_elem(f["raw/var" if raw else "var"])
        obs = read_elem(f["obs"])
    return var, obs


def _df_columns(f, key: str) -> list[str]:
    if key not in f:
        return []
    order = _decode(f[key].attrs.get("column-order", []))
    return [str(c) for c in (order if isinstance(order, list) else [])]


def info(path: PathLike) -> dict:
    """Header facts of an AnnData file: shape as genes × cells, nnz, encoding, layers.

    Examples
    --------
    >>> info("pbmc.h5ad")["shape"]  # doctest: +SKIP
    (13714, 2638)
    """
    backend = anndata_backend(path)
    with _Container(str(path), backend) as f:
        enc, (n_cells, n_genes), dtype, nnz = describe_element(f, "X", path)
        layers = sorted(f["layers"].keys()) if "layers" in f else []
        root = {k: _decode(v) for k, v in f.attrs.items()}
        return {
            "shape": (n_genes, n_cells), "nnz": nnz, "dense": enc == "dense",
            "value_type": str(dtype), "version": root.get("encoding-version"),
            "encoding": f"{enc} (cells x genes on disk, read transposed)",
            "chunking": "cell ranges (blocks chosen by nnz at open)" if enc == "csr" else enc,
            "n_blocks": None, "layers": layers, "has_raw": "raw" in f,
            "row_meta_columns": _df_columns(f, "var"), "col_meta_columns": _df_columns(f, "obs"),
        }


# --------------------------------------------------------------------------- writing


def check_write_options(*, compression: str | None = None) -> None:
    """Validate h5ad writer options before anything is created.

    Examples
    --------
    >>> check_write_options(compression="gzip")
    """
    if compression not in (None, "gzip", "lzf"):
        raise ValueError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")


def _str_index(df: pd.DataFrame | None, n: int, prefix: str) -> pd.DataFrame:
    if df is None:
        return pd.DataFrame(index=pd.Index([f"{prefix}{i}" for i in range(n)], dtype=object))
    df = df.copy()
    df.index = df.index.astype(str)
    return df


def write(stream: BlockStream, path: PathLike, *, block_nnz: int | None = None,
          compression: str | None = None) -> None:
    """Write a :class:`BlockStream` (genes × cells) as an ``.h5ad`` (cells × genes) file.

    ``obs``/``var`` come from the stream's column/row metadata (default names ``cell<i>`` and
    ``gene<i>``).  A sparse X is written as CSR, appended block by block: a genes × cells CSC
    block *is* the CSR of its cells, so its arrays are appended unchanged.  Memory O(block).

    Examples
    --------
    >>> from dask_factor.io import write_matrix
    >>> write_matrix("counts.zarr", "counts.h5ad")  # doctest: +SKIP
    """
    ad = require("anndata", "writing an .h5ad")
    h5py = require("h5py", "writing an .h5ad")
    m, n = stream.shape
    skeleton = ad.AnnData(obs=_str_index(stream.col_meta, n, "cell"),
                          var=_str_index(stream.row_meta, m, "gene"))
    skeleton.write_h5ad(path)
    # every dataset chunked with HDF5's fletcher32 checksum: a damaged chunk fails to read
    # instead of reading as other numbers
    kw = {"compression": compression} if compression else {}
    with h5py.File(path, "r+") as f:
        if stream.sparse:
            _append_csr(f, stream, kw)
        else:
            X = f.create_dataset("X", shape=(n, m), dtype=stream.dtype,
                                 chunks=(max(1, min(n, max(1, (1 << 20) // max(m, 1)))),
                                         max(m, 1)) if n and m else None,
                                 fletcher32=bool(n and m), **kw)
            X.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
            for start, blk in stream:
                blk = to_block(blk, stream.dtype, False)
                X[start : start + blk.shape[1], :] = blk.T


def _append_csr(f, stream: BlockStream, kw: dict) -> None:
    m, n = stream.shape
    chunk = (1 << 16,)
    g = f.create_group("X")
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                    "shape": np.array([n, m], dtype=np.int64)})
    index_dtype = np.int32 if m < 2**31 else np.int64
    data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=stream.dtype,
                            chunks=chunk, fletcher32=True, **kw)
    indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype,
                               chunks=chunk, fletcher32=True, **kw)
    indptr = g.create_dataset("indptr", shape=(n + 1,), dtype=np.int64,
                              chunks=(min(n + 1, 1 << 16),), fletcher32=True)
    indptr[0] = 0
    nnz = 0
    col = 0
    for start, blk in stream:
        blk = to_block(blk, stream.dtype, True)
        if start != col or blk.shape[0] != m:
            raise ValueError(f"block at column {start} has shape {blk.shape}; expected columns "
                             f"from {col} and {m} rows")
        k = int(blk.nnz)
        data.resize((nnz + k,))
        indices.resize((nnz + k,))
        data[nnz:] = blk.data
        indices[nnz:] = blk.indices
        indptr[start + 1 : start + 1 + blk.shape[1]] = blk.indptr[1:].astype(np.int64) + nnz
        nnz += k
        col += blk.shape[1]
    if col != n:
        raise ValueError(f"the blocks covered {col} columns, expected n={n}")


def sanitize_uns(obj):
    """Make a params/loss mapping writable by anndata (drop None, stringify the unknown).

    Examples
    --------
    >>> sanitize_uns({"k": 3, "seed": None, "names": ["a", "b"], "f": len})
    {'k': 3, 'names': array(['a', 'b'], dtype=object), 'f': '<built-in function len>'}
    """
    if isinstance(obj, Mapping):
        return {str(k): sanitize_uns(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        vals = [v for v in obj if v is not None]
        if all(isinstance(v, str) for v in vals):
            return np.array(vals, dtype=object)
        return np.asarray(vals)
    if isinstance(obj, str | bool | int | float | np.generic | np.ndarray):
        return obj
    return str(obj)


def write_nmf_to_anndata(
    target,
    W,
    d,
    H,
    *,
    loss=None,
    params: Mapping | None = None,
    obsm_key: str = "X_nmf",
    varm_key: str = "NMF_W",
    uns_key: str = "nmf",
    overwrite: bool = False,
):
    """Store an NMF ``A ≈ W diag(d) H`` (A genes × cells) the AnnData way.

    Writes ``obsm[obsm_key]`` = Hᵀ (cells × k), ``varm[varm_key]`` = W (genes × k) and
    ``uns[uns_key]`` = ``{"d": d, "loss": loss history, "params": params}``.

    Parameters
    ----------
    target : anndata.AnnData or path-like to an ``.h5ad``
        An object is updated in memory.  A file is updated in place without reading X: each
        element is written under a temporary key and then renamed, so an interrupted call
        leaves the file as it was.
    W : array-like of shape (n_genes, k)
    d : array-like of shape (k,)
    H : array-like of shape (k, n_cells)
        Dask arrays are computed (k × n_cells must fit in memory).
    loss : array-like, optional
        Loss history (one value per iteration).
    params : mapping, optional
        Fit parameters (k, seed, tolerances, ...); None values are dropped.
    obsm_key, varm_key, uns_key : str
    overwrite : bool
        Replace existing keys (default: refuse).

    Returns
    -------
    The updated AnnData object, or the path.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((4, 3)))
    >>> out = write_nmf_to_anndata(adata, np.ones((3, 2)), np.ones(2), np.ones((2, 4)))
    >>> out.obsm["X_nmf"].shape, out.varm["NMF_W"].shape
    ((4, 2), (3, 2))
    """
    W, d, H = (np.asarray(getattr(a, "compute", lambda a=a: a)()) for a in (W, d, H))
    if W.ndim != 2 or H.ndim != 2 or d.ndim != 1:
        raise ValueError(f"expected W (genes, k), d (k,), H (k, cells); got shapes {W.shape}, "
                         f"{d.shape}, {H.shape}")
    k = W.shape[1]
    if H.shape[0] != k or d.shape[0] != k:
        raise ValueError(f"W has k={k} columns but d has shape {d.shape} and H {H.shape}")
    uns = sanitize_uns({"d": d, "loss": None if loss is None else np.asarray(loss, dtype=float),
                     "params": dict(params or {})})
    if isinstance(target, str | os.PathLike):
        return _write_nmf_h5ad(Path(target), W, H, uns, obsm_key, varm_key, uns_key, overwrite)
    n_cells, n_genes = target.shape
    if W.shape[0] != n_genes or H.shape[1] != n_cells:
        raise ValueError(f"adata is {n_cells} cells x {n_genes} genes but W is {W.shape} "
                         f"(genes x k) and H is {H.shape} (k x cells)")
    for where, key in ((target.obsm, obsm_key), (target.varm, varm_key), (target.uns, uns_key)):
        if key in where and not overwrite:
            raise FileExistsError(f"key {key!r} already present; pass overwrite=True")
    target.obsm[obsm_key] = np.ascontiguousarray(H.T)
    target.varm[varm_key] = W
    target.uns[uns_key] = uns
    return target


def _write_nmf_h5ad(path: Path, W, H, uns, obsm_key, varm_key, uns_key, overwrite) -> Path:
    n_cells, n_genes = h5ad_shape(path)
    if W.shape[0] != n_genes or H.shape[1] != n_cells:
        raise ValueError(f"{path} is {n_cells} cells x {n_genes} genes but W is {W.shape} "
                         f"(genes x k) and H is {H.shape} (k x cells)")
    items = [("obsm", obsm_key, np.ascontiguousarray(H.T)), ("varm", varm_key, W),
             ("uns", uns_key, uns)]
    return write_h5ad_elements(path, items, overwrite=overwrite)


def _h5ad_file(path: PathLike, mode: str):
    h5py = require("h5py", "reading or writing an .h5ad in place")
    if anndata_backend(path) != "h5":
        raise ValueError(f"path={str(path)!r}: only .h5ad files can be updated in place")
    return h5py.File(path, mode)


def h5ad_shape(path: PathLike) -> tuple[int, int]:
    """``(n_cells, n_genes)`` of the ``.h5ad`` at ``path`` (from X's header, else obs/var).

    Examples
    --------
    >>> h5ad_shape("cells.h5ad")  # doctest: +SKIP
    (2638, 13714)
    """
    with _h5ad_file(path, "r") as f:
        if "X" in f:
            return describe_element(f, "X", path)[1]
        return len(f["obs/_index"]), len(f["var/_index"])


def h5ad_taken(path: PathLike, keys) -> list[str]:
    """Which of the ``(group, key)`` elements already exist in the ``.h5ad`` at ``path``, as
    ``"group/key"``.

    Examples
    --------
    >>> h5ad_taken("cells.h5ad", [("obsm", "X_nmf"), ("uns", "nmf")])  # doctest: +SKIP
    ['obsm/X_nmf']
    """
    with _h5ad_file(path, "r") as f:
        return [f"{g}/{k}" for g, k in keys if g in f and k in f[g]]


def write_h5ad_elements(path: PathLike, items, *, overwrite: bool,
                        what: str = "path") -> Path:
    """Write ``(group, key, value)`` elements (``obsm``, ``varm``, ``uns``, ...) into the
    ``.h5ad`` at ``path`` in place, without reading X.

    Every value is written under a temporary key first and renamed over its key only when all
    are written, so an interrupted call leaves the file as it was. Existing keys are refused
    (``FileExistsError``, before anything is written) unless ``overwrite``.

    Examples
    --------
    >>> write_h5ad_elements("cells.h5ad", [("obsm", "X_mine", E)], overwrite=False
    ...                     )  # doctest: +SKIP
    PosixPath('cells.h5ad')
    """
    write_elem = require("anndata.io", "writing into an .h5ad").write_elem
    with _h5ad_file(path, "r+") as f:
        taken = [f"{g}/{k}" for g, k, _ in items if g in f and k in f[g]]
        if taken and not overwrite:
            raise FileExistsError(f"{what}={str(path)!r} already has {', '.join(taken)}; pass "
                                  f"overwrite=True to replace them")
        tag = uuid.uuid4().hex[:8]
        created, written = [], []
        try:
            for group, key, value in items:
                if group not in f:
                    write_elem(f, group, {})
                    created.append(group)
                written.append((group, f".{key}.tmp-{tag}"))
                write_elem(f[group], f".{key}.tmp-{tag}", value)
        except BaseException:  # nothing of this call stays in the file (anndata would read it)
            for group, tmp in written:
                if group in f and tmp in f[group]:
                    del f[group][tmp]
            for group in created:
                if group in f and not len(f[group]):
                    del f[group]
            raise
        for group, key, _ in items:
            if key in f[group]:
                del f[group][key]
            f[group].move(f".{key}.tmp-{tag}", key)
    return Path(path)
