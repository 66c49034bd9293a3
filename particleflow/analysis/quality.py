"""Sample quality against a reference: the kernel Stein discrepancy against a known
energy, MMD against reference draws, energy histograms of samples and reference, and
the mass per mode of a mixture target.

* KSD (Gorham & Mackey 2017, "Measuring sample quality with kernels", IMQ kernel
  k(x, y) = (c^2 + |x - y|^2)^beta, c = 1, beta = -1/2): with the score s = -grad E
  and u = c^2 + r^2, r = |x - y|, the Stein kernel is

      k0(x, y) = s_x . s_y u^beta + 2 beta u^(beta-1) (s_y - s_x) . (x - y)
                 - 2 beta d u^(beta-1) - 4 beta (beta - 1) u^(beta-2) r^2,

  and KSD^2 is its U-statistic mean over pairs i != j (zero in expectation for exact
  samples; it needs no normalising constant and no reference draws).
* mode mass: each sample goes to the component of largest responsibility; the
  fractions are compared with the mixture weights by a chi-square test.
"""
import numpy as np
from scipy import stats

from ..random import Purpose, Stream, StreamBlock
from .metrics import mmd_test

KSD_C = 1.0
KSD_BETA = -0.5


def _subsample(x, max_points, seed):
    x = np.asarray(x).reshape(len(x), -1)
    if len(x) > max_points:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
    return x


def ksd(x, score, max_points=2000, seed=0):
    """Squared kernel Stein discrepancy (U-statistic, IMQ kernel) of samples ``x`` [n, d]
    against the density whose score (grad log p = -grad E) is ``score(x)``."""
    x = np.asarray(_subsample(x, max_points, seed), dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("ksd needs at least 2 samples")
    s = np.asarray(score(x), dtype=np.float64).reshape(n, d)
    diff_dot_s = x @ s.T                                   # [i, j] = x_i . s_j
    sx_dot_x = np.einsum("ij,ij->i", s, x)                 # s_i . x_i
    r2 = np.maximum((x * x).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * x @ x.T, 0.0)
    u = KSD_C ** 2 + r2
    b = KSD_BETA
    # (s_y - s_x) . (x - y) with x = x_i, y = x_j
    cross = (diff_dot_s - sx_dot_x[None, :]) - (sx_dot_x[:, None] - diff_dot_s.T)
    k0 = ((s @ s.T) * u ** b + 2 * b * u ** (b - 1) * cross
          - 2 * b * d * u ** (b - 1) - 4 * b * (b - 1) * u ** (b - 2) * r2)
    return float((k0.sum() - np.trace(k0)) / (n * (n - 1)))


def mode_mass(x, mixture):
    """(fractions [K], chi-square p-value against the weights) of samples ``x`` [n, d]
    assigned to the component of largest responsibility of ``mixture`` (a
    ``GaussianMixture``)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    logp = np.stack([_component_logpdf(x, m, c) for m, c in zip(mixture.means, mixture.covariances)], 1)
    k = np.argmax(logp + np.log(mixture.weights)[None], 1)
    counts = np.bincount(k, minlength=mixture.n_components)
    expected = mixture.weights * len(x)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return counts / len(x), float(stats.chi2.sf(chi2, mixture.n_components - 1))


def _component_logpdf(x, mean, cov):
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, (x - mean).T)
    return -0.5 * (z * z).sum(0) - np.log(np.diag(L)).sum()


def evaluate(x, energy, reference=None, max_points=2000, seed=0):
    """Rows (name, value, note) of sample quality for samples ``x`` [n, ...] of
    exp(-energy): KSD^2 (always), MMD^2 with its permutation p-value and the energy
    histogram comparison (mean energies, two-sample KS p-value) when ``reference``
    draws are given, and the mode masses when the energy is a Gaussian mixture."""
    x = np.asarray(x)
    flat = x.reshape(len(x), -1)
    rows = []

    def score(y):
        return -np.asarray(energy.grad(y.reshape((len(y),) + x.shape[1:]).astype(x.dtype)),
                           np.float64).reshape(len(y), -1)
    rows.append(("ksd2", ksd(flat, score, max_points, seed),
                 f"IMQ kernel Stein discrepancy^2 against exp(-E) on {min(len(x), max_points)} samples "
                 "(0 in expectation for exact samples)"))
    e_x = np.asarray(energy.value(x), np.float64)
    rows.append(("energy_mean", float(e_x.mean()), "mean E of the samples"))
    if reference is not None:
        ref = np.asarray(reference).reshape((len(reference),) + x.shape[1:]).astype(x.dtype)
        stat, p = mmd_test(flat, ref.reshape(len(ref), -1), n_permutations=200,
                           max_points=min(max_points, 1000), seed=seed)
        rows.append(("mmd2", float(stat), f"against {len(ref)} reference draws (Gaussian kernel, median width)"))
        rows.append(("mmd_p_value", float(p), "permutation test, 200 permutations"))
        e_r = np.asarray(energy.value(ref), np.float64)
        rows.append(("energy_mean_reference", float(e_r.mean()), "mean E of the reference"))
        rows.append(("energy_ks_p_value", float(stats.ks_2samp(e_x, e_r).pvalue),
                     "two-sample KS test of the energy histograms"))
    if hasattr(energy, "means") and hasattr(energy, "covariances") and hasattr(energy, "weights"):
        fr, p = mode_mass(flat, energy)
        for k, f in enumerate(fr):
            rows.append((f"mode_mass_{k}", float(f), f"weight {energy.weights[k]:.4g}"))
        rows.append(("mode_mass_p_value", p, "chi-square test of the mode masses against the weights"))
    return rows


def replica_groups(run, ensemble):
    """T when a ``parallel_tempering`` move of the run's config moves ``ensemble`` (its
    rows are groups of T replicas and row 0 of each group samples exp(-E)), else 1."""
    for slot in run.config.get("schedule") or ():
        if isinstance(slot, dict) and slot.get("move") == "parallel_tempering" and slot.get("ensemble") == ensemble:
            return len(slot["betas"]) if slot.get("betas") else int(slot.get("n_temperatures") or 1)
    return 1


def evaluate_run(run, energy, ensemble=None, frame=-1, reference=None, n_reference=4000, max_points=2000, seed=0):
    """Sample quality of one frame of an ensemble of an open run: a dict with
    ``ensemble`` (its name), ``rows`` (of ``evaluate``), ``samples``, ``reference`` and
    ``energy``.  A parallel-tempering ensemble is evaluated on its beta = 1 rows.

    ``energy``: the energy to compare with, or a function of the run returning it
    (``particleflow.experiments.load_energy`` rebuilds the run's own).
    ``ensemble``: default the run's only ensemble with more than one frame.
    ``reference``: held-out draws [m, ...]; default exact draws of the run's energy when
    it has a sampler (Gaussian, Gaussian mixture), else none (then no MMD)."""
    moving = [k for k, e in run.ensembles.items() if len(e.positions) > 1]
    if ensemble is None:
        if len(moving) != 1:
            raise ValueError(f"{run.path} has ensembles {', '.join(run.ensembles)}; name the one to evaluate "
                             "(--ensemble)")
        ensemble = moving[0]
    if ensemble not in run.ensembles:
        raise ValueError(f"no ensemble {ensemble!r} in {run.path}; ensembles: {', '.join(run.ensembles)}")
    frames = run.ensembles[ensemble].positions
    if not -len(frames) <= frame < len(frames):
        raise ValueError(f"frame {frame} is out of range for the {len(frames)} frames of {ensemble!r}")
    x = np.asarray(frames[frame])[::replica_groups(run, ensemble)]     # the beta = 1 replicas
    try:
        energy = energy if hasattr(energy, "value") else energy(run)
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(f"{run.path}: its energy cannot be rebuilt ({err}), so there is nothing to compare "
                         "the samples with") from None
    if reference is None and hasattr(energy, "sample"):
        ids = np.arange(n_reference)
        reference = np.asarray(energy.sample(Stream(seed, StreamBlock.EVAL_REFERENCE), 0, ids, np.float64,
                                             Purpose.PROPOSAL))
    if reference is not None:
        reference = np.asarray(reference)
        if reference.ndim < 2 or reference[0].size != x[0].size or not np.isfinite(reference).all():
            raise ValueError(f"the reference must hold finite draws of shape (m, {x[0].size}); got "
                             f"{reference.dtype} {reference.shape}")
    return dict(ensemble=ensemble, rows=evaluate(x, energy, reference, max_points, seed), samples=x,
                reference=reference, energy=energy)
