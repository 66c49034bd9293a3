"""Ensembles: n particles with positions, optional log-weights, signs and persistent ids.

Every moving thing of particleflow (MCMC chains, noisy data, neurons, parameter
vectors) is an ``Ensemble``.  The backend is the array's module (numpy or CuPy).
"""
import numpy as np

from .backend import Device, array_module, get_device, to_device, to_numpy

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Ensemble:
    """n particles with positions ``x`` of shape ``(n, *event_shape)``.

    Parameters
    ----------
    x : array [n, *event_shape], float32 or float64 (numpy or CuPy)
        Positions; copied into a C-contiguous array owned by the ensemble.
    log_weights : array [n] or None
        Unnormalised log importance weights (None = equal weights).
    signs : array [n] of +1 / -1 or None
        Signs of a signed measure (F1 neurons' output weights); None = all +1.
    ids : int array [n] or None
        Persistent particle ids (default ``arange(n)``); the random stream of a
        particle follows its id, not its slot.
    name : str or None

    Moves may replace the arrays held by an ensemble (double buffering); hold on to
    the ensemble, not to ``ensemble.x``.

    Energy cache: ``cached_energy(energy)`` returns (E, grad E) of the current
    positions when a move stored them with ``store_energy`` (MALA and HMC do, so the
    next step does not evaluate them again).  Assigning ``x`` invalidates the cache;
    a move that writes into ``x`` in place must call ``positions_changed()``.  The
    energy's ``cache_token()`` (changed by ``set_params`` and ``load_state_dict``)
    invalidates it when the energy's parameters change.
    """

    def __init__(self, x, log_weights=None, signs=None, ids=None, name=None):
        xp = array_module(x)
        try:
            x = xp.asarray(x)
        except (ValueError, TypeError) as e:
            raise ValueError(f"x must be an array of shape (n, *event_shape) (rows of equal length, numbers); "
                             f"numpy could not convert it: {e}") from None
        if x.dtype not in _FLOATS:
            if x.dtype.kind in "iub":
                x = x.astype(np.float64)
            else:
                raise ValueError(f"x must hold float32 or float64 values; got dtype {x.dtype}")
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"x must have shape (n, *event_shape) with n >= 1; got shape {x.shape}")
        if x.ndim == 1:
            raise ValueError(
                f"x must have shape (n, *event_shape); got a 1-D array of shape {x.shape}. "
                "For n scalar particles pass x[:, None]")
        if not bool(xp.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf positions; all positions must be finite")
        self._device = None
        self._cache = None
        self.shard = None
        self.x = xp.array(x, copy=True, order="C")
        n = self.x.shape[0]
        self.log_weights = self._vector(log_weights, "log_weights", n, self.x.dtype, xp)
        if self.log_weights is not None and bool(xp.isnan(self.log_weights).any()):
            raise ValueError("log_weights contains NaN; use -inf for zero weight")
        if self.log_weights is not None and not bool(xp.isfinite(self.log_weights).any()):
            raise ValueError("log_weights are all -inf or +inf: at least one weight must be finite and positive")
        self.signs = self._vector(signs, "signs", n, self.x.dtype, xp)
        if self.signs is not None and not bool(((self.signs == 1) | (self.signs == -1)).all()):
            raise ValueError("signs must be +1 or -1")
        if ids is None:
            self.ids = xp.arange(n, dtype=xp.int64)
        else:
            ids = xp.asarray(ids)
            if ids.shape != (n,) or ids.dtype.kind not in "iu":
                raise ValueError(f"ids must be an integer array of shape ({n},); got {ids.dtype} {ids.shape}")
            self.ids = xp.array(ids, dtype=xp.int64, copy=True)
            if int(self.ids.min()) < 0:
                raise ValueError("ids must be non-negative")
            if xp.unique(self.ids).size != n:
                raise ValueError("ids must be unique")
        self.next_id = int(self.ids.max()) + 1
        self.name = name

    @staticmethod
    def _vector(v, what, n, dtype, xp):
        if v is None:
            return None
        try:
            v = xp.asarray(v, dtype=dtype)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{what} must be a numeric array of shape ({n},): {e}") from None
        if v.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},) to match x; got {v.shape}")
        return xp.array(v, dtype=dtype, copy=True)

    # ------------------------------------------------------------ positions
    @property
    def x(self):
        return self._x

    @x.setter
    def x(self, value):
        self._x = value
        self._cache = None

    def positions_changed(self):
        """Say that ``x`` was written in place (drops the energy cache)."""
        self._cache = None

    def store_energy(self, energy, value, grad):
        """Remember E and grad E of the current positions under ``energy``."""
        self._cache = (energy, energy.cache_token(), self._x, value, grad)

    def cached_energy(self, energy):
        """(E, grad E) of the current positions if stored for ``energy`` with its
        current parameters, else None."""
        c = self._cache
        if c is None or c[0] is not energy or c[2] is not self._x or c[1] != energy.cache_token():
            return None
        return c[3], c[4]

    # ------------------------------------------------------------ shape
    @property
    def n(self):
        return self.x.shape[0]

    @property
    def n_global(self):
        """The number of particles over every rank (``n`` unless sharded)."""
        return self.shard.n if self.shard is not None else self.n

    @property
    def event_shape(self):
        return tuple(self.x.shape[1:])

    @property
    def dim(self):
        return int(np.prod(self.event_shape))

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def device(self):
        """The ``Device`` this ensemble lives on (set by its Simulation, else the
        device that owns ``x``)."""
        return self._device if self._device is not None else Device.of(self._x)

    @device.setter
    def device(self, device):
        device = get_device(device)
        if Device.of(self._x).xp is not device.xp:
            raise ValueError(f"ensemble {self.name!r} holds {Device.of(self._x)} arrays but the device is "
                             f"{device}; move it first with ensemble.to({device.name!r})")
        self._device = device

    @property
    def xp(self):
        return self.device.xp

    # ------------------------------------------------------------ weights
    def weights(self):
        """Normalised weights (uniform when ``log_weights`` is None); for a sharded
        ensemble this rank's rows of the global normalisation."""
        return self.device.normalised_weights(self.log_weights, self.n, self.dtype, self.shard)

    def ess(self):
        """Kish effective sample size 1 / sum w_i^2 of the normalised weights."""
        return self.device.ess(self.log_weights, self.n, self.dtype, self.shard)

    def mean(self):
        """Weighted mean of positions, shape ``event_shape``."""
        m = self.device.weighted_mean(self.x.reshape(self.n, -1), self.log_weights, self.shard)
        return m.astype(self.dtype).reshape(self.event_shape)

    def cov(self):
        """Weighted covariance ``[dim, dim]`` of the flattened positions
        (normalised by sum w = 1, i.e. the plug-in estimator)."""
        w = self.weights()
        xf = self.x.reshape(self.n, -1)
        c = xf - self.device.sum(w[:, None] * xf, self.shard).astype(self.dtype)
        return self.device.outer_sum(c * w[:, None], c, self.shard).astype(self.dtype)

    def particle_sum(self, v):
        """Sum of a per-particle array ``v`` [n, ...] over every particle (every rank),
        float64, in the device's fixed block order."""
        return self.device.sum(v, self.shard)

    def particle_mean(self, v):
        """Mean of a per-particle array over every particle (every rank), float64."""
        return self.device.mean(v, self.shard)

    def shifted_mean_exp(self, a):
        """(m, mean_i exp(a_i - m)) over every particle, m = max_i a_i: the overflow-safe
        pieces of mean_i exp(a_i) = exp(m) * mean and of its log, m + log(mean)."""
        m = self.device.max(a, self.shard)
        return m, float(self.particle_mean(self.xp.exp(a - a.dtype.type(m))))

    # ------------------------------------------------------------ sharding
    def take_shard(self, shard):
        """Keep only the rows ``shard.lo:shard.hi`` (this rank's share of the ensemble)."""
        if self.shard is not None:
            raise ValueError(f"ensemble {self.name!r} is already sharded")
        if shard.n != self.n:
            raise ValueError(f"shard of {shard.n} particles for ensemble {self.name!r} of {self.n}")
        xp = self.xp
        sl = slice(shard.lo, shard.hi)

        def cut(a):
            return None if a is None else xp.array(a[sl], copy=True, order="C")
        self.x = cut(self.x)
        self.log_weights, self.signs, self.ids = cut(self.log_weights), cut(self.signs), cut(self.ids)
        self.shard = shard
        return self

    # ------------------------------------------------------------ copies
    def copy(self):
        e = Ensemble.__new__(Ensemble)
        e._device, e._cache = self._device, None
        e.x = self.x.copy()
        e.log_weights = None if self.log_weights is None else self.log_weights.copy()
        e.signs = None if self.signs is None else self.signs.copy()
        e.ids = self.ids.copy()
        e.next_id = self.next_id
        e.name = self.name
        e.shard = self.shard
        return e

    def to(self, device):
        """A copy on ``device`` ("cpu" or "gpu")."""
        e = Ensemble.__new__(Ensemble)
        e._device, e._cache = None, None
        e.x = to_device(self.x, device)
        e.log_weights = to_device(self.log_weights, device)
        e.signs = to_device(self.signs, device)
        e.ids = to_device(self.ids, device)
        e.next_id = self.next_id
        e.name = self.name
        e.shard = self.shard
        return e

    def fresh_ids(self, count):
        """Reserve ``count`` new ids (for offspring of resampling or births).  For a
        sharded ensemble ``count`` is the global number, every rank reserves the same
        range and gets the ids of its own rows."""
        xp = self.xp
        lo, hi = (self.shard.lo, self.shard.hi) if self.shard is not None else (0, count)
        ids = xp.arange(self.next_id + lo, self.next_id + hi, dtype=xp.int64)
        self.next_id += count
        return ids

    def state(self):
        """Everything the next step needs, as numpy copies (for checkpoints)."""
        def copy(a):
            return None if a is None else np.array(to_numpy(a), copy=True)
        return dict(x=copy(self.x), log_weights=copy(self.log_weights),
                    signs=copy(self.signs), ids=copy(self.ids), next_id=self.next_id)

    def load_state(self, st):
        """Restore what ``state()`` returned (positions, weights, signs, ids, next id)."""
        xp = self.xp

        def own(a):
            return None if a is None else xp.array(to_device(a, self.device), copy=True, order="C")
        self.x = own(st["x"])
        self.log_weights = own(st.get("log_weights"))
        self.signs = own(st.get("signs"))
        self.ids = own(st["ids"])
        self.next_id = int(st["next_id"])

    def __repr__(self):
        return (f"Ensemble(name={self.name!r}, n={self.n}, event_shape={self.event_shape}, "
                f"dtype={self.dtype}, device={self.device!r}, "
                f"weighted={self.log_weights is not None}, signed={self.signs is not None})")
