"""Compare the datasets of two sets of trajectories bitwise (plain h5py).

    python bench/compare_runs.py REF_DIR NEW_DIR

For every ``*.h5`` in REF_DIR: every dataset under /particles, /observables and
/results must exist in NEW_DIR's file of the same name with the same shape, dtype
and bytes.  Timing results (seconds_per_iteration, teacher_sampling_seconds,
elapsed_s) are listed but not compared.  Prints one line per file and exits 1 on
any difference.  To produce the two sets: run every ``runs/*.toml`` with
``particleflow run CONFIG --out DIR/<name>.h5 --set output.plot=false`` from two
checkouts.
"""
import glob
import os
import sys

import h5py
import numpy as np

TIMINGS = {"results/seconds_per_iteration", "results/teacher_sampling_seconds", "results/elapsed_s"}


def datasets(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.split("/")[0] in ("particles", "observables", "results"):
            out[name] = obj
    f.visititems(visit)
    return out


def compare(ref_path, new_path):
    with h5py.File(ref_path, "r") as a, h5py.File(new_path, "r") as b:
        da, db = datasets(a), datasets(b)
        same, diff = 0, []
        for k, ds in da.items():
            if k in TIMINGS:
                continue
            if k not in db:
                diff.append(f"missing {k}")
                continue
            x, y = ds[()], db[k][()]
            if x.shape != y.shape or x.dtype != y.dtype or np.asarray(x).tobytes() != np.asarray(y).tobytes():
                diff.append(f"differs {k}")
            else:
                same += 1
        extra = sorted(set(db) - set(da))
        return same, diff, extra


def main(ref_dir, new_dir):
    bad = False
    for ref in sorted(glob.glob(os.path.join(ref_dir, "*.h5"))):
        new = os.path.join(new_dir, os.path.basename(ref))
        if not os.path.exists(new):
            print(f"{os.path.basename(ref)}: no counterpart in {new_dir}")
            bad = True
            continue
        same, diff, extra = compare(ref, new)
        bad |= bool(diff) or bool(extra)
        print(f"{os.path.basename(ref)}: {same} datasets bitwise equal, {len(diff)} differ or missing, "
              f"{len(extra)} extra" + ("".join(f"\n    {d}" for d in diff + [f'extra {e}' for e in extra])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
