"""Samplers against exact moments.

Tolerances: chains are independent, so after burn-in their final states are iid
draws (ESS = number of chains) and every moment estimate has a standard error
computed from the sample itself; we require |z| < 4 for every entry.
"""
import contextlib

import numpy as np
import pytest

import particleflow as pf
from conftest import moment_z_scores, on_device


def final_states(energy, move, n_chains, n_steps, seed, x0_scale=1.0, dtype=np.float64, device="cpu"):
    x0 = (np.random.default_rng(seed).standard_normal((n_chains, energy.dim)) * x0_scale).astype(dtype)
    ens = on_device(pf.Ensemble(x0), device)
    sim = pf.Simulation({"chains": ens}, seed=seed, device=device).schedule(move, "chains", name="move").observe_moves(every=1)
    sim.run(n_steps)
    rec = sim.recorder.observables.get("move/acceptance")
    return pf.backend.to_numpy(ens.x).astype(np.float64), None if rec is None else rec.values


@pytest.mark.parametrize("make_move,n_steps", [
    (lambda e: pf.moves.MALA(e, 1e-3), 3000),
    (lambda e: pf.moves.HMC(e, 0.04, 20), 300),
], ids=["MALA", "HMC"])
def test_ill_conditioned_gaussian(ill_conditioned, make_move, n_steps, device):
    x, acc = final_states(ill_conditioned, make_move(ill_conditioned), 20_000, n_steps, seed=1,
                          x0_scale=0.05, device=device)
    z_mean, z_cov = moment_z_scores(x, np.zeros(2), ill_conditioned.covariance)
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_cov) < 4), z_cov
    assert 0.3 < acc.mean() < 1.0


@pytest.mark.parametrize("make_move,n_steps", [
    (lambda e: pf.moves.MALA(e, 0.3), 1500),
    (lambda e: pf.moves.HMC(e, 0.3, 8), 300),
], ids=["MALA", "HMC"])
def test_six_component_mixture(mixture, make_move, n_steps, device):
    x, acc = final_states(mixture, make_move(mixture), 20_000, n_steps, seed=2, device=device)
    z_mean, z_cov = moment_z_scores(x, mixture.mean(), mixture.cov())
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_cov) < 4), z_cov
    # mode occupation: chi-square against the equal component weights
    ang = np.mod(np.arctan2(x[:, 1], x[:, 0]) + np.pi / 6, 2 * np.pi)
    counts = np.bincount((ang // (np.pi / 3)).astype(int), minlength=6)
    from scipy import stats
    assert stats.chisquare(counts).pvalue > 1e-4


def test_wrong_target_fails(mixture):
    """Negative control: samples of a different target fail the same z-test."""
    other = pf.energies.GaussianMixture(mixture.means * 1.15, scale=1.0)
    x, _ = final_states(other, pf.moves.MALA(other, 0.3), 20_000, 1500, seed=3)
    z_mean, z_cov = moment_z_scores(x, mixture.mean(), mixture.cov())
    assert np.any(np.abs(z_cov) > 4)


def test_ula_bias_matches_closed_form_and_shrinks_with_h():
    """ULA on E = x^2 / 2 is the AR(1) x' = (1 - h) x + sqrt(2h) z, whose stationary
    variance is 1 / (1 - h / 2): an O(h) bias that MALA does not have."""
    e = pf.energies.Gaussian(np.zeros(1), np.eye(1))
    n = 100_000
    biases = []
    for h in (0.2, 0.1, 0.05):
        x, _ = final_states(e, pf.moves.Langevin(e, h), n, int(20 / h), seed=4)
        v = x[:, 0].var()
        se = v * np.sqrt(2 / n)
        exact = 1 / (1 - h / 2)
        assert abs(v - exact) < 4 * se, (h, v, exact)
        assert v - 1 > 4 * se                        # the bias is visible
        biases.append(v - 1)
    assert biases[0] > biases[1] > biases[2]
    x, _ = final_states(e, pf.moves.MALA(e, 0.2), n, 100, seed=5)
    assert abs(x[:, 0].var() - 1) < 4 * np.sqrt(2 / n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(mixture, dtype):
    for move in (pf.moves.Langevin(mixture, 0.1), pf.moves.MALA(mixture, 0.1), pf.moves.HMC(mixture, 0.1, 3)):
        ens = pf.Ensemble(np.zeros((10, 2), dtype=dtype))
        move(ens, pf.random.Stream(0), 0)
        assert ens.x.dtype == dtype


def test_independent_mh_and_importance(mixture):
    """IMH with a wide Gaussian proposal samples the mixture; importance weights of
    proposal draws estimate its moments and log Z ratio (normalised energies: 0)."""
    prop = pf.energies.Gaussian(np.zeros(2), np.eye(2) / 16.0)       # N(0, 16 I)
    x, acc = final_states(mixture, pf.moves.IndependentMH(mixture, prop), 20_000, 200, seed=6)
    z_mean, z_cov = moment_z_scores(x, mixture.mean(), mixture.cov())
    assert np.all(np.abs(z_mean) < 4) and np.all(np.abs(z_cov) < 4)
    s = pf.random.Stream(7)
    n = 200_000
    ens = pf.Ensemble(prop.sample(s, 0, np.arange(n)))
    # normalise the proposal energy: E_q = 0.5 x^T P x + log((2 pi)^{d/2} |Sigma|^{1/2})
    logZq = np.log(2 * np.pi) + 0.5 * np.log(np.linalg.det(prop.covariance))
    prop_norm = pf.energies.FromCallable(lambda x: prop.value(x) + logZq, prop.grad, dim=2)
    stats_ = pf.moves.Reweight(mixture, prop_norm)(ens, s, 0)
    w = np.exp(ens.log_weights - ens.log_weights.max())
    w /= w.sum()
    ess = 1 / np.sum(w ** 2)
    assert abs(stats_["log_mean_increment"]) < 4 / np.sqrt(ess)
    np.testing.assert_allclose(ens.mean(), mixture.mean(), atol=4 * np.sqrt(5.5 / ess))


def test_a_diverging_hmc_trajectory_warns_nothing_from_numpy():
    """A step size far too large for the target overflows the leapfrog; the proposals are
    rejected (probability 0) and numpy's overflow warnings stay inside the package."""
    import warnings
    e = pf.energies.FromCallable(lambda x: (x ** 4).sum(1), lambda x: 4 * x ** 3, dim=2)
    ens = pf.Ensemble(np.full((50, 2), 3.0))
    move = pf.moves.HMC(e, 5.0, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        stats = move(ens, pf.random.Stream(0), 0)
    assert stats["acceptance"] == 0.0
    np.testing.assert_array_equal(ens.x, 3.0)


def test_sample_warns_when_a_continuation_would_reuse_the_noise():
    """A second pf.sample call started from the first one's last frame without
    start_step= reuses its noise: it warns, naming the start_step that continues it."""
    import warnings
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    xs = pf.sample(e, np.zeros((50, 2)), pf.moves.MALA(e, 0.5), n_steps=10, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pf.sample(e, xs[-1], pf.moves.MALA(e, 0.5), n_steps=5, seed=1)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    assert "start_step=10" in str(caught[0].message), caught[0].message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pf.sample(e, xs[-1], pf.moves.MALA(e, 0.5), n_steps=5, seed=1, start_step=10)
        pf.sample(e, xs[-1], pf.moves.MALA(e, 0.5), n_steps=5, seed=2)       # another seed: fresh noise
        pf.sample(e, xs[-1].copy() + 1.0, pf.moves.MALA(e, 0.5), n_steps=5, seed=1)
    assert caught == [], [str(w.message) for w in caught]


def test_hmc_counts_divergent_transitions_as_the_closed_form_leapfrog_says():
    """On N(0, I) the leapfrog is linear: L steps map (x, p) by the matrix power M^L, so
    each chain's energy error is known in closed form from its momentum draw.  Past the
    stability limit h = 2 about half the chains err by more than 1000 (divergent); the
    fused kernel and the array code count exactly those, as a running total."""
    from particleflow.backend import reference_path
    from particleflow.random import Purpose
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    h, L, n = 2.01, 10, 2000
    x0 = np.random.default_rng(0).normal(size=(n, 2))
    stream = pf.random.Stream(3)
    p0 = stream.normal(0, np.arange(n), 2, Purpose.HMC_MOMENTUM, np.float64)
    kick = np.array([[1, 0], [-h / 2, 1]])
    M = np.linalg.matrix_power(kick @ np.array([[1, h], [0, 1]]) @ kick, L)
    xs, ps = (M[0, 0] * x0 + M[0, 1] * p0), (M[1, 0] * x0 + M[1, 1] * p0)
    error = 0.5 * ((xs ** 2 + ps ** 2) - (x0 ** 2 + p0 ** 2)).sum(1)
    expected = int(np.sum(error > 1000))
    assert 0.2 * n < expected < 0.8 * n
    counts = []
    for fused in (True, False):
        move = pf.moves.HMC(e, h, L)
        with (contextlib.nullcontext() if fused else reference_path()):
            ens = pf.Ensemble(x0.copy())
            first = move(ens, stream, 0)["divergences"]
            assert abs(first - expected) <= 2, (fused, first, expected)     # rounding at the threshold
            move.step_size = 0.5                                            # stable: no new divergence
            assert move(ens, stream, 1)["divergences"] == first
        counts.append(first)
        restored = pf.moves.HMC(e, 0.5, L)
        restored.load_state_dict(move.state_dict())
        assert restored(ens, stream, 2)["divergences"] == first              # the total survives a checkpoint
    assert counts[0] == counts[1]


def test_sample_returns_the_moves_statistics_of_every_step_on_request():
    """pf.sample(..., stats=True): the same frames as without, and every step's statistics,
    equal to what a Simulation recording its move's statistics every step records."""
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    x0 = np.random.default_rng(0).normal(size=(300, 2))
    plain = pf.sample(e, x0, pf.moves.HMC(e, 1.5, 4), n_steps=12, seed=3, thin=3)
    xs, st = pf.sample(e, x0, pf.moves.HMC(e, 1.5, 4), n_steps=12, seed=3, thin=3, stats=True)
    assert xs.tobytes() == plain.tobytes()
    assert set(st) == {"acceptance", "mean_energy", "divergences"} and st["acceptance"].shape == (12,)
    rec = pf.Recorder(frames=False)
    sim = pf.Simulation({"c": pf.Ensemble(x0.copy())}, seed=3).schedule(pf.moves.HMC(e, 1.5, 4), "c", name="h")
    sim.observe_moves(every=1).attach(rec)
    sim.run(12)
    np.testing.assert_array_equal(st["acceptance"], rec.observables["h/acceptance"].values)
    np.testing.assert_array_equal(st["mean_energy"], rec.observables["h/mean_energy"].values)
    assert 0.3 < st["acceptance"].mean() < 1.0
