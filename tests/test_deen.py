"""DEEN (paper 002): the loss gradient against finite differences (MLP fast path and the
generic path of a ConvNet), denoising, Parzen sigma selection, the ring experiment
against the Bayes denoiser, resume, bad input."""
import os

import numpy as np
import pytest

import particleflow as pf
from conftest import interrupted_and_resumed, over_thread_ranks
from particleflow import experiments
from particleflow.config import ConfigError, loads
from particleflow.estimators import deen as D
from particleflow.runner import build


RUNS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs")


def rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


class Generic:
    """A network seen only through grad / grad_params_directional (no fast path)."""

    def __init__(self, net):
        self.net = net
        self.params = net.params
        self.dim = net.dim

    def grad(self, x):
        return self.net.grad(x)

    def grad_params_directional(self, x, v, c):
        return self.net.grad_params_directional(x, v, c)


def fd_check(net, x, xi, sigma):
    loss, g = D.dsm_loss_and_grad(Generic(net), x, xi, sigma)
    rng = np.random.default_rng(1)
    base = {k: np.array(v) for k, v in net.params.items()}
    direction = {k: rng.standard_normal(v.shape) for k, v in base.items()}
    eps = 1e-6

    def L(t):
        net.set_params({k: base[k] + t * direction[k] for k in base})
        return D.dsm_loss(net, x, xi, sigma)
    fd = (L(eps) - L(-eps)) / (2 * eps)
    net.set_params(base)
    analytic = sum(float((g[k] * direction[k]).sum()) for k in base)
    return loss, g, abs(fd - analytic) / abs(analytic)


def test_generic_gradient_matches_the_mlp_fast_path_and_finite_differences():
    net = pf.energies.MLP([2, 8, 6, 1], seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2))
    xi = x + 0.3 * rng.standard_normal((40, 2))
    loss, g, err = fd_check(net, x, xi, 0.3)
    assert err < 1e-6, err
    fast_loss, fast = D.dsm_loss_and_grad(net, x, xi, 0.3)
    assert abs(fast_loss - loss) < 1e-12 * loss
    assert all(rel(fast[k], g[k]) < 1e-10 for k in g)


def test_convnet_gradient_by_finite_differences():
    net = pf.energies.ConvNet((1, 5, 5), [3, 1], [3, 3], [1, 1], [1, 0], activation="softplus", seed=2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 1, 5, 5))
    xi = x + 0.2 * rng.standard_normal(x.shape)
    _, _, err = fd_check(net, x, xi, 0.2)
    assert err < 1e-6, err


def test_denoise_is_tweedie_for_a_gaussian():
    """For x ~ N(0, s^2 I) the noisy density is N(0, (s^2 + sigma^2) I) and
    E[x | xi] = s^2 / (s^2 + sigma^2) xi: single-step denoising with the exact noisy
    energy gives exactly that."""
    s2, sigma = 0.5, 0.7
    e = pf.energies.Gaussian(np.zeros(3), np.eye(3) / (s2 + sigma ** 2))
    xi = np.random.default_rng(2).standard_normal((10, 3))
    np.testing.assert_allclose(D.denoise(e, xi, sigma), s2 / (s2 + sigma ** 2) * xi, rtol=1e-13)


def test_parzen_selection_prefers_a_sensible_bandwidth():
    rng = np.random.default_rng(0)
    train, held = rng.standard_normal((2000, 2)), rng.standard_normal((1000, 2))
    chosen, scores = D.select_sigma(train, held, [0.01, 0.3, 10.0])
    assert chosen == 0.3 and np.argmax(scores) == 1
    # the estimate is a normalised density: a single training point at 0, test at 0
    assert abs(D.parzen_log_likelihood(np.zeros((1, 2)), np.zeros((1, 2)), 1.0) + np.log(2 * np.pi)) < 1e-12


RING = """
estimator = "deen"
[run]
steps = 1500
seed = 0
[data]
n = 6000
n_heldout = 3000
[deen]
sigma = 0.1
[sigma_selection]
grid = [0.003, 0.035, 0.5]
[output]
every = 100
checkpoint_every = 500
plot = false
"""


@pytest.mark.slow
def test_ring_reaches_the_bayes_denoiser_and_its_score_is_curl_free():
    """1500 Adam steps (the shipped config runs 4000): the held-out loss within 15% of
    the Bayes denoiser's MSE on the same pairs (measured 1.02-1.05), denoising well
    below the noisy input's MSE, the curl of -grad E zero to rounding."""
    cfg = experiments.validate(loads(RING))
    _, sim = build(cfg)
    sim.run(cfg["run"]["steps"])
    r = experiments.get("deen").results(sim, cfg)
    assert r["heldout_loss"] < 1.15 * r["mmse"], (r["heldout_loss"], r["mmse"])
    assert r["mmse"] < r["heldout_loss"] * 1.02                   # nobody beats the Bayes denoiser
    assert r["mse_denoised"] < 0.7 * r["mse_noisy"]
    assert r["curl_relative"] < 1e-10
    assert r["sigma_selected"] == 0.035          # Silverman: 0.1 * 750 ** (-1/6) = 0.033 per mode
    loss = sim.recorder.observables["heldout_loss"].values
    assert loss[-1] < 0.6 * loss[0]                # from 2 sigma^2 (E = const) toward the mmse


def test_training_resumes_bitwise_and_the_energy_reloads(tmp_path):
    text = RING.replace("steps = 1500", "steps = 60").replace("every = 100", "every = 10").replace(
        "checkpoint_every = 500", "checkpoint_every = 20").replace("n = 6000", "n = 500").replace(
        "n_heldout = 3000", "n_heldout = 200")
    full, part, start = interrupted_and_resumed(text, tmp_path, 33)
    assert int(start["state"]["moves"]["adam"]["t"]) == 33
    with pf.io.open_run(full) as run:
        net = pf.experiments.load_energy(run)
        x = np.random.default_rng(0).standard_normal((5, 2))
        assert isinstance(net, pf.energies.MLP) and np.isfinite(net.value(x)).all()
        assert float(run.results["heldout_loss"]) > 0


@pytest.mark.parametrize("call,match", [
    (lambda: D.deen(pf.energies.MLP([2, 4, 1]), np.zeros((5, 2)), 0.0), "sigma must be a positive"),
    (lambda: D.deen(pf.energies.MLP([2, 4, 1]), np.zeros((5, 2)), -1.0), "sigma must be a positive"),
    (lambda: D.deen(pf.energies.MLP([2, 4, 1]), np.full((5, 2), np.nan), 0.1), "NaN"),
    (lambda: D.deen(pf.energies.MLP([2, 4, 1]), np.zeros((5, 3)), 0.1), "dimension 3"),
    (lambda: D.deen(pf.energies.MLP([2, 4, 1]), np.zeros((5, 2)), 0.1, batch_size=0), "batch_size"),
    (lambda: D.denoise(pf.energies.MLP([2, 4, 1]), np.zeros((5, 2)), float("nan")), "sigma"),
    (lambda: experiments.validate(loads(RING.replace("sigma = 0.1", "sigma = 0.0"))), "deen.sigma must be > 0"),
    (lambda: experiments.validate(loads(RING.replace("[deen]", "[model]\nsizes = [3, 8, 1]\n[deen]"))), "model.sizes"),
    (lambda: experiments.validate(loads(RING.replace("grid = [0.003, 0.035, 0.5]", "grid = [-1.0]"))), "positive numbers"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        call()


def test_score_network_gradient_and_jacobian_by_finite_differences():
    net = pf.energies.ScoreMLP([2, 7, 5, 2], seed=4)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 2))
    xi = x + 0.2 * rng.standard_normal((30, 2))
    loss, g = net.dsm_loss_and_grad(x, xi, 0.2)
    base = {k: np.array(v) for k, v in net.params.items()}
    direction = {k: rng.standard_normal(v.shape) for k, v in base.items()}

    def L(t):
        net.set_params({k: base[k] + t * direction[k] for k in base})
        r = x - xi - 0.04 * net(xi)
        return (r * r).sum() / len(x)
    eps = 1e-6
    fd = (L(eps) - L(-eps)) / (2 * eps)
    net.set_params(base)
    analytic = sum(float((g[k] * direction[k]).sum()) for k in base)
    assert abs(fd - analytic) < 1e-6 * abs(analytic) and abs(L(0) - loss) < 1e-14
    J = net.jacobian(xi)
    for j in range(2):
        e = np.zeros(2)
        e[j] = eps
        np.testing.assert_allclose(J[:, :, j], (net(xi + e) - net(xi - e)) / (2 * eps), rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_baselines_show_the_papers_failures():
    """The direct score network's field has a clearly non-zero curl, DEEN's none; CD
    concentrates the mass of exp(-E) unevenly (paper 002, Figure 1 g-j)."""
    text = RING.replace("steps = 1500", "steps = 800").replace("[sigma_selection]", "[baselines]\nscore_network = true\ncd = true\n[sigma_selection]")
    cfg = experiments.validate(loads(text))
    _, sim = build(cfg)
    sim.run(cfg["run"]["steps"])
    r = experiments.get("deen").results(sim, cfg)
    assert r["curl_relative"] < 1e-10 and r["curl_relative_score"] > 1e-2, (r["curl_relative"], r["curl_relative_score"])
    assert r["heldout_loss_score"] < 2 * cfg["deen"]["sigma"] ** 2  # it still denoises (noisy MSE: 2 sigma^2)
    fr = r["mode_fractions_cd"]
    assert fr.max() > 3 / 8 or fr.min() < 1 / 80, fr             # far from 1/8 each


@pytest.mark.slow
def test_ring_at_sigma_03_recovers_log_p_sigma_and_equal_modes():
    """runs/deen_ring_sigma03.toml as shipped: where the noisy modes overlap enough for
    training samples to land between them, -E matches log p_sigma (Pearson >= 0.98 on
    the grid where p_sigma > 1e-3 max; measured 0.998) and each mode holds 1/8 of the
    mass of exp(-E) (measured within 0.008)."""
    with open(os.path.join(RUNS, "deen_ring_sigma03.toml")) as f:
        cfg = experiments.validate(loads(f.read()))
    _, sim = build(cfg)
    sim.run(cfg["run"]["steps"])
    r = experiments.get("deen").results(sim, cfg)
    assert r["corr_logp"] >= 0.98, r["corr_logp"]
    assert np.abs(r["mode_fractions"] - 1 / 8).max() < 0.03, r["mode_fractions"]
    assert r["heldout_loss"] < 1.15 * r["mmse"] and r["curl_relative"] < 1e-10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation,batch", [("tanh", 300), ("tanh", 1100), ("relu", 300)])
def test_the_flat_gradient_and_flat_parameter_load_are_the_dict_ones_bitwise(dtype, activation, batch):
    """DEEN's trainer takes the gradient flat and loads the parameters from one vector:
    the same bits as flattening the gradient dict and loading the unflattened dict,
    for the whole-pass kernel (tanh; one chunk and three) and the layer path (relu)."""
    from particleflow.estimators.contrastive import flatten, unflatten
    net = pf.energies.MLP([3, 16, 16, 1], activation=activation, seed=4, dtype=dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 3)).astype(dtype)
    xi = (x + 0.2 * rng.standard_normal(x.shape)).astype(dtype)
    loss, g = D.dsm_loss_and_grad(net, x, xi, 0.2)
    flat_loss, flat = D.dsm_loss_and_grad(net, x, xi, 0.2, flat=True)
    assert flat_loss == loss and flat.dtype == np.float64
    assert np.array_equal(flat, flatten(g))
    assert not np.array_equal(flat, 0 * flat)
    v = flatten(net.params) - 1e-3 * flat
    other = pf.energies.MLP([3, 16, 16, 1], activation=activation, seed=4, dtype=dtype)
    net.set_params(unflatten(net.params, v))
    other.set_flat_params(v)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(net.params.values(),
                                                                          other.params.values()))
    v[:] = 0                       # the loaded parameters own their memory
    assert all(np.array_equal(a, b) for a, b in zip(net.params.values(), other.params.values()))
    with pytest.raises(ValueError, match="shape"):
        other.set_flat_params(v[:-1])


@pytest.mark.parametrize("activation,dtype", [("tanh", np.float32), ("tanh", np.float64), ("softplus", np.float64)])
def test_the_gradient_in_blocks_is_bitwise_the_same_for_any_rank_count(activation, dtype):
    """Data-parallel DEEN: the batch's loss and gradient from blocks of 32 rows, the
    ranks (threads with an allgather) sharing the blocks, are the bits of one process
    for 2, 3 and 9 ranks (9 > 7 blocks: two ranks hold none), and the unblocked loss
    and gradient to rounding; the whole-pass kernel (tanh) and the layer path
    (softplus)."""
    net = pf.energies.MLP([4, 24, 24, 1], activation=activation, seed=2, dtype=dtype)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200, 4)).astype(dtype)
    xi = (x + 0.3 * rng.standard_normal(x.shape)).astype(dtype)
    loss, g = D.dsm_loss_and_grad_in_blocks(net, x, xi, 0.3, 32)
    assert g.dtype == np.float64 and g.shape == (4 * 24 + 24 + 24 * 24 + 24 + 24 + 1,)
    for size in (2, 3, 9):
        for got_loss, got in over_thread_ranks(size, lambda comm: D.dsm_loss_and_grad_in_blocks(
                net, x, xi, 0.3, 32, comm)):
            assert got_loss == loss and got.tobytes() == g.tobytes()
    whole_loss, whole = D.dsm_loss_and_grad(net, x, xi, 0.3, flat=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert abs(loss - whole_loss) < tol * whole_loss
    assert np.abs(g - whole).max() < tol * np.abs(whole).max()


def test_deen_training_in_blocks_matches_the_whole_batch_to_rounding():
    """``deen(..., grad_block=64)``: 20 Adam steps on the ring data track the whole-batch
    run to rounding (float64)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((2000, 2))
    runs = []
    for block in (None, 64):
        net = pf.energies.MLP([2, 16, 16, 1], seed=1)
        D.deen(net, data, 0.2, batch_size=256, grad_block=block).run(20)
        runs.append(np.concatenate([np.ravel(v) for v in net.params.values()]))
    assert 0 < np.abs(runs[0] - runs[1]).max() < 1e-10
    with pytest.raises(ValueError, match="grad_block"):
        D.deen(pf.energies.MLP([2, 4, 1]), data, 0.2, grad_block=0)


@pytest.mark.parametrize("shape,dt", [((20000, 2), np.float64), ((9, 5), np.float32), ((300, 64), np.float32),
                                      ((50, 3, 4, 5), np.float64), ((7, 1), np.float32)])
def test_the_minibatch_kernel_is_bitwise_the_array_code_and_draws_the_philox_oracle(shape, dt):
    """``noisy_batch`` in one compiled call (kernels/batches.py; normals 4 or 8 to a row
    up to d = 8, ``row_filler`` above): x and xi bitwise those of the numpy path for
    several steps, batch sizes and both splits, and the rows and noise those of the
    numpy Philox oracle."""
    from particleflow.backend import reference_path
    from particleflow.estimators.batches import HELDOUT, TRAIN
    from particleflow.kernels.philox import normal_numpy, uniform_numpy
    from particleflow.random import Purpose, Stream, StreamBlock
    data = np.random.default_rng(1).standard_normal(shape).astype(dt)
    for step in (0, 17, 2 ** 32 - 1):
        for batch in (1, 33, 256):
            for split in (TRAIN, HELDOUT):
                got = D.noisy_batch(data, 0.3, 5, step, batch, split)
                with reference_path():
                    want = D.noisy_batch(data, 0.3, 5, step, batch, split)
                for a, b in zip(got, want):
                    assert a.dtype == dt and a.shape == (batch,) + shape[1:] and a.tobytes() == b.tobytes()
    stream = Stream(5, StreamBlock.DATA + TRAIN)
    ids = np.arange(256)
    u = uniform_numpy(*stream.key(Purpose.MINIBATCH), 9, ids, 1)[:, 0]
    rows = np.minimum((u * shape[0]).astype(np.int64), shape[0] - 1)
    d = int(np.prod(shape[1:]))
    z = normal_numpy(*stream.key(Purpose.DATA_NOISE), 9, ids, d, dt).reshape((256,) + shape[1:])
    x, xi = D.noisy_batch(data, 0.3, 5, 9, 256)
    tol = 1e-12 if dt == np.float64 else 2e-5                  # vmath's log and sincos vs numpy's
    assert np.array_equal(x, data[rows]) and np.allclose(xi, data[rows] + dt(0.3) * z, rtol=tol, atol=tol)
