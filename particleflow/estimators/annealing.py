"""log Z of an energy by annealed importance sampling (AIS) and adaptive tempered SMC.

Path: E_beta(x) = (1 - beta) E_0(x) + beta E_1(x) from a normalised base E_0 (a Gaussian)
to the target E_1, beta from 0 to 1 (geometric path of densities).  At each temperature:

1. reweight: log w_i += -(beta' - beta) (E_1 - E_0)(x_i), and
   log Z_{beta'} / Z_beta is estimated by log sum_i W_i exp(-(beta' - beta)(E_1 - E_0)(x_i))
   with W the normalised weights before the increment (Neal 2001; Del Moral, Doucet &
   Jasra 2006); summed over temperatures, plus log Z_0, this is log Z;
2. (SMC) resample (systematic) when the ESS falls below ``resample_ess`` n;
3. ``mcmc_steps`` MALA steps targeting E_beta'; the step size follows the acceptance
   (multiplied by exp(2 (acceptance - 0.57)) after each temperature, clipped).

AIS uses a fixed schedule of temperatures and never resamples.  Adaptive SMC chooses the
next beta by bisection so that the conditional ESS (Zhou, Johansen & Aston 2016),
CESS = n (sum_i W_i v_i)^2 / sum_i W_i v_i^2 with v_i the incremental weights, equals
``cess`` n.  The standard error comes from ``repeats`` independent runs (independent
counter-based streams): se = sd(log Z_r) / sqrt(repeats).
"""
import math

import numpy as np

from ..energies.analytic import Gaussian
from ..energies.combine import BoxRestricted, Interpolated, Zero
from ..ensemble import Ensemble
from ..moves import MALA, Resample
from ..random import Purpose, Stream, StreamBlock


def gaussian_base(dim, scale=1.0, mean=None):
    """N(mean, scale^2 I) as a normalised energy: (energy, log Z_0)."""
    mean = np.zeros(dim) if mean is None else np.asarray(mean, dtype=np.float64)
    e = Gaussian(mean, np.eye(dim) / scale ** 2)
    return e, 0.5 * dim * math.log(2 * math.pi * scale ** 2)


def _increment_sums(ens, W, u, u_max, db):
    """(a, s1, s2) with v_i = exp(db u_i - a), a = db max u, s1 = sum_i W_i v_i and
    s2 = sum_i W_i v_i^2 over every particle: log sum_i W_i exp(db u_i) = a + log s1
    and the conditional ESS fraction is s1^2 / s2."""
    a = u_max * db
    v = np.exp(db * u - a)
    return a, float(ens.particle_sum(W * v)), float(ens.particle_sum(W * v * v))


def _cess(ens, W, u, u_max, db):
    _, s1, s2 = _increment_sums(ens, W, u, u_max, db)
    return s1 * s1 / s2


def anneal(target, n, seed=0, repeat=0, base_scale=1.0, betas=None, cess=0.95, resample_ess=None,
           mcmc_steps=2, step_size=0.5, adapt_step=True, max_temperatures=1000, dtype=np.float64, box=None):
    """One annealing run: dict(log_z, betas, log_z_trace, ess, acceptance).

    ``betas``: a fixed increasing schedule ending at 1 (AIS, no resampling); None:
    adaptive tempered SMC (CESS bisection, ESS-triggered resampling).  ``resample_ess``:
    resample when the ESS falls below this fraction of n (default 0.5 for adaptive SMC,
    never for a fixed schedule; 1.0 resamples at every temperature).  ``box`` = (lo, hi):
    the base is uniform on [lo, hi]^d instead of N(0, base_scale^2 I), every MALA move
    stays in the box, and the result is log of the integral of exp(-E) over the box:
    finite for any energy, which an energy learned on bounded data (a bounded network)
    needs, since exp(-E) need not be integrable over all of R^d."""
    if target.dim is None:
        raise ValueError("the target energy must declare its dimension (dim)")
    d = target.dim
    # three streams per repeat (initial draws, resampling, MCMC), none shared between repeats
    first = StreamBlock.ANNEALING + 3 * repeat
    stream, resample_stream, mcmc_stream = Stream(seed, first), Stream(seed, first + 1), Stream(seed, first + 2)
    if box is None:
        base, log_z0 = gaussian_base(d, base_scale)
        x0 = base_scale * stream.normal(0, np.arange(n), d, Purpose.INIT, dtype)
    else:
        lo, hi = (float(b) for b in box)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"box must be (lo, hi) with finite lo < hi; got {box!r}")
        base, log_z0 = Zero(d), d * math.log(hi - lo)
        x0 = lo + (hi - lo) * stream.uniform(0, np.arange(n), d, Purpose.INIT, dtype)
    ens = Ensemble(x0, log_weights=np.zeros(n, dtype))
    path = Interpolated(base, target, 0.0)
    mala = MALA(path if box is None else BoxRestricted(path, *box), step_size)
    if resample_ess is None and betas is None:
        resample_ess = 0.5
    resample = Resample("systematic", resample_ess) if resample_ess is not None else None
    if betas is not None:
        betas = [float(b) for b in betas]
        if not betas or betas[-1] != 1.0 or any(b1 <= b0 for b0, b1 in zip([0.0] + betas, betas)):
            raise ValueError("betas must increase strictly from above 0 to exactly 1")
    log_z, beta, t = log_z0, 0.0, 0
    trace = {"betas": [0.0], "log_z": [log_z0], "ess": [float(n)], "acceptance": []}
    while beta < 1.0:
        if t >= max_temperatures:
            raise ValueError(f"annealing needed more than {max_temperatures} temperatures; lower cess "
                             "(annealing.cess in a logz config) or raise max_temperatures")
        u = -(target.value(ens.x) - base.value(ens.x)).astype(np.float64)      # d log w / d beta
        W, u_max = ens.weights(), ens.device.max(u, ens.shard)                # fixed during the bisection
        if betas is not None:
            nb = betas[t]
        elif _cess(ens, W, u, u_max, 1.0 - beta) >= cess:
            nb = 1.0
        else:
            lo, hi = 0.0, 1.0 - beta
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if _cess(ens, W, u, u_max, mid) >= cess else (lo, mid)
            nb = beta + max(lo, 1e-12)
        db = nb - beta
        a, s1, _ = _increment_sums(ens, W, u, u_max, db)
        log_z += a + math.log(s1)
        ens.log_weights = (ens.log_weights + db * u).astype(dtype)
        beta = nb
        path.beta = beta
        if resample is not None:
            resample(ens, resample_stream, t)
        acc = []
        for k in range(mcmc_steps):
            acc.append(mala(ens, mcmc_stream, t * mcmc_steps + k)["acceptance"])
        if adapt_step:
            mala.step_size = float(np.clip(mala.step_size * math.exp(2 * (np.mean(acc) - 0.57)), 1e-6, 10.0))
        t += 1
        trace["betas"].append(beta)
        trace["log_z"].append(log_z)
        trace["ess"].append(ens.ess())
        trace["acceptance"].append(float(np.mean(acc)))
    return dict(log_z=log_z, **{k: np.asarray(v) for k, v in trace.items() if k != "log_z"},
                log_z_trace=np.asarray(trace["log_z"]))


def log_z(target, n, repeats=8, seed=0, **kw):
    """(mean log Z, standard error, per-repeat estimates) over ``repeats`` independent
    runs of ``anneal`` (same keywords)."""
    if repeats < 2:
        raise ValueError("repeats must be >= 2 for a standard error")
    est = np.array([anneal(target, n, seed=seed, repeat=r, **kw)["log_z"] for r in range(repeats)])
    return float(est.mean()), float(est.std(ddof=1) / math.sqrt(repeats)), est
