"""The gradient checker: right gradients pass, a wrong one is caught and located."""
import numpy as np
import pytest

import particleflow as pf


def points(n=12, d=3, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize("energy", [
    pf.energies.Gaussian(np.zeros(3), np.array([[2.0, 0.3, 0], [0.3, 1, 0], [0, 0, 5]])),
    pf.energies.GaussianMixture(np.array([[0.0, 0, 0], [2, 1, 0]]), scale=0.7),
    pf.energies.MLP([3, 16, 16, 1], seed=1),
])
def test_right_gradients_pass(energy):
    c = pf.energies.check_gradient(energy, points())
    assert c.ok and c.max_rel_error < 1e-8, c.report()
    assert c.report()[0].startswith("gradient OK")


def test_a_wrong_gradient_is_caught_and_located():
    # E = sum x^4; the gradient is off by 1e-3 in coordinate 2 only
    bad = pf.energies.FromCallable(value=lambda x: (x ** 4).sum(1),
                                   grad=lambda x: 4 * x ** 3 + np.array([0.0, 0.0, 1e-3]))
    c = pf.energies.check_gradient(bad, points(), n_particles=5)
    assert not c.ok and 1e-5 < c.max_rel_error < 1e-2
    assert c.worst[1] == (2,)
    assert "GRADIENT WRONG" in c.report()[0] and "index (2,)" in c.report()[1]
    good = pf.energies.FromCallable(value=lambda x: (x ** 4).sum(1), grad=lambda x: 4 * x ** 3)
    assert pf.energies.check_gradient(good, points()).ok


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_image_shaped_particles(dtype):
    net = pf.energies.ConvNet.nijkamp(n_f=4, image_size=8, channels=1, seed=0, dtype=dtype)
    x = np.random.default_rng(2).uniform(-1, 1, (6, 1, 8, 8)).astype(dtype)
    c = pf.energies.check_gradient(net, x, n_particles=2)
    assert c.ok, c.report()


def test_bad_input_is_named():
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        pf.energies.check_gradient(e, np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        pf.energies.check_gradient(e, np.zeros(3))
