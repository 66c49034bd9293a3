"""The direct score network of paper 002 (its "DSM" baseline): psi(x) = MLP(x) in R^d,
trained with the same denoising loss as DEEN but not constrained to be a gradient
field, so its curl d1 psi2 - d2 psi1 need not vanish.

    a_0 = x,  z_l = a_{l-1} W_l^T + b_l,  a_l = tanh(z_l)  (l < L),  psi = a_{L-1} W_L^T + b_L

Loss (eq. 23 with the score in place of -grad E): L = (1/B) sum_b ||x_b - xi_b - sigma^2 psi(xi_b)||^2.
Backward, with g_L = dL/dpsi = -(2 sigma^2 / B) r, r = x - xi - sigma^2 psi:
    dW_l = g_l^T a_{l-1},  db_l = sum_b g_l,  g_{l-1} = (g_l W_l) * (1 - a_{l-1}^2).
Jacobian d psi / d x by forward tangents: t_0 = e_j, t_l = (t_{l-1} W_l^T) * (1 - a_l^2),
column j = t_{L-1} W_L^T.  Both are checked against central differences.
"""
import numpy as np

from ..backend import to_numpy


class ScoreMLP:
    """Vector-output tanh MLP ``sizes = [d, h_1, ..., d]`` with PyTorch's default
    (Kaiming-uniform) initialisation; ``params`` / ``set_params`` / ``state_dict`` as the
    energies have them."""

    def __init__(self, sizes, seed=0, dtype=np.float64):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or sizes[0] != sizes[-1] or min(sizes) < 1:
            raise ValueError(f"sizes must be [d, ..., d] with positive entries (a vector field on R^d); got {sizes}")
        rng = np.random.default_rng(seed)
        self.sizes, self.dim = sizes, sizes[0]
        self.params = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / np.sqrt(a)
            self.params[f"{i}.weight"] = rng.uniform(-bound, bound, (b, a)).astype(dtype)
            self.params[f"{i}.bias"] = rng.uniform(-bound, bound, b).astype(dtype)

    def _layers(self):
        n = len(self.sizes) - 1
        return [(self.params[f"{i}.weight"], self.params[f"{i}.bias"]) for i in range(n)]

    def set_params(self, params):
        if set(params) != set(self.params):
            raise ValueError(f"parameter dict does not match the score network: expected {sorted(self.params)}")
        for k, v in params.items():
            v = np.asarray(v)
            if v.shape != self.params[k].shape:
                raise ValueError(f"parameter {k!r} must have shape {self.params[k].shape}; got {v.shape}")
            self.params[k] = v.astype(self.params[k].dtype, copy=True)

    def state_dict(self):
        return {k: np.array(to_numpy(v)) for k, v in self.params.items()}

    def load_state_dict(self, state):
        self.set_params(dict(state))

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}); got {x.shape}")

    def _forward(self, x):
        acts = [x]
        layers = self._layers()
        for W, b in layers[:-1]:
            acts.append(np.tanh(acts[-1] @ W.T + b))
        W, b = layers[-1]
        return acts[-1] @ W.T + b, acts

    def __call__(self, x):
        """psi(x), shape of x."""
        self._check(x)
        return self._forward(x)[0]

    def dsm_loss_and_grad(self, x, x_noisy, sigma):
        self._check(x)
        self._check(x_noisy)
        s2 = x.dtype.type(float(sigma) ** 2)
        psi, acts = self._forward(x_noisy)
        r = x - x_noisy - s2 * psi
        B = x.shape[0]
        loss = float((r * r).sum() / B)
        g = (-2 * s2 / B) * r
        grads = {}
        layers = self._layers()
        for i in range(len(layers) - 1, -1, -1):
            W, _ = layers[i]
            grads[f"{i}.weight"] = g.T @ acts[i]
            grads[f"{i}.bias"] = g.sum(0)
            if i:
                g = (g @ W) * (1 - acts[i] * acts[i])
        return loss, {k: grads[k] for k in self.params}

    def jacobian(self, x):
        """d psi_i / d x_j, shape [n, d, d]."""
        self._check(x)
        _, acts = self._forward(x)
        layers = self._layers()
        out = np.empty((x.shape[0], self.dim, self.dim), dtype=x.dtype)
        for j in range(self.dim):
            t = np.zeros_like(x)
            t[:, j] = 1
            for i, (W, _) in enumerate(layers[:-1]):
                t = (t @ W.T) * (1 - acts[i + 1] * acts[i + 1])
            out[:, :, j] = t @ layers[-1][0].T
        return out
