"""``estimator = "importance_ml"``: paper 003's Section 7 experiment from a config.

    [run]        seed, runs (replicas of the proposal draws; 1000 in the paper)
    [model]      family = "gaussian_std", theta_true, n_data     p(x | theta) = N(0, theta^2)
    [grid]       theta_min, theta_max, points                    where J_GL is evaluated
    [proposals.<name>]  mean, std, std_per_theta                 q = N(mean, (std + std_per_theta * theta)^2)
    [sampling]   M = [100, 5000]
    [fit]        routes, runs, iterations, learning_rate, theta0, average_last, max_step, scheme
    [output]     every, checkpoint_every, compression, plot

A step is one gradient-descent iteration of every fit: the fit runs of each route,
proposal and M form an ensemble (``<route>_<q>_M<M>``, one particle per run) moved by
``ImportanceDescent``, so the study shows progress, checkpoints and resumes like
any run.  The J_GL curves over the grid do not depend on the fits: they are computed
when the experiment is built (again on resume, from the same seed).

Results (contract): /results/theta_grid [G], /results/J_true [G], /results/J_<q>_M<M>
[runs, G] for every proposal and M; also ess_<q>_M<M> [runs, G] (weights' ESS per
theta), w2_<q> [G] (closed-form E_q[w^2], inf where it diverges), theta_mle,
theta_hat_<route>_<q>_M<M> [fit runs].  Observables: fit/<route>_<q>_M<M>/theta_mean
and theta_sd over fit runs, per iteration.  The observations are stored as the
ensemble ``data`` (one frame).
"""
import time

import numpy as np

from ..config import ConfigError, Field, output_section, positive, run_section, table
from ..energies import GaussianStd
from ..ensemble import Ensemble
from ..estimators.importance import (ROUTES, GaussianProposal, ImportanceDescent, ImportanceML,
                                     weight_second_moment)
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .base import Experiment
from .common import pyplot, save

DATA_STREAM = StreamBlock.INIT

MODEL = {"family": Field("str", "gaussian_std", choices=("gaussian_std",), doc="p(x | theta) = N(0, theta^2)"),
         "theta_true": positive(2.0, doc="theta of the observations"),
         "n_data": Field("int", 100, lo=1, doc="number of observations N")}
GRID = {"theta_min": positive(0.5, doc="grid start"), "theta_max": positive(5.0, doc="grid end"),
        "points": Field("int", 91, lo=2, doc="grid points G")}
PROPOSAL = {"mean": Field("float", 2.0, doc="proposal mean"), "std": positive(2.0, doc="proposal sd at theta = 0"),
            "std_per_theta": Field("float", 0.0, lo=0, doc="sd grows by this per unit theta")}
SAMPLING = {"M": Field("list", [100, 5000], doc="proposal draws per run (each value is one study)")}
FIT = {"routes": Field("list", list(ROUTES), doc="gradient routes: is, imh, is_resample"),
       "runs": Field("int", 25, lo=0, doc="fit runs per route, proposal and M"),
       "iterations": Field("int", 60, lo=1, doc="gradient-descent iterations (the run's steps)"),
       "learning_rate": positive(1.0, doc="theta <- theta - lr grad J / N"),
       "theta0": positive(1.5, doc="starting theta"),
       "average_last": Field("int", 30, lo=0, doc="Polyak-Ruppert average over the last iterates"),
       "max_step": positive(0.5, doc="clip |update| to this"),
       "scheme": Field("str", "systematic", choices=("multinomial", "residual", "stratified", "systematic"),
                       doc="resampling scheme of the is_resample route")}


class ImportanceStudy(Experiment):
    name = "importance_ml"
    description = "paper 003: importance-sampling maximum likelihood, J_GL bands and fits (Figures 1-2)"
    sections = {"run": run_section(steps=None, dtype=None,
                                   runs=Field("int", 1000, lo=1, hi=2 ** 24 - 1,
                                              doc="replicas of the proposal draws")),
                "model": MODEL, "grid": GRID, "sampling": SAMPLING, "fit": FIT,
                "output": output_section(every=1, checkpoint_every=10)}
    free = {"proposals": Field("table", None, doc="[proposals.<name>] tables (default q1 and q2 of the paper)")}
    tables = {"proposals.<name>": PROPOSAL}

    def check(self, cfg):
        g = cfg["grid"]
        if g["theta_min"] >= g["theta_max"]:
            raise ConfigError(f"grid.theta_min ({g['theta_min']}) must be < grid.theta_max ({g['theta_max']})")
        props = cfg["proposals"] or {"q1": {}, "q2": {"std_per_theta": 1.0}}
        cfg["proposals"] = {name: table(f"proposals.{name}", t, PROPOSAL) for name, t in props.items()}
        s = cfg["sampling"]
        if not s["M"] or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in s["M"]):
            raise ConfigError(f"sampling.M must be a non-empty array of integers >= 1; got {s['M']!r}")
        need = cfg["run"]["runs"] * max(s["M"]) * 8
        if need > 4 * 2 ** 30:
            raise ConfigError(f"run.runs x max(sampling.M) needs {need / 2 ** 30:.1f} GiB of common random numbers "
                              "(limit 4 GiB); reduce run.runs or sampling.M")
        f = cfg["fit"]
        bad = [r for r in f["routes"] if r not in ROUTES]
        if bad:
            raise ConfigError(f"fit.routes: unknown route {bad[0]!r}; valid routes: {', '.join(ROUTES)}")
        if f["average_last"] > f["iterations"]:
            raise ConfigError(f"fit.average_last ({f['average_last']}) must be <= fit.iterations ({f['iterations']})")
        if f["runs"] > cfg["run"]["runs"]:
            raise ConfigError(f"fit.runs ({f['runs']}) must be <= run.runs ({cfg['run']['runs']})")

    def steps(self, cfg):
        return cfg["fit"]["iterations"]

    def memory_bytes(self, cfg):
        runs, G = cfg["run"]["runs"], cfg["grid"]["points"]
        studies = len(cfg["proposals"]) * len(cfg["sampling"]["M"])
        f = cfg["fit"]
        # per study: common random numbers [runs, M], J and ESS [runs, G], IMH chains;
        # plus one chunk of the objective's draws
        return sum(8 * (runs * M + 2 * runs * G + f["runs"] * M * 2) for M in cfg["sampling"]["M"]) \
            * len(cfg["proposals"]) + 8 * 4 * (1 << 18) + 8 * G * (4 + 2 * studies)

    def build(self, cfg, base_dir=".", restore=False):
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
        sim = Simulation({"data": Ensemble(x, name="data")}, seed=seed)
        sim.trajectory(["data"], every=None)
        fits = []
        for q, spec in cfg["proposals"].items():
            for M in cfg["sampling"]["M"]:
                est = ImportanceML(energy, x, proposal_from(spec), M, runs=runs, seed=seed)
                J = np.empty((runs, grid.size))
                ess = np.empty((runs, grid.size))
                for j, t in enumerate(grid):
                    J[:, j], _, ess[:, j] = est.objective({"std": np.asarray(t)})
                results[f"J_{q}_M{M}"] = J
                results[f"ess_{q}_M{M}"] = ess
                if not f["runs"]:
                    continue
                for route in f["routes"]:
                    key = f"{route}_{q}_M{M}"
                    theta0 = {"std": np.asarray(f["theta0"])}
                    mv = ImportanceDescent(est, route, range(f["runs"]), theta0, f["iterations"],
                                           f["learning_rate"], f["average_last"], f["scheme"], f["max_step"])
                    sim.add_ensemble(key, Ensemble(np.full((f["runs"], 1), f["theta0"]), name=key))
                    sim.schedule(mv, key, name=f"descent_{key}")
                    sim.observe(f"fit/{key}", _theta_mean_sd(key), every=cfg["output"]["every"], initial=False)
                    fits.append((key, mv))
        for q, spec in cfg["proposals"].items():
            results[f"w2_{q}"] = np.array([weight_second_moment(t, spec["mean"], spec["std"] + spec["std_per_theta"] * t)
                                           for t in grid])
        sim.context.update(results=results, fits=fits, t0=t0)
        return sim

    def results(self, sim, cfg):
        out = dict(sim.context["results"])
        for key, mv in sim.context["fits"]:
            out[f"theta_hat_{key}"] = np.array([float(p["std"]) for p in mv.estimate(sim.ensembles[key])])
        out["elapsed_s"] = time.perf_counter() - sim.context["t0"]
        return out

    def summary(self, run, cfg):
        return summary(run.results, cfg)

    def plot(self, run, png):
        return plot(run, png)


def _theta_mean_sd(key):
    def fn(sim):
        # mean and sd over the fit runs, computed as numpy does along axis 0 of a
        # [runs, k] array (sequential sums), so they equal the per-iteration
        # statistics of the stacked trajectories bitwise
        v = sim.ensembles[key].x[:, 0]
        two = np.stack([v, v], 1)
        return {"theta_mean": two.mean(0)[0], "theta_sd": two.std(0)[0]}
    return fn


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


def summary(results, cfg):
    """Lines for the terminal: the numbers behind Figures 1-2."""
    grid = results["theta_grid"]
    lines = [f"theta_MLE = sqrt(mean x^2) = {float(results['theta_mle']):.4f}   ({float(results['elapsed_s']):.1f} s)"]
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
    plt = pyplot()
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
        q, m = k[2:].rsplit("_M", 1)
        ax.set_title(f"proposal {q}, M = {m} samples per estimate", fontsize=10)
        ax.set_xlabel("theta")
        ax.set_ylabel("objective J(theta)")
    axes[0][0].legend(fontsize=8)
    return save(fig, png)
