"""The one place that decides between numpy (CPU) and CuPy (GPU), and the ``Device``
object a Simulation runs on.

Everything else asks ``array_module(x)``, ``kernel_target(x)`` or an ensemble's
``device``; nothing outside this module tests for CuPy.

A ``Device`` owns three things: the array module (numpy or CuPy), the kernel target
(numba CPU or numba.cuda) and the reductions over particles (sums, means, weight
normalisation, ESS).  Every ensemble-wide reduction of the engine goes through a
device, so that a device spanning several processes can replace them in one place.
"""
import contextlib
import os

import numpy as np

from .kernels._jit import CPU, CUDA
from .kernels.reductions import block_sums
from .parallel import BLOCK, SERIAL, Shard, n_blocks, shard_range

DEVICES = ("cpu", "cpu-reference", "gpu", "cudasim")
_cupy = None
_cupy_checked = False


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a device, else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # optional dependency: the 'gpu' extra
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # no cupy, no driver or no device: CPU only
            _cupy = None
    return _cupy


def has_gpu():
    return cupy_or_none() is not None


def is_gpu_array(x):
    cp = cupy_or_none()
    return cp is not None and isinstance(x, cp.ndarray)


_REFERENCE = [0]          # depth of reference_path() blocks (a global: chunk threads see it too)


@contextlib.contextmanager
def reference_path():
    """Inside the block, numpy arrays take the array code path, the one CuPy arrays
    take on a GPU, instead of the CPU fast paths (fused kernels, blocked network
    passes): what ``Device("cpu-reference")`` runs, so that the GPU's code path is
    executed, and compared with the fast paths, on every CPU test run."""
    _REFERENCE[0] += 1
    try:
        yield
    finally:
        _REFERENCE[0] -= 1


def fast_paths_on():
    """False inside ``reference_path()``: every move and energy runs its array code."""
    return not _REFERENCE[0]


def on_host(x):
    """True when ``x`` lives in host memory (numpy) and the CPU fast paths apply (not
    inside ``reference_path()``)."""
    return not _REFERENCE[0] and not is_gpu_array(x)


def array_module(x):
    """numpy or cupy, whichever owns ``x``."""
    return cupy_or_none() if is_gpu_array(x) else np


def kernel_target(x):
    """The kernel target (``particleflow.kernels._jit.CPU`` or ``CUDA``) for ``x``."""
    return CUDA if is_gpu_array(x) else CPU


def to_numpy(x):
    if x is None:
        return None
    return x.get() if is_gpu_array(x) else np.asarray(x)


def to_device(x, device):
    """Copy ``x`` to ``device`` ("cpu" or "gpu", or a ``Device``); a missing GPU is a
    clear error."""
    if x is None:
        return None
    name = getattr(device, "name", device)
    if name in ("cpu", "cudasim", "cpu-reference"):
        return to_numpy(x)
    if name == "gpu":
        cp = cupy_or_none()
        if cp is None:
            raise RuntimeError(
                "device='gpu' needs CuPy and a CUDA device; none was found. "
                "Install the 'gpu' extra (pip install particleflow[gpu]) on a machine "
                "with a GPU, or use device='cpu'.")
        return cp.asarray(x)
    raise ValueError(f"device must be 'cpu' or 'gpu'; got {device!r}")


class Device:
    """Where a Simulation's arrays live and its kernels and reductions run.

    ``Device("cpu")``: numpy arrays, numba CPU kernels.  ``Device("gpu")``: CuPy arrays,
    numba.cuda kernels (needs the 'gpu' extra and a CUDA device).  ``Device("cudasim")``:
    numpy arrays and the numba.cuda kernels run by numba's CUDA simulator (needs
    ``NUMBA_ENABLE_CUDASIM=1`` before numba is imported; slow, for testing the GPU
    kernels on a machine without one).  ``Device("cpu-reference")``: numpy arrays
    through the array code path a GPU runs (``reference_path``), not the CPU fast
    paths: the reference the fast paths are tested against.  A Device compares
    equal to its name, so ``ensemble.device == "cpu"`` reads naturally.

    ``comm``: the processes the run spans (``particleflow.parallel``; default one).

    Reductions (``sum``, ``mean``, ``max``, ``normalised_weights``, ``ess``,
    ``weighted_mean``) are over the particle axis 0.  ``shard`` (a
    ``parallel.Shard`` or None) says that the array holds only this rank's rows of a
    sharded ensemble; the reduction then spans every rank.  Sums are computed the
    same way with or without shards: float64 partial sums over fixed blocks of
    ``parallel.BLOCK`` particles, each added in particle order, then the block
    partials (gathered from every rank) added in block order.  So a sum is bitwise
    the same for any number of ranks and threads.  ``reduction="allreduce"`` adds the
    ranks' totals with MPI_Allreduce instead: faster on many ranks, not bitwise
    independent of R."""

    def __init__(self, name="cpu", comm=None, reduction="ordered"):
        if name not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {name!r}")
        if name == "gpu" and cupy_or_none() is None:
            to_device(np.zeros(1), "gpu")             # raises the clear 'no GPU' error
        if name == "cudasim" and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            raise ValueError("device 'cudasim' needs NUMBA_ENABLE_CUDASIM=1 in the environment "
                             "before particleflow (numba) is imported")
        if reduction not in ("ordered", "allreduce"):
            raise ValueError(f"reduction must be 'ordered' (bitwise independent of the rank count) or "
                             f"'allreduce'; got {reduction!r}")
        self.name = name
        self.comm = SERIAL if comm is None else comm
        self.reduction = reduction

    @property
    def xp(self):
        return cupy_or_none() if self.name == "gpu" else np

    @property
    def target(self):
        return CUDA if self.name in ("gpu", "cudasim") else CPU

    def running(self):
        """A context in which this device's moves and energies run (``reference_path``
        for "cpu-reference", nothing otherwise)."""
        return reference_path() if self.name == "cpu-reference" else contextlib.nullcontext()

    @classmethod
    def of(cls, x):
        """The device that owns array ``x``."""
        return GPU_DEVICE() if is_gpu_array(x) else CPU_DEVICE

    def with_comm(self, comm, reduction="ordered"):
        """This device spanning the ranks of ``comm``."""
        return Device(self.name, comm, reduction)

    # ------------------------------------------------------------ reductions
    def block_partials(self, x):
        """float64 partial sums [n_blocks, k] over consecutive blocks of ``BLOCK`` rows
        of ``x`` [n, ...] (k = the product of the trailing dimensions)."""
        xp = array_module(x)
        n = x.shape[0]
        x2 = x.reshape(n, int(np.prod(x.shape[1:], dtype=np.int64)))
        nb = n_blocks(n)
        if xp is np:
            if x2.dtype not in (np.float32, np.float64):
                x2 = x2.astype(np.float64)
            out = np.empty((nb, x2.shape[1]))
            if nb:
                block_sums(np.ascontiguousarray(x2), BLOCK, out)
            return out
        full = (n // BLOCK) * BLOCK
        x2 = x2.astype(xp.float64)
        parts = [x2[:full].reshape(-1, BLOCK, x2.shape[1]).sum(1)]
        if full < n:
            parts.append(x2[full:].sum(0, keepdims=True))
        return xp.concatenate(parts)

    def gather_blocks(self, partials, shard, block=BLOCK):
        """The partials [blocks, ...] over blocks of ``block`` particles (a divisor of
        ``BLOCK``) of every rank, in block order (``partials`` itself when not sharded)."""
        if shard is None or self.comm.size == 1:
            return partials
        size = self.comm.size
        rows = [-(-(hi - lo) // block) for lo, hi in (shard_range(shard.n, r, size) for r in range(size))]
        host = to_numpy(partials)
        out = self.comm.allgather_rows(host, rows)
        return self.xp.asarray(out.astype(host.dtype, copy=False))

    def split(self, n):
        """This rank's share (a ``Shard``) of a reduction over ``n`` replicated rows,
        or None on one process: the work of a reduction over data that every rank
        holds is split by blocks like a sharded ensemble's."""
        if self.comm.size == 1:
            return None
        lo, hi = shard_range(n, self.comm.rank, self.comm.size)
        return Shard(lo, hi, n)

    def _total(self, partials, shard):
        """The sum over every block (and rank, for a shard) of ``partials``."""
        if shard is not None and self.comm.size > 1 and self.reduction == "allreduce":
            return self.xp.asarray(self.comm.allreduce_sum(to_numpy(partials).sum(0)))
        return self.gather_blocks(partials, shard).sum(0)

    def sum(self, x, shard=None):
        """Sum over particles (axis 0), float64, shape ``x.shape[1:]``."""
        total = self._total(self.block_partials(x), shard)
        return self.xp.asarray(total).reshape(x.shape[1:])

    def outer_sum(self, a, b, shard=None):
        """sum_i a_i b_i^T over particles, float64 [k, l], for ``a`` [n, k] and ``b`` [n, l];
        per block with einsum's plain loops (no BLAS: its thread split may reorder sums)."""
        xp = array_module(a)
        n = a.shape[0]
        parts = xp.empty((n_blocks(n), a.shape[1] * b.shape[1]))
        for i in range(parts.shape[0]):
            s = slice(i * BLOCK, (i + 1) * BLOCK)
            parts[i] = xp.einsum("ij,ik->jk", a[s].astype(xp.float64), b[s].astype(xp.float64)).reshape(-1)
        return xp.asarray(self._total(parts, shard)).reshape(a.shape[1], b.shape[1])

    # ------------------------------------------------------------ exchanges
    def gather_rows(self, x, shard=None):
        """Every rank's rows of a sharded array, in particle order (``x`` itself when
        not sharded)."""
        if shard is None or self.comm.size == 1:
            return x
        return self.xp.asarray(np.concatenate(self.comm.allgather(to_numpy(x))))

    def fetch_rows(self, x, shard, rows):
        """``x[rows]`` for sorted global row indices ``rows``, where ``x`` holds this
        rank's rows of a sharded array: one all-to-all of the requests, one of the
        rows."""
        if shard is None or self.comm.size == 1:
            return x[rows]
        rows = to_numpy(rows)
        size = self.comm.size
        bounds = [shard_range(shard.n, r, size) for r in range(size)]
        cuts = np.searchsorted(rows, [lo for lo, _ in bounds] + [shard.n])
        asks = self.comm.alltoall([rows[cuts[r]:cuts[r + 1]] for r in range(size)])
        host = to_numpy(x)
        answers = self.comm.alltoall([host[a - shard.lo] for a in asks])
        return self.xp.asarray(np.concatenate(answers))

    def count(self, x, shard=None):
        """The number of particles: global for a shard."""
        return shard.n if shard is not None else x.shape[0]

    def mean(self, x, shard=None):
        """Mean over particles (axis 0), float64."""
        return self.sum(x, shard) / self.count(x, shard)

    def max(self, x, shard=None):
        """The largest element of ``x`` over every rank's rows (a float; -inf if none)."""
        m = float(x.max()) if x.size else -np.inf
        if shard is not None and self.comm.size > 1:
            m = float(self.comm.allreduce_max(m))
        return m

    def normalised_weights(self, log_weights, n, dtype, shard=None):
        """w_i = exp(l_i - max l) / sum_j exp(l_j - max l); uniform for None.  For a
        shard: this rank's rows of the globally normalised weights; ``n`` is the
        local row count."""
        xp = self.xp
        if log_weights is None:
            return xp.full(n, 1.0 / (shard.n if shard is not None else n), dtype=dtype)
        w = xp.exp(log_weights - dtype.type(self.max(log_weights, shard)))
        return (w / dtype.type(float(self.sum(w, shard)))).astype(dtype, copy=False)

    def ess(self, log_weights, n, dtype, shard=None):
        """Kish effective sample size 1 / sum w_i^2 of the normalised weights (float)."""
        if log_weights is None:
            return float(shard.n if shard is not None else n)
        w = self.normalised_weights(log_weights, n, dtype, shard)
        return float(1.0 / float(self.sum(w * w, shard)))

    def weighted_mean(self, x, log_weights, shard=None):
        """Weighted mean of the rows of ``x`` [n, k] (plain mean when unweighted), float64."""
        if log_weights is None:
            return self.mean(x, shard)
        w = self.normalised_weights(log_weights, x.shape[0], x.dtype, shard)
        return self.sum(w[:, None] * x, shard)

    def __eq__(self, other):
        if isinstance(other, Device):
            return other.name == self.name
        return other == self.name

    def __hash__(self):
        return hash(self.name)

    def __str__(self):
        return self.name

    def __repr__(self):
        return repr(self.name)


CPU_DEVICE = Device("cpu")
_gpu_device = []


def GPU_DEVICE():
    """The (lazily created) GPU device."""
    if not _gpu_device:
        _gpu_device.append(Device("gpu"))
    return _gpu_device[0]


def get_device(device):
    """A ``Device`` from a Device, "cpu" or "gpu"."""
    if isinstance(device, Device):
        return device
    if device == "cpu":
        return CPU_DEVICE
    if device == "gpu":
        return GPU_DEVICE()
    if device in ("cudasim", "cpu-reference"):
        return Device(device)
    raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))} or a particleflow Device; "
                     f"got {device!r}")
