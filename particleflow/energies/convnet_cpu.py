"""Fused CPU passes of a ConvNet with a piecewise-linear activation (ReLU, LeakyReLU).

The layer path (``layers.py``) runs, per conv layer, im2col, a GEMM, a bias pass, an
activation pass that writes sigma(z) and sigma'(z), and in reverse a col2im and a
multiplication by sigma'.  For sigma(v) = v if v > 0 else alpha v (alpha = 0: ReLU)
the activation is cheap to recompute, so here

    z_l     = im2col(a_{l-1}) W_l^T                 one GEMM; the bias is not added
    a_l     = sigma(z_l + b_l)                      never stored: the next im2col
                                                    applies it (``im2col_act``)
    gz_{l-1} = col2im(gz_l W_l) * sigma'(z_{l-1} + b_{l-1})
                                                    one kernel (``col2im_act``), which
                                                    also sums gz_{l-1} (bias gradient)
    grad W_l = gz_l^T im2col(a_{l-1})               (PyTorch layout after a transpose)

Only the raw GEMM outputs z_l are kept.  Measured on one 32-image chunk of the
Nijkamp n_f = 32 net (float32, one thread): value + grad_x 60 ms on the layer path
(of which ~35 ms GEMMs), see the README's benchmark section for this path's numbers.

Same operations as the layer path (bias added before the activation, v or alpha v,
g or alpha g), so the same values up to GEMM row blocking and the order of the
bias-gradient sums (float64 accumulators here).  The NCHW input is copied to NHWC
once per chunk and grad_x copied back.  Used by ``ConvNet`` for numpy arrays whose
layers are ChannelsLast, (Conv2d, Activation)*, Conv2d to a single output, Flatten.
"""
import numpy as np

from ..backend import on_host
from ..kernels import conv as K
from .layers import Activation, ChannelsLast, Conv2d, Flatten


def plan(layers):
    """(conv layers, their weights as GEMM matrices [out_c, kh*kw*in_c], alpha) when
    the fused path applies to ``layers``, else None.  Made once per pass: the weight
    matrices are copies shared by all chunks."""
    if len(layers) < 3 or not isinstance(layers[0], ChannelsLast) or not isinstance(layers[-1], Flatten):
        return None
    body = layers[1:-1]
    convs, acts = body[0::2], body[1::2]
    if len(convs) != len(acts) + 1 or not all(isinstance(c, Conv2d) for c in convs):
        return None
    if not all(isinstance(a, Activation) and a.name in ("relu", "leaky_relu") for a in acts):
        return None
    if convs[-1].out_c != 1 or len({a.name for a in acts}) > 1 or len({a.alpha for a in acts}) > 1:
        return None
    alpha = 0.0 if not acts or acts[0].name == "relu" else acts[0].alpha
    return convs, [np.ascontiguousarray(c._wmat()) for c in convs], alpha


def plan_for(layers, x):
    """``plan(layers)`` for input ``x`` on the host, else None (the layer path)."""
    return plan(layers) if on_host(x) else None


GROUP_ROWS = 512   # output pixels per streamed im2col + GEMM (and GEMM + col2im) group:
# the group's columns stay in L2.  Measured, one 32-image chunk, value + grad_x, medians
# of 6 interleaved rounds: 256 rows 45.3 ms, 512 46.2, 1024 47.9, 4096 48.4, whole 49.7.


def _out_hw(conv, H, W):
    return (H + 2 * conv.pad - conv.k) // conv.stride + 1, (W + 2 * conv.pad - conv.k) // conv.stride + 1


def _groups(B, rows_per_image):
    """Image ranges (b0, b1) of about ``GROUP_ROWS`` output pixels each (at least one image)."""
    g = max(1, GROUP_ROWS // rows_per_image)
    return [(b0, min(B, b0 + g)) for b0 in range(0, B, g)]


def _columns(convs, alpha, zs, l, b0, b1, out):
    """im2col of layer l's input for images b0:b1 into ``out``: zs[0] is the network
    input (NHWC), zs[l] for l > 0 the raw output of conv l-1, to which its bias and
    the activation are applied on the fly."""
    layer = convs[l]
    k, s, p = layer.k, layer.stride, layer.pad
    a = zs[l]
    Ho, Wo = _out_hw(layer, a.shape[1], a.shape[2])
    if l == 0:
        return K.im2col(a[b0:b1], k, k, s, p, Ho, Wo, out)
    return K.im2col_act(a[b0:b1], convs[l - 1].params["bias"], a.dtype.type(alpha), True, k, k, s, p, Ho, Wo, out)


def _buffer(groups, rows_per_image, width, dtype):
    return np.empty(((groups[0][1] - groups[0][0]) * rows_per_image, width), dtype=dtype)


def forward(convs, wmats, alpha, x):
    """x [B, C, H, W] -> (E [B], zs): zs[0] the input in NHWC, zs[l + 1] the raw GEMM
    output z_l [B, Ho, Wo, c_l] of conv l; im2col + GEMM stream over groups of about
    ``GROUP_ROWS`` output pixels."""
    B = x.shape[0]
    H, W = x.shape[2], x.shape[3]
    zs = [np.ascontiguousarray(x.transpose(0, 2, 3, 1))]
    for l, (layer, Wm) in enumerate(zip(convs, wmats)):
        Ho, Wo = _out_hw(layer, H, W)
        z = np.empty((B, Ho, Wo, layer.out_c), dtype=x.dtype)
        zf = z.reshape(-1, layer.out_c)
        groups = _groups(B, Ho * Wo)
        cols = _buffer(groups, Ho * Wo, Wm.shape[1], x.dtype)
        for b0, b1 in groups:
            c = _columns(convs, alpha, zs, l, b0, b1, cols[:(b1 - b0) * Ho * Wo])
            np.matmul(c, Wm.T, out=zf[b0 * Ho * Wo:b1 * Ho * Wo])
        zs.append(z)
        H, W = Ho, Wo
    e = zs[-1].reshape(B) + convs[-1].params["bias"][0]
    return e, zs


def backward(convs, wmats, alpha, zs, cotangent, grad_x=None):
    """Reverse pass from the cotangent c [B] of E.  With ``grad_x`` ([B, C, H, W]),
    writes c_i grad_x E(x_i) into it and returns None; without, returns the parameter
    gradients of sum_i c_i E(x_i) as {conv index: (weight, bias)} in PyTorch's layout.
    Weight gradients are summed over the same groups as the forward pass, recomputing
    each group's columns (cache-resident) instead of keeping every layer's columns
    (33 MB per 32 images for the n_f = 32 net)."""
    B = zs[0].shape[0]
    dtype = zs[0].dtype
    dt = dtype.type(alpha)
    want_params = grad_x is None
    grads = {}
    gz = cotangent.reshape(B, 1, 1, 1)
    gbias = np.array([cotangent.astype(np.float64).sum()])
    for l in range(len(convs) - 1, -1, -1):
        layer, Wm = convs[l], wmats[l]
        out_c, k, s, p = layer.out_c, layer.k, layer.stride, layer.pad
        Ho, Wo = gz.shape[1], gz.shape[2]
        rows = Ho * Wo
        gzf = gz.reshape(-1, out_c)
        groups = _groups(B, rows)
        need_input = l > 0 or not want_params
        if want_params:
            gw = np.empty(Wm.shape, dtype=dtype)
            gw_part = np.empty_like(gw)
            cols = _buffer(groups, rows, Wm.shape[1], dtype)
        if need_input:
            part = _buffer(groups, rows, Wm.shape[1], dtype)
            dest = np.empty(zs[l].shape, dtype=dtype)         # cotangent of z_{l-1} (of x: l = 0)
            # l = 0: no activation before the first layer (col2im_act's apply is False,
            # its z / bias / bias-gradient arguments are unused)
            prev_bias = convs[l - 1].params["bias"] if l > 0 else gbias
            next_gbias = np.zeros(dest.shape[3])
        for g, (b0, b1) in enumerate(groups):
            gzg = gzf[b0 * rows:b1 * rows]
            if want_params:        # grad W = sum over groups of gz^T cols, in a fixed order
                c = _columns(convs, alpha, zs, l, b0, b1, cols[:(b1 - b0) * rows])
                if g == 0:
                    np.matmul(gzg.T, c, out=gw)
                else:
                    gw += np.matmul(gzg.T, c, out=gw_part)
            if need_input:
                c = np.matmul(gzg, Wm, out=part[:(b1 - b0) * rows])
                K.col2im_act(c, zs[l][b0:b1], prev_bias, dt, l > 0, k, k, s, p, Ho, Wo, dest[b0:b1], next_gbias)
        if want_params:
            grads[l] = (gw.reshape(out_c, k, k, -1).transpose(0, 3, 1, 2), gbias.astype(dtype))
        if need_input:
            gz, gbias = dest, next_gbias
    if not want_params:
        grad_x[...] = gz.transpose(0, 3, 1, 2)
    return grads if want_params else None
