"""Atomic checkpoints: everything the next step needs, nothing else.

The RNG is counter-based, so a checkpoint holds only the step counter, every
ensemble's state (positions, log-weights, signs, ids, next id), move state where a
move has any (optimisers, later issues), and the committed frame counts of the
trajectory.  Written to ``PATH.tmp``, fsync'd, then ``os.replace``d over ``PATH``
after the previous generation was moved to ``PATH.prev`` (LAMMPS keeps two restart
files the same way), so a kill at any moment leaves at least one complete checkpoint.
"""
import os

import h5py
import numpy as np


def write_checkpoint(path, step, ensembles, frame_counts, config_text, seed):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["step"] = int(step)
        f.attrs["seed"] = int(seed)
        f.attrs["config"] = config_text
        g = f.create_group("ensembles")
        for name, ens in ensembles.items():
            e = g.create_group(name)
            for k, v in ens.state().items():
                if v is None:
                    continue
                if k == "next_id":
                    e.attrs["next_id"] = int(v)
                else:
                    e.create_dataset(k, data=v)
        fc = f.create_group("frames")
        for k, v in frame_counts.items():
            fc.attrs[k] = int(v)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if os.path.exists(path):
        os.replace(path, path + ".prev")
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_checkpoint(path):
    """dict(step, seed, config, ensembles={name: state dict}, frames={element: count});
    falls back to ``PATH.prev`` if ``PATH`` is unreadable."""
    last_error = None
    for p in (path, path + ".prev"):
        if not os.path.exists(p):
            continue
        try:
            with h5py.File(p, "r") as f:
                out = dict(step=int(f.attrs["step"]), seed=int(f.attrs["seed"]),
                           config=str(f.attrs["config"]), ensembles={},
                           frames={k: int(v) for k, v in f["frames"].attrs.items()})
                for name, e in f["ensembles"].items():
                    st = {k: np.asarray(e[k]) for k in e}
                    st["next_id"] = int(e.attrs["next_id"])
                    out["ensembles"][name] = st
                return out
        except (OSError, KeyError) as e:
            last_error = e
    raise ValueError(f"no readable checkpoint at {path} ({last_error or 'missing'}); "
                     "the run cannot be resumed")
