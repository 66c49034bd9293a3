"""Energies E(x) = -log p(x) + const with hand-derived gradients."""
from .analytic import Energy, FromCallable, Gaussian, GaussianMixture

__all__ = ["Energy", "Gaussian", "GaussianMixture", "FromCallable"]
