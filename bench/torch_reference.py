"""PyTorch autograd rows for bench/bench_networks.py, run in a separate venv (PyTorch
is never a dependency of particleflow):

    python bench/bench_networks.py --torch-python /path/to/venv/bin/python

Prints one line per workload: ``name<TAB>seconds`` (median per call), same workloads,
sizes and dtypes as bench_networks.py, 2 threads.
"""
import sys

import numpy as np
import torch
from _timing import time_per_call   # bench/_timing.py: numpy-free, importable from the torch venv


def per_call(fn, min_time=0.05, samples=7, warmup=2):
    return time_per_call(fn, min_time, samples, warmup)[0]


def main():
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
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
    rows.append(("ConvNet n_f=32 value+grad_x, batch 64", per_call(conv_step)))
    rows.append(("ConvNet n_f=32 grad_params, batch 64", per_call(conv_params)))

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
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096", per_call(deen)))
    big = mlp([64, 32, 32, 32, 1])
    x64 = torch.from_numpy(rng.standard_normal((100_000, 64)).astype(np.float32))

    def langevin_work():
        z = x64.detach().requires_grad_(True)
        torch.autograd.grad(big(z).sum(), z)
    rows.append(("MLP [64,32,32,32,1] value+grad_x, n = 1e5", per_call(langevin_work, samples=3)))
    for name, t in rows:
        print(f"{name}\t{t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
