"""Engine-core benchmark: particle-steps per second of Langevin / MALA / HMC on the
2-D 6-component Gaussian mixture of ../shared/bench-reference/langevin_gmm.py.

Prints a table (not a test).  Each row is timed in this process, like the reference
harness: 3 warm-up calls (JIT compilation happens there), then 9 samples of >= 20 ms
of back-to-back steps, median time per step.  Every step draws its own noise:
particleflow in-kernel (counter-based Philox), numpy with ``Generator.standard_normal``
and PyTorch (if importable; never a dependency) with ``torch.randn_like``.

    python bench/bench_core.py [--n 1000000] [--quick]
"""
import argparse
import contextlib
import sys

import numpy as np

import particleflow as pf
from _timing import time_per_call
from particleflow.backend import reference_path
from particleflow.random import Stream

H = 0.01
K = 6


def means():
    ang = 2 * np.pi * np.arange(K) / K
    return 3.0 * np.stack([np.cos(ang), np.sin(ang)], 1)


def bench(step, min_time=0.02, samples=9, warmup=3):
    return time_per_call(step, min_time, samples, warmup)


def numpy_step(mu, dt):
    """Plain numpy ULA step (the reference implementation of bench-reference)."""
    h, c, half = dt.type(H), dt.type(np.sqrt(2 * H)), dt.type(0.5)
    rng = np.random.default_rng(0)

    def step(x):
        d = x[:, None, :] - mu[None]
        l = -half * (d * d).sum(-1)
        l -= l.max(1, keepdims=True)
        r = np.exp(l)
        r /= r.sum(1, keepdims=True)
        return x - h * (x - r @ mu) + c * rng.standard_normal(x.shape, dtype=dt)
    return step


def torch_step(mu_np):
    import torch
    mu = torch.from_numpy(mu_np)
    c = float(np.sqrt(2 * H))

    def step(x):
        x = x.detach().requires_grad_(True)
        d = x[:, None, :] - mu[None]
        u = -torch.logsumexp(-0.5 * (d * d).sum(-1), dim=1)
        g, = torch.autograd.grad(u.sum(), x)
        with torch.no_grad():
            return x - H * g + c * torch.randn_like(x)
    return step, torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    args = ap.parse_args(argv)
    n = args.n
    samples = 3 if args.quick else 9
    mix = pf.energies.GaussianMixture(means(), scale=1.0)
    rows = []
    import numba
    print(f"# particleflow {pf.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"{numba.get_num_threads()} numba threads, n = {n}", flush=True)
    for dt in (np.dtype(np.float32), np.dtype(np.float64)):
        x0 = np.random.default_rng(1).standard_normal((n, 2)).astype(dt)
        stream = Stream(0)
        ref = None
        # plain numpy reference
        step = numpy_step(means().astype(dt), dt)
        state = {"x": x0.copy()}

        def np_run():
            state["x"] = step(state["x"])
        med, lo, hi = bench(np_run, samples=samples)
        ref = med
        rows.append(("numpy reference ULA", dt, med, lo, hi))
        for label, move, path in [
            ("particleflow ULA (fused kernel)", pf.moves.Langevin(mix, H), contextlib.nullcontext),
            ("particleflow ULA (array path)", pf.moves.Langevin(mix, H), reference_path),
            ("particleflow MALA (fused kernel)", pf.moves.MALA(mix, 0.1), contextlib.nullcontext),
            ("particleflow HMC L=5 (fused kernel)", pf.moves.HMC(mix, 0.1, 5), contextlib.nullcontext),
        ]:
            ens = pf.Ensemble(x0)
            counter = {"t": 0}

            def run(move=move, ens=ens, counter=counter, path=path):
                with path():
                    move(ens, stream, counter["t"])
                counter["t"] += 1
            med, lo, hi = bench(run, samples=samples)
            rows.append((label, dt, med, lo, hi))
        ids = np.arange(n)

        def noise():
            stream.normal(0, ids, 2, dtype=dt)
        rows.append(("particleflow Philox normals only", dt, *bench(noise, samples=samples)))
        try:
            tstep, torch = torch_step(means().astype(dt))
            tstate = {"x": torch.from_numpy(x0.copy())}

            def t_run():
                tstate["x"] = tstep(tstate["x"])
            rows.append((f"PyTorch {torch.__version__} autograd ULA", dt, *bench(t_run, samples=samples)))
        except ImportError:
            pass
        rows_dt = [r for r in rows if r[1] == dt]
        for r in rows_dt:
            r_ref = ref
            rows[rows.index(r)] = r + (r_ref,)
    print()
    print("| implementation | dtype | n | median time/step | min-max | particle-steps/s | speed-up vs numpy |")
    print("|---|---|---|---|---|---|---|")
    for label, dt, med, lo, hi, ref in rows:
        print(f"| {label} | {dt.name} | {n:.0e} | {med * 1e3:.2f} ms | {lo * 1e3:.2f}-{hi * 1e3:.2f} ms | "
              f"{n / med:.3g} | {ref / med:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
