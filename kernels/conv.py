"""im2col / col2im for 2-D convolutions on the CPU (numba, parallel, deterministic).

Layout: x [B, C, H, W] (NCHW), columns [B, Ho*Wo, C*kh*kw] with
cols[b, oh*Wo + ow, (c*kh + i)*kw + j] = x[b, c, oh*s + i - p, ow*s + j - p] (0 outside).
``col2im`` is the adjoint: one thread per batch element scatters that element's
columns in a fixed order (no atomics, thread-count independent).  numpy's strided-view version (``particleflow/energies/layers.py``) is
the oracle and the CuPy path.
"""
import numba
from numba import prange


@numba.njit(parallel=True, error_model="numpy", cache=True)
def im2col(x, kh, kw, stride, pad, Ho, Wo, out):
    B, C, H, W = x.shape
    K = C * kh * kw
    for r in prange(B * Ho):
        b = r // Ho
        oh = r % Ho
        for ow in range(Wo):
            row = oh * Wo + ow
            for c in range(C):
                for i in range(kh):
                    h = oh * stride + i - pad
                    for j in range(kw):
                        w = ow * stride + j - pad
                        v = x.dtype.type(0)
                        if 0 <= h < H and 0 <= w < W:
                            v = x[b, c, h, w]
                        out[b, row, (c * kh + i) * kw + j] = v
    return out


@numba.njit(parallel=True, error_model="numpy", cache=True)
def col2im(cols, kh, kw, stride, pad, Ho, Wo, out):
    # one thread per batch element, scattering its columns in a fixed order: cols
    # is read sequentially and out[b] (C*H*W values) stays in cache
    B, C, H, W = out.shape
    for b in prange(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    out[b, c, h, w] = 0
        for oh in range(Ho):
            for ow in range(Wo):
                row = oh * Wo + ow
                for c in range(C):
                    for i in range(kh):
                        h = oh * stride + i - pad
                        if h < 0 or h >= H:
                            continue
                        for j in range(kw):
                            w = ow * stride + j - pad
                            if 0 <= w < W:
                                out[b, c, h, w] += cols[b, row, (c * kh + i) * kw + j]
    return out
