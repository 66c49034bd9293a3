"""ArviZ / xarray export of trajectories, and the bulk ESS / R-hat that ArviZ reports."""
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.cli import cli

az = pytest.importorskip("arviz")

CONFIG = """
estimator = "sample"
[run]
steps = 300
seed = 4
[output]
every = 3
plot = false
[energy]
kind = "gaussian"
mean = [1.0, -2.0]
precision = [[2.0, 0.6], [0.6, 1.0]]
[ensembles.c]
n = 64
init_scale = 3.0
[[schedule]]
move = "mala"
ensemble = "c"
step_size = 0.4
name = "mala"
"""


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.runner import execute
    out = str(tmp_path_factory.mktemp("export") / "g.h5")
    execute(experiments.validate(loads(CONFIG)), CONFIG, out)
    return out


def test_bulk_ess_and_rhat_equal_arviz_on_ar1_chains():
    rng = np.random.default_rng(0)
    for T in (20, 21, 200):
        x = np.zeros((T, 40, 2))
        e = rng.standard_normal((T, 40, 2))
        for t in range(1, T):
            x[t] = 0.9 * x[t - 1] + e[t]
        ds = az.convert_to_dataset(np.moveaxis(x, 0, 1))
        assert np.allclose(pf.analysis.ess_bulk(x), az.ess(ds)["x"].values, rtol=1e-10)
        assert np.allclose(pf.analysis.split_rhat(x), az.rhat(ds)["x"].values, rtol=1e-12)


def test_inferencedata_round_trip_matches_particleflow_analysis(run_file):
    data = pf.io.to_inferencedata(run_file, first_frame=20, energy=pf.experiments.load_energy)
    with pf.io.open_run(run_file) as r:
        pos = np.asarray(r.ensembles["c"].positions[20:])
        steps = r.ensembles["c"].positions.steps()[20:]
        acc = r.observables["mala/acceptance"]
        acc_at = acc.values[np.searchsorted(acc.steps, steps)]
    post = data.posterior["c"]
    assert post.dims == ("chain", "draw", "c_dim_0") and post.shape == (64, pos.shape[0], 2)
    assert np.array_equal(np.moveaxis(post.values, 0, 1), pos)
    assert np.array_equal(data.posterior["draw"].values, steps)
    s = az.summary(data, var_names=["c"], round_to="none")
    assert np.allclose(s["mean"].values, pos.reshape(-1, 2).mean(0), rtol=1e-12)
    assert np.allclose(s["sd"].values, pos.reshape(-1, 2).std(0, ddof=1), rtol=1e-6)
    assert np.allclose(s["r_hat"].values, pf.analysis.split_rhat(pos), rtol=1e-12)
    assert np.allclose(s["ess_bulk"].values, pf.analysis.ess_bulk(pos), rtol=1e-10)
    ss = data.sample_stats
    e = pf.energies.Gaussian(np.array([1.0, -2.0]), np.array([[2.0, 0.6], [0.6, 1.0]]))
    assert np.allclose(ss["lp"].values, -e.value(pos.reshape(-1, 2)).reshape(pos.shape[:2]).T, rtol=1e-12)
    assert np.array_equal(ss["acceptance_rate"].values, np.broadcast_to(acc_at, (64, len(steps))))
    assert "particle_id" not in ss and "log_weight" not in ss and "step_size" not in ss


def test_export_cli_writes_netcdf_and_refuses_bad_input(run_file, tmp_path):
    out = str(tmp_path / "g.nc")
    res = CliRunner().invoke(cli, ["export", run_file, out])
    assert res.exit_code == 0, res.output
    back = az.from_netcdf(out)
    assert back.posterior["c"].shape[0] == 64 and "lp" in back.sample_stats
    before = open(out, "rb").read()
    res = CliRunner().invoke(cli, ["export", run_file, out])               # exists, no --force
    assert res.exit_code == 2 and "--force" in res.output and open(out, "rb").read() == before
    cut = str(tmp_path / "cut.h5")
    shutil.copy(run_file, cut)
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(run_file) // 2)
    res = CliRunner().invoke(cli, ["export", cut, str(tmp_path / "cut.nc")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "error:" in res.output, res.output
    assert not os.path.exists(tmp_path / "cut.nc")
    res = CliRunner().invoke(cli, ["export", run_file, str(tmp_path / "x.nc"), "--ensemble", "nope"])
    assert res.exit_code == 2 and "no ensemble 'nope'" in res.output
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "missing.h5"), str(tmp_path / "y.nc")])
    assert res.exit_code == 2 and "no such trajectory" in res.output


def test_a_python_built_simulation_exports_from_memory():
    """to_inferencedata takes a Simulation with a frames Recorder (or the recorder), and
    says how to record frames when there is none."""
    target = pf.energies.GaussianMixture(pf.energies.ring_means(6, 3.0), scale=1.0)

    def build():
        sim = pf.Simulation({"chains": pf.Ensemble(np.random.default_rng(0).standard_normal((40, 2)))}, seed=0)
        return sim.schedule(pf.moves.MALA(target, 0.3), "chains", name="mala")
    sim = build()
    sim.trajectory(every=5)
    rec = pf.Recorder(frames=True)
    sim.attach(rec)
    sim.run(20)
    a, b = pf.io.to_inferencedata(sim, energy=target), pf.io.to_inferencedata(rec)
    x = np.moveaxis(rec.ensembles["chains"].positions, 0, 1)
    np.testing.assert_array_equal(a.posterior["chains"].values, x)
    np.testing.assert_array_equal(b.posterior["chains"].values, x)
    np.testing.assert_allclose(a.sample_stats["lp"].values, -target.value(x.reshape(-1, 2)).reshape(40, 5))
    bare = build()
    bare.run(2)
    with pytest.raises(ValueError, match=r"Recorder\(frames=True\)"):
        pf.io.to_inferencedata(bare)
