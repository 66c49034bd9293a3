"""Step-size adaptation by dual averaging on the ensemble's acceptance, and HMC jitter."""
import numpy as np
import numba
import pytest

import particleflow as pf

from conftest import moment_z_scores, ring_mixture, straight_and_resumed

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


@pytest.mark.parametrize("adapt", [{}, {"mass": "dense", "trajectory": "chees"}, {"per_chain": True}],
                         ids=["step", "mass-chees", "per-chain"])
def test_adaptation_is_bitwise_deterministic_for_thread_counts_and_resume(adapt):
    jitter = 0.0 if adapt else 0.2

    def run(threads, split=None):
        numba.set_num_threads(threads)
        try:
            sim = pf.Simulation({"c": pf.Ensemble(np.random.default_rng(0).standard_normal((3000, 2)))}, seed=5)
            sim.schedule(pf.moves.AdaptStepSize(pf.moves.HMC(ILL, 0.5, 5, jitter=jitter), 0.7, 40, **adapt), "c")
            if split is None:
                sim.run(60)
                return sim
            sim.run(split)
            state = sim.state_dict()
            fresh = pf.Simulation({"c": pf.Ensemble(np.zeros((3000, 2)))}, seed=5)
            fresh.schedule(pf.moves.AdaptStepSize(pf.moves.HMC(ILL, 0.5, 5, jitter=jitter), 0.7, 40, **adapt), "c")
            fresh.load_state_dict(state)
            fresh.run(60 - split)
            return fresh
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    a, b, c = run(1), run(2), run(2, split=23)
    for other in (b, c):
        assert np.array_equal(other.slots[0].move.step_size, a.slots[0].move.step_size)
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


# a sample config on the ill-conditioned 2-D Gaussian, to which a test appends its schedule
ILL_CONFIG = """
estimator = "sample"
[run]
steps = {steps}
[output]
every = 1
plot = false
[energy]
kind = "gaussian"
mean = [0.0, 0.0]
precision = [[1000.0, -1.0], [-1.0, 2.0]]
[ensembles.c]
n = {n}
init_scale = {init_scale}
"""


def test_sample_configs_adapt_mala_and_hmc(tmp_path):
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.io.h5md import open_run
    from particleflow.runner import execute
    text = ILL_CONFIG.format(steps=60, n=2000, init_scale=0.02) + """[[schedule]]
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


QUARTIC = pf.energies.FromCallable(value_and_grad=lambda x: (0.25 * (x ** 4).sum(1), x ** 3), dim=2)


def quartic_start(n=2000):
    """Half the chains near 0, half at (6, 6) where the curvature 3 x^2 is 108."""
    rng = np.random.default_rng(0)
    return np.concatenate([0.3 * rng.standard_normal((n // 2, 2)), 6.0 + 0.3 * rng.standard_normal((n // 2, 2))])


def quartic_sim(per_chain, kind="mala"):
    mv = pf.moves.MALA(QUARTIC, 0.3) if kind == "mala" else pf.moves.HMC(QUARTIC, 0.1, 3)
    ad = pf.moves.AdaptStepSize(mv, 0.57 if kind == "mala" else 0.7, 200, per_chain=per_chain)
    return pf.Simulation({"c": pf.Ensemble(quartic_start())}, seed=1).schedule(ad, "c"), mv


def test_per_chain_step_sizes_rescue_chains_started_in_high_curvature():
    """exp(-sum x^4 / 4) with half the chains started at (6, 6): one step size for the
    ensemble leaves about a third of the chains rejecting every move out there; per-chain
    step sizes bring every chain into the bulk, reach the target acceptance and give the
    exact second moment E x^2 = 2 Gamma(3/4) / Gamma(1/4) = 0.6760."""
    from scipy.special import gamma
    exact = 2 * gamma(0.75) / gamma(0.25)
    far = {}
    for per in (False, True):
        sim, mv = quartic_sim(per)
        sim.run(300)
        x = sim.ensembles["c"].x
        far[per] = (np.abs(x) > 2.5).any(1).mean()
    assert far[False] > 0.2 and far[True] == 0.0, far
    assert isinstance(mv.step_size, np.ndarray) and mv.step_size.shape == (2000,) and np.ptp(mv.step_size) > 0
    acc = []
    for _ in range(50):
        sim.run(1)
        acc.append(sim.slots[0].last["acceptance"])
    assert abs(np.mean(acc) - 0.57) < 0.05
    x2 = sim.ensembles["c"].x ** 2
    assert abs(x2.mean() - exact) < 4 * x2.std() / np.sqrt(x2.size / 2), (x2.mean(), exact)


@pytest.mark.slow
def test_per_chain_adaptation_resumes_bitwise_with_hmc():
    a, c = straight_and_resumed(lambda: quartic_sim(True, "hmc")[0], 230, 97)
    assert c.ensembles["c"].x.tobytes() == a.ensembles["c"].x.tobytes()
    assert c.slots[0].move.move.step_size.tobytes() == a.slots[0].move.step_size.tobytes()
    mala = pf.moves.MALA(QUARTIC, 0.1)
    mala.step_size = np.full(3, 0.1)
    with pytest.raises(ValueError, match="one value per particle"):
        mala(pf.Ensemble(np.zeros((5, 2))), pf.random.Stream(0), 0)


@pytest.mark.slow
def test_chees_trajectory_length_on_the_preconditioned_ill_conditioned_gaussian():
    """HMC with the dense mass and the trajectory length adapted by ChEES: target
    acceptance within 0.05, exact moments, and at least 10x the effective samples per
    gradient of the unpreconditioned HMC with 10 leapfrog steps (ESS of the slowest
    direction over 300 sampling steps of 1000 chains)."""
    from conftest import moment_z_scores
    cov = np.linalg.inv(ILL.precision)
    _, V = np.linalg.eigh(cov)

    def sample(mv, **adapt):
        x0 = np.random.default_rng(0).standard_normal((1000, 2)) * 0.1
        sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=1).schedule(pf.moves.AdaptStepSize(mv, 0.7, 400, **adapt), "c")
        sim.run(400)
        xs, acc, grads = [], [], 0
        for _ in range(300):
            sim.run(1)
            xs.append(sim.ensembles["c"].x.copy())
            acc.append(sim.slots[0].last["acceptance"])
            grads += sim.slots[0].last.get("n_leapfrog", mv.n_leapfrog)
        tau = pf.analysis.integrated_time(np.array(xs) @ V).max()
        return 1.0 / (tau * grads / 300), np.mean(acc), xs[-1]
    chees, acc, last = sample(pf.moves.HMC(ILL, 0.01, 10), mass="dense", trajectory="chees")
    plain, acc_plain, _ = sample(pf.moves.HMC(ILL, 0.01, 10, jitter=0.2))
    assert abs(acc - 0.7) < 0.05 and abs(acc_plain - 0.7) < 0.05, (acc, acc_plain)
    assert chees > 10 * plain, (chees, plain)
    z_mean, z_cov = moment_z_scores(last, np.zeros(2), cov)
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_cov).max() < 4.5


def test_chees_state_resumes_bitwise_and_bad_input_is_named():
    def sim_for():
        mv = pf.moves.HMC(ILL, 0.01, 5)
        return pf.Simulation({"c": pf.Ensemble(np.random.default_rng(0).standard_normal((500, 2)) * 0.1)},
                             seed=5).schedule(pf.moves.AdaptStepSize(mv, 0.7, 60, mass="diag", trajectory="chees"), "c")
    a, c = straight_and_resumed(sim_for, 80, 33)
    assert c.ensembles["c"].x.tobytes() == a.ensembles["c"].x.tobytes()
    assert c.slots[0].move.move.trajectory_length == a.slots[0].move.move.trajectory_length
    with pytest.raises(ValueError, match="HMC"):
        pf.moves.AdaptStepSize(pf.moves.MALA(ILL, 0.1), 0.5, 10, trajectory="chees")
    with pytest.raises(ValueError, match="'chees'"):
        pf.moves.AdaptStepSize(pf.moves.HMC(ILL, 0.1, 3), 0.5, 10, trajectory="nuts")


def test_sample_configs_take_mass_per_chain_and_chees_keys(tmp_path):
    from particleflow import experiments
    from particleflow.config import ConfigError, loads
    from particleflow.io.h5md import open_run
    from particleflow.runner import execute
    head = ILL_CONFIG.format(steps=40, n=500, init_scale=0.05) + """[[schedule]]
ensemble = "c"
step_size = 0.01
"""
    text = head + 'move = "hmc"\nn_leapfrog = 5\nwarmup = 30\nadapt_mass = "dense"\nadapt_trajectory = "chees"\n'
    execute(experiments.validate(loads(text)), text, str(tmp_path / "a.h5"))
    with open_run(str(tmp_path / "a.h5")) as r:
        T = r.observables["hmc_0/trajectory_length"].values
        assert T[0] == 0.05 and len(set(T[-10:])) == 1 and r.observables["hmc_0/n_leapfrog"].values.min() >= 1
    text = head + 'move = "mala"\nwarmup = 30\nadapt_per_chain = true\n'
    execute(experiments.validate(loads(text)), text, str(tmp_path / "b.h5"))
    for bad, msg in (('move = "mala"\nadapt_mass = "dense"\n', "needs warmup"),
                     ('move = "hmc"\nn_leapfrog = 3\nwarmup = 5\nadapt_per_chain = true\nadapt_trajectory = "chees"\n',
                      "drop per_chain")):
        with pytest.raises(ConfigError, match=msg):
            t = head + bad
            execute(experiments.validate(loads(t)), t, str(tmp_path / "c.h5"))
