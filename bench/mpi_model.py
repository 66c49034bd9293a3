"""A model of the communication per step of a run over R ranks, and the weak-scaling
efficiency it projects (docs/mpi.md).

    python bench/mpi_model.py [--alpha-us 2] [--beta-gbs 5] [--demo-ms 5.9] [--dual-ms 136]

Per step every collective costs alpha * log2(R) (latency; recursive doubling) plus the
bytes each rank receives over beta.  'ordered' reductions gather every block's partial
sums (the bytes grow with the total particle count, so with R under weak scaling);
'allreduce' sums the ranks' totals (bytes fixed).  T1: the measured time per step of
one rank on one core at the per-rank size (bench/bench_mpi.py).  E(R) = T1 / (T1 + comm).
"""
import argparse
import math

BLOCK, PAIR_BLOCK = 512, 256


def demo(R, n_rank=100_000):
    """MALA every step (one reduction of 2 statistics), Langevin every 10, observables
    (mean: 2 numbers) every 20; collective finite checks and the stop flag."""
    blocks = R * n_rank / BLOCK
    gathers = 1 + 1 / 20
    ordered = blocks * 2 * 8 * gathers
    allreduce = 2 * 8 * gathers
    small = 1 + 1.1                     # stop flag, finite checks (one boolean each)
    return gathers + small, ordered, allreduce


def dual(R, n_rank=50_000, data_rank=25_000, m=64, d=15):
    """Paper 001 per iteration: the WFR potential sums m (d + 1) numbers over particles and
    over data (F_t and its gradient), per 256-particle block; finite check, stop flag."""
    k = m * (d + 1)
    blocks = R * (n_rank + data_rank) / PAIR_BLOCK
    ordered = blocks * k * 8
    allreduce = 2 * k * 8
    return 2 + 2, ordered, allreduce


def project(T1, model, R, alpha, beta):
    n_coll, ordered, allreduce = model(R)
    lat = n_coll * alpha * max(1.0, math.log2(R))
    return {mode: T1 / (T1 + lat + b / beta) for mode, b in (("ordered", ordered), ("allreduce", allreduce))}, \
        ordered, allreduce


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpha-us", type=float, default=2.0)
    ap.add_argument("--beta-gbs", type=float, default=5.0)
    ap.add_argument("--demo-ms", type=float, default=5.9)
    ap.add_argument("--dual-ms", type=float, default=136.0)
    a = ap.parse_args()
    alpha, beta = a.alpha_us * 1e-6, a.beta_gbs * 1e9
    print("| workload (per rank) | R | bytes received per step, ordered | allreduce | E ordered | E allreduce |")
    print("|---|---|---|---|---|---|")
    for name, T1, model in (("demo (1e5 chains, d = 2)", a.demo_ms * 1e-3, demo),
                            ("paper 001 (5e4 particles, 2.5e4 data, m = 64, d = 15)", a.dual_ms * 1e-3, dual)):
        for R in (2, 8, 64, 512):
            e, ob, ab = project(T1, model, R, alpha, beta)
            print(f"| {name} | {R} | {ob / 1e6:.3g} MB | {ab / 1e3:.3g} kB | {e['ordered']:.2f} | "
                  f"{e['allreduce']:.2f} |")


if __name__ == "__main__":
    main()
