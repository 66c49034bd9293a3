"""Trajectory layout, crash safety (SIGKILL), exact resume, concurrent reading."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import particleflow as pf
from conftest import assert_same_datasets

CONFIG = """
[run]
steps = {steps}
seed = 3
dtype = "float64"
[output]
every = 10
checkpoint_every = {ckpt}
plot = false
[energy]
kind = "gaussian_mixture"
ring_components = 6
ring_radius = 3.0
[ensembles.chains]
n = {n}
[[schedule]]
move = "mala"
ensemble = "chains"
step_size = 0.3
[[schedule]]
move = "hmc"
ensemble = "chains"
every = 7
step_size = 0.2
n_leapfrog = 3
"""


def write_config(tmp_path, steps=200, n=500, ckpt=50, name="run.toml"):
    p = tmp_path / name
    p.write_text(CONFIG.format(steps=steps, n=n, ckpt=ckpt))
    return str(p)


def cli(*args, cwd, check=True, **kw):
    r = subprocess.run([sys.executable, "-m", "particleflow.cli", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "particleflow.cli", *args, "--quiet"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_layout_with_plain_h5py(tmp_path):
    cfg = write_config(tmp_path)
    out = str(tmp_path / "t.h5")
    cli("run", cfg, "--out", out, "--quiet", cwd=tmp_path)
    with h5py.File(out, "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/author"].attrs["name"]
        assert f["h5md/creator"].attrs["name"] == "particleflow"
        assert "description" in f["h5md/modules/particleflow"].attrs
        box = f["particles/chains/box"]
        assert box.attrs["dimension"] == 2 and list(box.attrs["boundary"]) == ["none", "none"]
        pos = f["particles/chains/position"]
        assert pos["value"].shape == (21, 500, 2)
        np.testing.assert_array_equal(pos["step"][:], np.arange(0, 201, 10))
        np.testing.assert_array_equal(pos["time"][:], np.arange(0, 201, 10))
        # ids never changed: the id element holds the first frame only
        assert f["particles/chains/id/value"].shape == (1, 500)
        np.testing.assert_array_equal(f["particles/chains/id/step"][:], [0])
        assert f["observables/mala_0/acceptance/value"].shape == (20,)
        assert "ring_components = 6" in f["parameters"].attrs["config"]
        assert f["parameters"].attrs["seed"] == 3
        assert "chains" in f["results"]
    with pf.io.open_run(out) as r:
        assert r.config["run"]["steps"] == 200
        np.testing.assert_array_equal(r.ensembles["chains"].steps, np.arange(0, 201, 10))
        assert r.ensembles["chains"].positions[-1].shape == (500, 2)
        assert r.ensembles["chains"].positions[2:5].shape == (3, 500, 2)
        assert len(r.observables["mala_0/acceptance"].values) == 20
        e = pf.experiments.load_energy(r)
        assert isinstance(e, pf.energies.GaussianMixture) and e.n_components == 6


@pytest.mark.slow
def test_sigkill_leaves_readable_file_and_resume_is_bitwise(tmp_path):
    cfg = write_config(tmp_path, steps=3000, n=4000, ckpt=100)
    ref = str(tmp_path / "ref.h5")
    cli("run", cfg, "--out", ref, "--quiet", cwd=tmp_path)
    out = str(tmp_path / "killed.h5")
    proc = start("run", cfg, "--out", out, cwd=tmp_path)
    ck = out + ".ckpt"

    def progressed():
        if not os.path.exists(ck):
            return False
        try:
            return pf.io.read_checkpoint(ck)["step"] >= 300
        except ValueError:
            return False
    wait_for(progressed, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the killed file opens (SWMR read) and holds every flushed frame
    with pf.io.open_run(out) as r:
        e = r.ensembles["chains"]
        n = len(e.positions)
        assert n >= 31
        frames = np.asarray(e.positions[:])
        assert np.isfinite(frames).all()
        np.testing.assert_array_equal(e.steps, np.arange(0, 10 * n, 10))
    # `particleflow repair` makes a copy of the killed file open with plain h5py
    import shutil
    fixed = str(tmp_path / "fixed.h5")
    shutil.copy(out, fixed)
    with pytest.raises(OSError):
        h5py.File(fixed, "r")
    cli("repair", fixed, cwd=tmp_path)
    with h5py.File(fixed, "r") as f:
        assert f["particles/chains/position/value"].shape[0] == n
        assert f["particles/chains/position/value"][:].tobytes() == frames.tobytes()
    r = cli("resume", out, "--quiet", cwd=tmp_path)
    assert assert_same_datasets(ref, out) > 10     # every dataset, ids included, bitwise
    with h5py.File(out, "r") as f:                 # the resumed file is clean again
        assert f["particles/chains/position/value"].shape[0] == 301


def test_sigterm_checkpoints_and_exits_143(tmp_path):
    cfg = write_config(tmp_path, steps=100000, n=2000, ckpt=100000)
    out = str(tmp_path / "term.h5")
    proc = start("run", cfg, "--out", out, cwd=tmp_path)

    def has_frames():
        try:
            with pf.io.open_run(out) as r:
                return len(r.ensembles["chains"].positions) > 5
        except (ValueError, OSError, KeyError):
            return False
    wait_for(has_frames, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    st = pf.io.read_checkpoint(out + ".ckpt")
    with h5py.File(out, "r") as f:                 # closed cleanly: plain h5py opens it
        steps = f["particles/chains/position/step"][:]
        # the step in progress finished; frames are every 10 steps up to the checkpoint
        assert st["step"] - 10 < steps[-1] <= st["step"]
        assert st["frames"]["chains/position"] == len(steps)


@pytest.mark.slow
def test_reader_in_another_process_while_writing(tmp_path):
    """1000+ reads with open_run from a second process while the writer runs: every
    read sees a consistent prefix (steps and values of equal length, positions and
    their steps too) and counts never go back."""
    cfg = write_config(tmp_path, steps=200000, n=500, ckpt=100000)
    out = str(tmp_path / "live.h5")
    proc = start("run", cfg, "--out", out, cwd=tmp_path)
    wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > 0, proc)
    reader = r"""
import sys, numpy as np, particleflow as pf
seen, reads = [], 0
while reads < 1000 or len(set(seen)) < 3:
    with pf.io.open_run(sys.argv[1]) as r:
        e = r.ensembles["chains"]
        n = len(e.positions)
        assert len(e.steps) == n, (len(e.steps), n)
        if n:
            assert np.isfinite(e.positions[n - 1]).all()
        for k, o in r.observables.items():
            st, v = o.steps, o.values
            assert len(st) == len(v), (k, len(st), len(v))
            assert np.all(np.diff(st) > 0), k
        seen.append(n)
    reads += 1
    if reads > 20000:
        break
assert seen == sorted(seen) and seen[-1] > seen[0], seen[:5]
print("READ-OK", reads, seen[0], seen[-1])
"""
    try:
        r = subprocess.run([sys.executable, "-c", reader, out], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert r.returncode == 0 and "READ-OK" in r.stdout, r.stderr[-2000:]
    assert int(r.stdout.split()[1]) >= 1000


@pytest.mark.slow
def test_damaged_files_answer_within_two_seconds(tmp_path):
    cfg = write_config(tmp_path, steps=50, n=200, ckpt=50)
    good = str(tmp_path / "good.h5")
    cli("run", cfg, "--out", good, "--quiet", cwd=tmp_path)
    data = open(good, "rb").read()
    for frac in (0.1, 0.5, 0.9, 0.9999):
        cut = str(tmp_path / f"cut{frac}.h5")
        open(cut, "wb").write(data[:int(len(data) * frac)])
        for cmd in ("inspect", "plot", "repair", "resume"):
            before = open(cut, "rb").read()
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", "import sys; from particleflow.cli import main; main(sys.argv[1:])",
                                cmd, cut], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            elapsed = time.perf_counter() - t0
            assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
            assert open(cut, "rb").read() == before
            assert elapsed < 2.0 + _IMPORT_SECONDS[0], (cmd, frac, elapsed)


_IMPORT_SECONDS = [0.0]


@pytest.fixture(autouse=True, scope="module")
def _import_time():
    """Start-up of a fresh interpreter importing particleflow (not part of the answer time)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import particleflow.cli"], check=True)
    _IMPORT_SECONDS[0] = time.perf_counter() - t0


def test_writer_cost_is_flat(tmp_path):
    """Frame write time does not grow with the file (constant per-frame cost)."""
    ens = pf.Ensemble(np.zeros((1000, 2)))
    w = pf.io.TrajectoryWriter(str(tmp_path / "w.h5"), {"e": ens}, {"o": 0.0}, {"config": ""})
    times = []
    for t in range(3000):
        t0 = time.perf_counter()
        w.write_frame(t, {"e": ens})
        w.write_observable("o", t, 1.0)
        times.append(time.perf_counter() - t0)
    w.close()
    early, late = np.median(times[10:500]), np.median(times[-500:])
    assert late < 3 * early + 1e-4


def test_id_frames_follow_resampling(tmp_path):
    text = CONFIG.format(steps=100, n=300, ckpt=50) + (
        '[[schedule]]\nmove = "resample"\nensemble = "chains"\nevery = 40\n')
    p = tmp_path / "rs.toml"
    p.write_text(text)
    out = str(tmp_path / "rs.h5")
    cli("run", str(p), "--out", out, "--quiet", cwd=tmp_path)
    with h5py.File(out, "r") as f:
        # resampling at steps 0, 40, 80 gives fresh ids; frames are taken every 10 steps
        np.testing.assert_array_equal(f["particles/chains/id/step"][:], [0, 10, 50, 90])
        ids = f["particles/chains/id/value"][:]
        assert ids[0].min() == 0 and ids[1].min() == 300 and ids[-1].min() == 900
