"""Network benchmarks (a table, not a test), against a naive numpy reference where
cheap to write and PyTorch autograd if importable (never a dependency).

* ConvNet (Nijkamp et al., n_f = 32, 32x32x3), batch 64, float32: value + grad_x
  (one Langevin step's work) and grad_params.
* MLP [2, 32, 32, 32, 1] tanh, batch 4096, float32: one DEEN loss gradient
  (generic grad + item (d), and ``dsm_loss_and_grad``).
* DEEN training iteration (minibatch, noise, loss gradient, Adam, parameter copy) for
  the ring config (MLP [2, 32, 32, 32, 1], batch 256, float64) and the digits config
  (MLP [64, 128, 128, 256, 1], batch 128, float32); PyTorch does the same iteration
  (``torch.randint`` / ``randn``, double backward, ``torch.optim.Adam``).
* MLP [64, 32, 32, 32, 1] tanh, n = 1e5, float32: value + grad_x, one whole Langevin
  step (``pf.moves.Langevin`` on an Ensemble, Philox noise included) and one MALA step
  (``pf.moves.MALA``: one network pass a step, the accepted state's energy and gradient
  cached; the peers keep them the same way).

    python bench/bench_networks.py [--torch-python /path/to/venv/bin/python] [--rounds N] [--only NAME]

With an interpreter that has PyTorch and/or JAX (a separate venv), ``torch_reference.py``
times the same workloads there and the table shows the ratios measured in the same run.
Threads: numba's thread count (2 here) for our chunk workers; 2 for PyTorch; JAX's own.
"""
import os
import statistics
import sys

import numpy as np

import particleflow as pf
from _timing import time_per_call


# (label, MLP sizes, batch, dtype): the ring and digits configs of paper 002 (runs/deen_*.toml)
DEEN_STEPS = (("ring: MLP [2,32,32,32,1], batch 256, float64", [2, 32, 32, 32, 1], 256, np.float64, None),
              ("digits: MLP [64,128,128,256,1], batch 128, float32", [64, 128, 128, 256, 1], 128, np.float32, None),
              ("digits: MLP [64,128,128,256,1], batch 128, float32, gradient in 2 blocks of 64 (deen.grad_block)",
               [64, 128, 128, 256, 1], 128, np.float32, 64))


def bench(fn, min_time=0.05, samples=3, warmup=1):
    return time_per_call(fn, min_time, samples, warmup)[0]


def workloads():
    rows = []
    rng = np.random.default_rng(0)
    net = pf.energies.ConvNet.nijkamp(32, 32, dtype=np.float32)
    x = rng.uniform(-1, 1, (64, 3, 32, 32)).astype(np.float32)
    c = np.ones(64, np.float32)
    rows.append(("ConvNet n_f=32 value+grad_x, batch 64", lambda: net.value_and_grad(x)))
    rows.append(("ConvNet n_f=32 grad_params, batch 64", lambda: net.grad_params(x, c)))
    mlp = pf.energies.MLP([2, 32, 32, 32, 1], dtype=np.float32)
    xd = rng.standard_normal((4096, 2)).astype(np.float32)
    xi = (xd + 0.1 * rng.standard_normal((4096, 2))).astype(np.float32)
    s2 = np.float32(0.01)

    def deen():
        r = xd - xi + s2 * mlp.grad(xi)                        # DEEN residual (paper 002)
        return mlp.grad_params_directional(xi, (2 * s2 / len(xi)) * r, np.ones(len(xi), np.float32))
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096: generic grad + item (d)", deen))
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096: dsm_loss_and_grad (3 passes)",
                 lambda: mlp.dsm_loss_and_grad(xd, xi, 0.1)))
    ref = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench-reference")
    if os.path.exists(os.path.join(ref, "dsm_mlp_grad.py")):      # the project's numpy reference, same run
        sys.path.insert(0, ref)
        import dsm_mlp_grad
        f = dsm_mlp_grad.make_numpy(np.dtype(np.float32))
        params = dsm_mlp_grad.flat_params(2, np.dtype(np.float32))
        rows.append(("  reference: bench-reference numpy hand-derived DEEN gradient", lambda: f(params, xd, xi)))
    for label, sizes, batch, dt, block in DEEN_STEPS:         # one whole training iteration of paper 002
        data = rng.standard_normal((20000, sizes[0])).astype(dt)
        sim = pf.estimators.deen.deen(pf.energies.MLP(sizes, dtype=dt), data, 0.1, batch, 1e-3, grad_block=block)
        rows.append((f"DEEN training step with Adam, {label}", lambda sim=sim: sim.run(1)))
    mlp64 = pf.energies.MLP([64, 32, 32, 32, 1], dtype=np.float32)
    x64 = rng.standard_normal((100_000, 64)).astype(np.float32)
    rows.append(("MLP [64,32,32,32,1] value+grad_x, n = 1e5", lambda: mlp64.value_and_grad(x64)))
    ens = pf.Ensemble(x64.copy())
    move = pf.moves.Langevin(mlp64, 0.01)
    stream = pf.random.Stream(0)
    counter = {"t": 0}

    def langevin_step():
        move(ens, stream, counter["t"])
        counter["t"] += 1
    rows.append(("MLP [64,32,32,32,1] Langevin step (ULA, noise included), n = 1e5", langevin_step))
    ens_m = pf.Ensemble(x64.copy())
    mala = pf.moves.MALA(mlp64, 0.01)

    def mala_step():
        mala(ens_m, stream, counter["t"])
        counter["t"] += 1
    rows.append(("MLP [64,32,32,32,1] MALA step (energy cache, noise included), n = 1e5", mala_step))
    return rows


def main():
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5
    ref_python = os.environ.get("PF_TORCH_PYTHON") or (sys.argv[sys.argv.index("--torch-python") + 1]
                                                       if "--torch-python" in sys.argv else None)
    server, served = None, []
    if ref_python:            # PyTorch / JAX live in their own venv; never particleflow dependencies
        import subprocess
        here = os.path.dirname(os.path.abspath(__file__))
        server = subprocess.Popen([ref_python, os.path.join(here, "torch_reference.py")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        for line in server.stdout:
            if not line.strip():
                break
            served.append(tuple(line.rstrip("\n").split("\t")))
    rows = workloads()
    if "--only" in sys.argv:            # e.g. --only ConvNet: the workloads whose name contains it
        rows = [r for r in rows if sys.argv[sys.argv.index("--only") + 1] in r[0]]
    frameworks = [f for f in ("PyTorch", "JAX") if any(k[0] == f for k in served)]
    ours = {name: [] for name, _ in rows}
    refs = {}
    for _ in range(rounds):             # alternate ours and the reference's, workload by workload
        for name, fn in rows:
            ours[name].append(bench(fn))
            for f in frameworks:
                key = next((k for k in served if k[0] == f and name.startswith(k[1])), None)
                if key:
                    server.stdin.write("\t".join(key) + "\n")
                    refs.setdefault((f, name), []).append(float(server.stdout.readline()))
    if server:
        server.stdin.close()
        server.wait()
    med = statistics.median
    print(f"{rounds} rounds; each cell: median over rounds of the per-round median time; ratio: median of the "
          "per-round ratios (min-max)")
    print("| workload | particleflow | " + " | ".join(f"{f} (same rounds) | ours / {f}" for f in frameworks) + " |")
    print("|---|---|" + "---|---|" * len(frameworks))
    for name, _ in rows:
        cells = []
        for f in frameworks:
            r = refs.get((f, name))
            if r:
                q = [a / b for a, b in zip(ours[name], r)]
                cells.append(f"{med(r) * 1e3:.2f} ms | {med(q):.2f} ({min(q):.2f}-{max(q):.2f})")
            else:
                cells.append("- | -")
        print(f"| {name} | {med(ours[name]) * 1e3:.2f} ms | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
