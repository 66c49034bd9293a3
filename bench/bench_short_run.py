"""One short-run MCMC learning iteration (paper 004) against PyTorch doing the same
iteration (a table, not a test): K = 100 Langevin steps x <- x + grad f(x) + 0.01 z
from U[-1, 1] on a batch of 64, then one Adam update of the ConvNet (n_f = 32,
32x32x3, float32, the authors' code) on mean f(data) - mean f(samples).

    python bench/bench_short_run.py --threads 1 [--torch-python VENV/bin/python] [--rounds 3] [--K 100]

Threads: ``--threads`` sets numba's and the BLAS's thread counts here and
``torch.set_num_threads`` in the reference process (a separate venv: PyTorch is never a
dependency).  Rounds alternate ours and PyTorch's; the table shows medians and ranges.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--threads", type=int, default=2)
ARGS.add_argument("--rounds", type=int, default=3)
ARGS.add_argument("--K", type=int, default=100)
ARGS.add_argument("--torch-python", default=os.environ.get("PF_TORCH_PYTHON"))
ARGS.add_argument("--serve-torch", action="store_true", help=argparse.SUPPRESS)
OPTS = ARGS.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(OPTS.threads)            # before numpy / numba / torch load

import numpy as np  # noqa: E402

M, SIZE, N_F = 64, 32, 32


def torch_server():
    import torch
    torch.set_num_threads(OPTS.threads)
    nn = torch.nn
    f = nn.Sequential(nn.Conv2d(3, N_F, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(N_F, 2 * N_F, 4, 2, 1),
                      nn.LeakyReLU(0.2), nn.Conv2d(2 * N_F, 4 * N_F, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Conv2d(4 * N_F, 8 * N_F, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8 * N_F, 1, 4, 1, 0))
    opt = torch.optim.Adam(f.parameters(), lr=1e-4, betas=(0.9, 0.999))
    data = torch.rand(1000, 3, SIZE, SIZE) * 2 - 1

    def iteration():
        x_d = data[torch.randint(0, 1000, (M,))] + 0.03 * torch.randn(M, 3, SIZE, SIZE)
        x = torch.empty(M, 3, SIZE, SIZE).uniform_(-1, 1).requires_grad_(True)
        for _ in range(OPTS.K):
            g, = torch.autograd.grad(f(x).sum(), [x])
            x.data += g + 0.01 * torch.randn_like(x)
        loss = -(f(x_d).mean() - f(x.detach()).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    iteration()
    for line in sys.stdin:
        t0 = time.perf_counter()
        iteration()
        print(time.perf_counter() - t0, flush=True)


def ours():
    import particleflow as pf
    from particleflow.estimators.shortrun import short_run
    energy = pf.energies.ConvNet.nijkamp(N_F, SIZE, channels=3, dtype=np.float32)
    data = np.random.default_rng(0).uniform(-1, 1, (1000, 3, SIZE, SIZE)).astype(np.float32)
    sim = short_run(energy, data, n_chains=M, n_steps=OPTS.K, step_size=1.0, noise_scale=0.01, data_noise=0.03,
                    lr=1e-4)
    sim.run(1)

    def iteration():
        t0 = time.perf_counter()
        sim.run(1)
        return time.perf_counter() - t0
    return iteration


def main():
    if OPTS.serve_torch:
        return torch_server()
    server = None
    if OPTS.torch_python:
        server = subprocess.Popen([OPTS.torch_python, os.path.abspath(__file__), "--serve-torch", "--threads",
                                   str(OPTS.threads), "--K", str(OPTS.K)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
    mine = ours()
    a, b = [], []
    for _ in range(OPTS.rounds):
        a.append(mine())
        if server:
            server.stdin.write("go\n")
            b.append(float(server.stdout.readline()))
    if server:
        server.stdin.close()
        server.wait()
    med = statistics.median
    print(f"short-run iteration, ConvNet n_f={N_F}, {SIZE}x{SIZE}x3, batch {M}, K={OPTS.K}, float32, "
          f"{OPTS.threads} thread(s), {OPTS.rounds} alternating rounds")
    print("| particleflow | PyTorch | ours / PyTorch (range) |")
    print("|---|---|---|")
    if b:
        q = [x / y for x, y in zip(a, b)]
        print(f"| {med(a):.2f} s | {med(b):.2f} s | {med(q):.2f} ({min(q):.2f}-{max(q):.2f}) |")
    else:
        print(f"| {med(a):.2f} s | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
