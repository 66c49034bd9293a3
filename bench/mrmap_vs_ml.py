"""Paper 000's argument, measured: MR-MAP learns a potential for recovery without ever
sampling the model, where maximum likelihood needs the model's samples at every step.

    python bench/mrmap_vs_ml.py [--steps 3000] [--every 100] [--ml-lr 3e-3] [--ml-step 0.05]

On the six-Gaussian mixture of ``runs/mrmap_mixture.toml`` (600 training points, 1000
validation points, d = x + N(0, 3^2 I)), both learn a potential phi and recover x from d:

* **MR-MAP** (the config's hyperbolic network, q = 128, l = 5, Adam on eq. 3.7): x_hat is
  the network's output, the MAP of phi by construction;
* **ML**: an MLP energy [2, 64, 64, 1] (softplus) plus |x|^2 / (2 R^2), R = 8, trained by contrastive gradients with
  600 persistent MALA chains started at the data (``estimators.contrastive_ml``, Adam),
  x_hat = argmin ||x - d||^2 / (2 sigma^2) + phi(x) by L-BFGS from d.

Printed: validation MSE of x_hat every ``--every`` steps against the cumulative count of
potential evaluations (gradients, Hessian-vector products and parameter backward passes,
each one point) and the training seconds (evaluation excluded), the first
step at which each reaches a target error, and the floors: MAP under the true mixture
potential (the best "learn phi, then MAP" can do) and the Bayes posterior mean.

Counting (per training step): MR-MAP runs l - 1 = 4 leapfrog force evaluations per batch
point forward and as many Hessian-vector products back, 2 (l - 1) x 256 = 2048; ML runs one
MALA step per chain (one value_and_grad, the accepted state's is cached) and two parameter
backward passes (data and chains), 3 x 600 = 1800.
"""
import argparse
import os
import sys
import time

import numpy as np
from scipy import optimize

import particleflow as pf
from particleflow import experiments
from particleflow.config import loads
from particleflow.estimators.contrastive import contrastive_ml
from particleflow.estimators.mrmap import observe
from particleflow.experiments.mrmap import EVAL, mixture_means, mixture_points, mixture_posterior_mean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Confined(pf.energies.Energy):
    """A learnable network plus a fixed confinement |x|^2 / (2 R^2): keeps exp(-E)
    integrable and the MAP from running off where no chain has been (the network
    alone is unbounded below far from the data)."""

    def __init__(self, net, radius):
        self.net, self.r2, self.dim = net, float(radius) ** 2, net.dim

    @property
    def params(self):
        return self.net.params

    def set_params(self, params):
        self.net.set_params(params)

    def cache_token(self):
        return self.net.cache_token()

    def grad_params(self, x, cotangent):
        return self.net.grad_params(x, cotangent)

    def value_and_grad(self, x):
        e, g = self.net.value_and_grad(x)
        return e + (x * x).sum(1) / (2 * self.r2), g + x / self.r2

    def value(self, x):
        return self.value_and_grad(x)[0]

    def grad(self, x):
        return self.value_and_grad(x)[1]


def map_recovery(energy, d, sigma, iters=500):
    """argmin_x ||x - d||^2 / (2 sigma^2) + energy(x), all rows at once (the objective is a
    sum of independent terms), by L-BFGS from d."""
    shape = d.shape

    def fun(v):
        x = v.reshape(shape)
        e, g = energy.value_and_grad(x)
        r = x - d
        return float((r * r).sum() / (2 * sigma ** 2) + e.sum()), (r / sigma ** 2 + g).ravel()
    res = optimize.minimize(fun, d.ravel().copy(), jac=True, method="L-BFGS-B",
                            options={"maxiter": iters, "gtol": 1e-9, "ftol": 1e-15})
    return res.x.reshape(shape)


def learning_curve(sim, a, cost_per_step, evaluate):
    """[(step, evaluations, training seconds, validation MSE)] every ``a.every`` steps."""
    rows, spent = [], 0.0
    for t in range(0, a.steps + 1, a.every):
        if t:
            t0 = time.perf_counter()
            sim.run(a.every)
            spent += time.perf_counter() - t0
        rows.append((t, t * cost_per_step, spent, evaluate()))
    return rows


def mse(a, b):
    return float(((np.asarray(a) - b) ** 2).sum(1).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--ml-lr", type=float, default=3e-3)
    ap.add_argument("--ml-step", type=float, default=0.05, help="MALA step size of the ML chains")
    ap.add_argument("--ml-radius", type=float, default=8.0, help="R of the ML energy's confinement")
    ap.add_argument("--targets", type=float, nargs="+", default=[12.0, 10.5, 9.5])
    a = ap.parse_args(argv)
    text = open(os.path.join(ROOT, "runs", "mrmap_mixture.toml")).read()
    cfg = experiments.validate(loads(text))
    sigma, seed = cfg["mrmap"]["sigma"], cfg["run"]["seed"]
    x = mixture_points(cfg, cfg["data"]["n_val"], 1)
    d, mask = observe(x, 1.0, sigma, seed, 0, split=EVAL)
    train = mixture_points(cfg, cfg["data"]["n"], 0)
    floors = {"identity (x_hat = d)": mse(d, x), "Bayes posterior mean": mse(mixture_posterior_mean(cfg, d, sigma), x),
              "MAP under the true mixture": mse(map_recovery(pf.energies.GaussianMixture(mixture_means(cfg), scale=1.0),
                                                             d, sigma), x)}
    curves = {}

    # MR-MAP: the experiment's own build; ML: contrastive gradients with persistent MALA chains
    exp = experiments.get("mrmap")
    sim = exp.build(cfg)
    net = sim.context["network"]
    curves["MR-MAP"] = learning_curve(sim, a, 2 * (cfg["model"]["layers"] - 1) * cfg["mrmap"]["batch"],
                                      lambda: mse(net.forward(d, mask)["xhat"], x))
    energy = Confined(pf.energies.MLP([2, 64, 64, 1], activation="softplus", seed=seed), a.ml_radius)
    ml = contrastive_ml(energy, train, train.copy(), lambda e: pf.moves.MALA(e, a.ml_step), lr=a.ml_lr, seed=seed)
    curves["ML + MAP"] = learning_curve(ml, a, 3 * len(train), lambda: mse(map_recovery(energy, d, sigma), x))

    print("| reference | validation MSE |")
    print("|---|---|")
    for k, v in floors.items():
        print(f"| {k} | {v:.2f} |")
    print()
    print("| step | " + " | ".join(f"{k}: evaluations, s, MSE" for k in curves) + " |")
    print("|---|" + "---|" * len(curves))
    for i in range(len(curves["MR-MAP"])):
        cells = [f"{int(r[i][1]):,}, {r[i][2]:.1f}, {r[i][3]:.2f}" for r in curves.values()]
        print(f"| {curves['MR-MAP'][i][0]} | " + " | ".join(cells) + " |")
    print()
    print("| target MSE | " + " | ".join(f"{k}: first step, evaluations, s" for k in curves) + " |")
    print("|---|" + "---|" * len(curves))
    for target in a.targets:
        cells = []
        for rows in curves.values():
            hit = [r for r in rows if r[3] <= target]
            cells.append(f"{hit[0][0]}, {int(hit[0][1]):,}, {hit[0][2]:.1f}" if hit else "not reached")
        print(f"| {target} | " + " | ".join(cells) + " |")
    for name, rows in curves.items():
        print(f"{name}: best validation MSE {min(r[3] for r in rows):.2f}, final {rows[-1][3]:.2f}, "
              f"{rows[-1][2] / max(1, rows[-1][0]) * 1e3:.2f} ms per training step")


if __name__ == "__main__":
    sys.exit(main())
