import numpy as np
import pytest
from scipy import stats

import particleflow as pf
from conftest import ring_mixture


def central_fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for j in range(x.shape[1]):
        d = np.zeros_like(x)
        d[:, j] = eps
        g[:, j] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


def _energies():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 3))
    covs = np.stack([np.eye(3) * 0.5, A @ A.T + 0.3 * np.eye(3), np.diag([1.0, 2.0, 0.3])])
    return [
        pf.energies.Gaussian(np.array([0.5, -1.0]), np.array([[1000.0, -1.0], [-1.0, 2.0]])),
        ring_mixture(),
        pf.energies.GaussianMixture(rng.standard_normal((3, 3)), covariances=covs, weights=[0.2, 0.5, 0.3]),
        pf.energies.GaussianMixture(rng.standard_normal((4, 5)), scale=[0.5, 1.0, 2.0, 0.7]),
    ]


@pytest.mark.parametrize("energy", _energies(), ids=repr)
def test_gradient_matches_central_differences(energy):
    x = np.random.default_rng(2).standard_normal((20, energy.dim)) * 0.5
    g = energy.grad(x)
    fd = central_fd_grad(energy.value, x)
    rel = np.linalg.norm(g - fd) / np.linalg.norm(fd)
    assert rel < 1e-6


@pytest.mark.parametrize("energy", _energies()[1:], ids=repr)
def test_mixture_value_is_exact_negative_log_density(energy):
    x = np.random.default_rng(3).standard_normal((10, energy.dim))
    dens = sum(w * stats.multivariate_normal(m, c).pdf(x)
               for w, m, c in zip(energy.weights, energy.means, energy.covariances))
    np.testing.assert_allclose(energy.value(x), -np.log(dens), rtol=1e-10)


def test_fused_energy_kernel_matches_array_path():
    from particleflow.kernels.analytic import kernel
    from particleflow.kernels._jit import CPU
    for energy in _energies():
        x = np.random.default_rng(4).standard_normal((1000, energy.dim))
        mu, prec, logc, iso = energy.fused_params(np.float64)
        e = np.empty(1000)
        g = np.empty(1000 * energy.dim)
        kernel("energy_grad", energy.dim, logc.size, iso, np.float64, CPU)(
            1000, x.ravel(), e, g, mu, prec, logc)
        e_ref, g_ref = energy.value_and_grad(x)
        np.testing.assert_allclose(e, e_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g.reshape(x.shape), g_ref, rtol=1e-12, atol=1e-12)


def test_gaussian_value_and_moments():
    e = pf.energies.Gaussian(np.array([1.0, 2.0]), np.array([[2.0, 0.5], [0.5, 1.0]]))
    x = np.array([[1.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(e.value(x), [0.0, 1.0])
    mix = ring_mixture()
    # exact mixture moments: mean 0, cov = I + 9/2 I for 6 points on a circle of radius 3
    np.testing.assert_allclose(mix.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(mix.cov(), 5.5 * np.eye(2), atol=1e-12)


def test_from_callable():
    e = pf.energies.FromCallable(lambda x: 0.5 * (x ** 2).sum(1), lambda x: x, dim=2)
    x = np.ones((3, 2))
    v, g = e.value_and_grad(x)
    np.testing.assert_allclose(v, 1.0)
    np.testing.assert_allclose(g, x)
    with pytest.raises(ValueError, match="dimension 2"):
        e.value(np.ones((3, 4)))


@pytest.mark.parametrize("make,match", [
    (lambda: pf.energies.Gaussian(np.zeros(2), np.eye(3)), "shape"),
    (lambda: pf.energies.Gaussian(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
    (lambda: pf.energies.Gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
    (lambda: pf.energies.GaussianMixture(np.zeros((2, 2)), weights=[1.0, -1.0]), "weights"),
    (lambda: pf.energies.GaussianMixture(np.zeros((2, 2)), scale=0.0), "scale"),
    (lambda: pf.energies.GaussianMixture(np.zeros((2, 2)), scale=1.0, covariances=np.eye(2)), "either"),
    (lambda: pf.energies.GaussianMixture(np.zeros(2)), "means"),
    (lambda: pf.energies.Gaussian([np.nan, 0.0], np.eye(2)), "NaN"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dimension_mismatch_is_clear():
    with pytest.raises(ValueError, match=r"\(dimension 3\) but GaussianMixture is defined on dimension 2"):
        ring_mixture().grad(np.zeros((4, 3)))
