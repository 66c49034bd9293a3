"""``estimator = "logz"``: the normalising constant of an energy by adaptive tempered SMC
or AIS (``particleflow.estimators.annealing``), repeated with independent streams.

    [run]        steps (independent repeats), seed, dtype
    [energy]     as the sample experiment's (gaussian, gaussian_mixture, or from_run = a
                 run file whose saved energy, e.g. a trained network, is normalised)
    [annealing]  method = "smc" | "ais", particles, cess (SMC), temperatures (AIS),
                 mcmc_steps, step_size, base = "gaussian" (base_scale: its sd) | "box"
                 (box = [lo, hi]: uniform base, log Z of exp(-E) over [lo, hi]^d)
    [output]     every, checkpoint_every, plot

Every step is one independent annealing run; its log Z estimate fills a row of the
ensemble ``estimates`` (a resumed run continues them).  Observable ``log_z`` (that run's
estimate), ``temperatures``.  Results (contract names): ``log_z`` (mean over repeats),
``log_z_se`` (standard error over repeats), ``log_z_runs`` [R]; ``log_z_exact`` for the
families with a closed form over R^d (a Gaussian: (d/2) log 2 pi - (1/2) log det P; a
mixture of normalised components: 0); ``log_z_quadrature`` for a box in dimension 1 or 2
(midpoint rule on a 1000-point-per-axis grid), the check for a learned energy.
"""
import math
import os

import numpy as np

from ..config import ConfigError, Field, output_section, positive, run_section
from ..ensemble import Ensemble
from ..estimators.annealing import anneal
from ..moves import Move
from ..simulation import Simulation
from .base import Experiment
from .sample import ENERGY, build_energy, check_energy, resolve_energy_path
from .common import pyplot, save

ANNEALING = {"method": Field("str", "smc", choices=("smc", "ais"), doc="adaptive tempered SMC or AIS"),
             "particles": Field("int", 2000, lo=2, hi=10 ** 8, doc="particles per run"),
             "cess": Field("float", 0.95, lo=0, lo_open=True, hi=0.999,
                           doc="SMC: conditional ESS kept per temperature (below 1: 1 would never move beta)"),
             "temperatures": Field("int", 100, lo=1, hi=100000, doc="AIS: equally spaced temperatures"),
             "mcmc_steps": Field("int", 3, lo=0, hi=1000, doc="MALA steps per temperature"),
             "step_size": positive(0.5, doc="initial MALA step size (then follows the acceptance)"),
             "base_scale": positive(1.0, doc="sd of the Gaussian base N(0, s^2 I)"),
             "base": Field("str", "gaussian", choices=("gaussian", "box"), doc="the path's base distribution"),
             "box": Field("list", None, doc="base = 'box': [lo, hi], the uniform base on [lo, hi]^d")}
QUADRATURE_POINTS = 1000


def box_of(cfg):
    a = cfg["annealing"]
    if a["base"] != "box":
        if a["box"] is not None:
            raise ConfigError("annealing.box is used with annealing.base = 'box' only")
        return None
    b = a["box"]
    if not (isinstance(b, list) and len(b) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in b) and math.isfinite(b[0])
            and math.isfinite(b[1]) and b[0] < b[1]):
        raise ConfigError(f"annealing.base = 'box' needs annealing.box = [lo, hi] with finite lo < hi; got {b!r}")
    return float(b[0]), float(b[1])


def quadrature_log_z(energy, box, m=QUADRATURE_POINTS):
    """log of the integral of exp(-E) over [lo, hi]^d, d <= 2, by the midpoint rule."""
    lo, hi = box
    d = energy.dim
    h = (hi - lo) / m
    axis = lo + h * (np.arange(m) + 0.5)
    grid = axis[:, None] if d == 1 else np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    e = np.concatenate([np.asarray(energy.value(grid[i:i + 100000]), dtype=np.float64)
                        for i in range(0, len(grid), 100000)])
    top = (-e).max()
    return float(top + math.log(np.exp(-e - top).sum()) + d * math.log(h))


def exact_log_z(energy, cfg):
    e = cfg["energy"]
    if e["kind"] is None or cfg["annealing"]["base"] == "box":
        return math.nan                  # a learned energy or a sum, or the integral over a box only
    T = e["temperature"] or 1.0
    if e["kind"] == "gaussian":          # exp(-E / T) is the Gaussian of precision P / T
        P = np.asarray(e["precision"], dtype=float) / T
        return 0.5 * P.shape[0] * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(P)[1]
    return 0.0 if T == 1.0 else math.nan  # the mixture's components are normalised densities


class Anneal(Move):
    """Row ``step`` of the ensemble <- (log Z, temperatures) of repeat ``step``."""

    stats_keys = ("log_z", "temperatures")

    def __init__(self, energy, cfg):
        super().__init__()
        self.energy, self.cfg = energy, cfg

    def _step(self, ens, stream, step):
        a, seed = self.cfg["annealing"], self.cfg["run"]["seed"]
        betas = None if a["method"] == "smc" else np.linspace(0, 1, a["temperatures"] + 1)[1:]
        run = anneal(self.energy, a["particles"], seed=seed, repeat=step, base_scale=a["base_scale"], betas=betas,
                     cess=a["cess"], mcmc_steps=a["mcmc_steps"], step_size=a["step_size"],
                     max_temperatures=max(1000, a["temperatures"] if betas is not None else 100000),
                     dtype=np.dtype(self.cfg["run"]["dtype"]), box=box_of(self.cfg))
        x = np.array(ens.x)
        x[step] = (run["log_z"], len(run["betas"]) - 1)
        ens.x = x
        return {"log_z": float(run["log_z"]), "temperatures": float(len(run["betas"]) - 1)}


class LogZ(Experiment):
    name = "logz"
    description = "log Z of an energy by adaptive tempered SMC or AIS, with a standard error over repeats"
    sections = {"run": run_section(steps=8, dtype="float64", steps_doc="independent repeats"), "energy": ENERGY,
                "annealing": ANNEALING, "output": output_section(every=1, checkpoint_every=1)}
    required = ("energy",)

    def check(self, cfg):
        check_energy(cfg["energy"])
        box_of(cfg)

    def resolve(self, cfg, base_dir):
        resolve_energy_path(cfg["energy"], base_dir)

    def memory_bytes(self, cfg):
        a = cfg["annealing"]
        return 40 * a["particles"] * 8 * 8 + 8 * 8 * a["temperatures"]

    def build(self, cfg, base_dir=".", restore=False):
        energy = build_energy(cfg["energy"])
        R = cfg["run"]["steps"]
        sim = Simulation({"estimates": Ensemble(np.zeros((R, 2)), name="estimates")}, seed=cfg["run"]["seed"])
        sim.schedule(Anneal(energy, cfg), "estimates", name="anneal")
        sim.observe_moves(cfg["output"]["every"])
        sim.trajectory([], every=None)
        sim.context["energy"] = energy
        return sim

    def energy(self, run, cfg):
        return build_energy(cfg["energy"], os.path.dirname(os.path.abspath(run.path)))

    def results(self, sim, cfg):
        est = np.asarray(sim.ensembles["estimates"].x)[:sim.step, 0]
        out = {"log_z_runs": est, "log_z": np.asarray(est.mean()),
               "log_z_se": np.asarray(est.std(ddof=1) / math.sqrt(len(est)) if len(est) > 1 else np.nan)}
        exact = exact_log_z(sim.context["energy"], cfg)
        if math.isfinite(exact):
            out["log_z_exact"] = np.asarray(exact)
        box, energy = box_of(cfg), sim.context["energy"]
        if box is not None and energy.dim <= 2:
            out["log_z_quadrature"] = np.asarray(quadrature_log_z(energy, box))
        return out

    def summary(self, run, cfg):
        r = run.results
        lz, se = float(r["log_z"]), float(r["log_z_se"])
        line = (f"log Z = {lz:.5f} +- {se:.5f} ({cfg['annealing']['method']}, {len(r['log_z_runs'])} repeats of "
                f"{cfg['annealing']['particles']} particles)")
        for key, what in (("log_z_exact", "exact"), ("log_z_quadrature", "grid quadrature")):
            if key in r:
                ref = float(r[key])
                line += f"; {what} {ref:.5f}, off by {abs(lz - ref) / se:.1f} s.e."
        return [line]

    def plot(self, run, png):
        plt = pyplot()
        r = run.results
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(np.asarray(r["log_z_runs"]), "o", label="repeats")
        ax.axhline(float(r["log_z"]), color="C1", label="mean")
        for key, what, ls in (("log_z_exact", "exact", "--"), ("log_z_quadrature", "grid quadrature", ":")):
            if key in r:
                ax.axhline(float(r[key]), color="k", ls=ls, label=what)
        ax.set_xlabel("repeat (independent estimate)")
        ax.set_ylabel("log Z")
        method = {"smc": "tempered SMC", "ais": "AIS"}[self.validate(run.config)["annealing"]["method"]]
        ax.set_title(f"log normalising constant by {method}, {len(r['log_z_runs'])} repeats")
        ax.legend(fontsize=8)
        return save(fig, png)
