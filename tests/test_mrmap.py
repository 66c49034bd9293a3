"""Maximum Recovery MAP (paper 000): the parametric estimators against their closed
forms, the hyperbolic network's hand-written back-propagation against finite
differences, the shared leapfrog, training with projected weights, resume, bad input."""
import importlib.util
import math

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from conftest import interrupted_and_resumed, over_thread_ranks
from particleflow import experiments
from particleflow.cli import cli as main
from particleflow.config import ConfigError, loads
from particleflow.energies.hyperbolic import HyperbolicNetwork
from particleflow.estimators.contrastive import flatten
from particleflow.estimators import mrmap as M
from particleflow.integrators import leapfrog, momentum_from_positions
from particleflow.runner import execute

HAVE_DATA = importlib.util.find_spec("sklearn") is not None and importlib.util.find_spec("skimage") is not None

MIXTURE = """
estimator = "mrmap"
[run]
steps = 12
seed = 0
[data]
kind = "mixture"
n = 200
n_val = 300
[model]
q = 16
layers = 4
[mrmap]
sigma = 3.0
batch = 64
lr = 1e-2
decay_every = 5
[output]
every = 2
checkpoint_every = 4
plot = false
"""


def random_network(p, q, l, width, solver="direct", seed=0):
    rng = np.random.default_rng(seed)
    net = HyperbolicNetwork.init(p, q, l, width=width, seed=seed, solver=solver, cg_iter=60)
    P = dict(net.params)
    P["bl"] = 0.5 * rng.normal(size=P["bl"].shape)
    P["wl"] = rng.uniform(0.2, 1.0, size=P["wl"].shape)
    P["c"] = 0.3 * rng.normal(size=q)
    net.set_params(P)
    return net


def run_cli(tmp_path, text, name):
    """``particleflow run`` of config ``text`` written to ``name``.toml; (result, output path)."""
    cfg, out = tmp_path / f"{name}.toml", tmp_path / f"{name}.h5"
    cfg.write_text(text)
    return CliRunner().invoke(main, ["run", str(cfg), "--out", str(out)]), out


# ----------------------------------------------------------------- parametric
@pytest.mark.parametrize("n,seed", [(100, 0), (1000, 1), (10000, 2)])
def test_gaussian_variance_minimiser_equals_the_closed_form(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, math.sqrt(2.0), n)
    d = x + rng.normal(0, 0.7, n)
    num, closed = M.gaussian_variance_mrmap(x, d, 0.7), M.gaussian_variance_closed_form(x, d, 0.7)
    assert abs(num - closed) <= 1e-6 * closed


def test_gaussian_variance_is_consistent():
    """Mean over 40 repetitions at n = 20000 within 4 standard errors of theta = 2."""
    rng = np.random.default_rng(3)
    est = []
    for _ in range(40):
        x = rng.normal(0, math.sqrt(2.0), 20000)
        est.append(M.gaussian_variance_closed_form(x, x + rng.normal(0, 1.0, 20000), 1.0))
    est = np.asarray(est)
    assert abs(est.mean() - 2.0) < 4 * est.std(ddof=1) / math.sqrt(len(est))
    assert est.std() < 0.1


@pytest.mark.parametrize("fraction,alpha", [(1.0, 0.0), (0.5, 0.7)])
def test_covariance_gradient_by_finite_differences(fraction, alpha):
    rng = np.random.default_rng(4)
    p, n = 3, 50
    x = rng.normal(size=(n, p))
    d, mask = M.observe(x, fraction, 0.5, 0, 0)
    A = rng.normal(size=(p, p))
    theta = A @ A.T + p * np.eye(p)
    _, G = M.covariance_loss_and_grad(theta, x, d, mask, 0.5, alpha)
    for _ in range(3):
        V = rng.normal(size=(p, p))
        V = V + V.T
        f = lambda t: M.covariance_loss_and_grad(theta + t * V, x, d, mask, 0.5, alpha)[0]
        num = (f(1e-6) - f(-1e-6)) / 2e-6
        assert abs(num - (G * V).sum()) < 1e-6 * abs(num)


def test_covariance_with_identity_recovers_the_sample_covariance():
    """P = I: MR-MAP's Theta_hat is within 3 Monte-Carlo standard errors of X X^T / n
    (the standard error of X X^T / n itself, sqrt(sum_ij (T_ii T_jj + T_ij^2) / n))."""
    T = np.array([[2.0, 0.6], [0.6, 1.0]])
    n = 20000
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 2)) @ np.linalg.cholesky(T).T
    d, mask = M.observe(x, 1.0, 1.0, 0, 0)
    theta = M.covariance_mrmap(x, d, mask, 1.0)
    S = x.T @ x / n
    se = math.sqrt((np.outer(np.diag(T), np.diag(T)) + T ** 2).sum() / n)
    assert np.linalg.norm(theta - S) < 3 * se, (theta, S, se)
    assert np.allclose(theta, theta.T)


def test_laplace_minimiser_is_exact_and_inconsistent():
    rng = np.random.default_rng(6)
    n, rate, sigma = 200000, 2.0, 1.0
    x = rng.laplace(0, 1 / rate, n)
    d = x + rng.normal(0, sigma, n)
    th = M.laplace_mrmap(x, d, sigma)
    loss = lambda t: ((M.laplace_map(t, d, sigma) - x) ** 2).mean()
    grid = np.linspace(0, 4, 801)
    assert loss(th) <= min(loss(g) for g in grid) + 1e-12
    assert loss(th) <= min(loss(th + e) for e in (-1e-4, 1e-4))
    # the limit is not the true rate: at n = 2e5 the estimate's s.d. is about 0.005
    assert abs(th - rate) > 0.5


# ----------------------------------------------------------------- the network
@pytest.mark.parametrize("p,q,solver", [(5, 7, "direct"), (9, 7, "direct"), (5, 7, "cg")])
def test_network_gradient_by_finite_differences(p, q, solver):
    """Every parameter (K, Omega, c, K_j, b_j, w_j, r), through both solves, the tanh
    layer and the leapfrog recurrence: relative error < 1e-6 on random directions."""
    net = random_network(p, q, 4, 6, solver)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(9, p))
    d, mask = M.observe(x, 0.6, 0.1, 0, 0)
    _, g = net.loss_and_grad(x, d, mask, alpha=0.7, gamma=1.3)
    P = dict(net.params)
    for k in HyperbolicNetwork.KEYS:
        v = rng.normal(size=P[k].shape)

        def loss(t):
            net.set_params(P | {k: P[k] + t * v})
            return net.loss_and_grad(x, d, mask, 0.7, 1.3)[0]["loss"]
        num = (loss(1e-6) - loss(-1e-6)) / 2e-6
        net.set_params(P)
        assert abs(num - (g[k] * v).sum()) < 1e-6 * abs(num), k


def test_forward_is_the_hyperbolic_recurrence():
    net = random_network(6, 8, 5, 5)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(7, 6))
    d, mask = M.observe(x, 0.5, 0.1, 0, 0)
    f = net.forward(d, mask)
    P, beta = net.params, net.beta
    K = P["K"]
    A = np.stack([K.T @ np.diag(m) @ K + beta * np.eye(8) for m in mask])
    u0 = np.linalg.solve(A, (d @ K)[:, :, None])[:, :, 0]
    us = [u0, u0 + np.tanh(u0 @ P["Omega"].T + P["c"])]
    for j in range(1, 5):
        z = us[j] @ P["Kl"][j - 1].T + P["bl"][j - 1]
        us.append(2 * us[j] - us[j - 1] + (np.maximum(z, 0) * P["wl"][j - 1]) @ P["Kl"][j - 1])
    q = np.linalg.solve(A, (d @ K + beta * us[4] + beta * P["r"])[:, :, None])[:, :, 0]
    for a, b in zip(f["u"], us):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert np.allclose(f["q"], q, rtol=1e-12, atol=1e-12)
    assert np.allclose(f["xhat"], us[5] @ K.T, rtol=1e-12, atol=1e-12)
    # CG converges to the direct solves
    cg = HyperbolicNetwork(net.params, beta=beta, solver="cg", cg_iter=200)
    assert np.allclose(cg.recover(d, mask), f["xhat"], rtol=1e-9, atol=1e-9)


def test_leapfrog_positions_follow_the_stormer_verlet_recurrence():
    """Positions of the shared leapfrog obey x_{k+1} = 2 x_k - x_{k-1} - h^2 g_k(x_k) with
    a potential that changes with the step (the network's layers)."""
    rng = np.random.default_rng(9)
    x0, x1 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    g1 = 0.5 * x1 ** 3                                  # the gradient at the start position
    grad = lambda x, k: (None, (k + 1) * x ** 3)
    pos = [x0, x1]
    leapfrog(x1, momentum_from_positions(x0, x1, g1, 0.3), g1, grad, 0.3, 3, positions=pos)
    gs = [None, g1] + [(k + 1) * pos[k + 2] ** 3 for k in range(2)]
    for j in range(1, 4):
        assert np.allclose(pos[j + 1], 2 * pos[j] - pos[j - 1] - 0.09 * gs[j], rtol=1e-12, atol=1e-12)


def test_mixture_posterior_mean_of_one_component_is_the_gaussian_shrinkage():
    cfg = experiments.validate(loads(MIXTURE.replace("[data]", "[data]\ncomponents = 1")))
    d = np.random.default_rng(10).normal(size=(5, 2))
    mu = np.array([4.0, 0.0])
    assert np.allclose(experiments.mrmap.mixture_posterior_mean(cfg, d, 2.0), (4 * mu + d) / 5)


# ----------------------------------------------------------------- training and runs
def test_training_keeps_weights_non_negative_and_resumes_bitwise(tmp_path):
    full, part, _ = interrupted_and_resumed(MIXTURE, tmp_path, 6)
    with pf.io.open_run(full) as run:
        net = pf.experiments.load_energy(run)
        assert isinstance(net, HyperbolicNetwork)
        assert (net.params["wl"] >= 0).all() and (net.params["wl"] == 0).any()   # the projection acted
        r = run.results
        assert float(r["val_mse"]) < float(r["identity_mse"])
        assert np.asarray(r["grid_phi"]).shape == (61, 61)
        assert len(run.observables["rc"].steps) == 7
        if importlib.util.find_spec("matplotlib") is not None:       # the 'plot' extra
            experiments.get("mrmap").plot(run, str(tmp_path / "m.png"))
            assert (tmp_path / "m.png").stat().st_size > 0
    with pf.io.open_run(part) as run:
        assert np.array_equal(np.asarray(run.results["network/K"]), net.params["K"])


def test_mixture_recovery_is_near_the_bayes_posterior_mean(tmp_path):
    """runs/mrmap_mixture.toml at q = 32 and 600 steps: the validation MSE is at most 0.6x
    the identity's and within 25% of the true prior's posterior-mean MSE; Rc falls by
    more than 1000x from its untrained value (the full config: see docs/paper-000-mrmap.md)."""
    text = open("runs/mrmap_mixture.toml").read().replace("steps = 3000", "steps = 600").replace(
        "q = 128", "q = 32").replace("decay_every = 1000", "decay_every = 200").replace("plot = true", "plot = false")
    out = str(tmp_path / "m.h5")
    execute(experiments.validate(loads(text)), text, out)
    with pf.io.open_run(out) as run:
        r = {k: float(run.results[k]) for k in ("val_mse", "identity_mse", "bayes_mse")}
        rc = np.asarray(run.observables["rc"].values)
    assert r["val_mse"] <= 0.6 * r["identity_mse"] and r["val_mse"] <= 1.25 * r["bayes_mse"], r
    assert rc[-1] < rc[0] / 1000, rc[[0, -1]]


@pytest.mark.skipif(not HAVE_DATA, reason="the 'data' extra (scikit-learn) is missing")
def test_digit_recovery_table(tmp_path):
    """A briefly trained network: Table 1's layout, errors falling with the known fraction."""
    text = MIXTURE.replace('kind = "mixture"', 'kind = "digits"\nn_test = 20').replace(
        "sigma = 3.0", "sigma = 0.01\nknown_fraction = 0.3\neval_repeats = 3")
    res, out = run_cli(tmp_path, text, "d")
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(out)) as run:
        r = run.results
        assert np.allclose(r["known_fraction"], [0.05, 0.1, 0.2, 0.3])
        m = np.asarray(r["rel_err_mean"])
        assert (np.diff(m) < 0).all(), m
        assert (np.asarray(r["rel_err_std"]) > 0).all()
        assert np.asarray(r["examples"]).shape == (4, 4, 6, 8, 8)
        if importlib.util.find_spec("matplotlib") is not None:       # the 'plot' extra
            png = experiments.get("mrmap").plot(run, str(tmp_path / "d.png"))
            assert (tmp_path / "d.png").stat().st_size > 0 and png.endswith("d.png")


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: M.observe(np.zeros((3, 4)), 0.0, 0.1, 0, 0), "known_fraction"),
    (lambda: M.observe(np.zeros((3, 4)), 1.5, 0.1, 0, 0), "known_fraction"),
    (lambda: HyperbolicNetwork.init(4, 8, 3, beta=0.0), "beta"),
    (lambda: HyperbolicNetwork.init(4, 8, 3, beta=-1.0), "beta"),
    (lambda: HyperbolicNetwork.init(4, 8, 1), "layers"),
    (lambda: HyperbolicNetwork.init(4, 8, 3, w0=-0.1), "w_j must be >= 0"),
    (lambda: HyperbolicNetwork.init(4, 8, 3).recover(np.zeros((2, 5)), np.ones((2, 5))), r"shape \[n, 4\]"),
    (lambda: HyperbolicNetwork.init(4, 8, 3).recover(np.full((2, 4), np.nan), np.ones((2, 4))), "NaN"),
    (lambda: M.mrmap_training(HyperbolicNetwork.init(4, 8, 3), np.zeros((10, 5)), 0.1), r"shape \[n, 4\]"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_negative_weights_forced_in_are_refused():
    net = HyperbolicNetwork.init(4, 8, 3)
    with pytest.raises(ValueError, match="w_j must be >= 0"):
        net.set_params(net.params | {"wl": -np.ones_like(net.params["wl"])})


@pytest.mark.parametrize("edit,match", [
    (("sigma = 3.0", "sigma = 3.0\nknown_fraction = 0.0"), "known_fraction"),
    (("sigma = 3.0", "sigma = 3.0\nknown_fraction = 1.2"), "known_fraction"),
    (("sigma = 3.0", "sigma = 3.0\neval_fractions = [0.1, 2.0]"), "eval_fractions"),
    (("layers = 4", "layers = 4\nbeta = 0.0"), "model.beta"),
    (("layers = 4", "layers = 4\nbeta = -1.0"), "model.beta"),
    (('kind = "mixture"', 'kind = "faces"\nimage_size = 32'), "data.image_size"),
    (('kind = "mixture"', 'kind = "digits"\nn_test = 1797'), "n_test"),
])
def test_bad_configs_exit_2_without_traceback(edit, match, tmp_path):
    text = MIXTURE.replace(*edit)
    if "digits" in text or "faces" in text:
        pytest.importorskip("sklearn")
    with pytest.raises(ConfigError, match=match):
        experiments.validate(loads(text))
    res, out = run_cli(tmp_path, text, "x")
    assert res.exit_code == 2 and "Traceback" not in res.output and match.split(".")[-1] in res.output
    assert not out.exists()


def test_parametric_config_runs(tmp_path):
    text = open("runs/mrmap_gaussian1d.toml").read().replace("steps = 20", "steps = 3").replace(
        "plot = true", "plot = false")
    res, out = run_cli(tmp_path, text, "g")
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(out)) as run:
        r = run.results
        assert np.asarray(r["theta_hat"]).shape == (3, 3)
        assert float(r["max_relative_gap"]) < 1e-6


def test_the_loss_gradient_in_blocks_is_bitwise_the_same_for_any_rank_count():
    """Data-parallel MR-MAP: eq. 3.7's losses and gradient from blocks of 32 rows shared
    by 1, 2, 3 and 9 ranks (threads with an allgather) are the bits of one process, and
    the whole-batch ones to rounding; a minibatch with partial observations."""
    net = HyperbolicNetwork.init(2, 16, 4, seed=3)
    x = np.random.default_rng(2).standard_normal((200, 2))
    d, mask = M.observe(x, 0.5, 0.3, 0, 4)
    one = M.loss_and_grad_in_blocks(net, x, d, mask, 1.0, 1.0, 32)
    for size in (2, 3, 9):
        for losses, g in over_thread_ranks(size, lambda comm: M.loss_and_grad_in_blocks(net, x, d, mask, 1.0, 1.0,
                                                                                        32, comm)):
            assert losses == one[0] and g.tobytes() == one[1].tobytes()
    whole_losses, whole = net.loss_and_grad(x, d, mask, 1.0, 1.0)
    assert all(abs(one[0][k] - whole_losses[k]) < 1e-12 * (1 + abs(whole_losses[k])) for k in whole_losses)
    np.testing.assert_allclose(one[1], flatten(whole), rtol=1e-9, atol=1e-12 * np.abs(flatten(whole)).max())
