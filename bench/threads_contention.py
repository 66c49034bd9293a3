"""Threads under contention: seconds per step of a particle move at 1 and 2 numba
threads, on a quiet machine and with 1 or 4 busy processes competing for the cores.

Each measurement is a fresh process (the thread count and the threading layer's
settings are read at start-up); the busy competitors are plain Python loops started
before it and killed after it.  Rounds are interleaved and the table reports medians
and ranges of the rounds, and the ratio 2 threads / 1 thread (above 1: the second
thread slows the step down).

    python bench/threads_contention.py                     # MALA on the 2-D mixture
    python bench/threads_contention.py --move ula --n 1000 100000 --busy 0 1
    python bench/threads_contention.py --env OMP_WAIT_POLICY=active   # compare a setting
    python bench/threads_contention.py --target mlp --n 1000 10000 100000
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(move, n, seconds, target):
    import numpy as np
    import particleflow as pf
    if target == "mixture":
        e, d = pf.energies.GaussianMixture(pf.energies.ring_means(6, 3.0), scale=0.5), 2
    else:
        e, d = pf.energies.MLP([64, 32, 32, 32, 1], dtype=np.float32), 64
    ens = pf.Ensemble(np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
    h = 0.2 if target == "mixture" else 0.01
    m = {"ula": lambda: pf.moves.Langevin(e, h / 4), "mala": lambda: pf.moves.MALA(e, h),
         "hmc": lambda: pf.moves.HMC(e, h, 5)}[move]()
    stream = pf.random.Stream(0)
    step = 0
    for _ in range(3):                                   # compilation and first touches
        m(ens, stream, step)
        step += 1
    per = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(per) < 5:
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 10:
            m(ens, stream, step)
            step += 1
            k += 1
        per.append((time.perf_counter() - t0) / k)
    print(statistics.median(per))


def measure(move, n, threads, busy, seconds, env_extra, target):
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.2)
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   **env_extra)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--move", move, "--n", str(n),
                              "--seconds", str(seconds), "--target", target], env=env, capture_output=True, text=True,
                             check=True)
        return float(out.stdout.split()[-1])
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--move", default="mala", choices=("ula", "mala", "hmc"))
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1, 4])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings for the measured processes")
    ap.add_argument("--target", default="mixture", choices=("mixture", "mlp"),
                    help="the 2-D 6-component mixture, or the MLP [64, 32, 32, 32, 1] tanh energy")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.move, a.n[0], a.seconds, a.target)
    env_extra = dict(kv.split("=", 1) for kv in a.env)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"# {a.move} on the {a.target}, float32; {os.cpu_count()} CPUs ({cpu}); "
          f"settings {env_extra or 'default'}; {a.rounds} rounds, interleaved")
    res = {}
    for r in range(a.rounds):
        for n in a.n:
            for busy in a.busy:
                for t in ((1, 2) if r % 2 == 0 else (2, 1)):
                    res.setdefault((n, busy, t), []).append(measure(a.move, n, t, busy, a.seconds, env_extra,
                                                                    a.target))
    print("| n | busy processes | 1 thread, ms/step (range) | 2 threads, ms/step (range) | 2 / 1 |")
    print("|---|---|---|---|---|")
    for n in a.n:
        for busy in a.busy:
            one, two = res[(n, busy, 1)], res[(n, busy, 2)]
            m1, m2 = statistics.median(one), statistics.median(two)
            print(f"| {n:.0e} | {busy} | {1e3 * m1:.3f} ({1e3 * min(one):.3f}-{1e3 * max(one):.3f}) | "
                  f"{1e3 * m2:.3f} ({1e3 * min(two):.3f}-{1e3 * max(two):.3f}) | {m2 / m1:.2f} |")


if __name__ == "__main__":
    main()
