"""Simulation: named ensembles, an ordered schedule of moves, observables.

Loop order of one step t (HOOMD-blue's ``Simulation.run`` idea, written down so that
"frame t" has one meaning):

1. every scheduled move whose ``every`` divides t runs, in schedule order:
   ``stats = move(ensemble, stream.substream(slot), t)``; the ensemble is then
   checked for NaN / Inf (``DivergenceError`` names ensemble, step and move);
2. ``t`` becomes ``t + 1``;
3. every observable whose ``every`` divides the new step is recorded.

Each schedule slot draws from its own stream id, so two moves of one step never
share random numbers, and a run is a pure function of (seed, config, n_steps).
"""
import numbers

import numpy as np

from .backend import array_module, to_numpy
from .ensemble import Ensemble
from .errors import DivergenceError
from .random import MAX_STEP, Stream


def _every(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1; got {value!r}")
    return int(value)


class Slot:
    """One scheduled move: ``move`` applied to ``ensemble`` every ``every`` steps."""

    def __init__(self, index, move, ensemble, every, name):
        self.index = index
        self.move = move
        self.ensemble = ensemble
        self.every = every
        self.name = name
        self.stats = []          # list of (step, dict)

    def __repr__(self):
        return f"Slot({self.name!r}: {self.move!r} on {self.ensemble!r} every {self.every})"


class Simulation:
    """Parameters
    ----------
    ensembles : dict name -> Ensemble, optional
    seed : int in [0, 2**32)
    check_every : int >= 1; the NaN/Inf check runs after a move every this many steps
    """

    def __init__(self, ensembles=None, seed=0, check_every=1):
        self.stream = Stream(seed)
        self.seed = int(seed)
        self.ensembles = {}
        self.slots = []
        self.observables = {}
        self._observers = []
        self.step = 0
        self.check_every = _every(check_every, "check_every")
        for name, ens in (ensembles or {}).items():
            self.add_ensemble(name, ens)

    def add_ensemble(self, name, ensemble):
        if not isinstance(name, str) or not name:
            raise ValueError(f"ensemble names must be non-empty strings; got {name!r}")
        if name in self.ensembles:
            raise ValueError(f"an ensemble named {name!r} already exists")
        if not isinstance(ensemble, Ensemble):
            raise ValueError(f"ensemble {name!r} must be a particleflow.Ensemble; got {type(ensemble).__name__}")
        if ensemble.name is None:
            ensemble.name = name
        self.ensembles[name] = ensemble
        return self

    def schedule(self, move, ensemble, every=1, name=None):
        """Append ``move`` acting on the ensemble named ``ensemble``."""
        if ensemble not in self.ensembles:
            raise ValueError(f"unknown ensemble {ensemble!r}; known: {', '.join(self.ensembles) or 'none'}")
        if not callable(move):
            raise ValueError(f"move must be callable as move(ensemble, stream, step); got {move!r}")
        name = name or f"{type(move).__name__.lower()}_{len(self.slots)}"
        if any(s.name == name for s in self.slots):
            raise ValueError(f"a scheduled move named {name!r} already exists")
        self.slots.append(Slot(len(self.slots), move, ensemble, _every(every, "every"), name))
        return self

    def observe(self, name, fn, every=1):
        """Record ``fn(ensembles) -> scalar or array`` every ``every`` steps as ``name``."""
        if name in self.observables:
            raise ValueError(f"an observable named {name!r} already exists")
        if not callable(fn):
            raise ValueError(f"observable {name!r} must be callable fn(ensembles)")
        self.observables[name] = {"steps": [], "values": []}
        self._observers.append((name, fn, _every(every, "every")))
        return self

    def run(self, n_steps, progress=None):
        """Advance ``n_steps`` steps.  ``progress``: optional callable
        ``progress(step, n_done, n_steps, last_stats)`` called after each step."""
        n_steps = _every(n_steps, "n_steps") if n_steps != 0 else 0
        if self.step + n_steps > MAX_STEP:
            raise ValueError(f"runs are limited to {MAX_STEP} steps (the Philox step counter)")
        for k in range(n_steps):
            t = self.step
            last = {}
            for slot in self.slots:
                if t % slot.every:
                    continue
                ens = self.ensembles[slot.ensemble]
                stats = slot.move(ens, self.stream.substream(slot.index), t)
                if t % self.check_every == 0:
                    self._check_finite(ens, slot, t)
                stats = stats or {}
                slot.stats.append((t, stats))
                last[slot.name] = stats
            self.step = t + 1
            for name, fn, every in self._observers:
                if self.step % every == 0:
                    rec = self.observables[name]
                    rec["steps"].append(self.step)
                    rec["values"].append(to_numpy(fn(self.ensembles)))
            if progress is not None:
                progress(self.step, k + 1, n_steps, last)
        return self

    @staticmethod
    def _check_finite(ens, slot, t):
        xp = array_module(ens.x)
        if not bool(xp.isfinite(ens.x).all()):
            raise DivergenceError(slot.ensemble, t, slot.name)
        if ens.log_weights is not None and bool(xp.isnan(ens.log_weights).any()):
            raise DivergenceError(slot.ensemble, t, slot.name, "log-weights")

    def stats(self, slot_name, key):
        """(steps [k], values [k]) of statistic ``key`` of the slot named ``slot_name``."""
        for s in self.slots:
            if s.name == slot_name:
                steps = [t for t, d in s.stats if key in d]
                vals = [d[key] for t, d in s.stats if key in d]
                return np.asarray(steps), np.asarray(vals)
        raise ValueError(f"unknown slot {slot_name!r}; slots: {', '.join(s.name for s in self.slots)}")


def sample(energy, x0, move, n_steps, seed=0, thin=1):
    """Run one move on one ensemble and return the stacked positions.

    Parameters
    ----------
    energy : Energy
    x0 : array [n, *event_shape] (numpy or CuPy) of initial positions
    move : a Move bound to ``energy`` (``pf.moves.MALA(energy, 0.1)``), or a callable
        ``energy -> Move`` (``functools.partial(pf.moves.HMC, step_size=0.1, n_leapfrog=10)``)
    n_steps, thin : int >= 1; frames are taken after steps thin, 2 thin, ...
    Returns
    -------
    array [n_steps // thin, n, *event_shape] on x0's backend.

    Example
    -------
    >>> import numpy as np, particleflow as pf
    >>> e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    >>> xs = pf.sample(e, np.zeros((100, 2)), pf.moves.MALA(e, 0.5), n_steps=10, seed=1)
    >>> xs.shape
    (10, 100, 2)
    """
    from .moves.base import Move
    if not isinstance(move, Move):
        if not callable(move):
            raise ValueError("move must be a Move or a callable energy -> Move")
        move = move(energy)
        if not isinstance(move, Move):
            raise ValueError("the move factory must return a particleflow Move")
    if getattr(move, "energy", None) is not None and move.energy is not energy:
        raise ValueError("move is bound to a different energy than the one given to sample()")
    n_steps = _every(n_steps, "n_steps")
    thin = _every(thin, "thin")
    ens = Ensemble(x0, name="chains")
    sim = Simulation({"chains": ens}, seed=seed).schedule(move, "chains")
    xp = array_module(ens.x)
    frames = xp.empty((n_steps // thin,) + ens.x.shape, dtype=ens.dtype)
    for f in range(n_steps // thin):
        sim.run(thin)
        frames[f] = sim.ensembles["chains"].x
    return frames

