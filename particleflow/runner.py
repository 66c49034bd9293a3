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
import os
import signal

from . import experiments
from .config import ConfigError, loads
from .io.checkpoint import write_checkpoint
from .io.h5md import TrajectoryObserver
from .observers import Observer


class Interrupted(Exception):
    """SIGINT / SIGTERM ended a run; ``started``: whether it had begun writing."""

    def __init__(self, signum, started=True):
        self.signum = signum
        self.started = started
        self.exit_code = 128 + signum


def checkpoint_path(out):
    return out + ".ckpt"


class Checkpointer(Observer):
    """Writes ``path`` every ``every`` steps and at step ``last``, after flushing the
    trajectory (``writer``), so the checkpoint's frame counts are on disk."""

    def __init__(self, path, writer, every, last, config_text, seed, fresh=True):
        self.path, self.writer, self.every, self.last = path, writer, every, last
        self.config_text, self.seed, self.fresh = config_text, seed, fresh

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
        write_checkpoint(self.path, sim.state_dict(), self.writer.frame_counts(), self.config_text, self.seed)


class _SignalGuard:
    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def build(cfg, base_dir=".", restore=False):
    """(experiment, Simulation) of a validated config."""
    exp = experiments.get(cfg["estimator"])
    return exp, exp.build(cfg, base_dir, restore)


def execute(cfg, config_text, out, *, start=None, progress=None, base_dir=".", max_memory=None):
    """Run (or continue, with ``start`` = a checkpoint from ``read_checkpoint``) the
    config; write ``out`` and ``out + '.ckpt'``.  Returns the Simulation.  Raises
    ``Interrupted``.  ``progress(sim, n_total)`` is called after every step.  A config
    whose estimated memory exceeds ``max_memory`` bytes (default: this machine's
    memory, or ``PARTICLEFLOW_MAX_MEMORY``) is refused before anything is allocated."""
    exp = experiments.get(cfg["estimator"])
    check_memory(exp.memory_bytes(cfg), max_memory)
    # signals are caught from here on: building may compile kernels, and a Ctrl-C
    # inside numba's compiler callbacks would otherwise be swallowed
    with _SignalGuard() as guard:
        sim = exp.build(cfg, base_dir, restore=start is not None)
        if start is not None:
            sim.load_state_dict(start["state"])
        if guard.signum is not None:
            raise Interrupted(guard.signum, started=False)
        n_total = exp.steps(cfg)
        seed = cfg["run"]["seed"]
        params = dict(config=config_text, seed=seed, backend=str(sim.device), estimator=cfg["estimator"])
        params |= exp.parameters(cfg)
        writer = sim.attach(TrajectoryObserver(out, params, exp.compression(cfg),
                                               resume_frames=None if start is None else start["frames"]))
        ckpt = sim.attach(Checkpointer(checkpoint_path(out), writer, exp.checkpoint_every(cfg), n_total,
                                       config_text, seed, fresh=start is None))
        tick = None if progress is None else (lambda s: progress(s, n_total))
        try:
            if sim.step < n_total:
                sim.run(n_total - sim.step, progress=tick, stop=lambda: guard.signum is not None)
            else:
                sim.start()
            if guard.signum is not None and sim.step < n_total:
                if sim.step % ckpt.every:
                    ckpt.save(sim)
                raise Interrupted(guard.signum)
            sim.finish(exp.results(sim, cfg))
        finally:
            sim.close()
    return sim


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
