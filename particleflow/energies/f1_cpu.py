"""The CPU fast paths of ``f1.py``: the pairwise neuron / particle sums as numba block
kernels with fixed-order sums (``kernels/pairwise.py``).  Each returns None where it
does not apply (CuPy arrays, ``backend.reference_path()``); ``f1.py`` then launches
the same kernels' array-module form, the reference (``tests/test_reference_path.py``)."""
import numpy as np

from ..backend import on_host
from ..kernels.pairwise import network_cpu, neuron_partials_cpu, neuron_sums_cpu


def neuron_partials(theta, x, c):
    """Per-block partial sums (S, G) over the rows of x, or None off the host."""
    if not on_host(theta):
        return None
    return neuron_partials_cpu(theta, np.ascontiguousarray(x), c)


def neuron_sums(theta, x, c):
    """(S, G) = (c sum_i relu(<theta_j, x_i>), c sum_i 1[.] x_i), or None off the host."""
    return neuron_sums_cpu(theta, x, c) if on_host(theta) else None


def network(x, theta, a):
    """(f, grad_x f) of sum_j a_j relu(<theta_j, x>), or None off the host."""
    if not on_host(x):
        return None
    return network_cpu(np.ascontiguousarray(x), np.ascontiguousarray(theta), np.asarray(a, dtype=x.dtype))
