"""The generic ``sample`` experiment: every declared move runs from a config and gives
bitwise what the same Simulation written in Python gives; summed and tempered
energies (gradients against central differences, sampled moments against the exact
ones); bad configs get one clear line and exit code 2."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.cli import cli
from particleflow.experiments.sample import MOVES
from conftest import message_lines

HEAD = """estimator = "sample"
[run]
steps = {steps}
seed = 5
dtype = "float64"
[output]
every = {steps}
plot = false
"""
RING = """[energy]
kind = "gaussian_mixture"
ring_components = 3
ring_radius = 2.0
scale = 0.7
"""


def run_config(tmp_path, text, name="c"):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text)
    out = tmp_path / f"{name}.h5"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(out), "--quiet"])
    return res, out


def last_frame(out, ens="c"):
    with pf.io.open_run(str(out)) as r:
        return np.asarray(r.ensembles[ens].positions[-1])


def ring():
    ang = 2 * np.pi * np.arange(3) / 3
    return pf.energies.GaussianMixture(2.0 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=0.7)


def initial(n, seed=5):
    z = pf.random.Stream(seed, pf.random.StreamBlock.INIT).normal(0, np.arange(n), 2, pf.random.Purpose.INIT)
    return z


# (move table, the same move in Python)
CASES = {
    "parallel_tempering": ('step_size = 0.3\nbetas = [1.0, 0.5, 0.25]\n',
                           lambda e, sim: pf.moves.ParallelTempering(e, [1.0, 0.5, 0.25], 0.3)),
    "parallel_tempering_ladder": ('step_size = 0.3\nn_temperatures = 3\nbeta_min = 0.25\n',
                                  lambda e, sim: pf.moves.ParallelTempering(e, pf.moves.geometric_ladder(3, 0.25), 0.3)),
    "independent_mh": ('proposal_scale = 2.5\nproposal_mean = [0.5, 0.0]\n',
                       lambda e, sim: pf.moves.IndependentMH(
                           e, pf.energies.Gaussian(np.array([0.5, 0.0]), np.eye(2) / 2.5 ** 2))),
    "reinitialize": ('probability = 0.2\nbase = "uniform"\nlo = -3.0\nhi = 3.0\n',
                     lambda e, sim: pf.moves.Reinitialize(pf.moves.UniformBox(-3.0, 3.0), 0.2)),
    "langevin": ('step_size = 0.05\n', lambda e, sim: pf.moves.Langevin(e, 0.05)),
    "hmc": ('step_size = 0.2\nn_leapfrog = 5\n', lambda e, sim: pf.moves.HMC(e, 0.2, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_move_equals_python(tmp_path, case):
    table, make = CASES[case]
    move = case.replace("_ladder", "")
    text = HEAD.format(steps=20) + RING + '[ensembles.c]\nn = 600\n' + \
        f'[[schedule]]\nmove = "{move}"\nensemble = "c"\n{table}'
    res, out = run_config(tmp_path, text)
    assert res.exit_code == 0, res.output
    e = ring()
    sim = pf.Simulation(seed=5)
    sim.add_ensemble("c", pf.Ensemble(initial(600), name="c"))
    sim.schedule(make(e, sim), "c", name=f"{move}_0")
    sim.run(20)
    got = last_frame(out)
    assert got.tobytes() == sim.ensembles["c"].x.tobytes()
    assert not np.array_equal(got, initial(600))


def test_every_declared_move_has_a_case_or_a_test_elsewhere():
    # mala, resample, reweight and restart run in test_experiments / test_cli / test_from_run
    assert set(MOVES) == {c.replace("_ladder", "") for c in CASES} | {"mala", "resample", "reweight", "restart"}


def test_sum_and_tempered_gradients():
    x = np.random.default_rng(1).normal(size=(20, 2)) * 2
    e = pf.energies.Sum([ring(), pf.energies.Gaussian(np.zeros(2), 0.1 * np.eye(2))], [1.0, 0.5])
    t = pf.energies.Tempered(e, 3.0)
    for energy in (e, t):
        chk = pf.energies.check_gradient(energy, x, n_particles=6)
        assert chk.ok, chk.report()
    np.testing.assert_allclose(t.value(x), (ring().value(x) + 0.5 * 0.05 * (x ** 2).sum(1)) / 3.0,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        pf.energies.Tempered(e, 0.0)
    with pytest.raises(ValueError, match="share one dimension"):
        pf.energies.Sum([ring(), pf.energies.Gaussian(np.zeros(3), np.eye(3))])


def test_tempered_and_summed_gaussian_moments(tmp_path):
    # terms: N(0, 1) and N(2, 1) energies summed (precision 2, mean 1), at T = 3:
    # exp(-E/3) is N(1, 3/2) per coordinate.
    text = HEAD.format(steps=300) + """[energy]
temperature = 3.0
[[energy.terms]]
kind = "gaussian"
mean = [0.0, 0.0]
precision = [[1.0, 0.0], [0.0, 1.0]]
[[energy.terms]]
kind = "gaussian"
mean = [2.0, 2.0]
precision = [[1.0, 0.0], [0.0, 1.0]]
[ensembles.c]
n = 4000
[[schedule]]
move = "mala"
ensemble = "c"
step_size = 1.0
"""
    res, out = run_config(tmp_path, text)
    assert res.exit_code == 0, res.output
    x = last_frame(out)
    n = x.size
    se_mean = math.sqrt(1.5 / n)
    se_var = 1.5 * math.sqrt(2 / n)
    assert abs(x.mean() - 1.0) < 5 * se_mean, x.mean()
    assert abs(x.var() - 1.5) < 5 * se_var, x.var()


@pytest.mark.parametrize("energy,schedule,msg", [
    (RING, 'move = "nudge"\nensemble = "c"\n', "schedule[0].move"),
    (RING, 'move = "parallel_tempering"\nensemble = "c"\nstep_size = 0.1\n', "exactly one of betas"),
    (RING, 'move = "parallel_tempering"\nensemble = "c"\nstep_size = 0.1\nbetas = [1.0, 0.5, 0.7]\n', "betas"),
    (RING, 'move = "parallel_tempering"\nensemble = "c"\nstep_size = 0.1\nn_temperatures = 7\n', "multiple of 7"),
    (RING, 'move = "independent_mh"\nensemble = "c"\nproposal_scale = 1.0\nproposal_mean = [1.0]\n',
     "proposal_mean"),
    (RING, 'move = "reinitialize"\nensemble = "c"\nprobability = 0.1\nlo = 1.0\nhi = 0.0\n', "hi must be above lo"),
    ('[energy]\ntemperature = 2.0\n', 'move = "mala"\nensemble = "c"\nstep_size = 0.1\n', "exactly one of"),
    ('[energy]\nkind = "gaussian"\nmean = [0.0]\nprecision = [[1.0]]\n[[energy.terms]]\nkind = "gaussian"\n',
     'move = "mala"\nensemble = "c"\nstep_size = 0.1\n', "exactly one of"),
    ('[energy]\n[[energy.terms]]\nkind = "gaussian"\nmean = [0.0]\nprecision = [[1.0]]\n[[energy.terms]]\n'
     'kind = "gaussian"\nmean = [0.0, 0.0]\nprecision = [[1.0, 0.0], [0.0, 1.0]]\n',
     'move = "mala"\nensemble = "c"\nstep_size = 0.1\n', "share one dimension"),
    ('[energy]\n[[energy.terms]]\nkind = "gaussian"\nmean = [0.0]\nprecision = [[1.0]]\nwieght = 2.0\n',
     'move = "mala"\nensemble = "c"\nstep_size = 0.1\n', "wieght"),
    ('[energy]\ntemperature = -1.0\nkind = "gaussian"\nmean = [0.0]\nprecision = [[1.0]]\n',
     'move = "mala"\nensemble = "c"\nstep_size = 0.1\n', "temperature"),
])
def test_bad_configs_one_line_exit_2(tmp_path, energy, schedule, msg):
    text = HEAD.format(steps=2) + energy + "[ensembles.c]\nn = 100\n[[schedule]]\n" + schedule
    res, out = run_config(tmp_path, text)
    assert res.exit_code == 2, res.output
    assert msg in res.output and len(message_lines(res.output)) == 1, res.output
    assert not out.exists()


def test_a_run_with_divergent_hmc_transitions_says_so(tmp_path):
    """HMC past the leapfrog's stability limit: the run's summary counts the divergent
    transitions (a running total, recorded every 4 steps, so none is missed) and a
    warning names the slot and the fix, even with --quiet."""
    text = HEAD.format(steps=8).replace("every = 8", "every = 4") + RING + '[ensembles.c]\nn = 300\n' + \
        '[[schedule]]\nmove = "hmc"\nensemble = "c"\nstep_size = 3.0\nn_leapfrog = 10\n'
    res, out = run_config(tmp_path, text)
    assert res.exit_code == 0, res.output
    assert "warning: hmc_0:" in res.output and "lower step_size" in res.output
    with pf.io.open_run(str(out)) as r:
        total = np.asarray(r.observables["hmc_0/divergences"].values)
        assert list(r.observables["hmc_0/divergences"].steps) == [4, 8]
    assert total[1] > total[0] > 0 and total[1] <= 8 * 300
    loud = CliRunner().invoke(cli, ["run", str(tmp_path / "c.toml"), "--out", str(out), "--force"])
    assert f"hmc_0: {int(total[-1])} divergent transitions over the run" in loud.output, loud.output
    (tmp_path / "c.toml").write_text(text.replace("step_size = 3.0", "step_size = 0.2"))
    calm = CliRunner().invoke(cli, ["run", str(tmp_path / "c.toml"), "--out", str(out), "--force"])
    assert "hmc_0: 0 divergent transitions over the run" in calm.output and "warning" not in calm.output
