"""Combinations of energies: weighted sums sum_k w_k E_k(x) and tempered energies
E(x) / T (the density exp(-E)^(1/T)).  Gradients are the same combinations of the
terms' gradients; values and gradients are computed in the positions' dtype."""
import numpy as np

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
