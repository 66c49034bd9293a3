"""Weak and strong scaling over MPI ranks (needs the 'mpi' extra), with the time spent
in communication.

    python bench/bench_mpi.py [--rounds 3] [--only NAME]

For each workload it launches, interleaved over ``rounds`` rounds,
``mpiexec -n R python bench/bench_mpi.py --worker ...`` for
  R = 1 at N (one rank, the per-rank size), R = 1 at 2N and R = 2 at 2N,
every rank with one thread (one core per rank), and times ``steps`` steps of the
Simulation built from the config (after warm-up steps that compile the kernels; no
file is written).  Weak-scaling efficiency = T(R=1, N) / T(R=2, 2N); strong-scaling
speed-up = T(R=1, 2N) / T(R=2, 2N).  Communication: the seconds rank 0 spent inside
collectives (waiting for the slowest rank included).  Medians over rounds, ranges
in brackets.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {
    # name: (config, {size key: per-rank value}, extra overrides, timed steps)
    "demo": ("runs/demo.toml", {"ensembles.chains.n": 100000}, [], 200),
    "dual_ebm (paper 001)": ("runs/dual_ebm_dual.toml", {"model.particles": 50000, "data.n": 25000},
                             ["data.n_test=2000"], 40),
    # data-parallel MR-MAP: 256 rows per rank, the loss gradient in blocks of 256 rows shared by the ranks
    "MR-MAP mixture (paper 000)": ("runs/mrmap_mixture.toml", {"mrmap.batch": 256}, ["mrmap.grad_block=256"], 200),
    # data-parallel DEEN: 128 rows per rank, the loss gradient in blocks of 64 rows shared by the ranks
    "DEEN digits (paper 002)": ("runs/deen_digits.toml", {"deen.batch": 128}, ["deen.grad_block=64"], 300),
    # the K = 100 Langevin steps of 64 chains per rank, in blocks of 16 rows shared by the ranks
    "short-run digits (paper 004)": ("runs/shortrun_digits.toml", {"short_run.n_chains": 64},
                                     ["short_run.chain_block=16"], 8),
}


def worker(config, sets, steps):
    import numpy as np
    from particleflow import experiments
    from particleflow.config import apply_overrides, loads
    from particleflow.parallel import world
    from particleflow.runner import reduction_mode
    comm = world()
    with open(os.path.join(ROOT, config)) as fh:
        raw = apply_overrides(loads(fh.read()), sets)
    cfg = experiments.validate(raw)
    exp = experiments.get(cfg["estimator"])
    sim = exp.build(cfg, ROOT)
    if comm.size > 1:
        sim.distribute(comm, reduction_mode(), shard=exp.shards)
    sim.run(3)                                   # compile the kernels
    comm.barrier()
    c0 = getattr(comm, "seconds", 0.0)
    t0 = time.perf_counter()
    sim.run(steps)
    comm.barrier()
    dt = time.perf_counter() - t0
    comm_s = getattr(comm, "seconds", 0.0) - c0
    if comm.rank == 0:
        print("RESULT " + json.dumps({"seconds_per_step": dt / steps, "comm_per_step": comm_s / steps,
                                      "check": float(np.asarray(sim.ensembles[list(sim.ensembles)[-1]].x).sum())}))


def launch(ranks, config, sets, steps):
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [sys.executable, __file__, "--worker", config, str(steps)] + sets
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not line:
        raise RuntimeError(f"{cmd}: {r.stderr[-2000:]}")
    return json.loads(line[0][7:])


def fmt(values, scale=1e3):
    v = [x * scale for x in values]
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", nargs="+")
    ap.add_argument("--only", help="the workloads whose name contains this")
    args = ap.parse_args()
    if args.worker:
        config, steps, *sets = args.worker
        return worker(config, sets, int(steps))
    cases = [(1, 1), (1, 2), (2, 2)]          # (ranks, size factor)
    workloads = {w: v for w, v in WORKLOADS.items() if not args.only or args.only in w}
    times = {(w, c): [] for w in workloads for c in cases}
    for _ in range(args.rounds):
        for w, (config, sizes, extra, steps) in workloads.items():
            for ranks, k in cases:
                sets = [f"{key}={v * k}" for key, v in sizes.items()] + extra
                times[(w, (ranks, k))].append(launch(ranks, config, sets, steps))
    print(f"{'workload':28s} {'case':18s} {'ms/step':>20s} {'comm ms/step':>20s}")
    for w in workloads:
        for ranks, k in cases:
            t = times[(w, (ranks, k))]
            print(f"{w:28s} R={ranks}, {k}N{'':11s} {fmt([x['seconds_per_step'] for x in t]):>20s} "
                  f"{fmt([x['comm_per_step'] for x in t]):>20s}")
        t11 = [x["seconds_per_step"] for x in times[(w, (1, 1))]]
        t12 = [x["seconds_per_step"] for x in times[(w, (1, 2))]]
        t22 = [x["seconds_per_step"] for x in times[(w, (2, 2))]]
        weak = [a / b for a, b in zip(t11, t22)]
        strong = [a / b for a, b in zip(t12, t22)]
        print(f"{w:28s} weak-scaling efficiency R=2: {statistics.median(weak):.2f} "
              f"[{min(weak):.2f}-{max(weak):.2f}]; strong-scaling speed-up R=2: {statistics.median(strong):.2f} "
              f"[{min(strong):.2f}-{max(strong):.2f}]")


if __name__ == "__main__":
    main()
