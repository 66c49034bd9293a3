"""The generic figure: constant observables get no panel, 2-D ensembles are drawn over
exp(-E), image ensembles as a grid; ``plot --what`` picks the panels."""
import importlib.util

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from particleflow.cli import cli
from particleflow.experiments import figures

needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("fig")
    (d / "s.toml").write_text('estimator = "sample"\n[run]\nsteps = 40\nseed = 2\n[output]\nevery = 10\nplot = false\n'
                              '[energy]\nkind = "gaussian_mixture"\nring_components = 3\nring_radius = 2.0\n'
                              '[ensembles.c]\nn = 500\n[[schedule]]\nmove = "mala"\nensemble = "c"\n'
                              'step_size = 0.4\n')
    res = CliRunner().invoke(cli, ["run", str(d / "s.toml"), "--out", str(d / "s.h5"), "--quiet"])
    assert res.exit_code == 0, res.output
    return d / "s.h5"


def test_constant_observables_are_listed_not_drawn(run_file):
    with pf.io.open_run(str(run_file)) as r:
        changing, constant = figures.traces(r)
        kinds = [k for k, *_ in figures.ensemble_panels(r)]
    assert constant == {"c/ess": 500.0}
    assert "mala_0/acceptance" in changing and "c/ess" not in changing
    assert kinds == ["density"]


def test_image_grid_layout():
    imgs = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    g = figures.image_grid(imgs, side=4)
    assert g.shape == (2 * 3, 4 * 4)                       # 2 rows of (2 + 1) px, 4 columns of (3 + 1)
    assert g.min() >= 0 and g.max() <= 1
    rgb = figures.image_grid(np.zeros((3, 3, 2, 2)), side=2)
    assert rgb.shape == (6, 6, 3)


@needs_mpl
@pytest.mark.parametrize("what", ["figure", "all", "ensembles", "traces"])
def test_plot_what(run_file, tmp_path, what):
    png = tmp_path / f"{what}.png"
    res = CliRunner().invoke(cli, ["plot", str(run_file), "--out", str(png), "--what", what])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000


def test_plot_what_unknown(run_file, tmp_path):
    res = CliRunner().invoke(cli, ["plot", str(run_file), "--out", str(tmp_path / "x.png"), "--what", "pie"])
    assert res.exit_code == 2 and "pie" in res.output


def test_panel_kinds():
    class Rec:
        def __init__(self, frame):
            self.positions, self.steps = [frame], np.array([7])

    class Run:
        config = {}
        ensembles = {"theta": Rec(np.zeros((1, 4))), "img": Rec(np.zeros((9, 1, 4, 4))),
                     "one_d": Rec(np.zeros((5, 1))), "wide": Rec(np.zeros((5, 6)))}
    kinds = {name: kind for kind, name, _, step in figures.ensemble_panels(Run())}
    assert kinds == {"theta": "vector", "img": "image", "one_d": "histogram", "wide": "scatter"}
