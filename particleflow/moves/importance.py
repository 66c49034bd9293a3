"""Importance reweighting and the independent Metropolis-Hastings sampler
(paper 003, Section 6).

Energies are negative log densities up to constants: the importance weight of x for
target p ~ exp(-E_p) and proposal q ~ exp(-E_q) is log w(x) = E_q(x) - E_p(x) + const.

* ``Reweight(target, proposal)``: log_weights += E_q(x) - E_p(x) (incremental
  weights; the particles are assumed drawn from q).  Reports the ESS and
  ``log_mean_increment`` = log mean_i exp(E_q(x_i) - E_p(x_i)), the importance
  estimate of log(Z_p / Z_q) when both energies are normalised (Geyer 1994).
* ``IndependentMH(target, proposal)``: propose y ~ q independently of x, accept with
  min(1, w(y) / w(x)).  ``proposal`` needs ``value(x)`` and
  ``sample(stream, step, ids, dtype)`` (``Gaussian`` and ``GaussianMixture`` have both).
"""
import numpy as np

from ..random import Purpose
from .base import Move


def _log_mean_exp(a, ens):
    """log mean_i exp(a_i) over every particle of ``ens`` (every rank), max-shifted."""
    m, mean = ens.shifted_mean_exp(a)
    return float(m + np.log(mean))


def _check_energy(e, what):
    if not (hasattr(e, "value") and callable(e.value)):
        raise ValueError(f"{what} must be an energy with a value(x) method; got {type(e).__name__}")


class Reweight(Move):
    stats_keys = ("ess", "log_mean_increment")

    def __init__(self, target, proposal):
        super().__init__()
        _check_energy(target, "target")
        _check_energy(proposal, "proposal")
        self.energy = target
        self.proposal = proposal

    def _step(self, ens, stream, step):
        xp = ens.xp
        inc = (self.proposal.value(ens.x) - self.energy.value(ens.x)).astype(ens.dtype)
        if ens.log_weights is None:
            ens.log_weights = xp.zeros(ens.n, dtype=ens.dtype)
        ens.log_weights = ens.log_weights + inc
        return {"ess": ens.ess(), "log_mean_increment": _log_mean_exp(inc, ens)}


class IndependentMH(Move):
    stats_keys = ("acceptance",)

    def __init__(self, target, proposal):
        super().__init__()
        _check_energy(target, "target")
        _check_energy(proposal, "proposal")
        if not hasattr(proposal, "sample"):
            raise ValueError("proposal must provide sample(stream, step, ids, dtype); "
                             "Gaussian and GaussianMixture do")
        self.energy = target
        self.proposal = proposal

    def _log_w(self, x):
        return self.proposal.value(x) - self.energy.value(x)

    def _step(self, ens, stream, step):
        xp = ens.xp
        y = self.proposal.sample(stream, step, ens.ids, ens.dtype).reshape(ens.x.shape)
        log_ratio = self._log_w(y) - self._log_w(ens.x)
        u = stream.uniform(step, ens.ids, 1, Purpose.MH_ACCEPT, np.float64)[:, 0]
        acc = xp.log(u) < log_ratio
        shape = (-1,) + (1,) * (ens.x.ndim - 1)
        ens.x = xp.ascontiguousarray(xp.where(acc.reshape(shape), y, ens.x))
        return {"acceptance": float(ens.particle_mean(acc))}
