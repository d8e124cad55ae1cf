"""Fixed-width float64 vectors for numba kernels: a row of ``b`` values as one SIMD value.

Numba leaves LLVM's SLP vectoriser off (it miscompiled some code, numba issue #8705), so a loop
over the ``b`` columns of a row stays scalar code even when ``b`` is a compile-time constant.
These intrinsics give a kernel the vector operations directly: ``vload`` reads row ``i`` of a
C-contiguous 2-D float64 array as an LLVM ``<b x double>``, ``vmuladd``/``vaxpy_row`` multiply and
add it lane by lane, ``vstore`` writes it back. Each lane is rounded exactly as the scalar
statement ``acc[f] += a * x[f]`` would be (a product, then a sum: no fused multiply-add, no
reassociation), so the results are the scalar loop's to the bit on every CPU; LLVM maps the
vector to whatever registers the CPU has (AVX-512, AVX2, SSE2, NEON).

The width is the literal integer given to :func:`vload`/:func:`vsplat` (it must be a constant in
the kernel's source). Arrays must be C-contiguous with at least ``b`` columns; rows are read
without bounds checks, like numba's own indexing.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types

# numba.core.cgutils: numba's helpers for array element pointers, the ones numba's own extension
# examples use (no public equivalent); confined to this module
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

__all__ = ["F64Vec", "vload", "vstore", "vsplat", "vmuladd", "vaxpy_row"]


class F64Vec(types.Type):
    """A vector of ``width`` float64 lanes (an LLVM ``<width x double>``)."""

    def __init__(self, width: int):
        self.width = int(width)
        super().__init__(name=f"F64Vec({self.width})")


@register_model(F64Vec)
class _F64VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.DoubleType(), fe_type.width))


def _check_matrix(X, what: str) -> None:
    if not (isinstance(X, types.Array) and X.ndim == 2 and X.dtype == types.float64
            and X.layout == "C"):
        raise TypeError(f"{what}: expected a C-contiguous 2-D float64 array, got {X}")


def _row_pointer(context, builder, arrty, arr, i, width: int):
    """Pointer to ``X[i, 0]`` as a ``<width x double>*`` (no wraparound, no bounds check)."""
    ary = context.make_array(arrty)(context, builder, arr)
    ptr = cgutils.get_item_pointer2(context, builder, data=ary.data,
                                    shape=cgutils.unpack_tuple(builder, ary.shape),
                                    strides=cgutils.unpack_tuple(builder, ary.strides),
                                    layout=arrty.layout, inds=[i, ir.Constant(i.type, 0)],
                                    wraparound=False)
    return builder.bitcast(ptr, ir.VectorType(ir.DoubleType(), width).as_pointer())


def _splat(builder, x, width: int):
    vec = ir.Constant(ir.VectorType(ir.DoubleType(), width), ir.Undefined)
    for f in range(width):
        vec = builder.insert_element(vec, x, ir.Constant(ir.IntType(32), f))
    return vec


@intrinsic(prefer_literal=True)
def vload(typingctx, X, i, width):
    """Row ``i`` of ``X`` (``X[i, :width]``) as a vector; ``width`` a literal int."""
    _check_matrix(X, "vload")
    if not isinstance(width, types.IntegerLiteral) or not isinstance(i, types.Integer):
        return None  # numba then reports the call it could not type
    w = int(width.literal_value)

    def codegen(context, builder, sig, args):
        ptr = _row_pointer(context, builder, sig.args[0], args[0], args[1], w)
        return builder.load(ptr, align=8)

    return F64Vec(w)(X, i, width), codegen


@intrinsic
def vstore(typingctx, X, i, v):
    """``X[i, :width] = v``."""
    _check_matrix(X, "vstore")
    if not isinstance(v, F64Vec) or not isinstance(i, types.Integer):
        raise TypeError("vstore(X, i, v): i an integer, v a vector")

    def codegen(context, builder, sig, args):
        ptr = _row_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[2].width)
        builder.store(args[2], ptr, align=8)
        return context.get_dummy_value()

    return types.void(X, i, v), codegen


@intrinsic(prefer_literal=True)
def vsplat(typingctx, x, width):
    """A vector of ``width`` copies of the float ``x``; ``width`` a literal int."""
    if not isinstance(width, types.IntegerLiteral) or not isinstance(x, types.Number):
        return None
    w = int(width.literal_value)

    def codegen(context, builder, sig, args):
        x64 = context.cast(builder, args[0], sig.args[0], types.float64)
        return _splat(builder, x64, w)

    return F64Vec(w)(x, width), codegen


@intrinsic
def vmuladd(typingctx, acc, a, v):
    """``acc + a * v`` lane by lane (the product rounded, then the sum)."""
    if not (isinstance(acc, F64Vec) and isinstance(v, F64Vec) and acc.width == v.width):
        raise TypeError("vmuladd(acc, a, v): two vectors of the same width and a float")

    def codegen(context, builder, sig, args):
        a64 = context.cast(builder, args[1], sig.args[1], types.float64)
        prod = builder.fmul(_splat(builder, a64, sig.args[0].width), args[2])
        return builder.fadd(args[0], prod)

    return acc(acc, a, v), codegen


@intrinsic
def vaxpy_row(typingctx, Z, i, a, v):
    """``Z[i, :width] += a * v`` (the product rounded, then the sum)."""
    _check_matrix(Z, "vaxpy_row")
    if not isinstance(v, F64Vec) or not isinstance(i, types.Integer):
        raise TypeError("vaxpy_row(Z, i, a, v): i an integer, a a float, v a vector")

    def codegen(context, builder, sig, args):
        w = sig.args[3].width
        ptr = _row_pointer(context, builder, sig.args[0], args[0], args[1], w)
        a64 = context.cast(builder, args[2], sig.args[2], types.float64)
        prod = builder.fmul(_splat(builder, a64, w), args[3])
        builder.store(builder.fadd(builder.load(ptr, align=8), prod), ptr, align=8)
        return context.get_dummy_value()

    return types.void(Z, i, a, v), codegen
