import numpy as np
import numba

from particleflow.kernels import vmath


@numba.njit(error_model="numpy")
def _eval(x, a, e, l, s, c, exp, log, sc):
    for i in range(x.size):
        e[i] = exp(a[i])
        l[i] = log(x[i])
        s[i], c[i] = sc(x[i])


def _run(dtype, exp, log, sc):
    rng = np.random.default_rng(0)
    x = rng.uniform(1e-7, 1, 200_000).astype(dtype)
    x[:3] = [dtype(2.0 ** -20), 0.5, 0.75]
    a = (dtype(-30) * x).astype(dtype)
    out = [np.empty_like(x) for _ in range(4)]
    _eval(x, a, *out, exp, log, sc)
    return x.astype(np.float64), a.astype(np.float64), out


def test_float64_within_few_ulp():
    x, a, (e, l, s, c) = _run(np.float64, vmath.exp64, vmath.log64, vmath.sincos2pi64)
    eps = np.finfo(np.float64).eps
    assert np.max(np.abs(e / np.exp(a) - 1)) < 4 * eps
    assert np.max(np.abs(l - np.log(x)) / np.maximum(np.abs(np.log(x)), 1e-300)) < 4 * eps
    assert np.max(np.abs(s - np.sin(2 * np.pi * x))) < 4 * eps
    assert np.max(np.abs(c - np.cos(2 * np.pi * x))) < 4 * eps


def test_float32_accuracy():
    x, a, (e, l, s, c) = _run(np.float32, vmath.exp32, vmath.log32, vmath.sincos2pi32)
    assert np.max(np.abs(e / np.exp(a) - 1)) < 4e-7
    assert np.max(np.abs(l - np.log(x))) < 4e-6 * np.max(np.abs(np.log(x)))
    assert np.max(np.abs(s - np.sin(2 * np.pi * x))) < 4e-7
    assert np.max(np.abs(c - np.cos(2 * np.pi * x))) < 4e-7
