"""Counter-based randomness: Philox4x32-10 keyed by (seed, stream), counted by
(step, particle id, draw index).

A ``Stream`` holds no mutable state.  The noise of particle ``id`` at ``step`` for a
given ``purpose`` is a pure function of ``(seed, stream_id, purpose, step, id, draw)``
(the layout is in ``particleflow/kernels/philox.py``), so results do not depend on
the thread count or launch shape, the CPU and GPU kernels draw the same integers, and
resuming a run needs only the step counter.  Noise follows persistent particle ids,
never array slots, so reordering an ensemble never changes a chain's noise.

Purposes (the stream table; HOOMD-blue's ``RNGIdentifiers`` idea): every kind of draw
gets its own key word so that two draws of one step never reuse numbers.
"""
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .backend import array_module, kernel_target
from .kernels.philox import MAX_UNROLLED_WIDTH, fill_kernel, wide_fill


class Purpose(IntEnum):
    LANGEVIN_NOISE = 1     # Langevin / MALA / Euler-Maruyama Gaussian increments
    MH_ACCEPT = 2          # Metropolis-Hastings accept uniforms
    HMC_MOMENTUM = 3       # HMC momentum refresh
    RESAMPLE = 4           # resampling uniforms
    RESTART = 5            # restart coin flips and source picks
    MINIBATCH = 6          # minibatch selection
    PROPOSAL = 7           # independent proposals (IMH, importance sampling)
    INIT = 8               # initial positions drawn by estimators
    PROPOSAL_COMPONENT = 9  # mixture component choice of a proposal draw
    DATA_NOISE = 10        # noise added to data by estimators (denoising score matching)
    MASK = 11              # random selections of observed coordinates (MR-MAP)
    STEP_JITTER = 12       # per-step random step-size factor (HMC jitter), one global draw
    TRAJECTORY = 13        # per-step fraction of an HMC trajectory length, one global draw


class StreamBlock:
    """The stream-id table: every block of stream ids the package reserves (ids are
    24-bit; a stream id and a ``Purpose`` together form the second Philox key word).

    SLOTS     0 + k        schedule slot k of a Simulation (k < 2**22)
    REPLICAS  0 + r        replica r of a replicated estimator (importance-sampling
                           runs): they share ids with slots, so an experiment that
                           uses replicas schedules no move that draws from its slot
    TEACHER   2**22 + j    synthetic data of experiments: j = 0 teacher directions,
                           1 + split the samples of a split, 10 the student's start
    INIT      2**23 + i    initial positions of a config's ensemble number i, and
                           observations drawn by an experiment (i = 0)
    DATA      3 * 2**22 + j  minibatches and data noise drawn by estimators: j = 0
                           training, 1 held-out evaluation, 2 contrastive-divergence noise,
                           3 + split MR-MAP observation masks and noise
    """
    SLOTS = 0
    REPLICAS = 0
    TEACHER = 1 << 22
    INIT = 1 << 23
    DATA = 3 << 22

    # ids inside the blocks with one user each (their values fix every run's bits)
    ANNEALING = REPLICAS            # + 3 r, + 3 r + 1, + 3 r + 2: repeat r of annealed importance
                                    # sampling (initial draws, resampling, MCMC)
    STUDENT_INIT = TEACHER + 10     # dual F1-EBM: the student neurons' initial directions
    EVAL_REFERENCE = TEACHER + 100  # analysis.evaluate_run: exact draws of the energy
    SUBSAMPLE = INIT + 8            # + split: datasets.subsample's draws
    DATASET_SPLIT = INIT + 16       # datasets.train_test_split's permutation
    NETWORK_INIT = INIT + 24        # HyperbolicNetwork.init's weights
    SHORTRUN_EVAL = INIT + 32       # short-run experiment: the evaluation chains' starts
    RECONSTRUCTION = INIT + 40      # short-run reconstruction: the latent starts
    TRAIN = DATA + 0                # minibatches (+ noise) for training
    HELDOUT = DATA + 1              # held-out evaluation batches
    CD_NOISE = DATA + 2             # DEEN's contrastive-divergence baseline: Langevin noise
    MRMAP_MASKS = DATA + 3          # + split: MR-MAP observation masks and noise


# id used for draws that belong to the whole ensemble (e.g. the single uniform of
# systematic resampling), never given to a particle
GLOBAL_ID = 2 ** 63 - 1
MAX_STEP = 2 ** 32 - 1


@dataclass(frozen=True)
class Stream:
    """Immutable handle to the random numbers of one run (``seed``) and one
    schedule slot (``stream_id``); moves receive it as ``move(ensemble, stream, step)``.

    Parameters
    ----------
    seed : int in [0, 2**32)
    stream_id : int in [0, 2**24)
        ``Simulation`` gives every scheduled move its own stream id, so that two
        moves of one step never share draws.
    """
    seed: int
    stream_id: int = 0

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or not 0 <= int(self.seed) < 2 ** 32:
            raise ValueError(f"seed must be an integer in [0, 2**32); got {self.seed!r}")
        if not isinstance(self.stream_id, (int, np.integer)) or not 0 <= int(self.stream_id) < 2 ** 24:
            raise ValueError(f"stream_id must be an integer in [0, 2**24); got {self.stream_id!r}")

    def substream(self, stream_id):
        """The stream of another schedule slot under the same seed."""
        return Stream(self.seed, stream_id)

    def key(self, purpose):
        """Philox key words (k0, k1) as uint64 for ``purpose``."""
        return np.uint64(self.seed), np.uint64((int(self.stream_id) << 8) | int(Purpose(purpose)))

    def _fill(self, kind, step, ids, n_draws, purpose, dtype, out=None):
        _check_step(step)
        xp = array_module(ids)
        ids = xp.ascontiguousarray(ids, dtype=xp.int64)
        if ids.ndim != 1:
            raise ValueError(f"ids must be 1-D; got shape {ids.shape}")
        n_draws = int(n_draws)
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1; got {n_draws}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {dtype}")
        k0, k1 = self.key(purpose)
        target = kernel_target(ids)
        if target.name == "cpu" and n_draws > MAX_UNROLLED_WIDTH:
            if out is None:
                out = xp.empty((ids.size, n_draws), dtype=dtype)
            return wide_fill(kind, target, np.dtype(dtype), ids, n_draws, int(step), k0, k1, out)
        width = 4 * ((n_draws + 3) // 4)
        if out is not None and width == n_draws:
            fill_kernel(kind, target, dtype, width)(ids.size, out.reshape(-1), ids, width, int(step), k0, k1)
            return out
        res = xp.empty(ids.size * width, dtype=dtype)
        fill_kernel(kind, target, dtype, width)(ids.size, res, ids, width, int(step), k0, k1)
        res = res.reshape(ids.size, width)
        if out is not None:
            out[...] = res[:, :n_draws]
            return out
        return res if width == n_draws else xp.ascontiguousarray(res[:, :n_draws])

    def normal(self, step, ids, n_draws, purpose=Purpose.LANGEVIN_NOISE, dtype=np.float64, out=None):
        """Standard normals ``[len(ids), n_draws]`` (Box-Muller on Philox words);
        ``out``: a C-contiguous array of that shape and ``dtype`` to fill instead of a
        new one (reused buffers avoid page faults on large arrays)."""
        return self._fill("normal", step, ids, n_draws, purpose, dtype, self._check_out(out, ids, n_draws, dtype))

    def uniform(self, step, ids, n_draws, purpose=Purpose.MH_ACCEPT, dtype=np.float64, out=None):
        """Uniforms in the open interval (0, 1), ``[len(ids), n_draws]`` (``out`` as
        for ``normal``)."""
        return self._fill("uniform", step, ids, n_draws, purpose, dtype, self._check_out(out, ids, n_draws, dtype))

    @staticmethod
    def _check_out(out, ids, n_draws, dtype):
        if out is None:
            return None
        shape = (len(ids), int(n_draws))
        if tuple(out.shape) != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}; "
                             f"got {out.dtype} {tuple(out.shape)}")
        return out


def _check_step(step):
    if not isinstance(step, (int, np.integer)) or not 0 <= int(step) <= MAX_STEP:
        raise ValueError(f"step must be an integer in [0, {MAX_STEP}]; got {step!r}")
