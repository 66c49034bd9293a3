"""One call for people who embed the engine: ``pf.mcmc(energy, x0, draws=1000)``.

Many chains (the rows of ``x0``) are warmed up by ``moves.AutoWarmup`` (annealing from
a Gaussian fitted to the starting cloud, then step-size, dense mass and, for HMC,
ChEES trajectory tuning with stuck-chain rescue), then sampled with everything frozen.
The result carries the draws and the diagnostics that say whether to trust them; a
failed diagnostic is a ``ConvergenceWarning`` naming it, never silence.

Diagnostics (``MCMCResult``):

* ``rhat``: rank-normalised split R-hat per coordinate (Vehtari et al. 2021).  Chains
  that do not cross between separated modes have a large split R-hat even when the
  ensemble holds the modes in the right proportions, so it is reported, not used to warn.
* ``rhat_nested``: nested R-hat (Margossian et al. 2024) over ``superchains`` contiguous
  groups of chains.  With ``warmup="auto"`` each group is an independent annealing run
  (resampling never crosses groups), so the groups disagree when the annealing's answer
  is not reproducible, e.g. when resampling noise has drifted the masses of modes that
  the chains cannot cross between: the diagnostic for many short chains, warned on
  above 1.01.
* ``ess_bulk``, ``ess_tail``: Vehtari et al.'s ESS over all chains.
* ``n_stuck``: chains that moved in fewer than 10 % as many draws as the median chain
  (or in none) while sampling; ``warmup_replaced`` counts the chains the tuning phase
  replaced (reported, not warned on).
* ``divergences`` (HMC): transitions with a non-finite or > 1000 energy error.
"""
import math
import numbers
import time
import warnings

import numpy as np

from .analysis.metrics import diagnose
from .backend import to_numpy
from .energies.analytic import Energy, FromCallable
from .ensemble import Ensemble
from .errors import ConvergenceWarning
from .moves.adapt import AdaptStepSize
from .moves.hmc import HMC
from .moves.langevin import MALA
from .moves.warmup import AutoWarmup
from .simulation import Simulation

SAMPLERS = ("mala", "hmc")
WARMUPS = ("auto", "tune")
MAX_DRAW_BYTES = 8 * 2 ** 30


class MCMCResult:
    """Draws and diagnostics of ``mcmc``.

    Attributes: ``positions`` [draws, chains, *event] (numpy), ``rhat``, ``rhat_nested``,
    ``ess_bulk``, ``ess_tail`` (per coordinate, flattened event), ``acceptance`` (mean
    over sampling), ``step_size``, ``divergences`` (count, HMC), ``n_stuck``, ``log_z``
    (the annealing's estimate of log of the integral of exp(-E), else None),
    ``gradients`` (gradient evaluations per chain, warm-up included), ``warmup_gradients``,
    ``warmup_replaced`` (chains replaced while tuning), ``energies`` [draws, chains],
    ``seconds`` (wall time of warm-up and sampling), ``warnings`` (list of str)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def mean(self):
        return self.positions.reshape(self.positions.shape[0] * self.positions.shape[1], -1).mean(0)

    def to_inferencedata(self):
        """An ``arviz.InferenceData`` (the 'arviz' extra): posterior ``x`` [chain, draw, *event],
        sample_stats ``lp`` = -E, and the run's diagnostics as attributes."""
        try:
            import arviz
        except ImportError:
            raise ValueError("to_inferencedata needs the 'arviz' extra: pip install 'particleflow[arviz]'") from None
        post = {"x": np.swapaxes(self.positions, 0, 1)}
        stats = {"lp": np.swapaxes(-self.energies, 0, 1)} if self.energies is not None else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="More chains")
            return arviz.from_dict(posterior=post, sample_stats=stats,
                                   attrs={"sampler": self.sampler, "warnings": "; ".join(self.warnings)})

    def summary(self):
        lines = [f"{self.positions.shape[1]} chains x {self.positions.shape[0]} draws ({self.sampler}), "
                 f"acceptance {self.acceptance:.3f}, step size {self.step_size:.4g}, "
                 f"{self.gradients:.0f} gradients per chain",
                 f"max split R-hat {np.max(self.rhat):.4f}, max nested R-hat {np.max(self.rhat_nested):.4f}, "
                 f"min ESS bulk {np.min(self.ess_bulk):.0f}, min ESS tail {np.min(self.ess_tail):.0f}, "
                 f"stuck chains {self.n_stuck}, divergences {self.divergences}"]
        if self.log_z is not None:
            lines.append(f"log Z {self.log_z:.4f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __repr__(self):
        return f"MCMCResult({self.positions.shape[1]} chains x {self.positions.shape[0]} draws, " \
               f"{len(self.warnings)} warnings)"


def _int(value, what, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}; got {value!r}")
    return int(value)


def _as_energy(energy, dim):
    if isinstance(energy, Energy):
        if energy.dim is not None and energy.dim != dim:
            raise ValueError(f"energy is defined on dimension {energy.dim} but x0 has dimension {dim}")
        return energy
    if callable(energy):
        return FromCallable(value_and_grad=energy, dim=dim)
    raise ValueError(f"energy must be a particleflow Energy or a callable x -> (E [n], grad E [n, d]); "
                     f"got {type(energy).__name__}")


def _check_x0(x0):
    x = np.asarray(to_numpy(x0)) if not isinstance(x0, np.ndarray) else x0
    if x.ndim < 2 or x.shape[0] < 1 or int(np.prod(x.shape[1:])) < 1:
        raise ValueError(f"x0 must have shape (chains, *event) with at least 2 chains; got {np.shape(x0)}")
    if x.dtype not in (np.float32, np.float64):
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"x0 must be a float array; got dtype {x.dtype}")
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(x.shape[0], -1))).any(1).sum())
        raise ValueError(f"x0 has NaN or Inf in {bad} of its {x.shape[0]} rows; give finite starting points")
    if x.shape[0] < 2:
        raise ValueError(f"x0 must hold at least 2 chains (rows); got {x.shape[0]}")
    return np.ascontiguousarray(x)


def build_sampler(energy, dim, sampler, warmup, tune, groups=4):
    """The warm-up move for ``sampler`` ("mala" | "hmc") and ``warmup`` ("auto" | "tune")."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}; got {warmup!r}")
    if sampler == "mala":
        move = MALA(energy, 0.1 * dim ** (-1.0 / 3.0))
    else:
        move = HMC(energy, 0.1 * dim ** (-0.25), 10)
    if warmup == "auto":
        return AutoWarmup(move, tune=tune, groups=groups)
    return AdaptStepSize(move, 0.75 if sampler == "hmc" else 0.57, tune, mass="dense",
                         trajectory="chees" if sampler == "hmc" else None)


def _warmup_done(move):
    return move.done if isinstance(move, AutoWarmup) else move.m >= move.warmup


def mcmc(energy, x0, draws=1000, warmup="auto", sampler="mala", seed=0, thin=1, tune=300, superchains=4,
         max_warmup_calls=2000):
    """Sample exp(-E) with many chains; returns an ``MCMCResult``.

    Parameters
    ----------
    energy : a particleflow ``Energy``, or a callable ``x [n, d] -> (E [n], grad E [n, d])``
    x0 : array [chains, *event]: the starting cloud.  With ``warmup="auto"`` it sets where
        the warm-up looks (a Gaussian with its mean and covariance is the annealing's
        start, so make it cover the target generously); with ``"tune"`` the chains start
        there and only the step size, mass and trajectory adapt.
    draws : draws kept per chain (after thinning)
    warmup : "auto" (anneal, then tune) or "tune"
    sampler : "mala" or "hmc"
    seed : int, the Philox seed: the same seed and inputs give bitwise the same draws
    thin : keep every ``thin``-th state
    tune : calls of the tuning phase
    superchains : groups of chains for nested R-hat; with ``warmup="auto"`` each is an
        independent annealing run (contiguous rows, sizes differing by at most one)
    max_warmup_calls : a bound on the annealing + tuning calls
    """
    draws = _int(draws, "draws", 1)
    thin = _int(thin, "thin", 1)
    tune = _int(tune, "tune", 10)
    seed = _int(seed, "seed", 0)
    x = _check_x0(x0)
    chains, dim = x.shape[0], int(np.prod(x.shape[1:]))
    nbytes = draws * chains * dim * x.dtype.itemsize
    if nbytes > MAX_DRAW_BYTES:
        raise ValueError(f"draws x chains x dimension = {draws} x {chains} x {dim} needs {nbytes / 2 ** 30:.1f} GiB "
                         f"of draws (limit {MAX_DRAW_BYTES / 2 ** 30:.0f} GiB); lower draws or chains, or raise thin")
    if draws < 4:
        raise ValueError(f"draws must be >= 4 for the diagnostics (R-hat, ESS); got {draws}")
    energy = _as_energy(energy, dim)
    superchains = _int(superchains, "superchains", 2)
    if chains < 2 * superchains:
        raise ValueError(f"x0 holds {chains} chains; {superchains} superchains need at least {2 * superchains}")
    move = build_sampler(energy, dim, sampler, warmup, tune, superchains)
    # (the annealing checks its own starts; "tune" starts at x0)
    if warmup == "tune" and not np.isfinite(to_numpy(energy.value(x))).any():
        raise ValueError("the energy is not finite at any row of x0 (NaN or Inf everywhere); check the energy")
    ens = Ensemble(x, name="chains")
    sim = Simulation({"chains": ens}, seed=seed).schedule(move, "chains", name="sampler")
    t0 = time.perf_counter()
    warm_grads = 0.0
    while not _warmup_done(move):
        if sim.step >= max_warmup_calls:
            raise ValueError(f"the warm-up did not finish in {max_warmup_calls} calls; raise max_warmup_calls")
        sim.run(1)
        warm_grads += _step_gradients(sim.slots[0].last, sampler)
    if isinstance(move, AutoWarmup):
        warm_grads = move.gradients
    grads = warm_grads
    out = np.empty((draws, chains) + x.shape[1:], dtype=x.dtype)
    energies = np.empty((draws, chains), dtype=x.dtype)
    acc = []
    # HMC reports a running total of divergences: those of the draws are its growth from here
    before = int(sim.slots[0].last.get("divergences", 0))
    for k in range(draws):
        for _ in range(thin):
            sim.run(1)
            acc.append(sim.slots[0].last["acceptance"])
            grads += _step_gradients(sim.slots[0].last, sampler)
        out[k] = to_numpy(ens.x)
        cached = ens.cached_energy(energy)
        energies[k] = to_numpy(cached[0]) if cached is not None else to_numpy(energy.value(ens.x))
    divergences = int(sim.slots[0].last.get("divergences", 0)) - before
    seconds = time.perf_counter() - t0
    return _result(out, energies, move, sampler, acc, divergences, grads, warm_grads, seconds, superchains)


def _step_gradients(stats, sampler):
    """Gradient evaluations per chain of the call that returned ``stats``."""
    return 1.0 if sampler == "mala" else float(stats.get("n_leapfrog", 0.0))


def _result(out, energies, move, sampler, acc, divergences, grads, warm_grads, seconds, superchains):
    rhat, nested, bulk, tail, stuck, warns = diagnose(out, superchains, divergences)
    auto = isinstance(move, AutoWarmup)
    log_z = move.log_z if auto and math.isfinite(move.log_z) else None
    inner = move.move
    step = inner.step_size
    res = MCMCResult(positions=out, energies=energies, rhat=rhat, rhat_nested=nested, ess_bulk=bulk, ess_tail=tail,
                     acceptance=float(np.mean(acc)), step_size=float(np.mean(step)), divergences=int(divergences),
                     n_stuck=stuck, warmup_replaced=int(move.n_stuck) if auto else 0, log_z=log_z,
                     gradients=grads, warmup_gradients=warm_grads, seconds=seconds, warnings=warns, sampler=sampler)
    if sampler == "hmc" and auto:
        res.trajectory_length = float(inner.trajectory_length)
    for w in warns:
        warnings.warn(w, ConvergenceWarning, stacklevel=3)
    return res
