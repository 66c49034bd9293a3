"""Every experiment's own figure is ready for a talk: each drawn panel has a title in
words and both axes labelled (image mosaics excepted: a mosaic's column carries the
title, its pixels have no axes), and every colour-mapped density has a labelled
colorbar.  One test per figure, each on a shrunken copy of the shipped config."""
import importlib.util
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from particleflow.cli import cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")
RUNS = Path(__file__).resolve().parents[1] / "runs"
needs_data = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs the data extra")
BARE_KEY = re.compile(r"^[A-Za-z_0-9()\-]+$")     # "kl", "sm", "exp(-E)": internal keys, not words


def figures_of(monkeypatch, tmp_path, config, *args):
    """The figures `particleflow run` saves for ``config`` (with ``args``)."""
    import matplotlib.figure
    figs = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: figs.append(self) or real(self, *a, **k))
    res = CliRunner().invoke(cli, ["run", str(RUNS / f"{config}.toml"), "--out", str(tmp_path / "r.h5"),
                                   "--quiet", "--set", "output.plot=true", *args])
    assert res.exit_code == 0, res.output
    assert figs, f"{config} saved no figure"
    return figs


def is_mosaic(ax):
    """An image panel without ticks: a grid of samples, labelled by its column or row."""
    return bool(ax.images) and not ax.get_xticks().size and not ax.lines and not ax.collections


def assert_labelled(fig):
    panels = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert panels
    titled_columns = {round(ax.get_position().x0, 3) for ax in panels if ax.get_title()}
    for ax in panels:
        title = ax.get_title()
        if is_mosaic(ax):
            assert title or ax.get_ylabel() or ax.get_xlabel() or round(ax.get_position().x0, 3) in titled_columns, \
                "an image mosaic with neither a title nor a row label nor a titled column"
            continue
        assert title and not BARE_KEY.match(title) and " " in title, f"title not in words: {title!r}"
        assert ax.get_xlabel() and ax.get_ylabel(), f"panel {title!r}: x {ax.get_xlabel()!r}, y {ax.get_ylabel()!r}"
        for im in ax.images:
            if im.get_cmap().name != "gray":
                assert im.colorbar is not None and im.colorbar.ax.get_ylabel(), f"panel {title!r}: no labelled colorbar"
    return panels


def titles(figs):
    return [ax.get_title() for f in figs for ax in f.axes]


def test_deen_ring_figure_is_labelled(monkeypatch, tmp_path):
    """Paper 002 Figure 1 panels (data, density, score, curl, CD density)."""
    figs = figures_of(monkeypatch, tmp_path, "deen_ring_baselines", "--steps", "20", "--set", "data.n=2000",
                      "--set", "data.n_heldout=500")
    panels = assert_labelled(figs[0])
    assert len(panels) == 5
    assert "curl of the direct score network psi" in titles(figs)


@needs_data
def test_deen_images_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "deen_digits", "--steps", "20")
    assert_labelled(figs[0])
    assert "denoising score matching loss" in titles(figs)


def test_mrmap_mixture_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "mrmap_mixture", "--steps", "20")
    assert len(assert_labelled(figs[0])) == 5


@needs_data
def test_mrmap_images_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "mrmap_digits", "--steps", "20")
    assert_labelled(figs[0])
    assert "consistency error Rc during training" in titles(figs)


@pytest.mark.parametrize("config", ["mrmap_gaussian1d", "mrmap_covariance"])
def test_mrmap_parametric_figure_is_labelled(monkeypatch, tmp_path, config):
    assert len(assert_labelled(figures_of(monkeypatch, tmp_path, config)[0])) == 1


def test_logz_figure_is_labelled(monkeypatch, tmp_path):
    assert_labelled(figures_of(monkeypatch, tmp_path, "logz_mixture")[0])


def test_importance_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "importance_gaussian", "--set", "run.runs=30", "--set", "fit.runs=5")
    assert len(assert_labelled(figs[0])) == 4


def test_dual_ebm_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "dual_ebm_dual", "--steps", "20")
    assert len(assert_labelled(figs[0])) == 4
    assert "KL divergence, teacher to model" in titles(figs)


@pytest.mark.parametrize("config", ["shortrun_expfamily", "shortrun_ring"])
def test_shortrun_figure_is_labelled(monkeypatch, tmp_path, config):
    assert_labelled(figures_of(monkeypatch, tmp_path, config, "--steps", "20")[0])


@needs_data
def test_shortrun_images_figure_is_labelled(monkeypatch, tmp_path):
    figs = figures_of(monkeypatch, tmp_path, "shortrun_digits", "--steps", "10", "--set", "short_run.K_values=[5]",
                      "--set", "generator.recon_iter=5", "--set", "generator.rhos=3")
    assert_labelled(figs[0])
