"""Short-run MCMC (paper 004): base distributions, re-initialisation, and K Langevin
steps from a fresh (or replayed) start within one Simulation step.

* ``UniformBox(lo, hi)`` and ``GaussianBase(mean, std)``: base distributions p_0 drawn from
  the Philox streams (``sample(stream, step, ids, shape, dtype)``, one row per id).
* ``Reinitialize(base, probability)``: each particle is redrawn from the base with
  probability p (p = 1: every step starts from p_0).
* ``ShortRun(energy, n_steps, step_size, noise_scale, start, ...)``: per Simulation step,
  choose the chains (all, or a batch of a replay buffer), start them (from p_0, from a
  data batch for CD-k, or where the buffer left them with a re-initialisation fraction),
  and run K steps of x <- x - h grad E(x) + c z (the paper's code uses h = 1,
  c = 0.01 with f = -E absorbing the temperature).  The K-th samples are kept as
  ``last_samples`` for the contrastive gradient; the statistics are the mean ||grad E||
  along the chain (the paper's Table 2), the re-initialised fraction and the replay
  buffer's mean age.

Noise of Langevin step k within Simulation step t uses the counter t K + k of the
``LANGEVIN_NOISE`` purpose; the starts use ``INIT`` (values), ``RESTART`` (coins) and
``MINIBATCH`` (which buffer rows) at counter t.  All draws are per particle id, so runs
are bitwise reproducible whatever the thread count.
"""
import numpy as np

from ..backend import array_module, to_device, to_numpy
from ..parallel import in_block_order, rank_blocks
from ..random import Purpose
from . import fastpaths
from ..checks import block_rows, positive, probability as _probability
from .base import Move


class UniformBox:
    """Uniform on [lo, hi]^d."""

    def __init__(self, lo=-1.0, hi=1.0):
        if isinstance(lo, bool) or isinstance(hi, bool) or not np.isfinite([lo, hi]).all() or not lo < hi:
            raise ValueError(f"a uniform box needs finite lo < hi; got lo={lo!r}, hi={hi!r}")
        self.lo, self.hi = float(lo), float(hi)

    def sample(self, stream, step, ids, shape, dtype):
        d = int(np.prod(shape))
        u = stream.uniform(step, ids, d, Purpose.INIT, dtype)
        return (dtype.type(self.lo) + dtype.type(self.hi - self.lo) * u).reshape((len(ids),) + tuple(shape))

    def __repr__(self):
        return f"UniformBox({self.lo:g}, {self.hi:g})"


class GaussianBase:
    """N(mean, std^2 I)."""

    def __init__(self, mean=0.0, std=1.0):
        self.mean = float(mean)
        self.std = positive(std, "std")

    def sample(self, stream, step, ids, shape, dtype):
        d = int(np.prod(shape))
        z = stream.normal(step, ids, d, Purpose.INIT, dtype)
        return (dtype.type(self.mean) + dtype.type(self.std) * z).reshape((len(ids),) + tuple(shape))

    def __repr__(self):
        return f"GaussianBase({self.mean:g}, {self.std:g})"


def _check_base(base):
    if not callable(getattr(base, "sample", None)):
        raise ValueError(f"base must be a distribution with sample(stream, step, ids, shape, dtype) such as "
                         f"UniformBox or GaussianBase; got {base!r}")
    return base


class Reinitialize(Move):
    """Redraw each particle from ``base`` with probability ``probability``."""

    stats_keys = ("reinit_fraction",)

    def __init__(self, base, probability=1.0):
        super().__init__()
        self.base = _check_base(base)
        self.probability = _probability(probability, "probability")

    def _step(self, ens, stream, step):
        xp = ens.xp
        if self.probability == 1.0:
            ens.x = xp.asarray(self.base.sample(stream, step, to_numpy(ens.ids), ens.event_shape, ens.dtype))
            return {"reinit_fraction": 1.0}
        hit = to_numpy(stream.uniform(step, ens.ids, 1, Purpose.RESTART)[:, 0]) < self.probability
        rows = np.nonzero(hit)[0]
        if len(rows):
            x = to_numpy(ens.x).copy()
            x[rows] = self.base.sample(stream, step, to_numpy(ens.ids)[rows], ens.event_shape, ens.dtype)
            ens.x = xp.asarray(x)
        return {"reinit_fraction": float(ens.particle_mean(hit))}


START = ("noise", "data", "persistent")


def _at(value, step):
    """A number, or a schedule (callable of the Simulation step, e.g. ``StepDecay``)."""
    return float(value(step)) if callable(value) else value


class ShortRun(Move):
    """K Langevin steps toward ``energy`` from a fresh start every Simulation step.

    Parameters
    ----------
    energy : Energy (its ``grad``)
    n_steps : K >= 1
    step_size : h > 0; noise_scale : c >= 0  (x <- x - h grad E + c z); either may be
        a schedule, a callable of the Simulation step (``StepDecay``, ``CosineDecay``)
    start : "noise" (all chains from ``base``: the paper), "data" (CD-k: the chains
        start at ``data_batch(step)``, the positive batch of the same step), or
        "persistent" (a replay buffer: the ensemble holds the buffer, each step runs
        ``batch`` of its chains chosen at random, each first redrawn from ``base``
        with probability ``reinit``)
    base : UniformBox / GaussianBase (default UniformBox(-1, 1))
    data_batch : callable step -> array of the chains' shape (start = "data")
    batch, reinit : replay buffer only
    chain_block : None (the chains of a step run as one batch) or rows per block: the
        chains run block by block, and in a run over several processes each rank runs
        its share of the blocks (``run_chains``)
    """

    stats_keys = ("grad_norm", "reinit_fraction", "buffer_age")

    def __init__(self, energy, n_steps, step_size=1.0, noise_scale=0.01, start="noise", base=None, data_batch=None,
                 batch=None, reinit=0.05, chain_block=None):
        super().__init__()
        self.energy = energy
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1; got {n_steps!r}")
        self.n_steps = int(n_steps)
        self.step_size = step_size if callable(step_size) else positive(step_size, "step_size")
        if not callable(noise_scale):
            if isinstance(noise_scale, bool) or not np.isfinite(noise_scale) or noise_scale < 0:
                raise ValueError(f"noise_scale must be a finite number >= 0; got {noise_scale!r}")
            noise_scale = float(noise_scale)
        self.noise_scale = noise_scale
        if start not in START:
            raise ValueError(f"start must be one of {', '.join(START)}; got {start!r}")
        self.start = start
        self.base = _check_base(UniformBox() if base is None else base)
        if start == "data" and not callable(data_batch):
            raise ValueError("start = 'data' (CD-k) needs data_batch(step), the positive batch of the step")
        self.data_batch = data_batch
        if start == "persistent":
            if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
                raise ValueError(f"a replay buffer needs batch, an integer >= 1; got {batch!r}")
        self.batch = None if batch is None else int(batch)
        self.reinit = _probability(reinit, "reinit")
        self.chain_block = block_rows(chain_block, "chain_block")
        self.last_samples = None
        self.state = {}

    def check(self, ensemble):
        super().check(ensemble)
        if self.start == "persistent" and self.batch > ensemble.n:
            raise ValueError(f"replay buffer batch {self.batch} is larger than the buffer ({ensemble.n} chains)")

    def _rows(self, ens, stream, step):
        if self.start != "persistent":
            return None
        u = to_numpy(stream.uniform(step, ens.ids, 1, Purpose.MINIBATCH)[:, 0])
        return np.sort(np.argsort(u, kind="stable")[:self.batch])

    def _step(self, ens, stream, step):
        xp = ens.xp
        ids = to_numpy(ens.ids)
        rows = self._rows(ens, stream, step)
        if self.start == "noise":
            x = xp.asarray(self.base.sample(stream, step, ids, ens.event_shape, ens.dtype))
            run_ids, fraction, age = ens.ids, 1.0, 0.0
        elif self.start == "data":
            x = xp.asarray(self.data_batch(step), dtype=ens.dtype).reshape(ens.x.shape).copy()
            run_ids, fraction, age = ens.ids, 0.0, 0.0
        else:
            ages = self.state.get("age")
            ages = np.zeros(ens.n, np.int64) if ages is None else ages.copy()
            x = xp.asarray(to_numpy(ens.x)[rows])
            hit = to_numpy(stream.uniform(step, ens.ids, 1, Purpose.RESTART)[:, 0])[rows] < self.reinit
            fresh = np.nonzero(hit)[0]
            if len(fresh):
                x[fresh] = xp.asarray(self.base.sample(stream, step, ids[rows][fresh], ens.event_shape, ens.dtype))
            ages[rows[fresh]] = 0
            fraction, age = float(hit.mean()), float(ages[rows].mean())
            ages[rows] += 1
            self.state["age"] = ages
            run_ids = ens.ids[xp.asarray(rows)]
        comm = getattr(ens.device, "comm", None) if ens.shard is None else None   # replicated: split the work
        x, grad_norm = self.run_chains(x, run_ids, stream, step, comm, self.chain_block)
        if rows is None:
            ens.x = x
        else:
            full = ens.x.copy()
            full[xp.asarray(rows)] = x
            ens.x = full
        ens.positions_changed()
        self.last_samples = x
        return {"grad_norm": grad_norm, "reinit_fraction": fraction, "buffer_age": age}

    def run_chains(self, x, ids, stream, step, comm=None, chain_block=None):
        """K steps of x <- x - h grad E(x) + c z from ``x`` (a new array is returned)
        and the mean ||grad E|| over the steps and chains.

        With ``chain_block`` rows per block, the chains run in fixed blocks, one block
        after another (a chain needs only its own row and its own noise); given the
        communicator ``comm`` of a run over several processes, each rank runs a
        contiguous range of the blocks and one allgather brings every block to every
        rank.  A block is computed by the same code whatever the rank count, so the
        result is bitwise the same for any rank count (a different ``chain_block`` may
        round differently: network passes over fewer rows may take other BLAS paths).
        The move's own steps pass its ``chain_block``."""
        xp = array_module(x)
        if chain_block is None:
            parts = [self._run_block(x, ids, stream, step)]
        else:
            blocks = rank_blocks(x.shape[0], chain_block, comm)
            parts = [self._run_block(x[a:b], ids[a:b], stream, step) for a, b in blocks]
            if comm is not None and comm.size > 1:      # the end points travel through host memory
                parts = [(xp.asarray(xb), norms) for xb, norms in
                         in_block_order([(to_numpy(xb), norms) for xb, norms in parts], comm)]
        out = parts[0][0] if len(parts) == 1 else xp.concatenate([xb for xb, _ in parts])
        norms = np.concatenate([nb for _, nb in parts], axis=1)           # [K, n]
        total = 0.0
        for k in range(self.n_steps):               # mean over the chains, then over the steps
            total += float(norms[k].mean())
        return out, total / self.n_steps

    def _run_block(self, x, ids, stream, step):
        """K steps of one block of chains; (the end points, ||grad E|| [K, rows])."""
        fl = x.dtype.type
        h, c = fl(_at(self.step_size, step)), fl(_at(self.noise_scale, step))
        n, d = x.shape[0], int(np.prod(x.shape[1:]))
        fast = fastpaths.lookup("langevin_update_into", x)
        norms = np.empty((self.n_steps, n))
        buffers = (np.empty_like(x), np.empty_like(x)) if fast else None     # the input is only read
        for k in range(self.n_steps):
            g = self.energy.grad(x)
            norms[k] = to_numpy((g.reshape(n, -1).astype(np.float64) ** 2).sum(1) ** 0.5)
            z = stream.normal(step * self.n_steps + k, ids, d, Purpose.LANGEVIN_NOISE, x.dtype).reshape(x.shape)
            if fast is not None and fast(x, g, z, h, c, buffers[k % 2]):
                x = buffers[k % 2]
            else:
                x = x - h * g + c * z
        return x, norms

    def state_dict(self):
        return {k: np.array(to_numpy(v)) for k, v in self.state.items()}

    def load_state_dict(self, state):
        self.state = {k: to_device(np.array(v), self.device or "cpu") for k, v in state.items()}


__all__ = ["UniformBox", "GaussianBase", "Reinitialize", "ShortRun"]
