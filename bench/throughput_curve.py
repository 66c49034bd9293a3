"""Throughput curve: particle-steps per second from n = 1e3 to 1e7 chains, for ULA,
MALA and HMC (5 leapfrog steps) on the 2-D 6-component Gaussian mixture and for ULA
and MALA on the MLP [64, 32, 32, 32, 1] tanh energy (n up to 1e6: at 1e7 one
[n, 64] float32 array is 2.6 GB and a MALA step holds several), float32, at 1 and 2
threads, particleflow beside JAX (jit, the same update written with jax.numpy and
jax.grad, jax.random noise), run the same way.

Each (implementation, thread count) is a fresh process that times every workload and
n; rounds alternate the order of the processes, and the table gives the median over
rounds (and the range).  JAX runs from a separate venv (never a dependency):

    python bench/throughput_curve.py --jax-python /work/refvenv/bin/python [--rounds 2]
        [--out docs/figures/throughput.png] [--json run.json] [--targets mlp]
    python bench/throughput_curve.py --load run.json mlp.json --out docs/figures/throughput.png
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIX_N = (1000, 10_000, 100_000, 1_000_000, 10_000_000)
MLP_N = (1000, 10_000, 100_000, 1_000_000)
WORKLOADS = [("mixture", "ula", MIX_N), ("mixture", "mala", MIX_N), ("mixture", "hmc", MIX_N),
             ("mlp", "ula", MLP_N), ("mlp", "mala", MLP_N)]
H = {"ula": 0.01, "mala": 0.01, "hmc": 0.2}
LEAPFROG = 5
SIZES = [64, 32, 32, 32, 1]


def seconds_per_step(step, budget):
    """Median over samples of seconds per call, after two warm-up calls; about
    ``budget`` seconds in all (at least 3 samples of at least one call)."""
    step()
    step()
    per, t_end = [], time.perf_counter() + budget
    while len(per) < 3 or time.perf_counter() < t_end:
        k, t0 = 0, time.perf_counter()
        while k == 0 or time.perf_counter() - t0 < budget / 6:
            step()
            k += 1
        per.append((time.perf_counter() - t0) / k)
    return statistics.median(per)


# ------------------------------------------------------------------ particleflow
def pf_worker(budget):
    import numpy as np
    import particleflow as pf
    out = {}
    mix = pf.energies.GaussianMixture(pf.energies.ring_means(6, 3.0), scale=0.5)
    mlp = pf.energies.MLP(SIZES, dtype=np.float32)
    for target, move, ns in WORKLOADS:
        for n in ns:
            rng = np.random.default_rng(0)
            d = 2 if target == "mixture" else SIZES[0]
            e = mix if target == "mixture" else mlp
            ens = pf.Ensemble(rng.standard_normal((n, d)).astype(np.float32))
            m = {"ula": lambda: pf.moves.Langevin(e, H["ula"]), "mala": lambda: pf.moves.MALA(e, H["mala"]),
                 "hmc": lambda: pf.moves.HMC(e, H["hmc"], LEAPFROG)}[move]()
            stream, t = pf.random.Stream(0), [0]

            def step():
                m(ens, stream, t[0])
                t[0] += 1
            out[f"{target}/{move}/{n}"] = seconds_per_step(step, budget)
    return out


# ------------------------------------------------------------------ JAX
def jax_worker(budget):
    import jax
    import jax.numpy as jnp
    import numpy as np
    out = {}
    ang = 2 * np.pi * np.arange(6) / 6
    mu = jnp.asarray(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1), jnp.float32)

    def e_mix(x):                      # -log sum_k exp(-|x - mu_k|^2 / (2 s^2)), s = 0.5, per chain
        d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
        return -jax.nn.logsumexp(-d2 / (2 * 0.25), axis=1)

    rng = np.random.default_rng(0)
    params = []
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        params.append((jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
                       jnp.zeros(b, jnp.float32)))

    def e_mlp(x):
        h = x
        for W, b in params[:-1]:
            h = jnp.tanh(h @ W + b)
        W, b = params[-1]
        return (h @ W + b)[:, 0]

    def make(energy, move):
        vg = jax.value_and_grad(lambda x: energy(x).sum())

        def both(x):                   # per-chain energies and gradients
            return energy(x), vg(x)[1]

        h = jnp.float32(H[move])
        if move == "ula":
            def step(x, key):
                return x - h * both(x)[1] + jnp.sqrt(2 * h) * jax.random.normal(key, x.shape, x.dtype)
        elif move == "mala":
            def step(x, key):
                k1, k2 = jax.random.split(key)
                e0, g0 = both(x)
                y = x - h * g0 + jnp.sqrt(2 * h) * jax.random.normal(k1, x.shape, x.dtype)
                e1, g1 = both(y)
                lq_f = -((y - x + h * g0) ** 2).sum(1) / (4 * h)
                lq_b = -((x - y + h * g1) ** 2).sum(1) / (4 * h)
                la = e0 - e1 + lq_b - lq_f
                acc = jnp.log(jax.random.uniform(k2, e0.shape, x.dtype)) < la
                return jnp.where(acc[:, None], y, x)
        else:
            def step(x, key):
                k1, k2 = jax.random.split(key)
                e0, g = both(x)
                p = jax.random.normal(k1, x.shape, x.dtype)
                h0 = e0 + 0.5 * (p * p).sum(1)

                def body(_, s):
                    a, p, g = s
                    p = p - 0.5 * h * g
                    a = a + h * p
                    g = both(a)[1]
                    return a, p - 0.5 * h * g, g
                a, p, g = jax.lax.fori_loop(0, LEAPFROG, body, (x, p, g))
                h1 = energy(a) + 0.5 * (p * p).sum(1)
                acc = jnp.log(jax.random.uniform(k2, e0.shape, x.dtype)) < h0 - h1
                return jnp.where(acc[:, None], a, x)
        return jax.jit(step)

    for target, move, ns in WORKLOADS:
        step_fn = make(e_mix if target == "mixture" else e_mlp, move)
        for n in ns:
            d = 2 if target == "mixture" else SIZES[0]
            st = {"x": jnp.asarray(rng.standard_normal((n, d)), jnp.float32), "key": jax.random.PRNGKey(0)}

            def step():
                st["key"], k = jax.random.split(st["key"])
                st["x"] = jax.block_until_ready(step_fn(st["x"], k))
            out[f"{target}/{move}/{n}"] = seconds_per_step(step, budget)
    return out


def run_worker(impl, threads, python, budget, targets):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    if impl == "jax" and threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    res = subprocess.run([python, os.path.abspath(__file__), "--worker", impl, "--budget", str(budget),
                          "--targets", *targets],
                         env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{impl} worker failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jax-python", default=None, help="python of a venv with jax (omit: particleflow only)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.6, help="seconds of timing per point")
    ap.add_argument("--out", default=None, help="write the log-log figure here (needs matplotlib)")
    ap.add_argument("--json", default=None, help="also write the raw medians here")
    ap.add_argument("--load", nargs="+", default=None,
                    help="measure nothing: table and figure from --json files of earlier runs (a later file's "
                         "points replace an earlier one's)")
    ap.add_argument("--targets", nargs="+", default=["mixture", "mlp"], choices=("mixture", "mlp"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    WORKLOADS[:] = [w for w in WORKLOADS if w[0] in a.targets]
    if a.worker:
        print(json.dumps((pf_worker if a.worker == "pf" else jax_worker)(a.budget)))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "SSE")
    got = {}
    if a.load:
        for path in a.load:
            with open(path) as f:
                for key, v in json.load(f).items():
                    impl, t, k = key.split("|")
                    got[(impl, int(t), k)] = v
        a.jax_python = a.jax_python or any(impl == "jax" for impl, _, _ in got)
        a.rounds = min(len(v) for v in got.values())
    impls = [("pf", sys.executable)] + ([("jax", a.jax_python)] if a.jax_python else [])
    runs = [(impl, py, t) for impl, py in impls for t in (1, 2)]
    for r in range(0 if a.load else a.rounds):
        for impl, py, t in (runs if r % 2 == 0 else runs[::-1]):
            for k, v in run_worker(impl, t, py, a.budget, a.targets).items():
                got.setdefault((impl, t, k), []).append(v)
    print(f"# {os.cpu_count()} CPUs ({cpu}, {simd}); float32; {a.rounds} rounds; particle-steps per second "
          "(median over rounds; range in brackets); pf = particleflow")
    cols = [(impl, t) for impl, _ in impls for t in (1, 2)]
    print("| workload | n | " + " | ".join(f"{impl}, {t} thr" for impl, t in cols) + " |" +
          (" pf / jax time, 1 thr | 2 thr |" if a.jax_python else ""))
    print("|---|---|" + "---|" * len(cols) + ("---|---|" if a.jax_python else ""))
    for target, move, ns in WORKLOADS:
        for n in ns:
            k = f"{target}/{move}/{n}"
            cells = []
            for impl, t in cols:
                v = got[(impl, t, k)]
                cells.append(f"{n / statistics.median(v):.3g} ({n / max(v):.2g}-{n / min(v):.2g})")
            ratio = ""
            if a.jax_python:
                ratio = " " + " | ".join(f"{statistics.median(got[('pf', t, k)]) / statistics.median(got[('jax', t, k)]):.2f}"
                                         for t in (1, 2)) + " |"
            print(f"| {move.upper()} on the {target} | {n:.0e} | " + " | ".join(cells) + " |" + ratio)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{i}|{t}|{k}": v for (i, t, k), v in got.items()}, f, indent=1)
    if a.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, target in zip(axes, ("mixture", "mlp")):
            if target not in a.targets:
                continue
            for ci, (target_, move, ns) in enumerate(w for w in WORKLOADS if w[0] == target):
                for impl, t in cols:
                    ys = [n / statistics.median(got[(impl, t, f"{target}/{move}/{n}")]) for n in ns]
                    ax.loglog(ns, ys, marker="o" if impl == "pf" else "s", color=f"C{ci}",
                              ls="-" if t == 2 else "--", alpha=1.0 if impl == "pf" else 0.5,
                              label=f"{move.upper()}, {'particleflow' if impl == 'pf' else 'JAX'}, {t} thread{'s' * (t > 1)}")
            ax.set_xlabel("chains n")
            ax.set_ylabel("particle-steps per second")
            ax.set_title({"mixture": "2-D 6-component Gaussian mixture",
                          "mlp": "MLP [64, 32, 32, 32, 1] tanh energy"}[target])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(f"{cpu}, {os.cpu_count()} cores, float32", fontsize=9)
        fig.tight_layout()
        fig.savefig(a.out, dpi=90)
        print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
