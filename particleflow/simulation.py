"""Simulation: named ensembles, an ordered schedule of moves, what to record, observers.

Loop order of one step t (HOOMD-blue's ``Simulation.run`` idea, written down so that
"frame t" has one meaning):

1. every scheduled move whose ``every`` divides t runs, in schedule order:
   ``stats = move(ensemble, stream.substream(slot), t)``; the ensemble is then
   checked for NaN / Inf (``DivergenceError`` names ensemble, step and move);
2. ``t`` becomes ``t + 1``;
3. the frames and observables due at the new step are computed once and handed to
   every observer (``observers.py``); then every observer's ``after_step`` runs.

Before the first step the observers are started and the initial state is recorded
as step 0.  Each schedule slot draws from its own stream id, so two moves of one
step never share random numbers, and a run is a pure function of (seed, schedule,
n_steps).

State: ``state_dict()`` holds the step, every ensemble, every move's state (optimiser
moments and step counts, persistent chains) and every object registered with
``register_state`` (learnable energies); ``load_state_dict`` restores it, and the
run continues bitwise as if it had not stopped.
"""
import numbers
import re
import warnings
import weakref

import numpy as np

from .backend import get_device
from .ensemble import Ensemble
from .errors import DivergenceError
from .kernels._jit import record_kernel_cache
from .moves.base import Move
from .observers import Recorder, Spec
from .parallel import Shard, n_blocks, shard_range
from .random import MAX_STEP, StreamBlock, Stream


ENSEMBLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _every(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1; got {value!r}")
    return int(value)


class Slot:
    """One scheduled move: ``move`` applied to ``ensemble`` every ``every`` steps;
    ``last`` holds the statistics of its latest call."""

    def __init__(self, index, move, ensemble, every, name):
        self.index = index
        self.move = move
        self.ensemble = ensemble
        self.every = every
        self.name = name
        self.last = {}

    @property
    def stats_keys(self):
        return tuple(getattr(self.move, "stats_keys", ()))

    def __repr__(self):
        return f"Slot({self.name!r}: {self.move!r} on {self.ensemble!r} every {self.every})"


class Simulation:
    """Parameters
    ----------
    ensembles : dict name -> Ensemble, optional
    seed : int in [0, 2**32)
    check_every : int >= 1; the NaN/Inf check runs after a move every this many steps
    device : "cpu", "gpu", "cudasim" or a ``particleflow.backend.Device``; default: the
        device of the first ensemble's arrays.  Every ensemble must live on it.
    """

    def __init__(self, ensembles=None, seed=0, check_every=1, device=None):
        self.stream = Stream(seed)
        self.seed = int(seed)
        self.device = None if device is None else get_device(device)
        self.ensembles = {}
        self.slots = []
        self.step = 0
        self.check_every = _every(check_every, "check_every")
        self.results = {}
        self.recorder = Recorder(frames=False)
        self.observers = [self.recorder]
        self._observables = []             # (name or None, fn, every, initial)
        self._moves_every = None
        self._frames = {}                  # ensemble name -> every (None: initial frame only)
        self._unrecorded = set()           # static ensembles that are never written
        self._states = {}                  # name -> object with state_dict / load_state_dict
        self._replicated = set()           # ensembles every rank holds whole
        self._distributed = False
        self._started = False
        self.context = {}                  # objects an experiment keeps with its simulation
        for name, ens in (ensembles or {}).items():
            self.add_ensemble(name, ens)

    # ------------------------------------------------------------ building
    def add_ensemble(self, name, ensemble):
        if not isinstance(name, str) or not ENSEMBLE_NAME.fullmatch(name):
            raise ValueError(f"ensemble name {name!r} is not allowed: use letters, digits, '_' and '-', starting "
                             "with a letter or '_' (names become HDF5 group names)")
        if name in self.ensembles:
            raise ValueError(f"an ensemble named {name!r} already exists")
        if not isinstance(ensemble, Ensemble):
            raise ValueError(f"ensemble {name!r} must be a particleflow.Ensemble; got {type(ensemble).__name__}")
        if self.device is None:
            self.device = ensemble.device
        ensemble.device = self.device
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
        if len(self.slots) >= StreamBlock.TEACHER:
            raise ValueError("too many scheduled moves for the stream table")
        self.slots.append(Slot(len(self.slots), move, ensemble, _every(every, "every"), name))
        return self

    def observe(self, name, fn, every=1, initial=True):
        """Record ``fn(sim)`` every ``every`` steps as ``name`` (and at step 0 when
        ``initial``).  ``fn`` returns a scalar or an array; or a dict of them, recorded
        as ``name/key`` (as ``key`` when ``name`` is None) and computed once per step."""
        self._not_started("observe")
        if not callable(fn):
            raise ValueError(f"observable {name!r} must be callable fn(sim)")
        if name is not None and any(n == name for n, *_ in self._observables):
            raise ValueError(f"an observable named {name!r} already exists")
        self._observables.append((name, fn, _every(every, "every"), bool(initial)))
        return self

    def observe_moves(self, every=1):
        """Record every scheduled move's declared statistics (``move.stats_keys``) as
        ``<slot>/<key>`` every ``every`` steps (their latest values)."""
        self._not_started("observe_moves")
        self._moves_every = _every(every, "every")
        return self

    def trajectory(self, ensembles=None, every=1):
        """Write frames of ``ensembles`` (names; default all) every ``every`` steps;
        ``every=None`` writes the initial frame only (static ensembles such as data)."""
        self._not_started("trajectory")
        for name in (list(self.ensembles) if ensembles is None else ensembles):
            if name not in self.ensembles:
                raise ValueError(f"unknown ensemble {name!r}; known: {', '.join(self.ensembles)}")
            self._frames[name] = None if every is None else _every(every, "every")
        return self

    def static(self, *ensembles):
        """Declare ``ensembles`` static without recording them (data too large for the
        trajectory): no move may change them, checkpoints leave them out, the
        experiment rebuilds them from its config."""
        self._not_started("static")
        moved = {s.ensemble for s in self.slots}
        for name in ensembles:
            if name not in self.ensembles:
                raise ValueError(f"unknown ensemble {name!r}; known: {', '.join(self.ensembles)}")
            if name in moved:
                raise ValueError(f"ensemble {name!r} is moved by a scheduled move; it cannot be static")
            self._unrecorded.add(name)
        return self

    def replicate(self, *ensembles):
        """Declare ``ensembles`` replicated: on several ranks every rank holds them
        whole (neurons that every particle's energy needs, small parameter sets).
        Static ensembles (data) are always replicated."""
        self._not_started("replicate")
        for name in ensembles:
            if name not in self.ensembles:
                raise ValueError(f"unknown ensemble {name!r}; known: {', '.join(self.ensembles)}")
            self._replicated.add(name)
        return self

    def distribute(self, comm, reduction="ordered", shard=True):
        """Run on the ranks of ``comm`` (``particleflow.parallel``): the device gets the
        communicator and, with ``shard``, every dynamic ensemble of at least
        ``comm.size`` blocks that is not declared replicated keeps only this rank's
        rows (``parallel.shard_range``).  Call after building, before loading a
        checkpoint or running.  Returns {name: Shard} of the sharded ensembles."""
        if self._distributed:
            raise ValueError("distribute() was already called")
        self._not_started("distribute")
        if self.step != 0:
            raise ValueError("distribute() must come before load_state_dict()")
        self._distributed = True
        self.device = (self.device or get_device("cpu")).with_comm(comm, reduction)
        keep = set(self.static_ensembles()) | self._replicated
        shards = {}
        for name, ens in self.ensembles.items():
            ens.device = self.device
            if shard and comm.size > 1 and name not in keep and n_blocks(ens.n) >= comm.size:
                lo, hi = shard_range(ens.n, comm.rank, comm.size)
                ens.take_shard(Shard(lo, hi, ens.n))
                shards[name] = ens.shard
        return shards

    def sharded(self):
        """{name: Shard} of the ensembles this rank holds only part of."""
        return {k: e.shard for k, e in self.ensembles.items() if e.shard is not None}

    def attach(self, observer):
        """Add an observer (``particleflow.observers.Observer``); returns it."""
        self._not_started("attach")
        self.observers.append(observer)
        return observer

    def register_state(self, name, obj):
        """Checkpoint ``obj.state_dict()`` under ``name`` (learnable energies, an
        estimator's own state); restored by ``load_state_dict``."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise ValueError(f"{name!r}: needs state_dict() and load_state_dict()")
        self._states[name] = obj
        return self

    def _not_started(self, what):
        if self._started:
            raise ValueError(f"{what}() must be called before the simulation's first run()")

    # ------------------------------------------------------------ recording
    def _evaluate(self, name, fn):
        """{name: fn(sim)}, or a dict value's items as ``name/key`` (``key`` when name is None)."""
        v = fn(self)
        if isinstance(v, dict):
            return {k if name is None else f"{name}/{k}": x for k, x in v.items()}
        return {name: v}

    def _values(self, step):
        out = {}
        for name, fn, every, _ in self._observables:
            if step % every == 0:
                out.update(self._evaluate(name, fn))
        if self._moves_every is not None and step % self._moves_every == 0:
            for slot in self.slots:
                for k in slot.stats_keys:
                    if k in slot.last:
                        out[f"{slot.name}/{k}"] = slot.last[k]
        return out

    def _due_frames(self, step):
        return {k: self.ensembles[k] for k, every in self._frames.items()
                if every is not None and step % every == 0}

    def start(self):
        """Start the observers and record the initial state (step 0); ``run`` calls it.
        Every observable is evaluated once at the current state: the values give the
        observers their shapes and, for ``initial`` observables, are step 0's record.
        A Simulation restored from a checkpoint at step > 0 records nothing here."""
        if self._started:
            return
        examples, initial = {}, {}
        for name, fn, _, init in self._observables:
            vals = self._evaluate(name, fn)
            examples.update(vals)
            if init:
                initial.update(vals)
        if self._moves_every is not None:
            for slot in self.slots:
                for k in slot.stats_keys:
                    examples[f"{slot.name}/{k}"] = 0.0
        spec = Spec({k: self.ensembles[k] for k in self._frames}, examples)
        for ob in self.observers:
            ob.start(self, spec)
        self._started = True
        if self.step == 0:
            for ob in self.observers:
                ob.record(0, dict(spec.ensembles), initial)

    def finish(self, results=None):
        """Set ``results`` and hand them to the observers (the writer stores them)."""
        if results is not None:
            self.results = dict(results)
        for ob in self.observers:
            ob.finish(self)

    def close(self):
        for ob in self.observers:
            ob.close()

    # ------------------------------------------------------------ running
    def run(self, n_steps, progress=None, stop=None):
        """Advance ``n_steps`` steps.  ``progress(sim)`` is called after each step;
        ``stop()`` too, and a true value ends the run early (after that step)."""
        n_steps = _every(n_steps, "n_steps") if n_steps != 0 else 0
        if self.step + n_steps > MAX_STEP:
            raise ValueError(f"runs are limited to {MAX_STEP} steps (the Philox step counter)")
        with get_device(self.device or "cpu").running():
            self._run(n_steps, progress, stop)
        return self

    def _run(self, n_steps, progress, stop):
        self.start()
        for _ in range(n_steps):
            t = self.step
            for slot in self.slots:
                if t % slot.every:
                    continue
                ens = self.ensembles[slot.ensemble]
                stats = slot.move(ens, self.stream.substream(slot.index), t)
                if t % self.check_every == 0:
                    self._check_finite(ens, slot, t)
                slot.last = stats or {}
            self.step = t + 1
            frames = self._due_frames(self.step)
            values = self._values(self.step)
            if frames or values:
                for ob in self.observers:
                    ob.record(self.step, frames, values)
            for ob in self.observers:
                ob.after_step(self)
            record_kernel_cache()            # what this step compiled survives a SIGKILL
            if progress is not None:
                progress(self)
            if stop is not None and stop():
                break

    @staticmethod
    def _check_finite(ens, slot, t):
        xp = ens.xp
        bad_x = not bool(xp.isfinite(ens.x).all())
        bad_w = ens.log_weights is not None and bool(xp.isnan(ens.log_weights).any())
        if ens.shard is not None:            # every rank raises together
            comm = ens.device.comm
            bad_x, bad_w = comm.any(bad_x), comm.any(bad_w)
        if bad_x:
            raise DivergenceError(slot.ensemble, t, slot.name)
        if bad_w:
            raise DivergenceError(slot.ensemble, t, slot.name, "log-weights")

    def last_stats(self):
        """{slot name: latest statistics} of the moves that have run."""
        return {s.name: s.last for s in self.slots if s.last}

    # ------------------------------------------------------------ state
    def state_dict(self):
        """Everything the next step needs, as nested dicts of numpy arrays."""
        moves = {}
        for s in self.slots:
            sd = getattr(s.move, "state_dict", None)
            st = sd() if sd is not None else {}
            if st:
                moves[s.name] = st
        return {"step": self.step,
                "ensembles": {k: e.state() for k, e in self.ensembles.items() if k not in self.static_ensembles()},
                "moves": moves,
                "states": {k: o.state_dict() for k, o in self._states.items()},
                "last_stats": {s.name: dict(s.last) for s in self.slots if s.last}}

    def static_ensembles(self):
        """Ensembles that get only an initial frame and that no move changes (data):
        checkpoints leave them out, the experiment rebuilds them from the seed."""
        moved = {s.ensemble for s in self.slots}
        recorded = [k for k, every in self._frames.items() if every is None and k not in moved]
        return recorded + sorted(self._unrecorded - set(recorded) - moved)

    def load_state_dict(self, state):
        """Restore ``state_dict()`` (a run restored at step > 0 records no initial frame)."""
        for name in state["ensembles"]:
            if name not in self.ensembles:
                raise ValueError(f"the checkpoint has ensemble {name!r}, which this simulation lacks")
            self.ensembles[name].load_state(state["ensembles"][name])
        slots = {s.name: s for s in self.slots}
        for name, st in state.get("moves", {}).items():
            if name not in slots:
                raise ValueError(f"the checkpoint has state for move {name!r}, which this simulation lacks")
            move = slots[name].move
            if isinstance(move, Move):              # its state comes back on its ensemble's device
                move.device = self.ensembles[slots[name].ensemble].device
            move.load_state_dict(st)
        for name, st in state.get("states", {}).items():
            if name not in self._states:
                raise ValueError(f"the checkpoint has state {name!r}, which this simulation lacks")
            self._states[name].load_state_dict(st)
        for name, st in state.get("last_stats", {}).items():
            if name in slots:
                slots[name].last = {k: float(np.asarray(v)) for k, v in st.items()}
        self.step = int(state["step"])
        return self


_SAMPLED = weakref.WeakValueDictionary()       # id -> a frames array sample() returned
_ENDS = {}                                     # id -> (seed, the step it ended at)


def _continues(x0):
    """(seed, end step) of the sample() result that ``x0`` is a view of, or None."""
    b = x0
    while b is not None:
        if _SAMPLED.get(id(b)) is b:
            return _ENDS.get(id(b))
        b = getattr(b, "base", None)
    return None


def sample(energy, x0, move, n_steps, seed=0, thin=1, start_step=0, stats=False):
    """Run one move on one ensemble and return the stacked positions (and, with
    ``stats=True``, the move's statistics at every step).

    Parameters
    ----------
    energy : Energy
    x0 : array [n, *event_shape] (numpy or CuPy) of initial positions
    move : a Move bound to ``energy`` (``pf.moves.MALA(energy, 0.1)``), or a callable
        ``energy -> Move`` (``functools.partial(pf.moves.HMC, step_size=0.1, n_leapfrog=10)``)
    n_steps, thin : int >= 1; frames are taken after steps thin, 2 thin, ...
    start_step : the step counter to start from.  Noise is keyed by the step: a second
        call that continues a first one (a warm-up, then sampling from its last frame)
        passes ``start_step`` = the first call's ``n_steps``, else it reuses its noise
        (a ``UserWarning`` says so when ``x0`` is a frame of that first call's result).
    stats : also return the move's statistics (``move.stats_keys``: MALA's and HMC's
        ``acceptance`` and ``mean_energy``, HMC's running total of ``divergences``, ...)
    Returns
    -------
    array [n_steps // thin, n, *event_shape] on x0's backend; with ``stats=True`` the
    pair (that array, {key: float64 array [(n_steps // thin) * thin], the value after each step}).

    Example
    -------
    >>> import numpy as np, particleflow as pf
    >>> e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    >>> xs = pf.sample(e, np.zeros((100, 2)), pf.moves.MALA(e, 0.5), n_steps=10, seed=1)
    >>> xs.shape
    (10, 100, 2)
    >>> xs, st = pf.sample(e, xs[-1], pf.moves.MALA(e, 0.5), n_steps=10, seed=1, start_step=10, stats=True)
    >>> st["acceptance"].shape, bool(0.5 < st["acceptance"].mean() < 1.0)
    ((10,), True)
    """
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
    if isinstance(start_step, bool) or not isinstance(start_step, numbers.Integral) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0; got {start_step!r}")
    sim.step = int(start_step)
    previous = _continues(x0)
    if previous is not None and previous[0] == seed and start_step < previous[1]:
        warnings.warn(f"x0 is a frame of a pf.sample result (seed {seed}) that ended at step {previous[1]}; this call "
                      f"starts at step {start_step} and so reuses that call's noise: pass start_step={previous[1]} "
                      "to continue it", UserWarning, stacklevel=2)
    if stats:
        sim.observe_moves(every=1)                   # into sim.recorder
    xp = ens.xp
    frames = xp.empty((n_steps // thin,) + ens.x.shape, dtype=ens.dtype)
    for f in range(n_steps // thin):
        sim.run(thin)
        frames[f] = sim.ensembles["chains"].x
    try:
        _SAMPLED[id(frames)] = frames
        _ENDS[id(frames)] = (seed, int(start_step) + (n_steps // thin) * thin)
        weakref.finalize(frames, _ENDS.pop, id(frames), None)
    except TypeError:                    # an array type without weak references: no check
        pass
    if not stats:
        return frames
    slot = sim.slots[0].name
    return frames, {k: np.asarray(sim.recorder.observables[f"{slot}/{k}"].values, dtype=np.float64)
                    for k in getattr(move, "stats_keys", ())}

