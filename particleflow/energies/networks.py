"""Energy networks: MLP and ConvNet, with hand-derived derivatives (``layers.py``).

E(x) is the network's scalar output.  Every network provides (contract)::

    value(x) -> [n]          grad(x) -> like x          value_and_grad(x)
    params (dict, PyTorch layout)     set_params(dict)
    grad_params(x, cotangent) -> dict         grad_theta sum_i c_i E(x_i)
    hvp(x, v) -> like x                       grad_x (v . grad_x E)
    grad_params_directional(x, v, cotangent)  grad_theta sum_i c_i (v_i . grad_x E(x_i))

The last two are what DEEN's loss and short-run reconstruction need.  Batches are
processed in chunks of ``batch_size`` (bounded memory), on numpy in parallel on a
thread pool with a single-threaded BLAS (``chunks.py``); parameter gradients are
summed over chunks in chunk order, so results do not depend on the thread count.
tanh MLPs on numpy run ``value_and_grad`` and ``dsm_loss_and_grad`` as one numba
kernel each (``kernels/mlp.py``, fixed 512-row chunks).
"""
import contextlib

import numpy as np

from ..backend import array_module, fast_paths_on, to_device
from . import convnet_cpu, dsm, mlp_cpu
from .analytic import Energy, cotangent_vector
from .chunks import map_chunks_for
from .layers import ACTIVATIONS, Activation, ChannelsLast, Conv2d, Dense, Flatten


class Network(Energy):
    def __init__(self, layers, input_shape, batch_size=8192):
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.dim = int(np.prod(self.input_shape))
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------ parameters
    @property
    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def set_params(self, params):
        """Set parameters from a dict with exactly the names and shapes of ``params``."""
        own = self.params
        missing = set(own) - set(params)
        extra = set(params) - set(own)
        if missing or extra:
            raise ValueError(f"parameter dict does not match the network: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for name, v in params.items():
            if tuple(v.shape) != own[name].shape:
                raise ValueError(f"parameter {name!r} must have shape {own[name].shape}; got {tuple(v.shape)}")
            i, k = name.split(".", 1)
            layer = self.layers[int(i)]
            xp = array_module(layer.params[k])
            layer.params[k] = xp.asarray(v, dtype=layer.params[k].dtype).copy()
        self.parameters_changed()

    def single_dtype(self):
        """Whether every parameter has one dtype (what ``set_flat_params`` needs)."""
        dtypes = {p.dtype for layer in self.layers for p in layer.params.values()}
        return len(dtypes) == 1

    def set_flat_params(self, v):
        """Set every parameter from one vector ``v`` in ``params`` order (``flatten``'s):
        one cast to the parameters' dtype into a fresh array, each parameter a view of
        it (the same numbers as ``set_params`` of the unflattened dict)."""
        if not self.single_dtype():
            raise ValueError("set_flat_params needs parameters of one dtype; use set_params")
        own = [(layer.params, k, p) for layer in self.layers for k, p in layer.params.items()]
        first = own[0][2]
        n = sum(p.size for _, _, p in own)
        if tuple(v.shape) != (n,):
            raise ValueError(f"the flat parameter vector must have shape ({n},); got {tuple(v.shape)}")
        xp = array_module(first)
        flat = xp.array(v, dtype=first.dtype, copy=True)
        i = 0
        for params, k, p in own:
            params[k] = flat[i:i + p.size].reshape(p.shape)
            i += p.size
        self.parameters_changed()

    def to(self, device):
        for layer in self.layers:
            for k in layer.params:
                layer.params[k] = to_device(layer.params[k], device)
        return self

    # ------------------------------------------------------------ core passes
    def _check(self, x, what="x"):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{what} must have shape (n, {', '.join(map(str, self.input_shape))}) "
                             f"for this {type(self).__name__}; got {tuple(x.shape)}")
        dt = next(layer.params["weight"].dtype for layer in self.layers if layer.params)
        if x.dtype != dt:
            raise ValueError(f"{what} has dtype {x.dtype} but the network's parameters are {dt}")

    def _forward(self, x, v=None):
        caches = []
        a, at = x, v
        for layer in self.layers:
            a, at, cache = layer.forward(a, at)
            caches.append(cache)
        return a[:, 0], (None if at is None else at[:, 0]), caches

    def _backward(self, caches, zb, ztb, need_params=True, need_input=True):
        """Reverse pass; parameter gradients only when ``need_params``, the input
        cotangent of the first layer only when ``need_input``."""
        grads = {}
        ab = None if zb is None else zb[:, None]
        atb = None if ztb is None else ztb[:, None]
        for i in range(len(self.layers) - 1, -1, -1):
            first_conv = i == 1 and isinstance(self.layers[0], ChannelsLast)
            if first_conv and not need_input:
                ab, atb, g = self.layers[1].backward(caches[1], ab, atb, need_params, need_input=False)
                return ab, atb, {**grads, **{f"1.{k}": v for k, v in g.items()}}
            else:
                ab, atb, g = self.layers[i].backward(caches[i], ab, atb, need_params)
            for k, v in g.items():
                grads[f"{i}.{k}"] = v
        return ab, atb, grads

    def _chunks(self, n):
        for s in range(0, n, self.batch_size):
            yield slice(s, min(n, s + self.batch_size))

    def _map(self, x, fn):
        """[fn(s) for s over the chunks of x]; on numpy the chunks run in parallel
        (``chunks.map_chunks_for``: bitwise the same for any thread count)."""
        return map_chunks_for(x, fn, self._chunks(x.shape[0]))

    def _sum_in_order(self, parts):
        """Per-chunk parameter gradients summed in chunk order (zeros for an empty batch)."""
        if not parts:
            return {k: array_module(v).zeros_like(v) for k, v in self.params.items()}
        total = parts[0]
        for g in parts[1:]:
            total = {k: total[k] + g[k] for k in total}
        return total

    # ------------------------------------------------------------ public API
    def value(self, x):
        self._check(x)
        xp = array_module(x)
        out = xp.empty(x.shape[0], dtype=x.dtype)

        def chunk(s):
            out[s] = self._forward(x[s])[0]
        with self._no_param_grads():
            self._map(x, chunk)
        return out

    def value_and_grad(self, x):
        self._check(x)
        xp = array_module(x)
        e = xp.empty(x.shape[0], dtype=x.dtype)
        g = xp.empty_like(x)

        def chunk(s):
            es, _, caches = self._forward(x[s])
            e[s] = es
            g[s] = self._backward(caches, xp.ones_like(es), None, need_params=False)[0]
        with self._no_param_grads():
            self._map(x, chunk)
        return e, g

    @contextlib.contextmanager
    def _no_param_grads(self):
        """Conv layers need not keep their im2col columns (only parameter gradients use
        them): they stream im2col + GEMM over groups of batch elements."""
        convs = [layer for layer in self.layers if isinstance(layer, Conv2d)]
        for layer in convs:
            layer.keep_columns = False
        try:
            yield
        finally:
            for layer in convs:
                layer.keep_columns = True

    def grad_params(self, x, cotangent):
        """grad_theta sum_i c_i E(x_i), as a dict like ``params``."""
        self._check(x)
        return self._summed_param_grads(x, None, self._cotangent(x, cotangent))

    def _summed_param_grads(self, x, v, c):
        """Parameter gradients summed over chunks: of sum_i c_i E(x_i) when ``v`` is
        None, else of sum_i c_i (v_i . grad_x E(x_i))."""
        def chunk(s):
            _, _, caches = self._forward(x[s], None if v is None else v[s])
            zb, ztb = (c[s], None) if v is None else (None, c[s])
            return self._backward(caches, zb, ztb, need_input=False)[2]
        total = self._sum_in_order(self._map(x, chunk))
        return {k: total[k] for k in self.params}            # in the order of ``params``

    def piecewise_linear(self):
        """Whether E is piecewise linear in x: dense and conv layers with ReLU or
        LeakyReLU between them (Nijkamp's ConvNets).  Its Hessian is then zero off the
        activations' kinks, a set of measure zero."""
        return all(not isinstance(layer, Activation) or layer.name in ("relu", "leaky_relu")
                   for layer in self.layers)

    def hvp(self, x, v):
        """Hessian-vector products grad_x (v_i . grad_x E(x_i)), shape of x.  For a
        piecewise linear network with finite x and v: zeros without a pass (the tangent
        passes compute exactly these zeros there, sigma'' being 0; tested)."""
        self._check(x)
        self._check(v, "v")
        xp = array_module(x)
        if fast_paths_on() and self.piecewise_linear() and bool(xp.isfinite(x).all()) \
                and bool(xp.isfinite(v).all()):
            return xp.zeros_like(x)
        out = xp.empty_like(x)

        def chunk(s):
            _, et, caches = self._forward(x[s], v[s])
            out[s] = self._backward(caches, None, xp.ones_like(et), need_params=False)[0]
        self._map(x, chunk)
        return out

    def grad_params_directional(self, x, v, cotangent):
        """grad_theta sum_i c_i (v_i . grad_x E(x_i)), as a dict like ``params``."""
        self._check(x)
        self._check(v, "v")
        return self._summed_param_grads(x, v, self._cotangent(x, cotangent))

    def directional_derivative(self, x, v):
        """v_i . grad_x E(x_i) by one forward pass with a tangent (JVP), [n]."""
        self._check(x)
        self._check(v, "v")
        xp = array_module(x)
        out = xp.empty(x.shape[0], dtype=x.dtype)

        def chunk(s):
            out[s] = self._forward(x[s], v[s])[1]
        self._map(x, chunk)
        return out

    @staticmethod
    def _cotangent(x, cotangent):
        return cotangent_vector(x, cotangent)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(map(repr, self.layers))})"


def _dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dt}")
    return dt


class MLP(Network):
    """Fully connected energy network, e.g. ``MLP([2, 32, 32, 32, 1])`` (DEEN, paper 002).

    Parameters
    ----------
    sizes : list of int, input dimension first, last must be 1
    activation : one of tanh, relu, leaky_relu, softplus, silu
    seed : int (PyTorch-default Kaiming-uniform initialisation)
    output_scale : the output layer's initial weights and bias are multiplied by it (the
        initial scale of E; e.g. 1 / sigma^2 for denoising score matching, where
        sigma^2 grad E must reach the scale of the noise)
    """

    def __init__(self, sizes, activation="tanh", seed=0, dtype=np.float64, batch_size=2048, output_scale=1.0):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or sizes[-1] != 1 or min(sizes) < 1:
            raise ValueError(f"sizes must be [d_in, ..., 1] with positive entries; got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        rng = np.random.default_rng(seed)
        dt = _dtype(dtype)
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(Dense(sizes[i], sizes[i + 1], rng, dt))
            if i < len(sizes) - 2:
                layers.append(Activation(activation))
        if isinstance(output_scale, bool) or not isinstance(output_scale, (int, float)) \
                or not np.isfinite(output_scale) or output_scale <= 0:
            raise ValueError(f"output_scale must be a positive finite number; got {output_scale!r}")
        for k in ("weight", "bias"):
            layers[-1].params[k] = (layers[-1].params[k] * output_scale).astype(dt)
        super().__init__(layers, (sizes[0],), batch_size)
        self.sizes = sizes
        self.activation = activation

    def value_and_grad(self, x):
        """E and grad_x E.  On numpy arrays the fast passes of ``mlp_cpu.py`` (tanh
        networks: one whole-pass kernel; others: one GEMM plus one fused bias +
        activation pass per layer), same numbers as the layer path to rounding
        (tested); CuPy arrays and ``reference_path()`` take the layer path."""
        out = mlp_cpu.value_and_grad(self, x)
        return super().value_and_grad(x) if out is None else out

    def grad_into(self, x, out):
        """grad_x E written into ``out`` (like x): moves that keep a gradient buffer
        across steps use it and skip a fresh array's page faults (~3 ms per step for
        25.6 MB at n = 1e5, d = 64).  Same numbers as ``grad``."""
        if not mlp_cpu.grad_into(self, x, out):
            out[...] = self.grad(x)
        return out

    def ula_step_into(self, x, ids, step, keys, h, c, out):
        """out <- x - h grad E(x) + c z with z the Langevin normals of particles ``ids``
        at ``step`` (Philox key words ``keys``), in one pass that draws each 512-row
        chunk's noise and uses its gradient while in cache (the Langevin move's hook).
        Returns False, doing nothing, where the whole-pass kernel does not apply."""
        return mlp_cpu.ula_step_into(self, x, ids, step, keys, h, c, out)

    def mala_step_into(self, x, e, g, ids, step, keys, logu, h, c, out):
        """The MALA move's hook: from E and grad E at x, one step in one chunk pass
        (noise, proposal, E and grad E at it, accept test against ``logu``), ``out``
        <- the kept states; (log alpha, accepted, E and grad E kept), or None where the
        whole-pass kernel does not apply."""
        return mlp_cpu.mala_step_into(self, x, e, g, ids, step, keys, logu, h, c, out)

    def dense_layers(self):
        return self.layers[0::2]

    def dsm_loss_and_grad(self, x, x_noisy, sigma):
        """DEEN's denoising score-matching loss and its parameter gradient
        (``dsm.dsm_loss_and_grad``)."""
        return dsm.dsm_loss_and_grad(self, x, x_noisy, sigma)

    def dsm_loss_and_flat_grad(self, x, x_noisy, sigma):
        """The same, the gradient as one vector in ``params`` order (what a trainer of
        the flattened parameters takes; the whole-pass kernel computes it so)."""
        return dsm.dsm_loss_and_grad(self, x, x_noisy, sigma, flat=True)

    def dsm_partials(self, x, x_noisy, sigma, total, rows):
        """Per-chunk parts (of ``rows`` rows) of the DEEN loss sum and of its flat
        gradient, for a slice of a batch of ``total`` rows (``kernels.mlp.dsm_partials``),
        or None where the whole-pass kernel does not apply."""
        self._check(x)
        self._check(x_noisy, "x_noisy")
        return mlp_cpu.dsm_partials(self, x, x_noisy, float(sigma) ** 2, total, rows)


class ConvNet(Network):
    """Convolutional energy network: conv layers with an activation between them,
    flattened to a scalar by the last layer (a conv to 1x1 or a final Dense).

    Parameters
    ----------
    input_shape : (C, H, W)
    channels, kernels, strides, paddings : per conv layer
    activation : default LeakyReLU(0.2), as in Nijkamp et al. (2019)
    """

    def __init__(self, input_shape, channels, kernels, strides, paddings, activation="leaky_relu",
                 alpha=0.2, seed=0, dtype=np.float64, batch_size=32):
        if not (len(channels) == len(kernels) == len(strides) == len(paddings)) or not channels:
            raise ValueError("channels, kernels, strides and paddings must be non-empty lists of equal length")
        rng = np.random.default_rng(seed)
        dt = _dtype(dtype)
        C, H, W = input_shape
        layers = [ChannelsLast()]
        c_in = C
        for i, (c, k, s, p) in enumerate(zip(channels, kernels, strides, paddings)):
            layers.append(Conv2d(c_in, c, k, s, p, rng, dt))
            H, W = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
            if H < 1 or W < 1:
                raise ValueError(f"conv layer {i} leaves no output pixels for input {input_shape}")
            if i < len(channels) - 1:
                layers.append(Activation(activation, alpha))
            c_in = c
        layers.append(Flatten())
        if c_in * H * W != 1:
            layers.append(Activation(activation, alpha))
            layers.append(Dense(c_in * H * W, 1, rng, dt))
        super().__init__(layers, tuple(input_shape), batch_size)

    def _fused_plan(self, x):
        return convnet_cpu.plan_for(self.layers, x)

    def value(self, x):
        plan = self._fused_plan(x)
        if plan is None:
            return super().value(x)
        self._check(x)
        out = np.empty(x.shape[0], dtype=x.dtype)

        def chunk(s):
            out[s] = convnet_cpu.forward(*plan, x[s])[0]
        self._map(x, chunk)
        return out

    def value_and_grad(self, x):
        """E and grad_x E.  ReLU / LeakyReLU nets on numpy arrays run the fused passes
        of ``convnet_cpu.py`` (the activations are applied inside im2col / col2im);
        other nets, CuPy arrays and ``reference_path()`` take the layer path."""
        plan = self._fused_plan(x)
        if plan is None:
            return super().value_and_grad(x)
        self._check(x)
        e = np.empty(x.shape[0], dtype=x.dtype)
        g = np.empty_like(x)

        def chunk(s):
            e[s], zs = convnet_cpu.forward(*plan, x[s])
            convnet_cpu.backward(*plan, zs, np.ones(len(e[s]), x.dtype), grad_x=g[s])
        self._map(x, chunk)
        return e, g

    def grad_params(self, x, cotangent):
        plan = self._fused_plan(x)
        if plan is None:
            return super().grad_params(x, cotangent)
        self._check(x)
        c = self._cotangent(x, cotangent)
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        convs = plan[0]

        def chunk(s):
            _, zs = convnet_cpu.forward(*plan, x[s])
            grads = convnet_cpu.backward(*plan, zs, c[s])
            out = {}
            for l, (gw, gb) in sorted(grads.items()):
                i = index[id(convs[l])]
                out[f"{i}.weight"], out[f"{i}.bias"] = gw, gb
            return out
        return self._sum_in_order(self._map(x, chunk))

    @classmethod
    def nijkamp(cls, n_f=32, image_size=32, channels=3, **kw):
        """The short-run MCMC paper's ConvNet (its Tables 4-6): conv3x3(n_f) then
        conv4x4 stride 2 doubling the width until 4x4, then conv4x4 to one output,
        LeakyReLU 0.2 between layers.  The paper uses n_f in {32, 64, 128} and
        image_size in {32, 64, 128}; any width n_f >= 1 and any power of two
        image_size >= 8 build the same pattern (8: one stride-2 layer)."""
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8 \
                or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8 (the paper: 32, 64, 128); got {image_size!r}")
        if isinstance(n_f, bool) or not isinstance(n_f, (int, np.integer)) or n_f < 1:
            raise ValueError(f"n_f must be an integer >= 1 (the paper: 32, 64, 128); got {n_f!r}")
        n_down = int(np.log2(image_size // 4))
        ch, ks, ss, ps = [n_f], [3], [1], [1]
        for i in range(n_down):
            ch.append(n_f * 2 ** (i + 1))
            ks.append(4)
            ss.append(2)
            ps.append(1)
        ch.append(1)
        ks.append(4)
        ss.append(1)
        ps.append(0)
        return cls((channels, image_size, image_size), ch, ks, ss, ps, **kw)
