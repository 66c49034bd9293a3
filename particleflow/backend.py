"""The one place that decides between numpy (CPU) and CuPy (GPU), and the ``Device``
object a Simulation runs on.

Everything else asks ``array_module(x)``, ``kernel_target(x)`` or an ensemble's
``device``; nothing outside this module tests for CuPy.

A ``Device`` owns three things: the array module (numpy or CuPy), the kernel target
(numba CPU or numba.cuda) and the reductions over particles (sums, means, weight
normalisation, ESS).  Every ensemble-wide reduction of the engine goes through a
device, so that a device spanning several processes can replace them in one place.
"""
import os

import numpy as np

from .kernels._jit import CPU, CUDA

_cupy = None
_cupy_checked = False


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a device, else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # optional dependency: the 'gpu' extra
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # no cupy, no driver or no device: CPU only
            _cupy = None
    return _cupy


def has_gpu():
    return cupy_or_none() is not None


def is_gpu_array(x):
    cp = cupy_or_none()
    return cp is not None and isinstance(x, cp.ndarray)


def on_host(x):
    """True when ``x`` lives in host memory (numpy): the CPU fast paths apply."""
    return not is_gpu_array(x)


def array_module(x):
    """numpy or cupy, whichever owns ``x``."""
    return cupy_or_none() if is_gpu_array(x) else np


def kernel_target(x):
    """The kernel target (``particleflow.kernels._jit.CPU`` or ``CUDA``) for ``x``."""
    return CUDA if is_gpu_array(x) else CPU


def to_numpy(x):
    if x is None:
        return None
    return x.get() if is_gpu_array(x) else np.asarray(x)


def to_device(x, device):
    """Copy ``x`` to ``device`` ("cpu" or "gpu", or a ``Device``); a missing GPU is a
    clear error."""
    if x is None:
        return None
    name = getattr(device, "name", device)
    if name in ("cpu", "cudasim"):
        return to_numpy(x)
    if name == "gpu":
        cp = cupy_or_none()
        if cp is None:
            raise RuntimeError(
                "device='gpu' needs CuPy and a CUDA device; none was found. "
                "Install the 'gpu' extra (pip install particleflow[gpu]) on a machine "
                "with a GPU, or use device='cpu'.")
        return cp.asarray(x)
    raise ValueError(f"device must be 'cpu' or 'gpu'; got {device!r}")


class Device:
    """Where a Simulation's arrays live and its kernels and reductions run.

    ``Device("cpu")``: numpy arrays, numba CPU kernels.  ``Device("gpu")``: CuPy arrays,
    numba.cuda kernels (needs the 'gpu' extra and a CUDA device).  ``Device("cudasim")``:
    numpy arrays and the numba.cuda kernels run by numba's CUDA simulator (needs
    ``NUMBA_ENABLE_CUDASIM=1`` before numba is imported; slow, for testing the GPU
    kernels on a machine without one).  A Device compares
    equal to its name, so ``ensemble.device == "cpu"`` reads naturally.

    Reductions (``sum``, ``mean``, ``normalised_weights``, ``ess``, ``weighted_mean``)
    are over the particle axis 0 and return arrays of this device (scalars as Python
    floats where noted); they are the single place where a multi-process device adds
    its communication."""

    def __init__(self, name="cpu"):
        if name not in ("cpu", "gpu", "cudasim"):
            raise ValueError(f"device must be 'cpu', 'gpu' or 'cudasim'; got {name!r}")
        if name == "gpu" and cupy_or_none() is None:
            to_device(np.zeros(1), "gpu")             # raises the clear 'no GPU' error
        if name == "cudasim" and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            raise ValueError("device 'cudasim' needs NUMBA_ENABLE_CUDASIM=1 in the environment "
                             "before particleflow (numba) is imported")
        self.name = name

    @property
    def xp(self):
        return cupy_or_none() if self.name == "gpu" else np

    @property
    def target(self):
        return CPU if self.name == "cpu" else CUDA

    @classmethod
    def of(cls, x):
        """The device that owns array ``x``."""
        return GPU_DEVICE() if is_gpu_array(x) else CPU_DEVICE

    # ------------------------------------------------------------ reductions
    def sum(self, x):
        """Sum over particles (axis 0)."""
        return x.sum(0)

    def mean(self, x):
        """Mean over particles (axis 0)."""
        return x.mean(0)

    def normalised_weights(self, log_weights, n, dtype):
        """w_i = exp(l_i - max l) / sum_j exp(l_j - max l); uniform for None."""
        xp = self.xp
        if log_weights is None:
            return xp.full(n, 1.0 / n, dtype=dtype)
        w = xp.exp(log_weights - log_weights.max())
        return w / w.sum()

    def ess(self, log_weights, n, dtype):
        """Kish effective sample size 1 / sum w_i^2 of the normalised weights (float)."""
        if log_weights is None:
            return float(n)
        w = self.normalised_weights(log_weights, n, dtype)
        return float(1.0 / (w * w).sum())

    def weighted_mean(self, x, log_weights):
        """Weighted mean of the rows of ``x`` [n, k] (plain mean when unweighted)."""
        if log_weights is None:
            return self.mean(x)
        return self.normalised_weights(log_weights, x.shape[0], x.dtype) @ x

    def __eq__(self, other):
        if isinstance(other, Device):
            return other.name == self.name
        return other == self.name

    def __hash__(self):
        return hash(self.name)

    def __str__(self):
        return self.name

    def __repr__(self):
        return repr(self.name)


CPU_DEVICE = Device("cpu")
_gpu_device = []


def GPU_DEVICE():
    """The (lazily created) GPU device."""
    if not _gpu_device:
        _gpu_device.append(Device("gpu"))
    return _gpu_device[0]


def get_device(device):
    """A ``Device`` from a Device, "cpu" or "gpu"."""
    if isinstance(device, Device):
        return device
    if device == "cpu":
        return CPU_DEVICE
    if device == "gpu":
        return GPU_DEVICE()
    if device == "cudasim":
        return Device("cudasim")
    raise ValueError(f"device must be 'cpu', 'gpu', 'cudasim' or a particleflow Device; got {device!r}")
