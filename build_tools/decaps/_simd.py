"""Vector helpers for the line-of-sight sampler, written as numba intrinsics (LLVM IR).

The sampler stores star images as IEEE half floats (uint16 bit patterns) in rows of whole
groups of :data:`LANES` stars (see :class:`.sampler.PackedPixel`). These helpers read such
rows eight stars at a time: one half-to-single conversion (``vcvtph2ps`` on x86 with F16C)
per eight values, no scalar remainder, and no run-time overlap test between the rows read
and the differences written (numba's own loops cannot tell the two arrays apart and test
for overlap on every call, which costs more than the few vectors of a typical row).

Callers guarantee the bounds: every index range ``[start, start + 8 * n_vectors)`` lies
inside its array. Nothing is checked here; the sampler's packing makes it so.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Stars per vector: eight single floats fill one 256-bit register.
LANES = 8

_F32x8 = ir.VectorType(ir.FloatType(), LANES)
_F16x8 = ir.VectorType(ir.HalfType(), LANES)
_I64 = ir.IntType(64)


def _as_int64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _row_types_ok(diff, data) -> bool:
    return (isinstance(diff, types.Array) and diff.dtype == types.float32
            and isinstance(data, types.Array) and data.dtype == types.uint16)


def _row_difference_codegen(accumulate: bool):
    def codegen(context, builder, signature, args):
        diff_ty, _, data_ty, _, _, _ = signature.args
        diff = context.make_array(diff_ty)(context, builder, args[0])
        data = context.make_array(data_ty)(context, builder, args[2])
        start, new_row, old_row, n_vec = (
            _as_int64(context, builder, args[i], signature.args[i]) for i in (1, 3, 4, 5))
        with cgutils.for_range(builder, n_vec) as loop:
            step = builder.mul(loop.index, ir.Constant(_I64, LANES))
            p_diff = builder.bitcast(builder.gep(diff.data, [builder.add(start, step)]),
                                     _F32x8.as_pointer())
            p_new = builder.bitcast(builder.gep(data.data, [builder.add(new_row, step)]),
                                    _F16x8.as_pointer())
            p_old = builder.bitcast(builder.gep(data.data, [builder.add(old_row, step)]),
                                    _F16x8.as_pointer())
            v_new = builder.fpext(builder.load(p_new, align=2), _F32x8)
            v_old = builder.fpext(builder.load(p_old, align=2), _F32x8)
            change = builder.fsub(v_new, v_old)
            if accumulate:
                change = builder.fadd(builder.load(p_diff, align=4), change)
            builder.store(change, p_diff, align=4)
        return context.get_dummy_value()
    return codegen


@intrinsic
def add_row_difference(typingctx, diff, start, data, new_row, old_row, n_vectors):
    """``diff[start + i] += half(data[new_row + i]) - half(data[old_row + i])``.

    For ``i < 8 * n_vectors``; ``diff`` is float32, ``data`` uint16 holding half floats.
    """
    if not _row_types_ok(diff, data):
        return None
    return (types.void(diff, start, data, new_row, old_row, n_vectors),
            _row_difference_codegen(accumulate=True))


@intrinsic
def set_row_difference(typingctx, diff, start, data, new_row, old_row, n_vectors):
    """``diff[start + i] = half(data[new_row + i]) - half(data[old_row + i])``."""
    if not _row_types_ok(diff, data):
        return None
    return (types.void(diff, start, data, new_row, old_row, n_vectors),
            _row_difference_codegen(accumulate=False))


@intrinsic
def half_to_float(typingctx, data, index):
    """``data[index]`` (uint16 bits of a half float) as a float32."""
    if not (isinstance(data, types.Array) and data.dtype == types.uint16):
        return None

    def codegen(context, builder, signature, args):
        data_ty, index_ty = signature.args
        arr = context.make_array(data_ty)(context, builder, args[0])
        i = _as_int64(context, builder, args[1], index_ty)
        bits = builder.load(builder.gep(arr.data, [i]))
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), ir.FloatType())
    return types.float32(data, index), codegen


def _prefetch_intrinsic(name: str, locality: int, doc: str):
    def prefetch_typer(typingctx, data, index):
        if not isinstance(data, types.Array):
            return None

        def codegen(context, builder, signature, args):
            data_ty, index_ty = signature.args
            arr = context.make_array(data_ty)(context, builder, args[0])
            ptr = builder.gep(arr.data, [_as_int64(context, builder, args[1], index_ty)])
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                "llvm.prefetch.p0")
            # read access, the given temporal locality, data cache
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, locality),
                              ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return types.void(data, index), codegen
    prefetch_typer.__doc__ = doc
    prefetch_typer.__name__ = prefetch_typer.__qualname__ = name
    return intrinsic(prefetch_typer)


prefetch = _prefetch_intrinsic(
    "prefetch", 3, "Hint the processor to bring ``data[index]``'s cache line in (no effect on results).")
prefetch_once = _prefetch_intrinsic(
    "prefetch_once", 0, "Like :func:`prefetch`, for a line read once: the hint asks the processor not to let "
       "it displace lines in use (x86 ``prefetchnta``).")
