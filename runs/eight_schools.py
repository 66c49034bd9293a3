"""The non-centred eight-schools model (Rubin 1981; posteriordb's
eight_schools_noncentered) as a particleflow energy, for runs/eight_schools.toml.

Parameters on the unconstrained space, q = (theta_trans [8], mu, log tau):
    theta = mu + tau theta_trans,  theta_trans ~ N(0, 1),  y_j ~ N(theta_j, sigma_j),
    mu ~ N(0, 5),  tau ~ half-Cauchy(0, 5),  plus log tau (the Jacobian of tau = exp(s)).
E(q) = -log p(q | y) + const, with its gradient derived by hand.
"""
import numpy as np

import particleflow as pf

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def value_and_grad(q):
    tt, mu, s = q[:, :8], q[:, 8], q[:, 9]
    tau = np.exp(s)
    theta = mu[:, None] + tau[:, None] * tt
    r = (Y - theta) / SIGMA ** 2                                  # d log lik / d theta
    c = (tau / 5.0) ** 2
    e = 0.5 * (tt ** 2).sum(1) + 0.5 * (((Y - theta) / SIGMA) ** 2).sum(1) + 0.5 * (mu / 5.0) ** 2 \
        + np.log1p(c) - s
    g_tt = tt - tau[:, None] * r
    g_mu = -r.sum(1) + mu / 25.0
    g_s = -tau * (r * tt).sum(1) + 2 * c / (1 + c) - 1
    return e, np.concatenate([g_tt, g_mu[:, None], g_s[:, None]], 1)


def make_energy():
    return pf.energies.FromCallable(value_and_grad=value_and_grad, dim=10)
