"""Logarithms a numba loop can vectorise: :func:`vlog` and :func:`vlog1p`.

``math.log``/``math.log1p`` are calls into the C library, so a loop that takes one per entry (the
count-data losses take one or two per stored entry, NB one per zero entry) runs one value at a
time. These are written out in plain arithmetic on the float's bits, with no branch and no call,
so LLVM vectorises the loops they are inlined into (four values per instruction in the 256-bit
registers LLVM prefers on x86-64).

**Accuracy.** The reduction is exact (``x = 2ᵏ·m``, √½ ≤ m < √2) and the polynomial is the
classic one of 4.4BSD/fdlibm's ``log`` (Sun Microsystems, freely redistributable): within 1 ulp
of the correctly rounded logarithm (tests/kernels/test_vmath.py measures it against numpy over
the whole positive range). ``vlog1p(z) = log(1 + z)`` carries the rounding of ``1 + z`` as a
first-order correction, so small ``z`` keep their full relative precision. Special values follow
C: ``log(0) = −inf``, ``log(x < 0) = nan``, ``log(inf) = inf``, nan stays nan; subnormals are
scaled first.

Both are compiled once with their own flags (products may contract into fused multiply-adds;
nothing is reassociated) and are small enough for LLVM to inline them into the calling loop,
which keeps those flags: every caller gets the same bits, on every machine with the same
instruction set. (Numba-level inlining, ``inline="always"``, gave no faster code and made every
kernel that uses them take longer to compile.)
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["vlog", "vlog1p"]


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
