"""Annealing throughput on the 2-D six-component ring mixture at n = 1e6 particles.

    python bench/bench_annealing.py [--n 1000000] [--temperatures 20] [--rounds 3]
                                    [--jax-python /path/to/venv/bin/python]

Rows (particle-steps per second = n x temperatures x MALA steps / seconds; one MALA
step per temperature, step 0.5, base N(0, 3^2 I), a fixed schedule of equally spaced
temperatures):

* particleflow AIS: ``pf.estimators.anneal(..., betas=...)`` (no resampling);
* particleflow SMC: the same with systematic resampling at every temperature
  (``resample_ess=1.0``), as BlackJAX's tempered SMC does;
* numpy AIS: the same algorithm in plain vectorised numpy (reference);
* BlackJAX tempered SMC (``bench/blackjax_reference.py`` in a separate venv with jax and
  blackjax; jit-compiled by a warm-up run at the same sizes, float64).

The rounds interleave the rows (the machine is shared and its speed drifts); medians and
ranges over rounds.  Every row's log Z is printed too (exact: 0).
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import particleflow as pf  # noqa: E402
from conftest import ring_mixture  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def ours(n, temps, resample):
    betas = np.linspace(0, 1, temps + 1)[1:]
    t0 = time.perf_counter()
    run = pf.estimators.anneal(ring_mixture(), n, base_scale=3.0, betas=betas, mcmc_steps=1, step_size=0.5,
                               adapt_step=False, resample_ess=1.0 if resample else None)
    return time.perf_counter() - t0, run["log_z"]


def numpy_ais(n, temps, seed=0):
    """AIS with MALA in plain numpy: the reference implementation of the same math."""
    rng = np.random.default_rng(seed)
    ang = 2 * np.pi * np.arange(6) / 6
    mu = 3.0 * np.stack([np.cos(ang), np.sin(ang)], 1)

    def target(x):                       # E_1 and its gradient (normalised mixture)
        d = x[:, None, :] - mu[None]
        a = -0.5 * (d ** 2).sum(-1)
        m = a.max(1, keepdims=True)
        w = np.exp(a - m)
        s = w.sum(1, keepdims=True)
        e = -(m[:, 0] + np.log(s[:, 0])) + math.log(6.0) + math.log(2 * math.pi)
        g = ((w / s)[:, :, None] * d).sum(1)
        return e, g

    def base(x):
        return 0.5 * (x ** 2).sum(1) / 9.0 + math.log(2 * math.pi * 9.0), x / 9.0

    def path(x, b):
        e0, g0 = base(x)
        e1, g1 = target(x)
        return (1 - b) * e0 + b * e1, (1 - b) * g0 + b * g1, e1 - e0

    t0 = time.perf_counter()
    x = 3.0 * rng.standard_normal((n, 2))
    logw = np.zeros(n)
    beta, h = 0.0, 0.5
    e, g, u = path(x, beta)
    for nb in np.linspace(0, 1, temps + 1)[1:]:
        logw -= (nb - beta) * u
        beta = nb
        e, g, u = path(x, beta)
        z = rng.standard_normal(x.shape)
        y = x - h * g + math.sqrt(2 * h) * z
        ey, gy, uy = path(y, beta)
        back = ((x - y + h * gy) ** 2).sum(1)
        acc = np.log(rng.uniform(size=n)) < e - ey - back / (4 * h) + 0.5 * (z * z).sum(1)
        x = np.where(acc[:, None], y, x)
        e, g, u = np.where(acc, ey, e), np.where(acc[:, None], gy, g), np.where(acc, uy, u)
    m = logw.max()
    return time.perf_counter() - t0, m + math.log(np.exp(logw - m).mean())


def blackjax(python, n, temps):
    out = subprocess.run([python, os.path.join(HERE, "blackjax_reference.py"), str(n), str(temps), "1"],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    sec, lz = out.stdout.strip().splitlines()[-1].split("\t")
    return float(sec), float(lz)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--temperatures", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jax-python", default=None)
    a = ap.parse_args()
    rows = {"particleflow AIS": lambda: ours(a.n, a.temperatures, False),
            "particleflow SMC (resampling every temperature)": lambda: ours(a.n, a.temperatures, True),
            "numpy AIS (reference)": lambda: numpy_ais(a.n, a.temperatures)}
    if a.jax_python:
        rows["BlackJAX tempered SMC (jit, float64)"] = lambda: blackjax(a.jax_python, a.n, a.temperatures)
    ours(1000, 2, False)                         # compile the kernels
    ours(1000, 2, True)
    times = {k: [] for k in rows}
    logz = {}
    for _ in range(a.rounds):
        for name, fn in rows.items():
            sec, lz = fn()
            times[name].append(sec)
            logz[name] = lz
    steps = a.n * a.temperatures
    ref = statistics.median(times["numpy AIS (reference)"])
    print(f"n = {a.n}, {a.temperatures} temperatures x 1 MALA step, {a.rounds} rounds, "
          f"{os.cpu_count()} cores\n")
    print("| implementation | seconds (median [range]) | M particle-steps / s | speed vs numpy | log Z |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"| {name} | {med:.2f} [{min(t):.2f}-{max(t):.2f}] | {steps / med / 1e6:.2f} | {ref / med:.2f}x | "
              f"{logz[name]:+.4f} |")


if __name__ == "__main__":
    main()
