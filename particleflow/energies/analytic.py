"""Analytic energies: Gaussian, Gaussian mixture, and user callables.

Sign convention: E(x) = -log p(x) + const.  ``value(x) -> [n]``, ``grad(x)`` has the
shape of ``x``.  Gaussian and GaussianMixture also expose ``fused_params`` so that
Langevin / MALA / HMC moves can run the fused kernels of
``particleflow.kernels.analytic`` (same formulas, one pass per particle).
"""
import math

import numpy as np

from ..backend import array_module, kernel_target, to_numpy
from ..kernels.analytic import MAX_FUSED_DIM, kernel
from ..random import Purpose


class Energy:
    """Base class: subclasses implement ``value_and_grad`` (and may override
    ``value``/``grad``).  ``dim`` is the flattened event size, or None if any.

    Learnable energies (a ``params`` dict and ``set_params``) also get
    ``state_dict()`` / ``load_state_dict()`` for checkpoints.  ``cache_token()``
    changes whenever the parameters change (``set_params`` calls
    ``parameters_changed``); moves use it to know when E and grad E stored for an
    ensemble are stale.  An energy whose function changes some other way must call
    ``parameters_changed()`` itself."""

    dim = None
    _param_version = 0

    def cache_token(self):
        return self._param_version

    def parameters_changed(self):
        self._param_version += 1

    def state_dict(self):
        """The learnable parameters as numpy arrays ({} for a fixed energy)."""
        if not hasattr(self, "set_params"):
            return {}
        return {k: np.array(to_numpy(v)) for k, v in self.params.items()}

    def load_state_dict(self, state):
        if state:
            self.set_params(dict(state))

    def check_x(self, x, what="x"):
        xp = array_module(x)
        if x.ndim < 2:
            raise ValueError(f"{what} must have shape (n, *event_shape); got {x.shape}")
        d = int(np.prod(x.shape[1:]))
        if self.dim is not None and d != self.dim:
            raise ValueError(
                f"{what} has event shape {tuple(x.shape[1:])} (dimension {d}) but "
                f"{type(self).__name__} is defined on dimension {self.dim}")
        return xp

    def value(self, x):
        return self.value_and_grad(x)[0]

    def grad(self, x):
        return self.value_and_grad(x)[1]

    def value_and_grad(self, x):
        raise NotImplementedError


def cotangent_vector(x, cotangent):
    """The per-particle weights c of grad_theta sum_i c_i E(x_i), checked: shape (n,)."""
    xp = array_module(x)
    c = xp.asarray(cotangent, dtype=x.dtype)
    if c.shape != (x.shape[0],):
        raise ValueError(f"cotangent must have shape ({x.shape[0]},); got {c.shape}")
    return c


def _as_float_array(a, what):
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or Inf")
    return a


def _check_spd(m, what):
    if m.shape[-1] != m.shape[-2]:
        raise ValueError(f"{what} must be square; got shape {m.shape}")
    if not np.allclose(m, np.swapaxes(m, -1, -2), rtol=1e-10, atol=1e-12):
        raise ValueError(f"{what} must be symmetric")
    try:
        np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        raise ValueError(f"{what} must be positive definite") from None


class _MixtureLike(Energy):
    """E(x) = -log sum_k exp(logc_k - 0.5 (x - mu_k)^T P_k (x - mu_k)).

    Stored in float64 as ``_mu [K, d]``, ``_prec`` ``[K]`` (isotropic) or
    ``[K, d, d]``, ``_logc [K]``."""

    def fused_params(self, dtype, xp=np):
        """(mu [K*d], prec [K] or [K*d*d], logc [K], isotropic) in ``dtype`` on ``xp``."""
        key = (np.dtype(dtype).str, xp.__name__)
        cache = self.__dict__.setdefault("_fused_cache", {})
        if key not in cache:
            cache[key] = (xp.asarray(self._mu.ravel(), dtype=dtype),
                          xp.asarray(self._prec.ravel(), dtype=dtype),
                          xp.asarray(self._logc, dtype=dtype), self._iso)
        return cache[key]

    @property
    def n_components(self):
        return self._mu.shape[0]

    def value_and_grad(self, x):
        xp = self.check_x(x)
        n = x.shape[0]
        D, K = self._mu.shape[1], self._mu.shape[0]
        if 1 <= D <= MAX_FUSED_DIM and x.dtype in (np.float32, np.float64) and n:
            # one fused pass per particle (kernels.analytic ENERGY_GRAD): numpy's reductions
            # over the short trailing axes of [n, K, d] temporaries cost 10x more
            mu, prec, logc, iso = self.fused_params(x.dtype, xp)
            launch = kernel("energy_grad", D, K, iso, x.dtype, kernel_target(x))
            e, g = xp.empty(n, x.dtype), xp.empty(n * D, x.dtype)
            launch(n, xp.ascontiguousarray(x).reshape(-1), e, g, mu, prec, logc)
            return e, g.reshape(x.shape)
        xf = x.reshape(n, -1)
        mu = xp.asarray(self._mu, dtype=x.dtype)
        prec = xp.asarray(self._prec, dtype=x.dtype)
        logc = xp.asarray(self._logc, dtype=x.dtype)
        d = xf[:, None, :] - mu[None]                       # [n, K, dim]
        if self._iso:
            v = d * prec[None, :, None]
        else:
            v = xp.einsum("kab,nkb->nka", prec, d)
        logits = logc[None] - 0.5 * (d * v).sum(-1)         # [n, K]
        m = logits.max(1)
        w = xp.exp(logits - m[:, None])
        s = w.sum(1)
        e = -(m + xp.log(s))
        g = (w[:, :, None] * v).sum(1) / s[:, None]
        return e, g.reshape(x.shape)


class Gaussian(_MixtureLike):
    """E(x) = 0.5 (x - mean)^T P (x - mean).

    Parameters
    ----------
    mean : array [d]
    precision : array [d, d] (symmetric positive definite), or a scalar / [d]
        vector for an isotropic / diagonal precision.
    """

    def __init__(self, mean, precision):
        mean = _as_float_array(mean, "mean")
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector [d]; got shape {mean.shape}")
        d = mean.size
        p = _as_float_array(precision, "precision")
        if p.ndim == 0:
            p = np.eye(d) * p
        elif p.ndim == 1:
            if p.size != d:
                raise ValueError(f"precision vector must have length {d} to match mean; got {p.size}")
            p = np.diag(p)
        if p.shape != (d, d):
            raise ValueError(f"precision must have shape ({d}, {d}) to match mean; got {p.shape}")
        _check_spd(p, "precision")
        self.mean = mean
        self.precision = p
        self.dim = d
        self._mu = mean[None]
        self._iso = False
        self._prec = p[None]
        self._logc = np.zeros(1)

    @property
    def covariance(self):
        return np.linalg.inv(self.precision)

    def sample(self, stream, step, ids, dtype=np.float64, purpose=None):
        """Exact draws [len(ids), d] from N(mean, P^-1) with the counter-based stream
        (used as an importance / independent-MH proposal)."""
        xp = array_module(ids)
        z = stream.normal(step, ids, self.dim, purpose or Purpose.PROPOSAL, dtype)
        L = xp.asarray(np.linalg.cholesky(self.covariance), dtype=dtype)
        return xp.asarray(self.mean, dtype=dtype) + z @ L.T

    def __repr__(self):
        return f"Gaussian(dim={self.dim})"


def ring_means(components, radius):
    """[K, 2] means evenly spaced on a circle: radius (cos 2 pi k / K, sin 2 pi k / K),
    the ring-of-Gaussians targets of papers 002 and 004 and the demo's."""
    ang = 2 * np.pi * np.arange(components) / components
    return radius * np.stack([np.cos(ang), np.sin(ang)], 1)


class GaussianMixture(_MixtureLike):
    """E(x) = -log sum_k w_k N(x; mu_k, Sigma_k) (the exact negative log density).

    Parameters
    ----------
    means : array [K, d]
    covariances : array [K, d, d] or [d, d] (shared), optional
    scale : float or array [K], optional
        Isotropic standard deviations (Sigma_k = scale_k^2 I); default 1 when
        ``covariances`` is not given.  Give one of ``covariances`` / ``scale``.
    weights : array [K] of positive numbers, optional (normalised; default equal)
    """

    def __init__(self, means, covariances=None, scale=None, weights=None):
        mu = _as_float_array(means, "means")
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {mu.shape}")
        K, d = mu.shape
        if weights is None:
            w = np.full(K, 1.0 / K)
        else:
            w = _as_float_array(weights, "weights")
            if w.shape != (K,):
                raise ValueError(f"weights must have shape ({K},) to match means; got {w.shape}")
            if (w <= 0).any():
                raise ValueError("weights must be positive")
            w = w / w.sum()
        if covariances is not None and scale is not None:
            raise ValueError("give either covariances or scale, not both")
        half_log_2pi = 0.5 * d * math.log(2 * math.pi)
        if covariances is None:
            s = _as_float_array(1.0 if scale is None else scale, "scale")
            s = np.broadcast_to(s, (K,)).copy() if s.ndim == 0 else s
            if s.shape != (K,):
                raise ValueError(f"scale must be a scalar or have shape ({K},); got {s.shape}")
            if (s <= 0).any():
                raise ValueError("scale must be positive")
            self._iso = True
            self._prec = 1.0 / s ** 2
            self._logc = np.log(w) - d * np.log(s) - half_log_2pi
            self.covariances = s[:, None, None] ** 2 * np.eye(d)[None]
        else:
            c = _as_float_array(covariances, "covariances")
            if c.shape == (d, d):
                c = np.broadcast_to(c, (K, d, d)).copy()
            if c.shape != (K, d, d):
                raise ValueError(f"covariances must have shape ({K}, {d}, {d}) or ({d}, {d}); got {c.shape}")
            _check_spd(c, "covariances")
            self._iso = False
            self._prec = np.linalg.inv(c)
            self._prec = 0.5 * (self._prec + np.swapaxes(self._prec, 1, 2))
            self._logc = np.log(w) - 0.5 * np.linalg.slogdet(c)[1] - half_log_2pi
            self.covariances = c
        self.means = mu
        self.weights = w
        self.dim = d
        self._mu = mu

    def mean(self):
        """Exact mixture mean [d]."""
        return self.weights @ self.means

    def cov(self):
        """Exact mixture covariance [d, d]."""
        m = self.mean()
        dm = self.means - m
        return np.einsum("k,kab->ab", self.weights, self.covariances) + \
            np.einsum("k,ka,kb->ab", self.weights, dm, dm)

    def sample(self, stream, step, ids, dtype=np.float64, purpose=None):
        """Exact draws [len(ids), d] with the counter-based stream: the component by
        inverse CDF of a PROPOSAL_COMPONENT uniform, then mu_k + L_k z."""
        xp = array_module(ids)
        u = stream.uniform(step, ids, 1, Purpose.PROPOSAL_COMPONENT, np.float64)[:, 0]
        cdf = np.cumsum(self.weights)
        cdf[-1] = 1.0
        k = xp.minimum(xp.searchsorted(xp.asarray(cdf), u, side="right"), self.n_components - 1)
        z = stream.normal(step, ids, self.dim, purpose or Purpose.PROPOSAL, dtype)
        L = xp.asarray(np.linalg.cholesky(self.covariances), dtype=dtype)
        return xp.asarray(self.means, dtype=dtype)[k] + xp.einsum("nab,nb->na", L[k], z)

    def sample_numpy(self, n, rng):
        """n exact draws with a numpy Generator (for tests and initial states)."""
        k = rng.choice(self.n_components, size=n, p=self.weights)
        L = np.linalg.cholesky(self.covariances)
        z = rng.standard_normal((n, self.dim))
        return self.means[k] + np.einsum("nab,nb->na", L[k], z)

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, dim={self.dim}, isotropic={self._iso})"


class FromCallable(Energy):
    """An energy from user functions working on arrays ``[n, *event_shape]``.

    Parameters
    ----------
    value : callable x -> [n], optional when ``value_and_grad`` is given
    grad : callable x -> array shaped like x, optional when ``value_and_grad`` is given
    value_and_grad : callable x -> (value, grad), optional (faster when given)
    dim : int, optional; checked against the ensemble when given

    What the functions return is checked (shape ``(n,)`` for values, the shape of x
    for gradients, floating point), with a message naming the function.
    """

    def __init__(self, value=None, grad=None, value_and_grad=None, dim=None):
        for name, f in (("value", value), ("grad", grad), ("value_and_grad", value_and_grad)):
            if f is not None and not callable(f):
                raise ValueError(f"FromCallable: {name} must be callable; got {type(f).__name__}")
        if value_and_grad is None and (value is None or grad is None):
            raise ValueError("FromCallable needs value(x) and grad(x), or value_and_grad(x)")
        self._value = value
        self._grad = grad
        self._vg = value_and_grad
        self.dim = dim

    @staticmethod
    def _checked_value(v, x, name):
        xp = array_module(x)
        v = xp.asarray(v)
        if v.shape != (x.shape[0],) or v.dtype.kind != "f":
            raise ValueError(f"FromCallable: {name}(x) must return a float array of shape ({x.shape[0]},) "
                             f"(one energy per particle); got {v.dtype} {tuple(v.shape)}")
        return v

    @staticmethod
    def _checked_grad(g, x, name):
        xp = array_module(x)
        g = xp.asarray(g)
        if g.shape != x.shape or g.dtype.kind != "f":
            raise ValueError(f"FromCallable: {name}(x) must return a float array shaped like x {tuple(x.shape)}; "
                             f"got {g.dtype} {tuple(g.shape)}")
        return g

    def value(self, x):
        self.check_x(x)
        if self._value is None:
            return self.value_and_grad(x)[0]
        return self._checked_value(self._value(x), x, "value")

    def grad(self, x):
        self.check_x(x)
        if self._grad is None:
            return self.value_and_grad(x)[1]
        return self._checked_grad(self._grad(x), x, "grad")

    def value_and_grad(self, x):
        self.check_x(x)
        if self._vg is not None:
            out = self._vg(x)
            if not isinstance(out, tuple) or len(out) != 2:
                raise ValueError("FromCallable: value_and_grad(x) must return a tuple (value, grad)")
            return (self._checked_value(out[0], x, "value_and_grad"),
                    self._checked_grad(out[1], x, "value_and_grad"))
        return self.value(x), self.grad(x)
