"""Malformed inputs end to end through the CLI: each exits 2 with one clear line and
leaves existing files untouched."""
import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from particleflow.cli import cli

GOOD = """
[run]
steps = 20
seed = 1
[output]
every = 10
plot = false
[energy]
kind = "gaussian_mixture"
ring_components = 6
ring_radius = 3.0
[ensembles.chains]
n = 100
[[schedule]]
move = "mala"
ensemble = "chains"
step_size = 0.3
"""


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None


def invoke(args, tmp_path):
    sentinel = tmp_path / "keep.h5"
    if not sentinel.exists():
        sentinel.write_bytes(b"precious")
    before = {p: digest(p) for p in map(str, tmp_path.iterdir()) if os.path.isfile(p)}
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    for p, h in before.items():
        assert digest(p) == h, f"{p} was modified"
    return r


def cfg(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def edit(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


def npy(tmp_path, arr, name="data.npy"):
    p = tmp_path / name
    np.save(p, arr)
    return str(p)


CASES = {
    "bad TOML": (lambda t: ["run", cfg(t, "[run\nsteps = 3")], "not valid TOML"),
    "unknown top key": (lambda t: ["run", cfg(t, "foo = 1\n" + GOOD)], "unknown key 'foo'"),
    "misspelt key": (lambda t: ["run", cfg(t, edit("seed = 1", "sed = 1"))], "did you mean 'seed'"),
    "wrong type": (lambda t: ["run", cfg(t, edit("steps = 20", 'steps = "ten"'))], "run.steps must be an integer"),
    "negative step size": (lambda t: ["run", cfg(t, edit("step_size = 0.3", "step_size = -0.3"))], "step_size must be > 0"),
    "zero particles": (lambda t: ["run", cfg(t, edit("n = 100", "n = 0"))], "ensembles.chains.n must be >= 1"),
    "NaN in data file": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy(t, np.array([[0.0, np.nan], [1, 2], [3, 4]]))}"'))], "NaN"),
    "missing data file": (lambda t: ["run", cfg(t, edit("n = 100", 'n = 3\ninit = "file"\nfile = "nope.npy"'))], "no such file"),
    "data file wrong shape": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy(t, np.zeros((3, 5)))}"'))], "shape (n, 2)"),
    "unwritable output": (lambda t: ["run", cfg(t, GOOD), "--out", str(t / "keep.h5" / "x.h5")], "cannot create output directory"),
    "existing output without --force": (lambda t: ["run", cfg(t, GOOD), "--out", str(t / "keep.h5")], "--force"),
    "missing config": (lambda t: ["run", str(t / "absent.toml")], "no such config file"),
    "malformed --set": (lambda t: ["run", cfg(t, GOOD), "--set", "run.steps"], "key=value"),
    "unknown key via --set": (lambda t: ["run", cfg(t, GOOD), "--set", "run.stepz=3"], "did you mean 'steps'"),
    "unknown move": (lambda t: ["run", cfg(t, edit('move = "mala"', 'move = "gibbs"'))], "must be one of"),
    "undefined ensemble": (lambda t: ["run", cfg(t, edit('ensemble = "chains"', 'ensemble = "walkers"'))], "'walkers' is not defined"),
    "missing required key": (lambda t: ["run", cfg(t, edit('move = "mala"', 'move = "hmc"'))], "missing required key 'schedule[0].n_leapfrog'"),
    "bad dtype": (lambda t: ["run", cfg(t, edit("seed = 1", 'seed = 1\ndtype = "float16"'))], "run.dtype must be one of"),
    "ess threshold out of range": (lambda t: ["run", cfg(t, GOOD + '[[schedule]]\nmove = "resample"\nensemble = "chains"\ness_threshold = 1.5\n')], "<= 1"),
    "restart probability out of range": (lambda t: ["run", cfg(t, GOOD + '[[schedule]]\nmove = "restart"\nensemble = "chains"\nsource = "chains"\nprobability = 2.0\n')], "probability must be"),
    "negative seed": (lambda t: ["run", cfg(t, GOOD), "--seed", "-1"], "run.seed must be >= 0"),
    "gaussian without precision": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]'))], "needs energy.mean and energy.precision"),
    "not positive definite": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]\nprecision = [[1.0, 2.0], [2.0, 1.0]]'))], "positive definite"),
    "diverging run": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]\nprecision = [[10000.0, 0.0], [0.0, 10000.0]]').replace('move = "mala"', 'move = "langevin"').replace("step_size = 0.3", "step_size = 0.5")), "--out", str(t / "div.h5"), "--steps", "400", "--quiet"], "diverged at step"),
    "truncated HDF5 to inspect": (lambda t: ["inspect", _truncated(t)], "not a readable HDF5"),
    "random bytes to resume": (lambda t: ["resume", _garbage(t)], "no readable checkpoint"),
    "plain HDF5 to inspect": (lambda t: ["inspect", _plain_h5(t)], "not a particleflow trajectory"),
    "missing trajectory to resume": (lambda t: ["resume", str(t / "none.h5")], "no such trajectory"),
    "random bytes to repair": (lambda t: ["repair", _garbage(t)], "not a readable HDF5 trajectory"),
}


def _truncated(t):
    p = t / "trunc.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(1000.0)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 3])
    return str(p)


def _garbage(t):
    p = t / "garbage.h5"
    p.write_bytes(os.urandom(4096))
    return str(p)


def _plain_h5(t):
    p = t / "plain.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    return str(p)


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_exits_2_with_one_line(case, tmp_path):
    make, expected = CASES[case]
    args = make(tmp_path)
    r = invoke(args, tmp_path)
    assert r.exit_code == 2, (r.exit_code, r.output, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in r.output + r.stderr


def test_real_process_exit_code_and_no_traceback(tmp_path):
    p = cfg(tmp_path, edit("steps = 20", "steps = -5"))
    r = subprocess.run([sys.executable, "-m", "particleflow.cli", "run", p], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: run.steps must be >= 1 and <= 4294967295; got -5"


def test_good_run_set_override_and_inspect(tmp_path):
    out = str(tmp_path / "ok.h5")
    r = invoke(["run", cfg(tmp_path, GOOD), "--out", out, "--set", "ensembles.chains.n=50", "--quiet"], tmp_path)
    assert r.exit_code == 0, r.stderr
    with h5py.File(out, "r") as f:
        assert f["particles/chains/position/value"].shape == (3, 50, 2)
        assert "n = 50" in f["parameters"].attrs["config"]
    r = invoke(["inspect", out], tmp_path)
    assert r.exit_code == 0 and "chains" in r.output and "mala_0/acceptance" in r.output
    r = invoke(["list"], tmp_path)
    assert r.exit_code == 0 and "sample" in r.output
    # an existing output is kept without --force, replaced with it
    before = digest(out)
    assert invoke(["run", cfg(tmp_path, GOOD), "--out", out], tmp_path).exit_code == 2
    assert digest(out) == before
    r = CliRunner().invoke(cli, ["run", cfg(tmp_path, GOOD), "--out", out, "--force", "--quiet"])
    assert r.exit_code == 0 and digest(out) != before
