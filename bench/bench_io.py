"""Trajectory-writing overhead (a table, not a test).

1. Overhead: n = 10^5, d = 2 ULA on the 6-component mixture, 2000 steps, a frame
   every 10th step, against the same run without a writer.
2. Flatness: time per frame write at frames 10, 100, 1000 and 10^4 (n = 1000).

    python bench/bench_io.py
"""
import os
import sys
import tempfile
import time

import numpy as np

import particleflow as pf


def mixture():
    ang = 2 * np.pi * np.arange(6) / 6
    return pf.energies.GaussianMixture(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=1.0)


def run(n, steps, every, path, dtype=np.float32):
    ens = pf.Ensemble(np.random.default_rng(0).standard_normal((n, 2)).astype(dtype))
    sim = pf.Simulation({"c": ens}, seed=0).schedule(pf.moves.Langevin(mixture(), 0.01), "c")
    sim.run(1)
    w = pf.io.TrajectoryWriter(path, sim.ensembles, {"mean": np.zeros(2)}, {"config": ""}) if path else None
    t0 = time.perf_counter()
    t_write = 0.0
    for _ in range(steps // every):
        sim.run(every)
        mean = sim.ensembles["c"].mean()          # the observable is computed either way
        if w is not None:
            t1 = time.perf_counter()
            w.write_frame(sim.step, sim.ensembles)
            w.write_observable("mean", sim.step, mean)
            t_write += time.perf_counter() - t1
    if w is not None:
        t1 = time.perf_counter()
        w.close()
        t_write += time.perf_counter() - t1
    return time.perf_counter() - t0, t_write


def main():
    with tempfile.TemporaryDirectory() as d:
        base = min(run(100_000, 2000, 10, None)[0] for _ in range(3))
        with_w = []
        for k in range(3):
            with_w.append(run(100_000, 2000, 10, os.path.join(d, f"t{k}.h5")))
        tot, wr = min(with_w)
        print("| run (n = 1e5, d = 2, 2000 ULA steps, frame every 10) | seconds |")
        print("|---|---|")
        print(f"| without writer | {base:.3f} |")
        print(f"| with writer | {tot:.3f} |")
        print(f"| time inside the writer | {wr:.3f} ({100 * wr / tot:.1f}% of the run) |")
        print(f"| overhead vs no writer | {100 * (tot - base) / base:.1f}% |")
        ens = pf.Ensemble(np.zeros((1000, 2), np.float32))
        w = pf.io.TrajectoryWriter(os.path.join(d, "flat.h5"), {"e": ens}, {}, {"config": ""})
        times = np.empty(10_000)
        for t in range(10_000):
            t0 = time.perf_counter()
            w.write_frame(t, {"e": ens})
            times[t] = time.perf_counter() - t0
        w.close()
        print()
        print("| frames written (n = 1000) | median write time per frame over the window |")
        print("|---|---|")
        for a, b in ((10, 100), (100, 1000), (1000, 2000), (9000, 10000)):
            print(f"| {a}-{b} | {np.median(times[a:b]) * 1e6:.1f} us (mean {times[a:b].mean() * 1e6:.1f} us) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
