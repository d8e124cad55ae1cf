"""Issue 17, item 6: a fit whose factors become non-finite must stop, naming the iteration.

Reproducer: values of 1e20 in a float32 fit.  ‖A‖² (computed in float64) is finite and every
value fits float32, so the input checks pass; but H comes out around 1e20 and its Gram matrix
H·Hᵀ (about 1e40) overflows float32.  This used to return NaN W, d, H and MSE without an error;
the engine driver now stops with ``NonFiniteModelError`` (a ``FloatingPointError``) naming the
iteration.  The test was written as an expected failure and kept as the driver check's guard.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf


def _A(scale: float) -> sp.csc_matrix:
    return sp.random(50, 80, density=0.3, format="csc", random_state=0) * scale


@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_a_fit_that_overflows_stops_naming_the_iteration(scale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ArithmeticError, match=r"non-finite at iteration \d+") as ei:
            nmf(_A(scale), k=3, maxit=5, seed=1, dtype="float32")
    assert "dtype='float64'" in str(ei.value) or "rescale" in str(ei.value)


def test_a_large_but_representable_fit_stays_finite():
    """The check must not fire where float32 still holds the products (1e18: H·Hᵀ ~ 1e36)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = nmf(_A(1e18), k=3, maxit=5, seed=1, dtype="float32")
    assert np.isfinite(r.mse) and np.isfinite(r.W).all() and np.isfinite(r.H).all()
