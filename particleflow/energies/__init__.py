"""Energies E(x) = -log p(x) + const with hand-derived gradients."""
from .analytic import Energy, FromCallable, Gaussian, GaussianMixture, ring_means

__all__ = ["Energy", "Gaussian", "GaussianMixture", "FromCallable"]
from .networks import ConvNet, MLP, Network  # noqa: E402

__all__ += ["MLP", "ConvNet", "Network"]
from .f1 import F1Network  # noqa: E402

__all__ += ["F1Network"]
from .parametric import GaussianPrecision, GaussianStd, QuadraticExponentialFamily  # noqa: E402

__all__ += ["GaussianStd", "GaussianPrecision", "QuadraticExponentialFamily"]
from .score import ScoreMLP  # noqa: E402

__all__ += ["ScoreMLP"]
from .check import GradientCheck, check_gradient  # noqa: E402

__all__ += ["check_gradient", "GradientCheck"]
from .combine import BoxRestricted, Interpolated, Sum, Tempered, Zero  # noqa: E402

__all__ += ["Sum", "Tempered", "Interpolated", "BoxRestricted", "Zero"]
from .hyperbolic import HyperbolicNetwork  # noqa: E402

__all__ += ["HyperbolicNetwork"]
__all__ += ["ring_means"]
