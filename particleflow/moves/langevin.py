"""Langevin moves: unadjusted Langevin (ULA) and Metropolis-adjusted Langevin (MALA).

ULA:   x' = x - h grad E(x) + sigma xi,   sigma = sqrt(2 h T) (or ``noise_scale``)
MALA:  y = x - h grad E(x) + sqrt(2 h) xi, accepted with probability
       min(1, exp(E(x) - E(y) + log q(x|y) - log q(y|x))),  q(b|a) = N(b; a - h grad E(a), 2h I)
(Roberts & Tweedie 1996).  ULA is biased by O(h); MALA is exact in law.

On Gaussian and Gaussian-mixture energies with dim <= 8 the step runs in one fused
kernel (``particleflow.kernels.analytic``, chosen by ``fastpaths.mixture_kernel``);
otherwise, and on ``Device("cpu-reference")``, it runs on arrays with the energy's
``value_and_grad``.  Both paths draw the same Philox normals, so they agree
to rounding (tested).
"""
import math
import warnings

import numpy as np

from ..errors import ConvergenceWarning
from ..random import Purpose
from . import fastpaths
from ..checks import positive
from .base import Move
from .precond import as_preconditioner

def per_chain_steps(h, ens):
    """A per-particle step size array [n] on the ensemble's device and dtype."""
    if h.shape != (ens.n,):
        raise ValueError(f"a per-particle step size needs one value per particle: shape ({ens.n},); "
                         f"got {h.shape}")
    return ens.xp.asarray(h, dtype=ens.dtype)


def check_precond(move, ensemble):
    P = move.precond
    if P is not None:
        if P.dim != ensemble.dim:
            raise ValueError(f"the preconditioner of {type(move).__name__} has dimension {P.dim} but "
                             f"ensemble {ensemble.name!r} has dimension {ensemble.dim}")


def _flat(a):
    return a.reshape(-1)


ZERO_ACCEPTANCE_CALLS = 100


def note_acceptance(move, rate):
    """Warn once when a Metropolis move has accepted nothing for ``ZERO_ACCEPTANCE_CALLS``
    calls in a row: its chains are frozen, which no statistic of the run would say."""
    if rate > 0:
        move.zero_acceptance_calls = 0
        return
    move.zero_acceptance_calls = getattr(move, "zero_acceptance_calls", 0) + 1
    if move.zero_acceptance_calls == ZERO_ACCEPTANCE_CALLS:
        h = move.step_size
        h = f"{float(np.exp(np.mean(np.log(h)))):.3g} (geometric mean)" if isinstance(h, np.ndarray) else f"{h:.3g}"
        warnings.warn(f"{type(move).__name__} accepted no proposal in {ZERO_ACCEPTANCE_CALLS} consecutive steps at "
                      f"step size {h}: its chains do not move; lower step_size, or let it adapt (warmup, "
                      "auto_warmup; AdaptStepSize, AutoWarmup)", ConvergenceWarning, stacklevel=5)


def finish_metropolis(move, ens, out, energy, accepted, cache):
    """The end of a Metropolis step (MALA, HMC): the new positions ``out`` replace the
    ensemble's, ``cache`` = (E, grad E) of the accepted states goes into its energy cache
    (None: the fused kernel keeps none), and the acceptance rate and mean energy come
    from one reduction over the per-particle ``accepted`` and ``energy``."""
    move.swap_positions(ens, out)
    if cache is not None:
        ens.store_energy(move.energy, *cache)
    acc_rate, mean_e = ens.particle_mean(ens.xp.stack([accepted, energy], 1))
    note_acceptance(move, float(acc_rate))
    return {"acceptance": float(acc_rate), "mean_energy": float(mean_e)}


class Langevin(Move):
    """Unadjusted Langevin: x <- x - h grad E(x) + sqrt(2 h T) xi.

    Uses the gradient in the ensemble's energy cache when it is valid.

    Parameters
    ----------
    energy : Energy
    step_size : float > 0 (h)
    noise_scale : float >= 0, optional; replaces sqrt(2 h T) as the noise standard
        deviation (the short-run MCMC paper's code uses h = sigma^2 / 2 scaling
        choices of its own)
    temperature : float > 0
    """

    def __init__(self, energy, step_size, noise_scale=None, temperature=1.0):
        super().__init__()
        self.energy = energy
        self.step_size = positive(step_size, "step_size")
        self.temperature = positive(temperature, "temperature")
        if noise_scale is not None:
            if isinstance(noise_scale, bool) or not np.isfinite(noise_scale) or noise_scale < 0:
                raise ValueError(f"noise_scale must be a finite number >= 0; got {noise_scale!r}")
            noise_scale = float(noise_scale)
        self.noise_scale = noise_scale

    @property
    def sigma(self):
        if self.noise_scale is not None:
            return self.noise_scale
        return math.sqrt(2.0 * self.step_size * self.temperature)

    def _step(self, ens, stream, step):
        fl = ens.dtype.type
        h, c = fl(self.step_size), fl(self.sigma)
        out = self.position_buffer(ens)
        mixture = fastpaths.mixture_kernel(self.energy, "ula", ens)
        if mixture is not None:
            launch, (mu, prec, logc) = mixture
            k0, k1 = stream.key(Purpose.LANGEVIN_NOISE)
            launch(ens.n, _flat(ens.x), _flat(out), ens.ids, mu, prec, logc, h, c, step, k0, k1)
        else:
            fast = fastpaths.lookup("langevin_step", ens.x)
            if fast is None or not fast(self, ens, stream, step, h, c, out):
                cached = ens.cached_energy(self.energy)
                g = cached[1] if cached is not None else self.energy.grad(ens.x)
                z = stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype)
                out[...] = ens.x - h * g + c * z.reshape(ens.x.shape)
        self.swap_positions(ens, out)
        return {}


class MALA(Move):
    """Metropolis-adjusted Langevin; reports ``acceptance`` and ``mean_energy``.

    ``precond``: a covariance C (variances [dim], a matrix [dim, dim], or a
    ``Preconditioner``) for the proposal N(x - h C grad E(x), 2 h C); None is C = I.
    ``AdaptStepSize(..., mass="diag"|"dense")`` sets it from the ensemble.  ``step_size``
    may be an array [n], one step size per particle (``AdaptStepSize(..., per_chain=True)``);
    the array path then runs, and ``last_alpha`` holds each proposal's acceptance
    probability.

    On the array path the energy and gradient of the accepted state are stored in
    the ensemble's energy cache, so each step after the first calls the energy's
    ``value_and_grad`` once (at the proposal)."""

    stats_keys = ("acceptance", "mean_energy")

    def __init__(self, energy, step_size, precond=None):
        super().__init__()
        self.energy = energy
        self.step_size = positive(step_size, "step_size")
        self.precond = as_preconditioner(precond)

    def check(self, ensemble):
        super().check(ensemble)
        check_precond(self, ensemble)

    def _step(self, ens, stream, step):
        xp = ens.xp
        fl = ens.dtype.type
        per_chain = isinstance(self.step_size, np.ndarray)
        if per_chain:
            h_row = per_chain_steps(self.step_size, ens)
            h = h_row.reshape((-1,) + (1,) * (ens.x.ndim - 1))
            c = xp.sqrt(fl(2) * h)
        else:
            h = h_row = fl(self.step_size)
            c = fl(math.sqrt(2.0 * self.step_size))
        out = self.position_buffer(ens)
        energy = self.buffer("energy", (ens.n,), ens.dtype, xp)
        accepted = self.buffer("accepted", (ens.n,), ens.dtype, xp)
        mixture = None if (self.precond is not None or per_chain) else \
            fastpaths.mixture_kernel(self.energy, "mala", ens)
        k0, kn = stream.key(Purpose.LANGEVIN_NOISE)
        _, ka = stream.key(Purpose.MH_ACCEPT)
        if mixture is not None:
            launch, (mu, prec, logc) = mixture
            launch(ens.n, _flat(ens.x), _flat(out), energy, accepted, ens.ids, mu, prec, logc,
                   h, c, step, k0, kn, ka)
        elif self.precond is None and not per_chain and (fast := fastpaths.lookup("mala_step", ens.x)) is not None \
                and (res := fast(self, ens, stream, step, h, c, out)) is not None:
            log_alpha, acc, e_new, g_new = res
            self.last_log_alpha = log_alpha
            self.last_alpha = np.exp(np.minimum(log_alpha, fl(0)))
            energy[...] = e_new
            accepted[...] = acc
        else:
            x = ens.x
            axes = tuple(range(1, x.ndim))
            cached = ens.cached_energy(self.energy)
            e, g = cached if cached is not None else self.energy.value_and_grad(x)
            z = stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype).reshape(x.shape)
            P = self.precond
            if P is None:
                y = x - h * g + c * z
                ey, gy = self.energy.value_and_grad(y)
                back = ((x - y + h * gy) ** 2).sum(axes)
            else:
                # whitened coordinates x = L w: w' = w - h L^T g + c z, and the backward
                # residual w - w' + h L^T g' = h L^T (g + g') - c z needs no solve
                n = ens.n
                zf = z.reshape(n, -1)
                hf, cf = (h.reshape(n, 1), c.reshape(n, 1)) if per_chain else (h, c)
                gt = P.transpose(g.reshape(n, -1), xp)
                y = x + P.forward(cf * zf - hf * gt, xp).reshape(x.shape)
                ey, gy = self.energy.value_and_grad(y)
                back = ((hf * (gt + P.transpose(gy.reshape(n, -1), xp)) - cf * zf) ** 2).sum(1)
            log_alpha = e - ey - back / (fl(4) * h_row) + fl(0.5) * (z * z).sum(axes)
            # a proposal whose energy or gradient overflowed has a NaN ratio: it is
            # rejected (NaN < anything is false), and every statistic that feeds an
            # adapter must see probability 0, not NaN
            log_alpha = xp.where(xp.isnan(log_alpha), fl(-np.inf), log_alpha)
            self.last_log_alpha = log_alpha
            self.last_alpha = xp.exp(xp.minimum(log_alpha, fl(0)))
            u = stream.uniform(step, ens.ids, 1, Purpose.MH_ACCEPT, ens.dtype)[:, 0]
            acc = xp.log(u) < log_alpha
            shape = (-1,) + (1,) * (x.ndim - 1)
            out[...] = xp.where(acc.reshape(shape), y, x)
            e_new = xp.where(acc, ey, e)
            g_new = xp.where(acc.reshape(shape), gy, g)
            energy[...] = e_new
            accepted[...] = acc
        return finish_metropolis(self, ens, out, energy, accepted, None if mixture is not None else (e_new, g_new))
