"""Vectorisable elementary functions for the numba CPU target.

Why this module exists: numba's ``math.exp`` / ``math.log`` / ``math.sin`` lower to
calls into libm, and LLVM cannot vectorise a loop that contains such calls unless
llvmlite is built against Intel SVML (the PyPI wheels are not).  A Langevin step on
a Gaussian mixture is exp-bound (six exponentials per particle plus one log and one
sin/cos pair for the Box-Muller noise), so scalar libm calls cap it at about
1.5e7 particle-steps/s on two cores.  The functions below use only +, *, /, floor,
sqrt and integer bit casts, so the loop vectoriser turns a per-particle loop into
AVX2/AVX-512 code.

Accuracy (measured in ``tests/test_vmath.py`` against numpy on 10^6 points):
float64 versions within 2-3 ulp (relative 5e-16), float32 versions within a few
float32 ulp.  They are pure IEEE arithmetic (no FMA contraction: numba does not
enable fast-math here), so the vector body and the scalar remainder of a loop give
bitwise-identical results, which keeps results independent of thread count.

The CUDA target does not use this module: on a GPU ``math.exp`` etc. are fast
hardware/libdevice functions (see ``kernels/_jit.py``).

Domains: ``exp*`` clamps its argument to the normal range (it is used for softmax
weights ``exp(l - max l)`` and never for values below 1e-300); ``log*`` needs a
positive normal argument; ``sincos2pi*`` takes any finite u and returns
``(sin 2 pi u, cos 2 pi u)`` (exact range reduction since u is given in turns).
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

_DEVICE = dict(inline="always", error_model="numpy", _nrt=False)


def _bitcast(src, dst, llvm_type):
    """An intrinsic reinterpreting the bits of a ``src`` scalar as ``dst``."""
    @intrinsic
    def cast(typingctx, v):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], llvm_type)
        return dst(src), codegen
    return cast


_i64_as_f64 = _bitcast(types.int64, types.float64, ir.DoubleType())
_f64_as_i64 = _bitcast(types.float64, types.int64, ir.IntType(64))
_i32_as_f32 = _bitcast(types.int32, types.float32, ir.FloatType())
_f32_as_i32 = _bitcast(types.float32, types.int32, ir.IntType(32))


# ----------------------------------------------------------------- float64
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01   # Cody-Waite split of ln 2 (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951


@njit(**_DEVICE)
def exp64(x):
    """exp(x) for float64; Taylor degree 13 on |r| <= ln2/2 after x = n ln2 + r."""
    x = min(max(x, -708.0), 709.0)
    n = math.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _i64_as_f64((np.int64(n) + 1023) << 52)


@njit(**_DEVICE)
def log64(x):
    """log(x) for positive normal float64: x = 2^e m, m in [sqrt2/2, sqrt2),
    log m = 2 atanh(f), f = (m-1)/(m+1), |f| <= 0.1716 (series to f^23)."""
    b = _f64_as_i64(x)
    e = ((b >> 52) & 0x7FF) - 1023
    m = _i64_as_f64((b & 0xFFFFFFFFFFFFF) | (1023 << 52))
    big = np.int64(m > _SQRT2)
    m = m * (1.0 - 0.5 * np.float64(big))
    e = e + big
    f = (m - 1.0) / (m + 1.0)
    s = f * f
    p = 1.0 / 23.0
    p = p * s + 1.0 / 21.0
    p = p * s + 1.0 / 19.0
    p = p * s + 1.0 / 17.0
    p = p * s + 1.0 / 15.0
    p = p * s + 1.0 / 13.0
    p = p * s + 1.0 / 11.0
    p = p * s + 1.0 / 9.0
    p = p * s + 1.0 / 7.0
    p = p * s + 1.0 / 5.0
    p = p * s + 1.0 / 3.0
    p = p * s + 1.0
    fe = np.float64(e)
    return fe * _LN2_HI + (2.0 * f * p + fe * _LN2_LO)


@njit(**_DEVICE)
def sincos2pi64(u):
    """(sin 2 pi u, cos 2 pi u): quarter-turn reduction, Taylor to a^15 / a^16."""
    t = 4.0 * u
    q = math.floor(t + 0.5)
    a = (t - q) * (math.pi / 2)
    a2 = a * a
    s = -1.0 / 1307674368000.0
    s = s * a2 + 1.0 / 6227020800.0
    s = s * a2 - 1.0 / 39916800.0
    s = s * a2 + 1.0 / 362880.0
    s = s * a2 - 1.0 / 5040.0
    s = s * a2 + 1.0 / 120.0
    s = s * a2 - 1.0 / 6.0
    s = a + a * a2 * s
    c = 1.0 / 20922789888000.0
    c = c * a2 - 1.0 / 87178291200.0
    c = c * a2 + 1.0 / 479001600.0
    c = c * a2 - 1.0 / 3628800.0
    c = c * a2 + 1.0 / 40320.0
    c = c * a2 - 1.0 / 720.0
    c = c * a2 + 1.0 / 24.0
    c = c * a2 - 0.5
    c = 1.0 + a2 * c
    qi = np.int64(q)
    swap = (qi & 1) == 1
    ss = c if swap else s
    cc = s if swap else c
    ss = -ss if ((qi >> 1) & 1) == 1 else ss
    cc = -cc if (((qi + 1) >> 1) & 1) == 1 else cc
    return ss, cc


# ----------------------------------------------------------------- float32
_f32 = np.float32
_LOG2E32 = _f32(_LOG2E)
_LN2H32 = _f32(0.693359375)
_LN2L32 = _f32(-2.12194440e-4)
_SQRT2_32 = _f32(_SQRT2)
_LN2_32 = _f32(0.6931471805599453)
_HALFPI32 = _f32(math.pi / 2)


@njit(**_DEVICE)
def exp32(x):
    """exp(x) for float32; Taylor degree 7 on |r| <= ln2/2."""
    x = min(max(x, _f32(-87.0)), _f32(88.0))
    n = math.floor(x * _LOG2E32 + _f32(0.5))
    fn = _f32(n)
    r = (x - fn * _LN2H32) - fn * _LN2L32
    p = _f32(1 / 5040.)
    p = p * r + _f32(1 / 720.)
    p = p * r + _f32(1 / 120.)
    p = p * r + _f32(1 / 24.)
    p = p * r + _f32(1 / 6.)
    p = p * r + _f32(0.5)
    p = p * r + _f32(1.0)
    p = p * r + _f32(1.0)
    return p * _i32_as_f32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


@njit(**_DEVICE)
def log32(x):
    """log(x) for positive normal float32 (atanh series to f^11)."""
    b = _f32_as_i32(x)
    e = ((b >> np.int32(23)) & np.int32(0xFF)) - np.int32(127)
    m = _i32_as_f32((b & np.int32(0x7FFFFF)) | np.int32(127 << 23))
    big = np.int32(m > _SQRT2_32)
    m = m * (_f32(1.0) - _f32(0.5) * _f32(big))
    e = e + big
    f = (m - _f32(1.0)) / (m + _f32(1.0))
    s = f * f
    p = _f32(1 / 11.)
    p = p * s + _f32(1 / 9.)
    p = p * s + _f32(1 / 7.)
    p = p * s + _f32(1 / 5.)
    p = p * s + _f32(1 / 3.)
    p = p * s + _f32(1.0)
    return _f32(e) * _LN2_32 + _f32(2.0) * f * p


@njit(**_DEVICE)
def sincos2pi32(u):
    """(sin 2 pi u, cos 2 pi u) in float32 (Taylor to a^9 / a^10)."""
    t = _f32(4.0) * u
    q = math.floor(t + _f32(0.5))
    a = (t - _f32(q)) * _HALFPI32
    a2 = a * a
    s = _f32(1 / 362880.)
    s = s * a2 - _f32(1 / 5040.)
    s = s * a2 + _f32(1 / 120.)
    s = s * a2 - _f32(1 / 6.)
    s = a + a * a2 * s
    c = _f32(-1 / 3628800.)
    c = c * a2 + _f32(1 / 40320.)
    c = c * a2 - _f32(1 / 720.)
    c = c * a2 + _f32(1 / 24.)
    c = c * a2 - _f32(0.5)
    c = _f32(1.0) + a2 * c
    qi = np.int64(q)
    swap = (qi & 1) == 1
    ss = c if swap else s
    cc = s if swap else c
    ss = -ss if ((qi >> 1) & 1) == 1 else ss
    cc = -cc if (((qi + 1) >> 1) & 1) == 1 else cc
    return ss, cc
