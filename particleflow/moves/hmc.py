"""Hamiltonian Monte Carlo: momentum refresh, leapfrog, Metropolis accept.

p ~ N(0, M) with a diagonal mass M; ``n_leapfrog`` steps of
    p <- p - h/2 grad E(x);  x <- x + h M^-1 p;  p <- p - h/2 grad E(x)
(Stormer-Verlet, time-reversible and volume-preserving), then accept with
probability min(1, exp(H0 - H1)), H = E(x) + p^T M^-1 p / 2 (Neal 2011).  A transition
whose energy error H1 - H0 exceeds ``DIVERGENCE`` or is not finite is divergent (Stan's
rule): the leapfrog left the region where it tracks the Hamiltonian flow, and chains that
diverge there under-sample it.
"""
import math
import numbers

import numpy as np

from ..random import GLOBAL_ID, Purpose
from ..checks import positive
from .base import Move
from . import fastpaths
from .langevin import _flat, check_precond, finish_metropolis, per_chain_steps
from .precond import as_preconditioner
from ..integrators import leapfrog


DIVERGENCE = 1000.0


def count_divergent(ens, log_alpha):
    """Number of divergent transitions (log_alpha = H0 - H1 not > -DIVERGENCE, NaN
    included) over every particle of ``ens`` (every rank)."""
    bad = (~(log_alpha > log_alpha.dtype.type(-DIVERGENCE))).astype(ens.dtype)
    return int(round(float(ens.particle_mean(bad)) * ens.n_global))


class HMC(Move):
    """HMC with a diagonal mass (``mass``: None = identity, a scalar, or a vector
    [dim]) or a preconditioner ``precond`` = C, the inverse mass matrix (variances [dim],
    a covariance [dim, dim] or a ``Preconditioner``: x moves by h L p with C = L L^T and
    p ~ N(0, I)); reports ``acceptance``, ``mean_energy`` and ``divergences`` (the number of
    divergent transitions since the move's first step, over all chains: a running total, so
    a stream that records it every k steps misses none; checkpoints keep it).  ``jitter`` = j draws the step size of
    each step uniformly from h (1 +- j), the same for every chain.  On the array path the
    accepted state's energy and gradient go into the ensemble's energy cache, so a
    step after the first calls ``value_and_grad`` ``n_leapfrog`` times.  ``step_size`` may be
    an array [n] (one per particle, as MALA's)."""

    stats_keys = ("acceptance", "mean_energy", "divergences")

    def __init__(self, energy, step_size, n_leapfrog, mass=None, jitter=0.0, precond=None):
        super().__init__()
        self.energy = energy
        self.step_size = positive(step_size, "step_size")
        if isinstance(jitter, bool) or not isinstance(jitter, numbers.Real) or not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a number in [0, 1); got {jitter!r}")
        self.jitter = float(jitter)
        if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, numbers.Integral) or n_leapfrog < 1:
            raise ValueError(f"n_leapfrog must be an integer >= 1; got {n_leapfrog!r}")
        self.n_leapfrog = int(n_leapfrog)
        if mass is not None:
            m = np.asarray(mass, dtype=np.float64)
            if m.ndim > 1 or not np.isfinite(m).all() or (m <= 0).any():
                raise ValueError("mass must be a positive scalar or a positive vector [dim] (diagonal mass)")
            mass = m
        self.mass = mass
        dim = getattr(energy, "dim", None)
        if mass is not None and mass.ndim == 1 and dim is not None and mass.size != dim:
            raise ValueError(f"mass has {mass.size} entries but the energy has dimension {dim}")
        self.precond = as_preconditioner(precond)
        # set by AdaptStepSize(trajectory="chees"): a trajectory length T replaces
        # n_leapfrog (each step runs ceil(u T / h) leapfrog steps, u uniform on (0, 1), one
        # draw for all chains), and the array path keeps the last proposal for the ChEES
        # gradient
        self.trajectory_length = None
        self.record_proposal = False
        self.max_leapfrog = 1000
        self.divergences = 0
        if mass is not None and self.precond is not None:
            raise ValueError("give mass or precond, not both (precond = C is the mass matrix C^-1)")

    def check(self, ensemble):
        super().check(ensemble)
        if self.mass is not None and self.mass.ndim == 1 and self.mass.size != ensemble.dim:
            raise ValueError(f"mass has {self.mass.size} entries but ensemble {ensemble.name!r} "
                             f"has dimension {ensemble.dim}")
        check_precond(self, ensemble)

    def _mass_vectors(self, ens):
        m = np.ones(ens.dim) if self.mass is None else np.broadcast_to(self.mass, (ens.dim,))
        xp = ens.xp
        return xp.asarray(1.0 / m, dtype=ens.dtype), xp.asarray(np.sqrt(m), dtype=ens.dtype)

    def _step(self, ens, stream, step):
        xp = ens.xp
        fl = ens.dtype.type
        per_chain = isinstance(self.step_size, np.ndarray)
        h = self.step_size
        if self.jitter:
            # one factor per step for every chain, from the step's global draw: a fixed
            # h * L near a multiple of a period of the target resonates (no mixing along
            # that direction); a random h breaks it (Neal 2011, section 5.4.2.2)
            u = float(stream.uniform(step, np.array([GLOBAL_ID]), 1, Purpose.STEP_JITTER, np.float64)[0, 0])
            h = h * (1.0 + self.jitter * (2.0 * u - 1.0))
        n_leapfrog = self.n_leapfrog
        if self.trajectory_length is not None:
            if per_chain:
                raise ValueError("an adapted trajectory length needs one step size for the ensemble")
            u = float(stream.uniform(step, np.array([GLOBAL_ID]), 1, Purpose.TRAJECTORY, np.float64)[0, 0])
            n_leapfrog = int(min(self.max_leapfrog, max(1, math.ceil(u * self.trajectory_length / h))))
        self.last_n_leapfrog = n_leapfrog
        h = per_chain_steps(h, ens)[:, None] if per_chain else fl(h)
        inv_mass, sqrt_mass = self._mass_vectors(ens)
        out = self.position_buffer(ens)
        energy = self.buffer("energy", (ens.n,), ens.dtype, xp)
        accepted = self.buffer("accepted", (ens.n,), ens.dtype, xp)
        k0, kp = stream.key(Purpose.HMC_MOMENTUM)
        _, ka = stream.key(Purpose.MH_ACCEPT)
        mixture = None if (self.precond is not None or per_chain or self.record_proposal) else \
            fastpaths.mixture_kernel(self.energy, "hmc", ens)
        if mixture is not None:
            launch, (mu, prec, logc) = mixture
            scratch = [self.buffer(name, (ens.n * ens.dim,), ens.dtype, xp) for name in ("a", "p", "g")]
            scratch += [self.buffer(name, (ens.n,), ens.dtype, xp) for name in ("e0", "h0")]
            launch(ens.n, _flat(ens.x), _flat(out), energy, accepted, ens.ids, mu, prec, logc,
                   h, n_leapfrog, inv_mass, sqrt_mass, step, k0, kp, ka, *scratch)
            log_alpha = self.last_log_alpha = scratch[-1]        # the kernel leaves H0 - H1 there
        else:
            x = ens.x
            shape = x.shape
            xf = x.reshape(ens.n, -1)
            cached = ens.cached_energy(self.energy)
            e0, g = cached if cached is not None else self.energy.value_and_grad(x)
            g0 = g
            g = g.reshape(ens.n, -1)
            P = self.precond
            if P is not None:
                # whitened momentum p ~ N(0, I): p <- p - h/2 L^T g, x <- x + h L p
                inv_mass, sqrt_mass = (lambda v: P.forward(v, xp)), fl(1)
                g = P.transpose(g, xp)
            p = sqrt_mass * stream.normal(step, ens.ids, ens.dim, Purpose.HMC_MOMENTUM, ens.dtype)
            kinetic = (lambda p: (p * p).sum(1)) if P is not None else (lambda p: (p * p * inv_mass).sum(1))
            h0 = e0 + fl(0.5) * kinetic(p)
            half = fl(0.5)
            raw = [None]

            def grad(a, k):
                e, g = self.energy.value_and_grad(a.reshape(shape))
                g = raw[0] = g.reshape(ens.n, -1)
                return e, (g if P is None else P.transpose(g, xp))

            # a diverging trajectory overflows: its proposal gets probability 0 below (and is
            # counted by pf.mcmc's divergence check), so numpy's overflow warnings are noise
            with np.errstate(over="ignore", invalid="ignore"):
                a, p, e, g = leapfrog(xf.copy(), p, g, grad, h, n_leapfrog, inv_mass)
                g = raw[0]
                h1 = e + half * kinetic(p)
                log_alpha = h0 - h1
            u = stream.uniform(step, ens.ids, 1, Purpose.MH_ACCEPT, ens.dtype)[:, 0]
            log_alpha = xp.where(xp.isnan(log_alpha), fl(-np.inf), log_alpha)     # overflow: probability 0
            acc = xp.log(u) < log_alpha
            self.last_log_alpha = log_alpha
            self.last_alpha = xp.exp(xp.minimum(log_alpha, fl(0)))
            if self.record_proposal:           # start, proposal, its velocity M^-1 p, duration
                velocity = inv_mass(p) if callable(inv_mass) else inv_mass * p
                self.last_proposal = (xf, a, velocity, float(n_leapfrog * float(h)))
            out[...] = xp.where(acc[:, None], a, xf).reshape(shape)
            e_new = xp.where(acc, e, e0)
            g_new = xp.where(acc[:, None], g, g0.reshape(ens.n, -1)).reshape(shape)
            energy[...] = e_new
            accepted[...] = acc
        stats = finish_metropolis(self, ens, out, energy, accepted, None if mixture is not None else (e_new, g_new))
        self.divergences += count_divergent(ens, log_alpha)
        stats["divergences"] = self.divergences
        return stats

    def state_dict(self):
        return {"divergences": np.int64(self.divergences)}

    def load_state_dict(self, state):
        self.divergences = int(state.get("divergences", 0))
