"""The least-action potential of paper 000 (Section 3) and the hyperbolic network that
computes its MAP (Algorithm 3.1); ``particleflow.estimators.mrmap.mrmap_training``
trains one (Algorithm 3.2)."""
import functools
import math

import numpy as np

from ..checks import positive
from .chunks import single_threaded_blas
from ..integrators import leapfrog, momentum_from_positions
from ..random import Purpose, Stream, StreamBlock


def _one_blas_thread(method):
    """Run ``method`` with BLAS on one thread: how OpenBLAS splits a GEMM's rows over its
    threads changes their rounding, so results would depend on the thread count."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return method(*args, **kwargs)
    return wrapper


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
    run (``integrators.leapfrog``, step h, unit mass) in the layer potentials
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
        s = Stream(seed, StreamBlock.NETWORK_INIT)
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
    @_one_blas_thread
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

    @_one_blas_thread
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
    @_one_blas_thread
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
