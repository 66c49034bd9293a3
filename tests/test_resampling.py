"""Resampling: unbiasedness (chi-square over repeated draws) and variance ordering."""
import numpy as np
import pytest
from scipy import stats

import particleflow as pf
from particleflow.moves import SCHEMES, resample_ancestors
from particleflow.random import Stream

N = 40
WEIGHTS = np.random.default_rng(0).exponential(size=N) ** 2
WEIGHTS /= WEIGHTS.sum()
R = 4000   # repeated resamplings


def _counts(scheme):
    s = Stream(123)
    return np.stack([np.bincount(resample_ancestors(WEIGHTS, scheme, s, t), minlength=N)
                     for t in range(R)])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unbiased_offspring_counts(scheme):
    """E[count_i] = n w_i: the total over R repetitions is compared with R n w_i by
    a chi-square test on the pooled counts (each resampling gives n offspring)."""
    counts = _counts(scheme)
    assert np.all(counts.sum(1) == N)
    total = counts.sum(0)
    expected = R * N * WEIGHTS
    # pooled counts of an unbiased scheme are at most as dispersed as multinomial
    # counts, so the Pearson statistic is a conservative test
    p = stats.chisquare(total, expected).pvalue
    assert p > 1e-4, (scheme, p)
    # and every mean within 4 standard errors; the multinomial variance n w (1 - w)
    # bounds the variance of all four schemes
    se = np.sqrt(N * WEIGHTS * (1 - WEIGHTS) / R)
    assert np.all(np.abs(counts.mean(0) - N * WEIGHTS) < 4 * se)


def test_variance_ordering():
    var = {s: _counts(s).var(0).sum() for s in SCHEMES}
    assert var["systematic"] <= var["stratified"] <= var["multinomial"]
    assert var["residual"] <= var["multinomial"]
    # residual and systematic never deviate from floor/ceil(n w_i) by more than needed
    c = _counts("systematic")
    assert np.all(c >= np.floor(N * WEIGHTS) - 0) and np.all(c <= np.ceil(N * WEIGHTS))


def test_move_resets_weights_and_gives_fresh_ids():
    rng = np.random.default_rng(1)
    ens = pf.Ensemble(rng.standard_normal((100, 2)), log_weights=rng.standard_normal(100) * 3,
                      signs=np.where(rng.uniform(size=100) < 0.5, 1, -1))
    x_before, s_before = ens.x.copy(), ens.signs.copy()
    st = pf.moves.Resample("residual")(ens, Stream(0), 0)
    assert st["resampled"] == 1.0
    np.testing.assert_array_equal(ens.log_weights, 0)
    np.testing.assert_array_equal(ens.ids, np.arange(100, 200))
    # every new particle is a copy of an old one, with its sign
    rows = {tuple(r): s for r, s in zip(x_before, s_before)}
    assert all(rows[tuple(r)] == s for r, s in zip(ens.x, ens.signs))


def test_ess_threshold_gates_resampling():
    ens = pf.Ensemble(np.zeros((10, 1)), log_weights=np.zeros(10))
    st = pf.moves.Resample("systematic", ess_threshold=0.5)(ens, Stream(0), 0)
    assert st["resampled"] == 0.0
    np.testing.assert_array_equal(ens.ids, np.arange(10))
    ens.log_weights[:] = np.r_[10.0, np.zeros(9)]
    assert pf.moves.Resample("systematic", ess_threshold=0.5)(ens, Stream(0), 0)["resampled"] == 1.0


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_bad_threshold(bad):
    with pytest.raises(ValueError, match="ess_threshold"):
        pf.moves.Resample("systematic", ess_threshold=bad)


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ValueError, match="multinomial, residual, stratified, systematic"):
        pf.moves.Resample("bootstrap")
