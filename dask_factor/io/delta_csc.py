"""A column block as the zarr scan layout stores it: row differences and narrow counts, checked.

A streamed fit reads every block of its matrix at every pass. Decoding a scan-layout block into
a ``scipy.sparse.csc_matrix`` (summing the uint16 row differences into int32 rows, widening the
uint8/uint16 counts to float32, then the structural check) cost as much CPU as decompressing it,
and wrote and re-read 8 bytes an entry that the block kernels only read once. A
:class:`DeltaCSC` keeps the arrays as stored (3–4 bytes an entry); the ALS block kernels sum the
differences and convert the counts as they read them (:func:`~dask_factor.kernels.als.
product_kernels` with ``delta=True``), with the same bits as on the decoded block.

It is built only through its constructor, which checks the structure a kernel relies on: the
pointer (from 0, non-decreasing, ending at the stored entries) and every column's rows (the
running sums of its differences) inside ``[0, m)`` (:func:`~dask_factor.kernels.delta.
check_delta_rows`). :meth:`DeltaCSC.tocsc` gives the decoded block to any other consumer.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..kernels.delta import check_delta_rows, delta_decode
from .errors import MatrixFormatError
from .validate import cast_values, check_full_pointer, csc_from_arrays

__all__ = ["DeltaCSC", "DELTA_INDEX_TYPES"]

#: the stored difference types a block kernel sums as it reads (int64 differences, only written
#: for 2**31 rows or more, are decoded instead)
DELTA_INDEX_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32),
                     np.dtype(np.uint32))


class DeltaCSC:
    """Columns of an m-row CSC matrix with delta-coded rows and stored values (checked).

    Parameters
    ----------
    indptr : (n + 1,) int64 array
        Column pointer of the block, from 0.
    deltas : (nnz,) uint8, uint16, int32 or uint32 array
        Per column, the first row and then each row's difference to the previous one.
    data : (nnz,) numeric array
        The stored values (e.g. uint16 counts).
    shape : (m, n)
    dtype : numpy dtype
        The value dtype the block stands for (:meth:`tocsc` gives it; ``data`` must cast to it
        safely, i.e. exactly).
    where : str
        Names the source and columns in error messages.
    offset : int, default 0
        Number of the block's first column in the matrix (messages give absolute columns).

    Raises
    ------
    MatrixFormatError
        A bad pointer, arrays of other lengths, an unsupported difference type, a negative
        difference or a row at or beyond ``m``; values that do not cast exactly to ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> blk = DeltaCSC(np.array([0, 2, 3]), np.array([1, 2, 0], np.uint16),
    ...                np.array([5, 6, 7], np.uint8), (4, 2), np.float32, where="A")
    >>> blk.tocsc().toarray().tolist()
    [[0.0, 7.0], [5.0, 0.0], [0.0, 0.0], [6.0, 0.0]]
    >>> DeltaCSC(np.array([0, 2]), np.array([1, 3], np.uint16), np.ones(2, np.uint8), (4, 1),
    ...          np.float32, where="A")
    Traceback (most recent call last):
    ...
    dask_factor.io.errors.MatrixFormatError: A: the row differences of column 0 reach row 4, ...
    """

    __slots__ = ("indptr", "deltas", "data", "shape", "dtype")

    def __init__(self, indptr, deltas, data, shape, dtype, *, where: str,
                 offset: int = 0):
        m, n = (int(s) for s in shape)
        indptr = np.asarray(indptr, dtype=np.int64)
        deltas, data, dtype = np.asarray(deltas), np.asarray(data), np.dtype(dtype)
        if indptr.shape != (n + 1,):
            raise MatrixFormatError(f"{where}: the column pointer holds {indptr.size} entries, "
                                    f"expected {n + 1}")
        if deltas.ndim != 1 or data.ndim != 1 or deltas.size != data.size:
            raise MatrixFormatError(f"{where}: {deltas.size} row differences but {data.size} "
                                    f"values")
        check_full_pointer(indptr, deltas.size, where=where)
        if deltas.dtype not in DELTA_INDEX_TYPES:
            raise MatrixFormatError(f"{where}: row differences of type {deltas.dtype}; expected "
                                    f"one of {', '.join(str(t) for t in DELTA_INDEX_TYPES)}")
        if data.dtype.kind not in "uif" or not np.can_cast(data.dtype, dtype, "safe"):
            raise MatrixFormatError(f"{where}: stored values of type {data.dtype} do not convert "
                                    f"exactly to {dtype}")
        bad = int(check_delta_rows(indptr, deltas, m))
        if bad >= 0:
            col = deltas[indptr[bad]:indptr[bad + 1]].astype(np.int64)
            what = ("a negative difference" if col.min(initial=0) < 0
                    else f"row {int(col.sum())}")
            raise MatrixFormatError(f"{where}: the row differences of column {bad + offset} "
                                    f"reach {what}, "
                                    f"outside [0, {m}) (a damaged store)")
        self.indptr, self.deltas, self.data = indptr, deltas, data
        self.shape, self.dtype = (m, n), dtype

    @property
    def nnz(self) -> int:
        """Stored entries."""
        return int(self.deltas.size)

    @property
    def nbytes(self) -> int:
        """Bytes the block holds (what it costs a worker's memory)."""
        return int(self.indptr.nbytes + self.deltas.nbytes + self.data.nbytes)

    def tocsc(self) -> sp.csc_matrix:
        """The decoded block: a checked, sorted ``csc_matrix`` of :attr:`dtype` values.

        Examples
        --------
        >>> import numpy as np
        >>> blk = DeltaCSC(np.array([0, 1]), np.array([2], np.uint16), np.array([3], np.uint8),
        ...                (3, 1), np.float32, where="A")
        >>> blk.tocsc().indices.tolist(), blk.tocsc().dtype
        ([2], dtype('float32'))
        """
        rows = np.empty(self.deltas.size, dtype=np.int32)
        delta_decode(self.indptr, self.deltas, rows)
        return csc_from_arrays(cast_values(self.data, self.dtype, where="block"), rows,
                               self.indptr, self.shape, where="block")

    def __sizeof__(self) -> int:  # dask's memory accounting of a held block
        return object.__sizeof__(self) + self.nbytes

    def __repr__(self) -> str:
        return (f"DeltaCSC(shape={self.shape}, nnz={self.nnz}, deltas={self.deltas.dtype}, "
                f"values={self.data.dtype} as {self.dtype})")
