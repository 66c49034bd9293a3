"""Deep Energy Estimator Networks (paper 002): denoising score matching with an
energy-parametrised score.

For data x and noisy copies xi = x + sigma z, z ~ N(0, I), the Parzen score-matching
objective with the score written as the negative gradient of an energy is (eqs. 19, 23)

    L(theta) = (1/B) sum_b || x_b - xi_b + sigma^2 grad_xi E(xi_b; theta) ||^2.

Its minimiser denoises in one step: xhat = xi - sigma^2 grad E(xi) equals E[x | xi]
(Miyasawa / Tweedie, eq. 11), so the minimum of L is the Bayes denoiser's mean squared
error.  The learned score -grad E is a gradient field: curl-free by construction.

Parameter gradient for any energy with ``grad`` and ``grad_params_directional``: with
r_b = x_b - xi_b + sigma^2 g_b, g_b = grad_xi E(xi_b),

    dL/dtheta = (2 sigma^2 / B) sum_b r_b . d g_b / d theta
              = grad_theta sum_b c_b (v_b . grad_x E(xi_b)),  v_b = r_b (held fixed), c_b = 2 sigma^2 / B,

which is ``grad_params_directional(xi, r, c)``; tanh / ReLU MLPs have a three-pass fast
path (``MLP.dsm_loss_and_grad``) that gives the same numbers (tested).
"""
import math

import numpy as np

from ..backend import array_module, to_numpy
from ..checks import block_rows
from ..ensemble import Ensemble
from ..parallel import in_block_order, rank_blocks
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .batches import HELDOUT, check_batch_size, check_data, noisy_batch
from .contrastive import add_parameter_trainer, contrastive_gradient, flatten



def _check_sigma(sigma):
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)) or not math.isfinite(sigma) \
            or sigma <= 0:
        raise ValueError(f"sigma must be a positive finite number; got {sigma!r}")
    return float(sigma)


def dsm_loss_and_grad(energy, x, x_noisy, sigma, flat=False):
    """(L, dL/dtheta as a dict like ``energy.params``) of the DEEN loss on one batch;
    ``flat``: dL/dtheta as one vector in ``energy.params`` order (``flatten``'s)."""
    sigma = _check_sigma(sigma)
    fast_flat = getattr(energy, "dsm_loss_and_flat_grad", None) if flat else None
    if fast_flat is not None:
        loss, g = fast_flat(x, x_noisy, sigma)
        return loss, to_numpy(g).astype(np.float64)
    if flat:
        loss, g = dsm_loss_and_grad(energy, x, x_noisy, sigma)
        return loss, flatten(g)
    fast = getattr(energy, "dsm_loss_and_grad", None)
    if fast is not None:
        return fast(x, x_noisy, sigma)
    if x.shape != x_noisy.shape or x.shape[0] < 1:
        raise ValueError(f"x and x_noisy must have the same non-empty shape; got {x.shape} and {x_noisy.shape}")
    xp = array_module(x)
    s2 = x.dtype.type(sigma * sigma)
    r = x - x_noisy + s2 * energy.grad(x_noisy)
    B = x.shape[0]
    loss = float((r * r).sum() / B)
    return loss, energy.grad_params_directional(x_noisy, r, xp.full(B, 2 * sigma * sigma / B, dtype=x.dtype))


def dsm_block_partials(energy, x, x_noisy, sigma, block, total):
    """The DEEN loss and gradient of a slice of a batch of ``total`` rows, in parts per
    block of ``block`` rows: (loss sums [nb], flat gradient parts [nb, P]); the batch's
    loss and gradient are their sums over all blocks, in block order, with the loss
    divided by ``total`` (``sum_block_partials``)."""
    sigma = _check_sigma(sigma)
    fast = getattr(energy, "dsm_partials", None)
    out = fast(x, x_noisy, sigma, total, block) if fast is not None else None
    if out is not None:
        return out
    losses, parts = [], []
    for a in range(0, x.shape[0], block):
        b = min(x.shape[0], a + block)
        loss, g = dsm_loss_and_grad(energy, x[a:b], x_noisy[a:b], sigma, flat=True)
        losses.append(loss * (b - a))
        parts.append(g * ((b - a) / total))
    size = sum(int(np.prod(np.shape(v))) for v in energy.params.values())
    return np.array(losses, np.float64), np.array(parts, np.float64).reshape(len(parts), size)


def sum_block_partials(losses, parts, total):
    """(loss, flat float64 gradient) of a batch from the parts of all its blocks, added in
    block order (the same sums for any thread count and any split of the blocks)."""
    return float(losses.sum()) / total, to_numpy(parts.sum(0) if len(parts) > 1 else parts[0]).astype(np.float64)


def dsm_loss_and_grad_in_blocks(energy, x, x_noisy, sigma, block, comm=None):
    """(loss, flat float64 gradient) of one batch computed in blocks of ``block`` rows.
    Given the communicator ``comm`` of a run over several processes, each rank computes
    the parts of a contiguous range of the blocks and one allgather brings every part to
    every rank: the result is bitwise the same for any rank count (data-parallel
    training)."""
    B = x.shape[0]
    mine = rank_blocks(B, block, comm)
    lo, hi = (mine[0][0], mine[-1][1]) if mine else (0, 0)
    losses, parts = dsm_block_partials(energy, x[lo:hi], x_noisy[lo:hi], sigma, block, B)
    if comm is not None and comm.size > 1:        # one part per rank: its blocks' rows of both arrays
        gathered = [p for p in in_block_order([(losses, to_numpy(parts))], comm) if len(p[0])]
        losses = np.concatenate([p[0] for p in gathered])
        parts = np.concatenate([p[1] for p in gathered])
    return sum_block_partials(losses, parts, B)


def dsm_loss(energy, x, x_noisy, sigma):
    """The DEEN loss alone (mean over the batch of the squared denoising error)."""
    r = x - denoise(energy, x_noisy, sigma)
    return float((r * r).sum() / x.shape[0])


def denoise(energy, x_noisy, sigma):
    """Single-step denoising xhat = xi - sigma^2 grad E(xi) (eq. 11).  ``sigma`` is the
    noise level of ``x_noisy``: one number, or one per row (patch-dependent noise); a
    net trained at one sigma may be applied at another (the paper shows sigma' = 0.3
    for a net trained at 0.14)."""
    xp = array_module(x_noisy)
    if np.ndim(sigma) == 0:
        s2 = x_noisy.dtype.type(_check_sigma(sigma) ** 2)
    else:
        s = np.asarray(sigma, dtype=np.float64)
        if s.shape != (x_noisy.shape[0],) or not (np.isfinite(s) & (s > 0)).all():
            raise ValueError(f"sigma must be a positive finite number or one per row of x_noisy "
                             f"({x_noisy.shape[0]}); got shape {s.shape}")
        s2 = xp.asarray((s * s).reshape((-1,) + (1,) * (x_noisy.ndim - 1)), dtype=x_noisy.dtype)
    return x_noisy - s2 * energy.grad(x_noisy)


def parzen_log_likelihood(train, test, sigma, chunk=2048):
    """Mean log-density of ``test`` under the Gaussian kernel density estimate of
    ``train`` with bandwidth ``sigma`` (the paper selects sigma by maximising it on
    held-out data)."""
    return float(select_sigma(train, test, [_check_sigma(sigma)], chunk)[1][0])


def select_sigma(train, heldout, grid, chunk=2048):
    """(the sigma of ``grid`` with the highest held-out Parzen log-likelihood, the scores).
    The squared distances of a chunk of held-out points are computed once for every sigma
    (each score is the one ``parzen_log_likelihood`` gives, bitwise)."""
    sigmas = [_check_sigma(s) for s in grid]
    train = np.asarray(train, np.float64).reshape(len(train), -1)
    test = np.asarray(heldout, np.float64).reshape(len(heldout), -1)
    d = train.shape[1]
    sq_train = (train * train).sum(1)
    totals = [0.0] * len(sigmas)
    for i in range(0, len(test), chunk):
        t = test[i:i + chunk]
        d2 = np.maximum((t * t).sum(1)[:, None] - 2 * t @ train.T + sq_train[None, :], 0.0)
        for k, sigma in enumerate(sigmas):
            a = -0.5 * d2 / sigma ** 2
            m = a.max(1, keepdims=True)
            totals[k] += float((m[:, 0] + np.log(np.exp(a - m).sum(1))).sum())
    scores = np.array([total / len(test) - math.log(len(train)) - 0.5 * d * math.log(2 * math.pi * sigma ** 2)
                       for total, sigma in zip(totals, sigmas)])
    return float(np.asarray(grid)[int(np.argmax(scores))]), scores


def deen(energy, data, sigma, batch_size=256, lr=1e-3, betas=(0.9, 0.999), seed=0, grad_block=None):
    """DEEN training as a Simulation of two ensembles:

    * ``data`` (static): the training set;
    * ``theta``: one particle, the energy's parameters flattened, moved by Adam along
      the DEEN loss gradient of step t's minibatch (``noisy_batch``), then copied into
      the energy (``LoadParameters``).

    ``sim.context["loss"]`` holds the latest minibatch loss; the energy is registered
    as state and Adam's moments are its move state, so a checkpointed run resumes
    bitwise.  Works for any energy with ``dsm_loss_and_grad`` or ``grad`` and
    ``grad_params_directional`` (MLPs, ConvNets).  ``add_score_network`` and
    ``add_contrastive_divergence`` add the paper's baselines to the same Simulation.

    ``grad_block``: rows per block of the loss gradient (``dsm_loss_and_grad_in_blocks``):
    the blocks run on the CPU threads, and in a run over several processes the ranks
    share them (data-parallel training, bitwise the same for any rank count).  None:
    the whole batch at once (a tanh MLP's kernel splits it in chunks of 512 rows, or a
    smaller batch in two halves where each is worth a thread: ``kernels.mlp.dsm_rows``)."""
    sigma = _check_sigma(sigma)
    data = check_data(data, energy)
    check_batch_size(batch_size)
    grad_block = block_rows(grad_block, "grad_block")
    sim = Simulation({"data": Ensemble(data.reshape(len(data), -1), name="data")}, seed=seed)

    def gradient(step):
        x, xi = noisy_batch(data, sigma, seed, step, batch_size)
        if grad_block is None:
            loss, g = dsm_loss_and_grad(energy, x, xi, sigma, flat=True)
        else:
            comm = getattr(sim.device, "comm", None)
            loss, g = dsm_loss_and_grad_in_blocks(energy, x, xi, sigma, grad_block, comm)
        sim.context["loss"] = loss
        return g

    add_parameter_trainer(sim, energy, gradient, lr, betas)
    sim.context.update(energy=energy, data=data, sigma=sigma, loss=float("nan"), seed=seed, batch_size=batch_size)
    return sim


def add_score_network(sim, network, lr=1e-3, betas=(0.9, 0.999)):
    """Paper 002's direct score network baseline (``energies.ScoreMLP``) trained on the
    same minibatches and noise as the DEEN of ``sim`` (ensemble ``theta_score``;
    ``sim.context["score_network"]``)."""
    c = sim.context
    data = check_data(c["data"], network)

    def gradient(step):
        x, xi = noisy_batch(data, c["sigma"], c["seed"], step, c["batch_size"])
        loss, g = network.dsm_loss_and_grad(x, xi, c["sigma"])
        c["loss_score"] = loss
        return g

    add_parameter_trainer(sim, network, gradient, lr, betas, "_score")
    c["score_network"] = network
    return sim


def add_contrastive_divergence(sim, energy, lr=1e-3, betas=(0.9, 0.999)):
    """Paper 002's contrastive-divergence baseline (eqs. 26-27): negatives
    x- = x - sigma^2 grad E(x) + sqrt(2) sigma nu from the same minibatch x, and the
    parameters move along grad_theta [mean E(x) - mean E(x-)] (Adam, as DEEN, so the
    two differ only in the objective; ensemble ``theta_cd``; ``sim.context["cd_energy"]``)."""
    c = sim.context
    data = check_data(c["data"], energy)
    sigma = c["sigma"]
    noise = Stream(c["seed"], StreamBlock.CD_NOISE)

    def gradient(step):
        x, _ = noisy_batch(data, sigma, c["seed"], step, c["batch_size"])
        nu = noise.normal(step, np.arange(len(x)), x[0].size, Purpose.DATA_NOISE, x.dtype).reshape(x.shape)
        s2 = x.dtype.type(sigma * sigma)
        x_neg = x - s2 * energy.grad(x) + x.dtype.type(math.sqrt(2) * sigma) * nu
        return contrastive_gradient(energy, x, x_neg)

    add_parameter_trainer(sim, energy, gradient, lr, betas, "_cd")
    c["cd_energy"] = energy
    return sim


__all__ = ["dsm_loss_and_grad", "dsm_loss_and_grad_in_blocks", "dsm_block_partials", "sum_block_partials",
           "dsm_loss", "denoise", "noisy_batch", "HELDOUT", "parzen_log_likelihood", "select_sigma", "deen",
           "add_score_network", "add_contrastive_divergence"]
