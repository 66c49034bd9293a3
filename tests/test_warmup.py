"""The automatic warm-up (moves.AutoWarmup), pf.mcmc and its diagnostics, and the
NaN-safety of every adapter: claims checked against closed forms and quadrature."""
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

import particleflow as pf
from conftest import straight_and_resumed
from particleflow.analysis import ess_bulk, ess_tail, rhat_nested, split_rhat

# ---------------------------------------------------------------- an energy that overflows
SLOPE = 100.0


def softplus_naive(x0):
    """log(1 + exp(100 x0)) / 100 computed as a user would: exp overflows for x0 > 7.1,
    the value is inf and the gradient exp / (1 + exp) = inf / inf = NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        ex = np.exp(SLOPE * x0)
        return np.log1p(ex) / SLOPE, ex / (1 + ex)


def overflow_vg(x):
    sp, dsp = softplus_naive(x[:, 0])
    e = 0.5 * (x * x).sum(1) + sp
    g = x.copy()
    g[:, 0] += dsp
    return e, g


OVERFLOW = pf.energies.FromCallable(value_and_grad=overflow_vg, dim=2)


def overflow_mean_x0():
    """E[x0] under exp(-x0^2 / 2 - softplus(100 x0) / 100), by quadrature."""
    def dens(t):
        return math.exp(-0.5 * t * t - np.logaddexp(0.0, SLOPE * t) / SLOPE)
    z = integrate.quad(dens, -12, 12, points=[0.0], limit=200)[0]
    return integrate.quad(lambda t: t * dens(t), -12, 12, points=[0.0], limit=200)[0] / z


def dispersed(n, lo=-7.5, hi=7.0, d=2, seed=0):
    """Starts over a box reaching into the region where the energy overflows."""
    return np.random.default_rng(seed).uniform(lo, hi, (n, d))


def run_moves(move, x0, steps, seed=3):
    sim = pf.Simulation({"chains": pf.Ensemble(x0.copy())}, seed=seed).schedule(move, "chains", name="m")
    sim.run(steps)
    return sim


def test_a_proposal_that_overflows_has_acceptance_zero_not_nan():
    x = np.array([[-7.0, 0.0]] * 64)                 # the drift h * 7 = 28 carries proposals to x0 ~ 21
    mala = pf.moves.MALA(OVERFLOW, 4.0)
    run_moves(mala, x, 1)
    a = mala.last_alpha
    assert np.isfinite(a).all() and ((a >= 0) & (a <= 1)).all()
    assert (a == 0).any()                       # some proposals crossed into the overflow


def test_per_chain_step_sizes_survive_overflowing_proposals():
    """Before the fix, a NaN acceptance probability entered the per-chain dual averaging
    and froze every chain that met one (step size NaN, acceptance 0)."""
    x0 = dispersed(400)
    x0[:, 0] = np.minimum(x0[:, 0], 7.0)         # finite at the start, overflow next door
    ad = pf.moves.AdaptStepSize(pf.moves.MALA(OVERFLOW, 1.0), 0.57, 200, per_chain=True)
    sim = run_moves(ad, x0, 700)
    h = ad.move.step_size
    assert np.isfinite(h).all() and (h > 0).all()
    xs = []
    for _ in range(300):
        sim.run(1)
        xs.append(sim.ensembles["chains"].x[:, 0].copy())
    xs = np.array(xs)
    moved = (np.diff(xs, axis=0) != 0).mean(0)
    assert moved.min() > 0.2                       # every chain moves
    m, se = xs.mean(), xs.std() / math.sqrt(ess_bulk(xs)[0])
    assert abs(m - overflow_mean_x0()) < 4 * se


@pytest.mark.parametrize("mass", ["diag", "dense"])
def test_mass_and_chees_adaptation_survive_an_energy_that_overflows(mass):
    x0 = dispersed(400)
    x0[:, 0] = np.minimum(x0[:, 0], 7.0)
    hmc = pf.moves.HMC(OVERFLOW, 0.2, 5)
    ad = pf.moves.AdaptStepSize(hmc, 0.7, 150, mass=mass, trajectory="chees")
    run_moves(ad, x0, 150)
    assert math.isfinite(hmc.step_size) and hmc.step_size > 0
    assert math.isfinite(hmc.trajectory_length) and hmc.trajectory_length / hmc.step_size < hmc.max_leapfrog
    assert np.isfinite(ad.precond.cov).all()


def test_auto_warmup_from_starts_in_the_overflow_region_gives_the_right_mean():
    x0 = dispersed(1000, lo=-10, hi=10)             # some starts have E = inf
    with warnings.catch_warnings():
        warnings.simplefilter("error", pf.ConvergenceWarning)
        r = pf.mcmc(OVERFLOW, x0, draws=300, seed=2, tune=150)
    x = r.positions[..., 0]
    se = x.std() / math.sqrt(r.ess_bulk[0])
    assert abs(x.mean() - overflow_mean_x0()) < 4 * se
    assert abs(r.positions[..., 1].std() - 1.0) < 0.03


# ---------------------------------------------------------------- the mixture acceptance point
def test_mixture_weights_are_recovered_from_uniform_starts():
    """0.7 N((0, 0), I) + 0.3 N((10, 0), 9 I): from uniform starts over a box around
    both, most starts are in the wide component's basin (so independent chains would
    put too much mass there); the annealing gives each mode its weight."""
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    mix = pf.energies.GaussianMixture(means, covariances=np.array([np.eye(2), 9 * np.eye(2)]), weights=[0.7, 0.3])
    x0 = np.random.default_rng(0).uniform([-5.0, -15.0], [25.0, 15.0], (1000, 2))
    near_wide = mix.value_and_grad(x0)[0]                 # the basin each start would fall into
    d0 = ((x0 - means[0]) ** 2).sum(1)
    d1 = ((x0 - means[1]) ** 2).sum(1) / 9 + 2 * math.log(3) - 2 * math.log(0.3 / 0.7)
    assert (d1 < d0).mean() > 0.5 and np.isfinite(near_wide).all()
    for seed in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pf.ConvergenceWarning)
            r = pf.mcmc(mix, x0, draws=200, seed=seed, tune=150)
        w = (r.positions[-1, :, 0] > 5.0).mean()
        se = math.sqrt(0.3 * 0.7 / r.positions.shape[1])
        assert abs(w - 0.3) < 3 * se, (seed, w)
        assert abs(r.log_z) < 0.15                      # a normalised mixture: log Z = 0


# ---------------------------------------------------------------- determinism and resume
def _mix4():
    return pf.energies.GaussianMixture(np.array([[-3.0, 0.0, 0.0], [3.0, 1.0, 0.0]]), scale=1.0)


def test_mcmc_is_bitwise_reproducible_and_seeds_differ():
    x0 = np.random.default_rng(1).uniform(-6, 6, (200, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pf.ConvergenceWarning)
        a = pf.mcmc(_mix4(), x0, draws=20, tune=20, seed=5)
        b = pf.mcmc(_mix4(), x0, draws=20, tune=20, seed=5)
        c = pf.mcmc(_mix4(), x0, draws=20, tune=20, seed=6)
    assert np.array_equal(a.positions, b.positions) and a.log_z == b.log_z
    assert not np.array_equal(a.positions, c.positions)


SCRIPT = """
import hashlib, warnings, numpy as np, particleflow as pf
warnings.simplefilter("ignore")
e = pf.energies.GaussianMixture(np.array([[-3.0, 0.0, 0.0], [3.0, 1.0, 0.0]]), scale=1.0)
x0 = np.random.default_rng(1).uniform(-6, 6, (200, 3))
for s in ("mala", "hmc"):
    r = pf.mcmc(e, x0, draws=10, tune=20, seed=5, sampler=s)
    print(s, hashlib.sha256(r.positions.tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_mcmc_is_bitwise_the_same_for_any_thread_count():
    out = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(r.stdout)
    assert out[0] == out[1] and out[0].count("mala") == 1


@pytest.mark.parametrize("sampler,at", [("mala", 3), ("mala", 40), ("hmc", 5), ("hmc", 45)])
def test_a_run_stopped_during_warmup_resumes_bitwise(sampler, at):
    """Stopped in the annealing (at 3 or 5 calls) or in the tuning phase (40, 45)."""
    e = _mix4()
    x0 = np.random.default_rng(2).uniform(-6, 6, (120, 3))

    def make():
        mv = pf.inference.build_sampler(e, 3, sampler, "auto", 60)
        return pf.Simulation({"chains": pf.Ensemble(x0.copy())}, seed=4).schedule(mv, "chains", name="w")
    probe = make()
    probe.run(at)
    phase = probe.slots[0].move.phase
    assert phase == ("anneal" if at < 10 else "tune"), phase
    straight, resumed = straight_and_resumed(make, at + 40, at)
    assert np.array_equal(straight.ensembles["chains"].x, resumed.ensembles["chains"].x)
    assert np.array_equal(straight.ensembles["chains"].ids, resumed.ensembles["chains"].ids)
    assert straight.slots[0].move.step_size == resumed.slots[0].move.step_size


# ---------------------------------------------------------------- warnings
def test_separated_modes_with_too_few_chains_warn_instead_of_answering_silently():
    """Two modes 24 sd apart, 1:1, with 40 chains: each annealing group's mode shares
    drift; nested R-hat sees the groups disagree and says so."""
    mix = pf.energies.GaussianMixture(np.array([[-12.0], [12.0]]), scale=1.0)
    x0 = np.random.default_rng(0).uniform(-20, 20, (40, 1))
    fired = []
    for seed in range(4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = pf.mcmc(mix, x0, draws=100, tune=50, seed=seed, superchains=4)
        groups = [(r.positions[-1, lo:lo + 10, 0] > 0).mean() for lo in range(0, 40, 10)]
        if len(set(groups)) > 1:                              # the groups' mode shares differ
            assert np.max(r.rhat_nested) > 1.01
            assert any(issubclass(c.category, pf.ConvergenceWarning) and "nested R-hat" in str(c.message)
                       for c in caught)
            assert any("nested R-hat" in w for w in r.warnings)
            fired.append(seed)
    assert fired


def test_stuck_chains_are_named():
    """warmup='tune' keeps the user's starts: chains started on the far side of a
    wall of overflow never move, and the result says so."""
    x0 = np.random.default_rng(0).uniform(-2, 2, (200, 2))
    x0[:7, 0] = 11.0                                        # E = inf there: every proposal is rejected
    with pytest.warns(pf.ConvergenceWarning, match="7 of 200 chains are stuck"):
        r = pf.mcmc(OVERFLOW, x0, draws=50, tune=50, warmup="tune")
    assert r.n_stuck == 7


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    (dict(x0=np.full((10, 2), np.nan)), "x0 has NaN"),
    (dict(x0=np.zeros(10)), "x0 must have shape"),
    (dict(x0=np.zeros((10, 3))), "dimension"),
    (dict(draws=0), "draws must be an integer >= 1"),
    (dict(sampler="nuts"), "sampler must be one of"),
    (dict(warmup="long"), "warmup must be one of"),
    (dict(thin=0), "thin must be"),
    (dict(draws=10 ** 9), "GiB"),
])
def test_bad_input_is_one_clear_error_naming_the_argument(kw, match):
    args = dict(energy=pf.energies.Gaussian(np.zeros(2), np.eye(2)), x0=np.zeros((10, 2)), draws=10) | kw
    with pytest.raises(ValueError, match=match):
        pf.mcmc(**args)


def test_an_energy_that_is_non_finite_everywhere_is_refused():
    def bad(x):
        return np.full(x.shape[0], np.nan), np.zeros_like(x)
    with pytest.raises(ValueError, match="not finite at any"):
        pf.mcmc(bad, np.random.default_rng(0).normal(size=(40, 2)), draws=10)


# ---------------------------------------------------------------- the diagnostics themselves
def test_ess_tail_and_rhat_agree_with_arviz():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    x = np.zeros((400, 6))
    for t in range(1, 400):                                    # AR(0.8) chains
        x[t] = 0.8 * x[t - 1] + rng.standard_normal(6)
    ours_tail, ours_bulk, ours_rhat = ess_tail(x)[0], ess_bulk(x)[0], split_rhat(x)[0]
    d = az.convert_to_dataset(x.T)                         # [chain, draw]
    assert ours_tail == pytest.approx(float(az.ess(d, method="tail")["x"]), rel=1e-6)
    assert ours_bulk == pytest.approx(float(az.ess(d, method="bulk")["x"]), rel=1e-6)
    assert ours_rhat == pytest.approx(float(az.rhat(d)["x"]), rel=1e-6)


def test_rhat_nested_closed_form_and_behaviour():
    """nR^2 - 1 = B / W with the definitions written out by hand, and the two behaviours
    that make it the many-short-chains diagnostic: chains that never leave their mode
    pass when the superchains hold the modes alike, fail when they do not."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 8)) + np.arange(8)[None] * 0.1
    K, M = 2, 4                      # 8 chains of 5 draws, 2 superchains of 4
    cm = x.mean(0).reshape(K, M)
    B = cm.mean(1).var(ddof=1)
    W = np.mean([cm[k].var(ddof=1) + x[:, 4 * k:4 * k + 4].var(0, ddof=1).mean() for k in range(K)])
    assert rhat_nested(x, 2)[0] == pytest.approx(math.sqrt(1 + B / W), rel=1e-12)
    # 400 chains of 10 draws, each stuck in mode -5 or +5
    modes = np.where(np.arange(400) % 2 == 0, -5.0, 5.0)
    y = modes[None] + rng.standard_normal((10, 400))
    assert rhat_nested(y, 4)[0] < 1.01 < split_rhat(y)[0]
    y_bad = np.sort(modes)[None] + rng.standard_normal((10, 400))     # superchains hold different modes
    assert rhat_nested(y_bad, 4)[0] > 1.5


def test_result_exports_to_inferencedata():
    pytest.importorskip("arviz")
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    r = pf.mcmc(e, np.random.default_rng(0).uniform(-2, 2, (40, 2)), draws=30, tune=20, seed=1)
    idata = r.to_inferencedata()
    assert idata.posterior["x"].shape == (40, 30, 2)
    assert np.allclose(idata.sample_stats["lp"].values, -0.5 * (np.swapaxes(r.positions, 0, 1) ** 2).sum(-1),
                       rtol=1e-12)


def test_gaussian_moments_and_log_z_from_a_far_start():
    """A correlated 5-D Gaussian started far off-centre: moments within their Monte
    Carlo error and log Z within 4 of its (annealing) standard error."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5, 5))
    C = A @ A.T + 0.1 * np.eye(5)
    mean = np.arange(5.0)
    e = pf.energies.Gaussian(mean, np.linalg.inv(C))
    r = pf.mcmc(e, rng.uniform(-10, 10, (1000, 5)), draws=200, seed=1)
    flat = r.positions.reshape(-1, 5)
    z = (flat.mean(0) - mean) / (np.sqrt(np.diag(C)) / np.sqrt(r.ess_bulk))
    assert np.abs(z).max() < 4
    assert np.allclose(flat.std(0) / np.sqrt(np.diag(C)), 1, atol=0.03)
    log_z = 0.5 * (5 * math.log(2 * math.pi) + np.linalg.slogdet(C)[1])
    assert abs(r.log_z - log_z) < 0.2
    assert stats.kstest(flat[::7, 0], "norm", args=(mean[0], math.sqrt(C[0, 0]))).pvalue > 1e-3


def test_mcmc_counts_the_divergences_of_its_draws_only(monkeypatch):
    """HMC streams a running total; pf.mcmc reports the divergent transitions of the
    sampling steps alone (the warm-up's, here over a thousand, are not among them)."""
    import particleflow.moves.hmc as hmc
    counts = []
    real = hmc.count_divergent
    monkeypatch.setattr(hmc, "count_divergent", lambda ens, la: counts.append(real(ens, la)) or counts[-1])
    r = pf.mcmc(OVERFLOW, dispersed(400), draws=40, tune=50, warmup="tune", sampler="hmc", seed=1)
    assert sum(counts[:-40]) > 100                      # the warm-up diverged
    assert r.divergences == sum(counts[-40:])
