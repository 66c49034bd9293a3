"""Hand-derived network derivatives against float64 central finite differences."""
import contextlib

import numpy as np
import pytest

import particleflow as pf
from particleflow.backend import reference_path
from particleflow.energies.layers import ACTIVATIONS, col2im, col2im_xp, im2col, im2col_xp

EPS = 1e-6


def rel_err(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(b)), 1e-300)


def fd_dir(f, x, d, eps=EPS):
    return (f(x + eps * d) - f(x - eps * d)) / (2 * eps)


def nets():
    out = [pf.energies.MLP([3, 7, 5, 1], activation=a, seed=1) for a in ACTIVATIONS if a not in ("relu", "leaky_relu")]
    out.append(pf.energies.ConvNet((2, 6, 6), [3, 4, 1], [3, 2, 3], [1, 2, 1], [1, 1, 0], activation="softplus", seed=2))
    out.append(pf.energies.ConvNet((1, 5, 5), [2], [3], [1], [0], activation="tanh", seed=3))   # ends in Dense
    return out


def inputs(net, n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + net.input_shape), rng.standard_normal((n,) + net.input_shape)


@pytest.mark.parametrize("net", nets(), ids=repr)
def test_grad_x(net):
    x, d = inputs(net, 5, 0)
    g = net.grad(x)
    fd = np.array([fd_dir(net.value, x[i:i + 1], d[i:i + 1])[0] for i in range(5)])
    assert rel_err((g * d).reshape(5, -1).sum(1), fd) < 1e-6


@pytest.mark.parametrize("net", nets(), ids=repr)
def test_hvp_and_directional(net):
    x, v = inputs(net, 4, 1)
    Hv = net.hvp(x, v)
    fd = fd_dir(net.grad, x, v)             # d/de grad E(x + e v) = H v
    assert rel_err(Hv, fd) < 1e-6
    dd = net.directional_derivative(x, v)
    np.testing.assert_allclose(dd, (net.grad(x) * v).reshape(4, -1).sum(1), rtol=1e-10, atol=1e-12)


def _perturbed(net, direction, eps):
    p = {k: v + eps * direction[k] for k, v in net.params.items()}
    net.set_params(p)


@pytest.mark.parametrize("net", nets(), ids=repr)
def test_grad_params_and_directional_params(net):
    x, v = inputs(net, 4, 2)
    c = np.random.default_rng(3).standard_normal(4)
    rng = np.random.default_rng(4)
    base = {k: a.copy() for k, a in net.params.items()}
    direction = {k: rng.standard_normal(a.shape) for k, a in base.items()}

    def along(f):
        vals = []
        for s in (+1, -1):
            net.set_params(base)
            _perturbed(net, direction, s * EPS)
            vals.append(f())
        net.set_params(base)
        return (vals[0] - vals[1]) / (2 * EPS)

    g = net.grad_params(x, c)
    fd = along(lambda: c @ net.value(x))
    assert rel_err(sum((g[k] * direction[k]).sum() for k in g), fd) < 1e-6
    gd = net.grad_params_directional(x, v, c)
    fd = along(lambda: c @ net.directional_derivative(x, v))
    assert rel_err(sum((gd[k] * direction[k]).sum() for k in gd), fd) < 1e-6


def test_relu_networks_away_from_kinks():
    for act in ("relu", "leaky_relu"):
        net = pf.energies.MLP([3, 8, 8, 1], activation=act, seed=5)
        x, d = inputs(net, 6, 5)
        g = net.grad(x)
        fd = np.array([fd_dir(net.value, x[i:i + 1], d[i:i + 1])[0] for i in range(6)])
        assert rel_err((g * d).sum(1), fd) < 1e-6
        np.testing.assert_allclose(net.hvp(x, d), 0, atol=1e-12)   # piecewise linear


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_a_piecewise_linear_network_skips_the_hessian_pass_with_the_same_zeros(dt):
    """ReLU / LeakyReLU networks (Nijkamp's ConvNet, an MLP) return hvp = 0 without a
    pass: bitwise what the tangent passes compute (sigma'' = 0), and what central finite
    differences of the gradient give away from the kinks; a non-finite input still takes
    the pass.  A tanh network is not piecewise linear."""
    conv = pf.energies.ConvNet.nijkamp(4, 8, channels=1, seed=1, dtype=dt)
    mlp = pf.energies.MLP([3, 8, 8, 1], activation="relu", seed=2, dtype=dt)
    assert conv.piecewise_linear() and mlp.piecewise_linear()
    assert not pf.energies.MLP([3, 8, 1], activation="tanh").piecewise_linear()
    for net in (conv, mlp):
        x, v = (a.astype(dt) for a in inputs(net, 6, 7))
        fast = net.hvp(x, v)
        with reference_path():
            full = net.hvp(x, v)
        assert fast.dtype == full.dtype == dt and fast.tobytes() == full.tobytes() == np.zeros_like(x).tobytes()
        x64, v64 = inputs(net, 6, 7)
        if dt == np.float64:
            assert np.abs(fd_dir(net.grad, x64, v64)).max() < 1e-6
        for a in (x, v):                                       # non-finite input: the pass itself
            a[2].flat[0] = np.nan
            with reference_path():
                full = net.hvp(x, v)
            assert net.hvp(x, v).tobytes() == full.tobytes()
        assert np.isnan(full[2]).any()                         # a NaN in v reaches the output


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (4, 2, 1), (3, 1, 1), (4, 1, 0), (2, 3, 0)])
def test_im2col_col2im_are_adjoint_and_match_numpy(k, s, p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 7, 3))
    cols, _ = im2col(x, k, k, s, p)
    np.testing.assert_array_equal(cols, im2col_xp(x, k, k, s, p)[0])        # numba == numpy oracle
    y = rng.standard_normal(cols.shape)
    back = col2im(y, x.shape, k, k, s, p)
    np.testing.assert_allclose(back, col2im_xp(y, x.shape, k, k, s, p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((cols * y).sum(), (x * back).sum(), rtol=1e-12)


def test_conv_matches_direct_convolution():
    net = pf.energies.ConvNet((2, 5, 5), [3], [3], [1], [1], seed=0)
    conv = net.layers[1]
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5))
    z = conv.forward(x.transpose(0, 2, 3, 1))[0].transpose(0, 3, 1, 2)
    W, b = conv.params["weight"], conv.params["bias"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.array([[[(xp[0, :, i:i + 3, j:j + 3] * W[o]).sum() + b[o] for j in range(5)] for i in range(5)]
                    for o in range(3)])
    np.testing.assert_allclose(z[0], ref, rtol=1e-12)


def test_float32_close_to_float64():
    n64 = pf.energies.MLP([4, 16, 16, 1], seed=7)
    n32 = pf.energies.MLP([4, 16, 16, 1], seed=7, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((50, 4))
    g64 = n64.grad(x)
    g32 = n32.grad(x.astype(np.float32))
    assert g32.dtype == np.float32
    assert np.max(np.abs(g32 - g64)) < 1e-4 * max(1.0, np.abs(g64).max())


def test_nijkamp_at_small_widths_and_sizes():
    net = pf.energies.ConvNet.nijkamp(8, 8, channels=1)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8))
    assert net.value(x).shape == (3,) and [tuple(v.shape) for k, v in net.params.items() if "weight" in k] == \
        [(8, 1, 3, 3), (16, 8, 4, 4), (1, 16, 4, 4)]
    assert len([k for k in pf.energies.ConvNet.nijkamp(4, 16, channels=1).params if "weight" in k]) == 4


def test_nijkamp_architecture_and_chunking():
    net = pf.energies.ConvNet.nijkamp(32, 32)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes["1.weight"] == (32, 3, 3, 3) and shapes["3.weight"] == (64, 32, 4, 4)
    assert shapes["9.weight"] == (1, 256, 4, 4)
    small = pf.energies.MLP([2, 8, 1], seed=0, batch_size=7)
    x = np.random.default_rng(0).standard_normal((30, 2))
    big = pf.energies.MLP([2, 8, 1], seed=0)
    np.testing.assert_allclose(small.grad(x), big.grad(x), rtol=1e-14)
    gs, gb = small.grad_params(x, np.ones(30)), big.grad_params(x, np.ones(30))
    for k in gs:
        np.testing.assert_allclose(gs[k], gb[k], rtol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: pf.energies.MLP([2, 8, 1]).grad(np.zeros((3, 3))), r"shape \(n, 2\)"),
    (lambda: pf.energies.MLP([2, 8, 2]), "sizes"),
    (lambda: pf.energies.MLP([2, 8, 1], activation="gelu"), "unknown activation"),
    (lambda: pf.energies.MLP([2, 8, 1]).set_params({"0.weight": np.zeros((8, 2))}), "missing"),
    (lambda: pf.energies.MLP([2, 8, 1]).set_params({k: np.zeros(3) for k in pf.energies.MLP([2, 8, 1]).params}), "must have shape"),
    (lambda: pf.energies.MLP([2, 8, 1]).grad(np.zeros((3, 2), np.float32)), "dtype"),
    (lambda: pf.energies.ConvNet.nijkamp(32, 48), "image_size"),
    (lambda: pf.energies.ConvNet.nijkamp(32, 4), "image_size"),
    (lambda: pf.energies.ConvNet.nijkamp(0, 32), "n_f"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("act", ["tanh", "softplus", "silu"])
def test_dsm_loss_gradient_against_finite_differences(act):
    """DEEN's loss (paper 002) by the 3-pass path: value equals the definition, the
    parameter gradient matches central differences and the generic 2-pass path,
    and chunking does not change it."""
    net = pf.energies.MLP([2, 6, 5, 1], activation=act, seed=5, batch_size=4)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((11, 2))
    xi = x + 0.3 * rng.standard_normal((11, 2))
    sigma = 0.4
    loss, g = net.dsm_loss_and_grad(x, xi, sigma)

    def L():
        r = x - xi + sigma ** 2 * net.grad(xi)
        return (r * r).sum() / len(x)
    assert abs(loss - L()) < 1e-12 * max(1.0, abs(loss))
    r = x - xi + sigma ** 2 * net.grad(xi)
    generic = net.grad_params_directional(xi, (2 * sigma ** 2 / len(x)) * r, np.ones(len(x)))
    for k in g:
        np.testing.assert_allclose(g[k], generic[k], rtol=1e-10, atol=1e-14)
    base = {k: a.copy() for k, a in net.params.items()}
    direction = {k: np.random.default_rng(7).standard_normal(a.shape) for k, a in base.items()}
    vals = []
    for s in (+1, -1):
        net.set_params({k: base[k] + s * EPS * direction[k] for k in base})
        vals.append(L())
    net.set_params(base)
    fd = (vals[0] - vals[1]) / (2 * EPS)
    assert rel_err(sum((g[k] * direction[k]).sum() for k in g), fd) < 1e-6
    net.batch_size = 100
    loss2, g2 = net.dsm_loss_and_grad(x, xi, sigma)
    assert abs(loss2 - loss) < 1e-12
    for k in g:
        np.testing.assert_allclose(g2[k], g[k], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="sigma"):
        net.dsm_loss_and_grad(x, xi, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        net.dsm_loss_and_grad(x, xi[:5], sigma)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_mlp_path_equals_layer_path(act):
    """MLP.value_and_grad on numpy (fused bias + activation kernel) == the layer path."""
    for dt, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        net = pf.energies.MLP([5, 7, 9, 1], activation=act, seed=8, dtype=dt, batch_size=64)
        x = np.random.default_rng(9).standard_normal((300, 5)).astype(dt)
        e, g = net.value_and_grad(x)
        with reference_path():
            e2, g2 = net.value_and_grad(x)
            g3 = net.grad(x)
        assert rel_err(e, e2) < tol and rel_err(g, g2) < tol, (act, dt)
        np.testing.assert_array_equal(g3, g2)


def test_streamed_conv_passes_equal_full_batch_passes():
    """value_and_grad streams im2col + GEMM and col2im over groups of batch elements;
    with 64x64 stride-1 outputs a group is one image, so batch 3 runs 3 groups."""
    from particleflow.energies import layers_cpu
    from particleflow.energies.layers import Conv2d
    net = pf.energies.ConvNet((2, 64, 64), [3, 1], [3, 4], [1, 4], [1, 0], activation="tanh", seed=4)
    x = np.random.default_rng(5).standard_normal((3, 2, 64, 64))
    e, g = net.value_and_grad(x)
    try:
        Conv2d.stream = False
        e2, g2 = net.value_and_grad(x)
    finally:
        Conv2d.stream = True
    np.testing.assert_allclose(e, e2, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(g, g2, rtol=1e-13, atol=1e-13)
    conv = net.layers[1]
    zb = np.random.default_rng(6).standard_normal((3, 64, 64, 3))
    Wm = conv._wmat()
    ref = col2im_xp(zb.reshape(-1, 3) @ Wm, (3, 64, 64, 2), 3, 3, 1, 1)
    np.testing.assert_allclose(layers_cpu.conv_input_adjoint(conv, zb, Wm, (3, 64, 64, 2)), ref, rtol=1e-12, atol=1e-12)
    # and the finite-difference check of grad_x on this network
    d = np.random.default_rng(7).standard_normal(x.shape)
    fd = np.array([fd_dir(net.value, x[i:i + 1], d[i:i + 1])[0] for i in range(3)])
    assert rel_err((g * d).reshape(3, -1).sum(1), fd) < 1e-6


def _with_threads(n, fn):
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return fn()
    finally:
        numba.set_num_threads(old)


def _bitwise_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_bitwise_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return all(_bitwise_equal(p, q) for p, q in zip(a, b))
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_tanh_mlp_whole_pass_kernels(dt):
    """tanh MLPs on numpy run value_and_grad and DEEN's loss gradient as one numba
    kernel each (kernels/mlp.py, chunks of 512 rows on numba's threads, GEMMs in BLAS):
    equal to the layer path, and bitwise the same with 1 and 2 threads."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    tol = 1e-12 if dt == np.float64 else 3e-6
    net = pf.energies.MLP([5, 16, 9, 1], seed=3, dtype=dt)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1300, 5)).astype(dt)          # 3 chunks, the last partial
    xi = (x + 0.2 * rng.standard_normal(x.shape)).astype(dt)
    e, g = net.value_and_grad(x)
    loss, grads = net.dsm_loss_and_grad(x, xi, 0.3)
    with reference_path():
        e0, g0 = net.value_and_grad(x)
        loss0, grads0 = net.dsm_loss_and_grad(x, xi, 0.3)
    assert rel_err(e, e0) < tol and rel_err(g, g0) < tol
    assert abs(loss - loss0) < tol * abs(loss0)
    assert list(grads) == list(grads0) == list(net.params)
    for k in grads:
        scale = max(np.abs(grads0[k]).max(), np.abs(grads0["0.weight"]).max())
        assert np.abs(grads[k] - grads0[k]).max() < 10 * tol * scale, k
    one = _with_threads(1, lambda: (net.value_and_grad(x), net.dsm_loss_and_grad(x, xi, 0.3)))
    two = _with_threads(2, lambda: (net.value_and_grad(x), net.dsm_loss_and_grad(x, xi, 0.3)))
    assert _bitwise_equal(one, two)
    assert _bitwise_equal(two, ((e, g), (loss, grads)))


def test_dsm_chunks_split_a_small_batch_in_two_only_when_each_half_is_worth_a_thread():
    """``kernels.mlp.dsm_rows``: chunks of 512 rows, and two halves for a batch of at most
    512 rows whose halves each keep >= 64 rows and >= 10 MFLOP (float32-equivalent); the
    whole-batch gradient is the sum of those chunks' parts, bitwise the same at 1 and 2
    threads."""
    import numba
    from particleflow.energies.mlp_cpu import weights_and_biases
    from particleflow.kernels import mlp as K

    def shapes(sizes, dt):
        return [np.zeros((b, a), dt) for a, b in zip(sizes[:-1], sizes[1:])]
    digits, ring = [64, 128, 128, 256, 1], [2, 32, 32, 32, 1]
    assert K.dsm_rows(128, shapes(digits, np.float32)) == 64           # 2 x 44 MFLOP
    assert K.dsm_rows(127, shapes(digits, np.float32)) == 512          # halves under 64 rows
    assert K.dsm_rows(256, shapes(ring, np.float64)) == 512            # 2 x 6.6 MFLOP: one chunk
    assert K.dsm_rows(512, shapes(ring, np.float64)) == 256            # 2 x 13 MFLOP
    assert K.dsm_rows(512, shapes(ring, np.float32)) == 512            # float32 work counts once
    assert K.dsm_rows(201, shapes([16, 64, 64, 64, 1], np.float32)) == 101
    assert K.dsm_rows(1100, shapes(digits, np.float32)) == 512         # larger batches: 512 rows
    net = pf.energies.MLP(digits, seed=1, dtype=np.float32)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((128, 64)).astype(np.float32)
    xi = (x + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
    Ws, bs = weights_and_biases(net)
    losses, G = K.dsm_partials(x, xi, Ws, bs, 0.09, 128, 64)
    assert len(losses) == 2
    want = K.sum_partials(losses, G, 128)
    one = _with_threads(1, lambda: net.dsm_loss_and_grad(x, xi, 0.3))
    flat = np.concatenate([one[1][k].ravel() for k in net.params])
    assert one[0] == want[0] and np.array_equal(flat, want[1])
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert _bitwise_equal(one, _with_threads(2, lambda: net.dsm_loss_and_grad(x, xi, 0.3)))


@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("n,d", [(300, 3), (1300, 5), (700, 20)])
def test_tanh_mlp_steps_that_draw_their_noise_in_the_pass_are_bitwise_the_unfused_steps(dt, n, d):
    """kernels/mlp.py's ``noisy_ula_update`` and ``noisy_mala_step`` draw each chunk's
    Langevin normals inside the chunk pass (one chunk, several with a partial last one;
    d = 20 takes the 8-draw panels): bitwise the stream's normals followed by
    ``ula_update``, and by the proposal update, ``value_and_grad`` and ``mala_finish``;
    bitwise the same with 1 and 2 threads."""
    import numba
    from particleflow.energies.chunks import single_threaded_blas
    from particleflow.energies.mlp_cpu import weights_and_biases
    from particleflow.kernels import mlp as K
    from particleflow.kernels.elementwise import langevin_update, mala_finish
    from particleflow.random import Purpose, Stream
    net = pf.energies.MLP([d, 16, 9, 1], seed=3, dtype=dt)
    Ws, bs = weights_and_biases(net)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, d)).astype(dt)
    ids = rng.permutation(n) + 10 ** 6                   # noise follows ids, not rows
    stream, step = Stream(7, 2), 9
    keys = stream.key(Purpose.LANGEVIN_NOISE)
    h, c = dt(0.6), dt(np.sqrt(1.2))
    with single_threaded_blas():
        z = stream.normal(step, ids, d, Purpose.LANGEVIN_NOISE, dt)
        ula = K.ula_update(x, Ws, bs, z, h, c, np.empty_like(x))
        e, g = K.value_and_grad(x, Ws, bs)
        logu = np.log(stream.uniform(step, ids, 1, Purpose.MH_ACCEPT, dt)[:, 0])
        y = langevin_update(x, g, z, h, c, np.empty_like(x))
        ey, gy = K.value_and_grad(y, Ws, bs)
        la, acc, g_new = mala_finish(x, g, e, y, gy, ey, z, logu, h)

        def fused():
            kept = np.empty_like(x)
            mala = K.noisy_mala_step(x, g, e, Ws, bs, ids, step, *keys, logu, h, c, kept)
            return K.noisy_ula_update(x, Ws, bs, ids, step, *keys, h, c, np.empty_like(x)), mala + (kept,)
        one = _with_threads(1, fused)
        two = _with_threads(2, fused) if numba.config.NUMBA_NUM_THREADS >= 2 else one
    assert 0 < acc.mean() < 1                            # both branches of the accept test ran
    assert _bitwise_equal(one, two)
    assert _bitwise_equal(one, (ula, (la, acc, ey, g_new, y)))


def test_chunk_parallel_network_passes_are_thread_independent():
    """Networks run their chunks on a thread pool with single-threaded BLAS
    (particleflow/energies/chunks.py): bitwise the same for 1 and 2 workers, and equal
    to one whole-batch chunk up to summation order."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    conv = pf.energies.ConvNet((3, 8, 8), [4, 6, 1], [3, 4, 2], [1, 2, 1], [1, 1, 0], seed=5, batch_size=3)
    silu = pf.energies.MLP([4, 8, 1], activation="silu", seed=6, batch_size=7)
    fused = pf.energies.ConvNet((3, 8, 8), [4, 6, 1], [3, 4, 4], [1, 2, 1], [1, 1, 0], seed=5, batch_size=3)
    rng = np.random.default_rng(7)
    for net in (conv, silu, fused):          # fused: convnet_cpu.py for value, grad, grad_params
        x = rng.standard_normal((20,) + net.input_shape)
        v = rng.standard_normal(x.shape)
        c = rng.standard_normal(20)

        def passes():
            return (net.value(x), net.value_and_grad(x), net.grad_params(x, c), net.hvp(x, v),
                    net.grad_params_directional(x, v, c))
        one = _with_threads(1, passes)
        two = _with_threads(2, passes)
        assert _bitwise_equal(one, two), net
        net.batch_size = 1000
        whole = passes()
        for a, b in zip(one, whole):
            for p, q in (zip(a.values(), b.values()) if isinstance(a, dict) else
                         zip(a, b) if isinstance(a, tuple) else [(a, b)]):
                np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-13)


def test_float32_rational_tanh_accuracy():
    """kernels/mlp.py's float32 tanh (Eigen's rational form, clamped): within 6 ulp of
    float64 tanh on [-12, 12] and 3e-7 relative for tiny arguments; odd, saturates at 1."""
    import numba
    from particleflow.kernels.mlp import tanh32

    @numba.njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = tanh32(x[i])
        return out
    x = np.linspace(-12, 12, 400001).astype(np.float32)
    y = apply(x)
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert (np.abs(y - ref) / ulp).max() < 6.0
    np.testing.assert_array_equal(y, -apply(-x))
    assert y.max() <= 1.0 and y[-1] == np.float32(1.0)
    small = np.logspace(-8, -2, 500).astype(np.float32)
    assert (np.abs(apply(small) - np.tanh(small.astype(np.float64))) / small).max() < 3e-7


def test_grad_into_equals_grad():
    """MLP.grad_into (used by Langevin with a reused buffer): bitwise ``grad``, for the
    whole-pass kernel and for the other paths; a non-contiguous buffer also works."""
    rng = np.random.default_rng(8)
    for act, dt in (("tanh", np.float32), ("tanh", np.float64), ("silu", np.float64)):
        net = pf.energies.MLP([6, 10, 1], activation=act, seed=9, dtype=dt)
        x = rng.standard_normal((700, 6)).astype(dt)
        out = np.full_like(x, np.nan)
        assert net.grad_into(x, out) is out
        np.testing.assert_array_equal(out, net.grad(x))
        strided = np.full((700, 12), np.nan, dt)[:, ::2]
        np.testing.assert_array_equal(net.grad_into(x, strided), net.grad(x))


def _fused_nets(dt):
    # several groups per layer in convnet_cpu (64 output pixels a group, set below),
    # stride / padding / kernel variety, ReLU and LeakyReLU, the nijkamp shape
    return [pf.energies.ConvNet((2, 11, 11), [5, 4, 1], [3, 4, 5], [1, 2, 1], [1, 1, 0], activation="relu",
                                seed=11, dtype=dt, batch_size=5),
            pf.energies.ConvNet((3, 8, 8), [4, 6, 1], [3, 4, 4], [1, 2, 1], [1, 1, 0], alpha=0.1, seed=12,
                                dtype=dt, batch_size=4),
            pf.energies.ConvNet.nijkamp(32, 32, dtype=dt, batch_size=3)]


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_fused_convnet_passes_match_layer_path(dt, monkeypatch):
    """ReLU / LeakyReLU ConvNets on numpy run convnet_cpu.py (activations applied inside
    im2col / col2im, columns recomputed per group for weight gradients): the same
    numbers as the layer path (values and grad_x bitwise up to GEMM row blocking,
    bias gradients summed in float64)."""
    from particleflow.energies import convnet_cpu
    monkeypatch.setattr(convnet_cpu, "GROUP_ROWS", 64)
    tol = 1e-13 if dt == np.float64 else 2e-6
    rng = np.random.default_rng(13)
    for net in _fused_nets(dt):
        assert convnet_cpu.plan(net.layers) is not None
        x = rng.uniform(-1, 1, (7,) + net.input_shape).astype(dt)
        c = rng.standard_normal(7).astype(dt)
        v, (e, g), gp = net.value(x), net.value_and_grad(x), net.grad_params(x, c)
        with reference_path():
            v0, (e0, g0), gp0 = net.value(x), net.value_and_grad(x), net.grad_params(x, c)
        assert e.dtype == g.dtype == dt and g.shape == x.shape
        assert rel_err(v, v0) < tol and rel_err(e, e0) < tol and rel_err(g, g0) < tol, net
        assert list(gp) == list(gp0) == list(net.params)
        for k in gp:
            assert gp[k].dtype == dt and gp[k].shape == gp0[k].shape
            assert rel_err(gp[k], gp0[k]) < tol, (net, k)


def test_fused_convnet_finite_differences():
    """grad_x and grad_params of the fused path against float64 central differences.
    ReLU is piecewise linear: the parameter step is 1e-7, because at 1e-6 one unit of
    this net crosses its kink (measured: 3.489 against 3.553 along 3.weight; 1e-7
    agrees to 1e-10, and the layer path gives the same gradient)."""
    net = _fused_nets(np.float64)[0]
    x, d = inputs(net, 4, 14)
    g = net.grad(x)
    fd = np.array([fd_dir(net.value, x[i:i + 1], d[i:i + 1])[0] for i in range(4)])
    assert rel_err((g * d).reshape(4, -1).sum(1), fd) < 1e-6
    c = np.random.default_rng(15).standard_normal(4)
    base = {k: a.copy() for k, a in net.params.items()}
    direction = {k: np.random.default_rng(16).standard_normal(a.shape) for k, a in base.items()}
    vals = []
    step = 1e-7
    for s in (+1, -1):
        net.set_params({k: base[k] + s * step * direction[k] for k in base})
        vals.append(c @ net.value(x))
    net.set_params(base)
    gp = net.grad_params(x, c)
    assert rel_err(sum((gp[k] * direction[k]).sum() for k in gp), (vals[0] - vals[1]) / (2 * step)) < 1e-6


def test_fused_conv_kernels_match_numpy():
    from particleflow.kernels import conv
    rng = np.random.default_rng(17)
    for k, s, p in [(3, 1, 1), (4, 2, 1), (4, 1, 0), (2, 3, 0)]:
        z = rng.standard_normal((2, 7, 7, 3))
        b = rng.standard_normal(3)
        Ho = (7 + 2 * p - k) // s + 1
        a = np.where(z + b > 0, z + b, 0.2 * (z + b))
        cols = conv.im2col_act(z, b, 0.2, True, k, k, s, p, Ho, Ho, np.empty((2 * Ho * Ho, k * k * 3)))
        np.testing.assert_array_equal(cols, im2col_xp(a, k, k, s, p)[0])
        y = rng.standard_normal(cols.shape)
        out, gb = np.empty_like(z), np.zeros(3)
        conv.col2im_act(y, z, b, 0.2, True, k, k, s, p, Ho, Ho, out, gb)
        ref = col2im_xp(y, z.shape, k, k, s, p) * np.where(z + b > 0, 1.0, 0.2)
        np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(gb, ref.sum((0, 1, 2)), rtol=1e-12)
        conv.col2im_act(y, z, b, 0.2, False, k, k, s, p, Ho, Ho, out, gb)
        np.testing.assert_allclose(out, col2im_xp(y, z.shape, k, k, s, p), rtol=1e-13, atol=1e-13)


def test_fused_plan_only_for_piecewise_linear_conv_stacks():
    from particleflow.energies import convnet_cpu
    assert convnet_cpu.plan(nets()[-2].layers) is None          # softplus
    assert convnet_cpu.plan(nets()[-1].layers) is None          # ends in Dense
    relu = pf.energies.ConvNet((2, 6, 6), [3, 1], [3, 6], [1, 1], [1, 0], activation="relu")
    convs, wmats, alpha = convnet_cpu.plan(relu.layers)
    assert alpha == 0.0 and len(convs) == 2 and wmats[0].shape == (3, 18)


def test_empty_batches():
    """An empty batch: values and gradients are empty, parameter gradients are zero (a
    sum over no samples), on the fused and the layer paths; DEEN's mean loss refuses."""
    for net in (pf.energies.ConvNet.nijkamp(32, 32), pf.energies.MLP([3, 4, 1])):
        x = np.zeros((0,) + net.input_shape)
        for path in (contextlib.nullcontext, reference_path):
            with path():
                e, g = net.value_and_grad(x)
                assert e.shape == (0,) and g.shape == x.shape and net.value(x).shape == (0,)
                gp = net.grad_params(x, np.ones(0))
            assert list(gp) == list(net.params) and all(not v.any() for v in gp.values())
    with pytest.raises(ValueError, match="at least one sample"):
        pf.energies.MLP([3, 4, 1]).dsm_loss_and_grad(np.zeros((0, 3)), np.zeros((0, 3)), 0.1)
