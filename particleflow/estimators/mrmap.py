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
``energies.hyperbolic.HyperbolicNetwork``; ``mrmap_training`` trains one as a
Simulation (Algorithm 3.2).
"""
import math

import numpy as np
from scipy import optimize

from ..ensemble import Ensemble
from ..parallel import in_block_order, rank_blocks
from ..checks import block_rows, positive
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .batches import check_batch_size
from .contrastive import add_parameter_trainer, flatten



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


def relative_errors(x, xhat):
    """||xhat - x||^2 / ||x||^2 per row (paper 000, Table 1)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    r = np.asarray(xhat, np.float64).reshape(len(x), -1) - x
    return (r * r).sum(1) / (x * x).sum(1)


def loss_and_grad_in_blocks(network, x, d, mask, alpha, gamma, block, comm=None):
    """(losses, flat float64 gradient) of eq. 3.7 on one minibatch, computed in blocks of
    ``block`` rows: each block's losses and gradient (means over its rows) weighted by its
    share of the rows, added in block order.  Given the communicator ``comm`` of a run
    over several processes, each rank computes a contiguous range of the blocks and one
    allgather brings every part to every rank: bitwise the same for any rank count
    (data-parallel training)."""
    n = x.shape[0]
    parts = []
    for a, b in rank_blocks(n, block, comm):
        losses, g = network.loss_and_grad(x[a:b], d[a:b], mask[a:b], alpha, gamma)
        w = (b - a) / n
        parts.append(({k: v * w for k, v in losses.items()}, flatten(g) * w))
    parts = in_block_order(parts, comm)
    losses, g = dict(parts[0][0]), parts[0][1].copy()
    for part_losses, part in parts[1:]:             # block order
        g += part
        for k in losses:
            losses[k] += part_losses[k]
    return losses, g


def mrmap_training(network, data, sigma, known_fraction=1.0, batch_size=256, lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=1e-5, alpha=1.0, gamma=1.0, seed=0, grad_block=None):
    """Algorithm 3.2 as a Simulation of two ensembles:

    * ``data`` (static): the training set [n, p];
    * ``theta``: the network's parameters flattened, moved by Adam (L2 weight decay)
      along the gradient of eq. 3.7 on step t's minibatch, with a new random selection
      P_i of ``known_fraction`` of the coordinates and new noise every iteration
      (``observe``); the w_j are projected onto w >= 0 after every step.

    ``sim.context`` holds the latest ``loss``, ``re``, ``rp``, ``rc`` (before the first
    step: the untrained network's, on step 0's minibatch).  ``lr`` may be a
    schedule (``moves.StepDecay`` halves it every so many steps, as the paper).
    ``grad_block``: rows per block of the loss gradient (``loss_and_grad_in_blocks``;
    in a run over several processes the ranks share the blocks); None: the whole batch
    at once, on every rank."""
    positive(sigma, "sigma")
    check_fraction(known_fraction)
    check_batch_size(batch_size)
    grad_block = block_rows(grad_block, "grad_block")
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
        if grad_block is None:
            losses, g = network.loss_and_grad(*batch(step), alpha, gamma)
        else:
            losses, g = loss_and_grad_in_blocks(network, *batch(step), alpha, gamma, grad_block,
                                                getattr(sim.device, "comm", None))
        sim.context.update(losses)
        return g

    add_parameter_trainer(sim, network, gradient, lr, betas, weight_decay=weight_decay)
    sim.context.update(network.loss_and_grad(*batch(0), alpha, gamma)[0])   # the untrained network's losses
    sim.context.update(network=network, data=data, sigma=sigma, known_fraction=known_fraction, seed=seed)
    return sim
