"""The one place that decides between numpy (CPU) and CuPy (GPU).

Everything else asks ``array_module(x)`` or ``kernel_target(x)``; nothing outside this
module tests for CuPy.
"""
import numpy as np

_cupy = None
_cupy_checked = False


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a device, else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
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


def array_module(x):
    """numpy or cupy, whichever owns ``x``."""
    return cupy_or_none() if is_gpu_array(x) else np


def kernel_target(x):
    """The kernel target (``particleflow.kernels._jit.CPU`` or ``CUDA``) for ``x``."""
    from .kernels._jit import CPU, CUDA
    return CUDA if is_gpu_array(x) else CPU


def to_numpy(x):
    if x is None:
        return None
    return x.get() if is_gpu_array(x) else np.asarray(x)


def to_device(x, device):
    """Copy ``x`` to ``device`` ("cpu" or "gpu"); a missing GPU is a clear error."""
    if x is None:
        return None
    if device == "cpu":
        return to_numpy(x)
    if device == "gpu":
        cp = cupy_or_none()
        if cp is None:
            raise RuntimeError(
                "device='gpu' needs CuPy and a CUDA device; none was found. "
                "Install the 'gpu' extra (pip install particleflow[gpu]) on a machine "
                "with a GPU, or use device='cpu'.")
        return cp.asarray(x)
    raise ValueError(f"device must be 'cpu' or 'gpu'; got {device!r}")
