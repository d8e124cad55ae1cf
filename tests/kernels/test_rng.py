"""Random streams that must match RcppML bit for bit (docs/concepts.md).

``r_runif`` is checked against values printed by R itself, and for arbitrary seeds against an
independent implementation: R's seed scrambling written out from the spec, drawn with CPython's own
Mersenne-Twister (``random.Random``). SplitMix64 is checked against the published test vector and a
pure-Python implementation.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.kernels.rng import r_mt_state, r_runif, splitmix64_mix, splitmix64_uniform
from dask_factor.nmf import initial_w

U64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15

# values printed by R (default RNG kinds). set.seed(1) is given to 17 digits (R 4.3.3, %.17g); the
# issue's "0.3721238966" for its second draw is a transposition of R's 0.37212389963679016.
R_VALUES = {
    42: [0.914806043496355, 0.937075413297862, 0.286139534786344, 0.830447626067325,
         0.641745518893003],
    1: [0.26550866314209998, 0.37212389963679016, 0.57285336335189641],
    123: [0.2875775201, 0.7883051354],
}
R_DIGITS_ATOL = {42: 6e-16, 1: 0.0, 123: 6e-11}


@pytest.mark.parametrize("seed", sorted(R_VALUES))
def test_r_runif_matches_r(seed):
    want = np.array(R_VALUES[seed])
    got = r_runif(seed, want.size)
    assert got.dtype == np.float64 and got.shape == want.shape
    # to the digits R printed (exactly, where R printed all 17)
    np.testing.assert_allclose(got, want, rtol=0, atol=R_DIGITS_ATOL[seed])


def _r_runif_reference(seed: int, n: int) -> list[float]:
    """R's ``set.seed(seed); runif(n)`` (R's Mersenne-Twister seeding recipe)."""
    x = seed & 0xFFFFFFFF
    for _ in range(50):
        x = (69069 * x + 1) & 0xFFFFFFFF
    words = []
    for _ in range(625):
        x = (69069 * x + 1) & 0xFFFFFFFF
        words.append(x)
    gen = random.Random()
    gen.setstate((3, tuple(words[1:]) + (624,), None))  # CPython's MT19937, mti = 624
    out = []
    for _ in range(n):
        u = gen.getrandbits(32) * 2.3283064365386963e-10
        if u <= 0.0:
            u = 0.5 * 2.328306437080797e-10
        if 1.0 - u <= 0.0:
            u = 1.0 - 0.5 * 2.328306437080797e-10
        out.append(u)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**31) + 1, 2**31 - 1), st.integers(1, 700))
def test_r_runif_equals_an_independent_mersenne_twister(seed, n):
    """Crosses the 624-word refill at n > 624."""
    got = r_runif(seed, n)
    assert np.array_equal(got, np.array(_r_runif_reference(seed, n)))
    assert np.all((got > 0) & (got < 1))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 50), st.integers(1, 50))
def test_r_runif_is_a_prefix_stream(seed, a, b):
    assert np.array_equal(r_runif(seed, a + b)[:a], r_runif(seed, a))


def test_r_mt_state_shape():
    state = r_mt_state(42)
    assert state.shape == (624,) and state.dtype == np.uint32
    assert np.array_equal(state, r_mt_state(42))
    assert not np.array_equal(state, r_mt_state(43))


def test_initial_w_rcppml_is_r_runif_filled_column_major():
    """``set.seed(s); matrix(runif(m*k), m, k)``: the first column is the first m draws."""
    m, k = 7, 3
    W = initial_w(m, k, 42, "rcppml")
    u = r_runif(42, m * k)
    assert W.shape == (m, k)
    np.testing.assert_array_equal(W[:, 0], u[:m])
    np.testing.assert_array_equal(W, u.reshape(k, m).T)
    np.testing.assert_allclose(initial_w(5, 1, 42, "rcppml")[:, 0], R_VALUES[42], atol=6e-16)


def test_initial_w_numpy_is_seeded_and_uniform():
    a = initial_w(50, 4, 3, "numpy")
    assert a.shape == (50, 4)
    assert np.array_equal(a, initial_w(50, 4, 3, "numpy"))
    assert not np.array_equal(a, initial_w(50, 4, 4, "numpy"))
    assert np.all((a >= 0) & (a < 1))


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & U64
    return z ^ (z >> 31)


def test_splitmix64_published_test_vector():
    """Vigna's splitmix64.c with seed 1234567: the first five 64-bit outputs."""
    want = [6457827717110365317, 3203168211198807973, 9817491932198370423,
            4593380528125082431, 16408922859458223821]
    got = [int(splitmix64_mix(np.uint64((1234567 + (i + 1) * GOLDEN) & U64))) for i in range(5)]
    assert got == want
    assert int(splitmix64_mix(np.uint64(GOLDEN))) == 0xE220A8397B1DCDAF  # seed 0, first output


@settings(max_examples=60, deadline=None)
@given(st.integers(1, U64), st.integers(1, 40))
def test_splitmix64_uniform_equals_a_python_reference(seed, n):
    got = splitmix64_uniform(np.uint64(seed), n)
    state = seed
    want = []
    for _ in range(n):
        state = (state + GOLDEN) & U64
        want.append(float(_mix(state)) / float(U64))
    np.testing.assert_array_equal(got, np.array(want))
    assert np.all((got >= 0) & (got <= 1))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(1, 100))
def test_splitmix64_is_deterministic_and_prefix_stable(seed, n):
    a = splitmix64_uniform(np.uint64(seed), n)
    assert np.array_equal(a, splitmix64_uniform(np.uint64(seed), n))
    assert np.array_equal(splitmix64_uniform(np.uint64(seed), n + 5)[:n], a)


def test_splitmix64_seed_zero_means_12345():
    assert np.array_equal(splitmix64_uniform(np.uint64(0), 8),
                          splitmix64_uniform(np.uint64(12345), 8))
