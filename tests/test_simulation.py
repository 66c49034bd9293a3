import functools

import numpy as np
import pytest

import particleflow as pf
from conftest import ring_mixture


def test_schedule_every_and_observables():
    mix = ring_mixture()
    sim = pf.Simulation({"a": pf.Ensemble(np.zeros((100, 2)))}, seed=1)
    calls = []

    def spy(ens, stream, step):
        calls.append((step, stream.stream_id))
        return {"k": step}
    sim.schedule(pf.moves.MALA(mix, 0.2), "a", name="mala")
    sim.schedule(spy, "a", every=3, name="spy")
    sim.observe("mean_x", lambda ens: ens["a"].x.mean(0), every=2)
    sim.run(7)
    assert calls == [(0, 1), (3, 1), (6, 1)]            # slot 1 has stream id 1
    assert sim.observables["mean_x"]["steps"] == [2, 4, 6]
    assert np.asarray(sim.observables["mean_x"]["values"]).shape == (3, 2)
    steps, acc = sim.stats("mala", "acceptance")
    assert list(steps) == list(range(7)) and np.all((acc > 0) & (acc <= 1))
    assert sim.step == 7


def test_divergence_error_names_ensemble_step_and_move():
    bad = pf.energies.FromCallable(lambda x: (x ** 2).sum(1), lambda x: np.where(np.arange(x.shape[0])[:, None] == 3, np.nan, x))
    sim = pf.Simulation({"chains": pf.Ensemble(np.ones((5, 2)))}).schedule(
        pf.moves.Langevin(bad, 0.1), "chains", name="ula")
    with pytest.raises(pf.DivergenceError, match=r"'chains' diverged at step 0 in move ula") as e:
        sim.run(3)
    assert (e.value.ensemble, e.value.step, e.value.move) == ("chains", 0, "ula")


def test_diverging_step_size_is_caught():
    stiff = pf.energies.Gaussian(np.zeros(2), np.eye(2) * 1e4)
    sim = pf.Simulation({"c": pf.Ensemble(np.ones((10, 2)))}).schedule(pf.moves.Langevin(stiff, 0.1), "c")
    with pytest.raises(pf.DivergenceError) as e:
        sim.run(1000)
    assert e.value.step > 0


def test_sample_contract_and_determinism():
    mix = ring_mixture()
    x0 = np.zeros((50, 2))
    a = pf.sample(mix, x0, functools.partial(pf.moves.HMC, step_size=0.2, n_leapfrog=3), 20, seed=5, thin=4)
    b = pf.sample(mix, x0, pf.moves.HMC(mix, 0.2, 3), 20, seed=5, thin=4)
    c = pf.sample(mix, x0, pf.moves.HMC(mix, 0.2, 3), 20, seed=6, thin=4)
    assert a.shape == (5, 50, 2)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # frames continue one run: 20 steps thin 4 == last frame of 20 steps thin 20
    d = pf.sample(mix, x0, pf.moves.HMC(mix, 0.2, 3), 20, seed=5, thin=20)
    assert d[-1].tobytes() == a[-1].tobytes()


def test_run_in_pieces_equals_one_run():
    """Resume needs only the step counter: 300 steps == 100 + 200 steps."""
    mix = ring_mixture()
    x0 = np.random.default_rng(0).standard_normal((200, 2))

    def make():
        return pf.Simulation({"c": pf.Ensemble(x0)}, seed=9).schedule(pf.moves.MALA(mix, 0.3), "c") \
            .schedule(pf.moves.Langevin(mix, 0.01), "c", every=7)
    one = make().run(300)
    two = make().run(100).run(200)
    assert one.ensembles["c"].x.tobytes() == two.ensembles["c"].x.tobytes()


@pytest.mark.parametrize("call,match", [
    (lambda s: s.schedule(pf.moves.MALA(ring_mixture(), 0.1), "nope"), "unknown ensemble 'nope'"),
    (lambda s: s.schedule(pf.moves.MALA(ring_mixture(), 0.1), "a", every=0), "every"),
    (lambda s: s.add_ensemble("a", pf.Ensemble(np.zeros((2, 2)))), "already exists"),
    (lambda s: s.run(-3), "n_steps"),
    (lambda s: s.observe("o", 3), "callable"),
])
def test_bad_schedule(call, match):
    sim = pf.Simulation({"a": pf.Ensemble(np.zeros((3, 2)))})
    with pytest.raises(ValueError, match=match):
        call(sim)


def test_sample_rejects_foreign_energy():
    with pytest.raises(ValueError, match="different energy"):
        pf.sample(ring_mixture(), np.zeros((3, 2)), pf.moves.MALA(ring_mixture(), 0.1), 2)
