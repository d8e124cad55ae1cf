"""``value_stats``: the one read of an input's stored values, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from dask_factor.kernels.products import csc_sq_sum
from dask_factor.kernels.validate import value_stats


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_value_stats_match_numpy(dtype):
    rng = np.random.default_rng(7)
    vals = rng.normal(0.0, 3.0, 5000)
    vals[rng.random(vals.size) < 0.3] = 0.0
    if np.dtype(dtype).kind == "f":
        vals[rng.integers(0, vals.size, 40)] = np.nan
        vals[rng.integers(0, vals.size, 7)] = -np.inf
    vals = vals.astype(dtype)
    sq, n_bad, n_inf, n_neg, nnz = value_stats(vals)
    finite = np.isfinite(vals)
    good = vals[finite].astype(np.float64)
    assert n_bad == int(np.count_nonzero(~finite))
    assert n_inf == int(np.count_nonzero(np.isinf(vals)))
    assert n_neg == int(np.count_nonzero(good < 0))
    assert nnz == int(np.count_nonzero(vals))
    assert sq == csc_sq_sum(good)  # same order of summation: the same bits
    np.testing.assert_allclose(sq, np.sum(good ** 2), rtol=1e-12)
