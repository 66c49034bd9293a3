"""Combinations of energies: weighted sums sum_k w_k E_k(x) and tempered energies
E(x) / T (the density exp(-E)^(1/T)).  Gradients are the same combinations of the
terms' gradients; values and gradients are computed in the positions' dtype."""
import numpy as np

from ..backend import array_module
from .analytic import Energy


class Sum(Energy):
    """E(x) = sum_k w_k E_k(x).

    Parameters
    ----------
    terms : list of Energy, all of one dimension (or without one)
    weights : list of finite floats, one per term (default 1 each)
    """

    def __init__(self, terms, weights=None):
        terms = list(terms)
        if not terms or not all(isinstance(t, Energy) for t in terms):
            raise ValueError("Sum needs a non-empty list of energies")
        w = np.ones(len(terms)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(terms),) or not np.isfinite(w).all():
            raise ValueError(f"weights must be {len(terms)} finite numbers, one per term; got {weights!r}")
        dims = {t.dim for t in terms if t.dim is not None}
        if len(dims) > 1:
            raise ValueError(f"the terms of a Sum must share one dimension; got {sorted(dims)}")
        self.terms, self.weights = terms, w
        self.dim = dims.pop() if dims else None

    def cache_token(self):
        return (self._param_version,) + tuple(t.cache_token() for t in self.terms)

    def value(self, x):
        xp = self.check_x(x)
        fl = x.dtype.type
        out = xp.zeros(x.shape[0], dtype=x.dtype)
        for w, t in zip(self.weights, self.terms):
            out += fl(w) * t.value(x)
        return out

    def value_and_grad(self, x):
        xp = self.check_x(x)
        fl = x.dtype.type
        v, g = xp.zeros(x.shape[0], dtype=x.dtype), xp.zeros_like(x)
        for w, t in zip(self.weights, self.terms):
            tv, tg = t.value_and_grad(x)
            v += fl(w) * tv
            g += fl(w) * tg
        return v, g

    def grad(self, x):
        return self.value_and_grad(x)[1]

    def __repr__(self):
        return " + ".join(f"{w:g} * {t!r}" for w, t in zip(self.weights, self.terms))


class Tempered(Sum):
    """E(x) / T: the density exp(-E) at temperature T (T > 1 flattens it)."""

    def __init__(self, energy, temperature):
        t = float(temperature)
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a positive number; got {temperature!r}")
        super().__init__([energy], [1.0 / t])
        self.temperature = t


class Interpolated(Energy):
    """E_beta = (1 - beta) E_0 + beta E_1, the geometric path between two densities (annealing);
    ``beta`` may be changed (the cache token follows)."""

    def __init__(self, base, target, beta=0.0):
        self.base, self.target, self.beta = base, target, float(beta)
        self.dim = target.dim

    def cache_token(self):
        return (self.beta, self.target.cache_token())

    def value_and_grad(self, x):
        e0, g0 = self.base.value_and_grad(x)
        e1, g1 = self.target.value_and_grad(x)
        b = x.dtype.type(self.beta)
        return (1 - b) * e0 + b * e1, (1 - b) * g0 + b * g1

    def value(self, x):
        b = self.beta
        return (1 - b) * self.base.value(x) + b * self.target.value(x)


class BoxRestricted(Energy):
    """``energy`` inside the box [lo, hi]^d and +inf outside, so that MALA rejects every
    proposal that leaves it (the gradient is the energy's, finite everywhere)."""

    def __init__(self, energy, lo, hi):
        self.energy, self.lo, self.hi = energy, float(lo), float(hi)
        self.dim = energy.dim

    def cache_token(self):
        return ("box", self.lo, self.hi, self.energy.cache_token())

    def _outside(self, x):
        xf = x.reshape(x.shape[0], -1)
        return ((xf < self.lo) | (xf > self.hi)).any(1)

    def value_and_grad(self, x):
        e, g = self.energy.value_and_grad(x)
        return array_module(x).where(self._outside(x), x.dtype.type(np.inf), e), g

    def value(self, x):
        return array_module(x).where(self._outside(x), x.dtype.type(np.inf), self.energy.value(x))


class Zero(Energy):
    """E = 0: with a box, the uniform base of the path (log Z_0 = d log(hi - lo))."""

    def __init__(self, dim):
        self.dim = dim

    def value_and_grad(self, x):
        return array_module(x).zeros(x.shape[0], x.dtype), array_module(x).zeros_like(x)

    def value(self, x):
        return array_module(x).zeros(x.shape[0], x.dtype)
