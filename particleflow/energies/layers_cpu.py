"""The CPU fast paths of the layers in ``layers.py`` (as ``mlp_cpu.py`` is the MLP's):
each takes numpy arrays and returns None where it does not apply (CuPy arrays,
``backend.reference_path()``, layouts it does not handle); the layer then runs its
array code, the reference, which is what a GPU runs.  Same numbers as the array code
to rounding (``tests/test_networks.py``, ``tests/test_reference_path.py``).

* an activation's value and sigma' in one fused pass (``kernels/activations.py``);
* im2col / col2im as numba kernels (``kernels/conv.py``) instead of strided views;
* a convolution's forward pass and input adjoint streamed over groups of batch
  elements, so that the [rows, kh*kw*C] columns are never built for the whole batch.
"""
import numpy as np

from ..backend import on_host
from ..kernels import conv
from ..kernels.activations import bias_activation


def conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def activation_forward(name, alpha, a):
    """(sigma(a), sigma'(a)) in one pass, or None where it does not apply."""
    if not (on_host(a) and a.ndim >= 2 and a.flags.c_contiguous):
        return None
    z = a.reshape(-1, a.shape[-1])
    out, d1 = np.empty_like(z), np.empty_like(z)
    bias_activation(z, np.zeros(z.shape[1], a.dtype), name, alpha, d1, out=out)
    return out.reshape(a.shape), d1.reshape(a.shape)


def im2col(x, kh, kw, stride, pad):
    """(columns [B*Ho*Wo, kh*kw*C], (Ho, Wo)) of x [B, H, W, C], or None off the host."""
    if not on_host(x):
        return None
    B, H, W, C = x.shape
    Ho, Wo = conv_out(H, kh, stride, pad), conv_out(W, kw, stride, pad)
    out = np.empty((B * Ho * Wo, kh * kw * C), dtype=x.dtype)
    return conv.im2col(np.ascontiguousarray(x), kh, kw, stride, pad, Ho, Wo, out), (Ho, Wo)


def col2im(cols, shape, kh, kw, stride, pad):
    """The adjoint of ``im2col`` into an array of ``shape``, or None off the host."""
    if not on_host(cols):
        return None
    B, H, W, C = shape
    Ho, Wo = conv_out(H, kh, stride, pad), conv_out(W, kw, stride, pad)
    out = np.empty(shape, dtype=cols.dtype)
    return conv.col2im(np.ascontiguousarray(cols), kh, kw, stride, pad, Ho, Wo, out)


def conv_forward_streamed(layer, a, Wm):
    """z = conv(a) + b by im2col + GEMM over groups of batch elements, or None off the
    host (the columns are only needed for parameter gradients, so a pass that needs
    none never holds them for the whole batch)."""
    if not on_host(a):
        return None
    B = a.shape[0]
    Ho, Wo = conv_out(a.shape[1], layer.k, layer.stride, layer.pad), \
        conv_out(a.shape[2], layer.k, layer.stride, layer.pad)
    a = np.ascontiguousarray(a)
    z = np.empty((B, Ho, Wo, layer.out_c), dtype=a.dtype)
    group = max(1, layer.group_rows // (Ho * Wo))
    cols = np.empty((min(B, group) * Ho * Wo, layer.k * layer.k * layer.in_c), dtype=a.dtype)
    for b0 in range(0, B, group):
        b1 = min(B, b0 + group)
        c = conv.im2col(a[b0:b1], layer.k, layer.k, layer.stride, layer.pad, Ho, Wo,
                        cols[:(b1 - b0) * Ho * Wo])
        np.matmul(c, Wm.T, out=z[b0:b1].reshape(-1, layer.out_c))
    z += layer.params["bias"]
    return z


def conv_input_adjoint(layer, zb, Wm, shape):
    """col2im(zb W) over groups of batch elements, so that the [rows, kh*kw*in_c]
    intermediate stays cache-sized instead of a full-batch array; None off the host."""
    if not on_host(zb):
        return None
    B, Ho, Wo, _ = zb.shape
    out = np.empty(shape, dtype=zb.dtype)
    group = max(1, layer.group_rows // (Ho * Wo))
    for b0 in range(0, B, group):
        b1 = min(B, b0 + group)
        part = zb[b0:b1].reshape(-1, layer.out_c) @ Wm
        conv.col2im(part, layer.k, layer.k, layer.stride, layer.pad, Ho, Wo, out[b0:b1])
    return out
