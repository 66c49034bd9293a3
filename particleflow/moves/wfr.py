"""Wasserstein-Fisher-Rao move on a (signed, weighted) ensemble (paper 001, eqs. 6-9,
Algorithm 1).

For a potential F supplied by the caller (``potential(ensemble) -> (F [n],
grad F [n, *event_shape])``), with signs sigma_j (+1 when the ensemble has none)::

    theta_j <- theta_j + h sigma_j grad F(theta_j)            (transport, Wasserstein)
    log w_j <- log w_j + h_w sigma_j F(theta_j)               (growth, Fisher-Rao)
    if mean_j w_j > cap:  w <- w * cap / mean_j w_j           (F1-norm constraint)

both evaluated at the old theta.  In Algorithm 1 both step sizes are s * alpha.
``manifold="sphere"`` keeps the positions on S^{d-1} (tangent projection, then
normalisation).  ``relu_feature_means`` and ``relu_network`` are the pairwise
particle-neuron sums of F1 ReLU networks, run by ``particleflow.kernels.pairwise``.
"""
import math


from ..energies.f1 import relu_feature_means, relu_network
from ..checks import positive
from .base import Move
from .euler_maruyama import MANIFOLDS, project_to_sphere_tangent, retract_to_sphere


class WassersteinFisherRao(Move):
    """Parameters
    ----------
    potential : callable ensemble -> (F [n], grad_F [n, *event_shape])
    step_size : float > 0 (position step h)
    weight_step_size : float > 0, optional (log-weight step h_w; default h)
    mean_weight_cap : float > 0, optional (rescale weights when their mean exceeds it)
    manifold : None or "sphere"
    """

    stats_keys = ("mean_weight", "ess")

    def __init__(self, potential, step_size, weight_step_size=None, mean_weight_cap=None,
                 manifold=None):
        super().__init__()
        if not callable(potential):
            raise ValueError("potential must be a callable ensemble -> (F, grad_F)")
        self.potential = potential
        self.step_size = positive(step_size, "step_size")
        self.weight_step_size = self.step_size if weight_step_size is None else \
            positive(weight_step_size, "weight_step_size")
        self.mean_weight_cap = None if mean_weight_cap is None else \
            positive(mean_weight_cap, "mean_weight_cap")
        if manifold not in MANIFOLDS:
            raise ValueError(f"manifold must be one of {MANIFOLDS}; got {manifold!r}")
        self.manifold = manifold

    def _step(self, ens, stream, step):
        xp = ens.xp
        fl = ens.dtype.type
        F, G = self.potential(ens)
        if F.shape != (ens.n,) or G.shape != ens.x.shape:
            raise ValueError(f"potential must return F of shape ({ens.n},) and grad_F of shape "
                             f"{ens.x.shape}; got {F.shape} and {G.shape}")
        sign = ens.signs if ens.signs is not None else xp.ones(ens.n, dtype=ens.dtype)
        shape = (-1,) + (1,) * (ens.x.ndim - 1)
        dx = fl(self.step_size) * sign.reshape(shape) * G
        if self.manifold == "sphere":
            new_x = retract_to_sphere(ens.x + project_to_sphere_tangent(ens.x, dx))
        else:
            new_x = ens.x + dx
        lw = ens.log_weights if ens.log_weights is not None else xp.zeros(ens.n, dtype=ens.dtype)
        lw = lw + fl(self.weight_step_size) * sign * F
        mean_w = _mean_exp(lw, ens)
        if self.mean_weight_cap is not None and mean_w > self.mean_weight_cap:
            lw = lw - fl(math.log(mean_w / self.mean_weight_cap))
            mean_w = self.mean_weight_cap
        out = self.position_buffer(ens)
        out[...] = new_x
        self.swap_positions(ens, out)
        ens.log_weights = lw.astype(ens.dtype, copy=False)
        return {"mean_weight": float(mean_w), "ess": ens.ess()}


def _mean_exp(a, ens):
    """mean_j exp(a_j) over every particle of ``ens`` (every rank), max-shifted."""
    m, mean = ens.shifted_mean_exp(a)
    return math.exp(m) * mean


__all__ = ["WassersteinFisherRao", "relu_feature_means", "relu_network"]
