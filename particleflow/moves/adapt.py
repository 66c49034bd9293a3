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
is frozen, so the sampling phase is a valid (time-homogeneous) Markov chain.
One step size for the ensemble; the acceptance is a global reduction, so the adapted
value is the same for any thread or rank count, and it is checkpointed.

``mass="diag"|"dense"`` also adapts the move's preconditioner (the inverse mass matrix
of HMC, the proposal covariance of MALA) to the covariance of the ensemble itself, the
cross-chain estimate of ChEES and MEADS (Hoffman, Radul & Sountsov 2021; Hoffman &
Sountsov 2022) instead of one chain's history: thousands of chains at one step are
thousands of draws.  The warm-up is split as Stan's: a first 15 % where only the step
size adapts, then windows of doubling length up to 70 %, at the end of each of which
the preconditioner is re-estimated (``precond.ensemble_covariance``) and dual averaging
restarts from the current step size, then the step size alone.

The last 20 % of any warm-up of 10 calls or more replaces dual averaging by a
decaying-gain root search on log h (``AdaptStepSize._robbins_monro``).
"""
import math

import numpy as np

from ..backend import to_numpy
from .base import Move
from .precond import KINDS, Preconditioner, ensemble_covariance

GAMMA, T0, KAPPA = 0.05, 10.0, 0.75
RM_DECAY = 0.6


class AdaptStepSize(Move):
    """Parameters
    ----------
    move : a move with a ``step_size`` attribute that reports ``acceptance`` (MALA, HMC)
    target : target mean acceptance in (0, 1) (0.57 for MALA, 0.65-0.8 for HMC)
    warmup : number of calls that adapt; later calls use the frozen step size
    mass : None, "diag" or "dense": also adapt the move's preconditioner from the
        ensemble's covariance (MALA and HMC take one)
    per_chain : one step size per particle, each adapted to its own acceptance
        probabilities (for ensembles started over-dispersed, where chains in high-curvature
        regions reject every move at the ensemble's step size).  A particle keeps its
        step size through the run, so resampling or restarts should not run during the
        warm-up; the streamed ``step_size`` is the geometric mean over particles.
    trajectory : None or "chees" (HMC only): also adapt the trajectory length T = h L by
        the ChEES criterion (``ChEES`` below); streamed as ``trajectory_length``
    """

    def __init__(self, move, target, warmup, mass=None, per_chain=False, trajectory=None):
        super().__init__()
        if not isinstance(move, Move) or not hasattr(move, "step_size") or \
                "acceptance" not in getattr(move, "stats_keys", ()):
            raise ValueError("AdaptStepSize needs a move with a step size that reports its acceptance "
                             f"(MALA or HMC); got {move!r}")
        if not 0 < float(target) < 1:
            raise ValueError(f"target acceptance must be in (0, 1); got {target!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1 (calls that adapt); got {warmup!r}")
        if mass is not None:
            if mass not in KINDS:
                raise ValueError(f"mass adaptation must be None or one of {KINDS}; got {mass!r}")
            if not hasattr(move, "precond"):
                raise ValueError(f"mass adaptation needs a move with a preconditioner (MALA, HMC); got {move!r}")
            if getattr(move, "mass", None) is not None:
                raise ValueError("mass adaptation replaces the HMC's fixed mass; drop mass=")
        self.move, self.target, self.warmup, self.mass = move, float(target), warmup, mass
        self.per_chain = bool(per_chain)
        if trajectory not in (None, "chees"):
            raise ValueError(f"trajectory adaptation must be None or 'chees'; got {trajectory!r}")
        self.chees = None
        if trajectory == "chees":
            if not hasattr(move, "trajectory_length"):
                raise ValueError(f"trajectory = 'chees' adapts an HMC's trajectory length; got {move!r}")
            if self.per_chain:
                raise ValueError("trajectory = 'chees' needs one step size for the ensemble; drop per_chain")
            self.chees = ChEES(move, warmup)
        self.updates = mass_windows(warmup) if mass else ()
        self.energy = move.energy
        self.stats_keys = tuple(move.stats_keys) + ("step_size", "adapting") + \
            (("trajectory_length", "n_leapfrog") if trajectory else ())
        self.m, self.rm_sum, self.rm_count = 0, 0.0, 0
        self.da_end = warmup - (warmup // 5 if warmup >= 10 else 0)
        self._restart(move.step_size)

    def _restart(self, h0):
        """Dual averaging from step size h0 (its iteration count k starts again)."""
        self.k, self.H, self.mu = 0, 0.0 * np.log(h0), np.log(10.0 * h0)
        self.log_hbar = np.log(h0)

    def check(self, ensemble):
        self.move.check(ensemble)

    def _step(self, ens, stream, step):
        adapting = self.m < self.warmup
        if self.per_chain and not isinstance(self.move.step_size, np.ndarray):
            self.move.step_size = np.full(ens.n, float(self.move.step_size))
            self._restart(self.move.step_size)
            self.rm_sum = np.zeros(ens.n)
        h_used = self.move.step_size
        T_used = getattr(self.move, "trajectory_length", None)
        stats = dict(self.move(ens, stream, step))
        if adapting:
            self.m += 1
            if self.per_chain:
                a = to_numpy(self.move.last_alpha).astype(np.float64)
                a = np.where(np.isfinite(a), np.clip(a, 0.0, 1.0), 0.0)      # overflow counts as 0
            else:
                a = float(stats["acceptance"])
                a = min(1.0, max(0.0, a)) if math.isfinite(a) else 0.0
            if self.chees is not None:
                self.chees.update(ens, self.m, self.warmup)
            if self.m <= self.da_end:
                self._dual_averaging(a)
                if self.m in self.updates:
                    self.move.precond = ensemble_covariance(ens, self.mass)
                    self._restart(self.move.step_size)
            else:
                self._robbins_monro(a)
        if self.per_chain:                                        # geometric mean over every rank
            h_used = math.exp(float(ens.particle_mean(ens.xp.asarray(np.log(h_used)))))
        stats["step_size"] = h_used
        stats["adapting"] = 1.0 if adapting else 0.0
        if self.chees is not None:
            stats["trajectory_length"] = T_used
            stats["n_leapfrog"] = float(self.move.last_n_leapfrog)
        return stats

    def _dual_averaging(self, a):
        self.k += 1
        k = self.k
        self.H = (1 - 1 / (k + T0)) * self.H + (self.target - a) / (k + T0)
        log_h = self.mu - math.sqrt(k) / GAMMA * self.H
        w = k ** -KAPPA
        self.log_hbar = w * log_h + (1 - w) * self.log_hbar
        self._set(log_h if self.m < self.da_end else self.log_hbar)

    def _set(self, log_h):
        self.move.step_size = np.exp(log_h) if self.per_chain else math.exp(log_h)

    def _robbins_monro(self, a):
        """The last part of the warm-up: log h <- log h + (a - target) / j^0.6, and the
        frozen value is the mean of log h over the second half of these iterations.
        Dual averaging's hbar is a weighted mean of iterates that swing widely (its gain
        is made for one chain's 0/1 acceptances); where acceptance falls steeply with h,
        as for HMC near its stability limit, the acceptance at hbar misses the target
        (0.62 or 0.81 for 0.7 on a Gaussian).  The ensemble's acceptance is nearly
        noise-free, so a decaying-gain root search on it converges."""
        j = self.m - self.da_end
        log_h = np.log(self.move.step_size) + (a - self.target) / j ** RM_DECAY
        n = self.warmup - self.da_end
        if j > n // 2:
            self.rm_sum = self.rm_sum + log_h
            self.rm_count += 1
        self._set(self.rm_sum / self.rm_count if self.m == self.warmup else log_h)

    @property
    def step_size(self):
        return self.move.step_size

    @property
    def precond(self):
        return getattr(self.move, "precond", None)

    def state_dict(self):
        P = self.precond
        f = np.asarray if self.per_chain else np.float64
        return {"m": np.int64(self.m), "k": np.int64(self.k), "H": f(self.H),
                "mu": f(self.mu), "log_hbar": f(self.log_hbar),
                "step_size": f(self.move.step_size),
                "rm_sum": f(self.rm_sum), "rm_count": np.int64(self.rm_count),
                "precond": np.zeros(0) if P is None else np.array(P.cov),
                "chees": {} if self.chees is None else self.chees.state_dict(),
                "inner": self.move.state_dict()}

    def load_state_dict(self, state):
        f = (lambda v: np.array(v, dtype=np.float64)) if np.ndim(state["step_size"]) else float
        self.m, self.k, self.rm_count = int(state["m"]), int(state["k"]), int(state["rm_count"])
        self.H, self.mu, self.log_hbar = f(state["H"]), f(state["mu"]), f(state["log_hbar"])
        self.rm_sum, self.move.step_size = f(state["rm_sum"]), f(state["step_size"])
        if self.chees is not None:
            self.chees.load_state_dict(state["chees"])
        cov = state["precond"]
        if np.size(cov):
            self.move.precond = Preconditioner(cov)
        if state.get("inner"):
            self.move.device = self.device
            self.move.load_state_dict(state["inner"])

    def __repr__(self):
        mass = f", mass={self.mass!r}" if self.mass else ""
        per = ", per_chain=True" if self.per_chain else ""
        return f"AdaptStepSize({self.move!r}, target={self.target}, warmup={self.warmup}{mass}{per})"


def mass_windows(warmup):
    """The calls after which the preconditioner is re-estimated: as Stan splits its
    warm-up, 15 % for the step size alone, then up to 5 windows of doubling length
    ending at 70 %, then dual averaging alone up to 80 % and the final root search
    (``_robbins_monro``); a warm-up too short for windows updates once, at its middle."""
    init, end = int(0.15 * warmup), int(0.70 * warmup)
    slow = end - init
    if slow < 1:
        return (max(1, warmup // 2),)
    n = max(1, min(5, int(math.log2(slow + 1))))
    base = slow / (2 ** n - 1)
    ends = sorted({init + max(1, round(base * (2 ** j - 1))) for j in range(1, n + 1)})
    ends[-1] = end
    return tuple(ends)


class ChEES:
    """Trajectory-length adaptation for HMC by the ChEES criterion (Hoffman, Radul &
    Sountsov 2021): maximise the expected change in the squared distance of the chains
    from their mean, 1/4 E[(|x' - E x'|^2 - |x - E x|^2)^2], over T, with the
    acceptance-weighted gradient of their Algorithm 1,

        g = sum_i a_i t (|x'_i - m'|^2 - |x_i - m|^2) (x'_i - m') . v'_i / sum_i a_i

    (x the start, x' the proposal, v' = M^-1 p' its velocity, a_i the acceptance
    probability, t the step's trajectory time, m and m' ensemble means), followed by an
    Adam step on log T (learning rate 0.025, beta1 = 0, beta2 = 0.95, as in the paper).
    Each step runs a uniform fraction of T (``HMC.trajectory_length``), which is what
    makes the derivative above unbiased and the sampler non-resonant.  T starts at
    h * n_leapfrog and is frozen after warm-up at exp(mean log T) over its second half."""

    LR, BETA2, EPS = 0.025, 0.95, 1e-8

    def __init__(self, move, warmup):
        self.move = move
        move.trajectory_length = move.step_size * move.n_leapfrog
        move.record_proposal = True
        self.v, self.k, self.log_sum, self.count = 0.0, 0, 0.0, 0

    def update(self, ens, m, warmup):
        x, xp_, vel, t = self.move.last_proposal
        xpm = ens.xp
        alpha = self.move.last_alpha.astype(x.dtype)
        # a rejected proposal has no say: where it overflowed (a non-finite position,
        # velocity or acceptance) its term is 0, not 0 * inf = NaN; the proposals'
        # mean is over the accepted-weighted finite ones only
        ok = xpm.isfinite(alpha) & (alpha > 0) & xpm.isfinite(xp_).all(1) & xpm.isfinite(vel).all(1)
        alpha = xpm.where(ok, alpha, x.dtype.type(0))
        xp_ = xpm.where(ok[:, None], xp_, x)
        vel = xpm.where(ok[:, None], vel, x.dtype.type(0))
        c0 = x - xpm.asarray(ens.particle_mean(x), dtype=x.dtype)
        c1 = xp_ - xpm.asarray(ens.particle_mean(xp_), dtype=x.dtype)
        diff = (c1 * c1).sum(1) - (c0 * c0).sum(1)
        g_i = xpm.where(ok, t * diff * (c1 * vel).sum(1), x.dtype.type(0))
        num, den = ens.particle_sum(xpm.stack([alpha * g_i, alpha], 1))
        g = float(num) / float(den) if float(den) > 0 else 0.0
        log_T = math.log(self.move.trajectory_length)
        if math.isfinite(g):
            self.k += 1
            self.v = self.BETA2 * self.v + (1 - self.BETA2) * g * g
            v_hat = self.v / (1 - self.BETA2 ** self.k)
            log_T += self.LR * g / (math.sqrt(v_hat) + self.EPS)          # ascent
        if m > warmup // 2:
            self.log_sum += log_T
            self.count += 1
        if m == warmup and self.count:
            log_T = self.log_sum / self.count
        self.move.trajectory_length = math.exp(log_T)
        if m == warmup:
            self.move.record_proposal = False

    def state_dict(self):
        return {"T": np.float64(self.move.trajectory_length), "v": np.float64(self.v), "k": np.int64(self.k),
                "log_sum": np.float64(self.log_sum), "count": np.int64(self.count),
                "recording": np.int64(self.move.record_proposal)}

    def load_state_dict(self, st):
        self.move.trajectory_length, self.v, self.k = float(st["T"]), float(st["v"]), int(st["k"])
        self.log_sum, self.count = float(st["log_sum"]), int(st["count"])
        self.move.record_proposal = bool(st["recording"])
