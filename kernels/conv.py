"""im2col / col2im for 2-D convolutions on the CPU (numba, single-threaded, nogil).

Layout (channels last, so that the GEMM output needs no transpose):
x [B, H, W, C]; columns [B*Ho*Wo, kh*kw*C] with
cols[(b*Ho + oh)*Wo + ow, (i*kw + j)*C + c] = x[b, oh*s + i - p, ow*s + j - p, c] (0 outside).
``col2im`` is the adjoint: each batch element's columns are scattered in a fixed order.
All are single-threaded on purpose: they run between OpenBLAS GEMMs, and a numba
thread pool fighting OpenBLAS's spinning workers for the 2 cores made the ConvNet step
25% slower (measured: value + grad_x 151-164 ms parallel, 111-124 ms serial); networks
run their chunks in parallel instead (``particleflow/energies/chunks.py``).  The array-module
versions in ``particleflow/energies/layers.py`` are the oracle and the CuPy path.
"""
import numba
import numpy as np


@numba.njit(error_model="numpy", cache=True, nogil=True)
def im2col(x, kh, kw, stride, pad, Ho, Wo, out):
    # the gather of ``im2col_act`` without the activation (bias unused)
    return im2col_act(x, np.zeros(x.shape[3], x.dtype), x.dtype.type(0), False, kh, kw, stride, pad, Ho, Wo, out)


@numba.njit(error_model="numpy", cache=True, nogil=True)
def col2im(cols, kh, kw, stride, pad, Ho, Wo, out):
    # the scatter of ``col2im_act`` without the activation (z, bias unused)
    return col2im_act(cols, out, np.zeros(out.shape[3], out.dtype), out.dtype.type(0), False, kh, kw, stride, pad,
                      Ho, Wo, out, np.zeros(1))


# ------------------------------------------------- fused with a piecewise-linear activation
# ConvNets whose activation is ReLU or LeakyReLU (``particleflow/energies/convnet_cpu.py``)
# never store the activations: the next im2col applies the previous layer's bias and
# activation on the fly, and the adjoint multiplies by the activation's slope while the
# scattered image is still in cache.  alpha = 0 is ReLU.  The values are bitwise those of
# the layer path (z + b, then v or alpha * v; gradients g or alpha * g).

@numba.njit(error_model="numpy", cache=True, nogil=True)
def im2col_act(z, bias, alpha, apply, kh, kw, stride, pad, Ho, Wo, out):
    """im2col of leaky(z + bias) (bias over channels, alpha the negative slope); with
    ``apply`` False plain im2col of z (bias unused)."""
    # (Copying runs of kw*C values per kernel row instead of C was measured: same time
    # for C >= 32, where the loop over C already vectorises.)
    B, H, W, C = z.shape
    for r in range(B * Ho):
        b = r // Ho
        oh = r % Ho
        for ow in range(Wo):
            row = r * Wo + ow
            for i in range(kh):
                h = oh * stride + i - pad
                for j in range(kw):
                    w = ow * stride + j - pad
                    base = (i * kw + j) * C
                    if not (0 <= h < H and 0 <= w < W):
                        for c in range(C):
                            out[row, base + c] = 0
                    elif apply:
                        for c in range(C):
                            v = z[b, h, w, c] + bias[c]
                            out[row, base + c] = v if v > 0 else alpha * v
                    else:
                        for c in range(C):
                            out[row, base + c] = z[b, h, w, c]
    return out


@numba.njit(error_model="numpy", cache=True, nogil=True)
def col2im_act(cols, z, bias, alpha, apply, kh, kw, stride, pad, Ho, Wo, out, bias_grad):
    """out = col2im(cols) * slope(z + bias), the cotangent of the pre-activation z;
    ``bias_grad`` (float64, [C]) accumulates its sum over pixels (the bias gradient),
    in a fixed order.  With ``apply`` False: plain col2im (z, bias and bias_grad
    unused).  (Scattering runs of kw*C values instead of C was measured 1.7-2.3x
    slower here.)"""
    B, H, W, C = out.shape
    for b in range(B):
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
        if not apply:
            continue
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    g = out[b, h, w, c]
                    g = g if z[b, h, w, c] + bias[c] > 0 else alpha * g
                    out[b, h, w, c] = g
                    bias_grad[c] += g
    return out
