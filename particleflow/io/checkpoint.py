"""Atomic checkpoints: everything the next step needs, nothing else.

The RNG is counter-based, so a checkpoint holds the Simulation's ``state_dict()``
(the step counter; every dynamic ensemble's positions, log-weights, signs, ids and
next id; every move's state such as optimiser moments and step counts or persistent
chains; registered states such as learnable energies' parameters), the committed
frame counts of the trajectory and the run's config text.  Static ensembles (data)
are not stored: the experiment rebuilds them from the seed.

Nested dicts become HDF5 groups, arrays and numbers datasets (each with the CRC-32
of its value, checked on reading), so any move's state round-trips.  Written to
``PATH.tmp``, fsync'd, then ``os.replace``d over ``PATH`` after the previous
generation was moved to ``PATH.prev`` (LAMMPS keeps two restart files the same way),
so a kill at any moment leaves at least one complete checkpoint.
"""
import os

import h5py
import numpy as np

from .files import temporary_beside
from .h5md import check_complete, read_checked, write_checked


def _write_tree(group, tree):
    for k, v in tree.items():
        if v is None:
            continue
        if isinstance(v, dict):
            _write_tree(group.create_group(str(k)), v)
        else:
            write_checked(group, str(k), v)


def _read_tree(group):
    out = {}
    for k, v in group.items():
        out[k] = _read_tree(v) if isinstance(v, h5py.Group) else np.asarray(read_checked(v))
    return out


def write_checkpoint(path, state, frame_counts, config_text, seed, ranks=1, sharded=False):
    """``ranks``: the number of processes of the run (each writes its own checkpoint);
    ``sharded``: whether the run split an ensemble over them (if not, rank 0's checkpoint
    holds the whole state, and any number of processes may resume it)."""
    tmp = temporary_beside(path)
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs["step"] = int(state["step"])
            f.attrs["ranks"] = int(ranks)
            f.attrs["sharded"] = int(bool(sharded))
            f.attrs["seed"] = int(seed)
            f.attrs["config"] = config_text
            _write_tree(f.create_group("state"), {k: v for k, v in state.items() if k != "step"})
            fc = f.create_group("frames")
            for k, v in frame_counts.items():
                fc.attrs[k] = int(v)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if os.path.exists(path):
        os.replace(path, path + ".prev")
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def checkpoint_steps(path):
    """The steps of the readable generations (``PATH``, ``PATH.prev``) of a checkpoint."""
    steps = []
    for p in (path, path + ".prev"):
        try:
            check_complete(p)
            with h5py.File(p, "r") as f:
                steps.append(int(f.attrs["step"]))
        except (OSError, RuntimeError, KeyError, ValueError):
            pass
    return steps


def read_checkpoint(path, step=None):
    """dict(step, seed, config, ranks, sharded, state (for ``Simulation.load_state_dict``),
    frames={element: count}); falls back to ``PATH.prev`` if ``PATH`` is unreadable.
    ``step``: read the generation of that step."""
    last_error = None
    for p in (path, path + ".prev"):
        if not os.path.exists(p):
            continue
        try:
            check_complete(p)
            with h5py.File(p, "r") as f:
                if step is not None and int(f.attrs["step"]) != step:
                    continue
                state = _read_tree(f["state"])
                state["step"] = int(f.attrs["step"])
                for st in state.get("ensembles", {}).values():
                    st["next_id"] = int(st["next_id"])
                return dict(step=state["step"], seed=int(f.attrs["seed"]), config=str(f.attrs["config"]),
                            state=state, ranks=int(f.attrs.get("ranks", 1)),
                            sharded=bool(f.attrs.get("sharded", int(f.attrs.get("ranks", 1)) > 1)),
                            frames={k: int(v) for k, v in f["frames"].attrs.items()})
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            last_error = e
    raise ValueError(f"no readable checkpoint at {path} ({last_error or 'missing'}); "
                     "the run cannot be resumed")
