"""DEEN on images (paper 002, Figures 2-3): bundled data sets, single-step denoising
against the noisy input and the median + Gaussian filter, resume, the missing-extra
error, bad input."""
import importlib.util
import os

import numpy as np
import pytest
from click.testing import CliRunner

import particleflow as pf
from conftest import interrupted_and_resumed
from particleflow import datasets, experiments
from particleflow.cli import cli
from particleflow.config import ConfigError, loads
from particleflow.estimators import deen as D
from particleflow.experiments.deen_images import filter_denoise
from particleflow.runner import build

HAVE_DATA = importlib.util.find_spec("sklearn") is not None and importlib.util.find_spec("skimage") is not None
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="the 'data' extra (scikit-learn, scikit-image) is missing")

DIGITS = """
estimator = "deen_images"
[run]
steps = 1500
seed = 0
dtype = "float32"
[data]
kind = "digits"
n_test = 200
[model]
sizes = [64, 64, 64, 1]
output_scale = 20.0
[deen]
sigma = 0.14
batch = 128
sigma_test = 0.3
[output]
every = 100
checkpoint_every = 500
plot = false
"""

PATCHES = """
estimator = "deen_images"
[run]
steps = 2000
seed = 0
dtype = "float32"
[data]
kind = "patches"
n = 5000
n_test = 300
patch = 8
photographs = ["camera", "grass", "brick"]
[model]
sizes = [64, 128, 128, 1]
output_scale = 1000.0
[deen]
sigma = 0.05
batch = 128
sigma_test = 0.1
patch_noise = 0.5
[output]
every = 200
checkpoint_every = 1000
plot = false
"""


@needs_data
def test_bundled_data_sets():
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8) and y.shape == (1797,) and x.min() == 0 and x.max() == 1
    photos = datasets.photographs(["camera", "grass"])
    assert all(p.shape == (512, 512) and 0 <= p.min() and p.max() <= 1 for p in photos.values())
    a = datasets.patches(photos, 16, 300, 7, 0)
    assert a.shape == (300, 16, 16)
    np.testing.assert_array_equal(a, datasets.patches(photos, 16, 300, 7, 0))        # a function of the seed
    b = datasets.patches(photos, 16, 300, 7, 1)
    # training rows [0, 384 - 16], test rows [384, 512 - 16]: no test patch is a training patch
    assert not any((np.abs(a - t).max((1, 2)) == 0).any() for t in b)
    f = datasets.faces()
    assert f.shape == (100, 25, 25) and 0 <= f.min() and f.max() <= 1
    with pytest.raises(ValueError, match="unknown photograph 'nonsense'"):
        datasets.photographs(["nonsense"])
    with pytest.raises(ValueError, match="does not fit"):
        datasets.patches(photos, 200, 3, 0, 1)


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("sklearn", "skimage")
                        else real(name, *a))
    with pytest.raises(datasets.MissingExtraError, match=r"pip install 'particleflow\[data\]'"):
        datasets.digits()
    cfg_path = tmp_path / "digits.toml"
    cfg_path.write_text(DIGITS)
    out = tmp_path / "out.h5"
    r = CliRunner().invoke(cli, ["run", str(cfg_path), "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "'data' extra" in r.output and "Traceback" not in r.output, r.output
    assert not os.path.exists(out)


def test_denoise_with_one_noise_level_per_row():
    net = pf.energies.MLP([3, 5, 1], seed=1)
    x = np.random.default_rng(0).standard_normal((4, 3))
    s = np.array([0.1, 0.2, 0.3, 0.4])
    rows = np.stack([D.denoise(net, x[i:i + 1], s[i])[0] for i in range(4)])
    np.testing.assert_allclose(D.denoise(net, x, s), rows, rtol=1e-15)
    for bad in (np.array([0.1, 0.2]), np.array([0.1, 0.2, -0.3, 0.4]), np.array([0.1, np.nan, 0.3, 0.4])):
        with pytest.raises(ValueError, match="one per row"):
            D.denoise(net, x, bad)


def test_filter_baseline_is_a_median_then_a_gaussian():
    img = np.zeros((1, 9, 9))
    img[0, 4, 4] = 1.0                                  # an isolated spike: the median removes it
    assert np.abs(filter_denoise(img, 3, 1.0)).max() == 0
    flat = np.full((2, 6, 6), 0.3)
    np.testing.assert_allclose(filter_denoise(flat, 3, 0.7), flat, rtol=1e-12)


def test_output_scale_multiplies_the_initial_energy():
    a = pf.energies.MLP([3, 6, 1], seed=2)
    b = pf.energies.MLP([3, 6, 1], seed=2, output_scale=50.0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(b.value(x), 50 * a.value(x), rtol=1e-13)
    with pytest.raises(ValueError, match="output_scale"):
        pf.energies.MLP([3, 6, 1], output_scale=0.0)


def test_static_ensembles_are_left_out_of_checkpoints():
    sim = pf.Simulation({"data": pf.Ensemble(np.zeros((3, 2))), "x": pf.Ensemble(np.zeros((3, 2)))})
    sim.schedule(pf.moves.Langevin(pf.energies.Gaussian(np.zeros(2), np.eye(2)), 0.1), "x")
    sim.static("data")
    assert sim.static_ensembles() == ["data"] and list(sim.state_dict()["ensembles"]) == ["x"]
    with pytest.raises(ValueError, match="moved by a scheduled move"):
        sim.static("x")


@pytest.mark.slow
@needs_data
def test_digits_denoise_at_the_training_sigma_and_another():
    """1500 Adam steps on 1597 digits (the shipped config trains longer and larger):
    single-step denoising well below the noisy input at sigma = 0.14 and at 0.3."""
    cfg = experiments.validate(loads(DIGITS))
    _, sim = build(cfg)
    sim.run(cfg["run"]["steps"])
    r = experiments.get("deen_images").results(sim, cfg)
    # measured (seeds 0, 1): 0.51, 0.54 of the noisy MSE at sigma; 0.60, 0.63 at 0.3
    assert r["mse_denoised"] < 0.6 * r["mse_noisy"], (r["mse_denoised"], r["mse_noisy"])
    assert r["mse_denoised_sigma_test"] < 0.7 * r["mse_noisy_sigma_test"], (r["mse_denoised_sigma_test"],
                                                                           r["mse_noisy_sigma_test"])
    assert abs(r["mse_noisy"] - 0.14 ** 2) < 0.1 * 0.14 ** 2          # 200 x 64 pixels of N(0, sigma^2)
    assert r["examples"].shape == (4, 8, 8, 8)
    loss = sim.recorder.observables["heldout_loss"].values
    assert loss[-1] < 0.6 * loss[0]


@pytest.mark.slow
@needs_data
def test_patches_beat_the_median_and_gaussian_filter():
    """8x8 patches of three photographs, 2000 steps: with the paper's patch-dependent
    test noise 0.5 std(x), DEEN's single step beats the noisy input and the filter (whose
    Gaussian width is tuned on training patches)."""
    cfg = experiments.validate(loads(PATCHES))
    _, sim = build(cfg)
    sim.run(cfg["run"]["steps"])
    r = experiments.get("deen_images").results(sim, cfg)
    assert r["mse_denoised"] < 0.8 * r["mse_noisy"], (r["mse_denoised"], r["mse_noisy"])
    # measured (seeds 0, 1): DEEN 0.0017, 0.0016; filter 0.0026, 0.0027; noisy 0.0026, 0.0024
    assert r["mse_denoised_patch_noise"] < 0.85 * min(r["mse_filter_patch_noise"], r["mse_noisy_patch_noise"]), \
        (r["mse_denoised_patch_noise"], r["mse_filter_patch_noise"], r["mse_noisy_patch_noise"])


@needs_data
def test_image_training_resumes_bitwise_and_the_energy_reloads(tmp_path):
    text = DIGITS.replace("steps = 1500", "steps = 40").replace("every = 100", "every = 10").replace(
        "checkpoint_every = 500", "checkpoint_every = 15")
    full, part, start = interrupted_and_resumed(text, tmp_path, 23)
    assert int(start["state"]["moves"]["adam"]["t"]) == 23
    assert "data" not in start["state"]["ensembles"]             # rebuilt from the config, not saved
    with pf.io.open_run(full) as run:
        net = pf.experiments.load_energy(run)
        assert isinstance(net, pf.energies.MLP) and net.sizes == [64, 64, 64, 1]
        x = np.random.default_rng(0).random((3, 64))
        np.testing.assert_array_equal(net.value(x.astype(np.float32)),
                                      pf.experiments.load_energy(run).value(x.astype(np.float32)))
        lines = experiments.get("deen_images").summary(run, experiments.validate(run.config))
        assert any("median + Gaussian filter" in line for line in lines)


@needs_data
@pytest.mark.parametrize("edit,match", [
    (("sizes = [64, 64, 64, 1]", "sizes = [65, 64, 1]"), "8x8 = 64 pixels"),
    (("sigma = 0.14", "sigma = -0.14"), "deen.sigma must be > 0"),
    (("output_scale = 20.0", "output_scale = 0.0"), "output_scale"),
    (("n_test = 200", "n_test = 1790"), "fewer than 100"),
    (("[output]", "[filter]\ngaussian = []\n[output]"), "filter.gaussian"),
])
def test_bad_image_configs(edit, match):
    with pytest.raises(ConfigError, match=match):
        experiments.validate(loads(DIGITS.replace(*edit)))


@needs_data
def test_unknown_photograph_exits_2_and_writes_nothing(tmp_path):
    cfg_path = tmp_path / "p.toml"
    cfg_path.write_text(PATCHES.replace('"brick"', '"brickwall"'))
    out = tmp_path / "out.h5"
    r = CliRunner().invoke(cli, ["run", str(cfg_path), "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "unknown photograph 'brickwall'" in r.output, r.output
    assert not os.path.exists(out)
