"""Logarithms and the exponential a numba loop can vectorise: :func:`vlog`, :func:`vlog1p` and
:func:`vexp`.

``math.log``/``math.log1p``/``math.exp`` are calls into the C library, so a loop that takes one
per entry (the count-data losses take one or two per stored entry, NB one per zero entry, zero
inflation an exponential and a logarithm per zero entry) runs one value at a time. These are
written out in plain arithmetic on the float's bits, with no branch and no call, so LLVM
vectorises the loops they are inlined into (four values per instruction in the 256-bit
registers LLVM prefers on x86-64).

**Accuracy.** The reduction is exact (``x = 2ᵏ·m``, √½ ≤ m < √2) and the polynomial is the
classic one of 4.4BSD/fdlibm's ``log`` (Sun Microsystems, freely redistributable): within 1 ulp
of the correctly rounded logarithm (tests/kernels/test_vmath.py measures it against numpy over
the whole positive range). ``vlog1p(z) = log(1 + z)`` carries the rounding of ``1 + z`` as a
first-order correction, so small ``z`` keep their full relative precision. ``vexp`` reduces
``x = k·ln 2 + r`` as fdlibm's ``exp`` does and uses its rational approximation of e^r: within
1 ulp of numpy's down to the subnormals (the same tests). Special values follow
C: ``log(0) = −inf``, ``log(x < 0) = nan``, ``log(inf) = inf``, nan stays nan; subnormals are
scaled first.

All three are compiled once with their own flags (products may contract into fused multiply-adds;
nothing is reassociated) and are small enough for LLVM to inline them into the calling loop,
which keeps those flags: every caller gets the same bits, on every machine with the same
instruction set. (Numba-level inlining, ``inline="always"``, gave no faster code and made every
kernel that uses them take longer to compile.)
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["vexp", "vlog", "vlog1p"]


@intrinsic
def _bits(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (a register move, no memory)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """The float64 whose IEEE-754 bits are the int64 ``b``."""
    if b != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# The constants and the shape of the reduction follow fdlibm's e_log.c, whose notice reads:
#   Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
#   Developed at SunSoft, a Sun Microsystems, Inc. business.
#   Permission to use, copy, modify, and distribute this software is freely granted,
#   provided that this notice is preserved.
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: k·_LN2_HI is exact for |k| < 2¹¹
_LN2_LO = 1.90821492927058770002e-10  # ln 2 − _LN2_HI
_LG1 = 6.666666666666735130e-01  # the fdlibm minimax coefficients of
_LG2 = 3.999999999940941908e-01  # (log(1+f) − 2s)/s − ... in s² (s = f/(2 + f))
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT2 = 1.4142135623730951
_TWO54 = 18014398509481984.0
_MIN_NORMAL = 2.2250738585072014e-308
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE = 0x3FF0000000000000
_INF = float("inf")
_NAN = float("nan")


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def vlog(x):
    """``log(x)`` of a float64, within 1 ulp, in branch-free arithmetic (vectorises).

    Examples
    --------
    >>> import math
    >>> vlog(10.0) == math.log(10.0), vlog(0.0), vlog(1.0)
    (True, -inf, 0.0)
    """
    sub = x < _MIN_NORMAL
    xs = x * _TWO54 if sub else x
    b = _bits(xs)
    k = (b >> 52) - (1023 + 54 if sub else 1023)
    m = _from_bits((b & _MANTISSA) | _ONE)  # 1 ≤ m < 2
    big = m > _SQRT2
    m = m * 0.5 if big else m  # exact
    k = k + 1 if big else k
    f = m - 1.0  # exact (Sterbenz): −0.29 < f ≤ 0.41
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    dk = float(k)
    out = dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    if x > 0.0 and x < _INF:
        return out
    if x == 0.0:
        return -_INF
    if x == _INF:
        return _INF
    return _NAN  # x < 0 or nan


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def vlog1p(z):
    """``log(1 + z)`` of a float64 (z ≥ −1), within a few ulp, in branch-free arithmetic.

    ``u = 1 + z`` is rounded; ``log(1 + z) = log(u) + (z − (u − 1))/u`` to first order, which
    restores the bits the rounding lost (for small z the result keeps z's relative precision).

    Examples
    --------
    >>> import math
    >>> abs(vlog1p(1e-12) - math.log1p(1e-12)) < 1e-27, vlog1p(0.0), vlog1p(-1.0)
    (True, 0.0, -inf)
    """
    u = 1.0 + z
    c = (z - (u - 1.0)) / (u if u > 0.0 else 1.0)  # (never a division by zero)
    out = vlog(u)
    if u < _INF and u > 0.0:
        return out + c
    return out


# The constants and the shape of the reduction follow fdlibm's e_exp.c (the notice above)
_INVLN2 = 1.44269504088896338700e+00
_EP1 = 1.66666666666666019037e-01  # the fdlibm minimax coefficients of
_EP2 = -2.77777777770155933842e-03  # r·(e^r + 1)/(e^r − 1) in r²
_EP3 = 6.61375632143793436117e-05
_EP4 = -1.65339022054652515390e-06
_EP5 = 4.13813679705723846039e-08
_EXP_MAX = 7.09782712893383973096e+02  # above: e^x overflows
_EXP_MIN = -7.45133219101941108420e+02  # below: e^x rounds to 0
_ROUND = 6755399441055744.0  # 1.5·2⁵²: adding it rounds a float below 2⁵¹ to an integer


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def vexp(x):
    """``exp(x)`` of a float64, within 1 ulp, in branch-free arithmetic (vectorises).

    ``x = k·ln 2 + r`` with ``|r| ≤ ½ ln 2`` (k rounded by adding 1.5·2⁵², no float-to-int
    conversion), e^r from fdlibm's rational approximation, and ``2ᵏ`` applied as two powers of
    two built from their bits (so results down to the subnormals round once).

    Examples
    --------
    >>> import math
    >>> abs(vexp(1.0) - math.e) <= math.ulp(math.e), vexp(0.0), vexp(-800.0), vexp(800.0)
    (True, 1.0, 0.0, inf)
    """
    xc = min(max(x, -746.0), 710.0)  # keeps k in range; the ends are selected below
    kf = (xc * _INVLN2 + _ROUND) - _ROUND
    hi = xc - kf * _LN2_HI  # exact: |k| < 2¹¹
    lo = kf * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_EP1 + t * (_EP2 + t * (_EP3 + t * (_EP4 + t * _EP5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    k1 = math.floor(0.5 * kf)  # 2ᵏ = 2^k1 · 2^k2, both normal for every k used here
    k2 = kf - k1
    s1 = _from_bits((_bits(k1 + _ROUND) - _bits(_ROUND) + 1023) << 52)
    s2 = _from_bits((_bits(k2 + _ROUND) - _bits(_ROUND) + 1023) << 52)
    out = (y * s1) * s2
    if x > _EXP_MAX:
        return _INF
    if x < _EXP_MIN:
        return 0.0
    if x != x:
        return _NAN
    return out
