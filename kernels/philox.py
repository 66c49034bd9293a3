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

import numba
import numpy as np

from ._jit import CPU, CUDA, SIMD_LANES, build_kernel, compile_source, jit_source

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


MAX_UNROLLED_WIDTH = 8     # wider rows go through ``row_filler`` (see ``_panel_kernel``)


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


_PANEL = 8               # draws per panel of a wide fill
_PANEL_ARGS = [("out", _PANEL), ("ids", 1), ("block0", None), ("step", None), ("k0", None), ("k1", None)]


def _panel_kernel(kind, target, dtype):
    """Draws ``4 block0 .. 4 block0 + 7`` of each particle into a contiguous [n, 8]
    buffer (unrolled like ``_unrolled_fill_source``, vectorised over particles; a
    run-time block offset keeps it vectorised, a run-time column offset or row stride
    in the output would not).  Eight draws, not sixteen: LLVM vectorises a store group
    of at most 8 interleaved members (its ``max-interleave-group-factor``); a 16-draw
    panel stored element by element and measured 1.7x slower per uniform draw."""
    key = ("panel", kind, target.name, np.dtype(dtype).str)
    if key not in _FILLS:
        src = _unrolled_fill_source(kind, _PANEL).replace(
            f"def fill_{kind}_w{_PANEL}_body(i, out, ids, width, step, k0, k1):",
            f"def fill_{kind}_panel_body(i, out, ids, block0, step, k0, k1):")
        src = src.replace("WORDS(", "WORDS(block0 + ")
        ns = dict(namespace(target, dtype))
        compile_source(ns, src, target, "<philox-panel>")
        _FILLS[key] = build_kernel(ns, f"fill_{kind}_panel_body", _PANEL_ARGS, target, vector_width=SIMD_LANES)
    return _FILLS[key]


_ROW_FILLERS = {}
_WIDE_ROWS = 2048        # particles per work item of ``wide_fill``


def row_filler(kind, dtype):
    """A numba function ``fill(m, out, ids, nd, step, k0, k1)`` (CPU, one thread)
    writing draws ``0 .. nd - 1`` of the ``m`` particles ``ids`` into the C-ordered
    rows of the flat ``out`` [m * nd]: panels of 8 draws, each one vectorised pass
    into an [m, 8] buffer (L1 / L2 sized for m <= 2048), copied into their columns.
    Other kernels call it per block of rows, so that noise is drawn where it is used
    and never goes through main memory (``kernels/mlp.py``)."""
    kern = _panel_kernel(kind, CPU, dtype)
    key = (kind, np.dtype(dtype).str)
    if key not in _ROW_FILLERS:
        if not kern.range_kernel.signatures:      # compile the panel with its forced lanes first
            kern(1, np.empty(_PANEL, dtype), np.zeros(1, np.int64), 0, 0, np.uint64(0), np.uint64(0))
        P = _PANEL
        src = (f"def _rows(m, out, ids, nd, step, k0, k1):\n"
               f"    buf = np.empty(m * {P}, out.dtype)\n"
               f"    for col0 in range(0, nd, {P}):\n"
               f"        _range(m, buf, ids, col0 // 4, step, k0, k1)\n"
               f"        w = min({P}, nd - col0)\n"
               f"        if w == {P}:\n"                     # a fixed-length copy is vector moves
               f"            for r in range(m):\n"
               f"                o = r * nd + col0\n"
               f"                for k in range({P}):\n"
               f"                    out[o + k] = buf[r * {P} + k]\n"
               f"        else:\n"
               f"            for r in range(m):\n"
               f"                o = r * nd + col0\n"
               f"                for k in range(w):\n"
               f"                    out[o + k] = buf[r * {P} + k]\n")
        _ROW_FILLERS[key] = jit_source(dict(_range=kern.range_kernel, np=np, min=min), src, "_rows",
                                       error_model="numpy")
    return _ROW_FILLERS[key]


_WIDE_DRIVERS = {}


def _wide_driver(kind, dtype):
    """Parallel driver over blocks of 2048 particles: out <- draws."""
    key = ("wide", kind, np.dtype(dtype).str)
    if key not in _WIDE_DRIVERS:
        src = (f"def _wide(n, out, ids, nd, step, k0, k1):\n"
               f"    nb = (n + {_WIDE_ROWS} - 1) // {_WIDE_ROWS}\n"
               f"    for b in prange(nb):\n"
               f"        s0 = b * {_WIDE_ROWS}\n"
               f"        s1 = min(n, s0 + {_WIDE_ROWS})\n"
               f"        _rows(s1 - s0, out[s0 * nd:s1 * nd], ids[s0:s1], nd, step, k0, k1)\n")
        _WIDE_DRIVERS[key] = jit_source(dict(_rows=row_filler(kind, dtype), prange=numba.prange, min=min),
                                        src, "_wide", parallel=True, error_model="numpy")
    return _WIDE_DRIVERS[key]


def wide_fill(kind, target, dtype, ids, n_draws, step, k0, k1, out):
    """Fill ``out`` [n, n_draws] (n_draws > 8, C-contiguous) on the CPU: blocks of
    2048 particles in parallel, each filled by ``row_filler``.  The generic body (a
    loop over blocks inside each particle) runs scalar: 47-70 ms against 7-8 ms for
    6.4e6 float32 normals (n = 1e5, d = 64, one thread).  One panel kernel per
    (kind, dtype) whatever the width (compiling one per width and column offset cost
    up to 45 s)."""
    if ids.size <= _WIDE_ROWS:                   # one block: the calling thread alone
        row_filler(kind, dtype)(ids.size, out.reshape(-1), ids, n_draws, step, k0, k1)
    else:
        _wide_driver(kind, dtype)(ids.size, out.reshape(-1), ids, n_draws, step, k0, k1)
    return out


def fill_kernel(kind, target, dtype, width=None):
    """Launcher ``launch(n, out_flat, ids, width, step, k0, k1)`` for ``kind`` in
    ``normal`` or ``uniform``: fills ``out_flat`` ``[n * width]`` (``width`` a multiple
    of 4) with draws ``0 .. width - 1`` of each particle.  Give ``width`` (<= 8) to
    get a kernel specialised (unrolled and vectorised) for it; wider rows on the CPU:
    ``wide_fill``."""
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
                                       vector_width=SIMD_LANES)
    return _FILLS[key]


__all__ = ["philox4x32_10", "words_numpy", "uniform_numpy", "normal_numpy",
           "namespace", "fill_kernel", "row_filler", "wide_fill", "CPU", "CUDA"]

