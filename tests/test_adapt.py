"""Step-size adaptation by dual averaging on the ensemble's acceptance, and HMC jitter."""
import numpy as np
import numba
import pytest

import particleflow as pf

from conftest import moment_z_scores, ring_mixture

ILL = pf.energies.Gaussian(np.zeros(2), np.array([[1000.0, -1.0], [-1.0, 2.0]]))


def adapted(energy, kind, target, warmup=300, n=4000, x0=None, seed=1, jitter=0.2):
    mv = pf.moves.MALA(energy, 1.0) if kind == "mala" else pf.moves.HMC(energy, 1.0, 10, jitter=jitter)
    x0 = np.random.default_rng(0).standard_normal((n, 2)) * 0.1 if x0 is None else x0
    sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=seed).schedule(pf.moves.AdaptStepSize(mv, target, warmup), "c")
    sim.run(warmup)
    return sim


@pytest.mark.parametrize("energy,kind,target", [(ILL, "mala", 0.57), (ring_mixture(), "mala", 0.57),
                                                (ring_mixture(), "hmc", 0.7)],
                         ids=["ill-mala", "mixture-mala", "mixture-hmc"])
def test_adapted_acceptance_reaches_the_target_and_sampling_is_exact(energy, kind, target):
    """After warm-up the frozen step size gives the target acceptance within 0.05 (mean
    over 100 sampling steps), and chains started at exact draws keep the target's
    moments (z-tests on the last frame of 4000 independent chains)."""
    x0 = np.asarray(energy.sample(pf.random.Stream(7), 0, np.arange(4000), np.float64))
    sim = adapted(energy, kind, target, x0=x0)
    slot = sim.slots[0]
    h = slot.move.step_size
    acc = []
    for _ in range(100):
        sim.run(1)
        acc.append(slot.last["acceptance"])
        assert slot.last["adapting"] == 0.0 and slot.move.step_size == h      # frozen
    assert abs(np.mean(acc) - target) < 0.05, (np.mean(acc), h)
    mean, cov = (energy.mean(), energy.cov()) if callable(energy.mean) else (energy.mean, energy.covariance)
    z_mean, z_cov = moment_z_scores(sim.ensembles["c"].x, mean, cov)
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_cov).max() < 4.5, (z_mean, z_cov)


def test_the_step_size_trace_is_streamed_and_adaptation_stops():
    sim = pf.Simulation({"c": pf.Ensemble(np.zeros((2000, 2)))}, seed=3)
    sim.schedule(pf.moves.AdaptStepSize(pf.moves.MALA(ILL, 0.5), 0.57, 50), "c", name="mala").observe_moves(1)
    sim.run(80)
    h = sim.recorder.observables["mala/step_size"].values
    adapting = sim.recorder.observables["mala/adapting"].values
    # values[k]: the statistics of call k (recorded after step k + 1)
    assert h[0] == 0.5 and h[20] != h[10]                        # the step size each call used
    assert adapting[49] == 1.0 and adapting[50] == 0.0 and len(set(h[50:])) == 1 and h[50] != h[49]


def test_adaptation_is_bitwise_deterministic_for_thread_counts_and_resume():
    def run(threads, split=None):
        numba.set_num_threads(threads)
        try:
            sim = pf.Simulation({"c": pf.Ensemble(np.random.default_rng(0).standard_normal((3000, 2)))}, seed=5)
            sim.schedule(pf.moves.AdaptStepSize(pf.moves.HMC(ILL, 0.5, 5, jitter=0.2), 0.7, 40), "c")
            if split is None:
                sim.run(60)
                return sim
            sim.run(split)
            state = sim.state_dict()
            fresh = pf.Simulation({"c": pf.Ensemble(np.zeros((3000, 2)))}, seed=5)
            fresh.schedule(pf.moves.AdaptStepSize(pf.moves.HMC(ILL, 0.5, 5, jitter=0.2), 0.7, 40), "c")
            fresh.load_state_dict(state)
            fresh.run(60 - split)
            return fresh
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    a, b, c = run(1), run(2), run(2, split=23)
    for other in (b, c):
        assert other.slots[0].move.step_size == a.slots[0].move.step_size
        assert other.ensembles["c"].x.tobytes() == a.ensembles["c"].x.tobytes()


def test_hmc_jitter_draws_one_step_size_per_step():
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    x = np.random.default_rng(0).standard_normal((600, 2))
    s = pf.random.Stream(2)
    out = {}
    for j in (0.0, 0.5):
        ens = pf.Ensemble(x)
        pf.moves.HMC(e, 0.3, 4, jitter=j)(ens, s.substream(0), 3)
        out[j] = ens.x
    assert out[0.0].tobytes() != out[0.5].tobytes()
    with pytest.raises(ValueError, match="jitter"):
        pf.moves.HMC(e, 0.3, 4, jitter=1.0)


def test_bad_adaptation_input_is_named():
    with pytest.raises(ValueError, match="target acceptance"):
        pf.moves.AdaptStepSize(pf.moves.MALA(ILL, 0.1), 1.5, 10)
    with pytest.raises(ValueError, match="warmup"):
        pf.moves.AdaptStepSize(pf.moves.MALA(ILL, 0.1), 0.5, 0)
    with pytest.raises(ValueError, match="acceptance"):
        pf.moves.AdaptStepSize(pf.moves.Langevin(ILL, 0.1), 0.5, 10)


def test_sample_configs_adapt_mala_and_hmc(tmp_path):
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.io.h5md import open_run
    from particleflow.runner import execute
    text = """
estimator = "sample"
[run]
steps = 60
[output]
every = 1
plot = false
[energy]
kind = "gaussian"
mean = [0.0, 0.0]
precision = [[1000.0, -1.0], [-1.0, 2.0]]
[ensembles.c]
n = 2000
init_scale = 0.02
[[schedule]]
move = "mala"
ensemble = "c"
step_size = 1.0
warmup = 40
[[schedule]]
move = "hmc"
ensemble = "c"
step_size = 0.01
n_leapfrog = 3
jitter = 0.1
warmup = 40
target_acceptance = 0.8
"""
    execute(experiments.validate(loads(text)), text, str(tmp_path / "a.h5"))
    with open_run(str(tmp_path / "a.h5")) as r:
        h = r.observables["mala_0/step_size"].values
        assert h[0] == 1.0 and h[-1] < 0.01 and len(set(h[-15:])) == 1
        assert r.observables["hmc_1/adapting"].values[-1] == 0.0
