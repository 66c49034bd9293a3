"""SIGTERM at any moment before a run has started (reading the config, running a
user's energy file, building the experiment) ends the command within 2 s with one
line, exit code 143, and no file written."""
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import message_lines

SLOW = """import time
def make():
    time.sleep(60)
    return lambda x: (0.5 * (x * x).sum(1), x)
"""
CONFIG = """estimator = "sample"
[run]
steps = 10
[output]
plot = false
[energy]
python = "slow.py:make"
dim = 2
[ensembles.c]
n = 10
[[schedule]]
move = "mala"
ensemble = "c"
step_size = 0.1
"""


@pytest.mark.parametrize("delay", [0.05, pytest.param(3.0, marks=pytest.mark.slow)])
def test_sigterm_before_the_run_starts_exits_143_with_one_line(tmp_path, delay):
    """0.05 s: during start-up (imports); 3 s: inside the user's energy function."""
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "c.toml").write_text(CONFIG)
    p = subprocess.Popen([sys.executable, "-m", "particleflow._main", "run", str(tmp_path / "c.toml"), "--out",
                          str(tmp_path / "o.h5")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    t = time.time()
    _, err = p.communicate(timeout=30)
    assert time.time() - t < 2.0
    assert p.returncode == 143, err
    assert len(message_lines(err)) == 1 and "terminated" in err, err
    assert sorted(os.listdir(tmp_path)) == ["c.toml", "slow.py"] or \
        sorted(os.listdir(tmp_path)) == ["__pycache__", "c.toml", "slow.py"]


@pytest.mark.slow
def test_sigterm_while_a_deen_config_builds_exits_143_with_one_line(tmp_path):
    """The DEEN ring config spends tens of seconds building (Parzen bandwidth selection,
    kernels) before its first step: a SIGTERM there ends it at once (after the numba
    compilation in progress, if any), not after the build."""
    runs = os.path.join(os.path.dirname(__file__), "..", "runs")
    p = subprocess.Popen([sys.executable, "-m", "particleflow._main", "run", os.path.join(runs, "deen_ring.toml"),
                          "--out", str(tmp_path / "d.h5")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    t = time.time()
    _, err = p.communicate(timeout=60)
    assert time.time() - t < 10
    assert p.returncode == 143 and len(message_lines(err)) == 1 and "nothing was written" in err, err
    assert os.listdir(tmp_path) == []


def test_a_signal_while_the_end_of_run_values_are_computed_stops_them_and_resume_computes_them(
        tmp_path, monkeypatch, capsys):
    """After the loop, computing the results may take seconds: a SIGTERM there stops the
    run at once (exit 143, one line, trajectory and final checkpoint complete, no
    results); ``resume`` then computes them, and the file equals an uninterrupted run's."""
    from conftest import assert_same_datasets
    from particleflow import experiments
    from particleflow.cli import main
    from particleflow.io import open_run
    text = CONFIG.replace('python = "slow.py:make"\ndim = 2', 'kind = "gaussian_mixture"\nring_components = 3\nring_radius = 2.0')
    (tmp_path / "c.toml").write_text(text)
    full, part = str(tmp_path / "full.h5"), str(tmp_path / "part.h5")
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "c.toml"), "--out", full, "--quiet"])
    assert e.value.code == 0
    exp = experiments.get("sample")
    original = type(exp).results
    calls = []

    def results(self, sim, cfg):
        calls.append(sim.step)
        os.kill(os.getpid(), signal.SIGTERM)       # Python runs the handler at the next bytecode
        return original(self, sim, cfg)
    monkeypatch.setattr(type(exp), "results", results)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "c.toml"), "--out", part, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 143 and calls == [10], err
    assert err.count("\n") == 0 and err.startswith("terminated (SIGTERM)") and "resume" in err, err
    with open_run(part) as r:
        assert r.results == {} and r.ensembles["c"].steps[-1] == 10
    monkeypatch.setattr(type(exp), "results", original)
    with pytest.raises(SystemExit) as e:
        main(["resume", part, "--quiet"])
    assert e.value.code == 0
    assert assert_same_datasets(full, part) > 5


def _term_when(tmp_path, config, marker):
    """Start ``particleflow run config``, send SIGTERM 0.5 s after a line starting with
    ``marker`` (stdout's phase reports; "[": stderr's progress bar; None: 0.5 s after the
    start), and return (seconds from the signal to the exit, return code, stderr)."""
    runs = os.path.join(os.path.dirname(__file__), "..", "runs")
    p = subprocess.Popen([sys.executable, "-u", "-m", "particleflow._main", "run", os.path.join(runs, config),
                          "--out", str(tmp_path / "r.h5")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while marker is not None:
        line = (p.stderr if marker == "[" else p.stdout).readline()
        if not line:
            p.wait()
            raise AssertionError(f"no line starting {marker!r}: {''.join(seen)}")
        seen.append(line)
        if line.strip().startswith(marker):
            break
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    t = time.time()
    _, err = p.communicate(timeout=60)
    return time.time() - t, p.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("marker", [None, "- choosing sigma", "["])
def test_sigterm_in_every_phase_of_the_deen_baselines_config_exits_143_within_2_s(tmp_path, marker):
    """`particleflow run runs/deen_ring_baselines.toml` ends within 2 s of a SIGTERM with
    exit code 143 whether the signal comes while it starts, while it chooses sigma or
    while it steps (the phases announce themselves on stdout, the steps with the progress
    bar on stderr).  A signal during the first step's kernel compilation waits for that
    compilation (test_sigterm_while_a_deen_config_builds_exits_143_with_one_line)."""
    seconds, rc, err = _term_when(tmp_path, "deen_ring_baselines.toml", marker)
    assert rc == 143, err
    assert seconds < 2.0, (marker, seconds, err)
