"""``estimator = "dual_ebm"``: paper 001's teacher-student experiment from a config.

    [run]      steps (iterations of Algorithm 1), seed, dtype
    [teacher]  modes = 1 | 2 (angle 1.369 or 2.865 rad between the two teacher neurons),
               angle (overrides modes), weight (-10), beta (1)
    [data]     d (15), n (training samples), n_test (held-out samples for the metrics)
    [model]    neurons (m), particles (N)
    [dual]     alpha, step (s), restart_probability (p_R), mean_weight_cap
    [output]   every (observables), frame_every (positions), checkpoint_every, plot
    [sweep]    optional (any estimator): "key.path" = [values] runs the config once per value

Streams (contract names): observables ``kl``, ``sm``, ``tv``, ``ess`` every
``output.every`` iterations, plus the moves' statistics (restart fraction, mean
weight); ensembles ``particles`` and ``neurons`` every ``frame_every``, ``data`` once.
Results: final kl / sm / tv / ess, ``seconds_per_iteration``, the teacher's neurons.
Runs checkpoint and resume like every run (``particleflow resume``).
"""
import time

import numpy as np

from ..io.config import ConfigError, Field, _positive, _table
from .dual_ebm import DualEBM, Teacher

ANGLES = {1: 1.369, 2: 2.865}           # rad, the authors' monomodal and bimodal teachers

SCHEMA = {"estimator": Field("str", "dual_ebm"), "run": Field("table", {}), "teacher": Field("table", {}),
          "data": Field("table", {}), "model": Field("table", {}), "dual": Field("table", {}),
          "output": Field("table", {})}
RUN = {"steps": Field("int", 1000, lo=1, hi=2 ** 32 - 1), "seed": Field("int", 0, lo=0, hi=2 ** 32 - 1),
       "dtype": Field("str", "float64", choices=("float32", "float64"))}
TEACHER = {"modes": Field("int", 1, choices=(1, 2)), "angle": Field("float", None, lo=0, lo_open=True, hi=3.14159),
           "weight": Field("float", -10.0), "beta": _positive(1.0)}
DATA = {"d": Field("int", 15, lo=2), "n": Field("int", 2000, lo=1), "n_test": Field("int", 5000, lo=10)}
MODEL = {"neurons": Field("int", 64, lo=2), "particles": Field("int", 4000, lo=1)}
DUAL = {"alpha": _positive(20.0), "step": _positive(0.02), "restart_probability": Field("float", 0.0, lo=0, hi=1),
        "mean_weight_cap": _positive(10.0)}
OUTPUT = {"every": Field("int", 10, lo=1), "frame_every": Field("int", 100, lo=1),
          "checkpoint_every": Field("int", 500, lo=1), "plot": Field("bool", True),
          "compression": Field("str", "none", choices=("none", "lzf", "gzip"))}


def validate(raw):
    cfg = _table("", raw, SCHEMA)
    for key, schema in (("run", RUN), ("teacher", TEACHER), ("data", DATA), ("model", MODEL), ("dual", DUAL),
                        ("output", OUTPUT)):
        cfg[key] = _table(key, cfg[key], schema)
    if cfg["teacher"]["weight"] >= 0:
        raise ConfigError(f"teacher.weight must be negative (planted modes); got {cfg['teacher']['weight']}")
    return cfg


def teacher_of(cfg):
    t = cfg["teacher"]
    angle = t["angle"] if t["angle"] is not None else ANGLES[t["modes"]]
    return Teacher(cfg["data"]["d"], angle, t["weight"], t["beta"], seed=cfg["run"]["seed"])


def build_plan(cfg, base_dir=".", restore=False):
    from ..runner import Plan
    teacher = teacher_of(cfg)
    t0 = time.perf_counter()
    data = teacher.sample(cfg["data"]["n"])
    x_test = teacher.sample(cfg["data"]["n_test"], which=1)
    sampling_s = time.perf_counter() - t0
    dt = np.dtype(cfg["run"]["dtype"])
    du = cfg["dual"]
    model = DualEBM(data.astype(dt), cfg["model"]["particles"], cfg["model"]["neurons"], du["alpha"], du["step"],
                    cfg["teacher"]["beta"], du["restart_probability"], du["mean_weight_cap"],
                    seed=cfg["run"]["seed"], dtype=dt, restore=restore)
    model.set_test(x_test, teacher)
    clock = {"t": None, "step": None}

    def observe(sim, last_stats):
        out = model.metrics()
        for slot, st in last_stats.items():
            for k, v in st.items():
                out[f"{slot}/{k}"] = v
        if clock["t"] is None:
            clock["t"], clock["step"] = time.perf_counter(), sim.step
        return out

    def results(sim):
        out = {k: np.asarray(v) for k, v in model.metrics().items()}
        done = sim.step - (clock["step"] or 0)
        if clock["t"] is not None and done > 0:
            out["seconds_per_iteration"] = np.asarray((time.perf_counter() - clock["t"]) / done)
        out["teacher_neurons"] = teacher.theta
        out["teacher_sampling_seconds"] = np.asarray(sampling_s)
        out["step_neurons"] = np.asarray(model.step_neurons)
        out["step_particles"] = np.asarray(model.step_particles)
        return out

    return Plan(model.sim, observe, results, cfg["output"]["frame_every"], cfg["output"]["every"],
                frame_ensembles=["particles", "neurons"])


def summary_lines(run):
    obs = run.observables
    lines = []
    if "kl" in obs:
        steps, kl = obs["kl"].steps, obs["kl"].values
        below = np.nonzero(kl < 0.1)[0]
        first = f"first below 0.1 at iteration {steps[below[0]]}" if below.size else "never below 0.1"
        lines.append(f"kl: start {kl[0]:.4f}, end {kl[-1]:.4f} ({first}); sm: start {obs['sm'].values[0]:.4g}, "
                     f"end {obs['sm'].values[-1]:.4g}; tv end {obs['tv'].values[-1]:.3f}; ess end {obs['ess'].values[-1]:.1f}")
    r = run.results
    if "seconds_per_iteration" in r:
        lines.append(f"{1e3 * float(r['seconds_per_iteration']):.2f} ms per iteration "
                     f"(teacher sampling {float(r['teacher_sampling_seconds']):.1f} s)")
    return lines


def plot(run, png):
    """kl and sm (log scale), tv and ess against iterations (paper 001, Figure 1)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, k, log in zip(axes, ("kl", "sm", "tv", "ess"), (True, True, False, False)):
        o = run.observables[k]
        ax.plot(o.steps, o.values)
        if log:
            ax.set_yscale("log")
        ax.set_title(k)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
