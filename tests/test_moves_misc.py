import numpy as np
import pytest

import particleflow as pf
from conftest import ring_mixture
from particleflow.backend import reference_path
from particleflow.random import Stream


def test_euler_maruyama_equals_langevin_and_sphere():
    mix = ring_mixture()
    x0 = np.random.default_rng(0).standard_normal((500, 2))
    a, b = pf.Ensemble(x0), pf.Ensemble(x0)
    em = pf.moves.EulerMaruyama(mix, 0.05, diffusion=1.0)
    ula = pf.moves.Langevin(mix, 0.05)
    for t in range(5):
        em(a, Stream(1), t)
        with reference_path():                   # the array path, as EulerMaruyama's
            ula(b, Stream(1), t)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-13, atol=1e-13)
    th = np.random.default_rng(1).standard_normal((300, 15))
    s = pf.Ensemble(th / np.linalg.norm(th, axis=1, keepdims=True))
    sph = pf.moves.EulerMaruyama(lambda x: np.ones_like(x), 0.01, diffusion=0.5, manifold="sphere")
    for t in range(20):
        sph(s, Stream(2), t)
    np.testing.assert_allclose(np.linalg.norm(s.x, axis=1), 1, rtol=1e-12)


def test_uniform_measure_is_invariant_on_sphere():
    """Pure diffusion on S^2 started uniform stays uniform: E[x] = 0, E[x x^T] = I/3."""
    n = 40_000
    z = np.random.default_rng(3).standard_normal((n, 3))
    ens = pf.Ensemble(z / np.linalg.norm(z, axis=1, keepdims=True))
    move = pf.moves.EulerMaruyama(lambda x: np.zeros_like(x), 0.01, diffusion=1.0, manifold="sphere")
    for t in range(50):
        move(ens, Stream(4), t)
    x = ens.x
    assert np.all(np.abs(x.mean(0)) < 4 * np.sqrt(1 / 3 / n))
    m2 = (x[:, :, None] * x[:, None, :]).mean(0)
    se = np.sqrt((4 / 45) / n)       # var(x_1^2) = E x^4 - 1/9 = 1/5 - 1/9 on S^2
    assert np.all(np.abs(np.diag(m2) - 1 / 3) < 4 * se)


def test_restart_probability_and_sources():
    data = pf.Ensemble(np.arange(10.0)[:, None] + 100)
    n = 20_000
    ens = pf.Ensemble(np.zeros((n, 1)))
    st = pf.moves.Restart(data, 0.3)(ens, Stream(0), 0)
    hit = ens.x[:, 0] >= 100
    assert abs(hit.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    assert st["restart_fraction"] == hit.mean()
    from scipy import stats
    counts = np.bincount((ens.x[hit, 0] - 100).astype(int), minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-4                    # uniform source choice
    ens2 = pf.Ensemble(np.zeros((5, 1)))
    pf.moves.Restart(data, 1.0)(ens2, Stream(0), 0)
    assert np.all(ens2.x >= 100)
    with pytest.raises(ValueError, match="event shape"):
        pf.moves.Restart(data, 0.5)(pf.Ensemble(np.zeros((3, 2))), Stream(0), 0)


@pytest.mark.parametrize("make,match", [
    (lambda e: pf.moves.Langevin(e, -0.1), "step_size"),
    (lambda e: pf.moves.Langevin(e, 0.0), "step_size"),
    (lambda e: pf.moves.MALA(e, float("nan")), "step_size"),
    (lambda e: pf.moves.HMC(e, 0.1, 0), "n_leapfrog"),
    (lambda e: pf.moves.HMC(e, 0.1, 3, mass=[-1.0, 1.0]), "mass"),
    (lambda e: pf.moves.Langevin(e, 0.1, temperature=0), "temperature"),
    (lambda e: pf.moves.EulerMaruyama(e, 0.1, diffusion=-1), "diffusion"),
    (lambda e: pf.moves.EulerMaruyama(e, 0.1, 1.0, manifold="torus"), "manifold"),
    (lambda e: pf.moves.Restart(np.zeros((3, 2)), 1.5), "probability"),
    (lambda e: pf.moves.WassersteinFisherRao(None, 0.1), "potential"),
    (lambda e: pf.moves.WassersteinFisherRao(lambda e: None, 0.1, mean_weight_cap=0), "mean_weight_cap"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(ring_mixture())


def test_dimension_mismatch_between_energy_and_ensemble():
    ens = pf.Ensemble(np.zeros((4, 3)))
    for move in (pf.moves.Langevin(ring_mixture(), 0.1), pf.moves.MALA(ring_mixture(), 0.1)):
        with pytest.raises(ValueError, match="dimension 3 but the energy"):
            move(ens, Stream(0), 0)
    with pytest.raises(ValueError, match="mass has 3 entries"):
        pf.moves.HMC(ring_mixture(), 0.1, 2, mass=[1.0, 1.0, 1.0])(pf.Ensemble(np.zeros((4, 2))), Stream(0), 0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("d", [2, 5, 64])
def test_langevin_array_path_equals_numpy_formula(dt, d):
    """The array path of ULA fills a reused noise buffer and updates in one parallel
    pass (kernels/elementwise.py), or, for tanh MLPs, inside the gradient pass
    (``MLP.ula_step_into``, kernels/mlp.py, which also draws the noise): bitwise x - h grad E(x) + sqrt(2h) z
    with z the stream's normals, as numpy computes it."""
    for act in ("tanh", "relu"):            # relu: no whole-pass kernel, the hook declines
        net = pf.energies.MLP([d, 6, 1], activation=act, seed=2, dtype=dt)
        x0 = np.random.default_rng(3).standard_normal((700, d)).astype(dt)
        ens = pf.Ensemble(x0.copy())
        stream = pf.random.Stream(4)
        move = pf.moves.Langevin(net, 0.01)
        x = x0
        for step in range(3):
            move(ens, stream, step)
            z = stream.normal(step, np.arange(700), d, pf.random.Purpose.LANGEVIN_NOISE, dt)
            x = x - dt(0.01) * net.grad(x) + dt(np.sqrt(0.02)) * z
            np.testing.assert_array_equal(ens.x, x)
        keys = stream.key(pf.random.Purpose.LANGEVIN_NOISE)
        assert net.ula_step_into(x, np.arange(700), 0, keys, 0.01, 0.1, np.empty_like(x)) == (act == "tanh")
