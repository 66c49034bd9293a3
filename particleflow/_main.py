"""The console entry point ``particleflow``.

It imports the CLI inside a guard: loading numba and compiling nothing yet still takes
about half a second, and Ctrl-C during it should exit 130 with one line, not print
Python's traceback.  That is why the import below is inside the function (the package's
top level loads its subpackages lazily, so importing this module is cheap).
"""
import os
import signal
import sys

from .errors import Terminated          # a leaf module without imports: cheap

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores():
    """Under an MPI launcher, give each rank of this node its share of the cores
    (unless the user set the thread counts): ranks that each start one thread per
    core oversubscribe the node and their spinning thread pools slow a run many
    times over.  Must run before numpy and numba are imported."""
    local = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") \
        or os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("PMI_SIZE")
    if not local or not local.isdigit() or int(local) <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = str(max(1, cores // int(local)))
    for var in THREAD_VARS:
        os.environ.setdefault(var, share)


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv=None):
    share_cores()
    # SIGTERM becomes an exception from the first moment (its default would kill the
    # process with no word); a run installs its own handling while it runs
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from .cli import main as cli_main  # inside the guard on purpose: see the module docstring
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the run started; nothing was written\n")
        sys.exit(130)
    except Terminated:
        sys.stderr.write("terminated (SIGTERM) before the run started; nothing was written\n")
        sys.exit(143)
    try:
        return cli_main(argv)
    except SystemExit as e:
        if e.code in (130, 143):
            # an interrupted command has printed its line and closed its files; Python's
            # shutdown would first wait for worker threads to finish their chunks
            from .runner import end_process
            end_process(e.code)
        raise


if __name__ == "__main__":
    main()
