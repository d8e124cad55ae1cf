"""The vectorisable logarithms and exponential (kernels/vmath.py) against numpy's, in ulps, and
where they are used: NB's log-gamma terms of small counts."""

from __future__ import annotations

import math
import platform

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from scipy.special import gammaln

from dask_factor.kernels import irls as K
from dask_factor.kernels.vmath import vexp, vlog, vlog1p


@njit(fastmath={"contract"}, error_model="numpy")
def _logs(x, out):  # as the kernels call them: inlined into a loop, products contracted
    for i in range(x.size):
        out[i] = vlog(x[i])


@njit(fastmath={"contract"}, error_model="numpy")
def _log1ps(x, out):
    for i in range(x.size):
        out[i] = vlog1p(x[i])


@njit(fastmath={"contract"}, error_model="numpy")
def _exps(x, out):
    for i in range(x.size):
        out[i] = vexp(x[i])


def _ulps(got, ref):
    return np.abs(got - ref) / np.spacing(np.abs(ref))


def test_vlog_within_one_ulp_over_the_positive_range():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-744, 709, 400_000)),  # subnormals to 1e308
                        rng.uniform(0.5, 2.0, 200_000),  # around 1, where log is small
                        1.0 + rng.uniform(-1e-6, 1e-6, 50_000)])
    out = np.empty_like(x)
    _logs(x, out)
    ref = np.log(x)
    exact = ref == 0.0
    assert np.all(out[exact] == 0.0)
    assert _ulps(out[~exact], ref[~exact]).max() <= 1.0


def test_vlog1p_within_one_ulp():
    rng = np.random.default_rng(1)
    z = np.concatenate([np.exp(rng.uniform(-700, 700, 400_000)), rng.uniform(-0.99, 2, 200_000),
                        rng.uniform(-1e-9, 1e-9, 20_000)])
    out = np.empty_like(z)
    _log1ps(z, out)
    ref = np.log1p(z)
    nz = ref != 0.0
    assert np.all(out[~nz] == 0.0)
    assert _ulps(out[nz], ref[nz]).max() <= 1.0


@settings(max_examples=300, deadline=None)
@given(x=st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False),
       z=st.floats(min_value=-0.999999, max_value=1e300, allow_nan=False))
def test_logs_match_numpy_anywhere(x, z):
    out = np.empty(1)
    _logs(np.array([x]), out)
    ref = math.log(x)
    assert out[0] == ref or abs(out[0] - ref) <= np.spacing(abs(ref))
    _log1ps(np.array([z]), out)
    ref = math.log1p(z)
    assert out[0] == ref or abs(out[0] - ref) <= 2 * np.spacing(abs(ref))


def test_special_values_follow_c():
    x = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0])
    out = np.empty_like(x)
    _logs(x, out)
    np.testing.assert_array_equal(out[:5], [-np.inf, -np.inf, np.nan, np.inf, np.nan])
    assert np.isnan(out[5]) and out[6] == 0.0
    z = np.array([-1.0, np.inf, np.nan, 0.0, -2.0])
    out = np.empty_like(z)
    _log1ps(z, out)
    assert out[0] == -np.inf and out[1] == np.inf and np.isnan(out[2]) and out[3] == 0.0
    assert np.isnan(out[4])


def test_vexp_within_one_ulp_down_to_the_subnormals():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-745.1, 709.78, 400_000),
                        rng.uniform(-1.0, 1.0, 100_000),  # around 1
                        rng.uniform(-1e-12, 1e-12, 20_000),
                        rng.uniform(-745.1, -708.0, 50_000)])  # subnormal results
    out = np.empty_like(x)
    _exps(x, out)
    ref = np.exp(x)
    assert np.all(np.abs(out - ref) <= np.spacing(ref))


@settings(max_examples=300, deadline=None)
@given(x=st.floats(min_value=-800.0, max_value=800.0, allow_nan=False))
def test_vexp_matches_numpy_anywhere(x):
    out = np.empty(1)
    _exps(np.array([x]), out)
    with np.errstate(over="ignore"):
        ref = np.exp(x)
    assert out[0] == ref or abs(out[0] - ref) <= np.spacing(ref)


def test_vexp_special_values_follow_c():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.79, -745.14, 709.78, -745.13])
    out = np.empty_like(x)
    _exps(x, out)
    assert out[0] == 1.0 and out[1] == 1.0 and out[2] == np.inf and out[3] == 0.0
    assert np.isnan(out[4]) and out[5] == np.inf and out[6] == 0.0
    assert out[7] == np.exp(709.78) and out[8] == 5e-324


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
def test_a_loop_over_vlog1p_vectorises():
    """The point of the module: packed divisions in the loop's machine code (SSE2 ``divpd``
    or AVX ``vdivpd``), where a loop calling ``math.log1p`` has none."""
    _log1ps(np.ones(64), np.empty(64))
    asm = _log1ps.inspect_asm(_log1ps.signatures[0])
    assert "divpd" in asm


@pytest.mark.parametrize("r", [0.013, 0.5, 2.0, 37.0, 1e4])
def test_nb_small_counts_take_the_log_gamma_terms_as_sums_of_logs(r):
    """unit_loss(NB) for counts up to SMALL_COUNT (log Γ(y + r)/Γ(r) as Σ log(r + t), log y!
    from a table) equals the full negative log-likelihood by scipy's gammaln, and is continuous
    with the log-gamma form above SMALL_COUNT. (At large r the difference of two gammaln
    loses digits: there the reference sums libm's logarithms exactly, ``math.fsum``.)"""
    mu = 3.7
    for y in range(1, K.SMALL_COUNT + 3):
        got = K.unit_loss(K.NB, float(y), mu, r, 1.5)
        lg = (gammaln(y + r) - gammaln(r) if r < 100
              else math.fsum(math.log(r + t) for t in range(y)))
        ref = (-lg + gammaln(y + 1.0) - r * np.log(r / (r + mu)) - y * np.log(mu / (r + mu)))
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-11)
