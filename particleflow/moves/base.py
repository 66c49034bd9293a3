"""Move base class: validation and bookkeeping around a concrete ``_step``
(scipy's ``OdeSolver.step -> _step_impl`` template)."""
import numpy as np

from ..ensemble import Ensemble
from ..random import Stream, _check_step


class Move:
    """A move advances one ensemble in place: ``stats = move(ensemble, stream, step)``.

    Subclasses implement ``_step(ensemble, stream, step) -> dict`` (the math only)
    and may override ``check(ensemble)``.  The base counts calls.

    ``stats_keys`` declares the statistics ``_step`` returns (scalars), so that a
    Simulation knows every observable before its first step.  A move with state
    that the next step needs (optimiser moments, persistent chains) overrides
    ``state_dict`` / ``load_state_dict``; checkpoints store it."""

    energy = None
    stats_keys = ()
    # where the ensemble it moves lives (a ``backend.Device``): a Simulation sets it
    # before loading a checkpoint, so restored state (optimiser moments, persistent
    # chains) comes back on that device's array module; None means the CPU
    device = None

    def __init__(self):
        self.n_calls = 0
        self._buffers = {}

    def check(self, ensemble):
        energy = getattr(self, "energy", None)
        if energy is not None and getattr(energy, "dim", None) is not None \
                and ensemble.dim != energy.dim:
            raise ValueError(
                f"ensemble {ensemble.name!r} has dimension {ensemble.dim} but the energy of "
                f"{type(self).__name__} is defined on dimension {energy.dim}")

    def __call__(self, ensemble, stream, step):
        if not isinstance(ensemble, Ensemble):
            raise ValueError(f"{type(self).__name__} needs an Ensemble; got {type(ensemble).__name__}")
        if not isinstance(stream, Stream):
            raise ValueError(f"stream must be a particleflow.random.Stream; got {type(stream).__name__}")
        _check_step(step)
        self.check(ensemble)
        stats = self._step(ensemble, stream, int(step))
        self.n_calls += 1
        return stats

    def _step(self, ensemble, stream, step):
        raise NotImplementedError

    def state_dict(self):
        """State the next step needs, as a dict of numpy arrays ({} for none)."""
        return {}

    def load_state_dict(self, state):
        if state:
            raise ValueError(f"{type(self).__name__} has no state to load")

    def buffer(self, name, shape, dtype, xp):
        """A scratch array held by the move and reused across steps."""
        key = (name, tuple(shape), np.dtype(dtype).str, xp.__name__)
        buf = self._buffers.get(key)
        if buf is None:
            self._buffers = {k: v for k, v in self._buffers.items() if k[0] != name}
            buf = self._buffers[key] = xp.empty(shape, dtype=dtype)
        return buf

    def position_buffer(self, ensemble):
        return self.buffer("x", ensemble.x.shape, ensemble.dtype, ensemble.xp)

    def swap_positions(self, ensemble, new_x):
        """Install ``new_x`` (from ``position_buffer``) as the positions; the old
        array becomes the buffer of the next call (double buffering)."""
        old = ensemble.x
        ensemble.x = new_x
        self._buffers[("x", tuple(old.shape), old.dtype.str, ensemble.xp.__name__)] = old

    def __repr__(self):
        return type(self).__name__
