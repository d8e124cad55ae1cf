"""Sparse × dense products straight from a CSC block's ``indptr/indices/data``.

Every function here is a serial numba kernel (``nogil=True``): Dask runs blocks in parallel.
Accumulation is in float64 whatever the storage dtype, so float32 data lose nothing in the sums.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd import FIXED_MAX_WIDTH, fixed_width_kernel, vaxpy_row, vload

_NAMESPACE = {"np": np, "vload": vload, "vaxpy_row": vaxpy_row,
              "__name__": __name__}  # numba's cache needs __name__


@njit(nogil=True, cache=True, fastmath=False)
def csc_wt_a(indptr, indices, data, W):
    """``Wᵀ A_p`` for a CSC block ``A_p`` (m × n_p) and a dense ``W`` (m × k).

    Returns a float64 array of shape (k, n_p).
    """
    n = indptr.size - 1
    k = W.shape[1]
    out = np.zeros((k, n), dtype=np.float64)
    acc = np.zeros(k, dtype=np.float64)
    for j in range(n):
        acc[:] = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            a = np.float64(data[p])
            i = indices[p]
            for f in range(k):
                acc[f] += a * W[i, f]
        for f in range(k):
            out[f, j] = acc[f]
    return out


@njit(nogil=True, cache=True, fastmath=False)
def csc_a_ht(indptr, indices, data, H, m):
    """``A_p H_pᵀ`` for a CSC block ``A_p`` (m × n_p) and a dense ``H_p`` (k × n_p).

    Returns a float64 array of shape (m, k).
    """
    n = indptr.size - 1
    k = H.shape[0]
    out = np.zeros((m, k), dtype=np.float64)
    h = np.empty(k, dtype=np.float64)
    for j in range(n):
        for f in range(k):
            h[f] = H[f, j]
        for p in range(indptr[j], indptr[j + 1]):
            a = np.float64(data[p])
            i = indices[p]
            for f in range(k):
                out[i, f] += a * h[f]
    return out


@njit(nogil=True, cache=True, fastmath=False)
def csc_a_v(indptr, indices, data, V, m):
    """``A_p V`` for a CSC block ``A_p`` (m × n_p) and a dense ``V`` (n_p × k).

    The orientation SVD uses; returns float64 (m, k).
    """
    n = indptr.size - 1
    k = V.shape[1]
    out = np.zeros((m, k), dtype=np.float64)
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            a = np.float64(data[p])
            i = indices[p]
            for f in range(k):
                out[i, f] += a * V[j, f]
    return out


@njit(nogil=True, cache=True, fastmath=False)
def csc_sq_sum(data):
    """Σ a² over the stored entries (float64)."""
    s = 0.0
    for p in range(data.size):
        v = np.float64(data[p])
        s += v * v
    return s


@njit(nogil=True, cache=True, fastmath=False)
def csc_row_sums(indptr, indices, data, m):
    """Row sums and row sums of squares of a CSC block, float64 (m,) each."""
    s = np.zeros(m, dtype=np.float64)
    s2 = np.zeros(m, dtype=np.float64)
    for p in range(indptr[-1] - indptr[0]):
        q = p + indptr[0]
        v = np.float64(data[q])
        s[indices[q]] += v
        s2[indices[q]] += v * v
    return s, s2


def dense_wt_a(A, W):
    """``Wᵀ A_p`` for a dense block (BLAS), float64 (k, n_p)."""
    return np.asarray(W, dtype=np.float64).T @ np.asarray(A, dtype=np.float64)


def dense_a_ht(A, H):
    """``A_p H_pᵀ`` for a dense block (BLAS), float64 (m, k)."""
    return np.asarray(A, dtype=np.float64) @ np.asarray(H, dtype=np.float64).T


@njit(nogil=True, cache=True, fastmath=False)
def csc_residual_parts(indptr, indices, data, Wd, Ht):
    """Residual pieces of ``A_p ≈ Wd H_pᵀ`` at the stored entries, in float64.

    ``Wd`` is m × k, ``Ht`` is n_p × k. Returns ``(Σ (a − r)², Σ r²)`` over the stored entries,
    with ``r = Wd[i] · Ht[j]``. With the total ``Σ r²`` over all entries (a trace), the exact SSE is
    ``Σ(a − r)² + Σ_all r² − Σ_stored r²`` — no cancellation against ‖A‖².
    """
    n = indptr.size - 1
    k = Wd.shape[1]
    res = 0.0
    rec = 0.0
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            r = 0.0
            for f in range(k):
                r += Wd[i, f] * Ht[j, f]
            e = np.float64(data[p]) - r
            res += e * e
            rec += r * r
    return res, rec


@njit(nogil=True, cache=True, fastmath=False)
def gram_rows(F):
    """``FᵀF`` of any dense float ``F`` (r × k), summed row by row: the generic kernel of
    :func:`gram`."""
    r, k = F.shape
    G = np.zeros((k, k), dtype=np.float64)
    for i in range(r):
        for f in range(k):
            x = np.float64(F[i, f])
            for g in range(f, k):
                G[f, g] += x * np.float64(F[i, g])
    for f in range(k):
        for g in range(f + 1, k):
            G[g, f] = G[f, g]
    return G


@njit(nogil=True, cache=True, fastmath=False)
def column_sums(F, squares):
    """``Σᵢ |F[i, f]|`` (or ``Σᵢ F[i, f]²`` with ``squares``) per column of a dense ``F``
    (r × k), in float64, the rows added in order (a left fold: the same bits for any layout
    and memory alignment, where numpy's axis-0 sum may switch to pairwise sums), in one pass
    and without a temporary.

    Examples
    --------
    >>> import numpy as np
    >>> column_sums(np.array([[1.0, -2.0], [3.0, 4.0]]), False)
    array([4., 6.])
    """
    r, k = F.shape
    out = np.zeros(k, dtype=np.float64)
    for i in range(r):
        for f in range(k):
            v = np.float64(F[i, f])
            out[f] += v * v if squares else abs(v)
    return out


_GRAM = """
def {name}(F):
    G = np.zeros(({B}, {B}), dtype=np.float64)
    for i in range(F.shape[0]):
        row = vload(F, i, {B})
        for f in range({B}):
            vaxpy_row(G, f, F[i, f], row)
    return G
"""


def gram(F):
    """``FᵀF`` (k × k, float64) of a dense ``F`` (r × k), summed row by row in a fixed order.

    The factors' small Grams go through here instead of BLAS: a BLAS ``gemm`` may sum in another
    order on another thread count or CPU kernel (``OPENBLAS_CORETYPE``), which would make the
    same fit differ in the last bit between a laptop, a worker and a batch job.

    A C-contiguous float64 ``F`` with 1 ≤ k ≤ 64 (:data:`~.simd.FIXED_MAX_WIDTH`) takes a kernel
    written out for its width
    (:mod:`.simd`): per row, ``k`` vector updates ``G[f] += F[i, f]·F[i]`` instead of k(k+1)/2
    scalar ones. Each entry sees the same products in the same order as :func:`gram_rows` (and
    ``G[g, f]``'s products equal ``G[f, g]``'s), so the result is the same to the bit.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.arange(6.0).reshape(3, 2)
    >>> bool(np.array_equal(gram(F), F.T @ F))
    True
    """
    F = np.asarray(F)
    k = F.shape[1] if F.ndim == 2 else 0
    if F.dtype == np.float64 and F.flags.c_contiguous and 1 <= k <= FIXED_MAX_WIDTH:
        return fixed_width_kernel(_GRAM, f"gram_w{k}", k, _NAMESPACE, __file__)(F)
    return gram_rows(F)
