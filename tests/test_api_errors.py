"""Malformed inputs through the Python API: each raises ValueError (or a subclass)
whose message names the argument, before any work is done."""
import re

import numpy as np
import pytest

import particleflow as pf
from particleflow.config import set_path
from particleflow.estimators import DualEBM, GaussianProposal, ImportanceML
from particleflow.random import Stream

E2 = pf.energies.Gaussian(np.zeros(2), np.eye(2))


def ens(n=4, d=2):
    return pf.Ensemble(np.zeros((n, d)))


def call(move, e=None):
    return move(e if e is not None else ens(), Stream(0), 0)


def sim(**kw):
    return pf.Simulation({"a": ens()}, **kw)


def fc(value=None, grad=None, vg=None):
    return pf.energies.FromCallable(value, grad, vg)


CASES = {
    # Ensemble
    "x ragged": (lambda: pf.Ensemble([[0.0, 1.0], [2.0]]), "x must be an array"),
    "x strings": (lambda: pf.Ensemble(np.array([["a", "b"]])), "float32 or float64"),
    "x 1-D": (lambda: pf.Ensemble(np.zeros(3)), "1-D"),
    "x empty": (lambda: pf.Ensemble(np.zeros((0, 2))), "n >= 1"),
    "x NaN": (lambda: pf.Ensemble(np.array([[np.nan, 0.0]])), "NaN or Inf"),
    "x Inf": (lambda: pf.Ensemble(np.array([[np.inf, 0.0]])), "NaN or Inf"),
    "x complex": (lambda: pf.Ensemble(np.zeros((2, 2), complex)), "float32 or float64"),
    "x scalar": (lambda: pf.Ensemble(3.0), "shape"),
    "log_weights shape": (lambda: pf.Ensemble(np.zeros((3, 2)), log_weights=np.zeros(2)), "log_weights must have shape"),
    "log_weights NaN": (lambda: pf.Ensemble(np.zeros((2, 2)), log_weights=[0.0, np.nan]), "NaN"),
    "log_weights all -inf": (lambda: pf.Ensemble(np.zeros((2, 2)), log_weights=[-np.inf, -np.inf]), "at least one weight"),
    "log_weights strings": (lambda: pf.Ensemble(np.zeros((2, 2)), log_weights=["a", "b"]), "log_weights must be a numeric"),
    "signs not +-1": (lambda: pf.Ensemble(np.zeros((2, 2)), signs=[1.0, 0.5]), "signs must be"),
    "signs shape": (lambda: pf.Ensemble(np.zeros((2, 2)), signs=[1.0]), "signs must have shape"),
    "ids shape": (lambda: pf.Ensemble(np.zeros((2, 2)), ids=[0]), "ids must be"),
    "ids negative": (lambda: pf.Ensemble(np.zeros((2, 2)), ids=[-1, 0]), "non-negative"),
    "ids duplicate": (lambda: pf.Ensemble(np.zeros((2, 2)), ids=[1, 1]), "unique"),
    "ids float": (lambda: pf.Ensemble(np.zeros((2, 2)), ids=[0.5, 1.5]), "ids must be an integer"),
    "ensemble to tpu": (lambda: ens().to("tpu"), "device must be"),
    "ensemble device tpu": (lambda: setattr(ens(), "device", "tpu"), "device must be"),
    # Stream
    "seed negative": (lambda: Stream(-1), "seed must be"),
    "seed float": (lambda: Stream(1.5), "seed must be"),
    "seed too large": (lambda: Stream(2 ** 32), "seed must be"),
    "seed bool": (lambda: Stream(True), "seed must be"),
    "stream id negative": (lambda: Stream(0, -1), "stream_id"),
    "stream id too large": (lambda: Stream(0, 2 ** 24), "stream_id"),
    "ids 2-D": (lambda: Stream(0).normal(0, np.zeros((2, 2), np.int64), 1), "ids must be 1-D"),
    "zero draws": (lambda: Stream(0).normal(0, np.arange(3), 0), "n_draws"),
    "int dtype": (lambda: Stream(0).normal(0, np.arange(3), 1, dtype=np.int32), "dtype must be"),
    "step negative": (lambda: Stream(0).normal(-1, np.arange(3), 1), "step must be"),
    "step too large": (lambda: Stream(0).normal(2 ** 33, np.arange(3), 1), "step must be"),
    "out wrong shape": (lambda: Stream(0).normal(0, np.arange(3), 2, out=np.empty((3, 3))), "out must be"),
    # Simulation
    "simulation seed": (lambda: pf.Simulation(seed=-5), "seed must be"),
    "check_every zero": (lambda: pf.Simulation(check_every=0), "check_every"),
    "add non-ensemble": (lambda: pf.Simulation().add_ensemble("a", np.zeros((2, 2))), "must be a particleflow.Ensemble"),
    "add duplicate": (lambda: sim().add_ensemble("a", ens()), "already exists"),
    "ensemble name slash": (lambda: pf.Simulation({"a/b": ens()}), "not allowed"),
    "ensemble name empty": (lambda: pf.Simulation({"": ens()}), "not allowed"),
    "schedule unknown ensemble": (lambda: sim().schedule(pf.moves.MALA(E2, 0.1), "b"), "unknown ensemble"),
    "schedule non-callable": (lambda: sim().schedule(3, "a"), "must be callable"),
    "schedule every zero": (lambda: sim().schedule(pf.moves.MALA(E2, 0.1), "a", every=0), "every"),
    "schedule duplicate name": (lambda: sim().schedule(pf.moves.MALA(E2, 0.1), "a", name="m")
                                .schedule(pf.moves.MALA(E2, 0.1), "a", name="m"), "already exists"),
    "observe non-callable": (lambda: sim().observe("o", 3), "callable"),
    "observe duplicate": (lambda: sim().observe("o", len).observe("o", len), "already exists"),
    "observe after run": (lambda: sim().run(1).observe("o", len), "before the simulation's first run"),
    "run negative": (lambda: sim().run(-1), "n_steps"),
    "run float": (lambda: sim().run(1.5), "n_steps"),
    "trajectory unknown": (lambda: sim().trajectory(["b"]), "unknown ensemble"),
    "register stateless": (lambda: sim().register_state("x", object()), "state_dict"),
    "simulation device": (lambda: pf.Simulation(device="tpu"), "device must be"),
    "load state of other": (lambda: sim().load_state_dict({"step": 0, "ensembles": {"b": ens().state()}}), "lacks"),
    # moves
    "langevin step zero": (lambda: pf.moves.Langevin(E2, 0.0), "step_size must be a positive"),
    "langevin step nan": (lambda: pf.moves.Langevin(E2, float("nan")), "step_size must be a positive"),
    "langevin step bool": (lambda: pf.moves.Langevin(E2, True), "step_size must be a positive"),
    "langevin temperature": (lambda: pf.moves.Langevin(E2, 0.1, temperature=0), "temperature"),
    "langevin noise": (lambda: pf.moves.Langevin(E2, 0.1, noise_scale=-1.0), "noise_scale"),
    "mala negative": (lambda: pf.moves.MALA(E2, -0.1), "step_size"),
    "hmc leapfrog zero": (lambda: pf.moves.HMC(E2, 0.1, 0), "n_leapfrog"),
    "hmc leapfrog float": (lambda: pf.moves.HMC(E2, 0.1, 2.5), "n_leapfrog"),
    "hmc mass negative": (lambda: pf.moves.HMC(E2, 0.1, 2, mass=-1.0), "mass"),
    "hmc mass matrix": (lambda: pf.moves.HMC(E2, 0.1, 2, mass=np.eye(2)), "mass"),
    "hmc mass length": (lambda: call(pf.moves.HMC(E2, 0.1, 2, mass=np.ones(3))), "mass has 3 entries"),
    "move wrong dimension": (lambda: call(pf.moves.MALA(E2, 0.1), ens(d=3)), "dimension"),
    "move on array": (lambda: pf.moves.MALA(E2, 0.1)(np.zeros((2, 2)), Stream(0), 0), "needs an Ensemble"),
    "move bad stream": (lambda: pf.moves.MALA(E2, 0.1)(ens(), 0, 0), "stream must be"),
    "move bad step": (lambda: pf.moves.MALA(E2, 0.1)(ens(), Stream(0), -1), "step must be"),
    "euler manifold": (lambda: pf.moves.EulerMaruyama(E2, 0.1, 1.0, manifold="torus"), "manifold"),
    "restart probability": (lambda: pf.moves.Restart(ens(), 2.0), "probability"),
    "restart shape": (lambda: call(pf.moves.Restart(ens(d=3), 0.5)), "event shape"),
    "resample scheme": (lambda: pf.moves.Resample("lottery"), "scheme"),
    "resample threshold": (lambda: pf.moves.Resample("systematic", 2.0), "ess_threshold"),
    "reweight non-energy": (lambda: pf.moves.Reweight(E2, 3), "proposal"),
    "imh no sampler": (lambda: pf.moves.IndependentMH(E2, fc(lambda x: x.sum(1), lambda x: x)), "sample"),
    "wfr non-callable": (lambda: pf.moves.WassersteinFisherRao(3, 0.1), "potential must be"),
    "wfr cap": (lambda: pf.moves.WassersteinFisherRao(lambda e: None, 0.1, mean_weight_cap=0), "mean_weight_cap"),
    "sgd momentum": (lambda: pf.moves.SGD(lambda e: e.x, 0.1, momentum=1.0), "momentum"),
    "adam betas": (lambda: pf.moves.Adam(lambda e: e.x, 0.1, betas=(1.0, 0.9)), "betas"),
    "adam lr": (lambda: pf.moves.Adam(lambda e: e.x, 0.0), "lr must be"),
    "adam grad": (lambda: pf.moves.Adam(3), "grad must be"),
    "adam weight decay": (lambda: pf.moves.Adam(lambda e: e.x, 0.1, weight_decay=-1.0), "weight_decay"),
    "adam wrong grad shape": (lambda: call(pf.moves.Adam(lambda e: np.zeros(3), 0.1)), "grad returned shape"),
    "step decay": (lambda: pf.moves.StepDecay(0.1, 0), "step_size"),
    # energies
    "gaussian not spd": (lambda: pf.energies.Gaussian(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
    "gaussian mismatch": (lambda: pf.energies.Gaussian(np.zeros(3), np.eye(2)), "mean"),
    "mixture weights": (lambda: pf.energies.GaussianMixture(np.zeros((2, 2)), scale=1.0, weights=[1.0, -1.0]), "weights"),
    "mixture scale": (lambda: pf.energies.GaussianMixture(np.zeros((2, 2)), scale=0.0), "scale"),
    "from callable nothing": (lambda: fc(), "needs value"),
    "from callable not callable": (lambda: fc(3, 4), "must be callable"),
    "from callable value shape": (lambda: fc(lambda x: x[:, :1], lambda x: x).value(np.zeros((3, 2))), "value(x) must return"),
    "from callable scalar value": (lambda: call(pf.moves.MALA(fc(lambda x: x.sum(), lambda x: x), 0.1)), "value(x) must return"),
    "from callable grad shape": (lambda: fc(lambda x: x.sum(1), lambda x: x[:, 0]).grad(np.zeros((3, 2))), "grad(x) must return"),
    "from callable int grad": (lambda: fc(lambda x: x.sum(1), lambda x: np.ones(x.shape, int)).grad(np.zeros((3, 2))), "grad(x) must return"),
    "from callable vg tuple": (lambda: fc(vg=lambda x: x.sum(1)).value_and_grad(np.zeros((3, 2))), "tuple"),
    "mlp sizes": (lambda: pf.energies.MLP([2, 8, 2]), "sizes"),
    "mlp activation": (lambda: pf.energies.MLP([2, 8, 1], activation="gelu"), "activation"),
    "mlp set_params": (lambda: pf.energies.MLP([2, 8, 1]).set_params({}), "missing"),
    "gaussian std zero": (lambda: pf.energies.GaussianStd(0.0), "std must be"),
    "precision not square": (lambda: pf.energies.GaussianPrecision(np.ones((2, 3))), "precision"),
    "std set_params nan": (lambda: pf.energies.GaussianStd(1.0).set_params({"std": np.nan}), "NaN"),
    # analysis
    "tau of NaN chain": (lambda: pf.analysis.integrated_time(np.r_[np.zeros(9), np.nan][:, None]), "NaN or Inf"),
    "rhat of NaN chain": (lambda: pf.analysis.split_rhat(np.r_[np.zeros(9), np.nan][:, None]), "NaN or Inf"),
    "tau of 2 frames": (lambda: pf.analysis.integrated_time(np.zeros((2, 3))), "at least 4 frames"),
    "tau of 4-D array": (lambda: pf.analysis.integrated_time(np.zeros((5, 2, 2, 2))), "expected"),
    # sample, config, estimators
    "sample start step": (lambda: pf.sample(E2, np.zeros((3, 2)), pf.moves.MALA(E2, 0.1), 2, start_step=-1), "start_step"),
    "sample thin": (lambda: pf.sample(E2, np.zeros((3, 2)), pf.moves.MALA(E2, 0.1), 2, thin=0), "thin"),
    "sample foreign move": (lambda: pf.sample(E2, np.zeros((3, 2)), pf.moves.MALA(pf.energies.Gaussian(np.zeros(2), np.eye(2)), 0.1), 2), "different energy"),
    "set_path index": (lambda: set_path({"a": [1]}, "a.3", 2), "indices 0..0"),
    "validate non-table": (lambda: pf.experiments.validate([1, 2]), "must be a table"),
    "device tpu": (lambda: pf.Device("tpu"), "device must be"),
    "importance NaN data": (lambda: ImportanceML(pf.energies.GaussianStd(), np.array([[np.nan]]), GaussianProposal(0, 1), 10), "NaN"),
    "importance M zero": (lambda: ImportanceML(pf.energies.GaussianStd(), np.ones((3, 1)), GaussianProposal(0, 1), 0), "M and runs"),
    "importance dim": (lambda: ImportanceML(pf.energies.GaussianStd(), np.ones((3, 2)), GaussianProposal(0, 1), 5), "dimension"),
    "importance route": (lambda: ImportanceML(pf.energies.GaussianStd(), np.ones((3, 1)), GaussianProposal(0, 1), 5).grad(route="x"), "unknown route"),
    "dual off sphere": (lambda: DualEBM(np.ones((5, 3)), 10, 4, alpha=1.0), "unit sphere"),
    "dual alpha": (lambda: DualEBM(np.eye(3), 10, 4, alpha=0.0), "must be > 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_a_clear_value_error(case):
    fn, match = CASES[case]
    with pytest.raises(ValueError, match=re.escape(match)):
        fn()


def test_case_count():
    assert len(CASES) >= 80


def test_sample_continues_with_start_step():
    """Two calls of pf.sample that continue each other equal one long call; without
    start_step the second call would reuse the first one's noise, and it says so."""
    x0 = np.zeros((50, 2))
    one = pf.sample(E2, x0, pf.moves.MALA(E2, 0.3), 20, seed=3, thin=20)[-1]
    warm = pf.sample(E2, x0, pf.moves.MALA(E2, 0.3), 10, seed=3, thin=10)[-1]
    two = pf.sample(E2, warm, pf.moves.MALA(E2, 0.3), 10, seed=3, thin=10, start_step=10)[-1]
    assert one.tobytes() == two.tobytes()
    with pytest.warns(UserWarning, match="start_step=10"):
        again = pf.sample(E2, warm, pf.moves.MALA(E2, 0.3), 10, seed=3, thin=10)[-1]
    assert again.tobytes() != one.tobytes()


def test_from_callable_accepts_value_and_grad_alone():
    e = fc(vg=lambda x: (0.5 * (x * x).sum(1), x))
    v, g = e.value_and_grad(np.ones((3, 2)))
    np.testing.assert_array_equal(v, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(e.grad(np.ones((3, 2))), np.ones((3, 2)))


def test_subpackages_are_reachable_from_the_top_level():
    assert callable(pf.analysis.integrated_time) and callable(pf.experiments.validate) and pf.io.open_run
