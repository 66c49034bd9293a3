"""Fused bias + activation for dense layers on the CPU (numba).

One pass over the GEMM output z [n, k]: out <- sigma(z + b) and d1 <- sigma'(z + b),
instead of numpy's ~5 passes with temporaries.  Deliberately single-threaded and
``nogil``: networks run their chunks on a pool of Python threads
(``particleflow/energies/chunks.py``); a numba thread pool between OpenBLAS GEMMs
fights OpenBLAS's spinning workers over the 2 cores (measured: a ``parallel=True``
version made the MLP step 4-15x slower).

One kernel per activation (the activation is a compile-time constant: with a run-time
code the branches stay inside the loop and it does not vectorise), looping over flat
blocks of whole rows with the bias tiled to the block, so the vectorised inner loop is
long (rows of 32 columns alone leave it mostly in its prologue and remainder).
Activations: tanh, relu, leaky_relu(alpha), softplus, silu.  tanh and the logistic use
the vectorisable exp of ``vmath`` (2-3 ulp); checked against numpy in tests.

tanh MLPs on numpy do not use this kernel: they run whole passes in ``kernels/mlp.py``.
"""
import numba
import numpy as np

from . import vmath

CODES = {"tanh": 0, "relu": 1, "leaky_relu": 2, "softplus": 3, "silu": 4}
BLOCK = 2048          # elements per flat block (whole rows; at least one row)


def _make(exp, log, fl, code):
    one = fl(1)
    zero = fl(0)

    @numba.njit(inline="always", error_model="numpy")
    def act(alpha, v):
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

    @numba.njit(error_model="numpy", nogil=True)
    def flat(zf, bt, of, df, m, alpha):
        for q in range(m):
            of[q], df[q] = act(alpha, zf[q] + bt[q])

    @numba.njit(error_model="numpy", nogil=True)
    def bias_activation(z, b, alpha, out, d1):
        n, k = z.shape
        rows = max(1, BLOCK // k)
        bt = np.empty(rows * k, z.dtype)
        for r in range(rows):
            bt[r * k:(r + 1) * k] = b
        zf = z.ravel()
        of = out.ravel()
        df = d1.ravel()
        for r0 in range(0, n, rows):
            flat(zf[r0 * k:], bt, of[r0 * k:], df[r0 * k:], min(rows, n - r0) * k, alpha)
    return bias_activation


_K = {}


def bias_activation(z, b, name, alpha, d1, out=None):
    """out <- sigma(z + b), d1 <- sigma'(z + b) (b broadcast over rows).  z, out, d1
    C-contiguous [n, k].  Pass a separate ``out``: with out = z (the default, in place)
    the vectorised loop's alias check fails and it runs scalar, ~8x slower."""
    dt = z.dtype
    key = (dt, name)
    if key not in _K:
        code = CODES[name]
        _K[key] = _make(vmath.exp64, vmath.log64, np.float64, code) if dt == np.float64 else \
            _make(vmath.exp32, vmath.log32, np.float32, code)
    out = z if out is None else out
    _K[key](z, b, dt.type(alpha), out, d1)
    return out, d1

