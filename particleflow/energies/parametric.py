"""Parametric analytic energy families E(x | theta) with parameter gradients.

They follow the network contract of ``networks.py`` (``params`` dict,
``set_params``, ``grad_params(x, c) = grad_theta sum_i c_i E(x_i | theta)``), so an
estimator that learns parameters (importance-sampling ML, paper 003) treats them
and the networks alike.  Both know their exact log-partition function, which
the tests and the paper's Section 7 experiment use as ground truth.

* ``GaussianStd(std, dim)``:  E(x | s) = |x|^2 / (2 s^2),  Z(s) = (2 pi s^2)^(d/2)
  (paper 003, Eq. 22); grad_s E = -|x|^2 / s^3.
* ``GaussianPrecision(P)``:   E(x | P) = x^T P x / 2,  Z(P) = (2 pi)^(d/2) det(P)^(-1/2);
  grad_P E = x x^T / 2 (entries of P treated as independent parameters).
"""
import math

import numpy as np

from ..backend import array_module
from .analytic import Energy, _as_float_array, _check_spd, cotangent_vector


class _Parametric(Energy):
    def set_params(self, params):
        own = self.params
        if set(params) != set(own):
            raise ValueError(f"parameter dict does not match {type(self).__name__}: expected keys "
                             f"{sorted(own)}, got {sorted(params)}")
        for k, v in params.items():
            v = np.asarray(v, dtype=np.float64)
            if v.shape != own[k].shape:
                raise ValueError(f"parameter {k!r} must have shape {own[k].shape}; got {v.shape}")
            if not np.isfinite(v).all():
                raise ValueError(f"parameter {k!r} contains NaN or Inf")
            self._set(k, v)
        self.parameters_changed()

    def _cotangent(self, x, c):
        return cotangent_vector(x, c)


class GaussianStd(_Parametric):
    """Isotropic zero-mean Gaussian parametrised by its standard deviation."""

    def __init__(self, std=1.0, dim=1):
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self._set("std", np.asarray(std, dtype=np.float64))

    def _set(self, k, v):
        if v.shape != () or not v > 0:
            raise ValueError(f"std must be a positive scalar; got {v!r}")
        self.std = float(v)

    @property
    def params(self):
        return {"std": np.asarray(self.std)}

    def _sq(self, x):
        xp = self.check_x(x)
        xf = x.reshape(x.shape[0], -1)
        # a row sum over a short axis is slow in numpy (one reduction per row)
        return xf[:, 0] * xf[:, 0] if xf.shape[1] == 1 else xp.einsum("ij,ij->i", xf, xf)

    def value(self, x):
        return self._sq(x) / (2 * self.std ** 2)

    def value_and_grad(self, x):
        return self.value(x), x / self.std ** 2

    def grad_params(self, x, cotangent):
        c = self._cotangent(x, cotangent)
        return {"std": np.asarray(-float((c * self._sq(x)).sum()) / self.std ** 3)}

    def log_partition(self):
        return 0.5 * self.dim * math.log(2 * math.pi * self.std ** 2)

    def __repr__(self):
        return f"GaussianStd(std={self.std:g}, dim={self.dim})"


class GaussianPrecision(_Parametric):
    """Zero-mean Gaussian parametrised by its precision matrix."""

    def __init__(self, precision):
        P = _as_float_array(precision, "precision")
        if P.ndim != 2:
            raise ValueError(f"precision must be a (d, d) matrix; got shape {P.shape}")
        self.dim = P.shape[0]
        self._set("precision", P)

    def _set(self, k, v):
        _check_spd(v, "precision")
        self.precision = v.copy()

    @property
    def params(self):
        return {"precision": self.precision.copy()}

    def value(self, x):
        self.check_x(x)
        xf = x.reshape(x.shape[0], -1)
        xp = array_module(x)
        P = xp.asarray(self.precision, dtype=x.dtype)
        return 0.5 * ((xf @ P) * xf).sum(1)

    def value_and_grad(self, x):
        xp = array_module(x)
        P = xp.asarray(self.precision, dtype=x.dtype)
        return self.value(x), (x.reshape(x.shape[0], -1) @ P).reshape(x.shape)

    def grad_params(self, x, cotangent):
        c = self._cotangent(x, cotangent)
        xf = x.reshape(x.shape[0], -1)
        return {"precision": 0.5 * (xf * c[:, None]).T @ xf}

    def log_partition(self):
        return 0.5 * self.dim * math.log(2 * math.pi) - 0.5 * np.linalg.slogdet(self.precision)[1]

    def __repr__(self):
        return f"GaussianPrecision(dim={self.dim})"


class QuadraticExponentialFamily(_Parametric):
    """The 1-D exponential family of the short-run MCMC paper (004, Section 4.1):
    f(x | theta) = <theta, (x, x^2)>, E = -f, so p is N(-theta1 / (2 theta2),
    -1 / (2 theta2)) when theta2 < 0 and not normalisable otherwise (a short-run chain
    from a bounded start never needs it to be).  grad_x E = -(theta1 + 2 theta2 x);
    grad_theta E = -(x, x^2)."""

    dim = 1

    def __init__(self, theta=(0.0, 0.0)):
        self._set("theta", np.asarray(theta, dtype=np.float64))

    def _set(self, k, v):
        if v.shape != (2,) or not np.isfinite(v).all():
            raise ValueError(f"theta must be two finite numbers (theta1, theta2); got {v!r}")
        self.theta = v.copy()

    @property
    def params(self):
        return {"theta": self.theta.copy()}

    def value_and_grad(self, x):
        self.check_x(x)
        t1, t2 = (x.dtype.type(t) for t in self.theta)
        return -(t1 * x[:, 0] + t2 * x[:, 0] * x[:, 0]), -(t1 + 2 * t2 * x)

    def grad_params(self, x, cotangent):
        c = self._cotangent(x, cotangent)
        xf = x[:, 0].astype(np.float64)
        return {"theta": -np.array([float((c * xf).sum()), float((c * xf * xf).sum())])}

    def mean_std(self):
        """(mean, standard deviation) of p_theta; ``ValueError`` unless theta2 < 0."""
        t1, t2 = self.theta
        if not t2 < 0:
            raise ValueError(f"p_theta is not normalisable for theta2 = {t2} >= 0")
        return -t1 / (2 * t2), math.sqrt(-1 / (2 * t2))

    def __repr__(self):
        return f"QuadraticExponentialFamily(theta={self.theta.tolist()})"
