"""Dual training of F1-EBMs (paper 001, Algorithm 1) as a schedule over three ensembles.

Energy (Eq. 9): f(x) = (1/m) sum_j sigma_j w_j relu(<theta_j, x>), p(x) ~ exp(-beta f(x))
on the sphere S^{d-1}.  One iteration of Algorithm 1 is three moves:

1. ``Restart(particles <- data, p_R)``: each generated particle is replaced by a
   uniformly chosen data point with probability p_R (Section 4: p_R = 0 is maximum
   likelihood, restarting every step is score matching);
2. ``EulerMaruyama(particles, drift = -grad f, diffusion = 1/beta, sphere)``:
   X <- X - s_X grad f(X) + sqrt(2 s_X / beta) zeta, tangent-projected and renormalised;
3. ``WassersteinFisherRao(neurons, F_t, sphere, mean-weight cap)`` with
   F_t(theta) = mean_i relu(<theta, X_i>) - mean_a relu(<theta, x_a>):
   theta_j <- theta_j + s_theta sigma_j grad F_t(theta_j),  w_j <- w_j exp(s_theta sigma_j F_t(theta_j)),
   w <- w * cap / mean(w) when mean(w) > cap (the F1-norm constraint).

Step rule (Section 5): the fast process gets step s and the slow one
min(alpha, 1/alpha) s, i.e. s_theta = s min(alpha, 1), s_X = s min(1, 1/alpha), so
s_theta / s_X = alpha (alpha << 1: primal, like persistent contrastive divergence;
alpha >> 1: dual).

Facts taken from the authors' MATLAB code (EBMdualhighd.m in CDEnrich/dual_ebms):
particles start as copies of the training set; neurons start uniform on the sphere
with w = 1 and signs half -1, half +1; the teacher has J = 2 neurons with weights -10
and beta = 1; the mean-weight cap is 10; KL and SM are measured on held-out teacher
samples with energies shifted by their minimum.

Teacher samples are exact: rejection against the uniform measure on the sphere with
envelope exp(beta max_x(-f*(x))), where for two teacher neurons with equal negative
weights w* and angle phi, max_x(-f*) = (|w*| / 2) max(2 cos(phi / 2), 1) (both
ReLUs active at the bisector, or one neuron alone).
"""
import math

import numpy as np

from ..energies.f1 import F1Network
from ..ensemble import Ensemble
from ..moves import EulerMaruyama, Restart, WassersteinFisherRao
from ..moves.euler_maruyama import project_to_sphere_tangent
from ..moves.wfr import relu_network
from ..random import Purpose, Stream
from ..simulation import Simulation

TEACHER_STREAM = 1 << 22          # stream ids of the teacher, its samples and the student's init
TRAIN, TEST = 0, 1


def unit_rows(z):
    return z / np.sqrt((z * z).sum(1, keepdims=True))


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
            if b > 100000:
                raise RuntimeError("teacher rejection sampler accepts almost nothing; check beta and the weights")
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


class DualEBM:
    """Algorithm 1 on given data: ``sim`` holds the ensembles ``data``, ``particles`` and
    ``neurons``; ``metrics()`` computes kl, sm, tv, ess against a teacher's held-out set.

    Parameters
    ----------
    data : [n, d] points on the sphere
    n_particles, n_neurons : N and m
    alpha : time-scale ratio s_theta / s_X;  step : s;  beta : inverse temperature
    restart_probability : p_R;  mean_weight_cap : F1-norm cap (10 in the authors' code)
    """

    def __init__(self, data, n_particles, n_neurons, alpha, step=0.02, beta=1.0, restart_probability=0.0,
                 mean_weight_cap=10.0, seed=0, dtype=np.float64, restore=False):
        data = np.asarray(data, dtype=dtype)
        if data.ndim != 2 or data.shape[1] < 2:
            raise ValueError(f"data must have shape (n, d) with d >= 2; got {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("data contains NaN or Inf values")
        if not np.allclose((data.astype(np.float64) ** 2).sum(1), 1.0, atol=1e-5):
            raise ValueError("data must lie on the unit sphere (rows of norm 1)")
        if n_particles < 1 or n_neurons < 1:
            raise ValueError("n_particles and n_neurons must be >= 1")
        if not alpha > 0 or not step > 0 or not beta > 0:
            raise ValueError(f"alpha, step and beta must be > 0; got {alpha}, {step}, {beta}")
        n, d = data.shape
        self.alpha, self.step, self.beta = float(alpha), float(step), float(beta)
        self.step_neurons = self.step * min(self.alpha, 1.0)
        self.step_particles = self.step * min(1.0, 1.0 / self.alpha)
        if restore:
            particles = np.zeros((n_particles, d), dtype)
            theta = unit_rows(np.ones((n_neurons, d))).astype(dtype)
        else:
            particles = data[np.arange(n_particles) % n]               # copies of the training set
            theta = unit_rows(Stream(seed, TEACHER_STREAM + 10).normal(0, np.arange(n_neurons), d,
                                                                      Purpose.INIT)).astype(dtype)
        signs = np.where(np.arange(n_neurons) < n_neurons // 2, -1.0, 1.0).astype(dtype)
        ens = {"data": Ensemble(data, name="data"),
               "particles": Ensemble(particles, name="particles"),
               "neurons": Ensemble(theta, log_weights=np.zeros(n_neurons, dtype), signs=signs, name="neurons")}
        self.energy = F1Network(ens["neurons"])
        sim = Simulation(ens, seed=seed)
        sim.schedule(Restart(ens["data"], restart_probability), "particles", name="restart")
        sim.schedule(EulerMaruyama(self.energy, self.step_particles, 1.0 / self.beta, manifold="sphere"),
                     "particles", name="euler_maruyama")
        sim.schedule(WassersteinFisherRao(self._potential, self.step_neurons, mean_weight_cap=mean_weight_cap,
                                          manifold="sphere"), "neurons", name="wfr")
        self.sim = sim
        self._test = None

    def _potential(self, neurons):
        e = self.sim.ensembles
        return self.energy.potential(e["particles"].x, e["data"].x)

    def set_test(self, x_test, teacher):
        """Held-out teacher samples for the metrics (teacher values cached)."""
        x_test = np.ascontiguousarray(x_test, dtype=self.sim.ensembles["data"].dtype)
        ft, gt = teacher.value_and_grad(x_test.astype(np.float64))
        self._test = (x_test, ft, gt)

    def metrics(self):
        """dict(kl, sm, tv, ess) at the current neurons."""
        if self._test is None:
            raise ValueError("call set_test(x_test, teacher) before metrics()")
        x, ft, gt = self._test
        fs, gs = self.energy.value_and_grad(x)
        neurons = self.sim.ensembles["neurons"]
        return {"kl": kl_teacher_to_student(fs.astype(np.float64), ft, self.beta),
                "sm": score_gap(x.astype(np.float64), gs.astype(np.float64), gt),
                "tv": float(np.exp(neurons.log_weights.astype(np.float64)).mean()),
                "ess": float(neurons.ess())}

    def run(self, n_iterations, every=10, callback=None):
        """Advance ``n_iterations``; returns {metric: [values]} recorded every ``every``."""
        hist = {k: [] for k in ("step", "kl", "sm", "tv", "ess")}
        for _ in range(int(n_iterations)):
            self.sim.run(1)
            if self.sim.step % every == 0:
                m = self.metrics()
                hist["step"].append(self.sim.step)
                for k, v in m.items():
                    hist[k].append(v)
                if callback is not None:
                    callback(self.sim.step, m)
        return {k: np.asarray(v) for k, v in hist.items()}
