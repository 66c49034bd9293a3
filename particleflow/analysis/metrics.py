"""Sampler diagnostics users of emcee, BlackJAX and NumPyro expect.

* ``integrated_time``: tau = 1 + 2 sum_t rho(t), autocorrelation averaged over chains
  (FFT), Sokal's automatic window (smallest M >= c tau(M), c = 5), as in emcee.
* ``effective_sample_size``: n_frames * n_chains / tau.
* ``split_rhat``: rank-normalised split R-hat, the maximum of the bulk and the folded
  (tail) versions (Vehtari, Gelman, Simpson, Carpenter, Burkner 2021).
* ``ess_bulk``: their bulk ESS (rank-normalised split chains, Geyer's initial monotone
  sequence), the ``ess`` of ArviZ and Stan.
* ``ess_tail``: their tail ESS (5 % and 95 % quantile indicators).
* ``rhat_nested``: nested R-hat of Margossian et al. (2024) for many short chains
  grouped into superchains.
* ``weighted_moments`` / ``weight_ess``: per-frame weighted mean and variance, Kish ESS.
* ``mmd2`` / ``mmd_test``: unbiased squared MMD with a Gaussian kernel whose bandwidth
  is the median pairwise distance of the pooled sample; permutation p-value.
"""
import numpy as np
from scipy import special

from ..io.h5md import open_run
from ..moves.hmc import DIVERGENCE


def _as_3d(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"expected [n_frames, n_chains] or [n_frames, n_chains, dim]; got shape {x.shape}")
    if x.shape[0] < 4:
        raise ValueError(f"need at least 4 frames; got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("the chains contain NaN or Inf values: diagnostics of a diverged run are meaningless; "
                         "drop those frames or chains first")
    return x


def _autocorr(x):
    """Normalised autocorrelation rho_k of chains x [T, C] that share one target (FFT).

    The chains' common (pooled) mean is subtracted, not each chain's own: a chain's own
    mean absorbs its slow component and biases rho, hence tau, far downward when chains
    are short (2000 AR(0.9) chains of 20 frames: tau 1.95 instead of 19).  Each lag's
    products are averaged over the T - k pairs that exist (with many chains the
    unbiased lag average has small variance), then normalised by lag 0.  Chains stuck
    in different places show up as correlation that does not decay, as they should."""
    T = x.shape[0]
    n = 1 << (2 * T - 1).bit_length()
    c = x - x.mean()
    f = np.fft.rfft(c, n=n, axis=0)
    acf = np.fft.irfft(f * np.conj(f), n=n, axis=0)[:T].mean(1) / np.arange(T, 0, -1)
    return acf / acf[0] if acf[0] > 0 else np.zeros(T)


def integrated_time(x, c=5.0):
    """Integrated autocorrelation time per coordinate, shape [dim]."""
    x = _as_3d(x)
    taus = np.empty(x.shape[2])
    for j in range(x.shape[2]):
        rho = _autocorr(x[:, :, j])
        tau = 2.0 * np.cumsum(rho) - 1.0
        m = np.arange(len(tau))
        ok = m >= c * tau
        window = np.argmax(ok) if ok.any() else len(tau) - 1
        taus[j] = tau[window]
    return taus


def effective_sample_size(x):
    x = _as_3d(x)
    return x.shape[0] * x.shape[1] / integrated_time(x)


def _rhat_basic(chains):
    """Split-free R-hat of chains [N, M] (Gelman-Rubin with the 2013 variance)."""
    N, M = chains.shape
    means = chains.mean(0)
    B = N * means.var(ddof=1)
    W = chains.var(0, ddof=1).mean()
    var_plus = (N - 1) / N * W + B / N
    return np.sqrt(var_plus / W) if W > 0 else np.inf


def _rank_normalise(a):
    from scipy.stats import rankdata
    r = rankdata(a.ravel(), method="average").reshape(a.shape)
    return special.ndtri((r - 3.0 / 8.0) / (a.size + 0.25))


def _split(c):
    """Chains [T, M] -> [T // 2, 2 M]: first and last halves (the middle frame of an odd
    T is dropped, as in Vehtari et al. 2021 and ArviZ)."""
    N = c.shape[0] // 2
    return np.concatenate([c[:N], c[c.shape[0] - N:]], axis=1)


def split_rhat(x):
    """Rank-normalised split R-hat per coordinate, shape [dim]."""
    x = _as_3d(x)
    out = np.empty(x.shape[2])
    for j in range(x.shape[2]):
        split = _split(x[:, :, j])                                 # [N, 2M]
        bulk = _rhat_basic(_rank_normalise(split))
        folded = _rhat_basic(_rank_normalise(np.abs(split - np.median(split))))
        out[j] = max(bulk, folded)
    return out


def _ess_geyer(c):
    """ESS of chains c [T, M] from the multi-chain autocorrelation of Vehtari et al.
    (2021, eqs. 10-11): rho_t = 1 - (W - mean_m acov_m(t)) / var+, summed over Geyer's
    initial positive sequence of pair sums, made monotone."""
    T, M = c.shape
    if np.ptp(c) < np.finfo(float).resolution:
        return float(c.size)
    n = 1 << (2 * T - 1).bit_length()
    d = c - c.mean(0)
    f = np.fft.rfft(d, n=n, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=n, axis=0)[:T] / T            # biased, per chain
    acov = acov.mean(1)                                                  # mean over chains
    W = acov[0] * T / (T - 1.0)
    var_plus = W * (T - 1.0) / T + (c.mean(0).var(ddof=1) if M > 1 else 0.0)
    rho = np.zeros(T)
    rho[0] = 1.0
    rho[1] = even_odd = 1.0 - (W - acov[1]) / var_plus
    even = 1.0
    t = 1
    while t < T - 3 and even + even_odd > 0.0:                         # initial positive sequence
        even = 1.0 - (W - acov[t + 1]) / var_plus
        even_odd = 1.0 - (W - acov[t + 2]) / var_plus
        if even + even_odd >= 0:
            rho[t + 1], rho[t + 2] = even, even_odd
        t += 2
    last = t - 2
    if even > 0:
        rho[last + 1] = even
    t = 1
    while t <= last - 2:                                                 # made monotone
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2.0
        t += 2
    tau = -1.0 + 2.0 * rho[:last + 1].sum() + rho[last + 1:last + 2].sum()
    tau = max(tau, 1.0 / np.log10(c.size))
    return c.size / tau


def ess_bulk(x):
    """Bulk effective sample size per coordinate, shape [dim]: the rank-normalised split
    chains' ESS of Vehtari, Gelman, Simpson, Carpenter & Burkner (2021), the ``ess``
    that ArviZ, Stan and BlackJAX report (``effective_sample_size`` is emcee's)."""
    x = _as_3d(x)
    return np.array([_ess_geyer(_rank_normalise(_split(x[:, :, j]))) for j in range(x.shape[2])])


def ess_tail(x):
    """Tail effective sample size per coordinate, shape [dim]: the smaller ESS of the
    indicators I(x <= q_0.05) and I(x <= q_0.95) over split chains (Vehtari et al. 2021,
    section 4.3), the ``ess_tail`` of ArviZ and Stan.  It says how well the 5 % and 95 %
    quantiles (so the posterior intervals) are estimated."""
    x = _as_3d(x)
    out = np.empty(x.shape[2])
    for j in range(x.shape[2]):
        split = _split(x[:, :, j])
        ess = []
        for p in (0.05, 0.95):
            ind = (split <= np.quantile(split, p)).astype(np.float64)
            ess.append(_ess_geyer(ind))
        out[j] = min(ess)
    return out


def rhat_nested(x, superchains):
    """Nested R-hat per coordinate, shape [dim] (Margossian, Hoffman, Sountsov, Riou-Durand,
    Vehtari & Gelman 2024, eq. 3.2), for many short chains: chains [n_frames, n_chains]
    are grouped into K = ``superchains`` contiguous superchains (chain i in group
    floor(i K / n_chains), sizes M_k differing by at most one), and

        nR = sqrt(1 + B / W),  B = var_k(superchain means)  (K - 1 dof),
        W = mean_k [ var_m(chain means in k)  (M_k - 1 dof)  +  mean_m var_n(chain m)  (N - 1 dof) ].

    Unlike split R-hat it does not ask each chain to have mixed, only that the
    superchains agree: B / W is about 1 / (M N_eff) when every superchain is an
    independent sample of the same law, so nR - 1 goes to 0 with the number of chains,
    even for chains too short to leave a mode.  The chains of one superchain should share
    their start (one initial point, or one independent annealing run)."""
    x = _as_3d(x)
    N, C, _ = x.shape
    K = int(superchains)
    if K < 2 or C < 2 * K:
        raise ValueError(f"superchains must be >= 2 with at least 2 chains each ({C} chains); got {superchains!r}")
    cuts = [(k * C) // K for k in range(K + 1)]
    chain_mean = x.mean(0)                                    # [C, d]
    within_chain = x.var(0, ddof=1) if N > 1 else np.zeros_like(chain_mean)
    super_mean, W = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        cm = chain_mean[lo:hi]
        super_mean.append(cm.mean(0))
        W.append(cm.var(0, ddof=1) + within_chain[lo:hi].mean(0))
    B = np.var(np.array(super_mean), axis=0, ddof=1)
    W = np.mean(np.array(W), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(W > 0, np.sqrt(1.0 + B / np.where(W > 0, W, 1.0)), np.where(B > 0, np.inf, 1.0))


RHAT_NESTED_MAX = 1.01


def diagnose(positions, superchains=4, divergences=0):
    """(rhat, rhat_nested, ess_bulk, ess_tail, n_stuck, warnings) of draws
    [draws, chains, *event]; superchains are contiguous groups of chains."""
    p = np.asarray(positions)
    n, c = p.shape[:2]
    flat = p.reshape(n, c, -1).astype(np.float64)
    rhat, bulk, tail = split_rhat(flat), ess_bulk(flat), ess_tail(flat)
    k = int(superchains)
    nested = rhat_nested(flat, k)
    moved = (np.diff(flat, axis=0) != 0).any(2).mean(0)            # share of draws each chain moved
    stuck = int(np.sum((moved == 0) | (moved < 0.1 * np.median(moved))))
    warns = []
    worst = int(np.nanargmax(nested)) if np.isfinite(nested).any() else 0
    if not np.all(nested <= RHAT_NESTED_MAX):
        warns.append(f"nested R-hat {np.nanmax(nested):.3f} > {RHAT_NESTED_MAX} (coordinate {worst}): "
                     f"the {k} superchains of chains disagree, the chains have not converged to one "
                     "distribution; run a longer warm-up or check the target for separated modes")
    if stuck:
        warns.append(f"{stuck} of {c} chains are stuck (moved in under 10 % as many draws as the median chain): "
                     "the step size that suits most chains fails where they are (curvature far above the "
                     "rest, or a wall the energy cannot cross); try HMC, a reparameterisation or starts nearer "
                     "the target")
    if divergences:
        warns.append(f"{divergences} divergent transitions (energy error > {DIVERGENCE:g} or non-finite)")
    return rhat, nested, bulk, tail, stuck, warns


def diagnose_run(path, ensemble=None, superchains=None):
    """``diagnose`` of a run file's frames after its warm-up (see ``summary``), per
    ensemble (or only ``ensemble``): {name: (first_step, diagnose(...))}."""
    with open_run(path) as r:
        if ensemble is not None and ensemble not in r.ensembles:
            raise ValueError(f"no ensemble {ensemble!r} in {path}; ensembles: {', '.join(r.ensembles)}")
        return {name: (first, diagnose(p, k)) for name, first, p, k in _post_warmup(r, superchains)
                if ensemble is None or name == ensemble}


def weighted_moments(positions, log_weights=None):
    """Per-frame weighted mean and variance: positions [T, n, d] -> ([T, d], [T, d])."""
    p = np.asarray(positions, dtype=np.float64)
    p = p.reshape(p.shape[0], p.shape[1], -1)
    if log_weights is None:
        w = np.full(p.shape[:2], 1.0 / p.shape[1])
    else:
        lw = np.asarray(log_weights, dtype=np.float64)
        w = np.exp(lw - lw.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
    mean = np.einsum("tn,tnd->td", w, p)
    var = np.einsum("tn,tnd->td", w, (p - mean[:, None]) ** 2)
    return mean, var


def weight_ess(log_weights):
    """Kish ESS of each frame's weights: [T, n] -> [T]."""
    lw = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(lw - lw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return 1.0 / (w ** 2).sum(1)


def _sq_dists(a, b):
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def _prep(x, y, max_points, seed):
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples must have the same dimension; got {x.shape[1]} and {y.shape[1]}")
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    return x, y


def _mmd2_from_kernel(K, n):
    Kxx, Kyy, Kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    m = K.shape[0] - n
    return ((Kxx.sum() - np.trace(Kxx)) / (n * (n - 1)) + (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
            - 2 * Kxy.mean())


def mmd2(x, y, max_points=2000, seed=0):
    """Unbiased squared MMD between samples x [n, ...] and y [m, ...]."""
    return mmd_test(x, y, n_permutations=0, max_points=max_points, seed=seed)[0]


def mmd_test(x, y, n_permutations=200, max_points=2000, seed=0):
    """(mmd2, permutation p-value) with the median-heuristic Gaussian kernel."""
    x, y = _prep(x, y, max_points, seed)
    z = np.concatenate([x, y])
    D = _sq_dists(z, z)
    med = np.median(D[np.triu_indices(len(z), 1)])
    K = np.exp(-D / (2 * med)) if med > 0 else np.ones_like(D)
    n = len(x)
    stat = _mmd2_from_kernel(K, n)
    if n_permutations == 0:
        return stat, np.nan
    rng = np.random.default_rng(seed + 1)
    count = 0
    for _ in range(n_permutations):
        p = rng.permutation(len(z))
        count += _mmd2_from_kernel(K[np.ix_(p, p)], n) >= stat
    return stat, (count + 1) / (n_permutations + 1)


def from_run(path, ensemble, first_frame=0):
    """(positions [T, n, d], log_weights [T, n] or None) of an ensemble in a run file."""
    with open_run(path) as r:
        if ensemble not in r.ensembles:
            raise ValueError(f"no ensemble {ensemble!r} in {path}; ensembles: {', '.join(r.ensembles)}")
        e = r.ensembles[ensemble]
        pos = np.asarray(e.positions[first_frame:])
        lw = np.asarray(e.log_weights[first_frame:]) if e.log_weights is not None else None
    return pos, lw


def _warmup_end(run):
    """The last step at which any move reported ``adapting`` = 1 (-1 if none)."""
    last = -1
    for name, o in run.observables.items():
        if name.endswith("/adapting") and len(o.values):
            v, st = np.asarray(o.values), np.asarray(o.steps)
            if (v > 0).any():
                last = max(last, int(st[v > 0].max()))
    return last


def _post_warmup(run, superchains=None, max_chains=None):
    """(ensemble, first step, draws [T, chains, dim], superchains) of every ensemble of an
    open run with at least 4 frames after its warm-up and 2 chains per superchain: the
    frames after the last step at which a move reported ``adapting`` (the second half of
    the frames when no move adapts).  ``superchains`` defaults to the run's
    ``<slot>/superchains`` result, else 4."""
    end = _warmup_end(run)
    if superchains is None:
        ks = [int(np.asarray(v)) for n, v in run.results.items() if n.endswith("/superchains")]
        superchains = ks[0] if ks else 4
    for name, e in run.ensembles.items():
        steps = np.asarray(e.steps)
        if not len(steps):
            continue
        first = int(np.nonzero(steps > end)[0][0]) if end >= 0 and (steps > end).any() else len(steps) // 2
        p = np.asarray(e.positions[first:])[:, :max_chains]
        if p.shape[0] < 4 or p.shape[1] < 2 * superchains:
            continue
        yield name, int(steps[first]), p.reshape(p.shape[0], p.shape[1], -1), superchains


def summary(path, max_chains=None, superchains=None):
    """(first_step, rows, warnings) per ensemble: rows (coordinate, mean, sd, ess_bulk,
    ess_tail, split R-hat, nested R-hat) over the frames after the warm-up
    (``_post_warmup``), at most the first 8 coordinates and ``max_chains`` chains."""
    out = {}
    with open_run(path) as r:
        for name, first, p, k in _post_warmup(r, superchains, max_chains):
            rhat, nested, bulk, tail, stuck, warns = diagnose(p, k)
            rows = [(j, p[:, :, j].mean(), p[:, :, j].std(), bulk[j], tail[j], rhat[j], nested[j])
                    for j in range(min(8, p.shape[2]))]
            out[name] = (first, rows, warns)
    return out
