"""CuPy paths against the numpy ones; skipped cleanly without CuPy or a CUDA device."""
import numpy as np
import pytest

import particleflow as pf

if not pf.backend.has_gpu():
    pytest.skip("needs CuPy and a CUDA device", allow_module_level=True)

import cupy as cp  # noqa: E402


def ring():
    ang = 2 * np.pi * np.arange(6) / 6
    return pf.energies.GaussianMixture(3 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=1.0)


def test_ensemble_roundtrip():
    e = pf.Ensemble(np.random.default_rng(0).standard_normal((100, 3)), log_weights=np.zeros(100))
    g = e.to("gpu")
    assert isinstance(g.x, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(g.mean()), e.mean(), rtol=1e-12)
    np.testing.assert_array_equal(g.to("cpu").x, e.x)


def test_philox_same_integers_on_gpu():
    s = pf.random.Stream(3)
    ids = np.arange(1000)
    u_cpu = s.uniform(7, ids, 5)
    u_gpu = s.uniform(7, cp.asarray(ids), 5)
    np.testing.assert_array_equal(cp.asnumpy(u_gpu), u_cpu)
    np.testing.assert_allclose(cp.asnumpy(s.normal(7, cp.asarray(ids), 5)), s.normal(7, ids, 5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [lambda e: pf.moves.Langevin(e, 0.05), lambda e: pf.moves.MALA(e, 0.2),
                                  lambda e: pf.moves.HMC(e, 0.1, 3)])
def test_fused_moves_match_cpu(make):
    mix = ring()
    x0 = np.random.default_rng(1).standard_normal((4096, 2))
    a, b = pf.Ensemble(x0), pf.Ensemble(x0).to("gpu")
    ma, mb = make(mix), make(mix)
    for t in range(10):
        ma(a, pf.random.Stream(0), t)
        mb(b, pf.random.Stream(0), t)
    np.testing.assert_allclose(cp.asnumpy(b.x), a.x, rtol=1e-9, atol=1e-9)


def test_networks_match_numpy():
    for net_cpu, net_gpu, shape in (
            (pf.energies.MLP([3, 16, 1], seed=0), pf.energies.MLP([3, 16, 1], seed=0).to("gpu"), (50, 3)),
            (pf.energies.ConvNet((2, 8, 8), [4, 1], [3, 4], [1, 2], [1, 0], seed=0),
             pf.energies.ConvNet((2, 8, 8), [4, 1], [3, 4], [1, 2], [1, 0], seed=0).to("gpu"), (5, 2, 8, 8))):
        x = np.random.default_rng(2).standard_normal(shape)
        v = np.random.default_rng(3).standard_normal(shape)
        np.testing.assert_allclose(cp.asnumpy(net_gpu.grad(cp.asarray(x))), net_cpu.grad(x), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cp.asnumpy(net_gpu.hvp(cp.asarray(x), cp.asarray(v))), net_cpu.hvp(x, v),
                                   rtol=1e-10, atol=1e-12)
