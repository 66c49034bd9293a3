"""F1 (mean-field two-layer ReLU) energies whose neurons are an ensemble (paper 001).

    f(x) = (1/m) sum_j sigma_j w_j relu(<theta_j, x>)

with neuron positions theta_j = ``neurons.x[j]``, weights w_j = exp(``log_weights``)
(1 when absent) and signs sigma_j (+1 when absent).  The pairwise sums run in the
``particleflow.kernels.pairwise`` kernels (numba CPU / numba.cuda): ``relu_feature_means``
and ``relu_network`` below (CPU: block kernels with fixed-order sums).

``potential(particles, data)`` is the Wasserstein-Fisher-Rao potential of
Algorithm 1, F(theta) = mean_i relu(<theta, X_i>) - mean_a relu(<theta, x_a>) over
generated particles X and data x, with its gradient in theta; pass it to
``pf.moves.WassersteinFisherRao`` as ``lambda neurons: f1.potential(X, data)``.
"""
from ..backend import array_module, kernel_target, to_numpy
from ..ensemble import Ensemble
from ..kernels.pairwise import kernel as _pairwise_kernel
from ..kernels.pairwise import BLOCK as PAIR_BLOCK
from ..kernels.pairwise import ordered_sum
from . import f1_cpu
from .analytic import Energy


class F1Network(Energy):
    def __init__(self, neurons, activation="relu"):
        if activation != "relu":
            raise ValueError(f"F1Network supports activation='relu' only (the paper's); got {activation!r}")
        if not isinstance(neurons, Ensemble) or neurons.x.ndim != 2:
            raise ValueError("neurons must be an Ensemble with positions of shape (m, d)")
        self.neurons = neurons
        self.dim = neurons.x.shape[1]

    def _coefficients(self):
        e = self.neurons
        xp = e.xp
        w = xp.exp(e.log_weights) if e.log_weights is not None else xp.ones(e.n, dtype=e.dtype)
        s = e.signs if e.signs is not None else xp.ones(e.n, dtype=e.dtype)
        return s * w / e.n

    def value_and_grad(self, x):
        self.check_x(x)
        if x.dtype != self.neurons.dtype:
            raise ValueError(f"x has dtype {x.dtype} but the neurons are {self.neurons.dtype}")
        return relu_network(x, self.neurons.x, self._coefficients())

    @property
    def params(self):
        e = self.neurons
        xp = e.xp
        w = xp.exp(e.log_weights) if e.log_weights is not None else xp.ones(e.n, dtype=e.dtype)
        return {"theta": e.x, "weight": w}

    def grad_params(self, x, cotangent):
        """d/d theta_j and d/d w_j of sum_i c_i f(x_i)."""
        self.check_x(x)
        xp = array_module(x)
        c = xp.asarray(cotangent, dtype=x.dtype)
        e = self.neurons
        s = e.signs if e.signs is not None else xp.ones(e.n, dtype=e.dtype)
        w = self.params["weight"]
        # S_j = sum_i c_i relu(<theta_j, x_i>), G_j = sum_i c_i 1[<theta_j, x_i> > 0] x_i
        S, G = _signed_sums(e.x, x, c)
        return {"theta": (s * w / e.n)[:, None] * G, "weight": s / e.n * S}

    def cache_token(self):
        """The neurons move every step: a fresh token, so nothing is cached."""
        return object()

    def hvp(self, x, v):
        """ReLU networks are piecewise linear: the Hessian is zero almost everywhere."""
        self.check_x(x)
        return array_module(x).zeros_like(x)

    def potential(self, particles, data):
        """(F [m], grad F [m, d]) at the current neurons (Algorithm 1's F_t).
        ``particles`` and ``data``: arrays, or Ensembles (then the means span every
        rank of a run over several processes)."""
        theta = self.neurons.x
        Sp, Gp = _feature_means(theta, particles)
        Sd, Gd = _feature_means(theta, data)
        return Sp - Sd, Gp - Gd


def _feature_means(theta, points):
    """``relu_feature_means`` over an array, or over every particle of an Ensemble on
    every rank: a sharded ensemble's rows, or this rank's share of a replicated one;
    the block partials are gathered and added in block order (bitwise the same for
    any number of ranks)."""
    if not isinstance(points, Ensemble):
        return relu_feature_means(theta, points)
    dev, shard, x = points.device, points.shard, points.x
    if shard is None:
        shard = dev.split(points.n)
        if shard is None:
            return relu_feature_means(theta, x)
        x = x[shard.lo:shard.hi]
    _check_pair(theta, x)
    c = 1.0 / shard.n
    parts = f1_cpu.neuron_partials(theta, x, c)
    if parts is not None:
        S_part, G_part = parts
        if dev.reduction == "allreduce":       # the ranks' sums added by MPI (not bitwise in R)
            return (dev.comm.allreduce_sum(ordered_sum(S_part)).astype(S_part.dtype),
                    dev.comm.allreduce_sum(ordered_sum(G_part)).astype(G_part.dtype))
        return (ordered_sum(dev.gather_blocks(S_part, shard, PAIR_BLOCK)),
                ordered_sum(dev.gather_blocks(G_part, shard, PAIR_BLOCK)))
    S, G = relu_feature_means(theta, x, coef=c)
    xp = array_module(theta)
    return (xp.asarray(dev.comm.allreduce_sum(to_numpy(S))).astype(S.dtype),
            xp.asarray(dev.comm.allreduce_sum(to_numpy(G))).astype(G.dtype))


def _signed_sums(theta, x, c):
    xp = array_module(x)
    pos, neg = c > 0, c < 0
    S = xp.zeros(theta.shape[0], dtype=x.dtype)
    G = xp.zeros_like(theta)
    for mask, sgn in ((pos, 1.0), (neg, -1.0)):
        if bool(mask.any()):
            # relu(<theta, |c| x>) = |c| relu(<theta, x>) and the indicator is unchanged
            s, g = relu_feature_means(theta, x[mask] * xp.abs(c[mask])[:, None], coef=1.0)
            S = S + sgn * s
            G = G + sgn * g
    return S, G


def _check_pair(theta, x):
    if theta.ndim != 2 or x.ndim != 2 or theta.shape[1] != x.shape[1]:
        raise ValueError(f"theta [m, d] and x [n, d] must be 2-D with the same d; got "
                         f"{theta.shape} and {x.shape}")
    if theta.dtype != x.dtype:
        raise ValueError(f"theta and x must share a dtype; got {theta.dtype} and {x.dtype}")


def relu_feature_means(theta, x, coef=None):
    """(S [m], G [m, d]) with S_j = c sum_i relu(<theta_j, x_i>),
    G_j = c sum_i 1[<theta_j, x_i> > 0] x_i and c = ``coef`` (default 1/n)."""
    _check_pair(theta, x)
    xp = array_module(theta)
    theta = xp.ascontiguousarray(theta)
    x = xp.ascontiguousarray(x)
    m, d = theta.shape
    c = theta.dtype.type(1.0 / x.shape[0] if coef is None else coef)
    fast = f1_cpu.neuron_sums(theta, x, c)
    if fast is not None:
        return fast
    S = xp.zeros(m, dtype=theta.dtype)
    G = xp.zeros(m * d, dtype=theta.dtype)
    _pairwise_kernel("neuron_sums", kernel_target(theta))(m, theta.reshape(-1), x.reshape(-1), x.shape[0], d, c, S, G)
    return S, G.reshape(m, d)


def relu_network(x, theta, a):
    """(f [n], grad_x f [n, d]) of f(x) = sum_j a_j relu(<theta_j, x>)."""
    _check_pair(theta, x)
    xp = array_module(x)
    n, d = x.shape
    if a.shape != (theta.shape[0],):
        raise ValueError(f"a must have shape ({theta.shape[0]},); got {a.shape}")
    fast = f1_cpu.network(x, theta, a)
    if fast is not None:
        return fast
    f = xp.empty(n, dtype=x.dtype)
    g = xp.empty(n * d, dtype=x.dtype)
    _pairwise_kernel("network", kernel_target(x))(n, xp.ascontiguousarray(x).reshape(-1),
                                        xp.ascontiguousarray(theta).reshape(-1),
                                        xp.asarray(a, dtype=x.dtype), theta.shape[0], d, f, g)
    return f, g.reshape(n, d)
