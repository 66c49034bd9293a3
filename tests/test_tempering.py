"""Parallel tempering: mode fractions of a well-separated mixture, exactness, bookkeeping."""
import numpy as np
import pytest

import particleflow as pf

from conftest import moment_z_scores, straight_and_resumed

MEANS = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0 * np.sqrt(3.0)]])     # 10 s.d. apart
WEIGHTS = np.array([0.5, 0.3, 0.2])
FAR = pf.energies.GaussianMixture(MEANS, scale=1.0, weights=WEIGHTS)


def fractions(x):
    d = ((x[:, None, :] - MEANS[None]) ** 2).sum(-1)
    return np.bincount(d.argmin(1), minlength=3) / len(x)


def pt_sim(groups=2000, T=6, seed=1):
    betas = pf.moves.geometric_ladder(T, 0.03)
    x0 = np.random.default_rng(0).standard_normal((groups * T, 2))       # every chain in mode 0
    mv = pf.moves.ParallelTempering(FAR, betas, 0.5)
    return pf.Simulation({"c": pf.Ensemble(x0)}, seed=seed).schedule(mv, "c", name="pt"), mv


def test_tempering_finds_the_mode_weights_where_mala_stays_stuck():
    """Every chain starts in one mode of a 3-mode mixture whose modes are 10 s.d. apart:
    after 200 steps the cold replicas' mode fractions (averaged over the last 100
    steps) are within 0.03 of the weights (0.5, 0.3, 0.2); MALA from the same start
    keeps all its chains in the first mode."""
    sim, mv = pt_sim()
    sim.run(100)
    seen = []
    for _ in range(10):
        sim.run(10)
        seen.append(fractions(mv.cold_rows(sim.ensembles["c"])))
    got = np.mean(seen, 0)
    assert np.abs(got - WEIGHTS).max() < 0.03, got
    assert 0.3 < sim.slots[0].last["swap_acceptance"] < 0.95
    mala = pf.Simulation({"c": pf.Ensemble(np.random.default_rng(0).standard_normal((2000, 2)))}, seed=1)
    mala.schedule(pf.moves.MALA(FAR, 0.5), "c").run(200)
    assert fractions(mala.ensembles["c"].x)[0] > 0.999


def test_the_cold_replicas_have_the_target_moments():
    e = pf.energies.GaussianMixture(np.array([[-1.0, 0.0], [1.5, 0.5]]), scale=0.8, weights=[0.4, 0.6])
    T, G = 4, 4000
    x0 = np.asarray(e.sample(pf.random.Stream(3), 0, np.arange(G * T), np.float64))
    mv = pf.moves.ParallelTempering(e, pf.moves.geometric_ladder(T, 0.2), 0.4)
    sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=2).schedule(mv, "c")
    sim.run(40)
    z_mean, z_cov = moment_z_scores(mv.cold_rows(sim.ensembles["c"]), e.mean(), e.cov())
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_cov).max() < 4.5, (z_mean, z_cov)


def test_swaps_alternate_parity_and_resume_bitwise():
    a, c = straight_and_resumed(lambda: pt_sim(groups=50)[0], 9, 4)
    assert c.ensembles["c"].x.tobytes() == a.ensembles["c"].x.tobytes()
    # T = 2: only the pair (0, 1), tried on even calls; odd calls only move within rows
    e = pf.energies.Gaussian(np.zeros(1), np.eye(1))
    mv = pf.moves.ParallelTempering(e, [1.0, 0.5], 0.1)
    ens = pf.Ensemble(np.array([[0.0], [3.0]]))
    stats = [mv(ens, pf.random.Stream(0), k) for k in range(4)]
    assert np.isnan(stats[1]["swap_acceptance"]) and not np.isnan(stats[0]["swap_acceptance"])


def test_bad_tempering_input_is_named():
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="betas"):
        pf.moves.ParallelTempering(e, [0.9, 0.5], 0.1)
    with pytest.raises(ValueError, match="betas"):
        pf.moves.ParallelTempering(e, [1.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="beta_min"):
        pf.moves.geometric_ladder(4, 1.5)
    with pytest.raises(ValueError, match="multiple of 3"):
        pf.moves.ParallelTempering(e, [1.0, 0.5, 0.2], 0.1)(pf.Ensemble(np.zeros((4, 2))), pf.random.Stream(0), 0)
