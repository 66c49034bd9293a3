"""Wasserstein-Fisher-Rao move: invariants and the exact discrete flow of a quadratic."""
import numpy as np
import pytest

import particleflow as pf
from particleflow.random import Stream


def test_constant_potential_changes_nothing_normalised():
    rng = np.random.default_rng(0)
    ens = pf.Ensemble(rng.standard_normal((50, 3)), log_weights=rng.standard_normal(50))
    x0, w0 = ens.x.copy(), ens.weights().copy()
    move = pf.moves.WassersteinFisherRao(lambda e: (np.full(e.n, 2.5), np.zeros_like(e.x)), 0.1)
    for t in range(10):
        move(ens, Stream(0), t)
    np.testing.assert_array_equal(ens.x, x0)
    np.testing.assert_allclose(ens.weights(), w0, rtol=1e-12)


def test_quadratic_potential_exact_flow():
    """F(theta) = -a |theta|^2 / 2: theta_t = (1 - h a)^t theta_0 exactly, and
    log w_t - log w_0 = -(h a / 2) |theta_0|^2 sum_{s<t} (1 - h a)^{2s}: mass flows
    to the maximiser of F (the origin) at this rate."""
    a, h, T = 2.0, 0.05, 30
    rng = np.random.default_rng(1)
    th0 = rng.standard_normal((200, 2))
    ens = pf.Ensemble(th0)
    move = pf.moves.WassersteinFisherRao(lambda e: (-0.5 * a * (e.x ** 2).sum(1), -a * e.x), h)
    r2 = []
    for t in range(T):
        move(ens, Stream(0), t)
        r2.append(float((ens.weights() * (ens.x ** 2).sum(1)).sum()))
    np.testing.assert_allclose(ens.x, (1 - h * a) ** T * th0, rtol=1e-12)
    geo = sum((1 - h * a) ** (2 * s) for s in range(T))
    np.testing.assert_allclose(ens.log_weights, -0.5 * h * a * (th0 ** 2).sum(1) * geo, rtol=1e-10)
    assert all(b < c for b, c in zip(r2[1:], r2[:-1]))        # weighted spread shrinks


def test_signs_and_mean_weight_cap():
    ens = pf.Ensemble(np.ones((4, 2)), signs=[1, 1, -1, -1])
    move = pf.moves.WassersteinFisherRao(lambda e: (np.ones(e.n), np.ones_like(e.x)), 0.1,
                                         weight_step_size=1.0, mean_weight_cap=2.0)
    st = move(ens, Stream(0), 0)
    np.testing.assert_allclose(ens.x[:2], 1.1)
    np.testing.assert_allclose(ens.x[2:], 0.9)
    w = np.exp(ens.log_weights)
    np.testing.assert_allclose(w[0] / w[2], np.e ** 2)             # sign * F growth
    assert st["mean_weight"] <= 2.0 + 1e-12
    for t in range(1, 5):
        move(ens, Stream(0), t)
    assert np.exp(ens.log_weights).mean() <= 2.0 * (1 + 1e-12)


def test_sphere_manifold_keeps_unit_norm():
    rng = np.random.default_rng(2)
    th = rng.standard_normal((30, 15))
    th /= np.linalg.norm(th, axis=1, keepdims=True)
    ens = pf.Ensemble(th)
    move = pf.moves.WassersteinFisherRao(lambda e: (np.zeros(e.n), rng.standard_normal(e.x.shape)), 0.3,
                                         manifold="sphere")
    move(ens, Stream(0), 0)
    np.testing.assert_allclose(np.linalg.norm(ens.x, axis=1), 1, rtol=1e-12)


def test_bad_potential_shape():
    ens = pf.Ensemble(np.ones((4, 2)))
    move = pf.moves.WassersteinFisherRao(lambda e: (np.ones(3), np.ones_like(e.x)), 0.1)
    with pytest.raises(ValueError, match="potential must return"):
        move(ens, Stream(0), 0)
