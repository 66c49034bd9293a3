"""A model of the communication per step of a run over R ranks, and the weak-scaling
efficiency it projects (docs/mpi.md).

    python bench/mpi_model.py [--alpha-us 2] [--beta-gbs 5] [--demo-ms 5.9] [--dual-ms 136]
                              [--sr-step-s 1.17] [--sr-grad-s 3.9] [--sr-params 11031809]

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


def shortrun(R, alpha, beta, t_step, t_grad, params, K=100, batch=64, event=3 * 32 * 32):
    """Paper 004 at the paper's settings, per iteration and rank: K Langevin steps of
    ``batch`` chains (``t_step`` seconds each on one core), then the parameter gradient
    over a data batch and the samples (``t_grad`` for 2 ``batch`` rows).  Seconds per
    iteration at R ranks (weak scaling: ``batch`` chains per rank) for four designs:

    * 'chains shared': each rank runs its blocks of chains, one allgather of the end
      points (float32) and of the ||grad E|| rows, then every rank computes the whole
      gradient over R batches;
    * 'gradient partials, allgather' (what ``short_run.chain_block`` and
      ``deen.grad_block`` do): each rank computes the gradient partial of its own rows
      (float64 here); all partials gathered and summed in block order (bitwise for any
      R; every rank receives (R - 1) partials, and must hold them);
    * 'gradient partials, ordered reduce-scatter': the same sums in the same order, but
      an all-to-all sends each rank one 1/R slice of every partial, it sums its slice in
      block order, and an allgather of the summed slices (float32) follows (bitwise for
      any R; about 12 bytes per parameter received, whatever R);
    * 'allreduce': MPI_Allreduce of the partials (not bitwise across R)."""
    lat = alpha * max(1.0, math.log2(R))
    own = K * t_step
    chains = own + R * t_grad + 2 * lat + (R - 1) * batch * (event * 4 + K * 8) / beta
    gather = own + t_grad + lat + (R - 1) * params * 8 / beta
    scatter = own + t_grad + 2 * lat + ((R - 1) / R) * params * 8 / beta + ((R - 1) / R) * params * 4 / beta
    allreduce = own + t_grad + lat + 2 * ((R - 1) / R) * params * 8 / beta
    return {"chains shared": chains, "gradient partials, allgather": gather,
            "gradient partials, ordered reduce-scatter": scatter, "allreduce": allreduce}


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
    ap.add_argument("--sr-step-s", type=float, default=1.17,
                    help="paper 004 ConvNet n_f = 128, 32x32x3: value + grad_x of 64 chains, one core (s)")
    ap.add_argument("--sr-grad-s", type=float, default=3.9, help="its grad_params over 128 rows, one core (s)")
    ap.add_argument("--sr-params", type=int, default=11_031_809, help="its parameter count")
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
    T1 = 100 * a.sr_step_s + a.sr_grad_s
    print(f"\npaper 004 at the paper's settings (ConvNet n_f = 128, 32x32x3, K = 100, 64 chains per rank; "
          f"{a.sr_params / 1e6:.1f} M parameters): one rank {T1:.0f} s per iteration; weak-scaling efficiency")
    designs = list(shortrun(2, alpha, beta, a.sr_step_s, a.sr_grad_s, a.sr_params))
    print("| R | " + " | ".join(designs) + " |")
    print("|---|" + "---|" * len(designs))
    for R in (2, 8, 64, 512):
        t = shortrun(R, alpha, beta, a.sr_step_s, a.sr_grad_s, a.sr_params)
        print(f"| {R} | " + " | ".join(f"{T1 / t[d]:.2f}" for d in designs) + " |")


if __name__ == "__main__":
    main()
