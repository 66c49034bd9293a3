import numpy as np
import pytest

import particleflow as pf


def make(m=16, d=5, seed=0):
    rng = np.random.default_rng(seed)
    th = rng.standard_normal((m, d))
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    neurons = pf.Ensemble(th, log_weights=rng.standard_normal(m) * 0.3,
                          signs=np.where(rng.uniform(size=m) < 0.5, 1.0, -1.0))
    return pf.energies.F1Network(neurons), rng


def reference(net, x):
    e = net.neurons
    a = e.signs * np.exp(e.log_weights) / e.n
    return np.maximum(x @ e.x.T, 0) @ a


def test_value_grad_against_numpy_and_fd():
    net, rng = make()
    x = rng.standard_normal((40, 5))
    v, g = net.value_and_grad(x)
    np.testing.assert_allclose(v, reference(net, x), rtol=1e-12, atol=1e-14)
    d = rng.standard_normal(x.shape)
    fd = (net.value(x + 1e-6 * d) - net.value(x - 1e-6 * d)) / 2e-6
    assert np.linalg.norm((g * d).sum(1) - fd) / np.linalg.norm(fd) < 1e-6


def test_grad_params_fd():
    net, rng = make(seed=1)
    x = rng.standard_normal((30, 5))
    c = rng.standard_normal(30)
    gp = net.grad_params(x, c)
    e = net.neurons
    dth = rng.standard_normal(e.x.shape)
    th0 = e.x.copy()
    vals = []
    for s in (1, -1):
        e.x = th0 + s * 1e-6 * dth
        vals.append(c @ net.value(x))
    e.x = th0
    fd = (vals[0] - vals[1]) / 2e-6
    assert abs((gp["theta"] * dth).sum() - fd) / abs(fd) < 1e-6
    lw0 = e.log_weights.copy()
    w0 = np.exp(lw0)
    dw = rng.standard_normal(e.n)
    vals = []
    for s in (1, -1):
        e.log_weights = np.log(w0 + s * 1e-6 * dw)
        vals.append(c @ net.value(x))
    e.log_weights = lw0
    fd = (vals[0] - vals[1]) / 2e-6
    assert abs((gp["weight"] * dw).sum() - fd) / abs(fd) < 1e-6


def test_potential_and_wfr_coupling():
    net, rng = make(seed=2)
    X = rng.standard_normal((200, 5))
    data = rng.standard_normal((150, 5)) + 0.5
    F, G = net.potential(X, data)
    th = net.neurons.x
    np.testing.assert_allclose(F, np.maximum(X @ th.T, 0).mean(0) - np.maximum(data @ th.T, 0).mean(0), rtol=1e-12)
    np.testing.assert_allclose(G, ((X @ th.T > 0).T @ X) / 200 - ((data @ th.T > 0).T @ data) / 150, rtol=1e-12, atol=1e-14)
    move = pf.moves.WassersteinFisherRao(lambda e: net.potential(X, data), 0.01, manifold="sphere")
    move(net.neurons, pf.random.Stream(0), 0)
    np.testing.assert_allclose(np.linalg.norm(net.neurons.x, axis=1), 1, rtol=1e-12)


def test_bad_input():
    net, _ = make()
    with pytest.raises(ValueError, match="relu"):
        pf.energies.F1Network(net.neurons, activation="tanh")
    with pytest.raises(ValueError, match="dimension"):
        net.value(np.zeros((3, 4)))
