"""Processes that share one run: the communicator behind a ``Device``.

A run started by ``mpiexec -n R`` (or Slurm's ``srun``) is SPMD: every rank builds the
same Simulation from the same config and seed.  Each ensemble of at least R blocks of
``BLOCK`` particles is *sharded*: rank r holds the contiguous rows of a fixed range of
blocks (``shard_range``); smaller ensembles and static ones (data) are replicated.
Per-particle moves need nothing from other ranks: the Philox noise is keyed by the
particle's id.  Every reduction over particles goes through the device
(``backend.Device``), which sums fixed 512-particle blocks, gathers the block partial
sums of all ranks and adds them in block order: the result does not depend on R.

``world()`` is a ``SerialComm`` unless the process was launched by an MPI launcher
(the launchers' environment variables), so that a plain run never imports mpi4py.
"""
import os
import time

import numpy as np

BLOCK = 512          # particles per reduction block; shards start at multiples of it

_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class Shard:
    """Rows ``[lo, hi)`` of an ensemble of ``n`` particles held by this rank."""

    def __init__(self, lo, hi, n):
        self.lo, self.hi, self.n = int(lo), int(hi), int(n)

    def __repr__(self):
        return f"Shard({self.lo}:{self.hi} of {self.n})"

    def __eq__(self, other):
        return isinstance(other, Shard) and (self.lo, self.hi, self.n) == (other.lo, other.hi, other.n)


def n_blocks(n):
    return (int(n) + BLOCK - 1) // BLOCK


def shard_range(n, rank, size):
    """(lo, hi): the rows of rank ``rank`` when ``n`` rows are split over ``size`` ranks
    in contiguous ranges of whole blocks (balanced to within one block)."""
    nb = n_blocks(n)
    b0, b1 = rank * nb // size, (rank + 1) * nb // size
    return min(n, b0 * BLOCK), min(n, b1 * BLOCK)


def rank_blocks(n, block, comm=None):
    """The blocks of ``block`` rows (of ``n``) that this rank of ``comm`` computes, as
    (start, stop) row ranges: a contiguous range of the blocks, balanced to within one
    block (all of them in one process or with ``comm`` None).  Data-parallel training
    splits a minibatch's work this way and gathers the parts with ``in_block_order``."""
    size, rank = (1, 0) if comm is None else (comm.size, comm.rank)
    blocks = [(s, min(n, s + block)) for s in range(0, n, block)]
    return blocks[rank * len(blocks) // size:(rank + 1) * len(blocks) // size]


def in_block_order(parts, comm=None):
    """Every rank's ``parts`` (one per block of ``rank_blocks``), all ranks' in block order
    (one allgather; ``parts`` itself in one process)."""
    if comm is None or comm.size == 1:
        return parts
    return [p for rank_parts in comm.allgather(parts) for p in rank_parts]


class SerialComm:
    """One process: every collective is the identity."""

    rank = 0
    size = 1

    def allgather(self, obj):
        return [obj]

    def allgather_rows(self, a, rows):
        return np.asarray(a, dtype=np.float64)

    def alltoall(self, objs):
        return list(objs)

    def allreduce_max(self, value):
        return value

    def allreduce_sum(self, array):
        return array

    def any(self, flag):
        return bool(flag)

    def barrier(self):
        pass

    def abort(self, code=1):
        raise SystemExit(code)

    def __repr__(self):
        return "SerialComm()"


def _timed(method):
    """Count the seconds and calls spent in a collective (``MPIComm.seconds``, ``calls``):
    the time in communication, waiting for the slowest rank included."""
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class MPIComm:
    """mpi4py's ``COMM_WORLD`` with the few collectives particleflow uses."""

    def __init__(self, comm=None):
        from mpi4py import MPI  # optional dependency: the 'mpi' extra
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.seconds, self.calls = 0.0, 0

    @_timed
    def allgather(self, obj):
        return self.comm.allgather(obj)

    @_timed
    def allgather_rows(self, a, rows):
        """Every rank's float64 array [rows[r], ...] stacked in rank order (one
        MPI_Allgatherv, no pickling); ``rows``: the row count of every rank."""
        a = np.ascontiguousarray(a, dtype=np.float64)
        per_row = int(np.prod(a.shape[1:], dtype=np.int64))
        counts = np.asarray(rows, dtype=np.int64) * per_row
        out = np.empty((int(sum(rows)),) + a.shape[1:])
        self.comm.Allgatherv(a, [out, counts, np.concatenate([[0], np.cumsum(counts)[:-1]]), self.MPI.DOUBLE])
        return out

    @_timed
    def alltoall(self, objs):
        return self.comm.alltoall(list(objs))

    @_timed
    def allreduce_max(self, value):
        return self.comm.allreduce(value, op=self.MPI.MAX)

    @_timed
    def allreduce_sum(self, array):
        """Elementwise sum over ranks in MPI's order (fast; not bitwise independent of R)."""
        a = np.ascontiguousarray(array, dtype=np.float64)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=self.MPI.SUM)
        return out

    @_timed
    def any(self, flag):
        return bool(self.comm.allreduce(bool(flag), op=self.MPI.LOR))

    @_timed
    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)

    def __repr__(self):
        return f"MPIComm(rank={self.rank}, size={self.size})"


SERIAL = SerialComm()
_world = []


def launched_size():
    """The number of ranks an MPI launcher announced in the environment (1 if none)."""
    for var in _LAUNCHER_SIZE:
        v = os.environ.get(var)
        if v and v.isdigit() and int(v) > 1:
            return int(v)
    return 1


def local_rank():
    """This process's rank among the ranks on its node (for one GPU per rank), from the
    launcher's environment; 0 without a launcher."""
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMIX_LOCAL_RANK"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 0


def world():
    """The communicator of this process: ``MPIComm`` under an MPI launcher with more
    than one rank (or with ``PARTICLEFLOW_MPI=1``), else the serial one."""
    if not _world:
        if launched_size() > 1 or os.environ.get("PARTICLEFLOW_MPI") == "1":
            try:
                import mpi4py.MPI  # optional dependency: the 'mpi' extra
            except ImportError:
                raise RuntimeError("this process was started by an MPI launcher but mpi4py is not installed; "
                                   "install the 'mpi' extra (pip install 'particleflow[mpi]')") from None
            _world.append(MPIComm(mpi4py.MPI.COMM_WORLD))
        else:
            _world.append(SERIAL)
    return _world[0]
