"""Importance-sampling maximum likelihood (paper 003) against closed forms."""
import math
import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.cli import cli
from particleflow.errors import FitDivergenceError
from particleflow.estimators import GaussianProposal, ImportanceML, weight_second_moment

EPS = 1e-6


def rel_err(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def data(n=100, theta=2.0, seed=0):
    return theta * np.random.default_rng(seed).standard_normal((n, 1))


Q1 = GaussianProposal(2.0, 2.0)
Q2 = GaussianProposal(2.0, lambda p: 2.0 + float(p["std"]))


# ------------------------------------------------------------- parametric families
def test_parametric_families_grad_params_and_log_partition():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 3))
    c = rng.standard_normal(7)
    e = pf.energies.GaussianStd(1.3, dim=3)
    g = e.grad_params(x, c)["std"]
    fd = (c @ pf.energies.GaussianStd(1.3 + EPS, 3).value(x) - c @ pf.energies.GaussianStd(1.3 - EPS, 3).value(x)) / (2 * EPS)
    assert abs(g - fd) < 1e-6 * abs(fd)
    A = rng.standard_normal((3, 3))
    P = A @ A.T + 3 * np.eye(3)
    D = rng.standard_normal((3, 3))
    D = D + D.T
    ep = pf.energies.GaussianPrecision(P)
    gp = ep.grad_params(x, c)["precision"]
    fd = (c @ pf.energies.GaussianPrecision(P + EPS * D).value(x)
          - c @ pf.energies.GaussianPrecision(P - EPS * D).value(x)) / (2 * EPS)
    assert abs((gp * D).sum() - fd) < 1e-6 * abs(fd)
    # log Z against numerical integration (1-D) and the determinant formula
    from scipy.integrate import quad
    s = pf.energies.GaussianStd(0.7)
    z, _ = quad(lambda t: math.exp(-t * t / (2 * 0.7 ** 2)), -np.inf, np.inf)
    assert abs(s.log_partition() - math.log(z)) < 1e-10
    assert abs(ep.log_partition() - (1.5 * math.log(2 * math.pi) - 0.5 * math.log(np.linalg.det(P)))) < 1e-10
    with pytest.raises(ValueError, match="std"):
        s.set_params({"std": np.asarray(-1.0)})
    with pytest.raises(ValueError, match="positive definite"):
        ep.set_params({"precision": -np.eye(3)})
    with pytest.raises(ValueError, match="expected keys"):
        ep.set_params({"P": P})


# ------------------------------------------------------------- J_GL and its gradient
def _fd_J(est, params, direction):
    plus = {k: params[k] + EPS * direction[k] for k in params}
    minus = {k: params[k] - EPS * direction[k] for k in params}
    return (est.objective(plus)[0][0] - est.objective(minus)[0][0]) / (2 * EPS)


@pytest.mark.parametrize("family", ["std", "precision", "mlp"])
def test_grad_of_J_GL_matches_finite_differences(family):
    """Eq. 12 (times N) is the exact derivative of J_GL for draws independent of theta."""
    rng = np.random.default_rng(2)
    if family == "std":
        energy, x, q = pf.energies.GaussianStd(1.7), data(), Q1
    elif family == "precision":
        energy = pf.energies.GaussianPrecision(np.array([[1.0, 0.3], [0.3, 0.8]]))
        x, q = rng.standard_normal((50, 2)), GaussianProposal(0.0, 2.0, dim=2)
    else:
        energy = pf.energies.MLP([2, 5, 1], activation="softplus", seed=3)
        x, q = rng.standard_normal((40, 2)), GaussianProposal(0.0, 1.5, dim=2)
    est = ImportanceML(energy, x, q, M=300, runs=1, seed=4)
    est.fused = False                      # the generic path (the fused one is compared below)
    p = {k: v.copy() for k, v in energy.params.items()}
    direction = {k: rng.standard_normal(np.shape(v)) for k, v in p.items()}
    if family == "precision":
        direction = {"precision": direction["precision"] + direction["precision"].T}
    g = est.grad(p, run=0, route="is")
    fd = _fd_J(est, p, direction)
    assert rel_err(sum((np.asarray(g[k]) * direction[k]).sum() for k in g), fd) < 1e-6


def test_fused_gaussian_path_equals_generic_path():
    for q in (Q1, Q2):
        est = ImportanceML(pf.energies.GaussianStd(1.0), data(), q, M=700, runs=9, seed=5)
        a = est.objective({"std": np.asarray(2.6)})
        est.fused = False
        b = est.objective({"std": np.asarray(2.6)})
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-11)


def test_lbfgs_finds_the_argmin_and_exact_J_argmin_is_the_mle():
    x = data()
    mle = math.sqrt((x ** 2).mean())
    grid = np.linspace(1.0, 3.5, 2501)
    J = (x ** 2).sum() / (2 * grid ** 2) + len(x) * 0.5 * np.log(2 * np.pi * grid ** 2)
    assert abs(grid[np.argmin(J)] - mle) <= 1e-3
    est = ImportanceML(pf.energies.GaussianStd(1.0), x, Q1, M=5000, runs=1, seed=6)
    p, res = est.fit_lbfgs({"std": np.asarray(1.5)}, bounds={"std": (0.1, None)})
    assert res.success
    vals = [est.objective({"std": np.asarray(t)})[0][0] for t in grid]
    assert abs(float(p["std"]) - grid[int(np.argmin(vals))]) <= 2e-3
    with pytest.raises(ValueError, match="independent of theta"):
        ImportanceML(pf.energies.GaussianStd(1.0), x, Q2, M=10).fit_lbfgs({"std": np.asarray(1.5)})


def test_is_argmin_converges_to_mle_as_M_grows():
    x = data()
    mle = math.sqrt((x ** 2).mean())
    grid = np.linspace(1.0, 3.5, 251)
    errs = {}
    for M in (100, 5000):
        est = ImportanceML(pf.energies.GaussianStd(1.0), x, Q2, M=M, runs=200, seed=7)
        J = np.stack([est.objective({"std": np.asarray(t)})[0] for t in grid], 1)
        am = grid[np.argmin(J, 1)]
        errs[M] = np.sqrt(((am - mle) ** 2).mean())
    assert errs[5000] < errs[100] / 3          # ~ 1/sqrt(M): sqrt(50) = 7 expected
    assert errs[5000] < 0.05


# ------------------------------------------------------------- weight variance (docs)
def test_weight_second_moment_closed_form_and_divergence_threshold():
    # q1 = N(2, 2^2): finite iff theta < 2 sqrt(2)
    assert math.isfinite(weight_second_moment(2.8, 2.0, 2.0))
    assert weight_second_moment(2.0 * math.sqrt(2) + 1e-9, 2.0, 2.0) == math.inf
    assert all(math.isfinite(weight_second_moment(t, 2.0, 2.0 + t)) for t in (0.5, 3, 10, 100))
    # Monte Carlo check of the closed form, q2 at theta = 3: tolerance 5 standard errors
    theta, mu, s = 3.0, 2.0, 5.0
    y = mu + s * np.random.default_rng(8).standard_normal(2_000_000)
    w = np.exp(-y * y / (2 * theta ** 2)) * math.sqrt(2 * math.pi) * s * np.exp((y - mu) ** 2 / (2 * s * s))
    w2 = w * w
    assert abs(w2.mean() - weight_second_moment(theta, mu, s)) < 5 * w2.std() / math.sqrt(w2.size)
    assert abs(w.mean() - math.sqrt(2 * math.pi) * theta) < 5 * w.std() / math.sqrt(w.size)   # E w = Z


def test_band_of_J_GL_q1_explodes_beyond_2_8_q2_stays_narrow():
    """Figures 1-2 as numbers: the spread of J_GL over runs shrinks like 1/sqrt(M)
    where the weights have finite variance and does not where they do not."""
    x = data()
    sd = {}
    thetas = (2.0, 4.0)
    for name, q in (("q1", Q1), ("q2", Q2)):
        for M in (100, 5000):
            est = ImportanceML(pf.energies.GaussianStd(1.0), x, q, M=M, runs=300, seed=9)
            sd[name, M] = np.array([est.objective({"std": np.asarray(t)})[0].std() for t in thetas])
    ratio_q1 = sd["q1", 100] / sd["q1", 5000]
    ratio_q2 = sd["q2", 100] / sd["q2", 5000]
    assert 5 < ratio_q1[0] < 10 and 5 < ratio_q2[0] < 10 and 5 < ratio_q2[1] < 10   # sqrt(50) = 7.07
    assert ratio_q1[1] < 3.5                                                           # infinite variance
    assert sd["q2", 5000][1] < sd["q1", 5000][1] / 5


# ------------------------------------------------------------- the three routes
def test_three_routes_converge_to_mle_with_smaller_spread_under_q2():
    x = data()
    mle = math.sqrt((x ** 2).mean())
    kw = dict(iterations=40, learning_rate=1.0, average_last=20, max_step=0.5)
    spread = {}
    for name, q, M in (("q1", Q1, 100), ("q2", Q2, 100), ("q2", Q2, 2000)):
        est = ImportanceML(pf.energies.GaussianStd(1.0), x, q, M=M, runs=12, seed=10)
        for route in ("is", "imh", "is_resample"):
            th = np.array([float(est.fit({"std": np.asarray(1.5)}, run=r, route=route, **kw)[0]["std"])
                           for r in range(12)])
            spread[name, M, route] = th.std()
            if name == "q2":
                # within Monte-Carlo error: 4 standard errors of the run mean, plus the
                # O(1/M) bias of self-normalised IS
                assert abs(th.mean() - mle) < 4 * th.std() / math.sqrt(12) + 2.0 / M, (route, M, th)
    for route in ("is", "imh", "is_resample"):
        assert spread["q2", 100, route] < spread["q1", 100, route], route
        assert spread["q2", 2000, route] < spread["q2", 100, route] / 2, route


def test_bad_input_is_named():
    e = pf.energies.GaussianStd(1.0)
    with pytest.raises(ValueError, match="NaN"):
        ImportanceML(e, np.array([[1.0], [np.nan]]), Q1, M=10)
    with pytest.raises(ValueError, match="dimension"):
        ImportanceML(e, np.zeros((5, 2)), Q1, M=10)
    with pytest.raises(ValueError, match="route"):
        ImportanceML(e, data(), Q1, M=10).grad(route="mcmc")
    with pytest.raises(FitDivergenceError, match="learning rate"):
        ImportanceML(e, data(), Q2, M=10).fit({"std": np.asarray(3.0)}, learning_rate=1e3)


# ------------------------------------------------------------- config and CLI
SMALL = """
estimator = "importance_ml"
[run]
seed = 3
runs = 40
[grid]
points = 11
[sampling]
M = [50, 400]
[fit]
runs = 2
iterations = 5
average_last = 2
[output]
plot = false
"""


def test_cli_writes_the_contract_results(tmp_path):
    cfg = tmp_path / "imp.toml"
    cfg.write_text(SMALL)
    out = str(tmp_path / "imp.h5")
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", out, "--quiet"])
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert f["results/theta_grid"].shape == (11,)
        assert f["results/J_true"].shape == (11,)
        for q in ("q1", "q2"):
            for M in (50, 400):
                assert f[f"results/J_{q}_M{M}"].shape == (40, 11)
                assert f[f"results/ess_{q}_M{M}"].shape == (40, 11)
                assert f[f"results/theta_hat_imh_{q}_M{M}"].shape == (2,)
        grid = f["results/theta_grid"][()]
        x = f["particles/data/position/value"][0]
        J = (x ** 2).sum() / (2 * grid ** 2) + len(x) * 0.5 * np.log(2 * np.pi * grid ** 2)
        np.testing.assert_allclose(f["results/J_true"][()], J, rtol=1e-12)
    r = CliRunner().invoke(cli, ["resume", out])
    assert r.exit_code == 2 and "already complete (5 of 5 steps)" in r.output
    r = CliRunner().invoke(cli, ["plot", out])
    import importlib.util
    if importlib.util.find_spec("matplotlib") is not None:
        assert r.exit_code == 0, r.output
    else:                                    # the test extra has no matplotlib: a clear user error
        assert r.exit_code == 2 and "matplotlib" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("[fit]", "[fit]\nroute = ['is']"))
    r = CliRunner().invoke(cli, ["run", str(bad), "--out", str(tmp_path / "b.h5")])
    assert r.exit_code == 2 and "did you mean 'routes'" in r.output
    bad.write_text(SMALL.replace("M = [50, 400]", "M = [50, 100000000]"))
    r = CliRunner().invoke(cli, ["run", str(bad), "--out", str(tmp_path / "b.h5")])
    assert r.exit_code == 2 and "GiB" in r.output and not os.path.exists(tmp_path / "b.h5")


def test_study_interrupted_and_resumed_is_bitwise(tmp_path):
    """The study runs through the common runner: SIGTERM after iteration 3, resume,
    and every dataset equals the uninterrupted run's (IMH chains and the
    Polyak-Ruppert tails are move state in the checkpoint)."""
    from conftest import interrupted_and_resumed
    text = SMALL.replace("iterations = 5", "iterations = 8").replace("average_last = 2", "average_last = 6")
    full, part, start = interrupted_and_resumed(text, tmp_path, 3)
    assert start["state"]["moves"]["descent_imh_q1_M50"]["chains"]
    with h5py.File(full, "r") as a, h5py.File(part, "r") as b:
        for g in ("results", "observables"):
            names = []
            a[g].visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
            for k in names:
                if k != "elapsed_s":
                    assert a[g][k][()].tobytes() == b[g][k][()].tobytes(), (g, k)
        assert len(names) > 20
