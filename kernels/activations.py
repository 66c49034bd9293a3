"""Fused bias + activation for dense layers on the CPU (numba).

One pass over the GEMM output z [n, k]: z <- sigma(z + b) in place and d1 <- sigma'(z + b),
instead of numpy's ~5 passes with temporaries.  Deliberately single-threaded: between
OpenBLAS GEMMs a numba thread pool and OpenBLAS's spinning workers fight over the 2
cores (measured: a ``parallel=True`` version made the MLP step 4-15x slower).  Activation codes:
0 tanh, 1 relu, 2 leaky_relu(alpha), 3 softplus, 4 silu.  tanh and the logistic use the
vectorisable exp of ``vmath`` (2-3 ulp); checked against numpy in tests.
"""
import numba
import numpy as np

from . import vmath

CODES = {"tanh": 0, "relu": 1, "leaky_relu": 2, "softplus": 3, "silu": 4}


def _make(exp, log, fl):
    one = fl(1)
    zero = fl(0)

    @numba.njit(inline="always", error_model="numpy")
    def act(code, alpha, v):
        if code == 0:
            e = exp(-(abs(v) + abs(v)))
            t = (one - e) / (one + e)
            t = t if v >= zero else -t
            return t, one - t * t
        if code == 1:
            return (v, one) if v > zero else (zero, zero)
        if code == 2:
            return (v, one) if v > zero else (alpha * v, alpha)
        e = exp(-abs(v))
        s = one / (one + e) if v >= zero else e / (one + e)
        if code == 3:
            return max(v, zero) + log(one + e), s
        return v * s, s + v * s * (one - s)

    @numba.njit(error_model="numpy")
    def bias_activation(z, b, code, alpha, out, d1):
        n, k = z.shape
        for blk in range((n + 255) // 256):
            for i in range(blk * 256, min(n, blk * 256 + 256)):
                for j in range(k):
                    out[i, j], d1[i, j] = act(code, alpha, z[i, j] + b[j])
    return bias_activation


_K = {}


def bias_activation(z, b, name, alpha, d1, out=None):
    """out <- sigma(z + b), d1 <- sigma'(z + b) (b broadcast over rows).  z, out, d1
    C-contiguous [n, k].  Pass a separate ``out``: with out = z (the default, in place)
    the vectorised loop's alias check fails and it runs scalar, ~8x slower."""
    dt = z.dtype
    if dt not in _K:
        _K[dt] = _make(vmath.exp64, vmath.log64, np.float64) if dt == np.float64 else \
            _make(vmath.exp32, vmath.log32, np.float32)
    out = z if out is None else out
    _K[dt](z, b, CODES[name], dt.type(alpha), out, d1)
    return out, d1
