"""ArviZ export: a trajectory as an ``arviz.InferenceData`` (the 'arviz' extra).

Particles are chains and frames are draws:

* ``posterior.<ensemble>`` [chain, draw, *event] with dimensions ``<ensemble>_dim_k``
  (coordinates 0..size-1);
* ``sample_stats``: ``lp`` = -E(x) per chain and draw, in the positions' dtype, when the
  run's energy can be rebuilt (ArviZ's ``lp`` is the log density, the negative of an
  energy); ``weight_ess`` (the ensemble's Kish ESS, an ensemble-level value);
  ``log_weight`` for a weighted ensemble; ``particle_id`` when resampling or restarts
  changed which particle a row holds (then a row is not one Markov chain); and every
  scalar observable recorded at the frames' steps, broadcast over chains (they are
  ensemble-level statistics): a move's ``acceptance`` becomes ``acceptance_rate`` and its
  ``step_size`` ``step_size`` (prefixed with the slot name when several slots report one).

Only the ArviZ 0.x line installs from the package index today (0.17 or later is
required); ``from_dict`` is the only entry point used.
"""
import os
import warnings

import numpy as np

from ..observers import Recorder
from .files import temporary_beside
from .h5md import open_run

CHUNK = 1 << 20                      # rows per energy evaluation
ARVIZ_NAMES = {"acceptance": "acceptance_rate", "step_size": "step_size"}


def import_arviz():
    try:
        import arviz
    except ImportError:
        raise ValueError("ArviZ export needs the 'arviz' extra: pip install 'particleflow[arviz]'") from None
    return arviz


def _stat_names(observables):
    """{observable path: sample_stats name} for the scalar per-slot statistics."""
    by_key = {}
    for path in observables:
        slot, _, key = path.rpartition("/")
        by_key.setdefault(key, []).append(path)
    names = {}
    for key, paths in by_key.items():
        base = ARVIZ_NAMES.get(key, key)
        for path in paths:
            slot = path.rpartition("/")[0].replace("/", "_")
            names[path] = base if len(paths) == 1 else f"{slot}_{base}"
    return names


def _frames_of(source):
    """A Run, or the frames Recorder of a Simulation (a Recorder is taken as it is)."""
    if isinstance(source, Recorder) or hasattr(source, "path"):
        return source
    for ob in getattr(source, "observers", ()):
        if isinstance(ob, Recorder) and ob.frames and ob.ensembles:
            return ob
    raise ValueError("this Simulation recorded no frames: before running it, attach "
                     "pf.Recorder(frames=True) with sim.attach(...) and choose the ensembles with "
                     "sim.trajectory(...); or stream it to a file with pf.io.TrajectoryObserver")


def _scalar(observable):
    frames = getattr(observable, "_frames", None)              # a file's dataset, read lazily
    return (frames.shape[1:] if frames is not None else np.shape(observable.values)[1:]) == ()


def to_inferencedata(run, ensemble=None, first_frame=0, lp=True, energy=None):
    """``arviz.InferenceData`` of one ensemble of a run: a path, an open ``Run``, a
    ``Simulation`` run in Python with a ``pf.Recorder(frames=True)`` attached, or that
    recorder.

    ``ensemble``: default the run's only ensemble with more than one frame (name it when
    there are several); ``first_frame``: drop the frames before it (warm-up);
    ``energy``: an energy, or a function of the open run returning one (such as
    ``particleflow.experiments.load_energy``, which rebuilds the run's own); with
    ``lp``, -E is evaluated at every draw (none when ``energy`` is None or cannot
    rebuild the run's energy)."""
    az = import_arviz()
    if isinstance(run, (str, os.PathLike)):
        with open_run(os.fspath(run)) as r:
            return to_inferencedata(r, ensemble, first_frame, lp, energy)
    run = _frames_of(run)
    where = getattr(run, "path", None) or "the simulation"
    moving = [k for k, e in run.ensembles.items() if len(e.positions) > 1]
    if ensemble is None:
        if len(moving) != 1:
            raise ValueError(f"{where} has ensembles {', '.join(run.ensembles)}; name the one to export")
        ensemble = moving[0]
    if ensemble not in run.ensembles:
        raise ValueError(f"no ensemble {ensemble!r} in {where}; ensembles: {', '.join(run.ensembles)}")
    rec = run.ensembles[ensemble]
    T = len(rec.positions)
    if not 0 <= first_frame < T:
        raise ValueError(f"first_frame must be in [0, {T - 1}] for the {T} frames of {ensemble!r}; "
                         f"got {first_frame}")
    pos = np.asarray(rec.positions[first_frame:])                     # [T, n, *event]
    steps = (rec.positions.steps() if callable(getattr(rec.positions, "steps", None)) else rec.steps)[first_frame:]
    event = pos.shape[2:]
    dims = [f"{ensemble}_dim_{k}" for k in range(len(event))]
    coords = {d: np.arange(s) for d, s in zip(dims, event)}
    if len(np.unique(steps)) == len(steps):
        coords["draw"] = steps.astype(np.int64)             # draws named by their steps
    stats = {}
    ids = np.asarray(rec.ids[first_frame:])
    if (ids != ids[:1]).any():
        stats["particle_id"] = ids.T
    if rec.log_weights is not None:
        stats["log_weight"] = np.asarray(rec.log_weights[first_frame:]).T
    # the moves' scalar statistics, and this ensemble's weight ESS; not other ensembles'
    scalar = {k: o for k, o in run.observables.items() if "/" in k and _scalar(o)
              and k.partition("/")[0] not in set(run.ensembles) - {ensemble}}
    for path, name in _stat_names(scalar).items():
        if path == f"{ensemble}/ess":
            name = "weight_ess"
        ob = run.observables[path]
        at = np.searchsorted(ob.steps, steps)
        ok = (at < len(ob.steps)) & (ob.steps[np.minimum(at, len(ob.steps) - 1)] == steps)
        if ok.all():
            stats[name] = np.broadcast_to(ob.values[at], (pos.shape[1], len(steps))).copy()
    if lp and energy is not None:
        if not hasattr(energy, "value"):
            try:
                energy = energy(run)
            except (ValueError, KeyError, OSError):
                energy = None
        if energy is not None:
            flat = pos.reshape((-1,) + event)
            e = np.concatenate([np.asarray(energy.value(flat[i:i + CHUNK]), dtype=np.float64)
                                for i in range(0, flat.shape[0], CHUNK)])
            stats["lp"] = -e.reshape(pos.shape[:2]).T.astype(pos.dtype)
    with warnings.catch_warnings():          # "more chains than draws": usual for particles
        warnings.simplefilter("ignore", UserWarning)
        return az.from_dict(posterior={ensemble: np.moveaxis(pos, 0, 1)}, sample_stats=stats or None,
                            coords=coords, dims={ensemble: dims},
                            attrs={"source": "particleflow",
                                   "run": os.path.abspath(run.path) if hasattr(run, "path") else "in memory",
                                   "ensemble": ensemble})


def export_netcdf(run_path, out, ensemble=None, first_frame=0, lp=True, compress=False, energy=None):
    """Write ``to_inferencedata`` to a netCDF file ``out`` (through a temporary file that
    replaces ``out`` only when complete).  ``compress``: zlib-compress the variables
    (ArviZ's default; about 4x slower to write: 12.6 s for 1e5 chains x 200 draws)."""
    data = to_inferencedata(run_path, ensemble, first_frame, lp, energy)
    tmp = temporary_beside(out, ".nc")
    try:
        data.to_netcdf(tmp, compress=compress)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
