"""PyTorch autograd and JAX jit rows for bench/bench_networks.py, run in a separate venv
(neither is ever a dependency of particleflow):

    python bench/bench_networks.py --torch-python /path/to/venv/bin/python

Serves timings over stdin/stdout so that bench_networks.py can interleave them with its
own: it prints the available ``framework<TAB>workload`` pairs, an empty line, then
answers each request line ``framework<TAB>workload`` with the median seconds per call
(same workloads, sizes and dtypes as bench_networks.py; PyTorch on ``PF_REF_THREADS``
threads, default 2; for one thread of everything, run the pair under ``taskset -c 0``).
The machine is a shared VM whose speed drifts by 2-3x over minutes; rounds that
alternate our timing and the reference's make the ratio meaningful.  A framework that does not import is
skipped.  Every Langevin step draws its noise with
the framework's own RNG (``torch.randn_like``, ``jax.random.normal``), as a user's step would.
"""
import os
import sys

import numpy as np
from _timing import time_per_call   # bench/_timing.py: numpy-only, importable from the reference venv

H = 0.01


def per_call(fn, min_time=0.05, samples=3, warmup=1):
    return time_per_call(fn, min_time, samples, warmup)[0]


def torch_rows(rng):
    import torch
    torch.set_num_threads(int(os.environ.get("PF_REF_THREADS", "2")))
    rows = []
    x = torch.from_numpy(rng.uniform(-1, 1, (64, 3, 32, 32)).astype(np.float32)).requires_grad_(True)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 1, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(32, 64, 4, 2, 1),
        torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(64, 128, 4, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(128, 256, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(256, 1, 4, 1, 0))

    def conv_step():
        torch.autograd.grad(conv(x).sum(), x)

    def conv_params():
        torch.autograd.grad(conv(x).sum(), list(conv.parameters()))
    rows.append(("ConvNet n_f=32 value+grad_x, batch 64", conv_step))
    rows.append(("ConvNet n_f=32 grad_params, batch 64", conv_params))

    def mlp(sizes):
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(torch.nn.Tanh())
        return torch.nn.Sequential(*layers)
    small = mlp([2, 32, 32, 32, 1])
    xd = torch.from_numpy(rng.standard_normal((4096, 2)).astype(np.float32))
    xi = (xd + 0.1 * torch.from_numpy(rng.standard_normal((4096, 2)).astype(np.float32)))

    def deen():
        z = xi.detach().requires_grad_(True)
        g, = torch.autograd.grad(small(z).sum(), z, create_graph=True)
        r = xd - z + 0.01 * g
        torch.autograd.grad((r * r).sum() / 4096, list(small.parameters()), allow_unused=True)
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096", deen))
    for label, sizes, batch, dt in (("ring: MLP [2,32,32,32,1], batch 256, float64", [2, 32, 32, 32, 1], 256,
                                     torch.float64),
                                    ("digits: MLP [64,128,128,256,1], batch 128, float32", [64, 128, 128, 256, 1],
                                     128, torch.float32)):
        net = mlp(sizes).to(dt)
        data = torch.from_numpy(rng.standard_normal((20000, sizes[0]))).to(dt)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def train_step(net=net, data=data, opt=opt, batch=batch):
            x = data[torch.randint(0, data.shape[0], (batch,))]
            z = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
            g, = torch.autograd.grad(net(z).sum(), z, create_graph=True)
            r = x - z + 0.01 * g
            opt.zero_grad()
            ((r * r).sum() / batch).backward()
            opt.step()
        rows.append((f"DEEN training step with Adam, {label}", train_step))
    big = mlp([64, 32, 32, 32, 1])
    x64 = torch.from_numpy(rng.standard_normal((100_000, 64)).astype(np.float32))

    def langevin_work():
        z = x64.detach().requires_grad_(True)
        torch.autograd.grad(big(z).sum(), z)
    rows.append(("MLP [64,32,32,32,1] value+grad_x, n = 1e5", langevin_work))
    state = {"x": x64.clone()}
    c = float(np.sqrt(2 * H))

    def langevin_step():
        z = state["x"].detach().requires_grad_(True)
        g, = torch.autograd.grad(big(z).sum(), z)
        with torch.no_grad():
            state["x"] = z - H * g + c * torch.randn_like(z)
    rows.append(("MLP [64,32,32,32,1] Langevin step (ULA, noise included), n = 1e5", langevin_step))

    def value_and_grad(x):
        z = x.detach().requires_grad_(True)
        e = big(z)[:, 0]
        g, = torch.autograd.grad(e.sum(), z)
        return e.detach(), g
    mala = {"x": x64.clone()}
    mala["e"], mala["g"] = value_and_grad(mala["x"])

    def mala_step():            # one network pass (at the proposal), as with an energy cache
        x, e, g = mala["x"], mala["e"], mala["g"]
        y = x - H * g + c * torch.randn_like(x)
        ey, gy = value_and_grad(y)
        with torch.no_grad():
            fwd = ((y - x + H * g) ** 2).sum(1)
            bwd = ((x - y + H * gy) ** 2).sum(1)
            keep = torch.log(torch.rand_like(e)) < e - ey - (bwd - fwd) / (4 * H)
            mala["x"] = torch.where(keep[:, None], y, x)
            mala["e"], mala["g"] = torch.where(keep, ey, e), torch.where(keep[:, None], gy, g)
    rows.append(("MLP [64,32,32,32,1] MALA step (energy cache, noise included), n = 1e5", mala_step))
    return rows


def jax_rows(rng):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    rows = []

    def init(sizes):
        ps = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            ps.append((jnp.asarray((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)),
                       jnp.asarray((0.1 * rng.standard_normal(b)).astype(np.float32))))
        return ps

    def energy(ps, x):
        h = x
        for W, b in ps[:-1]:
            h = jnp.tanh(h @ W + b)
        W, b = ps[-1]
        return (h @ W + b)[..., 0]

    small = init([2, 32, 32, 32, 1])
    xd = jnp.asarray(rng.standard_normal((4096, 2)).astype(np.float32))
    xi = xd + 0.1 * jnp.asarray(rng.standard_normal((4096, 2)).astype(np.float32))

    def loss(ps, x, xn):
        g = jax.grad(lambda z: energy(ps, z).sum())(xn)
        r = x - xn + 0.01 * g
        return (r * r).sum() / x.shape[0]
    deen = jax.jit(jax.value_and_grad(loss))
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096",
                 lambda: jax.block_until_ready(deen(small, xd, xi))))
    big = init([64, 32, 32, 32, 1])
    x64 = jnp.asarray(rng.standard_normal((100_000, 64)).astype(np.float32))
    vg = jax.jit(jax.value_and_grad(lambda x: energy(big, x).sum()))
    rows.append(("MLP [64,32,32,32,1] value+grad_x, n = 1e5", lambda: jax.block_until_ready(vg(x64))))
    c = float(np.sqrt(2 * H))
    grad_sum = jax.grad(lambda x: energy(big, x).sum())

    @jax.jit
    def step(x, key):
        key, sub = jax.random.split(key)
        return x - H * grad_sum(x) + c * jax.random.normal(sub, x.shape, x.dtype), key
    state = {"x": x64, "key": jax.random.PRNGKey(0)}

    def langevin_step():
        state["x"], state["key"] = step(state["x"], state["key"])
        jax.block_until_ready(state["x"])
    rows.append(("MLP [64,32,32,32,1] Langevin step (ULA, noise included), n = 1e5", langevin_step))

    @jax.jit
    def mala(x, e, g, key):     # one network pass (at the proposal), as with an energy cache
        key, k1, k2 = jax.random.split(key, 3)
        y = x - H * g + c * jax.random.normal(k1, x.shape, x.dtype)
        ey, pullback = jax.vjp(lambda z: energy(big, z), y)      # one forward pass: per-row E and grad
        gy, = pullback(jnp.ones_like(ey))
        fwd = ((y - x + H * g) ** 2).sum(1)
        bwd = ((x - y + H * gy) ** 2).sum(1)
        keep = jnp.log(jax.random.uniform(k2, e.shape, e.dtype)) < e - ey - (bwd - fwd) / (4 * H)
        return jnp.where(keep[:, None], y, x), jnp.where(keep, ey, e), jnp.where(keep[:, None], gy, g), key
    ms = {"x": x64, "e": energy(big, x64), "g": grad_sum(x64), "key": jax.random.PRNGKey(1)}

    def mala_step():
        ms["x"], ms["e"], ms["g"], ms["key"] = mala(ms["x"], ms["e"], ms["g"], ms["key"])
        jax.block_until_ready(ms["x"])
    rows.append(("MLP [64,32,32,32,1] MALA step (energy cache, noise included), n = 1e5", mala_step))
    rows += jax_deen_iterations(rng, jax, jnp, energy)
    return rows


def jax_deen_iterations(rng, jax, jnp, energy):
    """One whole DEEN training iteration (paper 002) per call, as bench_networks.py's
    DEEN_STEPS: a minibatch drawn from 20 000 data rows and its noise (jax.random), the
    loss gradient (double backward), Adam (hand-written, betas 0.9 / 0.999, lr 1e-3),
    all in one jit-compiled function."""
    jax.config.update("jax_enable_x64", True)           # the ring config runs in float64
    rows = []
    for label, sizes, batch, dt in (("ring: MLP [2,32,32,32,1], batch 256, float64", [2, 32, 32, 32, 1], 256,
                                     np.float64),
                                    ("digits: MLP [64,128,128,256,1], batch 128, float32", [64, 128, 128, 256, 1], 128,
                                     np.float32)):
        ps = [(jnp.asarray((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dt)), jnp.zeros(b, dt))
              for a, b in zip(sizes[:-1], sizes[1:])]
        data = jnp.asarray(rng.standard_normal((20000, sizes[0])).astype(dt))
        sigma = 0.1

        def loss(ps, x, xn):
            g = jax.grad(lambda z: energy(ps, z).sum())(xn)
            r = x - xn + sigma * sigma * g
            return (r * r).sum() / x.shape[0]

        @jax.jit
        def iteration(ps, m, v, t, key, data=data, batch=batch):
            key, k1, k2 = jax.random.split(key, 3)
            x = data[jax.random.randint(k1, (batch,), 0, data.shape[0])]
            xn = x + sigma * jax.random.normal(k2, x.shape, x.dtype)
            _, g = jax.value_and_grad(loss)(ps, x, xn)
            t = t + 1
            m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
            v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
            c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
            ps = jax.tree_util.tree_map(lambda p, m, v: p - 1e-3 * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), ps, m, v)
            return ps, m, v, t, key
        zeros = jax.tree_util.tree_map(jnp.zeros_like, ps)
        state = {"s": (ps, zeros, zeros, jnp.asarray(0.0, dt), jax.random.PRNGKey(0))}

        def step(state=state, iteration=iteration):
            state["s"] = iteration(*state["s"])
            jax.block_until_ready(state["s"][0])
        rows.append((f"DEEN training step with Adam, {label}", step))
    return rows


def main():
    fns = {}
    for name, make in (("PyTorch", torch_rows), ("JAX", jax_rows)):
        try:
            rows = make(np.random.default_rng(0))
        except ImportError:
            continue
        for workload, fn in rows:
            fns[(name, workload)] = fn
            print(f"{name}\t{workload}", flush=True)
    print(flush=True)
    for line in sys.stdin:
        key = tuple(line.rstrip("\n").split("\t"))
        print(per_call(fns[key]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
