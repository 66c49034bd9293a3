"""Automatic warm-up of MALA and HMC from dispersed starts: anneal, then tune.

Independent chains started over a wide box fail in a way the ensemble can see but no
single chain can: a few start where |grad E| is 1e6 or more, one shared step size
collapses to keep their acceptance, every chain stops, and a mass matrix estimated
from the stuck cloud is wrong.  ``AutoWarmup`` uses what the ensemble offers instead.

1. **Anneal** (adaptive tempered SMC; Del Moral, Doucet & Jasra 2006, the tempering of
   PyMC's and BlackJAX's SMC samplers).  A Gaussian base q = N(m, S) with the mean
   and covariance of the starting cloud is drawn exactly, then moved through
   pi_beta ∝ q^(1 - beta) exp(-beta E): each call picks the next beta by bisection so
   that the conditional ESS of the incremental weights exp(-(beta' - beta)(E - E_q)) is
   ``cess`` (Zhou, Johansen & Aston 2016, eq. 13), reweights, resamples (systematic)
   when the ESS falls below half the chains, re-estimates a dense preconditioner from
   the weighted cloud, and runs ``anneal_steps`` preconditioned MALA steps on pi_beta
   with an acceptance-driven step size.  A chain in a region where E overflows or is
   far above the others gets weight ~0 and is replaced by copies of good ones; the
   weights keep the relative masses of separated modes (independent chains keep the
   share of their *starts* in each basin instead); log Z comes as the running product
   of the mean incremental weights.
2. **Tune** (``AdaptStepSize`` over the sampler with ``mass="dense"``, plus ChEES
   trajectory-length adaptation for HMC): the cloud is now a sample of the target,
   so the ensemble covariance is a good mass matrix and one step size fits every
   chain.  Chains whose acceptance over a window stays below 1 % while the ensemble's
   is normal are stuck; at the end of each window they are replaced by copies of
   moving chains (the only resampling after annealing; none while sampling).
3. **Sample**: the step size, preconditioner and trajectory length are frozen, so the
   sampling phase is a time-homogeneous Markov chain with the target as invariant law.

Every reduction goes through the ensemble (fixed block order), every random draw is a
counter-based Philox draw keyed by (step, particle id), and the whole state is in
``state_dict``: the warm-up is bitwise the same for any thread or rank count and
resumes bitwise from a checkpoint taken in any phase.  The inner MALA steps of an
annealing call draw at step numbers 2**31 + 64 t + j, a range the Simulation's own
steps (at most 2**31 - 1 for a run that anneals) never reach.
"""
import math

import numpy as np

from ..backend import to_numpy
from ..energies.analytic import Energy, Gaussian
from .adapt import AdaptStepSize
from ..checks import positive, probability
from .base import Move
from .hmc import HMC
from .langevin import MALA
from .precond import Preconditioner, cholesky, regulariser, shrunk_to_diagonal
from .resampling import _cdf, _select
from ..random import Purpose

PHASES = ("start", "anneal", "tune", "sample")
INNER_BASE, INNER_STRIDE = 2 ** 31, 64
STUCK_ALPHA = 0.01


class _Bridge(Energy):
    """pi_beta: E_beta = (1 - beta) E_q + beta E (the geometric path)."""

    def __init__(self, base, target):
        self.base, self.target, self.beta = base, target, 0.0
        self.dim = target.dim if target.dim is not None else base.dim

    def set_beta(self, beta):
        self.beta = float(beta)
        self.parameters_changed()

    def cache_token(self):
        return (self._param_version, self.target.cache_token())

    def value_and_grad(self, x):
        eb, gb = self.base.value_and_grad(x)
        if self.beta == 0.0:
            return eb, gb
        e, g = self.target.value_and_grad(x)
        fl = x.dtype.type
        b = fl(self.beta)
        return (fl(1) - b) * eb + b * e, (fl(1) - b) * gb + b * g


def _regularised_cov(S, n):
    """A dense covariance from a plug-in estimate: shrunk to its diagonal below 2 d
    particles, a relative floor on the variances (a start cloud with a zero-variance
    coordinate still gets a proper base), and Stan's scale-free regulariser."""
    S = 0.5 * (S + S.T)
    d = S.shape[0]
    diag = np.diag(S).copy()
    scale = float(np.mean(diag)) if np.isfinite(diag).all() and np.mean(diag) > 0 else 1.0
    floor = 1e-8 * scale
    C = shrunk_to_diagonal(S, n)
    C[np.diag_indices(d)] = np.maximum(np.diag(C), floor) + regulariser(n, scale)
    try:
        cholesky(C)
    except ValueError:                 # not positive definite in float64: the diagonal alone
        C = np.diag(np.maximum(diag, floor) + 1e-3 * scale)
    return C


class AutoWarmup(Move):
    """Parameters
    ----------
    move : MALA or HMC on the target energy (its step size is the starting guess; its
        preconditioner, if any, is replaced)
    tune : calls of the tuning phase (``AdaptStepSize`` with a dense mass, ChEES for HMC)
    cess : conditional-ESS fraction kept per annealing step, in (0, 1)
    anneal_steps : MALA steps on each intermediate distribution (1 to 64)
    target : acceptance target of the tuning phase (default 0.57 MALA, 0.75 HMC)
    max_temperatures : annealing calls allowed before the warm-up gives up with an error

    Statistics: the sampler's ``acceptance`` and ``mean_energy`` (of the target E),
    ``step_size``, ``adapting`` (1 during warm-up), ``beta``, ``log_z`` (NaN until the
    annealing reaches beta = 1), ``n_stuck`` (chains replaced so far), ``gradients``
    (gradient evaluations per chain so far) and, for HMC, ``trajectory_length`` and
    ``n_leapfrog``.
    """

    def __init__(self, move, tune=300, cess=0.9, anneal_steps=5, target=None, max_temperatures=1000, groups=4):
        super().__init__()
        if not isinstance(move, (MALA, HMC)) or isinstance(move, AdaptStepSize):
            raise ValueError(f"AutoWarmup wraps a MALA or HMC move; got {move!r}")
        if isinstance(move, HMC) and move.mass is not None:
            raise ValueError("AutoWarmup estimates the mass matrix; build the HMC without mass=")
        if isinstance(tune, bool) or not isinstance(tune, int) or tune < 10:
            raise ValueError(f"tune must be an integer >= 10 (calls of the tuning phase); got {tune!r}")
        if not 0 < probability(cess, "cess") < 1:
            raise ValueError(f"cess must be in (0, 1); got {cess!r}")
        if isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or \
                not 1 <= anneal_steps <= INNER_STRIDE:
            raise ValueError(f"anneal_steps must be an integer in [1, {INNER_STRIDE}]; got {anneal_steps!r}")
        if isinstance(max_temperatures, bool) or not isinstance(max_temperatures, int) or max_temperatures < 1:
            raise ValueError(f"max_temperatures must be an integer >= 1; got {max_temperatures!r}")
        self.move, self.energy = move, move.energy
        self.hmc = isinstance(move, HMC)
        self.tune, self.cess, self.anneal_steps = tune, float(cess), anneal_steps
        self.target = float(target) if target is not None else (0.75 if self.hmc else 0.57)
        positive(self.target, "target")
        self.max_temperatures = max_temperatures
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be an integer >= 1 (independent annealing runs); got {groups!r}")
        self.groups = groups
        self.stats_keys = ("acceptance", "mean_energy", "step_size", "adapting", "beta", "log_z", "n_stuck",
                           "gradients") + (("trajectory_length", "n_leapfrog", "divergences") if self.hmc else ())
        self.phase, self.beta, self.log_z, self.t_anneal = "start", 0.0, float("nan"), 0
        self.group_log_z = [0.0] * groups
        self.lw = None
        self.h_anneal, self.n_stuck, self.gradients, self.tune_calls = 0.0, 0, 0.0, 0
        self.base_mean = self.base_cov = self.cloud_cov = None
        self.alpha_sum, self.window = None, 0
        self.bridge = self.mala = self.inner = None

    def check(self, ensemble):
        self.move.check(ensemble)
        if ensemble.x.ndim < 2 or ensemble.dim < 1:
            raise ValueError("AutoWarmup needs an ensemble of vectors [n, *event]")
        if ensemble.n_global < 2 * self.groups:
            raise ValueError(f"AutoWarmup runs {self.groups} independent annealing groups and needs at least "
                             f"2 chains per group; the ensemble has {ensemble.n_global} chains")

    def group_bounds(self, n):
        """[lo, hi) row ranges of the groups (contiguous, sizes differ by at most one)."""
        cuts = [(g * n) // self.groups for g in range(self.groups + 1)]
        return list(zip(cuts[:-1], cuts[1:]))

    def _group_resample(self, ens, stream, step, log_weights, which):
        """Systematic resampling inside each group g with which[g] true, from the global
        log-weights [n] (host); other groups keep their rows.  One uniform per group
        (particle id g of this step), ancestors sorted, offspring get fresh ids."""
        n = ens.n_global
        anc = np.arange(n, dtype=np.int64)
        for g, (lo, hi) in enumerate(self.group_bounds(n)):
            if not which[g]:
                continue
            lw = log_weights[lo:hi]
            w = np.exp(lw - np.max(lw))
            u0 = float(stream.uniform(step, np.array([g], dtype=np.int64), 1, Purpose.RESAMPLE, np.float64)[0, 0])
            u = (np.arange(hi - lo, dtype=np.float64) + u0) / (hi - lo)
            anc[lo:hi] = lo + _select(_cdf(w / w.sum(), np), u, np)
        xp, dev, shard = ens.xp, ens.device, ens.shard
        mine = anc if shard is None else anc[shard.lo:shard.hi]
        ens.x = xp.ascontiguousarray(dev.fetch_rows(ens.x, shard, xp.asarray(mine)))
        ens.ids = ens.fresh_ids(n)

    @property
    def done(self):
        return self.phase == "sample"

    @property
    def adapting(self):
        return self.phase != "sample"

    # ------------------------------------------------------------ phases
    def _step(self, ens, stream, step):
        if self.phase == "start":
            self._start(ens, stream, step)
        if self.phase == "anneal":
            return self._anneal(ens, stream, step)
        return self._tune_or_sample(ens, stream, step)

    def _inner_step(self, step, j):
        s = INNER_BASE + INNER_STRIDE * step + j
        if step >= INNER_BASE // INNER_STRIDE - 1:
            raise ValueError("the annealing warm-up runs at steps below 2**25; start the run at step 0")
        return s

    def _start(self, ens, stream, step):
        """The Gaussian base fitted to the starting cloud, drawn exactly."""
        n, d = ens.n_global, ens.dim
        m = np.asarray(to_numpy(ens.mean()), dtype=np.float64).reshape(-1)
        S = np.asarray(to_numpy(ens.cov()), dtype=np.float64)
        if not (np.isfinite(m).all() and np.isfinite(S).all()):
            raise ValueError("the starting positions have a non-finite mean or covariance; give finite x0")
        C = _regularised_cov(S, n)
        self.base_mean, self.base_cov = m, C
        self._build_base()
        P = Preconditioner(C)
        xp = ens.xp
        z = stream.normal(self._inner_step(step, 0), ens.ids, d, Purpose.INIT, np.float64)
        x = xp.asarray(m)[None] + P.forward(xp.asarray(z), xp)
        ens.x = xp.ascontiguousarray(x.astype(ens.dtype).reshape(ens.x.shape))
        # the annealing weights live here, not on the ensemble (whose log-weights a
        # trajectory file would then record from the middle of a run)
        self.lw = np.zeros(n)
        _, logdet = np.linalg.slogdet(C)
        self.group_log_z = [0.5 * (d * math.log(2 * math.pi) + logdet)] * self.groups     # log Z of the base
        self.cloud_cov = C
        self.h_anneal = float(d) ** (-1.0 / 3.0)
        self.phase = "anneal"

    def _build_base(self):
        base = Gaussian(self.base_mean, np.linalg.inv(self.base_cov))
        self.bridge = _Bridge(base, self.energy)
        self.bridge.set_beta(self.beta)
        self.mala = MALA(self.bridge, max(self.h_anneal, 1e-12), precond=self.cloud_cov)

    @staticmethod
    def _increment(W, u, u_max, db):
        """(log sum_i W_i exp(db u_i), conditional ESS fraction) of one group: W its
        normalised weights, u the log-density increments per unit beta (host arrays)."""
        a = u_max * db
        v = np.exp(np.where(np.isfinite(u), db * u - a, -np.inf))
        s1, s2 = float(np.sum(W * v)), float(np.sum(W * v * v))
        return (a + math.log(s1) if s1 > 0 else -math.inf), (s1 * s1 / s2 if s2 > 0 else 0.0)

    def _anneal(self, ens, stream, step):
        if self.t_anneal >= self.max_temperatures:
            raise ValueError(f"the annealing warm-up needed more than {self.max_temperatures} temperatures; "
                             "lower cess or start closer to the target")
        xp, dev, shard = ens.xp, ens.device, ens.shard
        e_target = to_numpy(self.energy.value(ens.x)).astype(np.float64)
        e_base = to_numpy(self.bridge.base.value(ens.x)).astype(np.float64)
        u_local = -(e_target - e_base)                                  # d log w / d beta
        # every rank works on the same global host arrays: the same schedule everywhere
        u = np.asarray(to_numpy(dev.gather_rows(u_local, shard)), dtype=np.float64)
        u = np.where(np.isfinite(u), u, -np.inf)
        lw = self.lw
        bounds = self.group_bounds(ens.n_global)
        groups = []
        for lo, hi in bounds:
            ug, lg = u[lo:hi], lw[lo:hi]
            ok = np.isfinite(ug) & np.isfinite(lg)
            if not ok.any():
                raise ValueError("the energy is not finite at any of the chains' positions in a group (NaN or "
                                 "Inf everywhere the warm-up looked); check the energy, or give x0 where it is "
                                 "finite")
            W = np.exp(lg - np.max(lg[np.isfinite(lg)]))
            W /= W.sum()
            groups.append((W, ug, float(np.max(ug[ok]))))
        rest = 1.0 - self.beta

        def worst_cess(db):
            return min(self._increment(W, ug, um, db)[1] for W, ug, um in groups)
        if worst_cess(rest) >= self.cess:
            db = rest
        else:
            lo_b, hi_b = 0.0, rest
            for _ in range(50):
                mid = 0.5 * (lo_b + hi_b)
                lo_b, hi_b = (mid, hi_b) if worst_cess(mid) >= self.cess else (lo_b, mid)
            db = max(lo_b, 1e-12 * rest)
        new_beta = 1.0 if db >= rest else self.beta + db
        db = new_beta - self.beta
        self.group_log_z = [z + self._increment(W, ug, um, db)[0]
                            for z, (W, ug, um) in zip(self.group_log_z, groups)]
        lw = lw + np.where(np.isfinite(u), db * u, -np.inf)
        self.beta = new_beta
        self.bridge.set_beta(self.beta)
        self.t_anneal += 1
        # resample a group when its weights degenerate, and every group at beta = 1
        which = []
        for lo, hi in bounds:
            lg = lw[lo:hi]
            w = np.exp(lg - np.max(lg))
            which.append(self.beta == 1.0 or (w.sum() ** 2 / (w * w).sum()) < 0.5 * (hi - lo))
        if any(which):
            self._group_resample(ens, stream, self._inner_step(step, 1), lw, which)
            for g, (lo, hi) in enumerate(bounds):
                if which[g]:
                    lw[lo:hi] = 0.0
        lw = np.maximum(lw, np.max(lw) - 1e4)                       # finite log-weights
        # each group's weights are normalised within the group: the ensemble's weights
        # (for the pooled covariance) give every group the same total
        for lo, hi in bounds:
            lw[lo:hi] -= np.max(lw[lo:hi]) + math.log(np.exp(lw[lo:hi] - np.max(lw[lo:hi])).sum())
        self.lw = lw
        mine = lw if shard is None else lw[shard.lo:shard.hi]
        ens.log_weights = xp.asarray(mine, dtype=ens.dtype)          # for the weighted covariance only
        cov = np.asarray(to_numpy(ens.cov()), dtype=np.float64)
        ens.log_weights = None
        self.cloud_cov = _regularised_cov(cov, ens.n_global)
        self.mala.precond = Preconditioner(self.cloud_cov)
        accs = []
        for j in range(self.anneal_steps):
            self.mala.step_size = self.h_anneal
            accs.append(self.mala(ens, stream, self._inner_step(step, 2 + j))["acceptance"])
            # a multiplicative step toward MALA's optimal acceptance (Roberts & Rosenthal 1998)
            self.h_anneal = float(np.clip(self.h_anneal * math.exp(2.0 * (accs[-1] - 0.57)), 1e-12, 1e3))
        self.gradients += 1 + self.anneal_steps
        if self.beta == 1.0:
            # the groups are independent estimates of Z: their mean
            zs = np.array(self.group_log_z)
            self.log_z = float(np.max(zs) + math.log(np.mean(np.exp(zs - np.max(zs)))))
        e_fin = np.where(np.isfinite(e_target), e_target, 0.0)
        stats = {"acceptance": float(np.mean(accs)),
                 "mean_energy": float(ens.particle_mean(xp.asarray(e_fin, dtype=ens.dtype))),
                 "step_size": self.h_anneal, "adapting": 1.0, "beta": self.beta,
                 "log_z": self.log_z if self.beta == 1.0 else float("nan"), "n_stuck": float(self.n_stuck),
                 "gradients": self.gradients}
        if self.hmc:
            stats.update(trajectory_length=float("nan"), n_leapfrog=0.0, divergences=0)
        if self.beta == 1.0:
            self.lw = None
            self._begin_tune()
        return stats

    def _initial_sampler_step(self, d):
        return self.h_anneal if not self.hmc else 1.0 * float(d) ** (-0.25)

    def _begin_tune(self):
        self.move.precond = Preconditioner(self.cloud_cov)
        d = self.cloud_cov.shape[0]
        self.move.step_size = self._initial_sampler_step(d)
        if self.hmc:
            self.move.n_leapfrog = max(1, int(round(1.0 / self.move.step_size)))
        self.inner = AdaptStepSize(self.move, self.target, self.tune, mass="dense",
                                   trajectory="chees" if self.hmc else None)
        self.phase = "tune"

    def _tune_or_sample(self, ens, stream, step):
        tuning = self.phase == "tune"
        stats = dict(self.inner(ens, stream, step))
        if self.hmc:
            self.gradients += float(self.move.last_n_leapfrog)
        else:
            self.gradients += 1.0
        if tuning:
            self.tune_calls += 1
            self._watch_stuck(ens, stream, step, float(stats["acceptance"]))
            if self.tune_calls >= self.tune:
                self.phase = "sample"
        out = {"acceptance": stats["acceptance"], "mean_energy": stats["mean_energy"],
               "step_size": float(stats["step_size"]), "adapting": 1.0 if tuning else 0.0, "beta": 1.0,
               "log_z": self.log_z, "n_stuck": float(self.n_stuck), "gradients": self.gradients}
        if self.hmc:
            out.update(trajectory_length=float(stats["trajectory_length"]), n_leapfrog=float(stats["n_leapfrog"]),
                       divergences=stats["divergences"])
        return out

    def _stuck_window(self):
        return max(10, self.tune // 10)

    def _watch_stuck(self, ens, stream, step, acceptance):
        """Replace chains whose acceptance over the last window stayed below 1 % while the
        ensemble's mean acceptance is at least 10 % (tuning phase only)."""
        xp = ens.xp
        alpha = getattr(self.move, "last_alpha", None)
        if alpha is None:
            return
        a = xp.where(xp.isfinite(alpha), alpha, 0).astype(xp.float64)
        self.alpha_sum = a if self.alpha_sum is None or self.window == 0 else self.alpha_sum + a
        self.window += 1
        if self.window < self._stuck_window():
            return
        mean_a = self.alpha_sum / self.window
        self.window = 0
        if acceptance < 0.1:
            return
        stuck = mean_a < STUCK_ALPHA
        count = int(round(float(ens.particle_sum(stuck.astype(xp.float64)))))
        if count == 0 or count == ens.n_global:
            return
        self.n_stuck += count
        lw = np.where(to_numpy(ens.device.gather_rows(stuck, ens.shard)), -np.inf, 0.0)
        which = [bool(np.isfinite(lw[lo:hi]).any() and not np.isfinite(lw[lo:hi]).all())
                 for lo, hi in self.group_bounds(ens.n_global)]
        self._group_resample(ens, stream, self._inner_step(step, 0), lw, which)

    # ------------------------------------------------------------ state
    @property
    def step_size(self):
        return self.move.step_size

    @property
    def precond(self):
        return self.move.precond

    def state_dict(self):
        f = np.float64
        st = {"phase": np.int64(PHASES.index(self.phase)), "beta": f(self.beta), "log_z": f(self.log_z),
              "group_log_z": np.array(self.group_log_z, dtype=np.float64),
              "t_anneal": np.int64(self.t_anneal), "h_anneal": f(self.h_anneal), "n_stuck": np.int64(self.n_stuck),
              "gradients": f(self.gradients), "tune_calls": np.int64(self.tune_calls),
              "window": np.int64(self.window),
              "alpha_sum": np.zeros(0) if self.alpha_sum is None else np.array(to_numpy(self.alpha_sum)),
              "log_weights": np.zeros(0) if self.lw is None else np.array(self.lw)}
        if self.base_mean is not None:
            st.update(base_mean=np.array(self.base_mean), base_cov=np.array(self.base_cov),
                      cloud_cov=np.array(self.cloud_cov))
        if self.inner is not None:
            st["inner"] = self.inner.state_dict()
        return st

    def load_state_dict(self, st):
        self.phase = PHASES[int(st["phase"])]
        self.beta, self.log_z = float(st["beta"]), float(st["log_z"])
        self.group_log_z = [float(v) for v in st["group_log_z"]]
        self.t_anneal, self.h_anneal = int(st["t_anneal"]), float(st["h_anneal"])
        self.n_stuck, self.gradients = int(st["n_stuck"]), float(st["gradients"])
        self.tune_calls, self.window = int(st["tune_calls"]), int(st["window"])
        self.alpha_sum = np.array(st["alpha_sum"], dtype=np.float64) if np.size(st["alpha_sum"]) else None
        self.lw = np.array(st["log_weights"], dtype=np.float64) if np.size(st["log_weights"]) else None
        if "base_mean" in st:
            self.base_mean = np.array(st["base_mean"], dtype=np.float64)
            self.base_cov = np.array(st["base_cov"], dtype=np.float64)
            self.cloud_cov = np.array(st["cloud_cov"], dtype=np.float64)
            self._build_base()
            self.mala.precond = Preconditioner(self.cloud_cov)
        if "inner" in st:
            self._begin_tune()
            self.phase = PHASES[int(st["phase"])]
            self.inner.device = self.device
            self.inner.load_state_dict(st["inner"])

    def __repr__(self):
        return f"AutoWarmup({self.move!r}, tune={self.tune}, cess={self.cess}, anneal_steps={self.anneal_steps}, " \
               f"groups={self.groups})"
