"""kernels.simd: the vector intrinsics round every lane as the scalar statement they stand for
(bit-equal to a scalar numba loop compiled with the same flags), on 1-D and 2-D arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from dask_factor.kernels.simd import vfma, vfma_vec, vload, vstore, vzeros

floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@njit(fastmath={"contract"})
def _vec_chain(acc, u, v, a, out):
    """out[:8] = ((acc + u·v) + a·v) lane by lane, through the intrinsics on 1-D arrays."""
    x = vfma_vec(vload(acc, 0, 8), vload(u, 0, 8), vload(v, 0, 8))
    x = vfma(x, a, vload(v, 0, 8))
    vstore(out, 0, x)


@njit(fastmath={"contract"})
def _scalar_chain(acc, u, v, a, out):
    for t in range(8):
        s = acc[t]
        s += u[t] * v[t]
        s += a * v[t]
        out[t] = s


@njit(fastmath=False)
def _zeros_2d(X):
    vstore(X, 1, vzeros(X, 5))


@settings(max_examples=60, deadline=None)
@given(st.lists(floats, min_size=24, max_size=24), floats)
def test_vector_multiply_adds_round_as_the_scalar_loop(vals, a):
    acc, u, v = (np.array(vals[i * 8:(i + 1) * 8]) for i in range(3))
    got, want = np.empty(8), np.empty(8)
    _vec_chain(acc, u, v, a, got)
    _scalar_chain(acc, u, v, a, want)
    assert np.array_equal(got, want)
    # fused: the same as the exact product-sum rounded once where it differs from two roundings
    exact = np.array([float(np.longdouble(acc[t]) + np.longdouble(u[t]) * np.longdouble(v[t]))
                      for t in range(8)])
    assert np.allclose(got - a * v, exact, rtol=1e-9, atol=1e-3)


def test_zero_vector_on_a_2d_row():
    X = np.ones((3, 6))
    _zeros_2d(X)
    assert X[1, :5].tolist() == [0.0] * 5 and X[1, 5] == 1.0 and X[0].sum() == 6.0
