"""The Stormer-Verlet (leapfrog) integrator shared by HMC and the hyperbolic network of
MR-MAP (``particleflow.energies.hyperbolic``).

One step with the gradient g of the potential at x:

    p <- p - h/2 g;   x <- x + h M^-1 p;   g <- grad(x, k);   p <- p - h/2 g.

Eliminating p gives the position form x_{k+1} = 2 x_k - x_{k-1} - h^2 M^-1 g(x_k): the
"hyperbolic" recurrence u_{j+1} = 2 u_j - u_{j-1} + h^2 F_j(u_j) of paper 000 (eq. 3.4a)
with force F = -g.  ``momentum_from_positions`` gives the p that makes a leapfrog run
continue two given consecutive positions, so a recurrence stated in positions runs
through the same code.
"""
import numpy as np


def leapfrog(x, p, g, grad, h, n_steps, inv_mass=None, positions=None):
    """``n_steps`` leapfrog steps from position ``x``, momentum ``p`` and the potential's
    gradient ``g`` at ``x``.  ``grad(x, k)`` returns ``(value, gradient)`` at the
    position reached by step k (k = 0, ..., n_steps - 1); the potential may change
    with k (one layer per step).  ``positions``, when a list, receives every new
    position.  Returns ``(x, p, value, g)`` at the end (``value`` is None when
    ``n_steps`` is 0)."""
    half = x.dtype.type(0.5)
    h = x.dtype.type(h) if np.ndim(h) == 0 else h          # or per-particle steps [n, 1]
    e = None
    for k in range(n_steps):
        p = p - half * h * g
        if inv_mass is None:
            x = x + h * p
        elif callable(inv_mass):                  # a dense M^-1 (preconditioned HMC)
            x = x + h * inv_mass(p)
        else:
            x = x + h * inv_mass * p
        e, g = grad(x, k)
        p = p - half * h * g
        if positions is not None:
            positions.append(x)
    return x, p, e, g


def momentum_from_positions(x_prev, x, g, h):
    """The momentum at ``x`` (unit mass) with which a leapfrog step from ``x`` (gradient
    ``g`` there) lands on 2 x - x_prev - h^2 g, i.e. continues the positions
    ``x_prev``, ``x`` of a Stormer-Verlet trajectory: (x - x_prev) / h - h g / 2."""
    h = x.dtype.type(h)
    return (x - x_prev) / h - x.dtype.type(0.5) * h * g
