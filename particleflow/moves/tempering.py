"""Parallel tempering (replica exchange) as one ensemble move.

The ensemble's rows are G groups of T replicas: row i = g T + t runs at inverse
temperature beta_t (beta_0 = 1 > beta_1 > ... > beta_{T-1} > 0) and targets
exp(-beta_t E).  One call does

1. a MALA step of every row on its tempered energy beta_t E with step size
   h_t = h / beta_t (a mode of beta E is 1 / sqrt(beta) times wider, so its good step
   is 1 / beta times larger);
2. swaps of positions between the neighbours (t, t + 1) of each group, accepted with
   probability min(1, exp((beta_t - beta_{t+1}) (E(x_t) - E(x_{t+1})))); the pairs
   with t even on even calls and t odd on odd calls (the deterministic even-odd scheme,
   non-reversible, whose round trips grow linearly rather than quadratically in T:
   Syed, Bouchard-Cote, Deligiannidis & Doucet 2022).

Rows keep their temperature; positions move between rows.  The rows with t = 0
(``cold_rows``) sample exp(-E).  Statistics: the MALA acceptance, the swap acceptance
over the attempted pairs, and the lowest pair's swap acceptance (the bottleneck is
usually near the cold end; the value of the latest call that tried it).
"""
import math

import numpy as np

from ..random import Purpose
from ..checks import positive
from .base import Move


def geometric_ladder(n_temperatures, beta_min):
    """beta_t = beta_min^(t / (T - 1)), t = 0..T-1 (1 down to beta_min)."""
    if isinstance(n_temperatures, bool) or not isinstance(n_temperatures, int) or n_temperatures < 2:
        raise ValueError(f"n_temperatures must be an integer >= 2; got {n_temperatures!r}")
    if not 0 < beta_min < 1:
        raise ValueError(f"beta_min must be in (0, 1); got {beta_min!r}")
    return beta_min ** (np.arange(n_temperatures) / (n_temperatures - 1))


class ParallelTempering(Move):
    """Parameters
    ----------
    energy : Energy (the cold target exp(-E))
    betas : inverse temperatures, decreasing from 1 (``geometric_ladder`` makes one)
    step_size : MALA step h at beta = 1 (h / beta_t at the others)
    """

    stats_keys = ("acceptance", "swap_acceptance", "swap_acceptance_cold", "mean_energy")

    def __init__(self, energy, betas, step_size):
        super().__init__()
        if isinstance(betas, (str, bytes)) or any(isinstance(v, (str, bytes, bool, np.bool_))
                                                  for v in np.ravel(np.asarray(betas, dtype=object))):
            raise ValueError(f"betas must be numbers (inverse temperatures decreasing from 1.0); got {betas!r}")
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or b.size < 2 or b[0] != 1.0 or not (np.diff(b) < 0).all() or b[-1] <= 0:
            raise ValueError("betas must be a list of at least 2 inverse temperatures decreasing from 1.0 "
                             f"to a positive value; got {betas!r}")
        self.energy, self.betas = energy, b
        self.step_size = positive(step_size, "step_size")
        self.calls, self.last_cold = 0, math.nan

    @property
    def n_temperatures(self):
        return self.betas.size

    def check(self, ensemble):
        super().check(ensemble)
        T = self.n_temperatures
        if ensemble.n % T:
            raise ValueError(f"parallel tempering with {T} temperatures needs an ensemble of groups of {T} rows; "
                             f"ensemble {ensemble.name!r} has {ensemble.n} (make n a multiple of {T})")
        if ensemble.shard is not None and ensemble.shard.lo % T:
            raise ValueError(f"a sharded ensemble splits the groups of {T} replicas between ranks; use a "
                             "number of temperatures that divides 512 or run it replicated")

    def cold_rows(self, ensemble):
        """The positions of the beta = 1 replicas."""
        return ensemble.x[::self.n_temperatures]

    def _step(self, ens, stream, step):
        xp, fl = ens.xp, ens.dtype.type
        T, n = self.n_temperatures, ens.n
        x = ens.x.reshape(n, -1)
        beta = xp.asarray(np.tile(self.betas, n // T), dtype=ens.dtype)
        cached = ens.cached_energy(self.energy)
        e, g = cached if cached is not None else self.energy.value_and_grad(ens.x)
        g = g.reshape(n, -1)
        # 1. MALA on beta E with h / beta: the drift h/beta * beta g = h g, noise sqrt(2 h / beta)
        h = fl(self.step_size)
        hb = (h / beta)[:, None]
        z = stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype)
        y = x - h * g + xp.sqrt(fl(2) * hb) * z
        ey, gy = self.energy.value_and_grad(y.reshape(ens.x.shape))
        gy = gy.reshape(n, -1)
        back = ((x - y + h * gy) ** 2).sum(1) / (fl(4) * hb[:, 0])
        log_alpha = beta * (e - ey) - back + fl(0.5) * (z * z).sum(1)
        u = stream.uniform(step, ens.ids, 2, Purpose.MH_ACCEPT, ens.dtype)
        acc = xp.log(u[:, 0]) < log_alpha
        x = xp.where(acc[:, None], y, x)
        e = xp.where(acc, ey, e)
        g = xp.where(acc[:, None], gy, g)
        # 2. swaps between rows t and t + 1 (t of the call's parity) of every group
        first = self.calls % 2
        self.calls += 1
        t = np.arange(first, T - 1, 2)
        swap_acc = cold_acc = xp.zeros(n, dtype=ens.dtype)
        attempted = xp.zeros(n, dtype=ens.dtype)
        if t.size:
            lo = xp.asarray((np.arange(n // T)[:, None] * T + t[None, :]).reshape(-1))
            hi = lo + 1
            db = fl(1) * (beta[lo] - beta[hi])
            log_swap = db * (e[lo] - e[hi])
            ok = xp.log(u[lo, 1]) < log_swap            # the lower row's second uniform
            a, b = xp.where(ok, hi, lo), xp.where(ok, lo, hi)
            perm = xp.arange(n)
            perm[lo], perm[hi] = a, b
            x, e, g = x[perm], e[perm], g[perm]
            attempted[lo] = 1
            swap_acc = xp.zeros(n, dtype=ens.dtype)
            swap_acc[lo] = ok
            if first == 0:
                cold_acc = xp.zeros(n, dtype=ens.dtype)
                cold_acc[lo[::t.size]] = ok[::t.size]
        out = self.position_buffer(ens)
        out[...] = x.reshape(ens.x.shape)
        self.swap_positions(ens, out)
        ens.store_energy(self.energy, e, g.reshape(ens.x.shape))
        sums = ens.particle_sum(xp.stack([acc.astype(ens.dtype), swap_acc, attempted, cold_acc,
                                          e * (beta == 1)], 1))
        groups = ens.n_global // T
        if first == 0:
            self.last_cold = float(sums[3]) / groups
        return {"acceptance": float(sums[0]) / ens.n_global,
                "swap_acceptance": float(sums[1] / sums[2]) if sums[2] else math.nan,
                "swap_acceptance_cold": self.last_cold,
                "mean_energy": float(sums[4]) / groups}

    def state_dict(self):
        return {"calls": np.int64(self.calls), "last_cold": np.float64(self.last_cold)}

    def load_state_dict(self, state):
        self.calls, self.last_cold = int(state["calls"]), float(state["last_cold"])
