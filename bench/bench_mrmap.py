"""Forward + backward of paper 000's hyperbolic network (q = 128, l = 5, batch 256, the
paper's sizes) against PyTorch autograd of the same network in the same run (a table,
not a test).  Two data sizes: 8x8 (p = 64: the direct solves by the Woodbury identity
over the k = 19 observed pixels, a batched k x k inverse) and 25x25 (p = 625: 8 conjugate-gradient iterations
per solve, as the paper); 30% of the pixels known.  PyTorch runs the same algorithm
(torch.linalg.inv, the same CG loop) and back-propagates by autograd; ours is the
hand-written adjoint (``HyperbolicNetwork.loss_and_grad``).

    python bench/bench_mrmap.py --threads 2 [--torch-python VENV/bin/python] [--rounds 7]

Rounds alternate ours and PyTorch's (one process each, same thread count); the table
shows medians and ranges of the time per forward + backward.
"""
import argparse
import os
import statistics
import subprocess
import sys

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--threads", type=int, default=2)
ARGS.add_argument("--rounds", type=int, default=7)
ARGS.add_argument("--torch-python", default=os.environ.get("PF_TORCH_PYTHON"))
ARGS.add_argument("--serve-torch", action="store_true", help=argparse.SUPPRESS)
OPTS = ARGS.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(OPTS.threads)            # before numpy / numba / torch load

import numpy as np  # noqa: E402
from _timing import time_per_call  # noqa: E402  (bench/_timing.py: numpy-only, importable from the reference venv)

Q, L, B, FRACTION, BETA, CG_ITER = 128, 5, 256, 0.3, 0.1, 8
CASES = {"8x8 (p = 64), direct": (64, "direct"), "25x25 (p = 625), CG 8": (625, "cg")}


def per_call(fn):
    """Seconds per call of ``fn`` run back to back for at least 0.3 s (one sample; the
    rounds alternate ours and PyTorch's)."""
    return time_per_call(fn, min_time=0.3, samples=1, warmup=0)[0]


def problem(p):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (B, p))
    mask = np.zeros((B, p))
    for i in range(B):
        mask[i, rng.permutation(p)[:int(round(FRACTION * p))]] = 1
    d = mask * (x + 0.01 * rng.standard_normal((B, p)))
    return x, d, mask


def params(p):
    rng = np.random.default_rng(1)
    return {"K": rng.standard_normal((p, Q)) / Q ** 0.5, "Omega": rng.standard_normal((Q, Q)) / Q ** 0.5,
            "c": np.zeros(Q), "Kl": rng.standard_normal((L - 1, Q, Q)) / Q ** 0.5, "bl": np.zeros((L - 1, Q)),
            "wl": np.full((L - 1, Q), 0.01), "r": rng.standard_normal(Q)}


def torch_server():
    import torch
    torch.set_num_threads(OPTS.threads)
    fns = {}
    for name, (p, solver) in CASES.items():
        x, d, mask = (torch.from_numpy(a) for a in problem(p))
        P = {k: torch.from_numpy(v).requires_grad_(True) for k, v in params(p).items()}

        def make(x=x, d=d, mask=mask, P=P, p=p, solver=solver):
            def step():
                K = P["K"]
                if solver == "direct":
                    k = int(mask.sum(1).max())
                    idx = torch.argsort(-mask, dim=1, stable=True)[:, :k]
                    Ko = K[idx] * torch.gather(mask, 1, idx)[:, :, None]
                    Ci = torch.linalg.inv(Ko @ Ko.transpose(1, 2) + BETA * torch.eye(k, dtype=K.dtype))
                    solve = lambda v: (v - ((Ci @ (Ko @ v[:, :, None]))[:, :, 0][:, None, :] @ Ko)[:, 0, :]) / BETA
                else:
                    def solve(rhs):
                        u = torch.zeros_like(rhs)
                        r = rhs
                        s = r
                        rr = (r * r).sum(1)
                        for _ in range(CG_ITER):
                            As = ((s @ K.T) * mask) @ K + BETA * s
                            a = (rr / (s * As).sum(1))[:, None]
                            u = u + a * s
                            r = r - a * As
                            rr2 = (r * r).sum(1)
                            s = r + (rr2 / rr)[:, None] * s
                            rr = rr2
                        return u
                Ktd = d @ K
                u0 = solve(Ktd)
                us = [u0, u0 + torch.tanh(u0 @ P["Omega"].T + P["c"])]
                for j in range(1, L):
                    z = us[j] @ P["Kl"][j - 1].T + P["bl"][j - 1]
                    us.append(2 * us[j] - us[j - 1] + (torch.relu(z) * P["wl"][j - 1]) @ P["Kl"][j - 1])
                qv = solve(Ktd + BETA * us[L - 1] + BETA * P["r"])
                res = us[L] @ K.T - x
                loss = ((res ** 2).sum() + (mask * res ** 2).sum() + ((qv - us[L]) ** 2).sum()) / B
                torch.autograd.grad(loss, list(P.values()))
            return step
        fns[name] = make()
        fns[name]()
    for line in sys.stdin:
        print(per_call(fns[line.strip()]), flush=True)


def ours():
    from particleflow.energies.hyperbolic import HyperbolicNetwork
    fns = {}
    for name, (p, solver) in CASES.items():
        x, d, mask = problem(p)
        net = HyperbolicNetwork(params(p), beta=BETA, solver=solver, cg_iter=CG_ITER)
        fns[name] = lambda net=net, x=x, d=d, mask=mask: net.loss_and_grad(x, d, mask)
        fns[name]()

    return lambda name: per_call(fns[name])


def main():
    if OPTS.serve_torch:
        return torch_server()
    server = None
    if OPTS.torch_python:
        server = subprocess.Popen([OPTS.torch_python, os.path.abspath(__file__), "--serve-torch", "--threads",
                                   str(OPTS.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
    mine = ours()
    a = {k: [] for k in CASES}
    b = {k: [] for k in CASES}
    for _ in range(OPTS.rounds):
        for name in CASES:
            a[name].append(mine(name))
            if server:
                server.stdin.write(name + "\n")
                b[name].append(float(server.stdout.readline()))
    if server:
        server.stdin.close()
        server.wait()
    med = statistics.median
    print(f"hyperbolic network forward + backward, q = {Q}, l = {L}, batch {B}, {100 * FRACTION:.0f}% known, "
          f"float64, {OPTS.threads} thread(s), {OPTS.rounds} alternating rounds")
    print("| data | particleflow | PyTorch autograd | ours / PyTorch (range) |")
    print("|---|---|---|---|")
    for name in CASES:
        if b[name]:
            q = [x / y for x, y in zip(a[name], b[name])]
            print(f"| {name} | {1e3 * med(a[name]):.1f} ms | {1e3 * med(b[name]):.1f} ms | {med(q):.2f} "
                  f"({min(q):.2f}-{max(q):.2f}) |")
        else:
            print(f"| {name} | {1e3 * med(a[name]):.1f} ms | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
