import numpy as np
import pytest
from scipy import stats

from particleflow.kernels import philox as P
from particleflow.kernels._jit import CPU
from particleflow.random import Purpose, Stream


@pytest.mark.parametrize("ctr,key,expected", [
    # Random123 known-answer vectors for philox4x32_10
    ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff,) * 4, (0xffffffff, 0xffffffff), (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
])
def test_known_answer_vectors(ctr, key, expected):
    args = [np.uint64(v) for v in ctr + key]
    assert tuple(int(v) for v in P.philox4x32_10(*args)) == expected
    # the compiled CPU device function gives the same words
    ns = P.namespace(CPU, np.float64)
    assert tuple(int(v) for v in ns["PHILOX"](*args)) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_numpy_oracle(dtype):
    s = Stream(42, 3)
    ids = np.arange(1000, dtype=np.int64) * 7919 + 2 ** 40   # ids above 2^32 use c3
    k0, k1 = s.key(Purpose.LANGEVIN_NOISE)
    u = s.uniform(17, ids, 7, Purpose.LANGEVIN_NOISE, dtype)
    assert u.dtype == dtype
    np.testing.assert_array_equal(u, P.uniform_numpy(k0, k1, 17, ids, 7, dtype))
    z = s.normal(17, ids, 7, Purpose.LANGEVIN_NOISE, dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(z, P.normal_numpy(k0, k1, 17, ids, 7, dtype), rtol=tol, atol=tol)


def test_uniform_open_interval_and_distribution():
    u = Stream(1).uniform(0, np.arange(200_000), 1)[:, 0]
    assert u.min() > 0 and u.max() < 1
    # KS against U(0,1) at a fixed seed: p-value far from 0
    assert stats.kstest(u, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normals_are_standard_normal(dtype):
    z = Stream(5).normal(3, np.arange(50_000), 4, dtype=dtype).ravel().astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_streams_are_pure_functions_and_distinct():
    s = Stream(9)
    ids = np.arange(3000)
    a = s.normal(5, ids, 3)
    np.testing.assert_array_equal(a, s.normal(5, ids, 3))            # no hidden state
    np.testing.assert_array_equal(a[::-1], s.normal(5, ids[::-1], 3))  # follows ids, not slots
    for other in (s.normal(6, ids, 3), Stream(10).normal(5, ids, 3), s.substream(1).normal(5, ids, 3),
                  s.normal(5, ids, 3, purpose=Purpose.HMC_MOMENTUM)):
        # independent streams: correlation within 4 standard errors (1/sqrt(N)) of 0
        assert np.abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 4 / np.sqrt(a.size)
        assert not np.any(a == other)


def test_draws_are_prefix_consistent():
    """Draw j of a particle does not depend on how many draws were asked for."""
    s = Stream(2)
    np.testing.assert_array_equal(s.normal(1, np.arange(10), 3), s.normal(1, np.arange(10), 9)[:, :3])


@pytest.mark.parametrize("bad", [-1, 2 ** 32, 1.5, True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        Stream(bad)


def test_bad_step():
    with pytest.raises(ValueError, match="step"):
        Stream(0).normal(-1, np.arange(3), 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 5, 12, 20, 66])
@pytest.mark.parametrize("n", [300, 5000])
def test_exact_width_panels_match_oracle_and_fill_out(dtype, d, n):
    """Rows that are not a multiple of 4 or wider than 8 draws are filled by vectorised
    8-draw panels (kernels/philox.py, ``row_filler``; 5000 rows: blocks of 2048 on the
    threads, the last partial): same draws as the oracle (bitwise for uniforms) and
    bitwise those of the generic per-particle kernel, into a caller's buffer with
    ``out=``."""
    from particleflow.backend import kernel_target
    s = Stream(5, 2)
    ids = np.arange(n, dtype=np.int64) * 31 + 2 ** 33
    k0, k1 = s.key(Purpose.LANGEVIN_NOISE)
    u = s.uniform(9, ids, d, Purpose.LANGEVIN_NOISE, dtype)
    assert u.shape == (n, d) and u.flags.c_contiguous
    np.testing.assert_array_equal(u, P.uniform_numpy(k0, k1, 9, ids, d, dtype))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    z = s.normal(9, ids, d, Purpose.LANGEVIN_NOISE, dtype)
    np.testing.assert_allclose(z, P.normal_numpy(k0, k1, 9, ids, d, dtype), rtol=tol, atol=tol)
    width = 4 * ((d + 3) // 4)
    generic = np.empty(n * width, dtype)
    P.fill_kernel("normal", kernel_target(ids), dtype)(n, generic, ids, width, 9, k0, k1)
    np.testing.assert_array_equal(z, generic.reshape(n, width)[:, :d])
    buf = np.full((n, d), np.nan, dtype)
    assert s.normal(9, ids, d, Purpose.LANGEVIN_NOISE, dtype, out=buf) is buf
    np.testing.assert_array_equal(buf, z)
    with pytest.raises(ValueError, match="out must be"):
        s.normal(9, ids, d + 1, Purpose.LANGEVIN_NOISE, dtype, out=buf)
