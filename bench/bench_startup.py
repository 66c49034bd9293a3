"""Time to first step of a fresh process, with the on-disk kernel cache cold (empty
directory) and warm (filled by the previous process).

Each sample is a new Python process that imports particleflow and runs the README's
first example reduced to ``--steps`` steps (MALA on a 2-D mixture, float64), plus
normal draws of 3, 5 and 8 per particle in float32 (the fills a user script of several
dimensions compiles).  Rounds alternate cold and warm; the table gives medians and
ranges of the wall time of the whole process and of the part after ``import``.

    python bench/bench_startup.py --rounds 3
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

SCRIPT = r"""
import time
t0 = time.perf_counter()
import numpy as np
import particleflow as pf
t1 = time.perf_counter()
ang = 2 * np.pi * np.arange(6) / 6
mix = pf.energies.GaussianMixture(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=1.0)
x0 = np.random.default_rng(0).standard_normal((20_000, 2))
sim = pf.Simulation({"chains": pf.Ensemble(x0)}, seed=1)
sim.schedule(pf.moves.MALA(mix, 0.3), "chains", name="mala")
sim.run(STEPS)
s = pf.random.Stream(0, 0)
ids = np.arange(1000, dtype=np.int64)
for d in (3, 5, 8):
    s.normal(0, ids, d, dtype=np.float32)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def one(cache, steps):
    env = dict(os.environ, PARTICLEFLOW_KERNEL_CACHE=cache)
    t = subprocess.run([sys.executable, "-c", SCRIPT.replace("STEPS", str(steps))], env=env,
                       capture_output=True, text=True, check=True)
    imp, work = (float(v) for v in t.stdout.split())
    return imp + work, work


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    a = ap.parse_args()
    rows = {"cold": [], "warm": []}
    for _ in range(a.rounds):
        cache = tempfile.mkdtemp(prefix="pf-kernel-cache-")
        try:
            rows["cold"].append(one(cache, a.steps))
            rows["warm"].append(one(cache, a.steps))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"| kernel cache | process (s) | after import (s) |  ({a.rounds} rounds, medians [ranges])")
    print("|---|---|---|")
    for k, v in rows.items():
        tot = [t for t, _ in v]
        wrk = [w for _, w in v]
        print(f"| {k} | {statistics.median(tot):.2f} [{min(tot):.2f}-{max(tot):.2f}] "
              f"| {statistics.median(wrk):.2f} [{min(wrk):.2f}-{max(wrk):.2f}] |")


if __name__ == "__main__":
    main()
