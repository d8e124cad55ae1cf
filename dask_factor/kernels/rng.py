"""Random streams that must match RcppML bit for bit (docs/concepts.md).

* :func:`r_runif` — R's ``set.seed(s); runif(n)`` (Mersenne-Twister, R's seed scrambling).
* :func:`splitmix64_uniform` — RcppML's SplitMix64 uniform fill.
* :func:`splitmix64_mix` — the SplitMix64 finalizer, the hash behind the speckled CV mask.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_U32 = 0xFFFFFFFF
_I2_32M1 = 2.328306437080797e-10  # R's 1 / (2^32 - 1)


def r_mt_state(seed: int) -> np.ndarray:
    """The 624-word Mersenne-Twister state R builds for ``set.seed(seed)`` (default kinds).

    R scrambles the seed with 50 rounds of ``x ← 69069·x + 1 (mod 2³²)``, then fills 625 words with
    the same recurrence; the first becomes the position (``mti = 624``), the rest the state.
    """
    x = int(seed) & _U32
    for _ in range(50):
        x = (69069 * x + 1) & _U32
    words = np.empty(625, dtype=np.uint32)
    for j in range(625):
        x = (69069 * x + 1) & _U32
        words[j] = x
    return words[1:]


def r_runif(seed: int, n: int) -> np.ndarray:
    """``set.seed(seed); runif(n)`` exactly as R computes it, as float64.

    Parameters
    ----------
    seed : int
        R's integer seed (negative values wrap as in R).
    n : int
        Number of uniforms.

    Returns
    -------
    u : ndarray of float64, shape (n,)

    Examples
    --------
    >>> r_runif(42, 3).round(7)   # R: set.seed(42); runif(3)
    array([0.914806 , 0.9370754, 0.2861395])
    """
    bg = np.random.MT19937(0)
    bg.state = {"bit_generator": "MT19937", "state": {"key": r_mt_state(seed), "pos": 624}}
    raw = bg.random_raw(int(n)).astype(np.float64)
    u = raw * 2.3283064365386963e-10
    # R's fixup: keep the value strictly inside (0, 1)
    u[u <= 0.0] = 0.5 * _I2_32M1
    u[1.0 - u <= 0.0] = 1.0 - 0.5 * _I2_32M1
    return u


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(nogil=True, cache=True, fastmath=False)
def splitmix64_mix(z):
    """SplitMix64 finalizer of a uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, cache=True, fastmath=False)
def splitmix64_uniform(seed, n):
    """RcppML's SplitMix64 uniform stream: state starts at ``seed`` (0 → 12345).

    Each draw adds the golden-ratio increment, mixes, and divides by 2⁶⁴−1.
    """
    state = np.uint64(seed)
    if state == np.uint64(0):
        state = np.uint64(12345)
    out = np.empty(n, dtype=np.float64)
    denom = np.float64(18446744073709551615.0)
    for i in range(n):
        state = state + np.uint64(0x9E3779B97F4A7C15)
        out[i] = np.float64(splitmix64_mix(state)) / denom
    return out
