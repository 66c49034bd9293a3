"""Observers: what a Simulation reports to while it runs.

A Simulation declares what it records (``Simulation.observe``, ``observe_moves``,
``trajectory``) and calls every attached observer with the same data, so a file
writer and an in-memory recorder see exactly the same frames and values:

    start(sim, spec)            once, before the first step of the first ``run``;
                                ``spec.ensembles``: the ensembles that get frames,
                                ``spec.observables``: name -> example value (shape, dtype)
    record(step, frames, values)   at step 0 (the initial state) and after every step at
                                which a frame or an observable is due: ``frames`` maps
                                ensemble names to Ensembles, ``values`` names to values
    after_step(sim)             after every step (checkpoints use it)
    finish(sim)                 once the run is complete (``sim.results`` is final)
    close()                     always, also after an error or an interruption

``Recorder`` keeps everything in memory with the reading API of a trajectory file
(``pf.io.open_run``): ``ensembles[name].positions / .steps``, ``observables[name].steps
/ .values``, ``results``.
"""
import numpy as np

from .backend import to_numpy


class Observer:
    """Base class with no-op hooks."""

    def start(self, sim, spec):
        pass

    def record(self, step, frames, values):
        pass

    def after_step(self, sim):
        pass

    def finish(self, sim):
        pass

    def close(self):
        pass


class Spec:
    """What a Simulation records: ``ensembles`` (name -> Ensemble, the ones with
    frames), ``observables`` (name -> example value)."""

    def __init__(self, ensembles, observables):
        self.ensembles = ensembles
        self.observables = observables


class _Series:
    def __init__(self):
        self._steps, self._values = [], []

    @property
    def steps(self):
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def values(self):
        return np.asarray(self._values)


class RecordedEnsemble:
    """Frames of one ensemble: ``positions`` [T, n, ...], ``steps`` [T], ``log_weights``
    and ``signs`` (or None), ``ids``."""

    def __init__(self):
        self._steps, self._x, self._lw, self._signs, self._ids = [], [], [], [], []

    def _add(self, step, ens):
        self._steps.append(step)
        self._x.append(to_numpy(ens.x).copy())
        self._ids.append(to_numpy(ens.ids).copy())
        if ens.log_weights is not None:
            self._lw.append(to_numpy(ens.log_weights).copy())
        if ens.signs is not None:
            self._signs.append(to_numpy(ens.signs).copy())

    @property
    def steps(self):
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def positions(self):
        return np.stack(self._x) if self._x else np.empty((0,))

    @property
    def ids(self):
        return np.stack(self._ids) if self._ids else np.empty((0,), np.int64)

    @property
    def log_weights(self):
        return np.stack(self._lw) if self._lw else None

    @property
    def signs(self):
        return np.stack(self._signs) if self._signs else None


class Recorder(Observer):
    """In-memory observer.  ``frames=False`` records observables only (every
    Simulation has one such recorder, ``sim.recorder``)."""

    def __init__(self, frames=True):
        self.frames = bool(frames)
        self.ensembles = {}
        self.observables = {}
        self.results = {}

    def start(self, sim, spec):
        if self.frames:
            for name in spec.ensembles:
                self.ensembles.setdefault(name, RecordedEnsemble())
        for name in spec.observables:
            self.observables.setdefault(name, _Series())

    def record(self, step, frames, values):
        if self.frames:
            for name, ens in frames.items():
                self.ensembles[name]._add(step, ens)
        for name, v in values.items():
            s = self.observables[name]
            s._steps.append(step)
            s._values.append(np.array(to_numpy(v)))

    def finish(self, sim):
        self.results = dict(sim.results)
