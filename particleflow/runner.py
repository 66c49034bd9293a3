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
    def __init__(self, signum):
        self.signum = signum
        self.exit_code = 128 + signum


def checkpoint_path(out):
    return out + ".ckpt"


class Checkpointer(Observer):
    """Writes ``path`` every ``every`` steps and at step ``last``, after flushing the
    trajectory (``writer``), so the checkpoint's frame counts are on disk."""

    def __init__(self, path, writer, every, last, config_text, seed):
        self.path, self.writer, self.every, self.last = path, writer, every, last
        self.config_text, self.seed = config_text, seed

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


def execute(cfg, config_text, out, *, start=None, progress=None, base_dir="."):
    """Run (or continue, with ``start`` = a checkpoint from ``read_checkpoint``) the
    config; write ``out`` and ``out + '.ckpt'``.  Returns the Simulation.  Raises
    ``Interrupted``.  ``progress(sim, n_total)`` is called after every step."""
    exp, sim = build(cfg, base_dir, restore=start is not None)
    if start is not None:
        sim.load_state_dict(start["state"])
    n_total = exp.steps(cfg)
    seed = cfg["run"]["seed"]
    params = dict(config=config_text, seed=seed, backend=str(sim.device), estimator=cfg["estimator"])
    params |= exp.parameters(cfg)
    writer = sim.attach(TrajectoryObserver(out, params, exp.compression(cfg),
                                           resume_frames=None if start is None else start["frames"]))
    ckpt = sim.attach(Checkpointer(checkpoint_path(out), writer, exp.checkpoint_every(cfg), n_total,
                                   config_text, seed))
    tick = None if progress is None else (lambda s: progress(s, n_total))
    with _SignalGuard() as guard:
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


def load_config_file(path):
    if not os.path.exists(path):
        raise ConfigError(f"no such config file: {path}")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return text, loads(text, path)
