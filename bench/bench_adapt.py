"""Effective samples per gradient evaluation of adapted MALA and HMC, with and without
the mass matrix adapted from the ensemble.

    python bench/bench_adapt.py [--chains 2000] [--warmup 500] [--frames 1000]

Targets: paper 000's ill-conditioned Gaussian (precision [[1000, -1], [-1, 2]]), a 50-D
Gaussian with variances log-spaced over a condition number of 1e4 in a random basis,
and the 2-D ring of six unit Gaussians (radius 3).  Every sampler adapts its step
size over the warm-up (dual averaging, then the root search), from chains started at
0.1 N(0, I); "HMC ChEES" also adapts its trajectory length (gradients per step = the
mean number of leapfrog steps); then ``frames`` sampling steps are recorded.  tau is the integrated
autocorrelation time (pf.analysis.integrated_time) of the projection on the target
covariance's eigenvectors, the largest over directions; ESS per gradient = 1 / (tau *
gradients per step) per chain.  Where tau exceeds frames / 5 the automatic window
cannot close and tau is a lower bound (marked >=), so the gain is one too.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import particleflow as pf  # noqa: E402
from conftest import ring_mixture  # noqa: E402


def targets():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    var = np.logspace(-2, 2, 50)
    cov50 = (Q * var) @ Q.T
    cov50 = 0.5 * (cov50 + cov50.T)
    ill = np.array([[1000.0, -1.0], [-1.0, 2.0]])
    mix = ring_mixture()
    return {"ill-conditioned 2-D": (pf.energies.Gaussian(np.zeros(2), ill), np.linalg.inv(ill)),
            "50-D, cond 1e4": (pf.energies.Gaussian(np.zeros(50), np.linalg.inv(cov50)), cov50),
            "6-mode ring": (mix, mix.cov())}


def run(energy, cov, kind, mass, n, warmup, frames, n_leapfrog, trajectory=None):
    target = 0.57 if kind == "mala" else 0.7
    mv = pf.moves.MALA(energy, 0.01) if kind == "mala" else \
        pf.moves.HMC(energy, 0.01, n_leapfrog, jitter=0.0 if trajectory else 0.2)
    x0 = np.random.default_rng(0).standard_normal((n, cov.shape[0])) * 0.1
    sim = pf.Simulation({"c": pf.Ensemble(x0)}, seed=1)
    sim.schedule(pf.moves.AdaptStepSize(mv, target, warmup, mass=mass, trajectory=trajectory), "c")
    sim.run(warmup)
    xs, acc, grads = [], [], 0
    t0 = time.perf_counter()
    for _ in range(frames):
        sim.run(1)
        xs.append(sim.ensembles["c"].x.copy())
        acc.append(sim.slots[0].last["acceptance"])
        grads += 1 if kind == "mala" else sim.slots[0].last.get("n_leapfrog", n_leapfrog)
    ms = 1e3 * (time.perf_counter() - t0) / frames
    _, V = np.linalg.eigh(cov)
    tau = float(pf.analysis.integrated_time(np.array(xs) @ V).max())
    grads /= frames
    return {"h": mv.step_size, "acc": float(np.mean(acc)), "tau": tau, "capped": tau > frames / 5,
            "ess_grad": 1.0 / (tau * grads), "ms": ms}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--samplers", default="mala,hmc10,hmc3,chees",
                    help="comma-separated subset of mala, hmc10, hmc3, chees")
    a = ap.parse_args()
    chosen = set(a.samplers.split(","))
    print(f"{a.chains} chains, warm-up {a.warmup}, {a.frames} sampling steps; HMC jitter 0.2\n")
    print("| target | sampler | mass | h | acceptance | tau (slowest) | ESS / gradient / chain | gain | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tname, (energy, cov) in targets().items():
        for key, kind, L, traj in (("mala", "mala", 1, None), ("hmc10", "hmc", 10, None), ("hmc3", "hmc", 3, None),
                                   ("chees", "hmc", 10, "chees")):
            if key not in chosen:
                continue
            base = None
            for mass in (None, "diag", "dense"):
                r = run(energy, cov, kind, mass, a.chains, a.warmup, a.frames, L, traj)
                base = base or r
                ge = ">=" if r["capped"] else ""
                gain = r["ess_grad"] / base["ess_grad"]
                gtxt = ("n/a (both capped)" if r["capped"] and base["capped"] else
                        ("<=" if r["capped"] else ">=" if base["capped"] else "") + f"{gain:.1f}x")
                name = kind.upper() + ((" ChEES" if traj else f" L={L}") if kind == "hmc" else "")
                print(f"| {tname} | {name} | {mass or 'none'} | {r['h']:.3g} | {r['acc']:.3f} | {ge}{r['tau']:.1f} | "
                      f"{'<=' if r['capped'] else ''}{r['ess_grad']:.2e} | {gtxt if mass else '1'} | {r['ms']:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
