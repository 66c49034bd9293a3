"""A training minibatch and its noisy copy in one CPU call.

``estimators.batches.noisy_batch`` draws ``batch`` row indices from Philox uniforms,
gathers those data rows and adds ``sigma`` times Philox normals: seven numpy calls and
two kernel launches, about 25 us of dispatch for a batch of 256 two-dimensional rows
(DEEN's ring config), where the arithmetic takes about 2 us.  Here the same draws
(``Stream.uniform`` / ``Stream.normal``'s Philox kernels, called per row range) and the same
operations in the same order (row = min(int(u N), N - 1); xi = x + sigma z in the data's
dtype, no FMA contraction) run in one compiled call, so the result is bitwise the numpy
path's (tested).
"""
import numpy as np

from . import philox
from ._jit import jit_source

_SRC = """
def _noisy_rows(data, sigma, n, step, ku0, ku1, kz0, kz1, x, xi):
    N, d = data.shape
    ids = np.arange(n)
    u = np.empty(n * 4, np.float64)
    _uniform(n, u, ids, 4, step, ku0, ku1)
    z = np.empty(n * ZW, data.dtype)
    _normal(n, z, ids, ZW, step, kz0, kz1)
    for i in range(n):
        r = min(np.int64(u[4 * i] * N), N - 1)
        for j in range(d):
            v = data[r, j]
            x[i, j] = v
            xi[i, j] = v + sigma * z[i * ZW + j]
"""
_KERNELS = {}


def _range_kernel(kind, dtype, width):
    """The one-thread range kernel of ``philox.fill_kernel`` (compiled first through its
    launcher, which forces its SIMD lanes)."""
    launch = philox.fill_kernel(kind, philox.CPU, dtype, width)
    if not launch.range_kernel.signatures:
        launch(1, np.empty(width, dtype), np.zeros(1, np.int64), width, 0, np.uint64(0), np.uint64(0))
    return launch.range_kernel


def _kernel(dtype, d):
    """The call for rows of ``d`` values: normals drawn 4 or 8 to a row by the unrolled
    Philox fill where d <= 8 (``Stream.normal``'s own kernel), by ``philox.row_filler``
    for wider rows (as ``Stream.normal``'s wide fill draws them)."""
    width = 4 * ((d + 3) // 4) if d <= philox.MAX_UNROLLED_WIDTH else None
    key = (np.dtype(dtype).str, width)
    if key not in _KERNELS:
        ns = dict(np=np, min=min, _uniform=_range_kernel("uniform", np.float64, 4),
                  _normal=(_range_kernel("normal", dtype, width) if width else philox.row_filler("normal", dtype)))
        _KERNELS[key] = jit_source(ns, _SRC.replace("ZW", str(width) if width else "d"), "_noisy_rows",
                                   error_model="numpy")
    return _KERNELS[key]


def noisy_rows(data, sigma, n, step, uniform_key, normal_key):
    """(x, xi) [n, d]: rows min(int(u_i N), N - 1) of ``data`` [N, d] (C-contiguous,
    float32 or float64) for the Philox uniforms u_i (float64, draw 0 of ids 0 .. n - 1 at
    ``step`` under ``uniform_key``) and xi = x + sigma z with z the normals of the same
    ids under ``normal_key``, in the data's dtype."""
    x = np.empty((n, data.shape[1]), data.dtype)
    xi = np.empty_like(x)
    (ku0, ku1), (kz0, kz1) = uniform_key, normal_key
    call = _kernel(data.dtype, data.shape[1])
    call(data, data.dtype.type(sigma), n, np.int64(step), np.uint64(ku0), np.uint64(ku1), np.uint64(kz0),
         np.uint64(kz1), x, xi)
    return x, xi
