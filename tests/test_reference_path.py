"""The array code path, the one CuPy arrays take on a GPU, runs on every CPU test run
through ``Device("cpu-reference")`` / ``backend.reference_path()``: each CPU fast
path (fused MLP and ConvNet passes, the layers' passes, mixture kernels, the fast paths of
``moves/fastpaths.py``: Langevin's host step, Adam's fused pass, ShortRun's chain
update; blocked network passes) is compared with it, in float32 and float64, and
optimiser state restored on a device comes back on that device's array module."""
import numpy as np
import pytest

import particleflow as pf
from particleflow.backend import on_host, reference_path
from particleflow.random import Stream
from conftest import DEVICES, on_device

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def energies(dtype):
    rng = np.random.default_rng(0)
    yield "mixture", pf.energies.GaussianMixture(rng.normal(size=(6, 2)) * 3, scale=0.8), (2,)
    yield "mlp tanh", pf.energies.MLP([2, 32, 32, 1], activation="tanh", seed=1, dtype=dtype), (2,)
    yield "mlp softplus d=8", pf.energies.MLP([8, 64, 1], activation="softplus", seed=2, dtype=dtype), (8,)
    yield "convnet", pf.energies.ConvNet((1, 8, 8), [4, 8], [3, 3], [1, 2], [1, 1], seed=3, dtype=dtype), (1, 8, 8)
    # not fusable (SiLU): the layer path with layers_cpu.py's passes (fused activation,
    # numba im2col / col2im, streamed conv forward and input adjoint)
    yield "convnet silu", pf.energies.ConvNet((2, 8, 8), [4, 3], [3, 3], [1, 2], [1, 0], activation="silu", seed=4,
                                              dtype=dtype), (2, 8, 8)
    neurons = pf.Ensemble(rng.standard_normal((50, 3)).astype(dtype), log_weights=0.1 * rng.standard_normal(50),
                          signs=np.where(rng.random(50) < 0.5, -1, 1).astype(dtype))
    yield "f1 relu network", pf.energies.F1Network(neurons), (3,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_energy_fast_path_agrees_with_the_array_path(dtype):
    for name, energy, shape in energies(dtype):
        x = np.random.default_rng(5).normal(size=(300,) + shape).astype(dtype)
        v_fast, g_fast = energy.value_and_grad(x)
        with reference_path():
            assert not on_host(x)
            v_ref, g_ref = energy.value_and_grad(x)
            v_only = energy.value(x)
        assert on_host(x)
        assert v_ref.dtype == v_fast.dtype and g_ref.dtype == g_fast.dtype, name
        np.testing.assert_allclose(v_ref, v_fast, **TOL[dtype], err_msg=name)
        np.testing.assert_allclose(g_ref, g_fast, **TOL[dtype], err_msg=name)
        np.testing.assert_allclose(v_only, v_fast, **TOL[dtype], err_msg=name)
        if hasattr(energy, "grad_params"):              # parameter gradients too
            c = np.linspace(-1, 1, len(x)).astype(dtype)
            fast = energy.grad_params(x, c)
            with reference_path():
                ref = energy.grad_params(x, c)
            for k in fast:
                scale = float(np.abs(fast[k]).max()) or 1.0
                np.testing.assert_allclose(ref[k] / scale, fast[k] / scale, **TOL[dtype], err_msg=f"{name} {k}")


def run(device, make_move, dtype, steps=5, n=500, dim=2):
    move = make_move(dtype)
    shape = getattr(getattr(move, "energy", None), "input_shape", None) or (dim,)
    x0 = np.random.default_rng(7).normal(size=(n,) + tuple(shape)).astype(dtype)
    sim = pf.Simulation(seed=11, device=device)
    sim.add_ensemble("c", on_device(pf.Ensemble(x0.copy()), device))
    sim.schedule(move, "c")
    sim.run(steps)
    return sim, move


MOVES = {
    "langevin mixture": lambda dt: pf.moves.Langevin(
        pf.energies.GaussianMixture(np.array([[-2.0, 0], [2, 0]]), scale=1.0), 0.05),
    "langevin mlp": lambda dt: pf.moves.Langevin(pf.energies.MLP([2, 16, 16, 1], seed=4, dtype=dt), 0.05),
    "mala mixture": lambda dt: pf.moves.MALA(
        pf.energies.GaussianMixture(np.array([[-2.0, 0], [2, 0]]), scale=1.0), 0.3),
    "mala mlp": lambda dt: pf.moves.MALA(pf.energies.MLP([2, 16, 16, 1], seed=4, dtype=dt), 0.05),
    "mala convnet": lambda dt: pf.moves.MALA(pf.energies.ConvNet((1, 8, 8), [4, 8], [3, 3], [1, 2], [1, 1], seed=3,
                                                                 dtype=dt), 0.01),
    "hmc gaussian": lambda dt: pf.moves.HMC(pf.energies.Gaussian(np.zeros(2), np.eye(2)), 0.2, 5),
    "adam": lambda dt: pf.moves.Adam(lambda ens: ens.x - 1.0, lr=0.05),
    "short-run chains": lambda dt: pf.moves.ShortRun(pf.energies.MLP([2, 16, 1], activation="softplus", seed=5,
                                                                     dtype=dt), 4, step_size=0.1, noise_scale=0.05),
    "sgd momentum": lambda dt: pf.moves.SGD(lambda ens: 2.0 * ens.x, lr=0.05, momentum=0.9),
}


@pytest.mark.parametrize("device", DEVICES[1:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MOVES))
def test_every_move_on_the_reference_device_agrees_with_the_cpu(name, dtype, device):
    fast, _ = run("cpu", MOVES[name], dtype)
    ref, _ = run(device, MOVES[name], dtype)
    assert str(ref.device) == device
    a, b = fast.ensembles["c"].x, pf.backend.to_numpy(ref.ensembles["c"].x)
    assert a.dtype == b.dtype == dtype
    # float32 trajectories drift apart by rounding; a few steps stay close
    np.testing.assert_allclose(b, a, **(dict(rtol=1e-3, atol=1e-4) if dtype == np.float32 else TOL[dtype]))


@pytest.mark.parametrize("device", DEVICES)
def test_optimiser_state_is_restored_on_its_ensembles_device(device):
    sim, move = run(device, MOVES["adam"], np.float64)
    state = sim.state_dict()
    again, move2 = run(device, MOVES["adam"], np.float64, steps=0)
    again.load_state_dict(state)
    assert move2.device is again.ensembles["c"].device and str(move2.device) == device
    xp = again.ensembles["c"].xp
    assert move2.t == move.t and all(type(v) is xp.ndarray for v in move2.state.values())
    for k in move.state:
        np.testing.assert_array_equal(pf.backend.to_numpy(move2.state[k]), pf.backend.to_numpy(move.state[k]))
    sim.run(3)
    again.run(3)
    np.testing.assert_array_equal(pf.backend.to_numpy(again.ensembles["c"].x), pf.backend.to_numpy(sim.ensembles["c"].x))


def test_a_stream_draw_is_the_same_on_both_paths():
    s = Stream(3, 1)
    a = s.normal(0, np.arange(100), 2, pf.random.Purpose.PROPOSAL, np.float32)
    with reference_path():
        b = s.normal(0, np.arange(100), 2, pf.random.Purpose.PROPOSAL, np.float32)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mala_on_an_array_energy_takes_the_fused_finish_and_agrees_with_the_array_code(dtype, monkeypatch):
    """MALA on a network energy: the fused accept pass runs (counted) and gives the array
    code's log acceptance ratios, acceptance, positions and cached energies and gradients."""
    from particleflow.moves import fastpaths
    calls = []
    real = fastpaths.FAST["mala_step"]
    monkeypatch.setitem(fastpaths.FAST, "mala_step", lambda *a: calls.append(1) or real(*a))
    energy = pf.energies.MLP([3, 16, 16, 1], seed=4, dtype=dtype)
    x0 = np.random.default_rng(2).normal(size=(2000, 3)).astype(dtype)
    out = []
    for ref in (False, True):
        move, ens = pf.moves.MALA(energy, 30.0), pf.Ensemble(x0.copy())
        stream = Stream(5)
        for t in range(3):
            if ref:
                with reference_path():
                    stats = move(ens, stream, t)
            else:
                stats = move(ens, stream, t)
        out.append((stats["acceptance"], np.asarray(move.last_log_alpha), ens.x.copy(), ens.cached_energy(energy)))
    assert len(calls) == 3
    (a_fast, la_fast, x_fast, (e_fast, g_fast)), (a_ref, la_ref, x_ref, (e_ref, g_ref)) = out
    assert 0.2 < a_fast < 0.95 and a_fast == a_ref
    np.testing.assert_allclose(la_fast, la_ref, **TOL[dtype])
    for u, v in ((x_fast, x_ref), (e_fast, e_ref), (g_fast, g_ref)):
        np.testing.assert_allclose(u, v, **TOL[dtype])
