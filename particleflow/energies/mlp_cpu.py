"""The CPU fast paths of ``networks.MLP`` (as ``convnet_cpu.py`` is ConvNet's): each
takes the network and numpy arrays and returns None / False where it does not apply
(CuPy arrays, ``backend.reference_path()``, layouts it does not handle); the MLP then
runs its layer path, the reference.  Same numbers as the layer path to rounding
(``tests/test_networks.py``, ``tests/test_reference_path.py``).

* tanh networks with a hidden layer: each pass is one numba kernel (``kernels/mlp.py``:
  BLAS GEMMs and fused elementwise loops over chunks of 512 rows on numba's threads);
* other activations: each hidden layer is one GEMM plus one fused bias + activation
  pass that also stores sigma' (``kernels/activations.py``); chunks of ``batch_size``
  rows run in parallel (``chunks.py``).
"""
import numpy as np

from ..backend import on_host
from ..kernels import mlp as kernels
from ..kernels.activations import bias_activation
from .chunks import single_threaded_blas


def weights_and_biases(net):
    dense = net.dense_layers()
    return [d.params["weight"] for d in dense], [d.params["bias"] for d in dense]


def whole_pass(net, x):
    """Whether the whole-pass kernel of ``kernels/mlp.py`` applies to ``net`` and ``x``."""
    return (net.activation == "tanh" and len(net.sizes) > 2 and on_host(x)
            and all(d.params["weight"].flags.c_contiguous for d in net.dense_layers()))


def value_and_grad(net, x):
    """(E, grad_x E), or None off the host."""
    if not on_host(x):
        return None
    net._check(x)
    if whole_pass(net, x):
        with single_threaded_blas():
            return kernels.value_and_grad(x, *weights_and_biases(net))
    dense = net.dense_layers()
    act = net.layers[1] if len(net.layers) > 1 else None
    e = np.empty(x.shape[0], dtype=x.dtype)
    g = np.empty_like(x)

    def chunk(s):
        a = x[s]
        d1s = []
        for layer in dense[:-1]:
            z = a @ layer.params["weight"].T
            d1 = np.empty_like(z)
            # a separate output: in place, LLVM's run-time alias check fails and the
            # loop falls back to scalar code (measured 8x slower)
            a = np.empty_like(z)
            bias_activation(z, layer.params["bias"], act.name, act.alpha, d1, out=a)
            d1s.append(d1)
        wL = dense[-1].params["weight"]
        e[s] = a @ wL[0] + dense[-1].params["bias"][0]
        if not d1s:
            g[s] = wL[0]
            return
        ab = d1s[-1]
        ab *= wL[0]                                   # delta of the last hidden layer
        for i in range(len(dense) - 2, 0, -1):
            ab = ab @ dense[i].params["weight"]
            ab *= d1s[i - 1]
        g[s] = ab @ dense[0].params["weight"]
    net._map(x, chunk)
    return e, g


def grad_into(net, x, out):
    """grad_x E into ``out`` by the whole-pass kernel; False where it does not apply."""
    if not (whole_pass(net, x) and out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous):
        return False
    net._check(x)
    with single_threaded_blas():
        kernels.value_and_grad(x, *weights_and_biases(net), gx=out)
    return True


def ula_step_into(net, x, ids, step, keys, h, c, out):
    """out <- x - h grad E(x) + c z in one pass, z the Langevin normals of particles
    ``ids`` at ``step`` under the Philox key words ``keys`` (drawn chunk by chunk
    inside the pass); False where it does not apply."""
    if not (whole_pass(net, x) and x.ndim == 2 and all(a.shape == x.shape and a.dtype == x.dtype
                                                       and a.flags.c_contiguous for a in (x, out))):
        return False
    net._check(x)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    with single_threaded_blas():
        kernels.noisy_ula_update(x, *weights_and_biases(net), ids, step, *keys, h, c, out)
    return True


def mala_step_into(net, x, e, g, ids, step, keys, logu, h, c, out):
    """One MALA step (``kernels.mlp.noisy_mala_step``: noise, proposal, the energy at
    it and the accept test in one chunk pass) with ``out`` <- the kept states; returns
    (log alpha, accepted, E and grad E of the kept states), or None where it does not
    apply."""
    if not (whole_pass(net, x) and x.ndim == 2 and all(a.shape == x.shape and a.dtype == x.dtype
                                                       and a.flags.c_contiguous for a in (x, g, out))
            and e.shape == (x.shape[0],) and e.dtype == x.dtype):
        return None
    net._check(x)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    with single_threaded_blas():
        return kernels.noisy_mala_step(x, g, e, *weights_and_biases(net), ids, step, *keys, logu, h, c, out)


def dsm_loss_and_flat_grad(net, x, x_noisy, sigma2):
    """DEEN's loss and parameter gradient (``dsm.py``) by the whole-pass kernel, the
    gradient as one vector in ``net.params`` order, or None where it does not apply."""
    if not whole_pass(net, x):
        return None
    with single_threaded_blas():
        return kernels.dsm_loss_and_flat_grad(x, x_noisy, *weights_and_biases(net), sigma2)


def dsm_partials(net, x, x_noisy, sigma2, total, rows):
    """``kernels.dsm_partials`` (per-chunk loss and gradient parts of a slice of a batch
    of ``total`` rows), or None where the whole-pass kernel does not apply."""
    if not whole_pass(net, x):
        return None
    with single_threaded_blas():
        return kernels.dsm_partials(x, x_noisy, *weights_and_biases(net), sigma2, total, rows)


def dsm_loss_and_grad(net, x, x_noisy, sigma2):
    """``dsm_loss_and_flat_grad`` with the gradient as a dict like ``net.params``."""
    out = dsm_loss_and_flat_grad(net, x, x_noisy, sigma2)
    if out is None:
        return None
    loss, g = out
    grads, i = {}, 0
    for name, p in net.params.items():
        grads[name] = g[i:i + p.size].reshape(p.shape)
        i += p.size
    return loss, grads
