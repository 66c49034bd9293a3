"""``estimator = "dual_ebm"``: paper 001's teacher-student experiment from a config.

    [run]      steps (iterations of Algorithm 1), seed, dtype
    [teacher]  modes = 1 | 2 (angle 1.369 or 2.865 rad between the two teacher neurons),
               angle (overrides modes), weight (-10), beta (1)
    [data]     d (15), n (training samples), n_test (held-out samples for the metrics)
    [model]    neurons (m), particles (N)
    [dual]     alpha, step (s), restart_probability (p_R), mean_weight_cap
    [output]   every (observables), frame_every (positions), checkpoint_every, plot
    [sweep]    optional (any experiment): "key.path" = [values] runs the config once per value

The algorithm is ``particleflow.estimators.DualEBM``; this module adds the paper's
teacher (exact samples by rejection), the metrics and the reporting.

Streams (contract names): observables ``kl``, ``sm``, ``tv``, ``ess`` every
``output.every`` iterations, plus the moves' statistics (restart fraction, mean
weight); ensembles ``particles`` and ``neurons`` every ``frame_every``, ``data`` once.
Results: final kl / sm / tv / ess, ``seconds_per_iteration``, the teacher's neurons.

Teacher facts from the authors' MATLAB code (EBMdualhighd.m in CDEnrich/dual_ebms):
the teacher has J = 2 neurons with weights -10 and beta = 1; KL and SM are measured
on held-out teacher samples with energies shifted by their minimum.  Teacher samples
are exact: rejection against the uniform measure on the sphere with envelope
exp(beta max_x(-f*(x))), where for two teacher neurons with equal negative weights w*
and angle phi, max_x(-f*) = (|w*| / 2) max(2 cos(phi / 2), 1) (both ReLUs active at
the bisector, or one neuron alone).
"""
import math
import time

import numpy as np

from ..config import ConfigError, Field, output_section, positive, run_section
from ..energies.f1 import relu_network
from ..estimators.dual_ebm import DualEBM, unit_rows
from ..moves.euler_maruyama import project_to_sphere_tangent
from ..random import Purpose, Stream, StreamBlock
from ..status import phase
from .base import Experiment
from .common import pyplot, save

TEACHER_STREAM = StreamBlock.TEACHER  # +0 directions, +1 + split the samples of a split
TRAIN, TEST = 0, 1
ANGLES = {1: 1.369, 2: 2.865}           # rad, the authors' monomodal and bimodal teachers

TEACHER = {"modes": Field("int", 1, choices=(1, 2), doc="1: angle 1.369 rad (monomodal), 2: 2.865 rad (bimodal)"),
           "angle": Field("float", None, lo=0, lo_open=True, hi=3.14159, doc="angle between the teacher neurons"),
           "weight": Field("float", -10.0, doc="teacher neurons' output weight (negative)"),
           "beta": positive(1.0, doc="inverse temperature")}
DATA = {"d": Field("int", 15, lo=2, doc="dimension (data on S^(d-1))"),
        "n": Field("int", 2000, lo=1, doc="training samples"),
        "n_test": Field("int", 5000, lo=10, doc="held-out samples for the metrics")}
MODEL = {"neurons": Field("int", 64, lo=2, doc="student neurons m"),
         "particles": Field("int", 4000, lo=1, doc="generated particles N")}
DUAL = {"alpha": positive(20.0, doc="time-scale ratio s_theta / s_X"), "step": positive(0.02, doc="step s"),
        "restart_probability": Field("float", 0.0, lo=0, hi=1, doc="p_R"),
        "mean_weight_cap": positive(10.0, doc="F1-norm cap on the mean neuron weight")}


class Teacher:
    """f*(x) = (1/J) sum_k w*_k relu(<theta*_k, x>) with J = 2 neurons at ``angle``."""

    def __init__(self, d, angle, weight=-10.0, beta=1.0, seed=0):
        if d < 2:
            raise ValueError(f"d must be >= 2; got {d}")
        if not 0 < angle < math.pi:
            raise ValueError(f"teacher angle must be in (0, pi) rad; got {angle}")
        if not weight < 0:
            raise ValueError(f"teacher weight must be negative (a planted mode); got {weight}")
        u = Stream(seed, TEACHER_STREAM).normal(0, np.arange(2), d, Purpose.INIT)
        t1 = u[0] / np.linalg.norm(u[0])
        v = u[1] - (u[1] @ t1) * t1
        v /= np.linalg.norm(v)
        self.theta = np.stack([t1, math.cos(angle) * t1 + math.sin(angle) * v])
        self.weights = np.full(2, float(weight))
        self.d, self.angle, self.beta, self.seed = d, float(angle), float(beta), seed
        self.max_neg_energy = abs(weight) / 2 * max(2 * math.cos(angle / 2), 1.0)

    def value_and_grad(self, x):
        return relu_network(np.ascontiguousarray(x, dtype=np.float64), self.theta, self.weights / 2)

    def value(self, x):
        return self.value_and_grad(x)[0]

    def sample(self, n, which=TRAIN, batch=1 << 16):
        """n exact samples of exp(-beta f*) on S^{d-1}; ``which`` selects an independent
        stream (training set or held-out set)."""
        stream = Stream(self.seed, TEACHER_STREAM + 1 + which)
        out, have, b = [], 0, 0
        while have < n:
            ids = np.arange(batch)
            x = unit_rows(stream.normal(b, ids, self.d, Purpose.PROPOSAL))
            u = stream.uniform(b, ids, 1, Purpose.MH_ACCEPT)[:, 0]
            # accept with probability exp(-beta (f*(x) + max(-f*))) <= 1
            keep = np.log(u) < -self.beta * (self.value(x) + self.max_neg_energy)
            out.append(x[keep])
            have += int(keep.sum())
            b += 1
            # the acceptance rate so far predicts the work left: refuse hopeless setups
            if b >= 16 and (have == 0 or (n - have) / have * b > 4096):
                raise ValueError(f"the teacher's rejection sampler accepts {have} of {b * batch} proposals: "
                                 f"{n} samples would take too long; use a smaller |teacher.weight| or "
                                 "teacher.beta (the target is too concentrated for exact sampling)")
        return np.concatenate(out)[:n]


def kl_teacher_to_student(f_s, f_t, beta=1.0):
    """Paper 001, Section 5: log mean exp(-beta f_s + beta f*) + mean(beta f_s - beta f*) over
    held-out teacher samples (energies shifted by their minimum for stability)."""
    fs = beta * (f_s - f_s.min())
    ft = beta * (f_t - f_t.min())
    a = ft - fs
    mx = a.max()
    return float(mx + math.log(np.exp(a - mx).mean()) + (fs - ft).mean())


def score_gap(x, g_s, g_t):
    """mean || P_x (grad f_s - grad f*) ||^2, P_x the tangent projection at x."""
    diff = project_to_sphere_tangent(x, g_s - g_t)
    return float((diff * diff).sum(1).mean())


def metrics(model, x_test, ft, gt):
    """dict(kl, sm, tv, ess) of the student at its current neurons, against held-out
    teacher samples ``x_test`` with teacher values ``ft`` and gradients ``gt``."""
    fs, gs = model.energy.value_and_grad(x_test)
    neurons = model.sim.ensembles["neurons"]
    return {"kl": kl_teacher_to_student(fs.astype(np.float64), ft, model.beta),
            "sm": score_gap(x_test.astype(np.float64), gs.astype(np.float64), gt),
            "tv": float(np.exp(neurons.log_weights.astype(np.float64)).mean()),
            "ess": float(neurons.ess())}


def teacher_of(cfg):
    t = cfg["teacher"]
    angle = t["angle"] if t["angle"] is not None else ANGLES[t["modes"]]
    return Teacher(cfg["data"]["d"], angle, t["weight"], t["beta"], seed=cfg["run"]["seed"])


class DualTeacherStudent(Experiment):
    name = "dual_ebm"
    shards = True
    description = "paper 001: dual / primal training of an F1-EBM against a planted teacher on the sphere"
    sections = {"run": run_section(steps=1000, steps_doc="iterations of Algorithm 1"), "teacher": TEACHER,
                "data": DATA, "model": MODEL, "dual": DUAL,
                "output": output_section(every=10, frame_every=100, checkpoint_every=500)}

    def check(self, cfg):
        if cfg["teacher"]["weight"] >= 0:
            raise ConfigError(f"teacher.weight must be negative (planted modes); got {cfg['teacher']['weight']}")

    def memory_bytes(self, cfg):
        d, n, n_test = cfg["data"]["d"], cfg["data"]["n"], cfg["data"]["n_test"]
        N, m = cfg["model"]["particles"], cfg["model"]["neurons"]
        # data (float64 samples and the run's copy), held-out set with teacher and
        # student values and gradients, particles with buffers, neurons, one batch of
        # the teacher's rejection sampler
        return 8 * d * (3 * n + 5 * n_test + 6 * N + 6 * m + 3 * (1 << 16))

    def build(self, cfg, base_dir=".", restore=False):
        teacher = teacher_of(cfg)
        t0 = time.perf_counter()
        with phase(f"sampling the teacher: {cfg['data']['n']} training and {cfg['data']['n_test']} held-out points "
                   "by rejection"):
            data = teacher.sample(cfg["data"]["n"])
            x_test = teacher.sample(cfg["data"]["n_test"], which=TEST)
        sampling_s = time.perf_counter() - t0
        dt = np.dtype(cfg["run"]["dtype"])
        du = cfg["dual"]
        model = DualEBM(data.astype(dt), cfg["model"]["particles"], cfg["model"]["neurons"], du["alpha"],
                        du["step"], cfg["teacher"]["beta"], du["restart_probability"], du["mean_weight_cap"],
                        seed=cfg["run"]["seed"], dtype=dt, restore=restore)
        x_test = np.ascontiguousarray(x_test, dtype=dt)
        ft, gt = teacher.value_and_grad(x_test.astype(np.float64))
        sim = model.sim
        out = cfg["output"]
        clock = sim.context
        clock.update(model=model, teacher=teacher, sampling_s=sampling_s, t=None, step=None)

        def observe(sim):
            m = metrics(model, x_test, ft, gt)
            if clock["t"] is None:
                clock["t"], clock["step"] = time.perf_counter(), sim.step
            return m

        sim.observe(None, observe, every=out["every"])
        sim.observe_moves(out["every"])
        sim.trajectory(["data"], every=None)
        sim.trajectory(["particles", "neurons"], every=out["frame_every"])
        sim.context["metrics"] = lambda: metrics(model, x_test, ft, gt)
        return sim

    def results(self, sim, cfg):
        c = sim.context
        out = {k: np.asarray(v) for k, v in c["metrics"]().items()}
        done = sim.step - (c["step"] or 0)
        if c["t"] is not None and done > 0:
            out["seconds_per_iteration"] = np.asarray((time.perf_counter() - c["t"]) / done)
        out["teacher_neurons"] = c["teacher"].theta
        out["teacher_sampling_seconds"] = np.asarray(c["sampling_s"])
        out["step_neurons"] = np.asarray(c["model"].step_neurons)
        out["step_particles"] = np.asarray(c["model"].step_particles)
        return out

    def summary(self, run, cfg):
        return summary_lines(run)

    def plot(self, run, png):
        return plot(run, png)


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


PANELS = {"kl": ("KL divergence, teacher to model", "KL (held-out teacher samples)"),
          "sm": ("score gap to the teacher", "mean |P (grad f - grad f*)|^2"),
          "tv": ("total mass of the neuron measure", "mean neuron weight"),
          "ess": ("effective sample size of the neuron weights", "ESS (neurons)")}


def plot(run, png):
    """kl and sm (log scale), tv and ess against iterations (paper 001, Figure 1)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, k, log in zip(axes, ("kl", "sm", "tv", "ess"), (True, True, False, False)):
        o = run.observables[k]
        ax.plot(o.steps, o.values)
        if log:
            ax.set_yscale("log")
        title, ylabel = PANELS[k]
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    return save(fig, png)
