"""Layers with hand-derived first and second derivatives (no autodiff library).

Every layer maps a primal ``a`` and an optional tangent ``at`` (a direction in the
input, pushed forward: JVP) to ``(z, zt)``, and back-propagates a pair of cotangents
``(zb, ztb)`` for ``(z, zt)`` to ``(ab, atb)`` and parameter gradients.  Running the
reverse pass through the tangent-augmented forward pass ("reverse-over-forward")
gives, for a network E with scalar output and the tangent v fed at the input:

* grad_x E and grad_theta sum_i c_i E(x_i):           zb = c at the output, no tangent;
* H v = grad_x (v . grad_x E) and
  grad_theta sum_i c_i (v_i . grad_x E(x_i)):         zb = 0, ztb = c at the output.

Rules (sigma an activation, W a weight):
    dense / conv   z = W a + b,   zt = W at
                   ab = W^T zb,  atb = W^T ztb,  Wb = zb a^T + ztb at^T,  bb = sum zb
    activation     a' = sigma(z),  at' = sigma'(z) zt
                   zb = sigma'(z) ab' + sigma''(z) zt atb',   ztb = sigma'(z) atb'

Arrays are batched on the first axis and work on numpy or CuPy (``xp``).
Conv2d is im2col + matmul (BLAS / cuBLAS), col2im for the adjoint.
"""
import math

import numpy as np

from ..backend import array_module


# ---------------------------------------------------------------- activations
def _sigmoid(z, xp):
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


ACTIVATIONS = ("tanh", "relu", "leaky_relu", "softplus", "silu")


def activation_derivatives(name, z, alpha=0.2):
    """(sigma(z), sigma'(z), sigma''(z))."""
    xp = array_module(z)
    if name == "tanh":
        t = xp.tanh(z)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    if name == "relu":
        pos = (z > 0).astype(z.dtype)
        return z * pos, pos, xp.zeros_like(z)
    if name == "leaky_relu":
        slope = xp.where(z > 0, z.dtype.type(1), z.dtype.type(alpha))
        return z * slope, slope, xp.zeros_like(z)
    if name == "softplus":
        s = _sigmoid(z, xp)
        return xp.logaddexp(z.dtype.type(0), z), s, s * (1 - s)
    if name == "silu":
        s = _sigmoid(z, xp)
        ds = s * (1 - s)
        return z * s, s + z * ds, ds * (2 + z * (1 - 2 * s))
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


class Activation:
    params = {}

    def __init__(self, name, alpha=0.2):
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
        self.name, self.alpha = name, float(alpha)

    def forward(self, a, at=None):
        if at is None and self.name in ("relu", "leaky_relu"):
            slope = activation_derivatives(self.name, a, self.alpha)[1]
            return a * slope, None, (slope, None, None)
        s, d1, d2 = activation_derivatives(self.name, a, self.alpha)
        zt = None if at is None else d1 * at
        return s, zt, (d1, d2, at)

    def backward(self, cache, zb, ztb=None, need_params=True):
        d1, d2, at = cache
        ab = d1 * zb if zb is not None else None
        if ztb is not None:
            extra = d2 * at * ztb
            ab = extra if ab is None else ab + extra
            atb = d1 * ztb
        else:
            atb = None
        return ab, atb, {}

    def __repr__(self):
        return f"Activation({self.name!r})"


# ---------------------------------------------------------------- linear layers
def _kaiming_uniform(rng, shape, fan_in):
    # PyTorch's default for Linear/Conv2d: kaiming_uniform_(a=sqrt(5)) -> bound 1/sqrt(fan_in)
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


class Dense:
    """z = a W^T + b with PyTorch's layout: weight (out, in), bias (out,)."""

    def __init__(self, n_in, n_out, rng, dtype=np.float64):
        self.n_in, self.n_out = n_in, n_out
        self.params = {"weight": _kaiming_uniform(rng, (n_out, n_in), n_in).astype(dtype),
                       "bias": _kaiming_uniform(rng, (n_out,), n_in).astype(dtype)}

    def forward(self, a, at=None):
        W, b = self.params["weight"], self.params["bias"]
        z = a @ W.T + b
        zt = None if at is None else at @ W.T
        return z, zt, (a, at)

    def backward(self, cache, zb, ztb=None, need_params=True):
        a, at = cache
        W = self.params["weight"]
        grads = {}
        ab = atb = None
        if zb is not None:
            ab = zb @ W
            if need_params:
                grads["weight"] = zb.T @ a
                grads["bias"] = zb.sum(0)
        if ztb is not None:
            atb = ztb @ W
            if need_params:
                gw = ztb.T @ at
                grads["weight"] = gw if "weight" not in grads else grads["weight"] + gw
                grads.setdefault("bias", ztb.sum(0) * 0)
        return ab, atb, grads

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"


def _conv_out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def im2col(x, kh, kw, stride, pad):
    """x [B, C, H, W] -> columns [B, Ho*Wo, C*kh*kw].  numba kernel on the CPU
    (``kernels/conv.py``), strided view + copy on CuPy (``im2col_xp``)."""
    B, C, H, W = x.shape
    Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
    if array_module(x) is np:
        from ..kernels import conv
        out = np.empty((B, Ho * Wo, C * kh * kw), dtype=x.dtype)
        return conv.im2col(np.ascontiguousarray(x), kh, kw, stride, pad, Ho, Wo, out), (Ho, Wo)
    return im2col_xp(x, kh, kw, stride, pad)


def col2im(cols, shape, kh, kw, stride, pad):
    """Adjoint of im2col: columns [B, Ho*Wo, C*kh*kw] -> [B, C, H, W] (sums overlaps)."""
    B, C, H, W = shape
    if array_module(cols) is np:
        from ..kernels import conv
        Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
        out = np.empty(shape, dtype=cols.dtype)
        return conv.col2im(np.ascontiguousarray(cols), kh, kw, stride, pad, Ho, Wo, out)
    return col2im_xp(cols, shape, kh, kw, stride, pad)


def im2col_xp(x, kh, kw, stride, pad):
    """Array-module version of ``im2col`` (numpy oracle, CuPy path)."""
    xp = array_module(x)
    B, C, H, W = x.shape
    if pad:
        x = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
    s = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, shape=(B, C, kh, kw, Ho, Wo), strides=(s[0], s[1], s[2], s[3], s[2] * stride, s[3] * stride))
    return view.transpose(0, 4, 5, 1, 2, 3).reshape(B, Ho * Wo, C * kh * kw), (Ho, Wo)


def col2im_xp(cols, shape, kh, kw, stride, pad):
    """Array-module version of ``col2im`` (numpy oracle, CuPy path)."""
    xp = array_module(cols)
    B, C, H, W = shape
    Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
    out = xp.zeros((B, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    # one transposing copy to [kh, kw, B, C, Ho, Wo], then kh*kw contiguous strided adds
    c = xp.ascontiguousarray(cols.reshape(B, Ho, Wo, C, kh, kw).transpose(4, 5, 0, 3, 1, 2))
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride] += c[i, j]
    return out[:, :, pad:pad + H, pad:pad + W] if pad else out


class Conv2d:
    """2-D convolution (cross-correlation) with PyTorch's layout: weight
    (out_c, in_c, kh, kw), bias (out_c,); input [B, C, H, W]."""

    def __init__(self, in_c, out_c, kernel, stride, padding, rng, dtype=np.float64):
        self.in_c, self.out_c, self.k, self.stride, self.pad = in_c, out_c, kernel, stride, padding
        fan_in = in_c * kernel * kernel
        self.params = {"weight": _kaiming_uniform(rng, (out_c, in_c, kernel, kernel), fan_in).astype(dtype),
                       "bias": _kaiming_uniform(rng, (out_c,), fan_in).astype(dtype)}

    def _lin(self, cols, Ho, Wo, B):
        # one GEMM over all batch rows and pixels: [B*Ho*Wo, K] @ [K, out_c]
        Wm = self.params["weight"].reshape(self.out_c, -1)
        z = cols.reshape(-1, cols.shape[-1]) @ Wm.T
        return z.reshape(B, Ho * Wo, self.out_c).transpose(0, 2, 1).reshape(B, self.out_c, Ho, Wo)

    def forward(self, a, at=None):
        B = a.shape[0]
        cols, (Ho, Wo) = im2col(a, self.k, self.k, self.stride, self.pad)
        z = self._lin(cols, Ho, Wo, B) + self.params["bias"][None, :, None, None]
        colst = None
        zt = None
        if at is not None:
            colst, _ = im2col(at, self.k, self.k, self.stride, self.pad)
            zt = self._lin(colst, Ho, Wo, B)
        return z, zt, (a.shape, cols, colst)

    def _adjoint(self, zb, shape, cols, need_input, need_params):
        B = zb.shape[0]
        zb_m = zb.reshape(B, self.out_c, -1).transpose(0, 2, 1).reshape(-1, self.out_c)   # [B*HoWo, out_c]
        Wm = self.params["weight"].reshape(self.out_c, -1)
        K = Wm.shape[1]
        ab = col2im((zb_m @ Wm).reshape(B, -1, K), shape, self.k, self.k, self.stride, self.pad) \
            if need_input else None
        if not need_params:
            return ab, None, None
        gw = (zb_m.T @ cols.reshape(-1, K)).reshape(self.params["weight"].shape)
        return ab, gw, zb_m.sum(0)

    def backward(self, cache, zb, ztb=None, need_params=True, need_input=True):
        shape, cols, colst = cache
        grads = {}
        ab = atb = None
        if zb is not None:
            ab, gw, gb = self._adjoint(zb, shape, cols, need_input, need_params)
            if need_params:
                grads["weight"], grads["bias"] = gw, gb
        if ztb is not None:
            atb, gw, _ = self._adjoint(ztb, shape, colst, need_input, need_params)
            if need_params:
                grads["weight"] = gw if "weight" not in grads else grads["weight"] + gw
                grads.setdefault("bias", self.params["bias"] * 0)
        return ab, atb, grads

    def __repr__(self):
        return f"Conv2d({self.in_c}, {self.out_c}, k={self.k}, s={self.stride}, p={self.pad})"


class Flatten:
    params = {}

    def forward(self, a, at=None):
        return a.reshape(a.shape[0], -1), None if at is None else at.reshape(at.shape[0], -1), a.shape

    def backward(self, shape, zb, ztb=None, need_params=True):
        return (None if zb is None else zb.reshape(shape)), (None if ztb is None else ztb.reshape(shape)), {}

    def __repr__(self):
        return "Flatten()"
