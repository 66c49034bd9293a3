"""The experiment protocol, the energy cache of MALA / HMC, training state in
checkpoints (Adam), and the contrastive-gradient estimator against its closed form."""
import h5py
import numpy as np
import pytest

import particleflow as pf
from particleflow import experiments
from particleflow.config import ConfigError, loads
from particleflow.estimators.contrastive import contrastive_gradient, contrastive_ml
from conftest import interrupted_and_resumed
from particleflow.runner import build, execute


class CountingMLP(pf.energies.MLP):
    """An MLP that counts its network evaluations: value_and_grad calls, and MALA steps
    through its one-pass hook (which evaluates the network once, at the proposal)."""
    calls = 0

    def value_and_grad(self, x):
        CountingMLP.calls += 1
        return super().value_and_grad(x)

    def mala_step_into(self, *args):
        out = super().mala_step_into(*args)
        CountingMLP.calls += out is not None
        return out


@pytest.mark.parametrize("make,per_step", [
    (lambda e: pf.moves.MALA(e, 0.05), 1),
    (lambda e: pf.moves.HMC(e, 0.05, 4), 4),
], ids=["MALA", "HMC"])
def test_mala_and_hmc_evaluate_the_network_once_per_proposal(make, per_step):
    net = CountingMLP([3, 16, 16, 1], seed=2)
    x0 = np.random.default_rng(0).standard_normal((256, 3))
    sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=4).schedule(make(net), "c")
    CountingMLP.calls = 0
    sim.run(10)
    assert CountingMLP.calls == 1 + 10 * per_step          # the first step also evaluates the start
    # the cached values are what a fresh evaluation gives, bitwise: same chain as without a cache
    ref = pf.Simulation({"c": pf.Ensemble(x0)}, seed=4).schedule(make(net), "c")
    for _ in range(10):
        ref.ensembles["c"].positions_changed()                # drop the cache before every step
        ref.run(1)
    assert ref.ensembles["c"].x.tobytes() == sim.ensembles["c"].x.tobytes()


def test_energy_cache_is_dropped_when_parameters_or_positions_change():
    net = pf.energies.MLP([2, 8, 1], seed=1)
    ens = pf.Ensemble(np.ones((4, 2)))
    e, g = net.value_and_grad(ens.x)
    ens.store_energy(net, e, g)
    assert ens.cached_energy(net) is not None
    net.set_params(net.params)                           # same values, new parameters version
    assert ens.cached_energy(net) is None
    ens.store_energy(net, e, g)
    ens.x = ens.x.copy()
    assert ens.cached_energy(net) is None
    ens.store_energy(net, e, g)
    ens.positions_changed()
    assert ens.cached_energy(net) is None
    other = pf.energies.MLP([2, 8, 1], seed=1)
    ens.store_energy(net, e, g)
    assert ens.cached_energy(other) is None


def test_contrastive_gradient_closed_form():
    """GaussianPrecision: grad_P [mean E(x+) - mean E(x-)] = (S+ - S-) / 2."""
    rng = np.random.default_rng(3)
    e = pf.energies.GaussianPrecision(np.eye(3))
    xp, xn = rng.standard_normal((50, 3)), 2 * rng.standard_normal((70, 3))
    g = contrastive_gradient(e, xp, xn)["precision"]
    np.testing.assert_allclose(g, 0.5 * (xp.T @ xp / 50 - xn.T @ xn / 70), rtol=1e-13, atol=1e-14)
    w = rng.random(70)
    g = contrastive_gradient(e, xp, xn, negative_weights=w, negative_scale=3.0)["precision"]
    np.testing.assert_allclose(g, 0.5 * (xp.T @ xp / 50 - 3.0 * (xn * w[:, None]).T @ xn), rtol=1e-12)


def test_contrastive_ml_recovers_the_mle():
    """Persistent MALA negatives + Adam reach the closed-form MLE P = S^-1 within the
    Monte Carlo error of 4000 chains (relative error measured 0.02-0.03)."""
    rng = np.random.default_rng(0)
    x = 0.5 * rng.standard_normal((4000, 2))
    e = pf.energies.GaussianPrecision(np.eye(2))
    sim = contrastive_ml(e, x, rng.standard_normal((4000, 2)), lambda en: pf.moves.MALA(en, 0.05), lr=0.05, seed=1)
    sim.run(400)
    mle = np.linalg.inv(x.T @ x / len(x))
    err = np.linalg.norm(e.params["precision"] - mle) / np.linalg.norm(mle)
    assert err < 0.08, err
    assert np.linalg.norm(np.eye(2) - mle) / np.linalg.norm(mle) > 0.5     # it did move from the start


def test_trained_parameters_live_once_in_a_checkpoint():
    """The parameter ensemble is the parameters' one home: the model's registered state
    saves nothing, and restoring a state into a fresh model gives it the ensemble's
    parameters (projected where the model projects)."""
    rng = np.random.default_rng(1)
    x = 0.5 * rng.standard_normal((300, 2))

    def build():
        e = pf.energies.GaussianPrecision(np.eye(2))
        return e, contrastive_ml(e, x, x.copy(), lambda en: pf.moves.MALA(en, 0.05), lr=0.05, seed=2)
    e, sim = build()
    sim.run(30)
    state = sim.state_dict()
    assert state["states"]["model"] == {}
    np.testing.assert_array_equal(state["ensembles"]["theta"]["x"][0], e.params["precision"].ravel())
    e2, sim2 = build()
    sim2.load_state_dict(state)
    np.testing.assert_array_equal(e2.params["precision"], e.params["precision"])
    assert not np.array_equal(e2.params["precision"], np.eye(2))


ML_CFG = """
estimator = "gaussian_ml"
[run]
steps = 60
seed = 3
[data]
d = 2
n = 500
[sampler]
chains = 400
step_size = 0.05
[adam]
lr = 0.05
[output]
every = 5
checkpoint_every = 20
plot = false
"""


def test_adam_training_interrupted_by_sigterm_resumes_bitwise(tmp_path):
    full, part, start = interrupted_and_resumed(ML_CFG, tmp_path, 27)
    adam = start["state"]["moves"]["adam"]
    assert int(adam["t"]) == 27 and adam["m"].shape == adam["v"].shape == (1, 4)     # optimiser state stored
    assert "data" not in start["state"]["ensembles"]                                  # static: rebuilt from the seed
    with h5py.File(full, "r") as a, h5py.File(part, "r") as b:
        for k in ("particles/theta/position/value", "particles/chains/position/value", "observables/precision/value",
                  "observables/sampler/acceptance/value", "observables/adam/lr/value", "results/precision"):
            assert a[k].shape == b[k].shape and a[k][()].tobytes() == b[k][()].tobytes(), k
        np.testing.assert_array_equal(a["observables/precision/step"][()], np.arange(0, 61, 5))
    # negative control: restoring everything but the optimiser state does not give the same run
    start["state"]["moves"]["adam"] = {"t": np.asarray(0)}
    with h5py.File(full, "r") as a:
        _, sim = build(experiments.validate(loads(ML_CFG)), restore=True)
        sim.load_state_dict(start["state"])
        sim.run(60 - 27)
        assert sim.ensembles["theta"].x.tobytes() != a["particles/theta/position/value"][-1].tobytes()


def test_registry_and_protocol():
    assert set(experiments.REGISTRY) >= {"sample", "importance_ml", "dual_ebm", "gaussian_ml"}
    for name, exp in experiments.REGISTRY.items():
        assert exp.name == name and exp.description
    with pytest.raises(ConfigError, match="estimator must be one of"):
        experiments.validate({"estimator": "nope"})
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        experiments.validate(loads(ML_CFG.replace("lr = 0.05", "lrr = 0.05")))


def test_python_run_records_what_the_cli_writes(tmp_path):
    """The in-memory recorder of a Simulation built from a config sees the same
    observables as the trajectory file of the same config."""
    cfg = experiments.validate(loads(ML_CFG))
    out = str(tmp_path / "r.h5")
    execute(cfg, ML_CFG, out)
    _, sim = build(cfg)
    sim.run(60)
    with pf.io.open_run(out) as r:
        assert set(r.observables) == set(sim.recorder.observables)
        for k, o in r.observables.items():
            assert np.array_equal(o.steps, sim.recorder.observables[k].steps)
            assert o.values.tobytes() == sim.recorder.observables[k].values.tobytes(), k


def test_pf_run_runs_a_config_from_python_and_refuses_what_the_cli_refuses(tmp_path):
    text = ML_CFG.replace("steps = 60", "steps = 6")
    out = str(tmp_path / "a.h5")
    with pf.run(text, out=out) as run:
        assert run.ensembles["chains"].positions.shape[1] == 400 and len(run.results) > 0
    with pf.run(text, out=out, overrides=["run.seed=4"], force=True) as run:
        assert run.path == out
    with pytest.raises(ValueError, match="exists; pass force=True"):
        pf.run(text, out=out)
    with pytest.raises(ValueError, match="out= is needed"):
        pf.run(text)
    with pytest.raises(ValueError, match="sweep"):
        pf.run(text + '\n[sweep]\n"run.seed" = [1, 2]\n', out=str(tmp_path / "b.h5"))
    with pytest.raises(ValueError, match="no such config file"):
        pf.run(str(tmp_path / "missing.toml"))
