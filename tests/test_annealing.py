"""log Z by AIS and adaptive tempered SMC against exact normalising constants."""
import math
import os

import numpy as np
import pytest

import particleflow as pf
from particleflow.energies import Interpolated
from particleflow.estimators.annealing import anneal, gaussian_base, log_z

from conftest import ring_mixture


def gaussian(d, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    P = A @ A.T / d + 0.5 * np.eye(d)
    e = pf.energies.Gaussian(rng.standard_normal(d), P)
    return e, 0.5 * d * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(P)[1]


@pytest.mark.parametrize("d", [2, pytest.param(20, marks=pytest.mark.slow)])
def test_smc_log_z_of_gaussians(d):
    e, exact = gaussian(d)
    m, se, est = log_z(e, 4000, repeats=8, mcmc_steps=5)
    assert abs(m - exact) < 3 * se + 1e-3, (m, exact, se)
    assert se < 0.02


def test_log_z_of_the_mixture_by_smc_and_ais_and_the_error_shrinks_with_n():
    """The ring mixture is a normalised density: log Z = 0."""
    mix = ring_mixture()
    ses = []
    for n in (250, 4000):
        m, se, _ = log_z(mix, n, repeats=8, base_scale=3.0)
        assert abs(m) < 3 * se + 1e-3, (n, m, se)
        ses.append(se)
    assert ses[1] < ses[0] / 2                 # 16x the particles: about 4x smaller
    m, se, _ = log_z(mix, 1000, repeats=6, base_scale=3.0, betas=np.linspace(0, 1, 51)[1:])
    assert abs(m) < 3 * se + 1e-3, (m, se)


def test_the_adaptive_schedule_keeps_the_conditional_ess():
    mix = ring_mixture()
    run = anneal(mix, 2000, base_scale=3.0, cess=0.9)
    assert run["betas"][-1] == 1.0 and np.all(np.diff(run["betas"]) > 0) and len(run["betas"]) > 3
    assert run["ess"].min() > 0.4 * 2000                  # resampled below half the ensemble
    again = anneal(mix, 2000, base_scale=3.0, cess=0.9)
    assert again["log_z"] == run["log_z"]                 # deterministic


def test_tempered_energy_and_bad_schedules():
    base, lz0 = gaussian_base(2, 2.0)
    assert abs(lz0 - math.log(2 * math.pi * 4)) < 1e-12
    t = Interpolated(base, ring_mixture(), 0.3)
    assert pf.energies.check_gradient(t, np.random.default_rng(0).standard_normal((5, 2))).ok
    with pytest.raises(ValueError, match="betas"):
        anneal(ring_mixture(), 100, betas=[0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="repeats"):
        log_z(ring_mixture(), 100, repeats=1)


def test_the_logz_experiment_reports_log_z_with_its_error(tmp_path):
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.io.h5md import open_run
    from particleflow.runner import execute
    for text, exact in (("""
estimator = "logz"
[run]
steps = 4
[energy]
kind = "gaussian"
mean = [1.0, -1.0]
precision = [[2.0, 0.5], [0.5, 1.0]]
[annealing]
particles = 1500
[output]
plot = false
""", math.log(2 * math.pi) - 0.5 * math.log(1.75)), (open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "logz_mixture.toml")).read().replace(
            "steps = 8", "steps = 3").replace("particles = 4000", "particles = 1000").replace(
            "plot = true", "plot = false").replace('method = "smc"', 'method = "ais"'), 0.0)):
        out = str(tmp_path / "z.h5")
        execute(experiments.validate(loads(text)), text, out)
        with open_run(out) as r:
            res = r.results
            assert abs(float(res["log_z_exact"]) - exact) < 1e-12
            assert abs(float(res["log_z"]) - exact) < 3 * float(res["log_z_se"]) + 2e-3
            assert len(res["log_z_runs"]) == len(r.observables["anneal/log_z"].values)


@pytest.fixture(scope="module")
def trained_ring(tmp_path_factory):
    """A DEEN energy trained for 400 steps on the 8-Gaussian ring (runs/deen_ring.toml)."""
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.runner import execute
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "runs", "deen_ring.toml")).read()
    cfg = loads(text)
    cfg["run"]["steps"], cfg["data"]["n"], cfg["data"]["n_heldout"] = 400, 4000, 1000
    cfg["output"]["plot"] = False
    out = tmp_path_factory.mktemp("deen") / "deen_ring.h5"
    execute(experiments.validate(cfg), text, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["smc", "ais"])
def test_log_z_of_a_learned_energy_matches_grid_quadrature(trained_ring, method):
    """A tanh network's exp(-E) need not be integrable over the plane, so the learned
    energy is normalised over the box [-3, 3]^2 (uniform base); SMC and AIS agree with
    the midpoint rule on a 1000 x 1000 grid within 3 standard errors (8 repeats)."""
    from particleflow import experiments
    from particleflow.config import loads
    from particleflow.io.h5md import open_run
    from particleflow.runner import execute
    text = f"""
estimator = "logz"
[run]
steps = 8
[energy]
from_run = "{trained_ring.name}"
[annealing]
method = "{method}"
particles = 2000
temperatures = 50
base = "box"
box = [-3.0, 3.0]
step_size = 0.05
[output]
plot = false
"""
    out = str(trained_ring.parent / f"z_{method}.h5")
    execute(experiments.validate(loads(text)), text, out, base_dir=str(trained_ring.parent))
    with open_run(out) as r:
        res = {k: np.asarray(v) for k, v in r.results.items()}
        summary = experiments.get("logz").summary(r, experiments.validate(loads(text)))
    assert "log_z_exact" not in res
    lz, se, quad = float(res["log_z"]), float(res["log_z_se"]), float(res["log_z_quadrature"])
    assert abs(lz - quad) < 3 * se and se < 0.03, (lz, se, quad)
    assert "grid quadrature" in summary[0]


def test_bad_from_run_and_box_input_is_named(tmp_path, trained_ring):
    from particleflow import experiments
    from particleflow.config import ConfigError, loads
    from particleflow.runner import execute

    def run(text):
        execute(experiments.validate(loads(text)), text, str(tmp_path / "bad.h5"), base_dir=str(tmp_path))
    head = '''estimator = "logz"\n[run]\nsteps = 2\n[output]\nplot = false\n'''
    with pytest.raises(ConfigError, match="no such file"):
        run(head + '[energy]\nfrom_run = "missing.h5"\n')
    with pytest.raises(ConfigError, match="exactly one of energy.kind"):
        run(head + '[energy]\nfrom_run = "x.h5"\nkind = "gaussian"\n')
    with pytest.raises(ConfigError, match="exactly one of energy.kind"):
        run(head + '[energy]\n')
    with pytest.raises(ConfigError, match=r"box = \[lo, hi\]"):
        run(head + f'[energy]\nfrom_run = "{trained_ring}"\n[annealing]\nbase = "box"\nbox = [1.0, -1.0]\n')
    # a run file that saves no energy (a logz run rebuilds its own, the Gaussian one, but
    # an interrupted DEEN run has no trained parameters)
    not_trained = tmp_path / "empty.h5"
    import h5py
    with h5py.File(not_trained, "w") as f:
        f.attrs["x"] = 1
    with pytest.raises(ConfigError, match="has no energy to load"):
        run(head + f'[energy]\nfrom_run = "{not_trained}"\n')
    assert not (tmp_path / "bad.h5").exists()
