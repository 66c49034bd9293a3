"""Euler-Maruyama for dX = b(X) dt + sqrt(2 D) dW, optionally on the unit sphere.

x' = x + h b(x) + sqrt(2 h D) xi.  With ``manifold="sphere"`` (paper 001 keeps
particles and neurons on S^{d-1}) the increment is projected onto the tangent space
at x, (I - x x^T) dx, and the result is retracted by normalisation, x' / |x'|: the
geodesic random walk, which converges to the Riemannian diffusion as h -> 0.  The
authors' MATLAB code renormalises after each step in the same way.
"""
import math

from ..random import Purpose
from ..checks import positive
from .base import Move

MANIFOLDS = (None, "sphere")


def project_to_sphere_tangent(x, v):
    """(I - x x^T) v row-wise for x, v of shape [n, d] (x on the unit sphere)."""
    return v - (x * v).sum(1, keepdims=True) * x


def retract_to_sphere(x):
    return x / (x * x).sum(1, keepdims=True) ** 0.5


class EulerMaruyama(Move):
    """Parameters
    ----------
    drift : callable x -> array like x, or an Energy (drift = -grad E)
    step_size : float > 0
    diffusion : float >= 0 (D; the inverse temperature beta of paper 001 is 1 / D)
    manifold : None or "sphere"
    """

    def __init__(self, drift, step_size, diffusion, manifold=None):
        super().__init__()
        if hasattr(drift, "grad"):
            self.energy = drift
            self.drift = lambda x, _e=drift: -_e.grad(x)
        elif callable(drift):
            self.drift = drift
        else:
            raise ValueError("drift must be a callable x -> array or an Energy")
        self.step_size = positive(step_size, "step_size")
        if isinstance(diffusion, bool) or not math.isfinite(diffusion) or diffusion < 0:
            raise ValueError(f"diffusion must be a finite number >= 0; got {diffusion!r}")
        self.diffusion = float(diffusion)
        if manifold not in MANIFOLDS:
            raise ValueError(f"manifold must be one of {MANIFOLDS}; got {manifold!r}")
        self.manifold = manifold

    def check(self, ensemble):
        super().check(ensemble)
        if self.manifold == "sphere" and ensemble.x.ndim != 2:
            raise ValueError("manifold='sphere' needs positions of shape (n, d)")

    def _step(self, ens, stream, step):
        fl = ens.dtype.type
        h = fl(self.step_size)
        x = ens.x
        b = self.drift(x)
        if b.shape != x.shape:
            raise ValueError(f"drift returned shape {b.shape}; expected {x.shape}")
        dx = h * b
        if self.diffusion > 0:
            z = stream.normal(step, ens.ids, ens.dim, Purpose.LANGEVIN_NOISE, ens.dtype)
            dx = dx + fl(math.sqrt(2.0 * self.step_size * self.diffusion)) * z.reshape(x.shape)
        out = self.position_buffer(ens)
        if self.manifold == "sphere":
            out[...] = retract_to_sphere(x + project_to_sphere_tangent(x, dx))
        else:
            out[...] = x + dx
        self.swap_positions(ens, out)
        return {}
