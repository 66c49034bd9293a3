"""Network benchmarks (a table, not a test), against a naive numpy reference where
cheap to write and PyTorch autograd if importable (never a dependency).

* ConvNet (Nijkamp et al., n_f = 32, 32x32x3), batch 64, float32: value + grad_x
  (one Langevin step's work) and grad_params.
* MLP [2, 32, 32, 32, 1] tanh, batch 4096, float32: one DEEN loss gradient
  (generic grad + item (d), and ``dsm_loss_and_grad``).
* MLP [64, 32, 32, 32, 1] tanh, n = 1e5, float32: value + grad_x, and one whole
  Langevin step (``pf.moves.Langevin`` on an Ensemble, Philox noise included).

    python bench/bench_networks.py [--torch-python /path/to/venv/bin/python]

With an interpreter that has PyTorch and/or JAX (a separate venv), ``torch_reference.py``
times the same workloads there and the table shows the ratios measured in the same run.
Threads: numba's thread count (2 here) for our chunk workers; 2 for PyTorch; JAX's own.
"""
import os
import sys

import numpy as np

import particleflow as pf
from _timing import time_per_call


def bench(fn, min_time=0.05, samples=7, warmup=2):
    return time_per_call(fn, min_time, samples, warmup)[0]


def main():
    rows = []
    rng = np.random.default_rng(0)
    net = pf.energies.ConvNet.nijkamp(32, 32, dtype=np.float32)
    x = rng.uniform(-1, 1, (64, 3, 32, 32)).astype(np.float32)
    c = np.ones(64, np.float32)
    rows.append(("ConvNet n_f=32 value+grad_x, batch 64", bench(lambda: net.value_and_grad(x))))
    rows.append(("ConvNet n_f=32 grad_params, batch 64", bench(lambda: net.grad_params(x, c))))
    mlp = pf.energies.MLP([2, 32, 32, 32, 1], dtype=np.float32)
    xd = rng.standard_normal((4096, 2)).astype(np.float32)
    xi = (xd + 0.1 * rng.standard_normal((4096, 2))).astype(np.float32)
    s2 = np.float32(0.01)

    def deen():
        r = xd - xi + s2 * mlp.grad(xi)                        # DEEN residual (paper 002)
        return mlp.grad_params_directional(xi, (2 * s2 / len(xi)) * r, np.ones(len(xi), np.float32))
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096: generic grad + item (d)", bench(deen)))
    rows.append(("MLP [2,32,32,32,1] DEEN loss gradient, batch 4096: dsm_loss_and_grad (3 passes)",
                 bench(lambda: mlp.dsm_loss_and_grad(xd, xi, 0.1))))
    ref = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench-reference")
    if os.path.exists(os.path.join(ref, "dsm_mlp_grad.py")):      # the project's numpy reference, same run
        sys.path.insert(0, ref)
        import dsm_mlp_grad
        f = dsm_mlp_grad.make_numpy(np.dtype(np.float32))
        params = dsm_mlp_grad.flat_params(2, np.dtype(np.float32))
        rows.append(("  reference: bench-reference numpy hand-derived DEEN gradient", bench(lambda: f(params, xd, xi))))
    mlp64 = pf.energies.MLP([64, 32, 32, 32, 1], dtype=np.float32)
    x64 = rng.standard_normal((100_000, 64)).astype(np.float32)
    rows.append(("MLP [64,32,32,32,1] value+grad_x, n = 1e5",
                 bench(lambda: mlp64.value_and_grad(x64), samples=3)))
    ens = pf.Ensemble(x64.copy())
    move = pf.moves.Langevin(mlp64, 0.01)
    stream = pf.random.Stream(0)
    counter = {"t": 0}

    def langevin_step():
        move(ens, stream, counter["t"])
        counter["t"] += 1
    rows.append(("MLP [64,32,32,32,1] Langevin step (ULA, noise included), n = 1e5",
                 bench(langevin_step, samples=3)))
    ref_rows = {}
    ref_python = os.environ.get("PF_TORCH_PYTHON") or (sys.argv[sys.argv.index("--torch-python") + 1]
                                                       if "--torch-python" in sys.argv else None)
    if ref_python:            # PyTorch / JAX live in their own venv; never particleflow dependencies
        import subprocess
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run([ref_python, os.path.join(here, "torch_reference.py")], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            framework, name, t = line.split("\t")
            ref_rows[(framework, name)] = float(t)
    frameworks = [f for f in ("PyTorch", "JAX") if any(k[0] == f for k in ref_rows)]
    print("| workload | particleflow | " + " | ".join(f"{f} (same run) | ours / {f}" for f in frameworks) + " |")
    print("|---|---|" + "---|---|" * len(frameworks))
    for name, t in rows:
        cells = []
        for f in frameworks:
            key = next((k for k in ref_rows if k[0] == f and name.startswith(k[1])), None)
            cells.append(f"{ref_rows[key] * 1e3:.2f} ms | {t / ref_rows[key]:.2f}" if key else "- | -")
        print(f"| {name} | {t * 1e3:.2f} ms | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
