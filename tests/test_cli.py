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
from conftest import message_lines

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
    "unwritable output": (lambda t: ["run", cfg(t, GOOD), "--out", str(t / "keep.h5" / "x.h5")], "is not a directory"),
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
    "negative seed": (lambda t: ["run", cfg(t, GOOD), "--set", "run.seed=-1"], "run.seed must be >= 0"),
    "gaussian without precision": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]'))], "needs energy.mean and energy.precision"),
    "not positive definite": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]\nprecision = [[1.0, 2.0], [2.0, 1.0]]'))], "positive definite"),
    "diverging run": (lambda t: ["run", cfg(t, edit('kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0', 'kind = "gaussian"\nmean = [0.0, 0.0]\nprecision = [[10000.0, 0.0], [0.0, 10000.0]]').replace('move = "mala"', 'move = "langevin"').replace("step_size = 0.3", "step_size = 0.5")), "--out", str(t / "div.h5"), "--steps", "400", "--quiet"], "diverged at step"),
    "sweep value with a path separator": (lambda t: ["run", cfg(t, GOOD + '[sweep]\n"output.compression" = ["none", "a/b"]\n'), "--out", str(t / "s.h5")], "output.compression must be one of"),
    "truncated HDF5 to inspect": (lambda t: ["inspect", _truncated(t)], "is truncated"),
    "random bytes to resume": (lambda t: ["resume", _garbage(t)], "no readable checkpoint"),
    "plain HDF5 to inspect": (lambda t: ["inspect", _plain_h5(t)], "not a particleflow trajectory"),
    "missing trajectory to resume": (lambda t: ["resume", str(t / "none.h5")], "no such trajectory"),
    "random bytes to repair": (lambda t: ["repair", _garbage(t)], "not an HDF5 file"),
}

MIX = 'kind = "gaussian_mixture"\nring_components = 6\nring_radius = 3.0'


def energy(text):
    return edit(MIX, text)


def sched(text):
    return GOOD + "[[schedule]]\n" + text + "\n"


def imp(text=""):
    return 'estimator = "importance_ml"\n[run]\nruns = 20\n[grid]\npoints = 5\n[fit]\nruns = 1\niterations = 2\n' \
        'average_last = 1\n[output]\nplot = false\n' + text


def dual(text=""):
    return 'estimator = "dual_ebm"\n[run]\nsteps = 2\n[data]\nd = 4\nn = 50\nn_test = 50\n[model]\n' \
        'neurons = 4\nparticles = 50\n[output]\nplot = false\n' + text


def npy_bytes(t, data, name="raw.npy"):
    p = t / name
    p.write_bytes(data)
    return str(p)


CASES.update({
    # config values
    "steps zero": (lambda t: ["run", cfg(t, edit("steps = 20", "steps = 0"))], "run.steps must be >= 1"),
    "steps fractional": (lambda t: ["run", cfg(t, edit("steps = 20", "steps = 1.5"))], "run.steps must be an integer"),
    "seed too large": (lambda t: ["run", cfg(t, edit("seed = 1", "seed = 4294967296"))], "run.seed must be"),
    "every zero": (lambda t: ["run", cfg(t, edit("every = 10", "every = 0"))], "output.every must be >= 1"),
    "compression unknown": (lambda t: ["run", cfg(t, edit("every = 10", 'every = 10\ncompression = "zip"'))], "output.compression must be one of"),
    "plot not bool": (lambda t: ["run", cfg(t, edit("plot = false", 'plot = "no"'))], "output.plot must be true or false"),
    "energy kind unknown": (lambda t: ["run", cfg(t, energy('kind = "banana"'))], "energy.kind must be one of"),
    "energy missing": (lambda t: ["run", cfg(t, GOOD.replace("[energy]\n" + MIX + "\n", ""))], "missing required key 'energy'"),
    "means ragged": (lambda t: ["run", cfg(t, energy('kind = "gaussian_mixture"\nmeans = [[0.0, 0.0], [1.0]]'))], "energy.means must be an array"),
    "means strings": (lambda t: ["run", cfg(t, energy('kind = "gaussian_mixture"\nmeans = [["a", "b"]]'))], "energy.means must be an array"),
    "means and ring": (lambda t: ["run", cfg(t, energy(MIX + '\nmeans = [[0.0, 0.0]]'))], "exactly one of"),
    "ring of zero": (lambda t: ["run", cfg(t, energy(MIX.replace("6", "0")))], "ring_components must be >= 1"),
    "ring of a billion": (lambda t: ["run", cfg(t, energy(MIX.replace("6", "1000000000")))],
                          "ring_components must be <= 100000"),
    "scale zero": (lambda t: ["run", cfg(t, energy(MIX + "\nscale = 0.0"))], "energy.scale must be > 0"),
    "scale nan": (lambda t: ["run", cfg(t, energy(MIX + "\nscale = nan"))], "must be finite"),
    "weights negative": (lambda t: ["run", cfg(t, energy(MIX + "\nweights = [1.0, 1.0, 1.0, 1.0, 1.0, -1.0]"))], "weights"),
    "weights wrong length": (lambda t: ["run", cfg(t, energy(MIX + "\nweights = [1.0, 1.0]"))], "weights"),
    "gaussian mean ragged": (lambda t: ["run", cfg(t, energy('kind = "gaussian"\nmean = [0.0, [1.0]]\nprecision = [[1.0, 0.0], [0.0, 1.0]]'))], "energy.mean must be an array"),
    "gaussian shapes disagree": (lambda t: ["run", cfg(t, energy('kind = "gaussian"\nmean = [0.0, 0.0, 0.0]\nprecision = [[1.0, 0.0], [0.0, 1.0]]'))], "energy:"),
    "ensembles empty": (lambda t: ["run", cfg(t, "ensembles = {}\n" + GOOD.replace("[ensembles.chains]\nn = 100\n", ""))], "at least one ensemble"),
    "a trillion particles": (lambda t: ["run", cfg(t, edit("n = 100", "n = 1000000000000"))], "GiB of memory"),
    "four billion particles": (lambda t: ["run", cfg(t, edit("n = 100", "n = 4000000000"))], "GiB of memory"),
    "ensemble name with slash": (lambda t: ["run", cfg(t, GOOD.replace("[ensembles.chains]", '[ensembles."a/b"]').replace('ensemble = "chains"', 'ensemble = "a/b"'))], "name is not allowed"),
    "ensemble name dot": (lambda t: ["run", cfg(t, GOOD.replace("[ensembles.chains]", '[ensembles."."]').replace('ensemble = "chains"', 'ensemble = "."'))], "name is not allowed"),
    "init file without file": (lambda t: ["run", cfg(t, edit("n = 100", 'n = 3\ninit = "file"'))], "needs ensembles.chains.file"),
    "init file empty bytes": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy_bytes(t, b"")}"'))], "cannot read"),
    "init file zero rows": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy(t, np.zeros((0, 2)))}"'))], "n >= 1"),
    "init file text": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy_bytes(t, b"1 2 3")}"'))], "cannot read"),
    "init file strings": (lambda t: ["run", cfg(t, edit("n = 100", f'n = 3\ninit = "file"\nfile = "{npy(t, np.array([["a", "b"]]))}"'))], "numeric array"),
    "schedule empty": (lambda t: ["run", cfg(t, "schedule = []\n" + GOOD.split("[[schedule]]")[0])], "at least one move"),
    "schedule entry not a table": (lambda t: ["run", cfg(t, "schedule = [1]\n" + GOOD.split("[[schedule]]")[0])], "must be a table"),
    "mala step zero": (lambda t: ["run", cfg(t, edit("step_size = 0.3", "step_size = 0.0"))], "step_size must be > 0"),
    "hmc n_leapfrog zero": (lambda t: ["run", cfg(t, sched('move = "hmc"\nensemble = "chains"\nstep_size = 0.1\nn_leapfrog = 0'))], "n_leapfrog must be >= 1"),
    "restart unknown source": (lambda t: ["run", cfg(t, sched('move = "restart"\nensemble = "chains"\nsource = "data"\nprobability = 0.1'))], "'data' is not defined"),
    "resample unknown scheme": (lambda t: ["run", cfg(t, sched('move = "resample"\nensemble = "chains"\nscheme = "lottery"'))], "scheme must be one of"),
    "langevin negative noise": (lambda t: ["run", cfg(t, sched('move = "langevin"\nensemble = "chains"\nstep_size = 0.1\nnoise_scale = -1.0'))], "noise_scale must be >= 0"),
    "slot every zero": (lambda t: ["run", cfg(t, edit('step_size = 0.3', 'step_size = 0.3\nevery = 0'))], "every must be >= 1"),
    "duplicate slot names": (lambda t: ["run", cfg(t, edit('step_size = 0.3', 'step_size = 0.3\nname = "a"') + '[[schedule]]\nmove = "mala"\nensemble = "chains"\nstep_size = 0.3\nname = "a"\n')], "already exists"),
    "estimator unknown": (lambda t: ["run", cfg(t, 'estimator = "nope"\n' + GOOD)], "estimator must be one of"),
    "config is a directory": (lambda t: ["run", str(t)], "cannot read config"),
    # --set and options
    "--set index out of range": (lambda t: ["run", cfg(t, GOOD), "--set", "schedule.5.step_size=0.1"], "indices 0..0"),
    "--set index not a number": (lambda t: ["run", cfg(t, GOOD), "--set", "schedule.x.step_size=0.1"], "not an element"),
    "--set through a value": (lambda t: ["run", cfg(t, GOOD), "--set", "run.steps.x=1"], "is a value, not a table"),
    "--set empty key": (lambda t: ["run", cfg(t, GOOD), "--set", ".=1"], "dotted key"),
    "--max-memory garbage": (lambda t: ["run", cfg(t, GOOD), "--max-memory", "lots"], "--max-memory must be a size"),
    "--max-memory too small": (lambda t: ["run", cfg(t, GOOD), "--max-memory", "1K", "--out", str(t / "m.h5")], "GiB of memory"),
    "--out is a directory": (lambda t: ["run", cfg(t, GOOD), "--out", str(t)], "is a directory"),
    "--out is a directory with --force": (lambda t: ["run", cfg(t, GOOD), "--out", str(t), "--force"], "is a directory"),
    "--out under /proc": (lambda t: ["run", cfg(t, GOOD), "--out", "/proc/particleflow-test/x.h5"], "cannot"),
    # sweeps
    "sweep repeated value": (lambda t: ["run", cfg(t, GOOD + '[sweep]\n"run.seed" = [1, 1]\n'), "--out", str(t / "s.h5")], "same file"),
    "sweep not a table": (lambda t: ["run", cfg(t, "sweep = 3\n" + GOOD)], "sweep must be a table"),
    "sweep empty list": (lambda t: ["run", cfg(t, GOOD + '[sweep]\n"run.seed" = []\n')], "non-empty arrays"),
    "sweep missing index": (lambda t: ["run", cfg(t, GOOD + '[sweep]\n"schedule.9.step_size" = [0.1]\n')], "indices 0..0"),
    "sweep bad value": (lambda t: ["run", cfg(t, GOOD + '[sweep]\n"run.steps" = [10, -1]\n'), "--out", str(t / "s.h5")], "run.steps must be >= 1"),
    # other experiments
    "importance grid of a billion": (lambda t: ["run", cfg(t, imp().replace("points = 5", "points = 1000000000"))], "GiB of memory"),
    "importance grid reversed": (lambda t: ["run", cfg(t, imp("[grid]\ntheta_min = 3.0\ntheta_max = 1.0\n").replace("[grid]\npoints = 5\n", ""))], "must be < grid.theta_max"),
    "importance unknown route": (lambda t: ["run", cfg(t, imp().replace("runs = 1", 'runs = 1\nroutes = ["mcmc"]'))], "unknown route 'mcmc'"),
    "importance empty M": (lambda t: ["run", cfg(t, imp("[sampling]\nM = []\n"))], "sampling.M must be"),
    "importance zero M": (lambda t: ["run", cfg(t, imp("[sampling]\nM = [0]\n"))], "sampling.M must be"),
    "importance fit runs exceed runs": (lambda t: ["run", cfg(t, imp().replace("[fit]\nruns = 1", "[fit]\nruns = 50"))], "must be <= run.runs"),
    "dual positive teacher weight": (lambda t: ["run", cfg(t, dual("[teacher]\nweight = 1.0\n"))], "teacher.weight must be negative"),
    "dual huge teacher weight": (lambda t: ["run", cfg(t, dual("[teacher]\nweight = -1000000.0\n")), "--out", str(t / "d.h5")], "rejection sampler"),
    "dual huge beta": (lambda t: ["run", cfg(t, dual("[teacher]\nbeta = 1000000.0\n")), "--out", str(t / "d.h5")], "rejection sampler"),
    "dual a trillion data": (lambda t: ["run", cfg(t, dual().replace("n = 50\n", "n = 1000000000000\n", 1))], "GiB of memory"),
    "dual dimension 1e5": (lambda t: ["run", cfg(t, dual().replace("d = 4", "d = 100000").replace("n = 50\nn_test = 50", "n = 2000\nn_test = 5000").replace("particles = 50", "particles = 4000"))], "GiB of memory"),
    "dual a trillion particles": (lambda t: ["run", cfg(t, dual().replace("particles = 50", "particles = 1000000000000"))], "GiB of memory"),
    "dual step 1e300": (lambda t: ["run", cfg(t, dual("[dual]\nstep = 1e300\n")), "--out", str(t / "d.h5")], "overflowed"),
    "gaussian_ml zero dimension": (lambda t: ["run", cfg(t, 'estimator = "gaussian_ml"\n[data]\nd = 0\n')], "data.d must be >= 1"),
    # files
    "inspect missing file": (lambda t: ["inspect", str(t / "none.h5")], "no such file"),
    "inspect text file": (lambda t: ["inspect", npy_bytes(t, b"hello", "text.h5")], "not an HDF5 file"),
    "inspect foreign H5MD": (lambda t: ["inspect", _foreign_h5md(t)], "not written by particleflow"),
    "plot foreign H5MD": (lambda t: ["plot", _foreign_h5md(t)], "not written by particleflow"),
    "plot truncated run": (lambda t: ["plot", _truncated_run(t)], "is truncated"),
    "plot onto an existing file": (lambda t: ["plot", _run(t), "--out", str(t / "keep.h5")], "--force"),
    "plot onto a directory": (lambda t: ["plot", _run(t), "--out", str(t)], "is a directory"),
    "plot of zero frames": (lambda t: ["plot", _empty_run(t)], "no committed frames"),
    "repair zero frames": (lambda t: ["repair", _empty_run(t)], "no committed frames"),
    "repair foreign H5MD": (lambda t: ["repair", _foreign_h5md(t)], "not written by particleflow"),
    "repair truncated run": (lambda t: ["repair", _truncated_run(t)], "is truncated"),
    "resume without checkpoint": (lambda t: ["resume", _empty_run(t)], "no readable checkpoint"),
    "resume complete run": (lambda t: ["resume", _run(t)], "already complete"),
    "resume truncated run": (lambda t: ["resume", _truncated_run(t, keep_ckpt=True)], "is truncated"),
    "resume foreign H5MD with a checkpoint": (lambda t: ["resume", _foreign_with_ckpt(t)], "not written by particleflow"),
    "resume checkpoint of a longer run": (lambda t: ["resume", _mismatched_ckpt(t)], "do not belong together"),
    "demo zero chains": (lambda t: ["demo", "--n", "0"], "must be >= 1"),
    "demo a trillion chains": (lambda t: ["demo", "--n", "1000000000000"], "GiB of memory"),
    "demo negative step": (lambda t: ["demo", "--n", "10", "--steps", "2", "--step-size", "-1"], "step_size must be"),
})


def _run(t, steps=20, name="done.h5"):
    out = t / name
    if not out.exists():
        r = CliRunner().invoke(cli, ["run", cfg(t, edit("steps = 20", f"steps = {steps}"), "r.toml"), "--out", str(out),
                                     "--quiet", "--set", "output.checkpoint_every=20"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    return str(out)


def _truncated_run(t, keep_ckpt=False):
    src = _run(t, 40, "long.h5")
    p = t / "cut.h5"
    data = open(src, "rb").read()
    p.write_bytes(data[:len(data) - 100])
    if keep_ckpt:                      # the step-20 checkpoint of the 40-step run
        (t / "cut.h5.ckpt").write_bytes(open(src + ".ckpt.prev", "rb").read())
    return str(p)


def _foreign_h5md(t):
    p = t / "foreign.h5"
    with h5py.File(p, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        f.create_group("particles/atoms/position").create_dataset("value", data=np.zeros((2, 3, 3)))
        f["particles/atoms/position"].create_dataset("step", data=[0, 1])
    return str(p)


def _foreign_with_ckpt(t):
    p = _foreign_h5md(t)
    src = _run(t, 40, "long.h5")
    open(p + ".ckpt", "wb").write(open(src + ".ckpt.prev", "rb").read())
    return p


def _empty_run(t):
    import particleflow as pf
    p = t / "empty.h5"
    w = pf.io.TrajectoryWriter(str(p), {"chains": pf.Ensemble(np.zeros((3, 2)))}, {"o": 0.0}, {"config": GOOD})
    w.close()
    return str(p)


def _mismatched_ckpt(t):
    short = _run(t, 10, "short.h5")
    long_ = _run(t, 40, "long.h5")
    p = t / "mixed.h5"
    p.write_bytes(open(short, "rb").read())
    (t / "mixed.h5.ckpt").write_bytes(open(long_ + ".ckpt.prev", "rb").read())
    return str(p)


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
    if case == "diverging run":                     # the frames before the divergence are kept
        with h5py.File(tmp_path / "div.h5", "r") as f:
            steps = f["particles/chains/position/step"][:]
            assert steps[0] == 0 and steps[-1] < 400


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


def test_full_disk_is_one_user_error_line(tmp_path):
    """A run on a full file system (a 2 MiB tmpfs) ends with exit 2 and one line;
    needs root to mount, skipped otherwise."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(tiny)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        text = edit("steps = 20", "steps = 2000").replace("n = 100", "n = 5000")
        r = subprocess.run([sys.executable, "-m", "particleflow.cli", "run", cfg(tmp_path, text), "--out",
                            str(tiny / "full.h5"), "--quiet"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "no space left" in lines[0], r.stderr
        assert not [p for p in os.listdir(tiny) if p.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


def test_sweep_values_become_safe_file_names(tmp_path):
    text = edit("steps = 20", "steps = 2") + '[sweep]\n"energy.ring_radius" = [1.5, 3.0]\n"schedule.0.name" = ["a/b", "c d"]\n'
    r = invoke(["run", cfg(tmp_path, text), "--out", str(tmp_path / "s.h5"), "--quiet"], tmp_path)
    assert r.exit_code == 0, r.stderr
    names = sorted(p for p in os.listdir(tmp_path) if p.startswith("s_") and p.endswith(".h5"))
    assert names == ["s_ring_radius=1.5_name=a_b.h5", "s_ring_radius=1.5_name=c_d.h5",
                     "s_ring_radius=3.0_name=a_b.h5", "s_ring_radius=3.0_name=c_d.h5"], names


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, pytest.param(3.0, marks=pytest.mark.slow)])
def test_ctrl_c_at_any_moment_exits_130_with_one_line(tmp_path, delay):
    """SIGINT while Python imports numba, while the config is built, or while the run
    goes: exit 130, one line on stderr, no traceback."""
    import signal
    import time
    text = edit("steps = 20", "steps = 100000")
    # SIGINT as a terminal delivers it: a test session started in the background of a
    # shell without job control inherits SIGINT ignored, and Python keeps it ignored
    p = subprocess.Popen([sys.executable, "-c", "from particleflow._main import main; main()", "run",
                          cfg(tmp_path, text), "--out", str(tmp_path / "i.h5"), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    lines = message_lines(err)
    assert p.returncode == 130 and len(lines) == 1 and "Traceback" not in err, (p.returncode, err)
    assert lines[0].startswith("interrupted")


def test_every_shipped_config_declares_its_cost_and_list_shows_it():
    """Each runs/*.toml has a `# cost:` line (its measured time on 2 cores) and
    `particleflow list` prints it beside the config's name."""
    import glob
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "runs", "*.toml")))
    from particleflow.cli import config_cost
    missing = [os.path.basename(f) for f in files if not config_cost(f)]
    assert not missing, missing
    r = CliRunner().invoke(cli, ["list"])
    assert r.exit_code == 0
    line = [ln for ln in r.output.splitlines() if ln.strip().startswith("demo.toml")][0]
    assert config_cost(os.path.join(root, "runs", "demo.toml")) in line


def _dry_run(config, tmp_path):
    out = tmp_path / "never.h5"
    r = CliRunner().invoke(cli, ["run", config, "--dry-run", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not out.exists() and not list(tmp_path.iterdir())            # nothing written
    return r.output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = _dry_run(os.path.join(root, "runs", "demo.toml"), tmp_path)
    assert "100000 x (2,) float32  a frame every 20 steps" in text
    assert "mala_0" in text and "Langevin on chains every 10 steps" in text
    assert "memory estimate" in text and "trajectory estimate: 154.1 MB" in text and "cost: about 20 s" in text
    text = _dry_run(os.path.join(root, "runs", "dual_ebm_restart_sweep.toml"), tmp_path)
    assert text.startswith("sweep over dual.restart_probability: 5 runs")


@pytest.mark.slow
def test_dry_run_works_for_every_shipped_config(tmp_path):
    """Every runs/*.toml builds and prints its plan (logz_deen_ring reads deen_ring's output,
    so it is given one)."""
    import glob
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for f in sorted(glob.glob(os.path.join(root, "runs", "*.toml"))):
        if os.path.basename(f) == "logz_deen_ring.toml":
            continue
        d = tmp_path / os.path.basename(f)
        d.mkdir()
        text = _dry_run(f, d)
        assert "schedule" in text and "steps:" in text, f
