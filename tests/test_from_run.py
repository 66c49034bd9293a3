"""Sampling a trained energy from the CLI (energy.from_run) equals doing it in Python."""
import os

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.cli import cli
from conftest import message_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def deen_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("from_run")
    res = CliRunner().invoke(cli, ["run", os.path.join(ROOT, "runs", "deen_ring.toml"), "--out", str(d / "deen.h5"),
                                   "--steps", "200", "--set", "data.n=2000", "--set", "data.n_heldout=500",
                                   "--set", "output.plot=false", "--quiet"])
    assert res.exit_code == 0, res.output
    return d


@pytest.mark.parametrize("move", ["mala", "hmc"])
def test_cli_sampling_of_a_trained_energy_equals_python(deen_run, move):
    x0 = np.random.default_rng(3).uniform(-2.5, 2.5, (300, 2))
    np.save(deen_run / "x0.npy", x0)
    extra = "n_leapfrog = 4\n" if move == "hmc" else ""
    text = f"""
estimator = "sample"
[run]
steps = 30
seed = 11
[output]
every = 30
plot = false
[energy]
from_run = "deen.h5"
[ensembles.c]
n = 300
init = "file"
file = "x0.npy"
[[schedule]]
move = "{move}"
ensemble = "c"
step_size = 0.01
{extra}"""
    (deen_run / f"s_{move}.toml").write_text(text)
    out = deen_run / f"s_{move}.h5"
    res = CliRunner().invoke(cli, ["run", str(deen_run / f"s_{move}.toml"), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(out)) as r:
        cli_last = np.asarray(r.ensembles["c"].positions[-1])
    with pf.io.open_run(str(deen_run / "deen.h5")) as r:
        energy = pf.experiments.load_energy(r)
    mv = pf.moves.MALA(energy, 0.01) if move == "mala" else pf.moves.HMC(energy, 0.01, 4)
    sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=11).schedule(mv, "c")
    sim.run(30)
    assert sim.ensembles["c"].x.tobytes() == cli_last.tobytes()
    assert not np.array_equal(cli_last, x0)


def test_from_run_errors_are_one_line(deen_run, tmp_path):
    def run(energy_table):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(f'estimator = "sample"\n[run]\nsteps = 2\n[energy]\n{energy_table}\n'
                       '[ensembles.c]\nn = 10\n[[schedule]]\nmove = "mala"\nensemble = "c"\nstep_size = 0.1\n')
        return CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "bad.h5")])
    for table, msg in (('from_run = "nowhere.h5"', "no such file"),
                       (f'from_run = "{deen_run / "x0.npy"}"', "has no energy to load")):
        res = run(table)
        assert res.exit_code == 2 and msg in res.output and len(message_lines(res.output)) == 1, res.output
        assert not (tmp_path / "bad.h5").exists()


def test_docs_config_example_runs(deen_run):
    """The tempered-sum config of docs/energies-and-moves.md, with its from_run pointed at
    the fixture's trained energy and 5 steps."""
    text = open(os.path.join(ROOT, "docs", "energies-and-moves.md")).read()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert 'from_run = "out/deen_ring.h5"' in block and "steps = 1000" in block
    block = block.replace('from_run = "out/deen_ring.h5"', 'from_run = "deen.h5"').replace("steps = 1000", "steps = 5")
    (deen_run / "docs_example.toml").write_text(block + "[output]\nplot = false\n")
    res = CliRunner().invoke(cli, ["run", str(deen_run / "docs_example.toml"), "--out",
                                   str(deen_run / "docs_example.h5"), "--quiet"])
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(deen_run / "docs_example.h5")) as r:
        x = np.asarray(r.ensembles["chains"].positions[-1])
    assert x.shape == (4000, 2) and np.isfinite(x).all()
