"""Elementwise updates of particle positions on the CPU (numba, parallel, one pass).

numpy evaluates ``x - h * g + c * z`` in three passes with two full-size temporaries
(at n = 1e5, d = 64 in float32, 25.6 MB each: 27-29 ms); this kernel is one pass in
fixed blocks.  Same operations in the same order as numpy's (no FMA contraction), so
the result is bitwise numpy's and does not depend on the thread count (tested).
"""
import numba
import numpy as np
from numba import prange

from . import _jit
from ._jit import CPU_BLOCK

BLOCK = 16384
# Adam's pass runs on the calling thread up to this many float32-equivalent elements
# (float64 counts twice): a parallel launch and join of numba's OpenMP threads, which
# wait passively, cost 50-90 us on a 2-core Zen 4 VM, and the pass (three divisions
# and a square root an element) takes ~0.6 ns an element in float32, ~1.6 ns in float64.
# Measured there, 2 threads against 1: 91 / 76 us at 131k float32 elements, 93-102 /
# 99 us at 58k float64; 127 / 150 us at 262k float32, 155 / 206 us at 131k float64.
ADAM_SERIAL_WORK = 196608


@numba.njit(error_model="numpy", _nrt=False)
def _block(x, g, z, h, c, out, m):
    for q in range(m):
        out[q] = x[q] - h * g[q] + c * z[q]


@numba.njit(parallel=True, error_model="numpy")
def _x_minus_hg_plus_cz(x, g, z, h, c, out):
    # blocks are slices starting at 0: a loop starting at an offset gets negative-index
    # wrap-around code from numba, which stops LLVM's vectoriser (kernels/_jit.py)
    n = x.shape[0]
    nb = (n + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s0 = b * BLOCK
        s1 = min(n, s0 + BLOCK)
        _block(x[s0:s1], g[s0:s1], z[s0:s1], h, c, out[s0:s1], s1 - s0)


def langevin_update(x, g, z, h, c, out):
    """out <- x - h g + c z (C-contiguous arrays of one size; h, c cast to x's dtype)."""
    args = (x.reshape(-1), g.reshape(-1), z.reshape(-1), x.dtype.type(h), x.dtype.type(c), out.reshape(-1))
    if x.size <= BLOCK:                    # one block: the calling thread alone, same numbers
        _block(*args, x.size)
    else:
        _x_minus_hg_plus_cz(*args)
    return out


@numba.njit(error_model="numpy", _nrt=False)
def _adam_block(x, g, m, v, b1, omb1, b2, omb2, c1, c2, lr, eps, x_out, m_out, v_out, n):
    for q in range(n):
        mq = b1 * m[q] + omb1 * g[q]
        vq = b2 * v[q] + omb2 * g[q] * g[q]
        m_out[q] = mq
        v_out[q] = vq
        x_out[q] = x[q] - lr * (mq / c1) / (np.sqrt(vq / c2) + eps)


@numba.njit(parallel=True, error_model="numpy")
def _adam(x, g, m, v, b1, omb1, b2, omb2, c1, c2, lr, eps, x_out, m_out, v_out):
    n = x.shape[0]
    nb = (n + BLOCK - 1) // BLOCK
    for b in prange(nb):
        s0 = b * BLOCK
        s1 = min(n, s0 + BLOCK)
        _adam_block(x[s0:s1], g[s0:s1], m[s0:s1], v[s0:s1], b1, omb1, b2, omb2, c1, c2, lr, eps, x_out[s0:s1],
                    m_out[s0:s1], v_out[s0:s1], s1 - s0)


def adam_update(x, g, m, v, b1, b2, c1, c2, lr, eps):
    """One Adam step in one pass: (x', m', v') with m' = b1 m + (1 - b1) g,
    v' = b2 v + (1 - b2) g g, x' = x - lr (m' / c1) / (sqrt(v' / c2) + eps) (c1, c2: the
    bias corrections).  The scalars are cast to x's dtype as numpy's expression casts
    them, and the operations run in numpy's order, so the result is bitwise numpy's."""
    fl = x.dtype.type
    x_out, m_out, v_out = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    args = (x.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), fl(b1), fl(1 - b1), fl(b2), fl(1 - b2),
            fl(c1), fl(c2), fl(lr), fl(eps), x_out.reshape(-1), m_out.reshape(-1), v_out.reshape(-1))
    if x.size * max(1, x.dtype.itemsize // 4) <= ADAM_SERIAL_WORK:   # the calling thread alone, same numbers
        _adam_block(*args, x.size)
    else:
        _adam(*args)
    return x_out, m_out, v_out


@numba.njit(error_model="numpy", _nrt=False)
def _mala_rows(x, g, e, y, gy, ey, z, logu, h, inv4h, g_out, la_out, acc_out, r0, r1):
    d = x.shape[1]
    for i in range(r0, r1):
        back = 0.0
        zz = 0.0
        for j in range(d):
            r = x[i, j] - y[i, j] + h * gy[i, j]
            back += r * r
            zz += z[i, j] * z[i, j]
        la = (np.float64(e[i]) - np.float64(ey[i])) - back * inv4h + 0.5 * zz
        if np.isnan(la):
            la = -np.inf
        la_out[i] = la
        if logu[i] < la_out[i]:                # compared in the ensemble's dtype, as numpy does
            acc_out[i] = 1
            for j in range(d):
                g_out[i, j] = gy[i, j]
        else:
            acc_out[i] = 0
            ey[i] = e[i]
            for j in range(d):
                y[i, j] = x[i, j]
                g_out[i, j] = g[i, j]


@numba.njit(parallel=True, error_model="numpy")
def _mala_rows_threaded(x, g, e, y, gy, ey, z, logu, h, inv4h, g_out, la_out, acc_out):
    n = x.shape[0]
    nb = (n + CPU_BLOCK - 1) // CPU_BLOCK
    for b in prange(nb):
        _mala_rows(x, g, e, y, gy, ey, z, logu, h, inv4h, g_out, la_out, acc_out, b * CPU_BLOCK,
                   min(n, b * CPU_BLOCK + CPU_BLOCK))


def mala_finish(x, g, e, y, gy, ey, z, logu, h):
    """The Metropolis half of a MALA step in one pass over the rows of [n, d] arrays:
    log alpha = E(x) - E(y) - |x - y + h grad E(y)|^2 / (4h) + |z|^2 / 2 (the proposal's
    log density ratio, rows summed in float64 in order; NaN counts as -inf), accept where
    log u < log alpha; rejected rows of ``y`` and ``ey`` get x's and E(x) in place.
    Returns (log alpha, accepted as 0/1, the gradients of the kept states).  Up to
    ``_jit.SERIAL_MAX`` rows the calling thread works alone (the same numbers)."""
    n = x.shape[0]
    dt = x.dtype.type
    la, acc, g_out = np.empty(n, x.dtype), np.empty(n, x.dtype), np.empty_like(g)
    args = (x, g, e, y, gy, ey, z, logu, dt(h), 1.0 / (4.0 * float(dt(h))), g_out, la, acc)
    if n <= _jit.SERIAL_MAX:
        _mala_rows(*args, 0, n)
    else:
        _mala_rows_threaded(*args)
    return la, acc, g_out
