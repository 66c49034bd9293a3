"""Chunk-parallel CPU execution of network passes.

Networks process a batch in fixed chunks of ``batch_size`` rows.  On numpy arrays the
chunks run on a pool of Python threads (numpy's BLAS and our ``nogil`` numba kernels
release the GIL), each chunk with a single-threaded BLAS.  Why not leave the
parallelism to OpenBLAS: the GEMMs of these networks are thin (32-256 columns), and
OpenBLAS's second thread buys little on them (MLP [64,32,32,32,1] at n = 1e5: 53 ms
with 1 BLAS thread, 50 ms with 2), while everything between the GEMMs (activations,
im2col/col2im, elementwise products) stays single-threaded; one chunk per core keeps
both cores busy through the whole pass (same MLP: 35 ms; measurements in the README's
benchmark section).

Determinism: chunk boundaries depend on ``batch_size`` only, every chunk is computed
by the same single-threaded code whatever the number of workers, and sums over chunks
(parameter gradients) are taken in chunk order after all chunks finish, so results
are bitwise identical for any thread count (tested).  BLAS is single-threaded in every
pass, one chunk or many: how a GEMM's rows are split changes the rounding of some rows
(measured: the same rows in chunks of 3 and of 20 differ in the last bits), so a
multi-threaded BLAS would make results depend on its thread count.

The worker count is numba's thread count (``NUMBA_NUM_THREADS`` /
``numba.set_num_threads``): one knob for every CPU kernel of the project.  BLAS is
limited with ``threadpoolctl`` (the standard tool, used by scikit-learn); where it is
missing the chunks run one after another with BLAS's default threads.
"""
import contextlib
import importlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

from ..backend import on_host

_lock = threading.Lock()
_pool = None
_pool_size = 0
_controller = None
_controller_checked = False
_blas_libs = None


def workers():
    """Number of chunk workers: numba's current thread count."""
    return max(1, int(numba.get_num_threads()))


def _blas_controller():
    global _controller, _controller_checked
    if not _controller_checked:
        _controller_checked = True
        try:
            # load scipy's BLAS first (numba's np.dot calls it): the controller only
            # sees libraries loaded when it is created
            importlib.import_module("scipy.linalg.cython_blas")
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        except Exception:          # not installed or unusable: serial chunks
            _controller = None
    return _controller


def _executor(n):
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="particleflow-chunk")
            _pool_size = n
        return _pool


def _blas_libraries():
    global _blas_libs
    if _blas_libs is None:
        ctl = _blas_controller()
        _blas_libs = [] if ctl is None else [lc for lc in ctl.lib_controllers if lc.user_api == "blas"]
    return _blas_libs


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS limited to one thread inside the block (True), or False where threadpoolctl
    is missing.  Each library's thread count is read and set directly (one C call
    each): ``ThreadpoolController.limit`` costs about 20 us a call, as much as a
    small network's whole gradient pass."""
    if _blas_controller() is None:
        yield False
        return
    saved = [(lc, lc.get_num_threads()) for lc in _blas_libraries()]
    for lc, n in saved:
        if n != 1:
            lc.set_num_threads(1)
    try:
        yield True
    finally:
        for lc, n in saved:
            if n != 1:
                lc.set_num_threads(n)


_local = threading.local()


def map_chunks(fn, slices):
    """[fn(s) for s in slices], chunks in parallel on the CPU (see the module doc),
    always under a single-threaded BLAS, so that a pass never depends on BLAS's thread
    count either (a GEMM's rows can round differently with how its rows are split).
    Nested calls (a chunk function calling another network) run serially inside."""
    slices = list(slices)
    if getattr(_local, "inside", False):
        return [fn(s) for s in slices]
    with single_threaded_blas() as limited:
        n = min(workers(), len(slices))
        if not limited or n <= 1:
            return [fn(s) for s in slices]

        def run(s):
            _local.inside = True
            try:
                return fn(s)
            finally:
                _local.inside = False
        return list(_executor(n).map(run, slices))


def map_chunks_for(x, fn, slices):
    """``map_chunks`` for numpy input ``x``; [fn(s) for s in slices] in order for
    CuPy arrays and inside ``backend.reference_path()``."""
    return map_chunks(fn, slices) if on_host(x) else [fn(s) for s in slices]
