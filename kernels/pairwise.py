"""Pairwise particle-neuron sums of F1 (two-layer ReLU) networks (paper 001).

Neuron side (the Wasserstein-Fisher-Rao potential, one thread per neuron j)::

    S_j = sum_i c * relu(<theta_j, x_i>)          G_j = sum_i c * 1[<theta_j, x_i> > 0] x_i

accumulated into ``S [m]`` and ``G [m * d]`` (called once for the particles with
c = 1/N and once for the data with c = -1/n gives F_t(theta_j) and grad F_t).

Particle side (the energy and its gradient, one thread per particle i)::

    f_i = sum_j a_j relu(<theta_j, x_i>)          g_i = sum_j a_j 1[<theta_j, x_i> > 0] theta_j

with a_j = sign_j w_j / m.  Each output is owned by one thread and summed in a fixed
order, so results are deterministic for any thread count.
"""
import numpy as np

from ._jit import build_kernel, compile_source

SRC = '''
def neuron_sums_body(j, theta, x, n_x, d, c, S, G):
    s = S[j]
    for i in range(n_x):
        dot = theta[j * d] * x[i * d]
        for k in range(1, d):
            dot += theta[j * d + k] * x[i * d + k]
        if dot > 0:
            s += c * dot
            for k in range(d):
                G[j * d + k] += c * x[i * d + k]
    S[j] = s

def network_body(i, x, theta, a, m, d, f, g):
    acc = a[0] * 0
    for k in range(d):
        g[i * d + k] = acc
    for j in range(m):
        dot = theta[j * d] * x[i * d]
        for k in range(1, d):
            dot += theta[j * d + k] * x[i * d + k]
        if dot > 0:
            acc += a[j] * dot
            for k in range(d):
                g[i * d + k] += a[j] * theta[j * d + k]
    f[i] = acc
'''
_ARGS = {
    "neuron_sums": [("theta", "d"), ("x", None), ("n_x", None), ("d", None), ("c", None),
                    ("S", 1), ("G", "d")],
    "network": [("x", "d"), ("theta", None), ("a", None), ("m", None), ("d", None),
                ("f", 1), ("g", "d")],
}
_CACHE = {}


def kernel(kind, target):
    """``neuron_sums``: ``launch(m, theta, x, n_x, d, c, S, G)`` (adds into S, G);
    ``network``: ``launch(n, x, theta, a, m, d, f, g)`` (overwrites f, g)."""
    key = (kind, target.name)
    if key not in _CACHE:
        ns = {"np": np}
        compile_source(ns, SRC, target, "<pairwise>")
        _CACHE[key] = build_kernel(ns, f"{kind}_body", _ARGS[kind], target)
    return _CACHE[key]
