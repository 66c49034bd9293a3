"""Maximum Recovery MAP (paper 000): estimate a Gibbs potential by asking its MAP
estimates from noisy, partial observations d_i = P_i x_i + eps_i, eps_i ~ N(0, sigma^2 I),
to recover the data (eq. 2.5):

    theta_hat = argmin_theta (1/n) sum_i ||xhat_i(theta) - x_i||^2 [+ alpha ||P_i (xhat_i - x_i)||^2 (eq. 2.6)],
    xhat_i(theta) = argmin_x ||P_i x - d_i||^2 / (2 sigma^2) + phi(x, theta)            (eq. 2.2).

No partition function appears.  P_i selects coordinates: it is stored as a 0/1 mask
m_i of the data's shape (P_i^T P_i = diag(m_i)), and d_i is stored with zeros at the
unobserved coordinates.

Parametric potentials (Section 2), each with its MAP in closed form:

* ``gaussian_variance_*``: phi = x^2 / (2 theta), P = 1 (Example 2.1);
* ``covariance_*``: phi = x^T Theta^-1 x / 2 with P_i = I or a coordinate selection;
* ``laplace_*``: phi = theta |x| (soft thresholding), the paper's inconsistent case.

The least-action potential of Section 3 and its hyperbolic network are
``HyperbolicNetwork``; ``mrmap_training`` trains one as a Simulation (Algorithm 3.2).
"""
import math

import numpy as np
from scipy import optimize

from ..ensemble import Ensemble
from ..moves.base import positive
from ..moves.leapfrog import leapfrog, momentum_from_positions
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .batches import check_batch_size
from .contrastive import add_parameter_trainer



def check_fraction(fraction, name="known_fraction"):
    """A fraction of known coordinates: a number in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0 < fraction <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] (the share of observed coordinates); "
                         f"got {fraction!r}")
    return float(fraction)


def observe(x, fraction, sigma, seed, step, split=0, first_row=0):
    """(d, mask) for the rows of ``x`` [n, p]: each row keeps round(fraction p) (at least
    one) coordinates chosen uniformly without replacement, plus N(0, sigma^2) noise on
    them; d is 0 elsewhere.  A pure function of (seed, step, split, row index), the
    row index counted from ``first_row``."""
    fraction = check_fraction(fraction)
    x = np.asarray(x)
    n, p = x.shape
    stream = Stream(seed, StreamBlock.MRMAP_MASKS + split)
    ids = np.arange(first_row, first_row + n)
    mask = np.ones((n, p), dtype=x.dtype)
    if fraction < 1:
        k = max(1, int(round(fraction * p)))
        u = stream.uniform(step, ids, p, Purpose.MASK)
        mask[:] = 0
        np.put_along_axis(mask, np.argsort(u, axis=1, kind="stable")[:, :k], 1, axis=1)
    z = stream.normal(step, ids, p, Purpose.DATA_NOISE, x.dtype)
    return mask * (x + x.dtype.type(sigma) * z), mask


# ----------------------------------------------------------------- parametric MR-MAP
def gaussian_variance_map(theta, d, sigma):
    """The MAP (= posterior mean) of x ~ N(0, theta) from d = x + N(0, sigma^2):
    theta d / (sigma^2 + theta)."""
    return theta / (sigma ** 2 + theta) * np.asarray(d)


def gaussian_variance_closed_form(x, d, sigma):
    """The minimiser of eq. 2.5 for Example 2.1: sigma^2 d.x / (||d||^2 - d.x)."""
    dx = float(np.dot(d, x))
    return sigma ** 2 * dx / (float(np.dot(d, d)) - dx)


def gaussian_variance_mrmap(x, d, sigma):
    """The numerical MR-MAP estimate of the variance theta (Example 2.1): Brent's method
    on log theta for (1/n) ||xhat(theta) - x||^2, then Newton steps on its derivative."""
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    s2 = float(sigma) ** 2

    def loss(log_theta):
        r = gaussian_variance_map(math.exp(log_theta), d, sigma) - x
        return float(np.dot(r, r)) / len(x)

    lo, hi = math.log(1e-8 * (1 + np.var(d))), math.log(1e8 * (1 + np.var(d)))
    grid = np.linspace(lo, hi, 161)
    i = int(np.argmin([loss(g) for g in grid]))
    res = optimize.minimize_scalar(loss, bracket=(grid[max(i - 1, 0)], grid[i], grid[min(i + 1, 160)]),
                                   method="brent", options={"xtol": 1e-12})
    theta = math.exp(res.x)
    dd, dx = float(np.dot(d, d)), float(np.dot(d, x))
    for _ in range(3):   # dL/dt = 2 (t dd - dx) / n in t = theta / (s2 + theta): polish in theta
        t = theta / (s2 + theta)
        g = 2 * (t * dd - dx) * s2 / (s2 + theta) ** 2
        hss = 2 * dd * s2 ** 2 / (s2 + theta) ** 4 - 4 * (t * dd - dx) * s2 / (s2 + theta) ** 3
        if hss <= 0:
            break
        theta -= g / hss
    return theta


def covariance_map(theta, d, mask, sigma):
    """The MAP of x ~ N(0, Theta) from d = P x + N(0, sigma^2 I) with P^T P = diag(mask):
    xhat = Theta (M Theta + sigma^2 I)^-1 M d (the paper's (P^T P + sigma^2 Theta^-1)^-1 P^T d,
    written without Theta's inverse).  Returns (xhat [n, p], y [n, p]) with xhat = Theta y."""
    n, p = d.shape
    B = mask[:, :, None] * theta[None] + sigma ** 2 * np.eye(p)
    y = np.linalg.solve(B, (mask * d)[:, :, None])[:, :, 0]
    return y @ theta.T, y


def covariance_loss_and_grad(theta, x, d, mask, sigma, alpha=0.0):
    """(L, dL/dTheta) of eq. 2.6 for the Gaussian prior.  With B_i = M_i Theta + sigma^2 I,
    y_i = B_i^-1 M_i d_i, xhat_i = Theta y_i and c_i = dL/dxhat_i,
    dL/dTheta = sum_i (c_i - M_i B_i^-T Theta c_i) y_i^T (symmetrised: Theta is symmetric)."""
    n, p = d.shape
    xhat, y = covariance_map(theta, d, mask, sigma)
    r = xhat - x
    loss = float((r * r).sum() + alpha * (mask * r * r).sum()) / n
    c = 2.0 / n * (r + alpha * mask * r)
    B = mask[:, :, None] * theta[None] + sigma ** 2 * np.eye(p)
    z = mask * np.linalg.solve(np.swapaxes(B, 1, 2), (c @ theta.T)[:, :, None])[:, :, 0]
    G = (c - z).T @ y
    return loss, 0.5 * (G + G.T)


def covariance_mrmap(x, d, mask, sigma, alpha=0.0, theta0=None):
    """The MR-MAP covariance: L-BFGS on the Cholesky factor Theta = L L^T of eq. 2.6's
    sample objective, started at ``theta0`` (default: the covariance of d minus sigma^2 I,
    floored)."""
    x, d, mask = (np.asarray(a, np.float64) for a in (x, d, mask))
    n, p = x.shape
    if theta0 is None:
        S = (d.T @ d) / np.maximum(mask.T @ mask, 1.0) - sigma ** 2 * np.eye(p)
        w, V = np.linalg.eigh(0.5 * (S + S.T))
        theta0 = (V * np.maximum(w, 0.1 * max(float(w.max()), sigma ** 2))) @ V.T
    L0 = np.linalg.cholesky(theta0)
    il = np.tril_indices(p)

    def f(v):
        L = np.zeros((p, p))
        L[il] = v
        loss, G = covariance_loss_and_grad(L @ L.T, x, d, mask, sigma, alpha)
        return loss, (2 * G @ L)[il]

    res = optimize.minimize(f, L0[il], jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    L = np.zeros((p, p))
    L[il] = res.x
    return L @ L.T


def laplace_map(theta, d, sigma):
    """The MAP under phi = theta |x| from d = x + N(0, sigma^2): soft thresholding of d at
    sigma^2 theta."""
    return np.sign(d) * np.maximum(np.abs(d) - sigma ** 2 * theta, 0.0)


def laplace_mrmap(x, d, sigma):
    """The MR-MAP rate theta >= 0 of the Laplace prior: the sample objective is piecewise
    quadratic in the threshold, minimised exactly between consecutive breakpoints |d_i|."""
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    a = np.abs(d)
    s = np.sign(d)
    order = np.argsort(a)
    a, s, x = a[order], s[order], x[order]
    # threshold tau in [a_k, a_{k+1}): rows k+1.. are shrunk (s (a - tau) - x)^2, rows ..k give x^2
    head_x2 = np.concatenate([[0.0], np.cumsum(x * x)])
    # for the shrunk rows: sum (s a - x - s tau)^2 = S2 - 2 tau S1 + m tau^2, with e = s a - x
    e = s * a - x
    S1 = np.concatenate([np.cumsum((s * e)[::-1])[::-1], [0.0]])
    S2 = np.concatenate([np.cumsum((e * e)[::-1])[::-1], [0.0]])
    m = np.arange(len(a), -1, -1, dtype=np.float64)
    edges = np.concatenate([[0.0], a])
    best, best_tau = math.inf, 0.0
    for k in range(len(a) + 1):       # interval [edges[k], next edge), rows k.. shrunk
        lo = edges[k]
        hi = a[k] if k < len(a) else math.inf
        tau = S1[k] / m[k] if m[k] > 0 else lo
        tau = min(max(tau, lo), hi)
        val = head_x2[k] + (S2[k] - 2 * tau * S1[k] + m[k] * tau * tau if m[k] > 0 else 0.0)
        if val < best:
            best, best_tau = val, tau
    return best_tau / sigma ** 2


# ----------------------------------------------------------------- the hyperbolic network
def _cg(matvec, rhs, n_iter):
    """``n_iter`` conjugate-gradient iterations from 0 on every row of ``rhs`` [B, q]
    (``matvec`` applies each row's symmetric positive definite matrix)."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rr = (r * r).sum(1)
    tiny = np.finfo(rhs.dtype).tiny
    for _ in range(n_iter):
        Ap = matvec(p)
        pAp = (p * Ap).sum(1)
        a = np.where(pAp > tiny, rr / np.maximum(pAp, tiny), 0.0)[:, None]
        x = x + a * p
        r = r - a * Ap
        rr_new = (r * r).sum(1)
        b = np.where(rr > tiny, rr_new / np.maximum(rr, tiny), 0.0)[:, None]
        p = r + b * p
        rr = rr_new
    return x


class HyperbolicNetwork:
    """The least-action potential of paper 000 (eq. 3.2) and the network that computes
    its MAP (Algorithm 3.1), for data of dimension p, embedding dimension q and
    ``layers`` = l >= 2 flow states u_1 .. u_l:

        u_0 = A^-1 K^T d,           A = K^T P^T P K + beta I          (eq. 3.5, from d)
        u_1 = g(u_0) = u_0 + tanh(Omega u_0 + c)                      (eq. 3.6)
        u_{j+1} = 2 u_j - u_{j-1} + h^2 K_j^T (ReLU(K_j u_j + b_j) * w_j),  j = 1 .. l-1   (eq. 3.4a)
        q = A^-1 (K^T d + beta u_{l-1} + beta r)                      (eq. 3.4b)
        xhat = K u_l

    with f(t) = max(t, 0)^2 / 2 (so f' = ReLU) and w_j >= 0, which keeps the potential
    convex.  K is [p, q]; each K_j is [width, q].  The recurrence (3.4a) is a leapfrog
    run (``moves.leapfrog``, step h, unit mass) in the layer potentials
    V_j(u) = -w_j . f(K_j u + b_j): the positions of Stormer-Verlet are the u_j.

    The linear solves with A use a batched direct inverse (``solver = "direct"``: of
    the k x k matrix beta I + K_o K_o^T over the k observed coordinates, by the Woodbury
    identity, when k < q, else of A itself) or
    ``cg_iter`` conjugate-gradient iterations (``"cg"``, the paper's choice for large
    problems).  Back-propagation (``loss_and_grad``) differentiates the solves exactly as
    linear systems: u_0 = A^-1 b gives b_bar = A^-1 u0_bar and A_bar = -b_bar u0^T.
    With "direct" this is the exact gradient of the computed loss; with "cg" the
    adjoint solves also use ``cg_iter`` iterations, so the gradient is that of the
    converged solve (exact as cg_iter -> min(p, q)).

    The adjoint of the recurrence is again a leapfrog recurrence, run backwards.  With
    a_j the total derivative of the loss with respect to u_j and J_j = K_j^T diag(w_j
    1[K_j u_j + b_j > 0]) K_j the (symmetric) Jacobian of the force,

        a_j = 2 a_{j+1} - a_{j+2} + h^2 J_j a_{j+1} + ubar_j,

    where ubar_j is the loss's direct dependence on u_j: only u_l (through xhat and Rc)
    and u_{l-1} (through q) have one.  So a_l = ubar_l, and taking a_{l+1} = -ubar_{l-1}
    as the "previous position" makes every step a plain leapfrog step with the force
    h^2 J_j a, the same integrator as the forward pass.  Then
    a_0 = -a_2 + a_1 + Omega^T (a_1 * (1 - tanh^2)) and the parameter cotangents follow
    from each layer's F_j with cotangent h^2 a_{j+1}.
    """

    def __init__(self, params, beta=0.1, h=1.0, solver="direct", cg_iter=8):
        self.beta = positive(beta, "beta")
        self.h = positive(h, "h")
        if solver not in ("direct", "cg"):
            raise ValueError(f"solver must be 'direct' or 'cg'; got {solver!r}")
        self.solver = solver
        if isinstance(cg_iter, bool) or not isinstance(cg_iter, (int, np.integer)) or cg_iter < 1:
            raise ValueError(f"cg_iter must be an integer >= 1; got {cg_iter!r}")
        self.cg_iter = int(cg_iter)
        self.params = {}
        self.set_params(params)

    @classmethod
    def init(cls, p, q, layers, width=None, seed=0, dtype=np.float64, w0=0.01, omega=0.1, **kw):
        """A network with Gaussian weights from the seed's Philox stream: K and the K_j
        with variance 1/q, Omega with variance ``omega``^2 / q (small: the untrained
        network stays close to the data fit K u_0), b_j = 0, c = 0, w_j = ``w0``, r
        with unit variance."""
        for v, name in ((p, "p"), (q, "q"), (layers, "layers")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if layers < 2:
            raise ValueError(f"layers must be >= 2 (u_1 .. u_l); got {layers}")
        width = q if width is None else width
        s = Stream(seed, StreamBlock.INIT + 1)
        sizes = {"K": (p, q), "Omega": (q, q), "Kl": (layers - 1, width, q), "r": (q,)}
        draws = {}
        for i, (k, shape) in enumerate(sizes.items()):
            n = int(np.prod(shape))
            draws[k] = s.normal(i, np.arange(n), 1, Purpose.INIT)[:, 0].reshape(shape)
        params = {"K": draws["K"] / math.sqrt(q), "Omega": omega * draws["Omega"] / math.sqrt(q), "c": np.zeros(q),
                  "Kl": draws["Kl"] / math.sqrt(q), "bl": np.zeros((layers - 1, width)),
                  "wl": np.full((layers - 1, width), float(w0)), "r": draws["r"]}
        return cls({k: v.astype(dtype) for k, v in params.items()}, **kw)

    # -------------------------------------------------------------- parameters
    KEYS = ("K", "Omega", "c", "Kl", "bl", "wl", "r")

    def set_params(self, params):
        missing = [k for k in self.KEYS if k not in params]
        if missing:
            raise ValueError(f"HyperbolicNetwork parameters lack {missing}")
        P = {k: np.asarray(params[k]) for k in self.KEYS}
        p, q = P["K"].shape if P["K"].ndim == 2 else (None, None)
        if q is None or P["Omega"].shape != (q, q) or P["c"].shape != (q,) or P["r"].shape != (q,) \
                or P["Kl"].ndim != 3 or P["Kl"].shape[0] < 1 or P["Kl"].shape[2] != q or P["bl"].shape != P["Kl"].shape[:2] \
                or P["wl"].shape != P["Kl"].shape[:2]:
            raise ValueError("HyperbolicNetwork parameters have inconsistent shapes: K [p, q], Omega [q, q], "
                             "c [q], Kl [l-1, width, q] with l >= 2, bl and wl [l-1, width], r [q]; got "
                             + ", ".join(f"{k} {P[k].shape}" for k in self.KEYS))
        if not all(np.isfinite(v).all() for v in P.values()):
            raise ValueError("HyperbolicNetwork parameters contain NaN or Inf")
        if (P["wl"] < 0).any():
            raise ValueError(f"the layer weights w_j must be >= 0 (they keep the potential convex); "
                             f"{int((P['wl'] < 0).sum())} are negative (min {float(P['wl'].min()):.3g}); "
                             f"project them with np.maximum(w, 0)")
        self.params = P

    def project(self, params):
        """The parameters with the w_j clipped at 0 (projected gradient steps)."""
        out = dict(params)
        out["wl"] = np.maximum(np.asarray(params["wl"]), 0)
        return out

    def state_dict(self):
        return {k: np.array(v) for k, v in self.params.items()}

    def load_state_dict(self, state):
        self.set_params(dict(state))

    def cache_token(self):
        return id(self.params)

    @property
    def dim(self):
        return self.params["K"].shape[0]

    @property
    def embedding(self):
        return self.params["K"].shape[1]

    @property
    def layers(self):
        return self.params["Kl"].shape[0] + 1

    def check_observations(self, d, mask):
        d, mask = np.asarray(d), np.asarray(mask)
        p = self.dim
        if d.ndim != 2 or d.shape[1] != p or mask.shape != d.shape:
            raise ValueError(f"observations d and mask must both have shape [n, {p}] (the network's data "
                             f"dimension); got {d.shape} and {mask.shape}")
        if not np.isfinite(d).all():
            raise ValueError("observations d contain NaN or Inf; put 0 at unobserved coordinates and mark "
                             "them 0 in the mask")
        dt = self.params["K"].dtype
        return d.astype(dt, copy=False), mask.astype(dt, copy=False)

    # -------------------------------------------------------------- solves
    def _solver(self, mask):
        K, beta = self.params["K"], self.beta
        p, q = K.shape
        k = int(mask.sum(1).max()) if mask.size else 0
        if self.solver == "direct" and k < q:
            # Woodbury over the observed coordinates only (M = M^2 is a 0/1 diagonal): with
            # K_o the rows of K a row observes (padded with zero rows up to k),
            # A^-1 v = (v - K_o^T C^-1 K_o v) / beta,  C = beta I_k + K_o K_o^T  (k x k).
            idx = np.argsort(-mask, axis=1, kind="stable")[:, :k]
            Ko = K[idx] * np.take_along_axis(mask, idx, 1)[:, :, None]
            Cinv = np.linalg.inv(np.matmul(Ko, np.swapaxes(Ko, 1, 2)) + beta * np.eye(k, dtype=K.dtype))

            def solve(rhs):
                y = np.matmul(Cinv, np.matmul(Ko, rhs[:, :, None]))          # C^-1 K_o v, [B, k, 1]
                return (rhs - np.matmul(np.swapaxes(y, 1, 2), Ko)[:, 0, :]) / beta
            return solve
        if self.solver == "direct":
            KM = mask[:, :, None] * K[None]
            A = np.matmul(np.swapaxes(KM, 1, 2), K) + beta * np.eye(q, dtype=K.dtype)
            Ainv = np.linalg.inv(A)
            return lambda rhs: np.matmul(Ainv, rhs[:, :, None])[:, :, 0]
        return lambda rhs: _cg(lambda v: ((v @ K.T) * mask) @ K + beta * v, rhs, self.cg_iter)

    def _force(self, j, u):
        """(z_j, F_j(u)) with z_j = K_j u + b_j and F_j = K_j^T (ReLU(z_j) w_j)."""
        Kj = self.params["Kl"][j - 1]
        z = u @ Kj.T + self.params["bl"][j - 1]
        return z, (np.maximum(z, 0) * self.params["wl"][j - 1]) @ Kj

    # -------------------------------------------------------------- forward
    def forward(self, d, mask):
        """The flow of Algorithm 3.1 for observations ``d`` [n, p] (0 where unobserved)
        and ``mask``: a dict with ``u`` (the states u_0 .. u_l), ``z`` (the layers'
        pre-activations), ``q``, ``xhat`` = K u_l, ``x0`` = K u_0 (the data fit) and the
        solver."""
        d, mask = self.check_observations(d, mask)
        P, h, beta = self.params, self.h, self.beta
        solve = self._solver(mask)
        Ktd = d @ P["K"]
        u0 = solve(Ktd)
        t = np.tanh(u0 @ P["Omega"].T + P["c"])
        u1 = u0 + t
        l = self.layers
        zs = {}

        def grad(u, k):                   # step k lands on u_{k+2}; its layer (if any) is k + 2
            j = k + 2
            if j > l - 1:
                return None, np.zeros_like(u)
            zs[j], F = self._force(j, u)
            return None, -F
        zs[1], F1 = self._force(1, u1)
        us = [u0, u1]
        leapfrog(u1, momentum_from_positions(u0, u1, -F1, h), -F1, grad, h, l - 1, positions=us)
        q = solve(Ktd + beta * us[l - 1] + beta * P["r"])
        return {"u": us, "z": zs, "tanh": t, "q": q, "xhat": us[l] @ P["K"].T, "x0": u0 @ P["K"].T,
                "solve": solve, "d": d, "mask": mask}

    def potential(self, flow):
        """phi(u) of eq. 3.2 along a flow from ``forward``, per row:
        1/2 sum_j ||u_j - u_{j-1}||^2 + h^2 sum_{j>=1} w_j . f(K_j u_j + b_j) + r . u_l,
        f(t) = max(t, 0)^2 / 2 (the flow has no layer at j = 0)."""
        us, P = flow["u"], self.params
        kinetic = sum(((b - a) ** 2).sum(1) for a, b in zip(us[:-1], us[1:])) / 2
        pot = sum((P["wl"][j - 1] * np.maximum(z, 0) ** 2 / 2).sum(1) for j, z in flow["z"].items())
        return kinetic + self.h ** 2 * pot + us[-1] @ P["r"]

    def recover(self, d, mask):
        """The MAP recovery xhat = K u_l of every row of ``d`` (Algorithm 3.1)."""
        return self.forward(d, mask)["xhat"]

    # -------------------------------------------------------------- loss and gradient
    def loss_and_grad(self, x, d, mask, alpha=1.0, gamma=1.0):
        """(losses, gradient) of L = Re + alpha Rp + gamma Rc (eq. 3.7, each a mean over
        the rows): ``losses`` has ``loss``, ``re``, ``rp``, ``rc``; the gradient is a dict
        like ``params``."""
        x = np.asarray(x, dtype=self.params["K"].dtype)
        f = self.forward(d, mask)
        P, h, beta, l = self.params, self.h, self.beta, self.layers
        d, mask, solve, us = f["d"], f["mask"], f["solve"], f["u"]
        if x.shape != d.shape:
            raise ValueError(f"x must have the shape of d {d.shape}; got {x.shape}")
        n = x.shape[0]
        K = P["K"]
        res = f["xhat"] - x
        rc = f["q"] - us[l]
        re, rp, rcv = (res * res).sum() / n, (mask * res * res).sum() / n, (rc * rc).sum() / n
        g = {k: np.zeros_like(v) for k, v in P.items()}
        xbar = (2.0 / n) * (res + alpha * mask * res)
        qbar = (2.0 * gamma / n) * rc
        g["K"] += xbar.T @ us[l]
        ubar_l = xbar @ K - qbar
        lam_q = solve(qbar)                                    # q = A^-1 s
        ubar_lm1 = beta * lam_q
        g["r"] += beta * lam_q.sum(0)
        g["K"] += self._solve_param_grad(lam_q, f["q"], d, mask)
        # backward leapfrog: positions a_l, a_{l-1}, ..., a_1
        h2 = h * h

        def jac(j, a):
            Kj = P["Kl"][j - 1]
            return (((a @ Kj.T) * (f["z"][j] > 0)) * P["wl"][j - 1]) @ Kj

        def grad(a, k):                   # step k lands on a_{l-1-k}; its force uses layer l-2-k
            j = l - 2 - k
            return None, (-jac(j, a) if j >= 1 else np.zeros_like(a))
        a_l = ubar_l
        g_l = -jac(l - 1, a_l)
        a_prev = -ubar_lm1                # a_{l+1} := -ubar_{l-1} injects u_{l-1}'s direct term
        adj = [a_l]
        leapfrog(a_l, momentum_from_positions(a_prev, a_l, g_l, h), g_l, grad, h, l - 1, positions=adj)
        a = {l - i: v for i, v in enumerate(adj)}              # a[j] for j = 1 .. l
        for j in range(1, l):
            C = h2 * a[j + 1]
            Kj, wj, z = P["Kl"][j - 1], P["wl"][j - 1], f["z"][j]
            act = np.maximum(z, 0)
            ybar = C @ Kj.T
            s = ybar * wj * (z > 0)
            g["Kl"][j - 1] += (act * wj).T @ C + s.T @ us[j]
            g["wl"][j - 1] += (ybar * act).sum(0)
            g["bl"][j - 1] += s.sum(0)
        tb = a[1] * (1 - f["tanh"] ** 2)
        g["Omega"] += tb.T @ us[0]
        g["c"] += tb.sum(0)
        ubar0 = a[1] + tb @ P["Omega"] - a[2]
        lam0 = solve(ubar0)                                    # u_0 = A^-1 K^T d
        g["K"] += self._solve_param_grad(lam0, us[0], d, mask)
        losses = {"loss": float(re + alpha * rp + gamma * rcv), "re": float(re), "rp": float(rp), "rc": float(rcv)}
        return losses, g

    def _solve_param_grad(self, lam, sol, d, mask):
        """dL/dK through sol = A^-1 (K^T d + ...) given lam = A^-1 sol_bar:
        d^T lam (the right-hand side) - sum_i M_i K (lam_i sol_i^T + sol_i lam_i^T) (A)."""
        K = self.params["K"]
        return d.T @ lam - (mask * (lam @ K.T)).T @ sol - (mask * (sol @ K.T)).T @ lam


def relative_errors(x, xhat):
    """||xhat - x||^2 / ||x||^2 per row (paper 000, Table 1)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    r = np.asarray(xhat, np.float64).reshape(len(x), -1) - x
    return (r * r).sum(1) / (x * x).sum(1)


def mrmap_training(network, data, sigma, known_fraction=1.0, batch_size=256, lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=1e-5, alpha=1.0, gamma=1.0, seed=0):
    """Algorithm 3.2 as a Simulation of two ensembles:

    * ``data`` (static): the training set [n, p];
    * ``theta``: the network's parameters flattened, moved by Adam (L2 weight decay)
      along the gradient of eq. 3.7 on step t's minibatch, with a new random selection
      P_i of ``known_fraction`` of the coordinates and new noise every iteration
      (``observe``); the w_j are projected onto w >= 0 after every step.

    ``sim.context`` holds the latest ``loss``, ``re``, ``rp``, ``rc`` (before the first
    step: the untrained network's, on step 0's minibatch).  ``lr`` may be a
    schedule (``moves.StepDecay`` halves it every so many steps, as the paper)."""
    positive(sigma, "sigma")
    check_fraction(known_fraction)
    check_batch_size(batch_size)
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != network.dim:
        raise ValueError(f"data must have shape [n, {network.dim}] (the network's data dimension); "
                         f"got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("data contains NaN or Inf values; remove or impute them first")
    data = data.astype(network.params["K"].dtype)
    sim = Simulation({"data": Ensemble(data, name="data")}, seed=seed)
    stream = Stream(seed, StreamBlock.DATA)

    def batch(step):
        u = stream.uniform(step, np.arange(batch_size), 1, Purpose.MINIBATCH)[:, 0]
        rows = np.minimum((u * len(data)).astype(np.int64), len(data) - 1)
        x = data[rows]
        return (x,) + observe(x, known_fraction, sigma, seed, step)

    def gradient(step):
        losses, g = network.loss_and_grad(*batch(step), alpha, gamma)
        sim.context.update(losses)
        return g

    add_parameter_trainer(sim, network, gradient, lr, betas, weight_decay=weight_decay)
    sim.context.update(network.loss_and_grad(*batch(0), alpha, gamma)[0])   # the untrained network's losses
    sim.context.update(network=network, data=data, sigma=sigma, known_fraction=known_fraction, seed=seed)
    return sim
