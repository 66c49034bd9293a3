"""Pairwise particle-neuron sums of F1 (two-layer ReLU) networks (paper 001).

Neuron side (the Wasserstein-Fisher-Rao potential, one thread per neuron j)::

    S_j = sum_i c * relu(<theta_j, x_i>)          G_j = sum_i c * 1[<theta_j, x_i> > 0] x_i

accumulated into ``S [m]`` and ``G [m * d]`` (called once for the particles with
c = 1/N and once for the data with c = -1/n gives F_t(theta_j) and grad F_t).

Particle side (the energy and its gradient, one thread per particle i)::

    f_i = sum_j a_j relu(<theta_j, x_i>)          g_i = sum_j a_j 1[<theta_j, x_i> > 0] theta_j

with a_j = sign_j w_j / m.  Each output is owned by one thread and summed in a fixed
order, so results are deterministic for any thread count.
"""
import numpy as np

from ._jit import build_kernel, compile_source

SRC = '''
def neuron_sums_body(j, theta, x, n_x, d, c, S, G):
    s = S[j]
    for i in range(n_x):
        dot = theta[j * d] * x[i * d]
        for k in range(1, d):
            dot += theta[j * d + k] * x[i * d + k]
        if dot > 0:
            s += c * dot
            for k in range(d):
                G[j * d + k] += c * x[i * d + k]
    S[j] = s

def network_body(i, x, theta, a, m, d, f, g):
    acc = a[0] * 0
    for k in range(d):
        g[i * d + k] = acc
    for j in range(m):
        dot = theta[j * d] * x[i * d]
        for k in range(1, d):
            dot += theta[j * d + k] * x[i * d + k]
        if dot > 0:
            acc += a[j] * dot
            for k in range(d):
                g[i * d + k] += a[j] * theta[j * d + k]
    f[i] = acc
'''
_ARGS = {
    "neuron_sums": [("theta", "d"), ("x", None), ("n_x", None), ("d", None), ("c", None),
                    ("S", 1), ("G", "d")],
    "network": [("x", "d"), ("theta", None), ("a", None), ("m", None), ("d", None),
                ("f", 1), ("g", "d")],
}
_CACHE = {}


def kernel(kind, target):
    """``neuron_sums``: ``launch(m, theta, x, n_x, d, c, S, G)`` (adds into S, G);
    ``network``: ``launch(n, x, theta, a, m, d, f, g)`` (overwrites f, g)."""
    key = (kind, target.name)
    if key not in _CACHE:
        ns = {"np": np}
        compile_source(ns, SRC, target, "<pairwise>")
        _CACHE[key] = build_kernel(ns, f"{kind}_body", _ARGS[kind], target)
    return _CACHE[key]


# ---------------------------------------------------------------------------------
# CPU block kernels.  The per-particle bodies above keep the particle loop outermost,
# so LLVM can only vectorise the short d-loop (measured 0.8 GFLOP/s here).  These
# process BLOCK particles at a time in a feature-major scratch [d, BLOCK] so that every
# inner loop runs over particles with unit stride (vectorised without fastmath).  The
# neuron-side sums are reductions over particles: each block writes its partial sums,
# with 8 interleaved lane accumulators summed in a fixed order, and the blocks are
# added in block order, so results do not depend on the thread count.  The GPU keeps
# the bodies above (one thread per output); tests compare all three with numpy.
import numba as _numba  # noqa: E402
from numba import prange as _prange  # noqa: E402

BLOCK = 256
LANES = 8


@_numba.njit(inline="always", error_model="numpy")
def _load_block(x, s0, cnt, xt):
    """xt[k, p] = x[s0 + p, k]: the block's particles, feature-major."""
    for p in range(cnt):
        for k in range(x.shape[1]):
            xt[k, p] = x[s0 + p, k]


@_numba.njit(inline="always", error_model="numpy")
def _block_dots(theta, j, xt, z, bl, d, zero):
    """z[p] = <theta_j, x_p> for the block's particles (feature-major xt [d, bl])."""
    for p in range(bl):
        z[p] = zero
    for k in range(d):
        w = theta[j, k]
        for p in range(bl):
            z[p] += w * xt[k, p]


@_numba.njit(parallel=True, error_model="numpy", cache=True)
def network_blocks(x, theta, a, f, g, bl):
    """f_i = sum_j a_j relu(<theta_j, x_i>), g_i = sum_j a_j 1[.] theta_j; ``bl`` = BLOCK
    (an argument: a compile-time trip count would be fully unrolled, not vectorised)."""
    n, d = x.shape
    m = theta.shape[0]
    for blk in _prange((n + bl - 1) // bl):
        s0 = blk * bl
        cnt = min(bl, n - s0)
        xt = np.zeros((d, bl), dtype=x.dtype)
        gt = np.zeros((d, bl), dtype=x.dtype)
        z = np.empty(bl, dtype=x.dtype)
        fo = np.zeros(bl, dtype=x.dtype)
        zero = fo[0]
        _load_block(x, s0, cnt, xt)
        for j in range(m):
            _block_dots(theta, j, xt, z, bl, d, zero)
            aj = a[j]
            for p in range(bl):
                on = z[p] > zero
                fo[p] += aj * z[p] if on else zero
                z[p] = aj if on else zero
            for k in range(d):
                w = theta[j, k]
                for p in range(bl):
                    gt[k, p] += z[p] * w
        for p in range(cnt):
            f[s0 + p] = fo[p]
            for k in range(d):
                g[s0 + p, k] = gt[k, p]


@_numba.njit(parallel=True, error_model="numpy", cache=True)
def neuron_sums_blocks(theta, x, c, S_part, G_part, bl):
    """Per-block partial sums S_part[b, j] = c sum_{i in b} relu(<theta_j, x_i>) and
    G_part[b, j, k] = c sum_{i in b} 1[.] x_ik."""
    n, d = x.shape
    m = theta.shape[0]
    for blk in _prange((n + bl - 1) // bl):
        s0 = blk * bl
        cnt = min(bl, n - s0)
        xt = np.zeros((d, bl), dtype=x.dtype)
        z = np.empty(bl, dtype=x.dtype)
        acc = np.empty(LANES, dtype=x.dtype)
        zero = xt[0, 0] * 0
        one = zero + 1
        _load_block(x, s0, cnt, xt)
        for j in range(m):
            _block_dots(theta, j, xt, z, bl, d, zero)
            for p in range(bl):
                z[p] = z[p] if z[p] > zero else zero
            S_part[blk, j] = c * _lane_sum(z, acc, bl)
            for p in range(bl):
                z[p] = one if z[p] > zero else zero
            for k in range(d):
                for l in range(LANES):
                    acc[l] = zero
                for p0 in range(0, bl, LANES):
                    for l in range(LANES):
                        acc[l] += z[p0 + l] * xt[k, p0 + l]
                G_part[blk, j, k] = c * _tree(acc)


@_numba.njit(inline="always", error_model="numpy")
def _tree(acc):
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@_numba.njit(inline="always", error_model="numpy")
def _lane_sum(v, acc, bl):
    for l in range(LANES):
        acc[l] = v[0] * 0
    for p0 in range(0, bl, LANES):
        for l in range(LANES):
            acc[l] += v[p0 + l]
    return _tree(acc)


def neuron_sums_cpu(theta, x, c):
    """(S [m], G [m, d]) on the CPU with the block kernel (fixed-order reduction)."""
    S_part, G_part = neuron_partials_cpu(theta, x, c)
    return ordered_sum(S_part), ordered_sum(G_part)


def neuron_partials_cpu(theta, x, c):
    """The per-block partial sums (S_part [blocks, m], G_part [blocks, m, d]) of
    ``neuron_sums_cpu``, blocks of ``BLOCK`` particles in order."""
    n_blocks = (x.shape[0] + BLOCK - 1) // BLOCK
    S_part = np.empty((n_blocks, theta.shape[0]), x.dtype)
    G_part = np.empty((n_blocks,) + theta.shape, x.dtype)
    neuron_sums_blocks(theta, x, x.dtype.type(c), S_part, G_part, BLOCK)
    return S_part, G_part


def ordered_sum(part):
    """part[0] + part[1] + ... added in block order."""
    out = part[0].copy()
    for b in range(1, part.shape[0]):
        out += part[b]
    return out


def network_cpu(x, theta, a):
    f = np.empty(x.shape[0], x.dtype)
    g = np.empty_like(x)
    network_blocks(x, theta, a, f, g, BLOCK)
    return f, g
