"""A gradient checker for energies, above all users' own (``FromCallable``, networks).

MALA and HMC stay exact with a wrong gradient (the Metropolis test only uses the energy),
they just mix badly, so a mistake in a hand-written gradient goes unnoticed.
``check_gradient`` compares ``energy.value_and_grad`` with central differences
(E(x + eps e_j) - E(x - eps e_j)) / (2 eps) on a few particles, every coordinate, all
perturbations evaluated in one batched call, and reports the worst relative error.
"""
import numpy as np

from ..backend import to_numpy


class GradientCheck:
    """The result of ``check_gradient``: ``ok``, ``max_rel_error`` and, per checked
    particle, the relative error ||g - g_fd|| / max(||g||, ||g_fd||, tiny); ``worst``:
    (particle row, coordinate index into the event shape) of the largest absolute
    coordinate difference; ``report()``: the lines to print."""

    def __init__(self, rows, rel, g, g_fd, rtol, eps, event_shape):
        self.rows, self.rel, self.rtol, self.eps = rows, rel, rtol, eps
        self.max_rel_error = float(rel.max())
        self.ok = bool(self.max_rel_error <= rtol)
        diff = np.abs(g - g_fd)
        p, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
        self.worst = (int(rows[p]), tuple(int(i) for i in np.unravel_index(j, event_shape)))
        self.worst_values = (float(g[p, j]), float(g_fd[p, j]))

    def report(self):
        head = "gradient OK" if self.ok else "GRADIENT WRONG"
        lines = [f"{head}: max relative error {self.max_rel_error:.3g} over {len(self.rows)} particles "
                 f"(tolerance {self.rtol:g}, central differences with eps = {self.eps:g})"]
        if not self.ok:
            (row, coord), (ga, gf) = self.worst, self.worst_values
            lines.append(f"worst coordinate: particle {row}, index {coord}: grad gives {ga:.6g}, "
                         f"finite differences {gf:.6g}")
        return lines

    def __repr__(self):
        return f"GradientCheck(ok={self.ok}, max_rel_error={self.max_rel_error:.3g})"


def check_gradient(energy, x, n_particles=4, eps=None, rtol=None, seed=0):
    """Check ``energy``'s gradient against central differences at ``n_particles`` rows of
    ``x`` [n, *event_shape] (chosen with ``seed``).

    In float64 the defaults are eps = 1e-5 (1 + |x_j|) and rtol = 1e-6; in float32
    (energies that only run in float32) eps = 1e-3 (1 + |x_j|) and rtol = 2e-2: a larger step
    crosses the kinks of piecewise-linear activations, a smaller one drowns in rounding.
    Returns a ``GradientCheck``; ``check.ok`` is the verdict, ``check.report()`` says
    where it fails."""
    x = np.asarray(to_numpy(x))
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (n, *event_shape) with n >= 1; got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or Inf: check the gradient at finite points")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(x.shape[0], size=min(int(n_particles), x.shape[0]), replace=False))
    pts = x[rows]
    p, shape = pts.shape[0], pts.shape[1:]
    d = int(np.prod(shape))
    f64 = pts.dtype == np.float64
    eps = (1e-5 if f64 else 1e-3) if eps is None else float(eps)
    rtol = (1e-6 if f64 else 2e-2) if rtol is None else float(rtol)
    flat = pts.reshape(p, d)
    h = (eps * (1 + np.abs(flat))).astype(pts.dtype)
    # rows of the batch: particle i, coordinate j, sign (+, -)
    batch = np.repeat(flat[:, None, :], d, axis=1)
    idx = np.arange(d)
    plus, minus = batch.copy(), batch.copy()
    plus[:, idx, idx] += h
    minus[:, idx, idx] -= h
    step = (plus[:, idx, idx] - minus[:, idx, idx]).astype(np.float64)      # the steps actually taken
    both = np.concatenate([plus.reshape(p * d, d), minus.reshape(p * d, d)]).reshape((2 * p * d,) + shape)
    e = np.asarray(to_numpy(energy.value(both)), dtype=np.float64)
    g_fd = (e[:p * d] - e[p * d:]).reshape(p, d) / step
    _, g = energy.value_and_grad(pts)
    g = np.asarray(to_numpy(g), dtype=np.float64).reshape(p, d)
    scale = np.maximum(np.maximum(np.linalg.norm(g, axis=1), np.linalg.norm(g_fd, axis=1)), 1e-300)
    rel = np.linalg.norm(g - g_fd, axis=1) / scale
    return GradientCheck(rows, rel, g, g_fd, rtol, eps, shape)
