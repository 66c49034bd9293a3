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
with w = 1 and signs half -1, half +1; the mean-weight cap is 10.  The paper's
teacher-student experiment (teacher, metrics) is ``particleflow.experiments.dual_ebm``.
"""
import numpy as np

from ..energies.f1 import F1Network
from ..ensemble import Ensemble
from ..moves import EulerMaruyama, Restart, WassersteinFisherRao
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation



def unit_rows(z):
    return z / np.sqrt((z * z).sum(1, keepdims=True))


class DualEBM:
    """Algorithm 1 on given data: ``sim`` is a Simulation of the ensembles ``data``,
    ``particles`` and ``neurons`` with the schedule restart -> euler_maruyama -> wfr;
    ``energy`` is the student F1 network (its neurons are the ``neurons`` ensemble).

    Parameters
    ----------
    data : [n, d] points on the sphere
    n_particles, n_neurons : N and m
    alpha : time-scale ratio s_theta / s_X;  step : s;  beta : inverse temperature
    restart_probability : p_R;  mean_weight_cap : F1-norm cap (10 in the authors' code)
    restore : placeholder positions (a checkpoint overwrites them)
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
            theta = unit_rows(Stream(seed, StreamBlock.STUDENT_INIT).normal(0, np.arange(n_neurons), d,
                                                                Purpose.INIT)).astype(dtype)
        signs = np.where(np.arange(n_neurons) < n_neurons // 2, -1.0, 1.0).astype(dtype)
        ens = {"data": Ensemble(data, name="data"),
               "particles": Ensemble(particles, name="particles"),
               "neurons": Ensemble(theta, log_weights=np.zeros(n_neurons, dtype), signs=signs, name="neurons")}
        self.energy = F1Network(ens["neurons"])
        sim = Simulation(ens, seed=seed)
        sim.replicate("data", "neurons")    # every particle's energy needs every neuron
        sim.schedule(Restart(ens["data"], restart_probability), "particles", name="restart")
        sim.schedule(EulerMaruyama(self.energy, self.step_particles, 1.0 / self.beta, manifold="sphere"),
                     "particles", name="euler_maruyama")
        sim.schedule(WassersteinFisherRao(self._potential, self.step_neurons, mean_weight_cap=mean_weight_cap,
                                          manifold="sphere"), "neurons", name="wfr")
        self.sim = sim

    def _potential(self, neurons):
        e = self.sim.ensembles
        return self.energy.potential(e["particles"], e["data"])
