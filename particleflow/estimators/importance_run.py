"""``estimator = "importance_ml"``: paper 003's Section 7 experiment from a config.

    [run]        seed, runs (replicas of the proposal draws; 1000 in the paper)
    [model]      family = "gaussian_std", theta_true, n_data     p(x | theta) = N(0, theta^2)
    [grid]       theta_min, theta_max, points                    where J_GL is evaluated
    [proposals.<name>]  mean, std, std_per_theta                 q = N(mean, (std + std_per_theta * theta)^2)
    [sampling]   M = [100, 5000]
    [fit]        routes, runs, iterations, learning_rate, theta0, average_last, max_step, scheme

Results (contract): /results/theta_grid [G], /results/J_true [G], /results/J_<q>_M<M>
[runs, G] for every proposal and M; also ess_<q>_M<M> [runs, G] (weights' ESS per
theta), w2_<q> [G] (closed-form E_q[w^2], inf where it diverges), theta_mle,
theta_hat_<route>_<q>_M<M> [fit runs].  Observables: fit/<route>_<q>_M<M>/theta_mean
and theta_sd over fit runs, per iteration.  The observations are stored as the
ensemble ``data`` (one frame).
"""
import time

import h5py
import numpy as np

from ..ensemble import Ensemble
from ..io.config import ConfigError, Field, _positive, _table
from ..io.h5md import TrajectoryWriter, write_results
from ..random import Purpose, Stream
from .importance import ROUTES, GaussianProposal, ImportanceML, weight_second_moment

DATA_STREAM = 1 << 23

SCHEMA = {
    "estimator": Field("str", "importance_ml"),
    "run": Field("table", {}), "model": Field("table", {}), "grid": Field("table", {}),
    "proposals": Field("table", None), "sampling": Field("table", {}), "fit": Field("table", {}),
    "output": Field("table", {}),
}
RUN = {"seed": Field("int", 0, lo=0, hi=2 ** 32 - 1), "runs": Field("int", 1000, lo=1, hi=2 ** 24 - 1)}
MODEL = {"family": Field("str", "gaussian_std", choices=("gaussian_std",)),
         "theta_true": _positive(2.0), "n_data": Field("int", 100, lo=1)}
GRID = {"theta_min": _positive(0.5), "theta_max": _positive(5.0), "points": Field("int", 91, lo=2)}
PROPOSAL = {"mean": Field("float", 2.0), "std": _positive(2.0), "std_per_theta": Field("float", 0.0, lo=0)}
SAMPLING = {"M": Field("list", [100, 5000])}
FIT = {"routes": Field("list", list(ROUTES)), "runs": Field("int", 25, lo=0),
       "iterations": Field("int", 60, lo=1), "learning_rate": _positive(1.0), "theta0": _positive(1.5),
       "average_last": Field("int", 30, lo=0), "max_step": _positive(0.5),
       "scheme": Field("str", "systematic", choices=("multinomial", "residual", "stratified", "systematic"))}
OUTPUT = {"plot": Field("bool", True)}


def validate(raw):
    cfg = _table("", raw, SCHEMA)
    cfg["run"] = _table("run", cfg["run"], RUN)
    cfg["model"] = _table("model", cfg["model"], MODEL)
    g = cfg["grid"] = _table("grid", cfg["grid"], GRID)
    if g["theta_min"] >= g["theta_max"]:
        raise ConfigError(f"grid.theta_min ({g['theta_min']}) must be < grid.theta_max ({g['theta_max']})")
    props = cfg["proposals"] or {"q1": {}, "q2": {"std_per_theta": 1.0}}
    cfg["proposals"] = {name: _table(f"proposals.{name}", t, PROPOSAL) for name, t in props.items()}
    s = cfg["sampling"] = _table("sampling", cfg["sampling"], SAMPLING)
    if not s["M"] or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in s["M"]):
        raise ConfigError(f"sampling.M must be a non-empty array of integers >= 1; got {s['M']!r}")
    need = cfg["run"]["runs"] * max(s["M"]) * 8
    if need > 4 * 2 ** 30:
        raise ConfigError(f"run.runs x max(sampling.M) needs {need / 2 ** 30:.1f} GiB of common random numbers "
                          "(limit 4 GiB); reduce run.runs or sampling.M")
    f = cfg["fit"] = _table("fit", cfg["fit"], FIT)
    bad = [r for r in f["routes"] if r not in ROUTES]
    if bad:
        raise ConfigError(f"fit.routes: unknown route {bad[0]!r}; valid routes: {', '.join(ROUTES)}")
    if f["average_last"] > f["iterations"]:
        raise ConfigError(f"fit.average_last ({f['average_last']}) must be <= fit.iterations ({f['iterations']})")
    if f["runs"] > cfg["run"]["runs"]:
        raise ConfigError(f"fit.runs ({f['runs']}) must be <= run.runs ({cfg['run']['runs']})")
    cfg["output"] = _table("output", cfg["output"], OUTPUT)
    return cfg


def proposal_from(spec):
    mean, std, k = spec["mean"], spec["std"], spec["std_per_theta"]
    if k == 0:
        return GaussianProposal(mean, std)
    return GaussianProposal(mean, lambda p: std + k * float(p["std"]))


def observations(cfg):
    """x_n ~ N(0, theta*^2), n = 1..N (paper 003, Eq. 23), from the run's seed."""
    m = cfg["model"]
    z = Stream(cfg["run"]["seed"], DATA_STREAM).normal(0, np.arange(m["n_data"]), 1, Purpose.INIT)
    return m["theta_true"] * z


def execute(cfg, config_text, out, progress=None, base_dir="."):
    from ..energies import GaussianStd
    t0 = time.perf_counter()
    seed, runs = cfg["run"]["seed"], cfg["run"]["runs"]
    x = observations(cfg)
    N = x.shape[0]
    grid = np.linspace(cfg["grid"]["theta_min"], cfg["grid"]["theta_max"], cfg["grid"]["points"])
    energy = GaussianStd(1.0)
    J_true = np.array([(x ** 2).sum() / (2 * t ** 2) + N * 0.5 * np.log(2 * np.pi * t ** 2) for t in grid])
    results = {"theta_grid": grid, "J_true": J_true, "theta_mle": np.sqrt((x ** 2).mean()),
               "theta_true": cfg["model"]["theta_true"]}
    f = cfg["fit"]
    configs = [(q, spec, M) for q, spec in cfg["proposals"].items() for M in cfg["sampling"]["M"]]
    total = len(configs) * (1 + len(f["routes"]) * f["runs"])
    done = 0
    observables = {}
    for q, spec, M in configs:
        prop = proposal_from(spec)
        est = ImportanceML(energy, x, prop, M, runs=runs, seed=seed)
        J = np.empty((runs, grid.size))
        ess = np.empty((runs, grid.size))
        for j, t in enumerate(grid):
            J[:, j], _, ess[:, j] = est.objective({"std": np.asarray(t)})
        results[f"J_{q}_M{M}"] = J
        results[f"ess_{q}_M{M}"] = ess
        done += 1
        if progress:
            progress(done, total, {})
        for route in f["routes"]:
            hats, traj = [], []
            for r in range(f["runs"]):
                p, hist = est.fit({"std": np.asarray(f["theta0"])}, run=r, route=route,
                                  iterations=f["iterations"], learning_rate=f["learning_rate"],
                                  average_last=f["average_last"], scheme=f["scheme"], max_step=f["max_step"])
                hats.append(float(p["std"]))
                traj.append([float(h["std"]) for h in hist])
                done += 1
                if progress and r % 10 == 9:
                    progress(done, total, {})
            if f["runs"]:
                results[f"theta_hat_{route}_{q}_M{M}"] = np.array(hats)
                traj = np.array(traj)
                observables[f"fit/{route}_{q}_M{M}/theta_mean"] = traj.mean(0)
                observables[f"fit/{route}_{q}_M{M}/theta_sd"] = traj.std(0)
    for q, spec in cfg["proposals"].items():
        results[f"w2_{q}"] = np.array([weight_second_moment(t, spec["mean"], spec["std"] + spec["std_per_theta"] * t)
                                       for t in grid])
    results["elapsed_s"] = time.perf_counter() - t0
    params = dict(config=config_text, seed=seed, dtype="float64", backend="cpu", estimator="importance_ml")
    ens = {"data": Ensemble(x, name="data")}
    w = TrajectoryWriter(out, ens, {k: 0.0 for k in observables}, params)
    try:
        w.write_frame(0, ens)
        for k, v in observables.items():
            for it, val in enumerate(v):
                w.write_observable(k, it + 1, val)
    finally:
        w.close()
    with h5py.File(out, "r+", libver="latest") as fh:
        write_results(fh, results)
    if progress:
        progress(total, total, {})
    return results


def summary(results, cfg):
    """Lines for the terminal: the numbers behind Figures 1-2."""
    grid = results["theta_grid"]
    lines = [f"theta_MLE = sqrt(mean x^2) = {results['theta_mle']:.4f}   ({results['elapsed_s']:.1f} s)"]
    for q in cfg["proposals"]:
        for M in cfg["sampling"]["M"]:
            J = results[f"J_{q}_M{M}"]
            width = J.max(0) - J.min(0)
            hi = grid > 2.0
            am = grid[np.argmin(J, axis=1)]
            lines.append(f"{q} M={M}: band width (max-min over runs) median over theta>2: {np.median(width[hi]):.3g}, "
                         f"at theta={grid[-1]:.2f}: {width[-1]:.3g}; argmin J_GL mean {am.mean():.4f} sd {am.std():.4f}")
            for route in cfg["fit"]["routes"]:
                k = f"theta_hat_{route}_{q}_M{M}"
                if k in results:
                    lines.append(f"    route {route:<12} theta_hat mean {results[k].mean():.4f} sd {results[k].std():.4f}")
    return lines


def plot(run, png):
    """Paper 003's Figures 1-2: per proposal and M, the band (min-max over runs) of
    J_GL, its mean (dashed) and the true J (solid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = run.results
    grid = np.asarray(res["theta_grid"])
    keys = sorted(k for k in res if k.startswith("J_q") or (k.startswith("J_") and k != "J_true"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys):
        J = np.asarray(res[k])
        ax.fill_between(grid, J.min(0), J.max(0), color="tab:green", alpha=0.4, label="100% of runs")
        ax.plot(grid, J.mean(0), "b--", label="mean J_GL")
        ax.plot(grid, res["J_true"], "r-", label="true J")
        lo, hi = np.min(res["J_true"]), np.percentile(res["J_true"], 60)
        ax.set_ylim(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo))
        ax.set_title(k[2:].replace("_", ", "), fontsize=10)
        ax.set_xlabel("theta")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
