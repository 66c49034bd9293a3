"""Runs from configs, for every experiment alike: build the Simulation, attach the
trajectory writer and the checkpointer, run, store the results; resume.

    experiment.build(cfg) -> Simulation
      + TrajectoryObserver (H5MD file, created before step 0)
      + Checkpointer (every ``checkpoint_every`` steps and at the end: flush, then an
        atomic checkpoint of ``sim.state_dict()``)
    sim.run(steps)  ->  sim.finish(experiment.results(sim, cfg))  (the writer stores them)

SIGINT / SIGTERM set a flag checked after every step: that step finishes, the
trajectory is flushed and closed, a checkpoint is written, and ``Interrupted`` is
raised (the CLI exits with 130 / 143).

Resume: read the checkpoint, rebuild the Simulation from the stored config (static
ensembles from the seed), load its state, copy the trajectory's frames up to the
checkpoint into a fresh file (atomically replacing the old one, which a killed
writer leaves flagged as open), and continue.  The final state equals an
uninterrupted run's bitwise (tested).
"""
import atexit
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading

from . import experiments
from .config import ConfigError, apply_overrides, dumps, loads
from .errors import DivergenceError
from .io.checkpoint import checkpoint_steps, read_checkpoint, write_checkpoint
from .io.files import output_lock, temporary_beside
from .io.h5md import TrajectoryObserver, link_shards, open_run
from .observers import Observer
from .parallel import shard_range, world
from .status import phase


class Interrupted(Exception):
    """SIGINT / SIGTERM ended a run; ``started``: whether it had begun writing."""

    def __init__(self, signum, started=True):
        self.signum = signum
        self.started = started
        self.exit_code = 128 + signum


def checkpoint_path(out, rank=0):
    """Rank 0's checkpoint (the run's) is ``OUT.ckpt``; another rank's sits with its shard."""
    return out + ".ckpt" if rank == 0 else os.path.splitext(shard_path(out, rank))[0] + ".ckpt"


def shard_path(out, rank):
    """The trajectory shard of rank ``rank`` of a run over several processes."""
    return os.path.join(out + ".shards", f"rank-{rank:04d}.h5")


SHARD_PREFIX = "shard:"       # checkpoint frame counts of a rank's shard file


class _Writers:
    """The trajectory writers of one rank (the run file's, this rank's shard file's)
    as one: flush both, frame counts of the shard's under ``SHARD_PREFIX``."""

    def __init__(self, run=None, shard=None):
        self.run, self.shard = run, shard

    def flush(self):
        for w in (self.run, self.shard):
            if w is not None:
                w.flush()

    def frame_counts(self):
        out = dict(self.run.frame_counts()) if self.run is not None else {}
        if self.shard is not None:
            out |= {SHARD_PREFIX + k: v for k, v in self.shard.frame_counts().items()}
        return out


class Checkpointer(Observer):
    """Writes ``path`` every ``every`` steps and at step ``last``, after flushing the
    trajectory (``writer``), so the checkpoint's frame counts are on disk."""

    def __init__(self, path, writer, every, last, config_text, seed, fresh=True, ranks=1, sharded=False):
        self.path, self.writer, self.every, self.last = path, writer, every, last
        self.config_text, self.seed, self.fresh, self.ranks = config_text, seed, fresh, ranks
        self.sharded = sharded

    def start(self, sim, spec):
        if self.fresh:               # a new run replaces the old one's checkpoints when it starts
            for p in (self.path, self.path + ".prev"):
                if os.path.exists(p):
                    os.remove(p)

    def after_step(self, sim):
        if sim.step % self.every == 0 or sim.step == self.last:
            self.save(sim)

    def save(self, sim):
        self.writer.flush()
        write_checkpoint(self.path, sim.state_dict(), self.writer.frame_counts(), self.config_text, self.seed,
                         ranks=self.ranks, sharded=self.sharded)


class _SignalGuard:
    """SIGINT / SIGTERM handling of a run.  While ``immediate`` (building the experiment:
    data, sigma selection, kernels; nothing written yet) a signal ends the run at once
    with ``Interrupted(started=False)``; afterwards it only sets ``signum``, and the loop
    stops after the step in progress, flushes and checkpoints.  While ``interruptible``
    (computing the end-of-run values of a finished loop) a signal raises
    ``Interrupted(started=True)`` at once.

    ``exit_now(signum, stderr_fd, started)`` (the command line's ``_exit_now``) ends the
    process instead, from a thread: during the build at once; while ``interruptible``
    if the main thread is inside numba's compiler, after ``close_files()``.  Python
    runs a signal handler only between bytecodes of the main thread, which one numpy
    call or one LLVM optimisation may hold for a second or more, but its C-level
    handler writes the signal number to the wake-up fd at once, and a thread reading
    that fd runs while the main thread is in C code that released the GIL (numpy's
    loops, llvmlite's calls)."""

    def __init__(self, exit_now=None):
        self.signum = None
        self._immediate = False
        self._interruptible = False          # after the loop: a signal stops the end-of-run values
        self.exit_now = exit_now
        self.close_files = None
        # the watcher's decision vs. the main thread's phase changes (re-entrant: the
        # main thread's handler may run while the main thread holds it)
        self._lock = threading.RLock()
        self._old = {}
        self._watcher = None
        self._stderr = None

    @property
    def immediate(self):
        return self._immediate

    @immediate.setter
    def immediate(self, value):
        with self._lock:                     # not while the watcher is ending the process
            self._immediate = bool(value)

    @property
    def interruptible(self):
        return self._interruptible

    @interruptible.setter
    def interruptible(self, value):
        with self._lock:
            self._interruptible = bool(value)

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
            with self._lock:
                if self._immediate and self.exit_now is not None:
                    self.exit_now(signum, self._stderr, False)
                if not (self._immediate or self._interruptible):
                    return
                if _in_compiler(frame):
                    # an exception raised inside numba's compiler or an llvmlite callback
                    # is swallowed or rewrapped: look again in 50 ms, until the main
                    # thread is in plain Python again
                    self._old.setdefault(signal.SIGALRM, signal.signal(signal.SIGALRM,
                                                                       lambda s, f: handler(signum, f)))
                    signal.setitimer(signal.ITIMER_REAL, 0.05)
                    return
                started = not self._immediate
                self._immediate = self._interruptible = False
            raise Interrupted(signum, started=started)
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, handler)
        if self.exit_now is not None and threading.current_thread() is threading.main_thread():
            # the terminal's stderr as it is now: compiling a kernel points fd 2 at /dev/null
            self._stderr = os.dup(2)
            self._start_watcher()
        return self

    def _watched(self, signum):
        main = sys._current_frames().get(threading.main_thread().ident)
        with self._lock:
            if self._immediate:
                self.exit_now(signum, self._stderr, False)        # does not return
            if self._interruptible and self.close_files is not None and _in_compiler(main):
                self.close_files()
                self.exit_now(signum, self._stderr, True)

    def _start_watcher(self):
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._wakeup = (r, w, signal.set_wakeup_fd(w, warn_on_full_buffer=False))

        def watch():
            while True:
                try:
                    data = os.read(r, 64)
                except OSError:
                    return
                if not data:
                    return
                for signum in data:
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        self._watched(signum)
        self._watcher = threading.Thread(target=watch, name="particleflow-signal-watch", daemon=True)
        self._watcher.start()

    def __exit__(self, *exc):
        if self._watcher is not None:
            r, w, old = self._wakeup
            signal.set_wakeup_fd(old)
            os.close(w)                      # the watcher reads end-of-file and returns
            self._watcher.join()
            os.close(r)
            os.close(self._stderr)
        if signal.SIGALRM in self._old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in self._old.items():
            signal.signal(s, h)


def _exit_now(out, lock_path):
    """``exit_now`` of a command-line run: the one line the command line prints for
    ``Interrupted``, the output's lock file removed, exit handlers run (the kernel
    cache records what it holds; numba writes its cache files atomically), then the
    process ends with 128 + signal without unwinding the main thread's stack (an
    exception raised inside numba's compiler or an llvmlite callback would be
    swallowed or rewrapped)."""
    def exit_now(signum, stderr, started):
        line = interrupted_line(out, started, signum)
        with contextlib.suppress(OSError):      # not sys.stderr: the signal may interrupt a write to it
            os.write(stderr, (line + "\n").encode())
        if lock_path is not None:
            with contextlib.suppress(OSError):
                os.remove(lock_path)
        end_process(128 + signum)
    return exit_now


def end_process(code):
    """End the process now with ``code``: standard streams flushed and exit handlers
    run (the kernel cache records what it holds), but no wait for worker threads (a
    network chunk in progress takes seconds) and no unwinding of the main thread."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    os._exit(code)


def interrupted_line(out, started, signum=signal.SIGINT, resumed=False):
    """What the command line says when a run into ``out`` was interrupted."""
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    if not started:
        return f"{what} before the run started; nothing was written"
    if resumed:
        return f"{what}: checkpointed; continue with: particleflow resume {out}"
    return f"{what}: trajectory flushed and checkpointed at {out}; continue with: particleflow resume {out}"


def _in_compiler(frame):
    """Whether numba or llvmlite code is on the stack of ``frame``."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(("numba", "llvmlite")):
            return True
        frame = frame.f_back
    return False


def build(cfg, base_dir=".", restore=False):
    """(experiment, Simulation) of a validated config."""
    exp = experiments.get(cfg["estimator"])
    return exp, exp.build(cfg, base_dir, restore)


def execute(cfg, config_text, out, *, start=None, progress=None, base_dir=".", max_memory=None, comm=None,
            exit_on_signal=False):
    """Run (or continue, with ``start`` = a checkpoint from ``read_start``) the
    config; write ``out`` and ``out + '.ckpt'``.  Returns the Simulation.  Raises
    ``Interrupted``.  ``progress(sim, n_total)`` is called after every step.  A config
    whose estimated memory exceeds ``max_memory`` bytes (default: this machine's
    memory, or ``PARTICLEFLOW_MAX_MEMORY``) is refused before anything is allocated.

    ``comm`` (default ``parallel.world()``): on several ranks the experiment's
    ensembles are sharded (``Simulation.distribute``), every rank writes its shard
    file ``shard_path(out, rank)`` and its checkpoint, rank 0 writes the run file
    (observables, replicated ensembles, results) and finally links the shards into
    it as virtual datasets.

    Rank 0 holds ``io.files.output_lock(out)`` for the whole run, taken before anything
    is created or removed: a second run or resume into the same output is refused.

    ``exit_on_signal`` (the command line): SIGINT / SIGTERM while the experiment is
    built (before anything is written) ends the process at once with ``interrupted_line``
    and exit code 128 + signal; otherwise ``Interrupted(started=False)`` is raised
    when the main thread next runs Python code outside numba's compiler.
    """
    comm = world() if comm is None else comm
    lock, busy = contextlib.ExitStack(), None
    if comm.rank == 0:
        try:
            lock.enter_context(output_lock(out))
        except ValueError as e:
            busy = e
    if comm.size > 1 and comm.any(busy is not None):             # every rank stops together
        raise busy or ValueError(f"{out} is being written by another particleflow process")
    if busy is not None:
        raise busy
    with lock:
        hard = _exit_now(out, out + ".lock" if comm.rank == 0 else None) if exit_on_signal else None
        return _execute(cfg, config_text, out, start, progress, base_dir, max_memory, comm, hard)


def _execute(cfg, config_text, out, start, progress, base_dir, max_memory, comm, exit_now=None):
    exp = experiments.get(cfg["estimator"])
    exp.resolve(cfg, base_dir)
    check_memory(exp.memory_bytes(cfg), max_memory)
    comm.barrier()            # every rank has checked its outputs before any is written
    # signals are caught from here on: building may compile kernels, and a Ctrl-C
    # inside numba's compiler callbacks would otherwise be swallowed
    with _SignalGuard(exit_now) as guard:
        guard.immediate = True
        with phase(f"building {cfg['estimator']}: data, ensembles, moves"):
            sim = exp.build(cfg, base_dir, restore=start is not None)
        if comm.size > 1:
            sim.distribute(comm, reduction=reduction_mode(), shard=exp.shards)
        if start is not None:
            # a run that split no ensemble holds its whole state in rank 0's checkpoint, and
            # its results are the same for any number of processes: any number resumes it
            if start.get("ranks", 1) != comm.size and (start.get("sharded", True) or sim.sharded()):
                raise ConfigError(f"{out} was checkpointed by a run over {start.get('ranks', 1)} processes that split "
                                  f"its ensembles between them; resume it with the same number "
                                  f"(mpiexec -n {start.get('ranks', 1)})")
            sim.load_state_dict(start["state"])
        guard.immediate = False
        if guard.signum is not None:
            raise Interrupted(guard.signum, started=False)
        n_total = exp.steps(cfg)
        seed = cfg["run"]["seed"]
        params = dict(config=config_text, seed=seed, backend=str(sim.device), estimator=cfg["estimator"],
                      ranks=comm.size)
        params |= exp.parameters(cfg)
        # one id for the run file and its shards, so that a reader can tell that a
        # shard belongs to this run: a digest of what determines every bit of the run
        # (two runs with the same id write the same shards), so files stay reproducible
        params["run_id"] = hashlib.sha256(f"{config_text}\0{seed}\0{comm.size}".encode()).hexdigest()[:16]
        sharded = sim.sharded()
        frames = None if start is None else start["frames"]
        run_writer = shard_writer = None
        if comm.rank == 0:
            keep = None if not sharded else [k for k in sim.ensembles if k not in sharded]
            run_writer = sim.attach(TrajectoryObserver(
                out, params, exp.compression(cfg), ensembles=keep,
                resume_frames=None if frames is None else {k: v for k, v in frames.items()
                                                           if not k.startswith(SHARD_PREFIX)}))
        if sharded:
            shard_writer = sim.attach(TrajectoryObserver(
                shard_path(out, comm.rank), params | {"rank": comm.rank}, exp.compression(cfg),
                ensembles=list(sharded), observables=False, agree=comm.any,
                resume_frames=None if frames is None else {k[len(SHARD_PREFIX):]: v for k, v in frames.items()
                                                           if k.startswith(SHARD_PREFIX)}))
        ckpt = None
        if comm.rank == 0 or sharded:
            ckpt = sim.attach(Checkpointer(checkpoint_path(out, comm.rank), _Writers(run_writer, shard_writer),
                                           exp.checkpoint_every(cfg), n_total, config_text, seed,
                                           fresh=start is None, ranks=comm.size, sharded=bool(sharded)))
        tick = None if progress is None or comm.rank else (lambda s: progress(s, n_total))
        stopped = []

        def stop():
            flag = guard.signum is not None
            if comm.size > 1:          # every rank stops after the same step
                flag = comm.any(flag)
            if flag:
                stopped.append(True)
            return flag
        # a fresh run sets the old output (run file, checkpoints, shards) aside until its
        # first step is done (the writers create their files when the run starts): a run
        # that fails before that restores it untouched and leaves no file of its own.
        # Over several processes rank 0 moves them and every rank learns where to
        guarded = start is None
        aside = _set_aside_together(out, comm) if guarded else []
        step0 = sim.step
        try:
            ok = False
            try:
                try:
                    if sharded:
                        os.makedirs(out + ".shards", exist_ok=True)
                    if sim.step < n_total:
                        with phase(f"running {n_total - sim.step} steps (a first run compiles kernels in the "
                                   "first step; they are cached for the next)"):
                            sim.run(n_total - sim.step, progress=tick, stop=stop)
                    else:
                        sim.start()
                    if stopped and sim.step < n_total:
                        if ckpt is not None and sim.step % ckpt.every:
                            ckpt.save(sim)
                        ok = True
                        raise Interrupted(guard.signum or signal.SIGTERM)
                    # the end-of-run values may take seconds (held-out losses, sampling):
                    # a signal stops them; the trajectory is complete and checkpointed,
                    # and `particleflow resume` computes them (over several processes
                    # every rank must stop at the same point, so they run to the end)
                    guard.close_files = sim.close
                    guard.interruptible = comm.size == 1
                    with phase("computing the end-of-run results"):
                        results = exp.results(sim, cfg)
                    guard.interruptible = False
                    if guard.signum is not None and comm.size == 1:
                        ok = True
                        raise Interrupted(guard.signum)
                    sim.finish(results)
                    ok = True
                except (Interrupted, DivergenceError):
                    raise                  # every rank raises these together
                except BaseException as e:
                    if comm.size > 1:      # possibly this rank alone: the others would wait forever
                        sys.stderr.write(f"error on rank {comm.rank} of {comm.size}: {type(e).__name__}: {e}; "
                                         "aborting every rank\n")
                        sys.stderr.flush()
                        if guarded and sim.step == step0:   # the abort ends every rank: put the old output back first
                            with contextlib.suppress(OSError):
                                _remove_outputs(out)
                                _restore(aside)
                        with contextlib.suppress(OSError):  # rank 0's lock file: it ends too
                            os.remove(out + ".lock")
                        comm.abort(2 if isinstance(e, (OSError, ValueError, MemoryError)) else 1)
                    raise
            finally:
                sim.close()
                if sharded and ok:
                    comm.barrier()
                    if comm.rank == 0:
                        link_shards(out, {k: (s.n, [(shard_path(out, r), *shard_range(s.n, r, comm.size))
                                                    for r in range(comm.size)]) for k, s in sharded.items()})
                    comm.barrier()
        except BaseException:
            if guarded and sim.step == step0:            # failed before its first step was done
                comm.barrier()                           # (every rank together: an interruption)
                if comm.rank == 0:
                    _remove_outputs(out)
                    _restore(aside)
                aside = []
            raise
        finally:
            if comm.rank == 0:
                _discard(aside)
    return sim


OUTPUT_FILES = ("", ".ckpt", ".ckpt.prev", ".shards")       # .shards: a folder


def _set_aside(out):
    """Move an existing output, its checkpoints and its shards folder to hidden names
    beside them; returns [(path, hidden)]."""
    moved = []
    for suffix in OUTPUT_FILES:
        p = out + suffix
        if os.path.lexists(p):
            if os.path.isdir(p) and not os.path.islink(p):
                hidden = tempfile.mkdtemp(prefix="." + os.path.basename(p) + ".", suffix=".old",
                                          dir=os.path.dirname(os.path.abspath(p)))
            else:
                hidden = temporary_beside(p, ".old")
            os.replace(p, hidden)            # over the empty placeholder of that name
            moved.append((p, hidden))
    return moved


def _set_aside_together(out, comm):
    """``_set_aside`` on rank 0; every rank gets its list (or its error)."""
    moved, error = [], None
    if comm.rank == 0:
        try:
            moved = _set_aside(out)
        except OSError as e:
            error = f"cannot move the old output {out} aside: {e.strerror or e}"
    if comm.size > 1:
        moved, error = comm.allgather((moved, error))[0]
    if error:
        raise ValueError(error)
    return moved


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _remove_outputs(out):
    for suffix in OUTPUT_FILES:
        _remove(out + suffix)


def _restore(moved):
    for p, hidden in moved:
        os.replace(hidden, p)


def _discard(moved):
    for _, hidden in moved:
        _remove(hidden)


def reduction_mode():
    """``PARTICLEFLOW_REDUCTION``: "ordered" (default; bitwise independent of the number
    of ranks) or "allreduce" (MPI_Allreduce of the ranks' sums: faster on many ranks)."""
    mode = os.environ.get("PARTICLEFLOW_REDUCTION", "ordered")
    if mode not in ("ordered", "allreduce"):
        raise ConfigError(f"PARTICLEFLOW_REDUCTION must be 'ordered' or 'allreduce'; got {mode!r}")
    return mode


def read_start(out, comm=None):
    """The checkpoint to resume ``out`` from on this rank.  On several ranks every
    rank reads its own (rank 0's when the run shards nothing: a rank without a shard
    keeps no checkpoint) and the ranks agree on the latest step that all of them hold
    (a kill between two ranks' checkpoints leaves one rank a generation ahead)."""
    comm = world() if comm is None else comm
    if comm.size == 1:
        return read_checkpoint(checkpoint_path(out))
    own = checkpoint_path(out, comm.rank)
    path = own if os.path.exists(own) or os.path.exists(own + ".prev") else checkpoint_path(out)
    steps = comm.allgather(checkpoint_steps(path))
    common = set(steps[0]).intersection(*steps[1:])
    if not common:
        raise ValueError(f"the ranks' checkpoints of {out} share no step ({steps}); the run cannot be resumed")
    return read_checkpoint(path, step=max(common))


def machine_memory():
    """Bytes of physical memory (``PARTICLEFLOW_MAX_MEMORY`` overrides: bytes, or with a
    K / M / G / T suffix)."""
    env = os.environ.get("PARTICLEFLOW_MAX_MEMORY")
    if env:
        return parse_bytes(env, "PARTICLEFLOW_MAX_MEMORY")
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_bytes(text, what):
    units = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    t = str(text).strip().upper().removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        raise ConfigError(f"{what} must be a size such as 64G or 5e9; got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{what} must be positive; got {text!r}")
    return int(value * units[unit])


def check_memory(need, limit=None):
    """Refuse a run whose estimated memory ``need`` (bytes) exceeds ``limit``."""
    limit = machine_memory() if limit is None else limit
    if need > limit:
        raise ConfigError(f"this config needs about {need / 2 ** 30:.1f} GiB of memory but {limit / 2 ** 30:.1f} GiB "
                          "are available; reduce its sizes, or raise the limit with --max-memory "
                          "(PARTICLEFLOW_MAX_MEMORY) if the estimate is wrong for your machine")


def load_config_file(path):
    if not os.path.exists(path):
        raise ConfigError(f"no such config file: {path}")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return text, loads(text, path)


def default_out(config_path):
    """``<config dir>/out/<config name>.h5``: where a config's run goes by default."""
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), "out", f"{stem}.h5")


def run(config, out=None, *, overrides=(), force=False, progress=None):
    """Run a config from Python, as ``particleflow run`` does; returns the finished run,
    open for reading (``pf.io.Run``: use it in a ``with`` block).

    ``config``: a path to a TOML file (anything ending in ``.toml`` or naming an existing
    file) or the TOML text itself; ``out``: the trajectory path (default, for a file:
    ``<config dir>/out/<name>.h5``; required for text); ``overrides``: ``"key.path=value"``
    strings, as ``--set``; ``force``: replace an existing ``out`` (refused otherwise);
    ``progress(sim, n_total)``: called after every step.  A config with a ``[sweep]``
    table is refused: sweeps run from the command line."""
    is_file = str(config).endswith(".toml") or os.path.isfile(str(config))
    if is_file:
        text, raw = load_config_file(config)
        base_dir = os.path.dirname(os.path.abspath(config))
        out = default_out(config) if out is None else out
    else:
        text, raw, base_dir = config, loads(config), os.getcwd()
        if out is None:
            raise ValueError("out= is needed when the config is given as text")
    if isinstance(overrides, str):
        overrides = [overrides]
    raw = apply_overrides(raw, list(overrides))
    if "sweep" in raw:
        raise ConfigError("a [sweep] config runs from the command line (particleflow run); pf.run runs one config")
    cfg = experiments.validate(raw)
    out = os.fspath(out)
    if os.path.exists(out) and not force:
        raise ValueError(f"{out} exists; pass force=True to replace it, or choose another out=")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    execute(cfg, dumps(raw) if overrides else text, out, progress=progress, base_dir=base_dir)
    return open_run(out)


def _size(n_bytes):
    for unit, k in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n_bytes >= k:
            return f"{n_bytes / k:.1f} {unit}"
    return f"{int(n_bytes)} B"


def plan(cfg, base_dir="."):
    """Lines describing what ``execute`` would do with a validated config: the experiment,
    its ensembles (sizes, frames), the schedule, the steps, the memory and trajectory size
    estimates.  Builds the experiment (so it takes what building takes: data loading,
    sigma selection) but runs no step and writes nothing."""
    exp = experiments.get(cfg["estimator"])
    exp.resolve(cfg, base_dir)
    n_total = exp.steps(cfg)
    with phase(f"building {cfg['estimator']}: data, ensembles, moves"):
        sim = exp.build(cfg, base_dir)
    lines = [f"experiment: {cfg['estimator']} ({exp.description})",
             f"steps: {n_total}; checkpoint every {exp.checkpoint_every(cfg)}", "ensembles:"]
    frame_bytes = 0
    for name, e in sim.ensembles.items():
        every = sim._frames.get(name, "none")
        if name in sim._unrecorded:
            frames, what = 0, "static, not written"
        elif every == "none":
            frames, what = 0, "no frames"
        elif every is None:
            frames, what = 1, "initial frame only"
        else:
            frames, what = n_total // every + 1, f"a frame every {every} steps"
        per = e.x.nbytes + (e.ids.nbytes if e.ids is not None else 0)
        frame_bytes += frames * per
        lines.append(f"  {name:<12} {e.n} x {tuple(e.x.shape[1:])} {e.x.dtype}  {what} ({_size(frames * per)})")
    lines.append("schedule (per step, in order):")
    for slot in sim.slots:
        lines.append(f"  {slot.name:<20} {type(slot.move).__name__} on {slot.ensemble}"
                     + (f" every {slot.every} steps" if slot.every > 1 else ""))
    lines.append(f"memory estimate: {_size(exp.memory_bytes(cfg))} (this machine: {_size(machine_memory())})")
    lines.append(f"trajectory estimate: {_size(frame_bytes)} of frames before compression, plus observables")
    return lines
