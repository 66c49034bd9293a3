"""Command-line outputs never hit the wrong file, and usage errors are one line: a
trajectory named *.png is not overwritten by its figure, temporary files never take a
user's file's name, click's own errors (bad options, arguments, commands) are one
``error:`` line with exit 2."""
import hashlib
import importlib.util
import os

import numpy as np
import pytest

import particleflow as pf
from particleflow.cli import main

TEXT = """
estimator = "sample"
[run]
steps = 20
seed = 1
[output]
every = 10
plot = {plot}
[energy]
kind = "gaussian_mixture"
ring_components = 3
ring_radius = 2.0
[ensembles.chains]
n = 200
[[schedule]]
move = "mala"
ensemble = "chains"
step_size = 0.3
"""
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def call(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("argv", [
    ["run", "runs/demo.toml", "--steps", "0"], ["run", "runs/demo.toml", "--seed", "-1"], ["frobnicate"],
    ["inspect", "."], ["run", "--bogus", "x.toml"], ["run"], ["plot", "a.h5", "--what", "nothing"],
    ["export"], ["inspect", "a.h5", "--stats", "extra"],
])
def test_usage_errors_are_one_error_line_and_exit_2(argv, capsys):
    code, out, err = call(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Usage" not in err, err
    assert "--help" in err


@pytest.mark.skipif(not HAVE_MPL, reason="needs the 'plot' extra (matplotlib)")
def test_a_trajectory_named_png_keeps_its_data_and_gets_its_figure_beside_it(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="true"))
    out = str(tmp_path / "traj.png")
    code, _, err = call(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"], capsys)
    assert code == 0, err
    with pf.io.open_run(out) as r:                            # still the trajectory
        assert r.ensembles["chains"].positions.shape == (3, 200, 2)
    assert open(out + ".png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    before = digest(out)
    code, stdout, err = call(["plot", out], capsys)
    assert code == 0 and stdout.strip() == out + ".png", err
    assert digest(out) == before
    code, _, err = call(["plot", out, "--out", out, "--force"], capsys)
    assert code == 2 and "the trajectory itself" in err and digest(out) == before


@pytest.mark.skipif(not HAVE_MPL, reason="needs the 'plot' extra (matplotlib)")
def test_plot_leaves_a_file_named_like_its_temporary_alone(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false"))
    out = str(tmp_path / "r.h5")
    assert call(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"], capsys)[0] == 0
    mine = tmp_path / "p.png.tmp.png"
    mine.write_bytes(b"mine")
    code, _, err = call(["plot", out, "--out", str(tmp_path / "p.png")], capsys)
    assert code == 0, err
    assert mine.read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["c.toml", "p.png", "p.png.tmp.png", "r.h5", "r.h5.ckpt"]


def test_export_leaves_a_file_named_like_its_temporary_alone(tmp_path, capsys):
    pytest.importorskip("arviz")
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false"))
    out = str(tmp_path / "r.h5")
    assert call(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"], capsys)[0] == 0
    mine = tmp_path / "o.nc.tmp"
    mine.write_bytes(b"mine")
    code, _, err = call(["export", out, str(tmp_path / "o.nc")], capsys)
    assert code == 0, err
    assert mine.read_bytes() == b"mine" and (tmp_path / "o.nc").stat().st_size > 0
    assert sorted(os.listdir(tmp_path)) == ["c.toml", "o.nc", "o.nc.tmp", "r.h5", "r.h5.ckpt"]


def test_temporary_files_get_the_mode_of_a_new_file(tmp_path):
    from particleflow.io.files import temporary_beside
    mask = os.umask(0o022)
    try:
        t = temporary_beside(str(tmp_path / "x.h5"))
        assert os.stat(t).st_mode & 0o777 == 0o644 and os.path.basename(t).startswith(".x.h5.")
    finally:
        os.umask(mask)


@pytest.mark.slow
def test_a_second_run_into_the_same_output_is_refused_and_the_first_completes(tmp_path):
    """Two runs into one --out (also with --force): the second is refused with one line
    naming the first's pid, touches nothing, and the first's file is complete."""
    import subprocess
    import sys
    import time
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false").replace("steps = 20", "steps = 4000")
                                     .replace("n = 200", "n = 20000"))
    out = tmp_path / "r.h5"
    cmd = [sys.executable, "-m", "particleflow._main", "run", str(tmp_path / "c.toml"), "--out", str(out), "--quiet"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not out.exists() and time.time() - t0 < 120:      # the first has started writing
            time.sleep(0.05)
        assert (tmp_path / "r.h5.lock").read_text().strip() == str(first.pid)
        for extra in ([], ["--force"]):
            second = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1 and f"pid {first.pid}" in second.stderr, second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    with pf.io.open_run(str(out)) as r:
        assert r.ensembles["chains"].positions.shape == (401, 20000, 2)
    assert not (tmp_path / "r.h5.lock").exists()


@pytest.fixture
def small_run(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false"))
    out = str(tmp_path / "r.h5")
    assert call(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"], capsys)[0] == 0
    return out


@pytest.mark.parametrize("array", [np.zeros((0, 2)), np.array([["a", "b"], ["c", "d"]]),
                                   np.ones((5, 2), dtype=complex), np.ones((5, 2), dtype=bool), np.ones(5)],
                         ids=["empty", "strings", "complex", "bool", "1-d"])
def test_eval_refuses_a_reference_that_is_not_draws(tmp_path, capsys, small_run, array):
    ref = tmp_path / "ref.npy"
    np.save(ref, array)
    code, _, err = call(["eval", small_run, "--reference", str(ref)], capsys)
    assert code == 2 and err.startswith("error: --reference") and err.count("\n") == 1, err


def test_outputs_do_not_follow_a_dangling_link(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false"))
    target = tmp_path / "elsewhere.h5"
    os.symlink(target, tmp_path / "o.h5")
    for extra in ([], ["--force"]):
        code, _, err = call(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o.h5"), "--quiet"] + extra,
                            capsys)
        assert code == 2 and "symbolic link" in err, err
    assert not target.exists() and os.path.islink(tmp_path / "o.h5")


def test_photographs_are_an_explicit_list():
    pytest.importorskip("skimage")
    from particleflow import datasets
    for name in ("download_all", "lfw_subset", "data_dir", "file_hash"):
        with pytest.raises(ValueError, match="unknown photograph"):
            datasets.check_photographs([name])
    datasets.check_photographs(["camera", "astronaut"])


LOGZ = """estimator = "logz"
[run]
steps = 2
seed = 0
[energy]
kind = "gaussian_mixture"
ring_components = 3
ring_radius = 2.0
[annealing]
method = "{method}"
particles = 200
{extra}
[output]
plot = false
"""


@pytest.mark.parametrize("method,extra,msg", [
    ("ais", "temperatures = 1000000000", "temperatures"), ("smc", "cess = 1.0", "cess"),
    ("smc", "mcmc_steps = 1000000000", "mcmc_steps"),
])
def test_logz_keys_are_bounded(tmp_path, capsys, method, extra, msg):
    (tmp_path / "l.toml").write_text(LOGZ.format(method=method, extra=extra))
    code, _, err = call(["run", str(tmp_path / "l.toml"), "--out", str(tmp_path / "l.h5"), "--quiet"], capsys)
    assert code == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "l.h5").exists()


def test_a_term_with_a_billion_components_is_refused(tmp_path, capsys):
    text = TEXT.format(plot="false").replace('[energy]\nkind = "gaussian_mixture"\nring_components = 3\n'
                                             'ring_radius = 2.0\n', '[energy]\n[[energy.terms]]\n'
                                             'kind = "gaussian_mixture"\nring_components = 1000000000\n'
                                             'ring_radius = 2.0\n')
    (tmp_path / "c.toml").write_text(text)
    code, _, err = call(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o.h5"), "--quiet"], capsys)
    assert code == 2 and "ring_components" in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_ais_with_more_than_a_thousand_temperatures_runs(tmp_path, capsys):
    (tmp_path / "l.toml").write_text(LOGZ.format(method="ais", extra="temperatures = 1500\nmcmc_steps = 1"))
    code, _, err = call(["run", str(tmp_path / "l.toml"), "--out", str(tmp_path / "l.h5"), "--quiet"], capsys)
    assert code == 0, err


@pytest.mark.slow
def test_a_move_that_accepts_nothing_warns_once():
    e = pf.energies.Gaussian(np.zeros(2), np.eye(2))
    for move in (pf.moves.MALA(e, 1e6), pf.moves.HMC(e, 1e3, 3)):
        sim = pf.Simulation({"c": pf.Ensemble(np.zeros((50, 2)))}, seed=0).schedule(move, "c")
        with pytest.warns(pf.ConvergenceWarning, match="accepted no proposal in 100 consecutive steps") as rec:
            sim.run(250)
        assert len([w for w in rec if issubclass(w.category, pf.ConvergenceWarning)]) == 1


def test_the_command_line_prints_that_warning_in_one_line(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false").replace("steps = 20", "steps = 120")
                                     .replace("step_size = 0.3", "step_size = 1000000.0"))
    code, _, err = call(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r.h5"), "--quiet"], capsys)
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("warning: MALA accepted no proposal"), err


@pytest.mark.parametrize("schedule,msg", [
    ('move = "parallel_tempering"\nensemble = "chains"\nstep_size = 0.3\nbetas = ["1", "0.5"]\n', "betas"),
    ('move = "parallel_tempering"\nensemble = "chains"\nstep_size = 0.3\nbetas = [1.0, 0.5]\n[[schedule]]\n'
     'move = "resample"\nensemble = "chains"\n', "owns the rows of ensemble 'chains'"),
    ('move = "parallel_tempering"\nensemble = "chains"\nstep_size = 0.3\nbetas = [1.0, 0.5]\n[[schedule]]\n'
     'move = "parallel_tempering"\nensemble = "chains"\nstep_size = 0.3\nbetas = [1.0, 0.2]\n', "owns the rows"),
])
def test_parallel_tempering_configs_that_would_break_the_ladder_are_refused(tmp_path, capsys, schedule, msg):
    text = TEXT.format(plot="false").split("[[schedule]]")[0] + "[[schedule]]\n" + schedule
    (tmp_path / "c.toml").write_text(text)
    code, _, err = call(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o.h5"), "--quiet"], capsys)
    assert code == 2 and msg in err and err.count("\n") == 1, err


def test_hmc_mass_of_the_wrong_size_is_refused_when_built():
    with pytest.raises(ValueError, match="mass has 3 entries but the energy has dimension 2"):
        pf.moves.HMC(pf.energies.Gaussian(np.zeros(2), np.eye(2)), 0.1, 3, mass=np.ones(3))


FAILS_AT_FIRST_STEP = """import numpy as np
def make():
    def vg(x):
        raise RuntimeError("broken energy")
    return vg
"""


@pytest.mark.parametrize("force", [False, True])
def test_a_run_that_fails_at_its_first_step_leaves_the_old_output_untouched_and_no_partial_file(
        tmp_path, capsys, force):
    (tmp_path / "c.toml").write_text(TEXT.format(plot="false"))
    out = str(tmp_path / "r.h5")
    if force:
        assert call(["run", str(tmp_path / "c.toml"), "--out", out, "--quiet"], capsys)[0] == 0
    before = {p: digest(tmp_path / p) for p in os.listdir(tmp_path)}
    (tmp_path / "bad.py").write_text(FAILS_AT_FIRST_STEP)
    bad = TEXT.format(plot="false").replace('[energy]\nkind = "gaussian_mixture"\nring_components = 3\n'
                                            'ring_radius = 2.0\n', '[energy]\npython = "bad.py:make"\ndim = 2\n')
    (tmp_path / "bad.toml").write_text(bad)
    code, _, err = call(["run", str(tmp_path / "bad.toml"), "--out", out, "--quiet"] + (["--force"] if force else []),
                        capsys)
    assert code == 1 and "broken energy" in err, err
    after = {p: digest(tmp_path / p) for p in os.listdir(tmp_path) if p not in ("bad.py", "bad.toml", "__pycache__")}
    assert after == before                       # old files byte-identical, nothing new, nothing hidden left


def test_progress_line_rates_eta_and_erasing(monkeypatch, capsys):
    """The progress bar erases the rest of the line on a terminal, counts its rate and
    ETA from the end of the first step (not the compile time inside it), and shows
    seconds per step for runs slower than one step a second."""
    from particleflow import cli

    class FakeSim:
        step = 0

        def last_stats(self):
            return {}
    clock = iter([0.0, 1000.0, 1100.0])                    # creation, then two draws 100 s apart
    monkeypatch.setattr(cli.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True, raising=False)
    p = cli._Progress(0, True)
    sim = FakeSim()
    sim.step = 1
    p(sim, 10)                                             # after step 1 (its compile time): the anchor
    sim.step = 3
    p(sim, 10)                                             # 2 steps in 100 s after the anchor
    err = capsys.readouterr().err
    first, second = err.split("\r")[1:3]
    assert "ETA       ?" in first and first.endswith("\x1b[K")
    assert "50.00 s/step" in second and "ETA   350.0s" in second and second.endswith("\x1b[K")
    assert cli._Progress.rate_text(250.0).strip() == "250.0 steps/s"


def test_long_phases_announce_themselves_and_keep_talking(capsys):
    """A phase that lasts prints a line and, while it lasts without other output, a line
    every ``every`` seconds; a quick one prints nothing (a failing config still gets its
    one error line); nothing listens outside the command line."""
    import time as _time
    from particleflow import cli
    from particleflow.status import phase
    prog = cli._Progress(0, True)
    with cli._Phases(prog, every=0.3, announce=0.1):
        with phase("quick"):
            pass
        with phase("choosing sigma"):
            _time.sleep(1.6)
    captured = capsys.readouterr()
    err = captured.out.splitlines()                        # phases go to stdout; stderr stays for errors
    assert captured.err == ""
    assert err[0] == "- choosing sigma"
    beats = [line for line in err if line.startswith("  ... choosing sigma:")]
    assert 2 <= len(beats) <= 6, err
    with phase("nobody listens"):
        pass
    assert capsys.readouterr().out == ""
