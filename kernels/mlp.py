"""Whole-pass CPU kernels for tanh MLPs (numba + BLAS): DEEN's loss gradient and the
Langevin step's value + grad_x.

Why a kernel and not numpy calls: DEEN's network ([2, 32, 32, 32, 1], batch 4096) is
~17 small GEMMs and ~20 elementwise passes per chunk of rows.  From Python each call
costs its dispatch and holds the GIL in between, so two threads gained nothing (two
chunks in parallel were slower than one after the other).  Here one ``njit`` call runs
the whole pass: ``np.dot`` goes straight to BLAS (scipy's OpenBLAS, limited to one thread
by the caller), elementwise steps are fused loops, and a ``prange`` over fixed chunks of
rows runs them on numba's threads.  Measured (2 threads): 1.9-2.2 ms against 4.0-4.5 ms
for the numpy-call version, in the same process.

Determinism: chunks are fixed by ``rows``; each chunk's parameter gradient goes to its
own slot and the slots are summed in chunk order after the loop, so the result does not
depend on the thread count (tested).  The chunk size is small on purpose (512 rows: the
~15 live [rows, 32] arrays stay in L2; 2048-row chunks were 2.5x slower per row); DEEN
cuts a smaller batch in two where each half is worth a thread (``dsm_rows``).

tanh: a rational approximation in float32, ``vmath``'s exp in float64 (below).
"""
import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from . import elementwise, philox, vmath
from ._jit import jit_source

ROWS = 512
MIN_SPLIT_ROWS = 64
MIN_SPLIT_WORK = 10_000_000


# float32 tanh: the odd/even rational approximation of Eigen's fast tanh (used by XLA
# and TensorFlow), clamped to +-7.9053 where it reaches 1 in float32; one division and
# 11 multiply-adds, it vectorises where the exp-based form (its own exp, a division and
# a select) ran ~4x slower.  Measured here: at most 5.7 ulp (3.4e-7 absolute) from
# float64 tanh on [-12, 12], relative error <= 2.2e-7 for 1e-8 <= |x| <= 1e-2 (tested).
_A = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
      -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
_A32 = tuple(np.float32(c) for c in _A)
_B32 = tuple(np.float32(c) for c in _B)
_CLAMP32 = np.float32(7.90531110763549805)


@numba.njit(inline="always", error_model="numpy", cache=True)
def tanh32(v):
    x = min(max(v, -_CLAMP32), _CLAMP32)
    x2 = x * x
    p = _A32[6]
    p = p * x2 + _A32[5]
    p = p * x2 + _A32[4]
    p = p * x2 + _A32[3]
    p = p * x2 + _A32[2]
    p = p * x2 + _A32[1]
    p = p * x2 + _A32[0]
    q = _B32[3]
    q = q * x2 + _B32[2]
    q = q * x2 + _B32[1]
    q = q * x2 + _B32[0]
    return (p * x) / q


@numba.njit(inline="always", error_model="numpy", cache=True)
def tanh64(v):
    # tanh(v) = sign(v) (1 - e) / (1 + e), e = exp(-2|v|), with vmath's vectorisable exp
    e = vmath.exp64(-(abs(v) + abs(v)))
    t = (1.0 - e) / (1.0 + e)
    return t if v >= 0 else -t


def tanh(v):
    raise NotImplementedError


@overload(tanh, inline="always")
def _tanh_impl(v):
    if v == types.float32:
        return lambda v: tanh32(v)
    return lambda v: tanh64(v)


@numba.njit(error_model="numpy", nogil=True, cache=True)
def forward(x, Ws, bs):
    """Activations a_0 = x, a_l = tanh(a_{l-1} W_l^T + b_l), l < L."""
    L = len(Ws)
    acts = [x]
    for l in range(L - 1):
        z = np.dot(acts[l], Ws[l].T)
        b = bs[l]
        n, k = z.shape
        zf = z.reshape(-1)
        for r in range(n):               # flat indices: a row view per r costs
            for j in range(k):           # reference counting and vectorisation
                zf[r * k + j] = tanh(zf[r * k + j] + b[j])
        acts.append(z)
    return acts


@numba.njit(error_model="numpy", nogil=True, cache=True)
def input_gradient(acts, Ws):
    """ga[l] = dE/da_l and delta[l] = dE/dz_l (l >= 1) of E = a_{L-1} . w_L + b_L."""
    L = len(Ws)
    n = acts[0].shape[0]
    one = np.ones(1, acts[0].dtype)[0]
    wl = Ws[L - 1]
    k = wl.shape[1]
    gaL = np.empty((n, k), acts[0].dtype)
    for r in range(n):
        for j in range(k):
            gaL[r, j] = wl[0, j]
    gas = [gaL] * L
    deltas = [gaL] * L
    for l in range(L - 1, 0, -1):
        a = acts[l].reshape(-1)
        ga = gas[l].reshape(-1)
        d = np.empty_like(gas[l])
        df = d.reshape(-1)
        for q in range(df.shape[0]):
            t = a[q]
            df[q] = ga[q] * (one - t * t)
        deltas[l] = d
        gas[l - 1] = np.dot(d, Ws[l - 1])
    return gas, deltas


@numba.njit(error_model="numpy", nogil=True, cache=True)
def dsm_chunk(x, xn, Ws, bs, s2, scale, g, woff, boff):
    """DEEN loss part sum_b |x - xn + s2 grad E(xn)|^2 of this chunk; adds the
    gradient of scale * that sum to the flat parameter vector g (PyTorch order:
    W_1, b_1, W_2, ...).  The passes of ``MLP.dsm_loss_and_grad`` (its docstring
    derives them), with sigma' = 1 - a^2 and sigma'' = -2 a (1 - a^2)."""
    L = len(Ws)
    n = x.shape[0]
    one = np.ones(1, x.dtype)[0]
    two = one + one
    acts = forward(xn, Ws, bs)
    gas, deltas = input_gradient(acts, Ws)
    res = x - xn + s2 * gas[0]
    loss = 0.0
    rf = res.reshape(-1)
    for q in range(rf.shape[0]):
        loss += rf[q] * rf[q]
    gab = res * scale                                   # dL/d(grad_x E)
    zbs = [gab] * L
    for l in range(1, L):                               # reverse of the backward pass
        W = Ws[l - 1]
        gw = g[woff[l - 1]:woff[l - 1] + W.size].reshape(W.shape)
        gw += np.dot(deltas[l].T, gab)
        deltab = np.dot(gab, W.T)
        nxt = np.empty_like(deltab)
        zb = np.empty_like(deltab)
        a = acts[l].reshape(-1)
        ga = gas[l].reshape(-1)
        db = deltab.reshape(-1)
        nf = nxt.reshape(-1)
        zf = zb.reshape(-1)
        for q in range(nf.shape[0]):
            t = a[q]
            u = db[q] * (one - t * t)
            nf[q] = u
            zf[q] = -two * t * ga[q] * u
        zbs[l] = zb
        gab = nxt
    wlast = g[woff[L - 1]:woff[L - 1] + gab.shape[1]]   # delta_L = 1: column sums
    for r in range(n):
        for j in range(gab.shape[1]):
            wlast[j] += gab[r, j]
    for l in range(L - 1, 0, -1):                       # reverse of the forward pass
        W = Ws[l - 1]
        gw = g[woff[l - 1]:woff[l - 1] + W.size].reshape(W.shape)
        zb = zbs[l]
        gw += np.dot(zb.T, acts[l - 1])
        gb = g[boff[l - 1]:boff[l - 1] + zb.shape[1]]
        for r in range(n):
            for j in range(zb.shape[1]):
                gb[j] += zb[r, j]
        if l >= 2:
            t2 = np.dot(zb, W)
            a = acts[l - 1].reshape(-1)
            tf = t2.reshape(-1)
            zp = zbs[l - 1].reshape(-1)
            for q in range(zp.shape[0]):
                s = a[q]
                zp[q] += tf[q] * (one - s * s)
    return loss


@numba.njit(error_model="numpy", parallel=True, cache=True)
def _dsm(x, xn, Ws, bs, s2, scale, rows, G, losses, woff, boff):
    n = x.shape[0]
    nc = (n + rows - 1) // rows
    for c in prange(nc):
        s0 = c * rows
        s1 = min(n, s0 + rows)
        losses[c] = dsm_chunk(x[s0:s1], xn[s0:s1], Ws, bs, s2, scale, G[c], woff, boff)


@numba.njit(error_model="numpy", nogil=True, cache=True)
def value_and_grad_chunk(x, Ws, bs, e, gx):
    L = len(Ws)
    acts = forward(x, Ws, bs)
    gas, _ = input_gradient(acts, Ws)
    wl = Ws[L - 1]
    aL = acts[L - 1]
    for r in range(x.shape[0]):
        s = bs[L - 1][0]
        for j in range(aL.shape[1]):
            s += aL[r, j] * wl[0, j]
        e[r] = s
    gx[:, :] = gas[0]


@numba.njit(error_model="numpy", parallel=True, cache=True)
def _value_and_grad(x, Ws, bs, rows, e, gx):
    n = x.shape[0]
    nc = (n + rows - 1) // rows
    for c in prange(nc):
        s0 = c * rows
        s1 = min(n, s0 + rows)
        value_and_grad_chunk(x[s0:s1], Ws, bs, e[s0:s1], gx[s0:s1])


@numba.njit(error_model="numpy", nogil=True, cache=True)
def ula_chunk(x, Ws, bs, z, h, c, out):
    """out <- x - h grad E(x) + c z for one chunk, while the gradient is in cache (the
    same operations in the same order as ``elementwise.langevin_update``; its loop is
    not called from here because numba's disk cache of this module would not notice
    edits to another file)."""
    acts = forward(x, Ws, bs)
    gas, _ = input_gradient(acts, Ws)
    xf, gf, zf, of = x.ravel(), gas[0].ravel(), z.ravel(), out.ravel()
    for q in range(of.shape[0]):
        of[q] = xf[q] - h * gf[q] + c * zf[q]


@numba.njit(error_model="numpy", parallel=True, cache=True)
def _ula(x, Ws, bs, z, h, c, rows, out):
    n = x.shape[0]
    nc = (n + rows - 1) // rows
    for k in prange(nc):
        s0 = k * rows
        s1 = min(n, s0 + rows)
        ula_chunk(x[s0:s1], Ws, bs, z[s0:s1], h, c, out[s0:s1])


_OFFSETS = {}


def _offsets(Ws, bs):
    key = tuple(W.shape for W in Ws) + tuple(b.shape for b in bs)
    got = _OFFSETS.get(key)
    if got is None:
        got = _OFFSETS[key] = _compute_offsets(Ws, bs)
    return got


def _compute_offsets(Ws, bs):
    woff, boff, o = [], [], 0
    for W, b in zip(Ws, bs):
        woff.append(o)
        o += W.size
        boff.append(o)
        o += b.size
    return np.array(woff, np.int64), np.array(boff, np.int64), o


def dsm_partials(x, xn, Ws, bs, sigma2, total, rows=ROWS):
    """Per-chunk parts of the DEEN loss sum and of its gradient, for the chunks of
    ``rows`` rows of a slice of a batch of ``total`` rows (whose loss is the sum of
    the chunks' parts divided by ``total``): (losses [nc] float64, G [nc, P] in x's
    dtype, one flat gradient per chunk in PyTorch order: W_1, b_1, W_2, ...).  A tanh
    MLP with weights ``Ws`` (PyTorch layout, C-contiguous) and biases ``bs``; call under
    a single-threaded BLAS (``chunks.single_threaded_blas``).  One chunk runs on the
    calling thread (no parallel launch; the same numbers)."""
    x, xn = np.ascontiguousarray(x), np.ascontiguousarray(xn)
    B = x.shape[0]
    fl = x.dtype.type
    Ws, bs = tuple(Ws), tuple(bs)
    woff, boff, P = _offsets(Ws, bs)
    nc = (B + rows - 1) // rows
    G = np.zeros((nc, P), x.dtype)
    losses = np.zeros(nc)
    if nc == 1:
        losses[0] = dsm_chunk(x, xn, Ws, bs, fl(sigma2), fl(2 * sigma2 / total), G[0], woff, boff)
    elif nc > 1:
        _dsm(x, xn, Ws, bs, fl(sigma2), fl(2 * sigma2 / total), rows, G, losses, woff, boff)
    return losses, G


def sum_partials(losses, G, total):
    """(loss, flat gradient) from the per-chunk parts of a whole batch, added in chunk
    order (the same for any thread count, and for any split of the chunks)."""
    return float(losses.sum()) / total, (G.sum(0) if len(G) > 1 else G[0])


def dsm_rows(batch, Ws):
    """Rows per chunk of a whole batch's DEEN pass: ``ROWS``, except that a batch of at
    most ``ROWS`` rows is cut in two halves where each keeps at least ``MIN_SPLIT_ROWS``
    rows and ``MIN_SPLIT_WORK`` float32-equivalent FLOPs (about 12 per weight per row:
    six GEMM passes; float64 counts twice), so that a batch of the papers' sizes runs
    on two threads when its halves outweigh the cost of a parallel launch.  A function
    of the batch and the network alone, never of the thread count: the sums depend on
    the chunks.

    Measured (2 cores, Zen 4, 2 threads, numba's OpenMP threads waiting passively,
    whose launch and join cost 50-90 us here), one chunk against two, per DEEN
    training iteration: [64, 128, 128, 256, 1] float32, 128 rows (44 MFLOP a half):
    1.57 against 1.16 ms; [16, 64, 64, 64, 1] float32, 256 rows (14 MFLOP): 558
    against 464 us; [2, 32, 32, 32, 1] float64, 512 rows (13 MFLOP equivalent): 596
    against 522 us; the same, 256 rows (6.6 MFLOP): two chunks were slower (349-379
    against 403-454 us), so it stays one.  At one thread two chunks cost 7-11 % more."""
    per_row = 12 * sum(W.size for W in Ws) * max(1, Ws[0].dtype.itemsize // 4)
    least = max(MIN_SPLIT_ROWS, -(-MIN_SPLIT_WORK // per_row))
    return -(-batch // 2) if 2 * least <= batch <= ROWS else ROWS


def dsm_loss_and_flat_grad(x, xn, Ws, bs, sigma2, rows=None):
    """DEEN loss (1/B) sum |x - xn + sigma2 grad E(xn)|^2 and its gradient as one flat
    vector (``dsm_partials`` of the whole batch in chunks of ``rows`` rows, by default
    ``dsm_rows(B, Ws)``, added)."""
    B = x.shape[0]
    return sum_partials(*dsm_partials(x, xn, Ws, bs, sigma2, B, dsm_rows(B, Ws) if rows is None else rows), B)


def dsm_loss_and_grad(x, xn, Ws, bs, sigma2, rows=None):
    """``dsm_loss_and_flat_grad`` with the gradient as [(dW_l, db_l)]."""
    loss, g = dsm_loss_and_flat_grad(x, xn, Ws, bs, sigma2, rows)
    woff, boff, _ = _offsets(Ws, bs)
    return loss, [(g[wo:wo + W.size].reshape(W.shape), g[bo:bo + b.size]) for W, b, wo, bo in zip(Ws, bs, woff, boff)]


def value_and_grad(x, Ws, bs, rows=ROWS, gx=None):
    """(E(x) [n], grad_x E [n, d]) for a tanh MLP (same conventions as above); ``gx``:
    a C-contiguous array like x to write the gradient into."""
    x = np.ascontiguousarray(x)
    e = np.empty(x.shape[0], x.dtype)
    gx = np.empty_like(x) if gx is None else gx
    if x.shape[0] <= rows:              # one chunk: on the calling thread, the same numbers
        value_and_grad_chunk(x, tuple(Ws), tuple(bs), e, gx)
    else:
        _value_and_grad(x, tuple(Ws), tuple(bs), rows, e, gx)
    return e, gx


def ula_update(x, Ws, bs, z, h, c, out, rows=ROWS):
    """One unadjusted Langevin update out <- x - h grad E(x) + c z for a tanh MLP
    (C-contiguous x, z, out like x): the gradient never leaves the chunk.  Bitwise
    ``value_and_grad`` followed by ``elementwise.langevin_update`` (tested)."""
    fl = x.dtype.type
    if x.shape[0] <= rows:              # one chunk: on the calling thread, the same numbers
        ula_chunk(x, tuple(Ws), tuple(bs), z, fl(h), fl(c), out)
    else:
        _ula(x, tuple(Ws), tuple(bs), z, fl(h), fl(c), rows, out)
    return out


# ----------------------------------------------------------- noise drawn in the chunk
# ULA and MALA steps that draw each chunk's Langevin normals inside the chunk pass
# (``philox.row_filler``): the noise is used while in cache and never written to or read
# back from main memory (25.6 MB each way per step at n = 1e5, d = 64 in float32).
# The chunks are those of ``ula_update`` and ``value_and_grad`` and every operation is
# theirs (and ``elementwise._block`` / ``_mala_rows``'s), so the results are bitwise
# those of drawing the noise first and calling them (tested).  Generated through
# ``jit_source`` because they call generated Philox code.

_NOISY_SRC = {
    "ula_chunk": """
def _noisy_ula_chunk(x, Ws, bs, ids, step, k0, k1, h, c, out):
    m, d = x.shape
    z = np.empty((m, d), x.dtype)
    _fill(m, z.reshape(-1), ids, d, step, k0, k1)
    ula_chunk(x, Ws, bs, z, h, c, out)
""",
    "mala_chunk": """
def _noisy_mala_chunk(x, g, e, Ws, bs, ids, step, k0, k1, logu, h, c, inv4h, y, ey, g_out, la, acc):
    m, d = x.shape
    z = np.empty((m, d), x.dtype)
    _fill(m, z.reshape(-1), ids, d, step, k0, k1)
    _block(x.reshape(-1), g.reshape(-1), z.reshape(-1), h, c, y.reshape(-1), m * d)
    gy = np.empty((m, d), x.dtype)
    value_and_grad_chunk(y, Ws, bs, ey, gy)
    _mala_rows(x, g, e, y, gy, ey, z, logu, h, inv4h, g_out, la, acc, 0, m)
""",
    "ula": """
def _noisy_ula(x, Ws, bs, ids, step, k0, k1, h, c, rows, out):
    n = x.shape[0]
    nc = (n + rows - 1) // rows
    for k in prange(nc):
        s0 = k * rows
        s1 = min(n, s0 + rows)
        _chunk(x[s0:s1], Ws, bs, ids[s0:s1], step, k0, k1, h, c, out[s0:s1])
""",
    "mala": """
def _noisy_mala(x, g, e, Ws, bs, ids, step, k0, k1, logu, h, c, inv4h, rows, y, ey, g_out, la, acc):
    n = x.shape[0]
    nc = (n + rows - 1) // rows
    for k in prange(nc):
        s0 = k * rows
        s1 = min(n, s0 + rows)
        _chunk(x[s0:s1], g[s0:s1], e[s0:s1], Ws, bs, ids[s0:s1], step, k0, k1, logu[s0:s1], h, c, inv4h,
               y[s0:s1], ey[s0:s1], g_out[s0:s1], la[s0:s1], acc[s0:s1])
""",
}
_NOISY = {}
# at most this many chunks run on the calling thread: with two chunks, one per thread, a
# busy process on either core makes the step as slow as one thread plus the wake-up
# (ULA at n = 1e3, one busy process: 2 threads / 1 thread measured 0.97-1.17)
SERIAL_CHUNKS = 2


def _noisy(kind, dtype):
    """(serial driver, parallel driver) of ``kind`` in ``ula``, ``mala``: the same loop
    over chunks, on the calling thread or on numba's threads."""
    key = (kind, np.dtype(dtype).str)
    if key not in _NOISY:
        ns = dict(np=np, _fill=philox.row_filler("normal", dtype), ula_chunk=ula_chunk,
                  value_and_grad_chunk=value_and_grad_chunk, _block=elementwise._block,
                  _mala_rows=elementwise._mala_rows)
        chunk = jit_source(ns, _NOISY_SRC[kind + "_chunk"], f"_noisy_{kind}_chunk", error_model="numpy",
                           nogil=True)
        serial = jit_source(dict(_chunk=chunk, prange=range, min=min), _NOISY_SRC[kind], f"_noisy_{kind}",
                            error_model="numpy", nogil=True)
        drive = jit_source(dict(_chunk=chunk, prange=prange, min=min), _NOISY_SRC[kind], f"_noisy_{kind}",
                           parallel=True, error_model="numpy")
        _NOISY[key] = serial, drive
    return _NOISY[key]


def _noisy_driver(kind, x, rows):
    serial, drive = _noisy(kind, x.dtype)
    return serial if x.shape[0] <= SERIAL_CHUNKS * rows else drive


def noisy_ula_update(x, Ws, bs, ids, step, k0, k1, h, c, out, rows=ROWS):
    """``ula_update`` with z the Langevin normals of particles ``ids`` at ``step`` under
    the Philox key (k0, k1) (``Stream.normal``'s draws), each chunk's drawn in its pass.
    Up to ``SERIAL_CHUNKS`` chunks run on the calling thread (the same numbers)."""
    fl = x.dtype.type
    _noisy_driver("ula", x, rows)(x, tuple(Ws), tuple(bs), ids, np.int64(step), np.uint64(k0), np.uint64(k1),
                                  fl(h), fl(c), rows, out)
    return out


def noisy_mala_step(x, g, e, Ws, bs, ids, step, k0, k1, logu, h, c, y, rows=ROWS):
    """One MALA step for a tanh MLP, ``value_and_grad`` at the proposal and
    ``elementwise.mala_finish`` fused into the chunk pass that draws the noise (as in
    ``noisy_ula_update``): ``y`` <- the kept states.  Returns (log alpha, accepted as
    0/1, E and grad E of the kept states), bitwise those of the unfused steps."""
    n = x.shape[0]
    fl = x.dtype.type
    ey, g_out = np.empty(n, x.dtype), np.empty_like(x)
    la, acc = np.empty(n, x.dtype), np.empty(n, x.dtype)
    _noisy_driver("mala", x, rows)(x, g, e, tuple(Ws), tuple(bs), ids, np.int64(step), np.uint64(k0),
                                   np.uint64(k1), logu, fl(h), fl(c), 1.0 / (4.0 * float(fl(h))), rows, y, ey,
                                   g_out, la, acc)
    return la, acc, ey, g_out
