"""Philox4x32-10 counter-based random numbers (Salmon et al., SC'11, "Parallel random
numbers: as easy as 1, 2, 3"), written once for numpy arrays, numba CPU and numba.cuda.

Layout used by particleflow (see ``particleflow/random.py`` for the stream table):

* key     = (k0, k1) = (seed, stream key), 32 bits each;
* counter = (c0, c1, c2, c3) = (draw block, id & 0xffffffff, step, id >> 32).

One Philox call gives four 32-bit words, i.e. draws ``4 b .. 4 b + 3`` of a particle.
Uniform draw j of a particle is word ``j % 4`` of block ``j // 4`` mapped to (0, 1):
float64 ``(w + 0.5) 2^-32``, float32 ``((w >> 8) + 0.5) 2^-24`` (both exact in their
type, never 0 or 1).  Normal draws use Box-Muller on word pairs (0, 1) and (2, 3):
``z_{2p} = r cos(2 pi u_b)``, ``z_{2p+1} = r sin(2 pi u_b)``, ``r = sqrt(-2 log u_a)``,
computed in the output precision.

All values are carried in uint64 holding 32-bit quantities, so that the 32x32->64
multiply needs no intrinsics and the same code runs on numpy arrays (the tests'
oracle), in numba (vectorised) and in numba.cuda (and its simulator).
"""
import math

import numpy as np

from ._jit import CPU, CUDA, build_kernel, compile_source

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint64 scalars or arrays holding 32-bit values."""
    for _ in range(10):
        p0 = c0 * M0
        p1 = c2 * M1
        c0, c1, c2, c3 = ((p1 >> SHIFT32) ^ c1 ^ k0, p1 & MASK32,
                          (p0 >> SHIFT32) ^ c3 ^ k1, p0 & MASK32)
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return c0, c1, c2, c3


def uniform_constants(dtype):
    """(shift, scale) of the word -> (0, 1) map for ``dtype``."""
    if np.dtype(dtype) == np.float64:
        return np.uint64(0), np.float64(2.0 ** -32)
    return np.uint64(8), np.float32(2.0 ** -24)


# ------------------------------------------------------------------ numpy oracle
def words_numpy(k0, k1, step, ids, n_draws):
    """Raw 32-bit words ``[n, n_draws]`` (uint64) for particles ``ids`` at ``step``."""
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    n_blocks = (n_draws + 3) // 4
    out = np.empty((ids.size, 4 * n_blocks), dtype=np.uint64)
    c1 = ids & MASK32
    c3 = ids >> SHIFT32
    c2 = np.full(ids.shape, np.uint64(step), dtype=np.uint64)
    k0 = np.uint64(k0)
    k1 = np.uint64(k1)
    for b in range(n_blocks):
        c0 = np.full(ids.shape, np.uint64(b), dtype=np.uint64)
        r = philox4x32_10(c0, c1, c2, c3, k0, k1)
        for w in range(4):
            out[:, 4 * b + w] = r[w]
    return out[:, :n_draws]


def uniform_numpy(k0, k1, step, ids, n_draws, dtype=np.float64):
    shift, scale = uniform_constants(dtype)
    fl = np.dtype(dtype).type
    w = words_numpy(k0, k1, step, ids, n_draws)
    return ((w >> shift).astype(dtype) + fl(0.5)) * scale


def normal_numpy(k0, k1, step, ids, n_draws, dtype=np.float64):
    u = uniform_numpy(k0, k1, step, ids, 4 * ((n_draws + 3) // 4), dtype)
    fl = np.dtype(dtype).type
    ua = u[:, 0::2]
    ub = u[:, 1::2]
    r = np.sqrt(fl(-2.0) * np.log(ua))
    ang = fl(2.0 * math.pi) * ub
    z = np.empty_like(u)
    z[:, 0::2] = r * np.cos(ang)
    z[:, 1::2] = r * np.sin(ang)
    return z[:, :n_draws]


# ------------------------------------------------------------------ device code
DEVICE_SRC = '''
def UNIFORM(w):
    return (FL(np.int64(w >> USHIFT)) + HALF) * USCALE

def NORMAL_PAIR(wa, wb):
    r = SQRT(MTWO * LOG(UNIFORM(wa)))
    s, c = SINCOS2PI(UNIFORM(wb))
    return r * c, r * s

def WORDS(block, pid, step, k0, k1):
    return PHILOX(np.uint64(block), np.uint64(pid) & MASK32, np.uint64(step),
                  np.uint64(pid) >> SHIFT32, k0, k1)

def fill_normal_body(i, out, ids, width, step, k0, k1):
    # width = 4 * number of Philox blocks; the caller trims the padding
    for b in range(width // 4):
        w0, w1, w2, w3 = WORDS(b, ids[i], step, k0, k1)
        z0, z1 = NORMAL_PAIR(w0, w1)
        z2, z3 = NORMAL_PAIR(w2, w3)
        j = i * width + 4 * b
        out[j] = z0
        out[j + 1] = z1
        out[j + 2] = z2
        out[j + 3] = z3

def fill_uniform_body(i, out, ids, width, step, k0, k1):
    for b in range(width // 4):
        w0, w1, w2, w3 = WORDS(b, ids[i], step, k0, k1)
        j = i * width + 4 * b
        out[j] = UNIFORM(w0)
        out[j + 1] = UNIFORM(w1)
        out[j + 2] = UNIFORM(w2)
        out[j + 3] = UNIFORM(w3)
'''

_NAMESPACES = {}


def namespace(target, dtype):
    """Namespace with target math, Philox, UNIFORM, NORMAL_PAIR and WORDS compiled
    for ``target`` and ``dtype``; other kernel modules compile their bodies into a
    copy of it."""
    key = (target.name, np.dtype(dtype).str)
    ns = _NAMESPACES.get(key)
    if ns is None:
        ns = target.math_namespace(dtype)
        shift, scale = uniform_constants(dtype)
        fl = np.dtype(dtype).type
        ns.update(PHILOX=target.device(philox4x32_10), MASK32=MASK32, SHIFT32=SHIFT32,
                  USHIFT=shift, USCALE=scale, HALF=fl(0.5), MTWO=fl(-2.0))
        compile_source(ns, DEVICE_SRC, target, "<philox>")
        _NAMESPACES[key] = ns
    return ns


_FILLS = {}
_FILL_ARGS = [("out", "width"), ("ids", 1), ("width", None), ("step", None),
              ("k0", None), ("k1", None)]


MAX_UNROLLED_WIDTH = 16


def _unrolled_fill_source(kind, width):
    """A fill body with the draw count fixed (fully unrolled), so that the particle
    loop is the innermost loop and vectorises."""
    L = [f"def fill_{kind}_w{width}_body(i, out, ids, width, step, k0, k1):"]
    for b in range(width // 4):
        L.append(f"    w0, w1, w2, w3 = WORDS({b}, ids[i], step, k0, k1)")
        if kind == "normal":
            L.append("    z0, z1 = NORMAL_PAIR(w0, w1)")
            L.append("    z2, z3 = NORMAL_PAIR(w2, w3)")
            vals = ["z0", "z1", "z2", "z3"]
        else:
            vals = [f"UNIFORM(w{k})" for k in range(4)]
        L += [f"    out[i * {width} + {4 * b + k}] = {v}" for k, v in enumerate(vals)]
    return "\n".join(L) + "\n"


def _panel_fill_source(kind, pw, d, col0):
    """Draws ``col0 .. col0 + pw - 1`` of particle i into columns ``col0 .. col0 + pw - 1``
    of row i (row length ``d``, any d): one panel of a wide fill, unrolled like
    ``_unrolled_fill_source`` so that it vectorises over particles.  Row length and
    first column must be compile-time constants: with either at run time LLVM does
    not vectorise the particle loop (measured 4-6x slower)."""
    L = [f"def fill_{kind}_p{pw}_d{d}_c{col0}_body(i, out, ids, d, step, k0, k1):",
         f"    r = i * {d} + {col0}"]
    for b in range((pw + 3) // 4):
        L.append(f"    w0, w1, w2, w3 = WORDS({col0 // 4 + b}, ids[i], step, k0, k1)")
        if kind == "normal":
            L.append("    z0, z1 = NORMAL_PAIR(w0, w1)")
            if 4 * b + 2 < pw:
                L.append("    z2, z3 = NORMAL_PAIR(w2, w3)")
            vals = ["z0", "z1", "z2", "z3"]
        else:
            vals = [f"UNIFORM(w{k})" for k in range(4)]
        L += [f"    out[r + {4 * b + k}] = {v}" for k, v in enumerate(vals) if 4 * b + k < pw]
    return "\n".join(L) + "\n"


_PANEL_ARGS = [("out", "d"), ("ids", 1), ("d", None), ("step", None), ("k0", None), ("k1", None)]


def wide_fill_kernel(kind, target, dtype, d):
    """CPU launcher ``launch(n, out_flat, ids, d, step, k0, k1)`` filling ``out_flat``
    ``[n * d]`` with draws ``0 .. d - 1`` of each particle (no padding), in panels of
    16 draws, each a vectorised pass over the particles.  For wide rows (d > 16) the
    generic body loops over blocks inside each particle and runs scalar: 47-70 ms
    against 10-12 ms for 6.4e6 float32 normals (n = 1e5, d = 64)."""
    panels = []
    for col0 in range(0, d, MAX_UNROLLED_WIDTH):
        pw = min(MAX_UNROLLED_WIDTH, d - col0)
        key = ("panel", kind, target.name, np.dtype(dtype).str, pw, d, col0)
        if key not in _FILLS:
            ns = dict(namespace(target, dtype))
            compile_source(ns, _panel_fill_source(kind, pw, d, col0), target, "<philox-panel>")
            _FILLS[key] = build_kernel(ns, f"fill_{kind}_p{pw}_d{d}_c{col0}_body", _PANEL_ARGS,
                                       target, vector_width=8)
        panels.append(_FILLS[key])

    def launch(n, out, ids, d_, step, k0, k1):
        for kern in panels:
            kern(n, out, ids, d_, step, k0, k1)
    return launch


def fill_kernel(kind, target, dtype, width=None):
    """Launcher ``launch(n, out_flat, ids, width, step, k0, k1)`` for ``kind`` in
    ``normal`` or ``uniform``: fills ``out_flat`` ``[n * width]`` (``width`` a multiple
    of 4) with draws ``0 .. width - 1`` of each particle.  Give ``width`` (<= 16) to
    get a kernel specialised (unrolled and vectorised) for it; wider rows on the CPU:
    ``wide_fill_kernel``."""
    if width is not None and width > MAX_UNROLLED_WIDTH:
        width = None
    key = (kind, target.name, np.dtype(dtype).str, width)
    if key not in _FILLS:
        ns = namespace(target, dtype)
        if width is None:
            _FILLS[key] = build_kernel(ns, f"fill_{kind}_body", _FILL_ARGS, target)
        else:
            ns = dict(ns)
            compile_source(ns, _unrolled_fill_source(kind, width), target, "<philox-fill>")
            _FILLS[key] = build_kernel(ns, f"fill_{kind}_w{width}_body", _FILL_ARGS, target,
                                       vector_width=8)
    return _FILLS[key]


__all__ = ["philox4x32_10", "words_numpy", "uniform_numpy", "normal_numpy",
           "namespace", "fill_kernel", "wide_fill_kernel", "CPU", "CUDA"]

