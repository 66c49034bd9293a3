"""MALA and HMC steps on network energies with and without the ensemble's energy
cache, interleaved in one process (a table, not a test).

Without the cache a MALA step evaluates value_and_grad at the current point and at
the proposal (two network passes); with it, only at the proposal.  HMC: n_leapfrog
+ 1 passes against n_leapfrog.  "without" drops the cache before every step
(``ensemble.positions_changed()``), which is exactly the work of a step that does
not reuse it.  Rounds alternate the two; the table shows medians and ranges.

    python bench/bench_mala_cache.py [--rounds 7]
"""
import argparse
import statistics
import time

import numpy as np

import particleflow as pf


def workloads():
    rng = np.random.default_rng(0)
    mlp = pf.energies.MLP([64, 32, 32, 32, 1], dtype=np.float32)
    x64 = rng.standard_normal((100_000, 64)).astype(np.float32)
    small = pf.energies.MLP([2, 32, 32, 32, 1], dtype=np.float32)
    x2 = rng.standard_normal((100_000, 2)).astype(np.float32)
    conv = pf.energies.ConvNet.nijkamp(32, 32, dtype=np.float32)
    xc = rng.uniform(-1, 1, (64, 3, 32, 32)).astype(np.float32)
    return [("MALA, MLP [64,32,32,32,1] tanh, n=1e5", mlp, x64, lambda e: pf.moves.MALA(e, 1e-3)),
            ("MALA, MLP [2,32,32,32,1] tanh, n=1e5", small, x2, lambda e: pf.moves.MALA(e, 1e-2)),
            ("HMC 4 leapfrog, MLP [64,32,32,32,1], n=1e5", mlp, x64, lambda e: pf.moves.HMC(e, 1e-2, 4)),
            ("MALA, ConvNet n_f=32, batch 64", conv, xc, lambda e: pf.moves.MALA(e, 1e-4))]


def step_time(sim, cached, steps):
    ens = sim.ensembles["c"]
    t0 = time.perf_counter()
    for _ in range(steps):
        if not cached:
            ens.positions_changed()
        sim.run(1)
    return (time.perf_counter() - t0) / steps


def main(rounds):
    print(f"{'workload':<46} {'without cache':>16} {'with cache':>16} {'ratio with/without (range)':>30}")
    for name, energy, x, make in workloads():
        sims = {c: pf.Simulation({"c": pf.Ensemble(x)}, seed=1).schedule(make(energy), "c") for c in (False, True)}
        for s in sims.values():
            s.run(2)                                      # compile and warm up
        times = {False: [], True: []}
        ratios = []
        steps = 5 if x.ndim > 2 else 10
        for _ in range(rounds):
            a = step_time(sims[False], False, steps)
            b = step_time(sims[True], True, steps)
            times[False].append(a)
            times[True].append(b)
            ratios.append(b / a)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"{name:<46} {med[False]:>13.1f} ms {med[True]:>13.1f} ms "
              f"{statistics.median(ratios):>12.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    main(ap.parse_args().rounds)
