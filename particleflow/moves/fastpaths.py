"""The CPU fast paths of the moves, in one place.

A move's ``_step`` is written once, as array expressions: that is the reference, and
what runs on ``Device("cpu-reference")`` (and on a GPU, except for the mixture kernel
below, which is compiled for both targets).  On host arrays (outside
``backend.reference_path()``) some steps have a faster equivalent: fused passes over
the particles (``kernels/elementwise.py``, bitwise the numpy expressions they replace)
and energies' own one-pass updates.  A move asks ``lookup(name, x)`` once per step for
its fast path, None meaning "run the array expressions"; each fast path may still
decline (return None / False) for inputs it does not handle, such as non-contiguous
arrays.  ``tests/test_reference_path.py`` compares every one with the reference.
"""
import numpy as np

from ..backend import fast_paths_on, on_host
from ..kernels.analytic import MAX_FUSED_DIM, kernel
from ..kernels.elementwise import adam_update, langevin_update, mala_finish
from ..random import Purpose


def _contiguous(*arrays):
    return all(a.flags.c_contiguous for a in arrays)


def adam(x, g, m, v, b1, b2, c1, c2, lr, eps):
    """(x, m, v) after Adam's update in one pass, or None where it does not apply."""
    if not all(a.shape == x.shape and a.dtype == x.dtype for a in (g, m, v)) or not _contiguous(x, g, m, v):
        return None
    return adam_update(x, g, m, v, b1, b2, c1, c2, lr, eps)


def langevin_update_into(x, g, z, h, c, out):
    """out = x - h g + c z in one parallel pass; False where it does not apply."""
    if not _contiguous(x, g, z, out):
        return False
    langevin_update(x, g, z, h, c, out)
    return True


def langevin_step(move, ens, stream, step, h, c, out):
    """One unadjusted Langevin step of ``move`` into ``out``; False where it does not
    apply.  An energy with an ``ula_step_into`` hook (tanh MLPs) draws the noise of
    each chunk of rows inside its one-pass update, where it stays in cache and the
    gradient is never stored.  Otherwise the noise goes into a reused buffer (a fresh
    25 MB array costs its page faults every step), then the gradient and one parallel
    update pass."""
    if not _contiguous(ens.x, out):
        return False
    energy = move.energy
    hook = getattr(energy, "ula_step_into", None)
    cached = ens.cached_energy(energy)
    if cached is None and hook is not None and \
            hook(ens.x, ens.ids, step, stream.key(Purpose.LANGEVIN_NOISE), h, c, out):
        return True
    z = move.buffer("noise", (ens.n, ens.dim), ens.dtype, np)
    stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype, out=z)
    z = z.reshape(ens.x.shape)
    grad_into = getattr(energy, "grad_into", None)
    if cached is not None:
        g = cached[1]
    elif grad_into is not None:                   # a reused gradient buffer
        g = grad_into(ens.x, move.buffer("grad", ens.x.shape, ens.dtype, np))
    else:
        g = energy.grad(ens.x)
    if not langevin_update_into(ens.x, g, z, h, c, out):
        out[...] = ens.x - h * g + c * z
    return True


def mala_step(move, ens, stream, step, h, c, out):
    """One MALA step of ``move`` (scalar step size, no preconditioner) for an array
    energy: the proposal written straight into ``out`` in one pass, the energy at it,
    then ``kernels.elementwise.mala_finish`` (the accept test and the choice of rows in
    one pass, where the array code makes about ten passes with [n, d] temporaries).
    An energy with a ``mala_step_into`` hook (tanh MLPs) runs all of it, the noise
    included, in one chunk pass.  Returns (log alpha, accepted, E and grad E of the
    kept states) with ``out`` holding the kept states, or None where it does not
    apply."""
    x = ens.x
    if not _contiguous(x, out):
        return None
    cached = ens.cached_energy(move.energy)
    e, g = cached if cached is not None else move.energy.value_and_grad(x)
    g = np.ascontiguousarray(g)
    logu = np.log(stream.uniform(step, ens.ids, 1, Purpose.MH_ACCEPT, ens.dtype)[:, 0])
    hook = getattr(move.energy, "mala_step_into", None)
    if hook is not None:
        res = hook(x, np.ascontiguousarray(e), g, ens.ids, step, stream.key(Purpose.LANGEVIN_NOISE), logu, h, c,
                   out)
        if res is not None:
            return res
    z = move.buffer("noise", (ens.n, ens.dim), ens.dtype, np)
    stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype, out=z)
    langevin_update(x, g.reshape(x.shape), z.reshape(x.shape), h, c, out)
    ey, gy = move.energy.value_and_grad(out)
    ey, gy = np.array(ey, copy=True), np.ascontiguousarray(gy).reshape(ens.n, -1)
    la, acc, g_new = mala_finish(x.reshape(ens.n, -1), g.reshape(ens.n, -1), e, out.reshape(ens.n, -1), gy, ey, z,
                                 logu, h)
    return la, acc, ey, g_new.reshape(x.shape)


FAST = {"adam": adam, "langevin_step": langevin_step, "langevin_update_into": langevin_update_into,
        "mala_step": mala_step}


def mixture_kernel(energy, kind, ensemble):
    """(launch, (mu, prec, logc)): the one-kernel ULA / MALA / HMC step
    (``kernels/analytic.py``, numba on the CPU, numba.cuda on a GPU) for a Gaussian or
    Gaussian-mixture energy of dimension <= ``MAX_FUSED_DIM``; None for other energies
    and inside ``reference_path()`` (the move's array code)."""
    if not (fast_paths_on() and hasattr(energy, "fused_params") and 1 <= ensemble.dim <= MAX_FUSED_DIM):
        return None
    mu, prec, logc, iso = energy.fused_params(ensemble.dtype, ensemble.xp)
    launch = kernel(kind, ensemble.dim, logc.shape[0], iso, ensemble.dtype, ensemble.device.target)
    return launch, (mu, prec, logc)


def lookup(name, x):
    """The fast path ``name`` for array ``x``, or None: run the array expressions."""
    return FAST[name] if on_host(x) else None
