"""Step-size adaptation from the ensemble's acceptance (dual averaging).

``AdaptStepSize(move, target, warmup)`` wraps a MALA or HMC move.  During the first
``warmup`` calls it sets the move's step size by Nesterov's dual averaging as in
Hoffman & Gelman (2014, NUTS paper, Algorithm 5 and eq. 6), driven by the *ensemble's*
mean acceptance of each call (thousands of chains at once, so the signal is nearly
noise-free):

    H_m = (1 - 1/(m + t0)) H_{m-1} + (target - a_m) / (m + t0)
    log h_m = mu - sqrt(m) / gamma * H_m,               mu = log(10 h_0)
    log hbar_m = m^-kappa log h_m + (1 - m^-kappa) log hbar_{m-1}

with gamma = 0.05, t0 = 10, kappa = 0.75 (their defaults).  After warm-up the step size
is frozen at hbar, so the sampling phase is a valid (time-homogeneous) Markov chain.
One step size for the ensemble; the acceptance is a global reduction, so the adapted
value is the same for any thread or rank count, and it is checkpointed.
"""
import math

import numpy as np

from .base import Move

GAMMA, T0, KAPPA = 0.05, 10.0, 0.75


class AdaptStepSize(Move):
    """Parameters
    ----------
    move : a move with a ``step_size`` attribute that reports ``acceptance`` (MALA, HMC)
    target : target mean acceptance in (0, 1) (0.57 for MALA, 0.65-0.8 for HMC)
    warmup : number of calls that adapt; later calls use the frozen step size
    """

    def __init__(self, move, target, warmup):
        super().__init__()
        if not isinstance(move, Move) or not hasattr(move, "step_size") or \
                "acceptance" not in getattr(move, "stats_keys", ()):
            raise ValueError("AdaptStepSize needs a move with a step size that reports its acceptance "
                             f"(MALA or HMC); got {move!r}")
        if not 0 < float(target) < 1:
            raise ValueError(f"target acceptance must be in (0, 1); got {target!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1 (calls that adapt); got {warmup!r}")
        self.move, self.target, self.warmup = move, float(target), warmup
        self.energy = move.energy
        self.stats_keys = tuple(move.stats_keys) + ("step_size", "adapting")
        self._reset(move.step_size)

    def _reset(self, h0):
        self.m, self.H, self.mu = 0, 0.0, math.log(10.0 * h0)
        self.log_hbar = math.log(h0)

    def check(self, ensemble):
        self.move.check(ensemble)

    def _step(self, ens, stream, step):
        adapting = self.m < self.warmup
        h_used = self.move.step_size
        stats = dict(self.move(ens, stream, step))
        if adapting:
            self.m += 1
            m = self.m
            a = min(1.0, max(0.0, float(stats["acceptance"])))
            self.H = (1 - 1 / (m + T0)) * self.H + (self.target - a) / (m + T0)
            log_h = self.mu - math.sqrt(m) / GAMMA * self.H
            w = m ** -KAPPA
            self.log_hbar = w * log_h + (1 - w) * self.log_hbar
            self.move.step_size = math.exp(log_h) if self.m < self.warmup else math.exp(self.log_hbar)
        stats["step_size"] = h_used
        stats["adapting"] = 1.0 if adapting else 0.0
        return stats

    @property
    def step_size(self):
        return self.move.step_size

    def state_dict(self):
        return {"m": np.int64(self.m), "H": np.float64(self.H), "mu": np.float64(self.mu),
                "log_hbar": np.float64(self.log_hbar), "step_size": np.float64(self.move.step_size),
                "inner": self.move.state_dict()}

    def load_state_dict(self, state):
        self.m, self.H, self.mu = int(state["m"]), float(state["H"]), float(state["mu"])
        self.log_hbar = float(state["log_hbar"])
        self.move.step_size = float(state["step_size"])
        if state.get("inner"):
            self.move.load_state_dict(state["inner"])

    def __repr__(self):
        return f"AdaptStepSize({self.move!r}, target={self.target}, warmup={self.warmup})"
