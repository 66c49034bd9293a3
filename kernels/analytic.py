"""Fused Langevin / MALA / HMC steps on analytic Gaussian-mixture energies.

Energy (a Gaussian is the case K = 1 with ``logc = 0``)::

    E(x) = -log sum_k exp(logc_k - 0.5 (x - mu_k)^T P_k (x - mu_k))
    grad E(x) = sum_k r_k(x) P_k (x - mu_k),   r = softmax_k(logits)

The per-particle code is *generated* for a fixed dimension D and component count K
(all coordinates held in scalar registers ``x0 .. x{D-1}``), then compiled for the
CPU and the GPU from that single source by ``_jit.build_kernel``.  Generating the
source is what makes the CPU loop vectorise: with D and K constant every inner loop
unrolls, the particle loop becomes innermost and LLVM emits SIMD code for it.  It is
used up to ``MAX_FUSED_DIM``; larger problems take the array path in
``particleflow.moves`` (numpy / CuPy, same noise, same formulas).

Arrays: ``x``, ``out`` are flattened ``[n * D]``; ``mu`` ``[K * D]``; ``prec`` is
``[K]`` (isotropic, P_k = prec_k I) or ``[K * D * D]``; ``logc`` ``[K]``; ``ids``
``[n]`` int64.  Normal draw j of a particle is the j-th Box-Muller normal of its
Philox stream (``philox.py``), so the array path reproduces it exactly.
"""
import numpy as np

from ._jit import SIMD_LANES, build_kernel, compile_source
from .philox import namespace

MAX_FUSED_DIM = 8


def _energy_grad_source(D, K, iso):
    xs = ", ".join(f"x{j}" for j in range(D))

    def logit(ind):
        L = [f"{ind}d{j} = x{j} - mu[k * {D} + {j}]" for j in range(D)]
        if iso:
            L += [f"{ind}v{j} = prec[k] * d{j}" for j in range(D)]
        else:
            for a in range(D):
                terms = " + ".join(f"prec[k * {D * D} + {a * D + b}] * d{b}" for b in range(D))
                L.append(f"{ind}v{a} = {terms}")
        L.append(f"{ind}l = logc[k] - HALF * (" + " + ".join(f"d{j} * v{j}" for j in range(D)) + ")")
        return L

    L = [f"def ENERGY_GRAD({xs}, mu, prec, logc):", "    m = NEG_BIG",
         f"    for k in range({K}):"]
    L += logit("        ")
    L += ["        m = max(m, l)", "    s = ZERO"]
    L += [f"    g{j} = ZERO" for j in range(D)]
    L += [f"    for k in range({K}):"]
    L += logit("        ")
    L += ["        w = EXP(l - m)", "        s += w"]
    L += [f"        g{j} += w * v{j}" for j in range(D)]
    L += ["    inv = ONE / s", "    e = -(m + LOG(s))"]
    L += ["    return e, " + ", ".join(f"g{j} * inv" for j in range(D))]
    return "\n".join(L) + "\n"


def _normals(D, ind, prefix="z", pid="ids[i]", k1="kn1"):
    """Lines drawing normals z0..z{D-1} of particle ``pid`` at ``step``."""
    L = []
    for b in range((D + 3) // 4):
        L.append(f"{ind}w0, w1, w2, w3 = WORDS({b}, {pid}, step, k0, {k1})")
        L.append(f"{ind}{prefix}{4 * b}, {prefix}{4 * b + 1} = NORMAL_PAIR(w0, w1)")
        L.append(f"{ind}{prefix}{4 * b + 2}, {prefix}{4 * b + 3} = NORMAL_PAIR(w2, w3)")
    return L


def _load(D, var="x", arr="x"):
    return [f"    {var}{j} = {arr}[i * {D} + {j}]" for j in range(D)]


def _ula_source(D):
    xs = ", ".join(f"x{j}" for j in range(D))
    L = ["def ula_body(i, x, out, ids, mu, prec, logc, h, c, step, k0, kn1):"]
    L += _load(D)
    L.append(f"    e, {', '.join(f'g{j}' for j in range(D))} = ENERGY_GRAD({xs}, mu, prec, logc)")
    L += _normals(D, "    ")
    L += [f"    out[i * {D} + {j}] = x{j} - h * g{j} + c * z{j}" for j in range(D)]
    return "\n".join(L) + "\n"


def _mala_source(D):
    xs = ", ".join(f"x{j}" for j in range(D))
    ys = ", ".join(f"y{j}" for j in range(D))
    gs = ", ".join(f"g{j}" for j in range(D))
    hs = ", ".join(f"q{j}" for j in range(D))
    L = ["def mala_body(i, x, out, energy, accepted, ids, mu, prec, logc, h, c, step, k0, kn1, ka1):"]
    L += _load(D)
    L.append(f"    e, {gs} = ENERGY_GRAD({xs}, mu, prec, logc)")
    L += _normals(D, "    ")
    L += [f"    y{j} = x{j} - h * g{j} + c * z{j}" for j in range(D)]
    L.append(f"    ey, {hs} = ENERGY_GRAD({ys}, mu, prec, logc)")
    # log q(x | y) - log q(y | x) with q(b | a) = N(b; a - h grad E(a), 2 h I):
    # the forward residual is c z, so |c z|^2 / (4 h) = |z|^2 / 2.
    L.append("    back = " + " + ".join(f"(x{j} - y{j} + h * q{j}) ** 2" for j in range(D)))
    L.append("    fwd = " + " + ".join(f"z{j} * z{j}" for j in range(D)))
    L.append("    log_alpha = e - ey - back / (FOUR * h) + HALF * fwd")
    L.append("    wa, wb, wc, wd = WORDS(0, ids[i], step, k0, ka1)")
    L.append("    if LOG(UNIFORM(wa)) < log_alpha:")
    L += [f"        out[i * {D} + {j}] = y{j}" for j in range(D)]
    L += ["        energy[i] = ey", "        accepted[i] = 1", "    else:"]
    L += [f"        out[i * {D} + {j}] = x{j}" for j in range(D)]
    L += ["        energy[i] = e", "        accepted[i] = 0"]
    return "\n".join(L) + "\n"


def _hmc_source(D):
    """HMC as three vectorisable per-particle kernels: init (momentum refresh,
    energy and gradient at x), one leapfrog step (launched n_leapfrog times; a
    run-time loop inside one kernel would stop the particle loop vectorising), and
    the Metropolis accept."""
    xs = ", ".join(f"x{j}" for j in range(D))
    gs = ", ".join(f"g{j}" for j in range(D))
    As = ", ".join(f"a{j}" for j in range(D))
    L = ["def hmc_init_body(i, x, a, p, g, e0, h0, ids, mu, prec, logc, inv_mass, sqrt_mass,"
         " step, k0, kn1):"]
    L += _load(D)
    L.append(f"    e, {gs} = ENERGY_GRAD({xs}, mu, prec, logc)")
    L += _normals(D, "    ")
    L += [f"    p{j} = sqrt_mass[{j}] * z{j}" for j in range(D)]
    L += [f"    a[i * {D} + {j}] = x{j}" for j in range(D)]
    L += [f"    p[i * {D} + {j}] = p{j}" for j in range(D)]
    L += [f"    g[i * {D} + {j}] = g{j}" for j in range(D)]
    L.append("    e0[i] = e")
    L.append("    h0[i] = e + HALF * (" + " + ".join(f"p{j} * p{j} * inv_mass[{j}]" for j in range(D)) + ")")
    # leapfrog = kick(h/2) drift(h) kick(h/2)
    L.append("")
    L.append("def hmc_leapfrog_body(i, a, p, g, e, mu, prec, logc, h, inv_mass):")
    L += [f"    p{j} = p[i * {D} + {j}] - HALF * h * g[i * {D} + {j}]" for j in range(D)]
    L += [f"    a{j} = a[i * {D} + {j}] + h * inv_mass[{j}] * p{j}" for j in range(D)]
    L.append(f"    ee, {gs} = ENERGY_GRAD({As}, mu, prec, logc)")
    L += [f"    a[i * {D} + {j}] = a{j}" for j in range(D)]
    L += [f"    p[i * {D} + {j}] = p{j} - HALF * h * g{j}" for j in range(D)]
    L += [f"    g[i * {D} + {j}] = g{j}" for j in range(D)]
    L.append("    e[i] = ee")
    L.append("")
    L.append("def hmc_accept_body(i, x, a, p, e0, h0, out, energy, accepted, ids, inv_mass,"
             " step, k0, ka1):")
    L.append("    h1 = energy[i] + HALF * (" + " + ".join(
        f"p[i * {D} + {j}] * p[i * {D} + {j}] * inv_mass[{j}]" for j in range(D)) + ")")
    L.append("    wa, wb, wc, wd = WORDS(0, ids[i], step, k0, ka1)")
    L.append("    log_alpha = h0[i] - h1")
    L.append("    h0[i] = log_alpha")             # kept for the move's divergence count
    L.append("    if LOG(UNIFORM(wa)) < log_alpha:")
    L += [f"        out[i * {D} + {j}] = a[i * {D} + {j}]" for j in range(D)]
    L += ["        accepted[i] = 1", "    else:"]
    L += [f"        out[i * {D} + {j}] = x[i * {D} + {j}]" for j in range(D)]
    L += ["        energy[i] = e0[i]", "        accepted[i] = 0"]
    return "\n".join(L) + "\n"


def _energy_source(D):
    xs = ", ".join(f"x{j}" for j in range(D))
    L = ["def energy_grad_body(i, x, energy, grad, mu, prec, logc):"]
    L += _load(D)
    L.append(f"    e, {', '.join(f'g{j}' for j in range(D))} = ENERGY_GRAD({xs}, mu, prec, logc)")
    L.append("    energy[i] = e")
    L += [f"    grad[i * {D} + {j}] = g{j}" for j in range(D)]
    return "\n".join(L) + "\n"


_SOURCES = {"ula": _ula_source, "mala": _mala_source, "hmc_init": _hmc_source,
            "hmc_leapfrog": _hmc_source, "hmc_accept": _hmc_source,
            "energy_grad": _energy_source}
_ARGS = {
    "ula": [("x", "D"), ("out", "D"), ("ids", 1), ("mu", None), ("prec", None),
            ("logc", None), ("h", None), ("c", None), ("step", None), ("k0", None),
            ("kn1", None)],
    "mala": [("x", "D"), ("out", "D"), ("energy", 1), ("accepted", 1), ("ids", 1),
             ("mu", None), ("prec", None), ("logc", None), ("h", None), ("c", None),
             ("step", None), ("k0", None), ("kn1", None), ("ka1", None)],
    "hmc_init": [("x", "D"), ("a", "D"), ("p", "D"), ("g", "D"), ("e0", 1), ("h0", 1),
                 ("ids", 1), ("mu", None), ("prec", None), ("logc", None), ("inv_mass", None),
                 ("sqrt_mass", None), ("step", None), ("k0", None), ("kn1", None)],
    "hmc_leapfrog": [("a", "D"), ("p", "D"), ("g", "D"), ("e", 1), ("mu", None),
                     ("prec", None), ("logc", None), ("h", None), ("inv_mass", None)],
    "hmc_accept": [("x", "D"), ("a", "D"), ("p", "D"), ("e0", 1), ("h0", 1), ("out", "D"),
                   ("energy", 1), ("accepted", 1), ("ids", 1), ("inv_mass", None),
                   ("step", None), ("k0", None), ("ka1", None)],
    "energy_grad": [("x", "D"), ("energy", 1), ("grad", "D"), ("mu", None),
                    ("prec", None), ("logc", None)],
}
_CACHE = {}
# forced SIMD lanes per kernel on the CPU (0 = LLVM's choice); see _jit._simd_lanes
VECTOR_WIDTH = {k: SIMD_LANES for k in ("ula", "mala", "hmc_init", "hmc_leapfrog", "hmc_accept", "energy_grad")}


def kernel(kind, D, K, iso, dtype, target):
    """Launcher for ``kind`` in ula | mala | hmc | hmc_init | hmc_leapfrog |
    hmc_accept | energy_grad; call it as ``launch(n, *args)`` with the arguments
    listed in ``_ARGS[kind]`` (for ``hmc`` see ``_hmc_launcher``)."""
    dtype = np.dtype(dtype)
    key = (kind, D, K, bool(iso), dtype.str, target.name)
    if key in _CACHE:
        return _CACHE[key]
    if kind == "hmc":
        _CACHE[key] = _hmc_launcher(*(kernel(k, D, K, iso, dtype, target)
                                      for k in ("hmc_init", "hmc_leapfrog", "hmc_accept")))
        return _CACHE[key]
    if not 1 <= D <= MAX_FUSED_DIM:
        raise ValueError(f"fused analytic kernels need 1 <= dim <= {MAX_FUSED_DIM}; got {D}")
    fl = dtype.type
    ns = dict(namespace(target, dtype))
    ns.update(ZERO=fl(0), ONE=fl(1), FOUR=fl(4), NEG_BIG=fl(np.finfo(dtype).min))
    compile_source(ns, _energy_grad_source(D, K, iso), target, "<gmm-energy>")
    compile_source(ns, _SOURCES[kind](D), target, f"<{kind}>")
    args = [(a, D if w == "D" else w) for a, w in _ARGS[kind]]
    launch = build_kernel(ns, f"{kind}_body", args, target, vector_width=VECTOR_WIDTH[kind])
    _CACHE[key] = launch
    return launch


def _hmc_launcher(init, leapfrog, accept):
    def launch(n, x, out, energy, accepted, ids, mu, prec, logc, h, n_leapfrog, inv_mass,
               sqrt_mass, step, k0, kn1, ka1, a, p, g, e0, h0):
        """One HMC transition; ``a``, ``p``, ``g`` ``[n * D]`` and ``e0``, ``h0`` ``[n]``
        are scratch arrays; ``h0`` ends holding each chain's log acceptance ratio H0 - H1."""
        init(n, x, a, p, g, e0, h0, ids, mu, prec, logc, inv_mass, sqrt_mass, step, k0, kn1)
        for _ in range(n_leapfrog):
            leapfrog(n, a, p, g, energy, mu, prec, logc, h, inv_mass)
        accept(n, x, a, p, e0, h0, out, energy, accepted, ids, inv_mass, step, k0, ka1)
    return launch
