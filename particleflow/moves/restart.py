"""Restarts (paper 001, Section 4): each particle is replaced, with probability p, by
a uniformly chosen particle of a source ensemble (the data).  p = 0 gives maximum
likelihood, restarting every step gives score matching.

Draws: uniform 0 of the particle's RESTART stream decides, uniform 1 picks the
source index floor(u n_source).  Restarted particles keep their ids.
"""
from ..random import Purpose
from ..checks import probability as _probability
from .base import Move


class Restart(Move):
    """Parameters
    ----------
    source : Ensemble (or array [n_source, *event_shape]) to restart from
    probability : float in [0, 1]
    """

    stats_keys = ("restart_fraction",)

    def __init__(self, source, probability):
        super().__init__()
        self.source = source
        self.probability = _probability(probability, "probability")

    def _source_x(self):
        return getattr(self.source, "x", self.source)

    def check(self, ensemble):
        src = self._source_x()
        if tuple(src.shape[1:]) != ensemble.event_shape:
            raise ValueError(f"restart source has event shape {tuple(src.shape[1:])} but ensemble "
                             f"{ensemble.name!r} has {ensemble.event_shape}")

    def _step(self, ens, stream, step):
        xp = ens.xp
        src = self._source_x()
        if self.probability == 0:
            return {"restart_fraction": 0.0}
        shard = getattr(self.source, "shard", None)
        n_src = src.shape[0] if shard is None else shard.n
        u = stream.uniform(step, ens.ids, 2, Purpose.RESTART)
        hit = u[:, 0] < self.probability
        idx = xp.minimum((u[:, 1] * n_src).astype(xp.int64), n_src - 1)
        rows = xp.nonzero(hit)[0]
        if shard is None:
            new = src[idx[rows]]
        else:                    # a sharded source: fetch the rows from their ranks
            order = xp.argsort(idx[rows], kind="stable")
            new = xp.empty((rows.shape[0],) + tuple(src.shape[1:]), dtype=src.dtype)
            new[order] = self.source.device.fetch_rows(src, shard, idx[rows][order])
        ens.x[rows] = new.astype(ens.dtype, copy=False)
        ens.positions_changed()
        return {"restart_fraction": float(ens.particle_mean(hit))}
