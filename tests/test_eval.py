"""Sample quality (``pf.analysis.quality`` and ``particleflow eval``): the vectorised
kernel Stein discrepancy equals the pairwise definition, is near zero for exact
samples and clearly positive for shifted ones; mode masses of exact mixture draws
match the weights; the command reports them and refuses bad input in one line."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.analysis import ksd, mode_mass
from particleflow.cli import cli
from particleflow.experiments import figures


def stein_kernel(a, b, sa, sb, c=1.0, beta=-0.5):
    """k0 of the IMQ kernel written term by term (Gorham & Mackey 2017, Eq. 1)."""
    d = a.size
    r2 = float(((a - b) ** 2).sum())
    u = c * c + r2
    return (sa @ sb * u ** beta + 2 * beta * u ** (beta - 1) * (sb - sa) @ (a - b)
            - 2 * beta * d * u ** (beta - 1) - 4 * beta * (beta - 1) * u ** (beta - 2) * r2)


def test_ksd_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, 3)) * 1.3 + 0.2
    s = -x
    brute = np.mean([stein_kernel(x[i], x[j], s[i], s[j]) for i in range(25) for j in range(25) if i != j])
    assert math.isclose(ksd(x, lambda y: -y), brute, rel_tol=1e-12)


def test_ksd_separates_exact_from_shifted_samples():
    g = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    rng = np.random.default_rng(1)
    exact = [ksd(rng.standard_normal((1000, 2)), lambda y: -g.grad(y)) for _ in range(4)]
    shifted = [ksd(rng.standard_normal((1000, 2)) + 0.3, lambda y: -g.grad(y)) for _ in range(4)]
    # measured: exact within +-0.005 (U-statistic noise at n = 1000), shifted 0.09-0.11
    assert max(abs(v) for v in exact) < 0.015
    assert min(shifted) > 0.05


def test_mode_mass_of_exact_mixture_draws():
    ang = 2 * np.pi * np.arange(4) / 4
    mix = pf.energies.GaussianMixture(3 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=0.5,
                                      weights=[0.1, 0.2, 0.3, 0.4])
    n = 20000
    fr, p = mode_mass(mix.sample_numpy(n, np.random.default_rng(2)), mix)
    se = np.sqrt(mix.weights * (1 - mix.weights) / n)
    assert np.all(np.abs(fr - mix.weights) < 4 * se), fr
    assert p > 1e-3
    equal = pf.energies.GaussianMixture(mix.means, scale=0.5)          # draws with weights 1/4 each
    fr_eq, p_eq = mode_mass(equal.sample_numpy(n, np.random.default_rng(3)), mix)
    assert p_eq < 1e-12 and abs(fr_eq[0] - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)


@pytest.mark.slow
def test_eval_command(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('estimator = "sample"\n[run]\nsteps = 200\nseed = 3\n[output]\nevery = 50\nplot = false\n'
                   '[energy]\nkind = "gaussian_mixture"\nring_components = 3\nring_radius = 3.0\n'
                   '[ensembles.c]\nn = 3000\n[[schedule]]\nmove = "mala"\nensemble = "c"\nstep_size = 0.5\n')
    out = tmp_path / "s.h5"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["eval", str(out), "--png", str(tmp_path / "e.png")])
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: float(ln.split()[1]) for ln in res.output.splitlines()[1:] if ln.startswith("  ")}
    assert {"ksd2", "mmd2", "mmd_p_value", "energy_ks_p_value", "mode_mass_0", "mode_mass_p_value"} <= set(rows)
    assert abs(rows["ksd2"]) < 0.02 and rows["mode_mass_p_value"] > 1e-4
    assert (tmp_path / "e.png").exists()
    np.save(tmp_path / "bad.npy", np.zeros((10, 3)))
    for args, msg in (([str(tmp_path / "none.h5")], "no such trajectory"),
                      ([str(out), "--reference", str(tmp_path / "bad.npy")], "reference must hold"),
                      ([str(out), "--ensemble", "z"], "no ensemble 'z'"),
                      ([str(out), "--frame", "99"], "out of range")):
        res = CliRunner().invoke(cli, ["eval"] + args)
        assert res.exit_code == 2 and msg in res.output and res.output.count("\n") == 1, res.output


@pytest.mark.slow
def test_eval_and_figure_of_parallel_tempering_use_the_cold_rows(tmp_path):
    cfg = tmp_path / "pt.toml"
    cfg.write_text('estimator = "sample"\n[run]\nsteps = 150\nseed = 4\n[output]\nevery = 50\nplot = false\n'
                   '[energy]\nkind = "gaussian_mixture"\nring_components = 3\nring_radius = 3.0\nscale = 0.5\n'
                   '[ensembles.c]\nn = 6000\n[[schedule]]\nmove = "parallel_tempering"\nensemble = "c"\n'
                   'step_size = 0.2\nbetas = [1.0, 0.3, 0.1]\n')
    out = tmp_path / "pt.h5"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(out)) as r:
        assert pf.analysis.replica_groups(r, "c") == 3
        ev = pf.analysis.evaluate_run(r, pf.experiments.load_energy)
        (kind, title, last, _), = figures.ensemble_panels(r)
        every_row = np.asarray(r.ensembles["c"].positions[-1])
    rows = {k: v for k, v, _ in ev["rows"]}
    assert ev["samples"].shape == (2000, 2) and last.shape == (2000, 2) and "beta = 1" in title
    np.testing.assert_array_equal(ev["samples"], every_row[::3])
    assert abs(rows["ksd2"]) < 0.02 and rows["mode_mass_p_value"] > 1e-4
    # all rows, hot replicas included, are far from exp(-E)
    g = pf.energies.GaussianMixture(3.0 * np.stack([np.cos(2 * np.pi * np.arange(3) / 3),
                                                     np.sin(2 * np.pi * np.arange(3) / 3)], 1), scale=0.5)
    assert ksd(every_row, lambda y: -g.grad(y)) > 5 * max(abs(rows["ksd2"]), 0.01)
