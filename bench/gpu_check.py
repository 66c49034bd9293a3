"""The GPU rows in one table: ULA on the 2-D six-mode mixture (n = 1e7 on a GPU), a
Langevin step on the MLP [2, 32, 32, 32, 1] (n = 1e5) and a ConvNet (n_f = 32,
32x32x3, batch 64) value + grad_x, each on every device given (default: "gpu" when
there is one, "cpu" and "cpu-reference").  Results are checked against the CPU's
first (same positions to float32 tolerance after one step) before anything is timed.

    python bench/gpu_check.py [--devices gpu,cpu] [--quick]

``bench/gpu_check.sh`` runs it after the GPU tests and the device-parity tests."""
import argparse
import sys

import numpy as np

import particleflow as pf
from _timing import time_per_call

ANGLES = 2 * np.pi * np.arange(6) / 6


def mixture_ula(n):
    energy = pf.energies.GaussianMixture(3.0 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1), scale=1.0)
    return pf.moves.Langevin(energy, 0.01), np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)


def mlp_ula(n):
    energy = pf.energies.MLP([2, 32, 32, 32, 1], activation="softplus", seed=0, dtype=np.float32)
    return pf.moves.Langevin(energy, 0.01), np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)


def convnet_grad(n):
    net = pf.energies.ConvNet((3, 32, 32), [32, 64, 128, 1], [3, 4, 4, 4], [1, 2, 2, 1], [1, 1, 1, 0],
                              seed=0, dtype=np.float32)

    class Grad:                                   # value + grad_x as a "move"
        def __call__(self, ens, stream, step):
            v, g = net.value_and_grad(ens.x)
            ens.x[...] = ens.x - np.float32(1e-3) * g if not hasattr(g, "get") else ens.x - 1e-3 * g
            return {}
    return Grad(), np.random.default_rng(0).uniform(-1, 1, (n, 3, 32, 32)).astype(np.float32)


ROWS = [("ULA, 6-mode mixture", mixture_ula, 10_000_000, 100_000),
        ("ULA, MLP [2,32,32,32,1]", mlp_ula, 100_000, 10_000),
        ("ConvNet n_f=32 value+grad", convnet_grad, 64, 16)]


def simulation(make, n, device):
    move, x0 = make(n)
    ens = pf.Ensemble(x0)
    if device == "gpu":
        ens = ens.to("gpu")
    sim = pf.Simulation({"x": ens}, seed=0, device=device).schedule(move, "x")
    return sim


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default=None)
    ap.add_argument("--quick", action="store_true", help="CPU-sized problems (a smoke run)")
    a = ap.parse_args(argv)
    devices = a.devices.split(",") if a.devices else (["gpu"] if pf.backend.has_gpu() else []) + ["cpu", "cpu-reference"]
    print(f"{'workload':<28} {'n':>10} " + " ".join(f"{d + ' ms/step':>22}" for d in devices))
    for label, make, n_gpu, n_cpu in ROWS:
        n = n_cpu if a.quick or "gpu" not in devices else n_gpu
        first = None
        cells = []
        for d in devices:
            sim = simulation(make, n, d)
            sim.run(1)
            x = np.array(pf.backend.to_numpy(sim.ensembles["x"].x))
            if first is None:
                first = x
            elif not np.allclose(x, first, rtol=1e-3, atol=1e-3):
                sys.exit(f"{label}: {d} disagrees with {devices[0]} after one step")
            med, lo, hi = time_per_call(lambda: sim.run(1), min_time=0.05, samples=5, warmup=1)
            cells.append(f"{med * 1e3:9.2f} [{lo * 1e3:.1f}-{hi * 1e3:.1f}]")
        print(f"{label:<28} {n:>10} " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
