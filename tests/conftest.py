import numpy as np
import pytest

import particleflow as pf


def ring_mixture(K=6, radius=3.0, scale=1.0):
    ang = 2 * np.pi * np.arange(K) / K
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    return pf.energies.GaussianMixture(means, scale=scale)


@pytest.fixture
def mixture():
    return ring_mixture()


@pytest.fixture
def ill_conditioned():
    """Paper 000, Example 1.1: precision [[1000, -1], [-1, 2]]."""
    return pf.energies.Gaussian(np.zeros(2), np.array([[1000.0, -1.0], [-1.0, 2.0]]))


def moment_z_scores(x, mean, cov):
    """z-scores of the sample mean and covariance of iid rows ``x`` against exact
    ``mean``/``cov``; standard errors from the sample itself (ESS = number of rows)."""
    n = x.shape[0]
    m = x.mean(0)
    z_mean = (m - mean) / np.sqrt(x.var(0) / n)
    c = x - m
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / np.sqrt(n)
    z_cov = (prods.mean(0) - cov) / se_cov
    return z_mean, z_cov
