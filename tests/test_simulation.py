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
    sim.observe("mean_x", lambda s: s.ensembles["a"].x.mean(0), every=2)
    sim.observe_moves(every=1)
    sim.run(7)
    assert calls == [(0, 1), (3, 1), (6, 1)]            # slot 1 has stream id 1
    rec = sim.recorder.observables
    assert list(rec["mean_x"].steps) == [0, 2, 4, 6]    # step 0 is the initial state
    assert rec["mean_x"].values.shape == (4, 2)
    acc = rec["mala/acceptance"]
    assert list(acc.steps) == list(range(1, 8)) and np.all((acc.values > 0) & (acc.values <= 1))
    assert "spy/k" not in rec                           # undeclared statistics are not recorded
    assert sim.step == 7


def test_dict_observables_initial_flag_and_frames():
    mix = ring_mixture()
    sim = pf.Simulation({"a": pf.Ensemble(np.zeros((10, 2))), "d": pf.Ensemble(np.ones((4, 2)))}, seed=1)
    sim.schedule(pf.moves.MALA(mix, 0.2), "a", name="mala")
    sim.observe("s", lambda s: {"m": s.ensembles["a"].x.mean(), "n": s.step}, every=3, initial=False)
    rec = sim.attach(pf.Recorder())
    sim.trajectory(["a"], every=2).trajectory(["d"], every=None)
    sim.run(6)
    assert list(rec.observables["s/n"].steps) == [3, 6] and list(rec.observables["s/n"].values) == [3, 6]
    assert list(rec.ensembles["a"].steps) == [0, 2, 4, 6] and rec.ensembles["a"].positions.shape == (4, 10, 2)
    assert list(rec.ensembles["d"].steps) == [0]
    assert sim.static_ensembles() == ["d"]
    assert "d" not in sim.state_dict()["ensembles"]
    with pytest.raises(ValueError, match="before the simulation's first run"):
        sim.observe("late", lambda s: 0.0)


def test_state_dict_round_trip_continues_bitwise():
    """A Simulation restored from state_dict() continues as the original does."""
    mix = ring_mixture()
    x0 = np.random.default_rng(0).standard_normal((64, 2))

    def make():
        return pf.Simulation({"c": pf.Ensemble(x0)}, seed=3).schedule(pf.moves.MALA(mix, 0.3), "c") \
            .schedule(pf.moves.Resample("systematic"), "c", every=5)
    a = make().run(40)
    st = a.state_dict()
    b = make().load_state_dict(st)
    a.run(25)
    b.run(25)
    assert b.step == a.step == 65
    for k in ("x", "ids"):
        assert getattr(a.ensembles["c"], k).tobytes() == getattr(b.ensembles["c"], k).tobytes()


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
