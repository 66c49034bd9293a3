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
from . import layers_cpu
from .layers_cpu import conv_out as _conv_out


# ---------------------------------------------------------------- activations
def _sigmoid(z, xp):
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


ACTIVATIONS = ("tanh", "relu", "leaky_relu", "softplus", "silu")


def activation_derivatives(name, z, alpha=0.2, second=True):
    """(sigma(z), sigma'(z), sigma''(z)); sigma'' is None unless ``second``."""
    xp = array_module(z)
    if name == "tanh":
        t = xp.tanh(z)
        d1 = 1 - t * t
        return t, d1, (-2 * t * d1 if second else None)
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
        fast = layers_cpu.activation_forward(self.name, self.alpha, a) if at is None else None
        if fast is not None:
            return fast[0], None, (fast[1], None, None)
        if at is None and self.name in ("relu", "leaky_relu"):
            xp = array_module(a)
            slope = xp.where(a > 0, a.dtype.type(1), a.dtype.type(0 if self.name == "relu" else self.alpha))
            return a * slope, None, (slope, None, None)
        s, d1, d2 = activation_derivatives(self.name, a, self.alpha, second=at is not None)
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


def im2col(x, kh, kw, stride, pad):
    """x [B, H, W, C] (channels last) -> columns [B*Ho*Wo, kh*kw*C].  numba kernel on
    the CPU (``layers_cpu.im2col``), strided view + copy otherwise (``im2col_xp``)."""
    fast = layers_cpu.im2col(x, kh, kw, stride, pad)
    return im2col_xp(x, kh, kw, stride, pad) if fast is None else fast


def col2im(cols, shape, kh, kw, stride, pad):
    """Adjoint of im2col: columns [B*Ho*Wo, kh*kw*C] -> [B, H, W, C] (sums overlaps)."""
    fast = layers_cpu.col2im(cols, shape, kh, kw, stride, pad)
    return col2im_xp(cols, shape, kh, kw, stride, pad) if fast is None else fast


def im2col_xp(x, kh, kw, stride, pad):
    """Array-module version of ``im2col`` (numpy oracle, CuPy path)."""
    xp = array_module(x)
    B, H, W, C = x.shape
    if pad:
        x = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
    s = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, shape=(B, Ho, Wo, kh, kw, C), strides=(s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]))
    return view.reshape(B * Ho * Wo, kh * kw * C), (Ho, Wo)


def col2im_xp(cols, shape, kh, kw, stride, pad):
    """Array-module version of ``col2im`` (numpy oracle, CuPy path)."""
    xp = array_module(cols)
    B, H, W, C = shape
    Ho, Wo = _conv_out(H, kh, stride, pad), _conv_out(W, kw, stride, pad)
    out = xp.zeros((B, H + 2 * pad, W + 2 * pad, C), dtype=cols.dtype)
    c = cols.reshape(B, Ho, Wo, kh, kw, C)
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride, :] += c[:, :, :, i, j, :]
    return out[:, pad:pad + H, pad:pad + W, :] if pad else out


class Conv2d:
    """2-D convolution (cross-correlation) with PyTorch's parameter layout: weight
    (out_c, in_c, kh, kw), bias (out_c,).  Activations are channels-last internally
    ([B, H, W, C]: the GEMM output is already in that layout); ``ConvNet`` converts
    its NCHW input once at the start."""

    def __init__(self, in_c, out_c, kernel, stride, padding, rng, dtype=np.float64):
        self.in_c, self.out_c, self.k, self.stride, self.pad = in_c, out_c, kernel, stride, padding
        fan_in = in_c * kernel * kernel
        self.params = {"weight": _kaiming_uniform(rng, (out_c, in_c, kernel, kernel), fan_in).astype(dtype),
                       "bias": _kaiming_uniform(rng, (out_c,), fan_in).astype(dtype)}

    def _wmat(self):
        # (out_c, in_c, kh, kw) -> (out_c, kh*kw*in_c) matching the column order
        return self.params["weight"].transpose(0, 2, 3, 1).reshape(self.out_c, -1)

    keep_columns = True     # set False by a network pass that needs no parameter gradients
    stream = True
    group_rows = 4096      # output pixels per streamed im2col / col2im group

    def forward(self, a, at=None):
        B = a.shape[0]
        Wm = self._wmat()
        if at is None and self.stream and not self.keep_columns:
            z = layers_cpu.conv_forward_streamed(self, a, Wm)
            if z is not None:
                return z, None, (a.shape, None, None)
        cols, (Ho, Wo) = im2col(a, self.k, self.k, self.stride, self.pad)
        z = (cols @ Wm.T).reshape(B, Ho, Wo, self.out_c) + self.params["bias"]
        colst = zt = None
        if at is not None:
            colst, _ = im2col(at, self.k, self.k, self.stride, self.pad)
            zt = (colst @ Wm.T).reshape(B, Ho, Wo, self.out_c)
        return z, zt, (a.shape, cols, colst)

    def _adjoint(self, zb, shape, cols, need_input, need_params):
        zb_m = zb.reshape(-1, self.out_c)                  # [B*Ho*Wo, out_c], no copy
        Wm = self._wmat()
        ab = None
        if need_input:
            ab = layers_cpu.conv_input_adjoint(self, zb, Wm, shape)
            if ab is None:
                ab = col2im(zb_m @ Wm, shape, self.k, self.k, self.stride, self.pad)
        if not need_params:
            return ab, None, None
        gw = (zb_m.T @ cols).reshape(self.out_c, self.k, self.k, self.in_c).transpose(0, 3, 1, 2)
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


class ChannelsLast:
    """NCHW input -> NHWC (once, at the start of a ConvNet)."""
    params = {}

    def forward(self, a, at=None):
        xp = array_module(a)
        t = None if at is None else xp.ascontiguousarray(at.transpose(0, 2, 3, 1))
        return xp.ascontiguousarray(a.transpose(0, 2, 3, 1)), t, None

    def backward(self, cache, zb, ztb=None, need_params=True):
        f = (lambda u: None if u is None else u.transpose(0, 3, 1, 2))
        return f(zb), f(ztb), {}

    def __repr__(self):
        return "ChannelsLast()"


class Flatten:
    """NHWC -> [B, C*H*W] in PyTorch's (NCHW) flattening order, so that a Dense
    layer after it has PyTorch's weight layout."""
    params = {}

    def forward(self, a, at=None):
        f = (lambda u: None if u is None else u.transpose(0, 3, 1, 2).reshape(u.shape[0], -1))
        return f(a), f(at), a.shape

    def backward(self, shape, zb, ztb=None, need_params=True):
        B, H, W, C = shape
        f = (lambda u: None if u is None else u.reshape(B, C, H, W).transpose(0, 2, 3, 1))
        return f(zb), f(ztb), {}

    def __repr__(self):
        return "Flatten()"
