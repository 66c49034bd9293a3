"""Learning an EBM with short-run MCMC negatives (paper 004, Algorithm 1), and its
persistent-CD and CD-k variants.

Per iteration t (one Simulation step):

1. a minibatch of the data with noise x_i + sigma eps_i (Section 3.3: smoothing p_data);
2. m chains started from p_0 (the paper: uniform noise), from the same noisy batch
   (CD-k), or drawn from a replay buffer with a re-initialisation fraction (PCD);
3. K steps x <- x - h grad E(x) + c z toward the current energy (``moves.ShortRun``);
4. Adam on grad_theta [mean E(x_data) - mean E(x_q)] (eq. 6 with E = -f:
   ``contrastive_gradient``).

``sim.context`` holds the latest ``f_data`` = -mean E(data batch) and ``f_model`` =
-mean E(short-run samples), measured with the parameters the gradient used.
"""
import numpy as np

from ..backend import to_numpy
from ..ensemble import Ensemble
from ..moves import Adam, CosineDecay, ShortRun, UniformBox
from ..parallel import in_block_order, rank_blocks
from ..random import Stream, StreamBlock
from ..simulation import Simulation
from .batches import check_batch_size, check_data, noisy_batch
from .contrastive import add_parameter_trainer, contrastive_gradient, flatten

MODES = {"short_run": "noise", "cd": "data", "pcd": "persistent"}


def short_run(energy, data, n_chains=64, n_steps=100, step_size=1.0, noise_scale=0.01, mode="short_run", base=None,
              data_noise=0.03, lr=1e-4, betas=(0.9, 0.999), buffer_size=10000, reinit=0.05, seed=0, chain_block=None):
    """Short-run MCMC learning as a Simulation of three ensembles:

    * ``data`` (static): the training set;
    * ``chains``: the m short-run chains (``mode = "short_run"``: restarted from
      ``base`` every iteration; ``"cd"``: from the noisy data batch, which then has m
      rows) or the replay buffer of ``buffer_size`` chains (``"pcd"``);
    * ``theta``: the energy's parameters, moved by Adam.

    The data batch has ``n_chains`` rows (the paper uses m for both).  ``step_size``,
    ``noise_scale``, ``data_noise`` and ``lr`` may be schedules (callables of the
    iteration, e.g. ``moves.StepDecay`` / ``moves.CosineDecay``).  A checkpointed
    run resumes bitwise (chains, buffer ages and Adam's moments are state).
    ``chain_block``: rows per block of chains (``moves.ShortRun``) and of the parameter
    gradient (``contrastive_gradient_in_blocks``); a run over several processes splits the
    blocks of every step's K Langevin steps and of its gradient over its ranks.
    ``add_short_run`` adds one more such learner to an existing Simulation."""
    data = check_data(data, energy)
    sim = Simulation({"data": Ensemble(data, name="data")}, seed=seed)
    return add_short_run(sim, energy, n_chains, n_steps, step_size, noise_scale, mode, base, data_noise, lr, betas,
                         buffer_size, reinit, chain_block=chain_block)


def add_short_run(sim, energy, n_chains=64, n_steps=100, step_size=1.0, noise_scale=0.01, mode="short_run",
                  base=None, data_noise=0.03, lr=1e-4, betas=(0.9, 0.999), buffer_size=10000, reinit=0.05, suffix="",
                  chain_block=None):
    """Train ``energy`` on the ``data`` ensemble of ``sim`` by short-run MCMC: ensembles
    ``chains<suffix>`` and ``theta<suffix>``, moves ``short_run<suffix>``,
    ``adam<suffix>``, ``load_parameters<suffix>``; ``sim.context`` gets
    ``f_data<suffix>``, ``f_model<suffix>`` and the move as ``short_run<suffix>``.
    Several learners (e.g. one per K) share the data and its minibatches."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    check_batch_size(n_chains)
    data = check_data(to_numpy(sim.ensembles["data"].x), energy)
    if not callable(data_noise) and (isinstance(data_noise, bool) or not np.isfinite(data_noise) or data_noise < 0):
        raise ValueError(f"data_noise must be a finite number >= 0 or a schedule; got {data_noise!r}")
    seed = sim.seed
    dtype, event = data.dtype, data.shape[1:]
    cache = {}

    def positive(step):
        if cache.get("step") != step:
            sigma = data_noise(step) if callable(data_noise) else data_noise
            cache["step"], cache["x"] = step, noisy_batch(data, sigma, seed, step, n_chains)[1]
        return cache["x"]

    move = ShortRun(energy, n_steps, step_size, noise_scale, MODES[mode], base, data_batch=positive,
                    batch=n_chains if mode == "pcd" else None, reinit=reinit, chain_block=chain_block)
    if mode == "pcd":
        check_batch_size(buffer_size)
        if buffer_size < n_chains:
            raise ValueError(f"buffer_size ({buffer_size}) must be at least n_chains ({n_chains})")
        start = move.base.sample(Stream(seed, StreamBlock.INIT), 0, np.arange(buffer_size), event, dtype)
    else:
        start = np.zeros((n_chains,) + event, dtype)
    sim.add_ensemble(f"chains{suffix}", Ensemble(start, name=f"chains{suffix}"))
    sim.schedule(move, f"chains{suffix}", name=f"short_run{suffix}")

    def gradient(step):
        x_data, x_q = positive(step), move.last_samples
        if chain_block is not None and x_data.shape[0] == x_q.shape[0]:
            g, e_data, e_model = contrastive_gradient_in_blocks(energy, x_data, x_q, chain_block,
                                                                getattr(sim.device, "comm", None))
            sim.context[f"f_data{suffix}"], sim.context[f"f_model{suffix}"] = -e_data, -e_model
            return g
        sim.context[f"f_data{suffix}"] = -float(np.mean(energy.value(x_data)))
        sim.context[f"f_model{suffix}"] = -float(np.mean(energy.value(x_q)))
        return contrastive_gradient(energy, x_data, x_q)

    add_parameter_trainer(sim, energy, gradient, lr, betas, suffix)
    sim.context.update({f"energy{suffix}": energy, f"short_run{suffix}": move, f"f_data{suffix}": float("nan"),
                        f"f_model{suffix}": float("nan")})
    return sim


def contrastive_gradient_in_blocks(energy, x_data, x_q, block, comm=None):
    """(flat float64 gradient of mean E(x_data) - mean E(x_q), mean E(x_data), mean E(x_q))
    from blocks of ``block`` rows of both batches (the same number of rows).  Given the
    communicator ``comm`` of a run over several processes, each rank computes the parts
    of a contiguous range of the blocks, one allgather brings every part to every rank,
    and the parts are added in block order: bitwise the same for any rank count
    (data-parallel training)."""
    n = x_q.shape[0]
    parts = []
    for a, b in rank_blocks(n, block, comm):
        w = np.full(b - a, 1.0 / n)
        pos, neg = energy.grad_params(x_data[a:b], w), energy.grad_params(x_q[a:b], w)
        parts.append((flatten({k: pos[k] - neg[k] for k in pos}), float(to_numpy(energy.value(x_data[a:b])).sum()),
                      float(to_numpy(energy.value(x_q[a:b])).sum())))
    parts = in_block_order(parts, comm)
    g, e_data, e_model = parts[0][0].copy(), parts[0][1], parts[0][2]
    for part, ed, em in parts[1:]:              # block order
        g += part
        e_data += ed
        e_model += em
    return g, e_data / n, e_model / n


def generate(energy, z, n_steps, step_size=1.0):
    """M_theta(z): the K-step chain from z with its noise switched off (Section 3.4:
    the learned short-run MCMC as a generator whose latent variable is the start)."""
    x = z.copy()
    h = x.dtype.type(step_size)
    for _ in range(n_steps):
        x = x - h * energy.grad(x)
    return x


def interpolate(energy, z1, z2, rhos, n_steps, step_size=1.0):
    """M_theta(z_rho) for z_rho = rho z1 + sqrt(1 - rho^2) z2 (Section 3.4), one row of
    outputs per rho: [len(rhos), *z1.shape]."""
    rhos = np.asarray(rhos, dtype=np.float64)
    if rhos.ndim != 1 or not ((rhos >= 0) & (rhos <= 1)).all():
        raise ValueError(f"rhos must be a list of numbers in [0, 1]; got {rhos!r}")
    fl = z1.dtype.type
    return np.stack([generate(energy, fl(r) * z1 + fl(np.sqrt(1 - r * r)) * z2, n_steps, step_size) for r in rhos])


def reconstruction_loss_and_grad(energy, z, x, n_steps, step_size=1.0):
    """(L, dL/dz) for L = (1/n) sum_i ||M_theta(z_i) - x_i||^2, back-propagated through the
    K noise-free steps x_{k+1} = x_k - h grad E(x_k): the adjoint runs backwards,
    v_K = dL/dx_K = 2 (x_K - x) / n,  v_k = v_{k+1} - h H(x_k) v_{k+1}  (H: the Hessian of
    E, applied by ``energy.hvp``), and dL/dz = v_0."""
    h = z.dtype.type(step_size)
    states = [z]
    for _ in range(n_steps):
        states.append(states[-1] - h * energy.grad(states[-1]))
    r = states[-1] - x
    n = z.shape[0]
    loss = float((r.astype(np.float64) ** 2).sum() / n)
    v = (2.0 / n) * r
    for k in range(n_steps - 1, -1, -1):
        v = v - h * energy.hvp(states[k], v)
    return loss, v


def reconstruct(energy, x, n_steps, step_size=1.0, n_iter=200, lr=0.05, base=None, seed=0):
    """Latent starts z with M_theta(z) close to the observations ``x`` (Section 3.4):
    the engine's Adam (``moves.Adam``) on z from a draw of ``base`` (default U[-1, 1]),
    ``n_iter`` iterations with the learning rate decayed from ``lr`` to 0 along a cosine
    (``moves.CosineDecay``: no oscillation at the end).
    Returns (z, M_theta(z), [loss per iteration])."""
    base = UniformBox() if base is None else base
    z = base.sample(Stream(seed, StreamBlock.RECONSTRUCTION), 0, np.arange(x.shape[0]), x.shape[1:], x.dtype)
    losses = []

    def gradient(ens):
        loss, g = reconstruction_loss_and_grad(energy, ens.x, x, n_steps, step_size)
        losses.append(loss)
        return g
    sim = Simulation({"z": Ensemble(z)}, seed=seed)
    sim.schedule(Adam(gradient, CosineDecay(lr, n_iter)), "z", name="adam")
    sim.run(n_iter)
    z = sim.ensembles["z"].x
    out = generate(energy, z, n_steps, step_size)
    losses.append(float(((out - x).astype(np.float64) ** 2).sum() / x.shape[0]))
    return z, out, losses


__all__ = ["short_run", "add_short_run", "contrastive_gradient_in_blocks", "generate", "interpolate",
           "reconstruction_loss_and_grad", "reconstruct", "MODES"]
