"""Log densities of posteriordb posteriors, with hand-derived gradients, in numpy.

Each model is the Stan program of posteriordb (v1.0) on Stan's unconstrained space:
a parameter with ``<lower=0>`` is its log, ``<lower=0, upper=1>`` its logit,
``ordered[2]`` is (mu_1, log(mu_2 - mu_1)); the log Jacobian of each transform is
added, as Stan does.  ``value_and_grad(q)`` takes q [n, d] and returns
(E [n], grad E [n, d]) with E = -log p(q | data) + const.  ``reference()`` is
posteriordb's reference draws mapped to the same unconstrained coordinates, shape
[10, 1000, d] (chains, draws, coordinates).  ``tests/test_posteriordb_models.py``
checks every gradient against float64 central differences.

``low_dim_gauss_mix_unordered`` is the same mixture with ``vector[2] mu`` instead of
``ordered[2] mu``: the labels can swap, so the posterior has two exactly symmetric
modes of mass 1/2 each; its reference is posteriordb's draws together with their
label-swapped copies.
"""
import json
import math
import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LOG_2PI = math.log(2 * math.pi)


def _load(name):
    with open(os.path.join(HERE, name + ".json")) as f:
        data = json.load(f)
    ref = np.load(os.path.join(HERE, name + ".npz"))
    return data, {k: ref[k] for k in ref.files}


def _stack(*cols):
    return np.stack(cols, axis=-1)


def _half_cauchy(sigma, s, scale):
    """(-log p(sigma) - log-Jacobian, d/ds) for sigma = exp(s) ~ half-Cauchy(0, scale)."""
    r = (sigma / scale) ** 2
    return np.log1p(r) - s, 2 * r / (1 + r) - 1


def _half_normal(sigma, s, scale):
    return 0.5 * (sigma / scale) ** 2 - s, (sigma / scale) ** 2 - 1


def _flat_positive(sigma, s):
    return -s, -np.ones_like(s)


class Model:
    name = ""
    posteriordb = ""
    kind = ""

    def __init__(self):
        self.data, self._ref = _load(self.posteriordb)

    def reference(self):
        raise NotImplementedError

    def value_and_grad(self, q):
        raise NotImplementedError

    def __call__(self, q):
        return self.value_and_grad(q)


class Regression(Model):
    """y ~ normal(X beta, sigma), beta ~ normal(0, beta_scale) (or flat), sigma's prior
    half-Cauchy / half-normal / flat; q = (beta, log sigma)."""

    beta_scale = None
    sigma_prior = None          # ("cauchy", scale) | ("normal", scale) | None

    def setup(self, X, y):
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.dim = self.X.shape[1] + 1
        self.names = [f"beta[{j + 1}]" for j in range(self.X.shape[1])] + ["log sigma"]

    def value_and_grad(self, q):
        beta, s = q[:, :-1], q[:, -1]
        sigma = np.exp(s)
        r = self.y[None] - beta @ self.X.T                     # [n, N]
        N = self.y.size
        rss = (r * r).sum(1)
        E = N * s + 0.5 * rss / sigma ** 2
        gb = -(r @ self.X) / sigma[:, None] ** 2
        gs = N - rss / sigma ** 2
        if self.beta_scale is not None:
            E = E + 0.5 * (beta ** 2).sum(1) / self.beta_scale ** 2
            gb = gb + beta / self.beta_scale ** 2
        if self.sigma_prior is None:
            e, g = _flat_positive(sigma, s)
        elif self.sigma_prior[0] == "cauchy":
            e, g = _half_cauchy(sigma, s, self.sigma_prior[1])
        else:
            e, g = _half_normal(sigma, s, self.sigma_prior[1])
        return E + e, np.concatenate([gb, (gs + g)[:, None]], 1)

    def _beta_reference(self, k):
        return [self._ref[f"beta[{j + 1}]"] for j in range(k)]

    def reference(self):
        k = self.X.shape[1]
        return _stack(*self._beta_reference(k), np.log(self._ref["sigma"]))


class KidiqInteraction(Regression):
    name, posteriordb, kind = "kidiq_interaction", "kidiq-kidscore_interaction", "regression, condition number ~3e4"
    sigma_prior = ("cauchy", 2.5)

    def __init__(self):
        super().__init__()
        d = self.data
        hs, iq = np.array(d["mom_hs"], float), np.array(d["mom_iq"], float)
        self.setup(np.stack([np.ones_like(hs), hs, iq, hs * iq], 1), d["kid_score"])


class Blr(Regression):
    name, posteriordb, kind = "sblrc_blr", "sblrc-blr", "correlated linear regression"
    beta_scale, sigma_prior = 10.0, ("normal", 10.0)

    def __init__(self):
        super().__init__()
        self.setup(self.data["X"], self.data["y"])


class LogearnHeight(Regression):
    name, posteriordb, kind = "logearn_height", "earnings-logearn_height", "regression, uncentred predictor"

    def __init__(self):
        super().__init__()
        h = np.array(self.data["height"], float)
        self.setup(np.stack([np.ones_like(h), h], 1), np.log(np.array(self.data["earn"], float)))


class ArK(Regression):
    name, posteriordb, kind = "arK", "arK-arK", "autoregressive AR(5)"
    beta_scale, sigma_prior = 10.0, ("cauchy", 2.5)

    def __init__(self):
        super().__init__()
        K, y = int(self.data["K"]), np.array(self.data["y"], float)
        T = y.size
        lags = [y[K - k:T - k] for k in range(1, K + 1)]          # y[t - k] for t = K..T-1
        self.setup(np.stack([np.ones(T - K)] + lags, 1), y[K:])
        self.names = ["alpha"] + [f"beta[{k}]" for k in range(1, K + 1)] + ["log sigma"]

    def reference(self):
        K = int(self.data["K"])
        return _stack(self._ref["alpha"], *[self._ref[f"beta[{k}]"] for k in range(1, K + 1)],
                      np.log(self._ref["sigma"]))


class Mesquite(Regression):
    name, posteriordb, kind = "logmesquite_logvas", "mesquite-logmesquite_logvas", "regression, 7 log predictors"

    def __init__(self):
        super().__init__()
        d = {k: np.array(v, float) for k, v in self.data.items() if isinstance(v, list)}
        X = np.stack([np.ones_like(d["weight"]), np.log(d["diam1"] * d["diam2"] * d["canopy_height"]),
                      np.log(d["diam1"] * d["diam2"]), np.log(d["diam1"] / d["diam2"]), np.log(d["total_height"]),
                      np.log(d["density"]), d["group"]], 1)
        self.setup(X, np.log(d["weight"]))


class EightSchools(Model):
    """Non-centred eight schools; q = (theta_trans [8], mu, log tau)."""
    name, posteriordb, kind = "eight_schools_nc", "eight_schools-eight_schools_noncentered", "hierarchical"

    def __init__(self):
        super().__init__()
        self.y, self.sigma = np.array(self.data["y"], float), np.array(self.data["sigma"], float)
        self.dim = self.y.size + 2
        self.names = [f"theta_trans[{j + 1}]" for j in range(self.y.size)] + ["mu", "log tau"]

    def value_and_grad(self, q):
        J = self.y.size
        tt, mu, s = q[:, :J], q[:, J], q[:, J + 1]
        tau = np.exp(s)
        theta = tt * tau[:, None] + mu[:, None]
        r = (self.y[None] - theta) / self.sigma[None] ** 2
        E = 0.5 * (tt ** 2).sum(1) + 0.5 * (((self.y[None] - theta) / self.sigma[None]) ** 2).sum(1) \
            + 0.5 * (mu / 5) ** 2
        e_tau, g_tau = _half_cauchy(tau, s, 5.0)
        g_tt = tt - r * tau[:, None]
        g_mu = -r.sum(1) + mu / 25
        g_s = -tau * (r * tt).sum(1) + g_tau
        return E + e_tau, np.concatenate([g_tt, g_mu[:, None], g_s[:, None]], 1)

    def reference(self):
        J = self.y.size
        mu, tau = self._ref["mu"], self._ref["tau"]
        tt = [(self._ref[f"theta[{j + 1}]"] - mu) / tau for j in range(J)]
        return _stack(*tt, mu, np.log(tau))


class GaussMix(Model):
    """Two-component normal mixture, q = (mu_1, log(mu_2 - mu_1), log sigma_1, log sigma_2,
    logit theta) (``ordered[2] mu``), or (mu_1, mu_2, ...) when ``ordered`` is False."""
    name, posteriordb, kind = "low_dim_gauss_mix", "low_dim_gauss_mix-low_dim_gauss_mix", "2-component mixture"
    ordered = True

    def __init__(self):
        super().__init__()
        self.y = np.array(self.data["y"], float)
        self.dim = 5
        self.names = ["mu[1]", "log(mu[2]-mu[1])" if self.ordered else "mu[2]", "log sigma[1]", "log sigma[2]",
                      "logit theta"]

    def value_and_grad(self, q):
        m1 = q[:, 0]
        if self.ordered:
            m2 = m1 + np.exp(q[:, 1])
        else:
            m2 = q[:, 1]
        s1, s2, lt = q[:, 2], q[:, 3], q[:, 4]
        sg1, sg2 = np.exp(s1), np.exp(s2)
        th = 1 / (1 + np.exp(-lt))
        y = self.y[None]
        z1 = (y - m1[:, None]) / sg1[:, None]
        z2 = (y - m2[:, None]) / sg2[:, None]
        l1 = np.log(th)[:, None] - s1[:, None] - 0.5 * z1 ** 2
        l2 = np.log1p(-th)[:, None] - s2[:, None] - 0.5 * z2 ** 2
        mx = np.maximum(l1, l2)
        w1, w2 = np.exp(l1 - mx), np.exp(l2 - mx)
        tot = w1 + w2
        ll = (mx + np.log(tot)).sum(1) - 0.5 * LOG_2PI * self.y.size
        r1, r2 = w1 / tot, w2 / tot                                   # responsibilities
        d_m1 = (r1 * z1 / sg1[:, None]).sum(1)
        d_m2 = (r2 * z2 / sg2[:, None]).sum(1)
        d_s1 = (r1 * (z1 ** 2 - 1)).sum(1)
        d_s2 = (r2 * (z2 ** 2 - 1)).sum(1)
        d_th = (r1.sum(1) / th - r2.sum(1) / (1 - th))
        # priors: sigma ~ N+(0, 2), mu ~ N(0, 2), theta ~ beta(5, 5), and the Jacobians
        lp = -0.125 * (sg1 ** 2 + sg2 ** 2) - 0.125 * (m1 ** 2 + m2 ** 2) + 4 * np.log(th) + 4 * np.log1p(-th)
        lp = lp + s1 + s2 + np.log(th) + np.log1p(-th)
        d_s1 += -0.25 * sg1 ** 2 + 1
        d_s2 += -0.25 * sg2 ** 2 + 1
        d_m1 += -0.25 * m1
        d_m2 += -0.25 * m2
        d_lt = (d_th + 5 / th - 5 / (1 - th)) * th * (1 - th)
        if self.ordered:
            gap = np.exp(q[:, 1])
            g0 = d_m1 + d_m2
            g1 = d_m2 * gap + 1
            lp = lp + q[:, 1]
        else:
            g0, g1 = d_m1, d_m2
        grad = np.stack([g0, g1, d_s1, d_s2, d_lt], 1)
        return -(ll + lp), -grad

    def reference(self):
        r = self._ref
        logit = np.log(r["theta"]) - np.log1p(-r["theta"])
        if self.ordered:
            return _stack(r["mu[1]"], np.log(r["mu[2]"] - r["mu[1]"]), np.log(r["sigma[1]"]), np.log(r["sigma[2]"]),
                          logit)
        a = _stack(r["mu[1]"], r["mu[2]"], np.log(r["sigma[1]"]), np.log(r["sigma[2]"]), logit)
        b = _stack(r["mu[2]"], r["mu[1]"], np.log(r["sigma[2]"]), np.log(r["sigma[1]"]), -logit)
        return np.concatenate([a, b], 0)                      # 20 chains: both labellings


class GaussMixUnordered(GaussMix):
    name, kind, ordered = "low_dim_gauss_mix_unordered", "bimodal (label switching)", False


class GPPoisson(Model):
    """Latent GP Poisson regression; q = (log rho, log alpha, f_tilde [N]), f = L f_tilde,
    L L^T = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I.  The gradient through the
    Cholesky factor: dL = L Phi(L^-1 dK L^-T), Phi = lower triangle with half diagonal
    (Murray 2016, "Differentiation of the Cholesky decomposition", eq. 8)."""
    name, posteriordb, kind = "gp_pois_regr", "gp_pois_regr-gp_pois_regr", "latent Gaussian process"

    def __init__(self):
        super().__init__()
        self.x, self.k = np.array(self.data["x"], float), np.array(self.data["k"], float)
        self.N = self.x.size
        self.dim = self.N + 2
        self.names = ["log rho", "log alpha"] + [f"f_tilde[{j + 1}]" for j in range(self.N)]
        self.D2 = (self.x[:, None] - self.x[None]) ** 2

    def _chol(self, rho, alpha):
        E = np.exp(-self.D2[None] / (2 * rho[:, None, None] ** 2))
        K = alpha[:, None, None] ** 2 * E + 1e-10 * np.eye(self.N)[None]
        try:
            return np.linalg.cholesky(K), E
        except np.linalg.LinAlgError:
            # as Stan rejects a proposal whose Cholesky factorisation fails: NaN rows
            L = np.full_like(K, np.nan)
            for i in range(K.shape[0]):
                try:
                    L[i] = np.linalg.cholesky(K[i])
                except np.linalg.LinAlgError:
                    pass
            return L, E

    def value_and_grad(self, q):
        lr, la, ft = q[:, 0], q[:, 1], q[:, 2:]
        rho, alpha = np.exp(lr), np.exp(la)
        L, Ex = self._chol(rho, alpha)
        f = np.einsum("nij,nj->ni", L, ft)
        ef = np.exp(f)
        ll = (self.k[None] * f - ef).sum(1)
        gf = self.k[None] - ef                                        # d ll / d f
        # priors: rho ~ gamma(25, 4), alpha ~ N+(0, 2), f_tilde ~ N(0, 1); Jacobians lr, la
        lp = 24 * lr - 4 * rho - 0.125 * alpha ** 2 - 0.5 * (ft ** 2).sum(1) + lr + la
        g_ft = np.einsum("nij,ni->nj", L, gf) - ft
        # d ll / d theta = gf^T dL f_tilde with dL = L Phi(L^-1 dK L^-T)
        dK_rho = alpha[:, None, None] ** 2 * Ex * self.D2[None] / rho[:, None, None] ** 3
        dK_alpha = 2 * alpha[:, None, None] * Ex
        with np.errstate(invalid="ignore"):
            Linv = np.linalg.inv(np.where(np.isfinite(L), L, np.eye(self.N)[None]))
        tril = np.tril(np.ones((self.N, self.N)), -1) + 0.5 * np.eye(self.N)
        out = []
        for dK in (dK_rho, dK_alpha):
            A = Linv @ dK @ np.swapaxes(Linv, 1, 2)
            dL = L @ (A * tril[None])
            out.append(np.einsum("ni,nij,nj->n", gf, dL, ft))
        g_lr = out[0] * rho + 24 + 1 - 4 * rho
        g_la = out[1] * alpha - 0.25 * alpha ** 2 + 1
        grad = np.concatenate([g_lr[:, None], g_la[:, None], g_ft], 1)
        return -(ll + lp), -grad

    def reference(self):
        r = self._ref
        rho, alpha = r["rho"].ravel(), r["alpha"].ravel()
        f = np.stack([r[f"f[{j + 1}]"].ravel() for j in range(self.N)], 1)
        L, _ = self._chol(rho, alpha)
        ft = np.linalg.solve(L, f[:, :, None])[:, :, 0]
        q = np.concatenate([np.log(rho)[:, None], np.log(alpha)[:, None], ft], 1)
        return q.reshape(r["rho"].shape + (self.dim,))


class Arma11(Model):
    """ARMA(1, 1); q = (mu, phi, theta, log sigma).  The errors follow a recursion, so
    their derivatives do too (forward mode): d err_t = -d nu_t - theta d err_{t-1}."""
    name, posteriordb, kind = "arma11", "arma-arma11", "ARMA(1,1), recursive likelihood"

    def __init__(self):
        super().__init__()
        self.y = np.array(self.data["y"], float)
        self.dim = 4
        self.names = ["mu", "phi", "theta", "log sigma"]

    def value_and_grad(self, q):
        mu, phi, th, s = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        sigma = np.exp(s)
        y = self.y
        T = y.size
        n = q.shape[0]
        err = y[0] - (mu + phi * mu)
        de = np.stack([-(1 + phi), -mu, np.zeros(n)], 1)              # d err / d (mu, phi, theta)
        sse = err ** 2
        g = 2 * err[:, None] * de
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(1, T):
                de = np.stack([-1 - th * de[:, 0], -y[t - 1] - th * de[:, 1], -err - th * de[:, 2]], 1)
                err = y[t] - (mu + phi * y[t - 1] + th * err)
                sse = sse + err ** 2
                g = g + 2 * err[:, None] * de
            E = T * s + 0.5 * sse / sigma ** 2
            gq = 0.5 * g / sigma[:, None] ** 2
            gs = T - sse / sigma ** 2
        e_sig, g_sig = _half_cauchy(sigma, s, 2.5)
        E = E + 0.5 * (mu / 10) ** 2 + 0.5 * (phi / 2) ** 2 + 0.5 * (th / 2) ** 2 + e_sig
        gq = gq + np.stack([mu / 100, phi / 4, th / 4], 1)
        return E, np.concatenate([gq, (gs + g_sig)[:, None]], 1)

    def reference(self):
        r = self._ref
        return _stack(r["mu"], r["phi"], r["theta"], np.log(r["sigma"]))


MODELS = [EightSchools, KidiqInteraction, Blr, ArK, LogearnHeight, Mesquite, GaussMix, GPPoisson, Arma11,
          GaussMixUnordered]


def get(name):
    for m in MODELS:
        if m.name == name:
            return m()
    raise KeyError(name)
