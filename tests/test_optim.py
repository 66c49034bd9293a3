import numpy as np
import pytest

import particleflow as pf
from particleflow.random import Stream

A = np.array([1.0, 10.0, 0.1])


def quad_grad(ens):
    return A * ens.x


def run(opt, steps, x0=(1.0, 1.0, 1.0)):
    ens = pf.Ensemble(np.array([x0]))
    for t in range(steps):
        opt(ens, Stream(0), t)
    return ens.x[0]


def test_sgd_momentum_closed_form():
    x = np.array([1.0, 1.0, 1.0])
    b = None
    for _ in range(3):
        g = A * x + 0.01 * x
        b = g if b is None else 0.9 * b + g
        x = x - 0.05 * b
    np.testing.assert_allclose(run(pf.moves.SGD(quad_grad, 0.05, momentum=0.9, weight_decay=0.01), 3), x, rtol=1e-15)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_reference_formula(decoupled):
    x = np.array([1.0, 1.0, 1.0])
    m = v = np.zeros(3)
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    for t in range(1, 6):
        g = A * x
        if decoupled:
            x = x * (1 - lr * wd)
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    got = run(pf.moves.Adam(quad_grad, lr, weight_decay=wd, decoupled=decoupled), 5)
    np.testing.assert_allclose(got, x, rtol=1e-14)


def test_adam_converges_and_step_decay():
    x = run(pf.moves.Adam(quad_grad, pf.moves.StepDecay(0.1, 200, 0.1)), 600)
    assert np.all(np.abs(x) < 1e-3)
    s = pf.moves.StepDecay(1.0, 10, 0.5)
    assert [s(0), s(9), s(10), s(25)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("n", [40_000, 250_000])            # the calling thread's pass; the parallel one
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_adam_kernel_is_bitwise_the_numpy_expressions(dtype, n):
    from particleflow.kernels.elementwise import ADAM_SERIAL_WORK, adam_update
    assert (n * np.dtype(dtype).itemsize // 4 > ADAM_SERIAL_WORK) == (n > 100_000)
    rng = np.random.default_rng(0)
    x, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = (rng.standard_normal(n) ** 2).astype(dtype)
    fl = np.dtype(dtype).type
    for t in (1, 7, 1000):
        b1, b2, lr, eps = 0.9, 0.999, 3e-3, 1e-8
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        m2 = fl(b1) * m + fl(1 - b1) * g
        v2 = fl(b2) * v + fl(1 - b2) * g * g
        x2 = x - fl(lr) * (m2 / fl(c1)) / (np.sqrt(v2 / fl(c2)) + fl(eps))
        got = adam_update(x, g, m, v, b1, b2, c1, c2, lr, eps)
        for a, b in zip(got, (x2, m2, v2)):
            assert a.dtype == dtype and a.tobytes() == b.tobytes()


def test_cosine_decay_values():
    c = pf.moves.CosineDecay(1.0, 100, final=0.1)
    np.testing.assert_allclose([c(0), c(50), c(100), c(500)], [1.0, 0.55, 0.1, 0.1], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(c(25), 0.1 + 0.9 * (1 + np.cos(np.pi / 4)) / 2, rtol=1e-15)


def test_state_dict_resume_is_bitwise():
    a = pf.moves.Adam(quad_grad, 0.05)
    straight = run(a, 10)
    b = pf.moves.Adam(quad_grad, 0.05)
    ens = pf.Ensemble(np.ones((1, 3)))
    for t in range(4):
        b(ens, Stream(0), t)
    c = pf.moves.Adam(quad_grad, 0.05)
    c.load_state_dict(b.state_dict())
    for t in range(4, 10):
        c(ens, Stream(0), t)
    assert ens.x[0].tobytes() == straight.tobytes()


def test_training_an_mlp_parameter_ensemble():
    """An MLP's parameters as a one-particle ensemble, trained by Adam on a
    regression of E(x) onto a target energy: the loss drops by > 10x."""
    net = pf.energies.MLP([2, 16, 1], seed=0)
    names = list(net.params)
    shapes = [net.params[k].shape for k in names]
    flat = np.concatenate([net.params[k].ravel() for k in names])
    x = np.random.default_rng(0).standard_normal((256, 2))
    target = 0.5 * (x ** 2).sum(1)

    def unflatten(v):
        out, i = {}, 0
        for k, s in zip(names, shapes):
            n = int(np.prod(s))
            out[k] = v[i:i + n].reshape(s)
            i += n
        return out

    def loss_grad(ens):
        net.set_params(unflatten(ens.x[0]))
        r = net.value(x) - target
        g = net.grad_params(x, 2 * r / len(x))
        return np.concatenate([g[k].ravel() for k in names])[None]

    ens = pf.Ensemble(flat[None])
    net.set_params(unflatten(flat))
    loss0 = np.mean((net.value(x) - target) ** 2)
    opt = pf.moves.Adam(loss_grad, 0.01)
    for t in range(500):
        opt(ens, Stream(0), t)
    net.set_params(unflatten(ens.x[0]))
    assert np.mean((net.value(x) - target) ** 2) < loss0 / 10


@pytest.mark.parametrize("make,match", [
    (lambda: pf.moves.SGD(quad_grad, -1.0), "lr"),
    (lambda: pf.moves.SGD(quad_grad, 0.1, momentum=1.0), "momentum"),
    (lambda: pf.moves.Adam(quad_grad, 0.1, betas=(1.0, 0.9)), "betas"),
    (lambda: pf.moves.Adam(None, 0.1), "grad"),
    (lambda: pf.moves.StepDecay(0.1, 0), "step_size"),
    (lambda: pf.moves.CosineDecay(0.1, 0), "steps"),
    (lambda: pf.moves.CosineDecay(0.1, 10, final=0.5), "final"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
