"""The benchmark's posteriordb log densities (bench/posteriordb/models.py): gradients
against float64 (fourth-order) central differences, and the energy's minimum region agreeing with the
reference draws (their mean has a lower energy than points 3 sd away)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench", "posteriordb"))
import models  # noqa: E402


@pytest.mark.parametrize("cls", models.MODELS, ids=lambda c: c.name)
def test_gradient_matches_central_differences(cls):
    m = cls()
    ref = m.reference().reshape(-1, m.dim)
    rng = np.random.default_rng(0)
    # points from the reference draws and points spread around them
    q = np.concatenate([ref[rng.choice(len(ref), 3)], ref.mean(0) + ref.std(0) * rng.uniform(-2, 2, (3, m.dim))])
    e, g = m.value_and_grad(q)
    assert e.shape == (6,) and g.shape == (6, m.dim) and np.isfinite(g).all()
    fd = np.empty_like(g)
    for j in range(m.dim):
        h = 1e-3 * max(1.0, float(np.abs(q[:, j]).max()))
        dq = np.zeros_like(q)
        dq[:, j] = h
        f = lambda k: m.value_and_grad(q + k * dq)[0]                     # noqa: E731
        fd[:, j] = (f(-2) - 8 * f(-1) + 8 * f(1) - f(2)) / (12 * h)         # fourth-order central difference
    # relative error of each point's gradient vector (the GP's energy itself is noisy at
    # 1e-9 relative: its kernel matrix has condition number ~1e10 with Stan's 1e-10 jitter)
    err = np.linalg.norm(fd - g, axis=1) / np.maximum(1.0, np.linalg.norm(g, axis=1))
    assert err.max() < 1e-6, (m.name, err)


@pytest.mark.parametrize("cls", models.MODELS, ids=lambda c: c.name)
def test_reference_draws_sit_at_low_energy(cls):
    m = cls()
    ref = m.reference().reshape(-1, m.dim)
    assert ref.shape[0] >= 10000 and np.isfinite(ref).all()
    e_ref = m.value_and_grad(ref[::50])[0]
    far = m.value_and_grad(ref[::50] + 3 * ref.std(0))[0]
    assert np.median(far - e_ref) > 2.0
