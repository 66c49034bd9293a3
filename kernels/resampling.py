"""Ancestor selection from sorted uniforms (the inverse-CDF step of resampling).

Every scheme of ``particleflow.moves.Resample`` reduces to: given the cumulative
weights ``cdf [n]`` (cdf[-1] = 1) and *sorted* uniforms ``u [m]``, find
``ancestor[j] = min{i : u_j < cdf[i]}``.

* ``ancestors_merge`` (CPU): one O(n + m) merge pass (Chopin & Papaspiliopoulos,
  Algorithm 9.1); inherently sequential, so it is a serial numba loop.
* ``search`` (CPU and GPU, one source): per-output binary search, O(log n) per
  output, fully parallel: the GPU path and the CPU cross-check.
"""
import numpy as np
import numba

from ._jit import CPU, build_kernel, compile_source


@numba.njit(error_model="numpy", cache=False)
def ancestors_merge(cdf, u, out):
    n = cdf.shape[0]
    i = 0
    for j in range(u.shape[0]):
        while i < n - 1 and u[j] >= cdf[i]:
            i += 1
        out[j] = i


SEARCH_SRC = '''
def search_body(j, u, cdf, n, out):
    lo = 0
    hi = n - 1
    uj = u[j]
    while lo < hi:
        mid = (lo + hi) // 2
        if uj < cdf[mid]:
            hi = mid
        else:
            lo = mid + 1
    out[j] = lo
'''
_ARGS = [("u", 1), ("cdf", None), ("n", None), ("out", 1)]
_CACHE = {}


def search(target):
    """Launcher ``launch(m, u, cdf, n, out)`` (float64 u and cdf, int64 out)."""
    if target.name not in _CACHE:
        ns = {"np": np}
        compile_source(ns, SEARCH_SRC, target, "<resample-search>")
        _CACHE[target.name] = build_kernel(ns, "search_body", _ARGS, target)
    return _CACHE[target.name]


__all__ = ["ancestors_merge", "search", "CPU"]
