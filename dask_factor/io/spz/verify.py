"""A deep check of a ``.spz`` file: every chunk decoded, and the stored transpose compared with
the matrix.

A file with a transpose section holds its data twice, in two independent encodings.  A change
that keeps each section valid on its own (a byte of a raw dense panel, an escaped value within
its type's range — undetectable once the CRC is recomputed) almost never makes the two agree.
The comparison is exact, except where the format rounds the transpose on its own:

* quant8 (sparse, and dense panels): each section is quantised separately, so an entry may
  differ by up to half the quantisation step of its forward chunk plus half that of its
  transpose chunk (plus float32 rounding);
* dense float64 files: RcppML writes the transpose panels through float32, so the transpose
  may equal the matrix rounded to float32.

It costs two whole reads (and their memory, within the size limits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .errors import SpzFormatError

if TYPE_CHECKING:
    from .reader import SpzFile

__all__ = ["verify"]


def _chunk_of(bounds: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, index, side="right") - 1


def _panel_steps(f: SpzFile, sec) -> np.ndarray:
    """Quantisation step of every dense quant8 panel: (vmax - vmin) / 255 from its 8 bytes."""
    steps = np.zeros(sec.desc.shape[0])
    for c in range(steps.size):
        vmin, vmax = np.frombuffer(f._pread(int(sec.starts[c]), 8), "<f4").astype(np.float64)
        steps[c] = (vmax - vmin) / 255.0
    return steps


def _steps(f: SpzFile, sec) -> np.ndarray:
    if f.is_dense:
        return _panel_steps(f, sec)
    return sec.desc["quant_scale"].astype(np.float64)


def _fail(f: SpzFile, i: int, j: int, a: float, b: float) -> SpzFormatError:
    return SpzFormatError(
        f"{f.path}: the stored transpose disagrees with the matrix at (row {i}, column {j}): "
        f"{b!r} in the transpose, {a!r} in the forward section; the file was changed")


def verify(f: SpzFile) -> dict:
    """Decode every chunk of ``f`` and check its transpose section against its forward one.

    Returns
    -------
    dict
        ``{"chunks": forward chunks decoded, "transpose": None (no transpose section),
        "exact" or "within quantisation"}``.

    Raises
    ------
    SpzFormatError
        Any chunk is malformed, or the two sections disagree (naming the first entry).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, tempfile, os
    >>> from dask_factor.io.spz import SpzFile, write_spz
    >>> p = os.path.join(tempfile.mkdtemp(), "x.spz")
    >>> _ = write_spz(sp.random(30, 20, density=0.2, format="csc", random_state=0), p,
    ...               value_type="float64")
    >>> with SpzFile(p) as f:
    ...     f.verify()
    {'chunks': 1, 'transpose': 'exact'}
    """
    A = f.read_all(dtype=np.float64)
    out = {"chunks": int(f.num_chunks), "transpose": None}
    if not f.has_transpose:
        return out
    m, n = f.shape
    T = f.read_rows(0, m, dtype=np.float64)
    quant = f.value_type == "quant8" or f.codec == "quant8"
    lay = f._lay
    if f.is_dense:
        a, b = np.asarray(A), np.asarray(T)
        rows, cols = np.indices(a.shape).reshape(2, -1)
        a, b = a.reshape(-1), b.reshape(-1)
    else:
        a_csr, b_csr = sp.csr_matrix(A), sp.csr_matrix(T)
        a_csr.sort_indices()
        b_csr.sort_indices()
        if not (np.array_equal(a_csr.indptr, b_csr.indptr)
                and np.array_equal(a_csr.indices, b_csr.indices)):
            diff = a_csr.astype(bool) != b_csr.astype(bool)
            i, j = (int(v[0]) for v in diff.nonzero())
            raise SpzFormatError(
                f"{f.path}: the stored transpose and the matrix have different entries (first "
                f"at row {i}, column {j}); the file was changed")
        rows = np.repeat(np.arange(m), np.diff(a_csr.indptr))
        cols = a_csr.indices.astype(np.int64)
        a, b = a_csr.data, b_csr.data
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if f.is_dense and f.value_type == "float64":  # RcppML's transposes pass through float32
        with np.errstate(over="ignore"):
            same |= b == a.astype(np.float32).astype(np.float64)
    if same.all():
        out["transpose"] = "exact"
        return out
    if not quant:
        k = int(np.flatnonzero(~same)[0])
        raise _fail(f, int(rows[k]), int(cols[k]), float(a[k]), float(b[k]))
    sf = _steps(f, lay.fwd)[_chunk_of(lay.fwd.bounds, cols)]
    trows = rows if lay.stored_row is None else lay.stored_row[rows]  # row-sorted files
    st = _steps(f, lay.tsec)[_chunk_of(lay.tsec.bounds, trows)]
    with np.errstate(invalid="ignore", over="ignore"):
        tol = 0.5 * (sf + st) * (1 + 1e-5) + 1e-6 * (np.abs(a) + np.abs(b)) + 1e-30
        ok = same | (np.abs(a - b) <= tol)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        raise _fail(f, int(rows[k]), int(cols[k]), float(a[k]), float(b[k]))
    out["transpose"] = "within quantisation"
    return out
