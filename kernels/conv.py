"""im2col / col2im for 2-D convolutions on the CPU (numba, parallel, deterministic).

Layout (channels last, so that the GEMM output needs no transpose):
x [B, H, W, C]; columns [B*Ho*Wo, kh*kw*C] with
cols[(b*Ho + oh)*Wo + ow, (i*kw + j)*C + c] = x[b, oh*s + i - p, ow*s + j - p, c] (0 outside).
``col2im`` is the adjoint: each batch element's columns are scattered in a fixed order.
Both are single-threaded on purpose: they run between OpenBLAS GEMMs, and a numba
thread pool fighting OpenBLAS's spinning workers for the 2 cores made the ConvNet step
25% slower (measured: value + grad_x 151-164 ms parallel, 111-124 ms serial).  The array-module
versions in ``particleflow/energies/layers.py`` are the oracle and the CuPy path.
"""
import numba
from numba import prange


@numba.njit(error_model="numpy", cache=True, nogil=True)
def im2col(x, kh, kw, stride, pad, Ho, Wo, out):
    B, H, W, C = x.shape
    for r in prange(B * Ho):
        b = r // Ho
        oh = r % Ho
        for ow in range(Wo):
            row = r * Wo + ow
            for i in range(kh):
                h = oh * stride + i - pad
                for j in range(kw):
                    w = ow * stride + j - pad
                    base = (i * kw + j) * C
                    if 0 <= h < H and 0 <= w < W:
                        for c in range(C):
                            out[row, base + c] = x[b, h, w, c]
                    else:
                        for c in range(C):
                            out[row, base + c] = 0
    return out


@numba.njit(error_model="numpy", cache=True, nogil=True)
def col2im(cols, kh, kw, stride, pad, Ho, Wo, out):
    B, H, W, C = out.shape
    for b in prange(B):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    out[b, h, w, c] = 0
        for oh in range(Ho):
            for ow in range(Wo):
                row = (b * Ho + oh) * Wo + ow
                for i in range(kh):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * stride + j - pad
                        if w < 0 or w >= W:
                            continue
                        base = (i * kw + j) * C
                        for c in range(C):
                            out[b, h, w, c] += cols[row, base + c]
    return out
