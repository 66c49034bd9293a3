"""Kernels against their numpy oracles, across thread counts, and on the CUDA simulator."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import particleflow as pf
from particleflow.backend import reference_path
from particleflow.moves.fastpaths import mixture_kernel
from conftest import ring_mixture

HERE = os.path.dirname(os.path.abspath(__file__))


def _moves(energy):
    return [pf.moves.Langevin(energy, 0.05), pf.moves.MALA(energy, 0.2),
            pf.moves.HMC(energy, 0.1, 4, mass=[1.0, 2.0])]


@pytest.mark.parametrize("energy", [ring_mixture(),
                                    pf.energies.Gaussian(np.zeros(2), np.array([[3.0, 0.5], [0.5, 1.0]]))],
                         ids=repr)
def test_fused_kernels_equal_numpy_oracle(energy):
    """The fused kernels and the array path (numpy + the same Philox normals) agree
    to 1e-12 after 20 steps in float64."""
    x0 = np.random.default_rng(0).standard_normal((3000, 2)) * 2
    for fused, array in zip(_moves(energy), _moves(energy)):
        a, b = pf.Ensemble(x0), pf.Ensemble(x0)
        s = pf.random.Stream(11)
        for t in range(20):
            sa = fused(a, s, t)
            with reference_path():
                sb = array(b, s, t)
            if "acceptance" in sa:
                assert sa["acceptance"] == sb["acceptance"]
        np.testing.assert_allclose(a.x, b.x, rtol=1e-12, atol=1e-12)
    assert mixture_kernel(energy, "ula", a) is not None
    with reference_path():
        assert mixture_kernel(energy, "ula", a) is None


def _run_schedule(n_threads):
    numba.set_num_threads(n_threads)
    try:
        mix = ring_mixture()
        x0 = np.random.default_rng(1).standard_normal((5000, 2)).astype(np.float32)
        sim = pf.Simulation({"c": pf.Ensemble(x0), "w": pf.Ensemble(x0.astype(np.float64))}, seed=3)
        sim.schedule(pf.moves.Langevin(mix, 0.05), "c")
        sim.schedule(pf.moves.MALA(mix, 0.2), "c", every=2)
        sim.schedule(pf.moves.HMC(mix, 0.1, 3), "w", every=5)
        sim.schedule(pf.moves.Reweight(mix, ring_mixture(scale=1.3)), "w", every=50)
        sim.schedule(pf.moves.Resample("systematic", ess_threshold=0.9), "w", every=50)
        sim.run(1000)
        return sim.ensembles["c"].x.copy(), sim.ensembles["w"].x.copy(), sim.ensembles["w"].ids.copy()
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_bitwise_identical_across_thread_counts(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    from particleflow.kernels import _jit
    monkeypatch.setattr(_jit, "SERIAL_MAX", 0)          # every launch threaded
    one = _run_schedule(1)
    two = _run_schedule(2)
    for a, b in zip(one, two):
        assert a.tobytes() == b.tobytes()
    again = _run_schedule(2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(two, again))


def test_serial_and_threaded_launches_are_bitwise_equal(monkeypatch):
    """Below ``SERIAL_MAX`` particles a fused kernel runs on the calling thread alone;
    the values are those of the threaded block driver, bit for bit."""
    from particleflow.kernels import _jit
    monkeypatch.setattr(_jit, "SERIAL_MAX", 10 ** 9)
    serial = _run_schedule(2)
    monkeypatch.setattr(_jit, "SERIAL_MAX", 0)
    threaded = _run_schedule(2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(serial, threaded))


def test_pairwise_kernels_equal_numpy():
    rng = np.random.default_rng(2)
    theta = rng.standard_normal((64, 15))
    x = rng.standard_normal((3000, 15))
    S, G = pf.moves.relu_feature_means(theta, x)
    dots = x @ theta.T                                   # [n, m]
    np.testing.assert_allclose(S, np.maximum(dots, 0).mean(0), rtol=1e-12)
    np.testing.assert_allclose(G, ((dots > 0).T @ x) / x.shape[0], rtol=1e-12, atol=1e-14)
    a = rng.standard_normal(64) / 64
    f, g = pf.moves.relu_network(x, theta, a)
    np.testing.assert_allclose(f, np.maximum(dots, 0) @ a, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, ((dots > 0) * a) @ theta, rtol=1e-12, atol=1e-14)
    # the CPU block kernels reduce in a fixed order: bitwise equal for 1 and 2 threads
    import numba
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = pf.moves.relu_feature_means(theta, x) + pf.moves.relu_network(x, theta, a)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = pf.moves.relu_feature_means(theta, x) + pf.moves.relu_network(x, theta, a)
    finally:
        numba.set_num_threads(saved)
    assert all(u.tobytes() == v.tobytes() for u, v in zip(one, two))
    # float32 through the same kernels
    S32, G32 = pf.moves.relu_feature_means(theta.astype(np.float32), x.astype(np.float32))
    np.testing.assert_allclose(S32, S, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(G32, G, rtol=1e-4, atol=1e-5)


def test_resampling_merge_equals_parallel_search():
    from particleflow.kernels.resampling import ancestors_merge, search
    from particleflow.kernels._jit import CPU
    rng = np.random.default_rng(3)
    w = rng.exponential(size=10_000) ** 3
    cdf = np.cumsum(w) / w.sum()
    cdf[-1] = 1
    u = np.sort(rng.uniform(size=10_000))
    a = np.empty(10_000, np.int64)
    b = np.empty(10_000, np.int64)
    ancestors_merge(cdf, u, a)
    search(CPU)(10_000, u, cdf, 10_000, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.searchsorted(cdf, u, side="right"))


CUDASIM_SCRIPT = textwrap.dedent(r"""
    import numpy as np
    from numba import cuda
    assert cuda.is_available()          # the simulator
    from particleflow.kernels import philox as P, analytic as A, pairwise as W
    from particleflow.kernels.resampling import search, ancestors_merge
    from particleflow.kernels._jit import CPU, CUDA
    ids = np.arange(40, dtype=np.int64) * 977 + 2 ** 33
    k0, k1 = np.uint64(7), np.uint64(261)
    for dt in (np.float64, np.float32):
        for kind in ("uniform", "normal"):
            a = np.empty(40 * 8, dt); b = np.empty(40 * 8, dt)
            P.fill_kernel(kind, CPU, dt)(40, a, ids, 8, 5, k0, k1)
            P.fill_kernel(kind, CUDA, dt)(40, b, ids, 8, 5, k0, k1)
            if kind == "uniform":
                assert np.array_equal(a, b), kind          # the same integer stream
            else:
                tol = 1e-12 if dt == np.float64 else 1e-5
                assert np.allclose(a, b, rtol=tol, atol=tol), (kind, dt, np.abs(a - b).max())
    ang = 2 * np.pi * np.arange(6) / 6
    mu = (3 * np.stack([np.cos(ang), np.sin(ang)], 1)).ravel()
    prec = np.ones(6); logc = np.full(6, -np.log(6 * 2 * np.pi))
    x = np.random.default_rng(0).standard_normal(80) * 2
    ida = np.arange(40, dtype=np.int64)
    outs = {}
    for tgt in (CPU, CUDA):
        o = np.empty(80); A.kernel("ula", 2, 6, True, np.float64, tgt)(40, x, o, ida, mu, prec, logc, 0.05, 0.3, 3, k0, k1)
        o2 = np.empty(80); e = np.empty(40); acc = np.empty(40)
        A.kernel("mala", 2, 6, True, np.float64, tgt)(40, x, o2, e, acc, ida, mu, prec, logc, 0.2, 0.6324555320336759, 3, k0, k1, np.uint64(262))
        o3 = np.empty(80); e3 = np.empty(40); acc3 = np.empty(40)
        scratch = [np.empty(80) for _ in range(3)] + [np.empty(40) for _ in range(2)]
        A.kernel("hmc", 2, 6, True, np.float64, tgt)(40, x, o3, e3, acc3, ida, mu, prec, logc, 0.1, 3, np.ones(2), np.ones(2), 3, k0, k1, np.uint64(262), *scratch)
        outs[tgt.name] = (o, o2, e, acc, o3, e3, acc3)
    for a, b in zip(outs["cpu"], outs["cuda"]):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), np.abs(a - b).max()
    rng = np.random.default_rng(1)
    th = rng.standard_normal((8, 5)); xx = rng.standard_normal((30, 5))
    res = {}
    for tgt in (CPU, CUDA):
        S = np.zeros(8); G = np.zeros(40)
        W.kernel("neuron_sums", tgt)(8, th.ravel(), xx.ravel(), 30, 5, 1 / 30, S, G)
        f = np.empty(30); g = np.empty(150)
        W.kernel("network", tgt)(30, xx.ravel(), th.ravel(), np.full(8, 0.125), 8, 5, f, g)
        res[tgt.name] = (S, G, f, g)
    for a, b in zip(res["cpu"], res["cuda"]):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-14)
    w = rng.exponential(size=50); cdf = np.cumsum(w) / w.sum(); cdf[-1] = 1
    u = np.sort(rng.uniform(size=50)); a = np.empty(50, np.int64); b = np.empty(50, np.int64)
    ancestors_merge(cdf, u, a); search(CUDA)(50, u, cdf, 50, b)
    assert np.array_equal(a, b)
    print("CUDASIM-OK")
""")


def test_gpu_kernels_on_cuda_simulator_equal_cpu():
    """Every numba.cuda driver, run by numba's CUDA simulator, equals the CPU kernel."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "CUDASIM-OK" in r.stdout, r.stderr[-3000:]


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """Importing particleflow sets OMP_WAIT_POLICY=PASSIVE (spinning workers made 2
    threads 3-30x slower than 1 on a shared machine) and keeps a user's own setting."""
    import subprocess
    import sys
    code = "import os, particleflow; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"


def test_small_reductions_and_updates_run_serially_with_the_same_numbers(monkeypatch):
    """block_sums and the elementwise updates take the calling thread alone for small
    inputs; the numbers equal the threaded kernels' bit for bit."""
    from particleflow.kernels import _jit, elementwise, reductions
    x = np.random.default_rng(4).standard_normal((3000, 3)).astype(np.float32)
    out_s, out_t = np.empty((6, 3)), np.empty((6, 3))
    reductions.block_sums(x, 512, out_s)
    monkeypatch.setattr(_jit, "SERIAL_MAX", 0)
    reductions.block_sums(x, 512, out_t)
    assert out_s.tobytes() == out_t.tobytes()
    np.testing.assert_allclose(out_s.sum(0), x.astype(np.float64).sum(0), rtol=1e-12)
    g, z = x[::-1].copy(), x * 0.5
    small = elementwise.langevin_update(x, g, z, 0.1, 0.3, np.empty_like(x))
    threaded = np.empty_like(x)
    elementwise._x_minus_hg_plus_cz(x.reshape(-1), g.reshape(-1), z.reshape(-1), np.float32(0.1), np.float32(0.3),
                                    threaded.reshape(-1))
    assert small.tobytes() == threaded.tobytes() == (x - np.float32(0.1) * g + np.float32(0.3) * z).tobytes()
