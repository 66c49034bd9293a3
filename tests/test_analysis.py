import numpy as np
import pytest

from particleflow import analysis


def ar1(rho, T, C, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((T, C))
    x[0] = rng.standard_normal(C)
    s = np.sqrt(1 - rho ** 2)
    for t in range(1, T):
        x[t] = rho * x[t - 1] + s * rng.standard_normal(C)
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_integrated_time_of_ar1(rho):
    x = ar1(rho, 4000, 32, seed=int(rho * 10))
    tau = analysis.integrated_time(x)[0]
    exact = (1 + rho) / (1 - rho)
    assert abs(tau / exact - 1) < 0.10, (tau, exact)
    ess = analysis.effective_sample_size(x)[0]
    np.testing.assert_allclose(ess, 4000 * 32 / tau)


@pytest.mark.parametrize("T,C", [(20, 2000), (200, 200), (1000, 40)])
def test_integrated_time_of_many_short_chains(T, C):
    """AR(0.9), tau = 19.  The estimate sums lags up to the window M = min(5 tau, T - 1),
    so its expectation is 1 + 2 sum_{k <= M} rho^k (16.6 for 20-frame chains) and its
    relative sd is sqrt(2 (2M + 1) / (T C)) (Sokal); the test allows 3.5 sd around it.
    With each chain's own mean subtracted, 20-frame chains gave tau = 1.95."""
    rho, tau_exact = 0.9, 19.0
    M = min(int(5 * tau_exact), T - 1)
    expected = 1 + 2 * sum(rho ** k for k in range(1, M + 1))
    sd = expected * np.sqrt(2 * (2 * M + 1) / (T * C))
    for seed in range(3):
        tau = analysis.integrated_time(ar1(rho, T, C, seed=T + seed))[0]
        assert abs(tau - expected) < 3.5 * sd, (tau, expected, sd)
    assert expected > 0.85 * tau_exact


def test_chains_stuck_apart_have_a_long_integrated_time():
    x = ar1(0.5, 200, 40, seed=3) + np.where(np.arange(40) < 20, -3.0, 3.0)[None]
    assert analysis.integrated_time(x)[0] > 50 * analysis.integrated_time(x - x.mean(0))[0]


def test_split_rhat():
    mixed = ar1(0.5, 1000, 8, seed=1)
    assert analysis.split_rhat(mixed)[0] < 1.01
    stuck = mixed + np.where(np.arange(8) < 4, -3.0, 3.0)[None]     # chains in two modes
    assert analysis.split_rhat(stuck)[0] > 1.1
    drifting = mixed + np.linspace(0, 3, 1000)[:, None]              # non-stationary: split catches it
    assert analysis.split_rhat(drifting)[0] > 1.1


def test_weighted_moments_and_weight_ess():
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((3, 500, 2))
    lw = rng.standard_normal((3, 500))
    mean, var = analysis.weighted_moments(pos, lw)
    w = np.exp(lw[1] - lw[1].max())
    w /= w.sum()
    np.testing.assert_allclose(mean[1], w @ pos[1])
    np.testing.assert_allclose(var[1], w @ (pos[1] - w @ pos[1]) ** 2)
    np.testing.assert_allclose(analysis.weight_ess(lw)[1], 1 / np.sum(w ** 2))
    np.testing.assert_allclose(analysis.weight_ess(np.zeros((2, 10))), 10)


def test_mmd_separates_different_gaussians_only():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 2)), rng.standard_normal((400, 2))
    c = rng.standard_normal((400, 2)) * 1.0 + np.array([0.5, 0.0])
    same, p_same = analysis.mmd_test(a, b, n_permutations=200)
    diff, p_diff = analysis.mmd_test(a, c, n_permutations=200)
    assert p_diff < 0.01 and p_same > 0.01
    assert diff > 10 * abs(same)


def test_bad_shapes():
    with pytest.raises(ValueError, match="frames"):
        analysis.integrated_time(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same dimension"):
        analysis.mmd2(np.zeros((5, 2)), np.zeros((5, 3)))
