import numpy as np
import pytest

import particleflow as pf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contract_and_weighted_moments(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)).astype(dtype)
    lw = rng.standard_normal(50)
    e = pf.Ensemble(x, log_weights=lw, name="chains")
    assert (e.n, e.event_shape, e.dim, e.dtype) == (50, (3,), 3, dtype)
    np.testing.assert_array_equal(e.ids, np.arange(50))
    w = np.exp(lw - lw.max())
    w /= w.sum()
    np.testing.assert_allclose(e.weights(), w, rtol=1e-5)
    np.testing.assert_allclose(e.ess(), 1 / np.sum(w ** 2), rtol=1e-5)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(e.mean(), w @ xd, rtol=1e-5, atol=1e-6)
    c = xd - w @ xd
    np.testing.assert_allclose(e.cov(), (c * w[:, None]).T @ c, rtol=1e-4, atol=1e-6)
    assert e.x is not x                       # the ensemble owns a copy
    cp = e.copy()
    cp.x[0, 0] = 99
    assert e.x[0, 0] != 99


def test_unweighted_and_images():
    e = pf.Ensemble(np.zeros((4, 3, 8, 8)))
    assert e.event_shape == (3, 8, 8) and e.dim == 192
    assert e.ess() == 4.0
    np.testing.assert_allclose(e.weights(), 0.25)
    assert e.mean().shape == (3, 8, 8)


def test_to_cpu_roundtrip_and_gpu_error():
    e = pf.Ensemble(np.ones((3, 2)), signs=[1, -1, 1])
    c = e.to("cpu")
    np.testing.assert_array_equal(c.signs, [1, -1, 1])
    if not pf.backend.has_gpu():
        with pytest.raises(RuntimeError, match="device='cpu'"):
            e.to("gpu")
    with pytest.raises(ValueError, match="device"):
        e.to("tpu")


def test_fresh_ids():
    e = pf.Ensemble(np.zeros((3, 1)), ids=[4, 9, 2])
    np.testing.assert_array_equal(e.fresh_ids(2), [10, 11])
    np.testing.assert_array_equal(e.fresh_ids(1), [12])


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=np.array([[np.nan, 0.0]])), "NaN or Inf"),
    (dict(x=np.zeros(5)), "shape"),
    (dict(x=np.zeros((0, 2))), "n >= 1"),
    (dict(x=np.zeros((3, 2)), log_weights=np.zeros(4)), "log_weights must have shape"),
    (dict(x=np.zeros((3, 2)), log_weights=[0, np.nan, 0]), "NaN"),
    (dict(x=np.zeros((3, 2)), signs=[1, 0, 1]), "signs"),
    (dict(x=np.zeros((3, 2)), ids=[0, 0, 1]), "unique"),
    (dict(x=np.zeros((3, 2)), ids=[0, 1]), "ids must"),
    (dict(x=np.array([["a", "b"]])), "float"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pf.Ensemble(**kwargs)
