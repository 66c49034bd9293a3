"""Sampling a posterior from a config: a user's energy from a Python file
(``energy.python``), the automatic warm-up (``auto_warmup``), a run interrupted during
its warm-up resumed bitwise, the diagnostics printed at the end and by inspect --stats,
and bad ``energy.python`` values refused with one line and exit code 2."""
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from conftest import interrupted_and_resumed
from particleflow.cli import cli
from particleflow.moves.warmup import PHASES

RUNS = os.path.join(os.path.dirname(__file__), "..", "runs")


def small_eight_schools(tmp_path, steps=220, n=200, warmup=60):
    shutil.copy(os.path.join(RUNS, "eight_schools.py"), tmp_path / "eight_schools.py")
    text = open(os.path.join(RUNS, "eight_schools.toml")).read()
    text = text.replace("steps = 1400", f"steps = {steps}").replace("n = 1000", f"n = {n}") \
        .replace("warmup = 300", f"warmup = {warmup}").replace("checkpoint_every = 200", "checkpoint_every = 50")
    cfg = tmp_path / "es.toml"
    cfg.write_text(text)
    return cfg, text


def test_eight_schools_config_samples_the_posterior_and_reports_diagnostics(tmp_path):
    cfg, _ = small_eight_schools(tmp_path, steps=460, n=400, warmup=100)
    out = tmp_path / "es.h5"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "max nested R-hat" in res.output
    # a chain deep in the funnel's neck may move rarely at the bulk's step size (and is
    # then named); the superchains must agree
    assert "warning: chains: nested R-hat" not in res.output
    with pf.io.open_run(str(out)) as r:
        adapting = np.asarray(r.observables["mala_0/adapting"].values)
        x = np.asarray(r.ensembles["chains"].positions[int(np.argmin(adapting)) + 2:])
        assert 0 < int(np.asarray(r.results["mala_0/warmup_done"]))
        log_z = float(np.asarray(r.results["mala_0/log_z"]))
    # posteriordb's reference: mu 4.39 (sd 3.3), log tau mean 0.98 (sd 1.2)
    mu = x[..., 8].ravel()
    assert abs(mu.mean() - 4.39) < 0.4 and abs(mu.std() - 3.3) < 0.3
    assert np.isfinite(log_z)
    res = CliRunner().invoke(cli, ["inspect", str(out), "--stats"])
    assert res.exit_code == 0 and "rhat_nested" in res.output and "Margossian" in res.output


@pytest.mark.parametrize("at", [5, 120])
def test_a_config_run_interrupted_during_warmup_resumes_bitwise(tmp_path, at):
    """Interrupted in the annealing (step 5) and in the tuning phase (step 120)."""
    _, text = small_eight_schools(tmp_path, steps=230, n=120, warmup=150)
    text = text.replace('python = "eight_schools.py', f'python = "{tmp_path}/eight_schools.py')
    full, part, start = interrupted_and_resumed(text, tmp_path, at)      # asserts every dataset equal
    # the checkpoint was taken in the phase the test means to interrupt
    phase = PHASES[int(start["state"]["moves"]["mala_0"]["phase"])]
    assert start["step"] == at and phase == ("anneal" if at == 5 else "tune"), phase
    with pf.io.open_run(part) as r:
        assert int(np.asarray(r.results["mala_0/warmup_done"])) == 1


PY_HEAD = """estimator = "sample"
[run]
steps = 5
seed = 1
[output]
every = 5
plot = false
[ensembles.c]
n = 50
[[schedule]]
move = "mala"
ensemble = "c"
step_size = 0.1
[energy]
"""


@pytest.mark.parametrize("files,energy,msg", [
    ({}, 'python = "missing.py:f"', "no such file"),
    ({"m.py": "x = 1\n"}, 'python = "m.py:make"', "defines no function 'make'"),
    ({"m.py": "def make():\n    return 3\n"}, 'python = "m.py:make"', "must return a particleflow Energy"),
    ({"m.py": "def make():\n    raise RuntimeError('boom')\n"}, 'python = "m.py:make"',
     "raised RuntimeError: boom"),
    ({"m.py": "import numpy as np\ndef make():\n    return lambda x: (x[:, 0], x)\n"}, 'python = "m.py:make"',
     "give its dimension as energy.dim"),
    ({}, 'python = "m.py"', "must be 'file.py:function'"),
    ({"m.py": "def make():\n    return None\n"}, 'python = "m.py:make"\nkind = "gaussian"', "exactly one of"),
])
def test_bad_energy_python_is_one_line_and_exit_2(tmp_path, files, energy, msg):
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    cfg = tmp_path / "c.toml"
    cfg.write_text(PY_HEAD + energy + "\n")
    out = tmp_path / "c.h5"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 2, res.output
    assert msg in res.output and res.output.count("\n") == 1, res.output
    assert not out.exists()


def test_energy_python_callable_with_dim_runs(tmp_path):
    (tmp_path / "m.py").write_text("def make():\n    return lambda x: (0.5 * (x * x).sum(1), x)\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(PY_HEAD.replace("steps = 5", "steps = 40") + 'python = "m.py:make"\ndim = 3\n')
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "c.h5"), "--quiet"])
    assert res.exit_code == 0, res.output
    with pf.io.open_run(str(tmp_path / "c.h5")) as r:
        assert r.ensembles["c"].positions.shape == (9, 50, 3)


def test_auto_warmup_refuses_the_options_it_replaces(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(PY_HEAD.replace('step_size = 0.1\n', 'step_size = 0.1\nauto_warmup = true\nadapt_mass = "dense"\n'
                                   'warmup = 20\n') + 'kind = "gaussian"\nmean = [0.0]\nprecision = [[1.0]]\n')
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "c.h5"), "--quiet"])
    assert res.exit_code == 2 and "auto_warmup adapts" in res.output, res.output
