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


@needs_mpl
def test_every_panel_of_the_generic_figure_is_labelled(run_file, tmp_path, monkeypatch):
    """Titles in words, both axes labelled on every drawn panel (image grids excepted),
    a colorbar on the density, and a nearly constant trace not blown up to fill its panel."""
    figs = []
    monkeypatch.setattr(figures, "save", lambda fig, png, **kw: figs.append(fig) or png)
    with pf.io.open_run(str(run_file)) as r:
        figures.draw(r, str(tmp_path / "f.png"))
    axes = [ax for ax in figs[0].axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert len(axes) >= 2
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel())
    titles = [ax.get_title() for ax in axes]
    assert "acceptance rate (mala_0)" in titles, titles
    assert any(ax.get_label() == "<colorbar>" for ax in figs[0].axes)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    figures.trace_panel(ax, np.arange(5), 1.0 + 1e-3 * np.array([0, 1, -1, 1, 0]), "m/acceptance")
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.02 and ax.get_ylabel() == "acceptance rate"
    plt.close(fig)


@needs_mpl
def test_plot_overlays_several_runs_labelled_by_what_differs(run_file, tmp_path, monkeypatch):
    """`particleflow plot a.h5 b.h5` draws their observables in shared panels, one line
    per run, with legend labels naming the config keys that differ."""
    other = tmp_path / "b.h5"
    cfg = run_file.parent / "s.toml"
    res = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(other), "--quiet", "--seed", "5"])
    assert res.exit_code == 0, res.output
    figs = []
    monkeypatch.setattr(figures, "save", lambda fig, png, **kw: figs.append(fig) or png)
    png = tmp_path / "both.png"
    res = CliRunner().invoke(cli, ["plot", str(run_file), str(other), "--out", str(png)])
    assert res.exit_code == 0, res.output
    ax = [a for a in figs[0].axes if a.get_title() == "acceptance rate (mala_0)"][0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["run.seed=2", "run.seed=5"], labels
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "acceptance rate"
    res = CliRunner().invoke(cli, ["plot", str(run_file), str(tmp_path / "missing.h5")])
    assert res.exit_code == 2 and "no such trajectory" in res.output
