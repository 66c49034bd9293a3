"""``estimator = "deen_images"``: Deep Energy Estimator Networks on images (paper 002,
Figures 2 and 3): handwritten digits and natural-image patches, single-step denoising
against a median + Gaussian filter.

    [run]      steps (Adam iterations), seed, dtype
    [data]     kind = "digits" (scikit-learn's 8x8 digits) | "patches" (square patches
               of photographs bundled with scikit-image); n_test, n (patches), patch
               (patch side), photographs (names in skimage.data)
    [model]    sizes = [pixels, ..., 1], activation, output_scale
    [deen]     sigma, batch, grad_block, lr, sigma_test (a second noise level), patch_noise (the
               paper's patch-dependent test noise patch_noise * std(x) per image; 0: off)
    [sigma_selection]  grid (held-out Parzen log-likelihood; empty: none), use
    [filter]   median (the median filter's side), gaussian (widths tried, in pixels)
    [output]   every, checkpoint_every, compression, plot

Needs the optional ``data`` extra (scikit-learn, scikit-image); without it the config is
refused before anything is written.  Pixels are grey levels in [0, 1].  Digits: a
seeded permutation holds out ``n_test`` images; patches: training patches come from the
top three quarters of every photograph, test patches from the bottom quarter.

Observables every ``output.every`` steps: ``loss`` (the latest minibatch's DEEN loss)
and ``heldout_loss`` (up to 500 test images, fixed noise).  Results: ``heldout_loss``
(all test images), and for each test noise, tag "" (the training sigma),
"_sigma_test" and, with patch_noise > 0, "_patch_noise": ``mse_noisy<tag>``,
``mse_denoised<tag>`` (single-step denoising, eq. 11, xhat = xi - sigma^2 grad E(xi)
with the training sigma: the trained denoiser applied as it is), for the other noises
``mse_denoised_rescaled<tag>`` (the step sigma'^2 of the actual noise level instead) and
``mse_filter<tag>`` (median filter, then the Gaussian width of the grid that does best
on training images with the same noise: ``filter_width<tag>``), all errors per pixel
(||x - xhat||^2 / pixels, the paper's err/pixel, averaged over test images), and
``examples<tag>`` [4, 8, side, side] (clean, noisy, DEEN, filter); ``sigma_selected``
and ``parzen_scores`` with a selection grid; the trained parameters as ``params/<name>``.
"""
import numpy as np
from scipy import ndimage

from .. import datasets
from ..config import ConfigError, Field, output_section, positive, run_section
from ..energies import MLP
from ..estimators.deen import HELDOUT, deen, denoise, dsm_loss, noisy_batch, select_sigma
from ..random import Purpose, Stream, StreamBlock
from ..status import phase
from .base import Experiment, check_layer_sizes, trained_params
from .deen import SELECTION, check_selection
from .common import grey_images, pyplot, save

DATA = {"kind": Field("str", "digits", choices=("digits", "patches"), doc="data set"),
        "n_test": Field("int", 297, lo=1, doc="test images (digits: held out of the 1797)"),
        "n": Field("int", 20000, lo=1, doc="patches: training patches"),
        "patch": Field("int", 32, lo=2, hi=128, doc="patches: side in pixels"),
        "photographs": Field("list", list(datasets.PHOTOGRAPHS), doc="patches: skimage.data photographs")}
MODEL = {"sizes": Field("list", [64, 128, 128, 256, 1], doc="MLP layer sizes, [pixels, ..., 1]"),
         "activation": Field("str", "tanh", choices=("tanh", "softplus", "silu"), doc="smooth activation"),
         "output_scale": positive(1.0, doc="initial scale of the output layer (sigma^2 grad E must reach the "
                                           "noise's scale; MLP output_scale)")}
DEEN = {"sigma": positive(0.14, doc="training noise level (grey levels in [0, 1])"),
        "batch": Field("int", 128, lo=1, doc="minibatch size"),
        "grad_block": Field("int", 0, lo=0, doc="rows per block of the loss gradient: blocks run on the threads "
                            "and, under mpiexec, are shared by the ranks (data-parallel, bitwise for any rank count); "
                            "0: the whole batch at once, on every rank"),
        "lr": positive(1e-3, doc="Adam learning rate"),
        "sigma_test": positive(0.3, doc="a second noise level for single-step denoising"),
        "patch_noise": Field("float", 0.0, lo=0, doc="test noise patch_noise * std(x) per image (0: off)")}
FILTER = {"median": Field("int", 3, lo=1, hi=15, doc="median filter side (pixels)"),
          "gaussian": Field("list", [0.5, 0.75, 1.0, 1.5], doc="Gaussian filter widths tried (pixels)")}
N_EXAMPLES = 8


def images(cfg):
    """(training, test) [n, side, side] float64 grey levels for the config."""
    d, seed = cfg["data"], cfg["run"]["seed"]
    if d["kind"] == "digits":
        return datasets.hold_out(grey_images(d), d["n_test"], seed)
    photos = datasets.photographs(d["photographs"])
    return (datasets.patches(photos, d["patch"], d["n"], seed, 0),
            datasets.patches(photos, d["patch"], d["n_test"], seed, 1))


def filter_denoise(noisy, median, width):
    """The signal-processing baseline of the paper's Figure 3: a median filter of side
    ``median`` followed by a Gaussian filter of s.d. ``width`` pixels, per image."""
    out = ndimage.median_filter(noisy, size=(1, median, median), mode="reflect")
    return ndimage.gaussian_filter(out, sigma=(0, width, width), mode="reflect") if width > 0 else out


class DEENImages(Experiment):
    name = "deen_images"
    description = "paper 002: deep energy estimator networks on digits and natural-image patches, denoising"
    sections = {"run": run_section(steps=4000, steps_doc="Adam iterations"), "data": DATA, "model": MODEL,
                "deen": DEEN, "sigma_selection": SELECTION, "filter": FILTER,
                "output": output_section(every=100, checkpoint_every=1000)}

    def check(self, cfg):
        d = cfg["data"]
        side = 8 if d["kind"] == "digits" else d["patch"]
        sizes = cfg["model"]["sizes"]
        check_layer_sizes(sizes, "model.sizes", last=1, hint=" (pixels first)")
        if sizes[0] != side * side:
            raise ConfigError(f"model.sizes starts with {sizes[0]} but the {d['kind']} images have {side}x{side} = "
                              f"{side * side} pixels; set model.sizes[0] = {side * side}")
        if d["kind"] == "digits" and d["n_test"] > 1697:
            raise ConfigError(f"data.n_test = {d['n_test']} leaves fewer than 100 of the 1797 digits for training")
        check_selection(cfg)
        w = cfg["filter"]["gaussian"]
        if not w or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in w):
            raise ConfigError(f"filter.gaussian must be a non-empty list of widths >= 0; got {w!r}")
        datasets.require_data_extra(d["kind"])
        if d["kind"] == "patches":
            if not d["photographs"]:
                raise ConfigError("data.photographs must name at least one skimage.data image")
            try:
                datasets.check_photographs(d["photographs"])
            except ValueError as e:
                raise ConfigError(f"data.photographs: {e}") from None

    def memory_bytes(self, cfg):
        d = cfg["data"]
        pixels = cfg["model"]["sizes"][0]
        n = 1797 if d["kind"] == "digits" else d["n"] + d["n_test"]
        width = max(cfg["model"]["sizes"])
        return 8 * (4 * n * pixels + 12 * max(cfg["deen"]["batch"], 512) * width) + 16 * sum(
            a * b for a, b in zip(cfg["model"]["sizes"], cfg["model"]["sizes"][1:]))

    def build(self, cfg, base_dir=".", restore=False):
        train, test = images(cfg)
        dt = np.dtype(cfg["run"]["dtype"])
        flat, flat_test = train.reshape(len(train), -1), test.reshape(len(test), -1)
        sigma, scores = cfg["deen"]["sigma"], None
        if cfg["sigma_selection"]["grid"]:
            grid = cfg["sigma_selection"]["grid"]
            with phase(f"choosing sigma: held-out Parzen likelihood, {len(grid)} bandwidths, "
                       f"{len(flat_test)} x {len(flat)} points"):
                chosen, scores = select_sigma(flat, flat_test, grid)
            if cfg["sigma_selection"]["use"]:
                sigma = chosen
        energy = MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], seed=cfg["run"]["seed"], dtype=dt,
                     output_scale=cfg["model"]["output_scale"])
        sim = deen(energy, flat.astype(dt), sigma, cfg["deen"]["batch"], cfg["deen"]["lr"], seed=cfg["run"]["seed"],
                   grad_block=cfg["deen"]["grad_block"] or None)
        sim.static("data")                                # rebuilt from the config: neither recorded nor saved
        x_h, xi_h = noisy_batch(flat_test.astype(dt), sigma, cfg["run"]["seed"], 0, len(flat_test), split=HELDOUT)
        watch = slice(0, min(500, len(x_h)))
        every = cfg["output"]["every"]
        sim.observe("loss", lambda s: s.context["loss"], every=every, initial=False)
        sim.observe("heldout_loss", lambda s: dsm_loss(energy, x_h[watch], xi_h[watch], sigma), every=every)
        sim.context.update(cfg=cfg, held=(x_h, xi_h), sigma_used=sigma, scores=scores, train_images=train,
                           test_images=test)
        return sim

    def noise_levels(self, cfg, sigma, test):
        """[(tag, per-image noise s.d. [n])] of the test settings."""
        n = len(test)
        out = [("", np.full(n, sigma)), ("_sigma_test", np.full(n, cfg["deen"]["sigma_test"]))]
        if cfg["deen"]["patch_noise"] > 0:
            out.append(("_patch_noise", cfg["deen"]["patch_noise"] * test.reshape(n, -1).std(1)))
        return out

    def results(self, sim, cfg):
        c = sim.context
        energy, sigma = c["energy"], c["sigma_used"]
        x_h, xi_h = c["held"]
        train, test = c["train_images"], c["test_images"]
        dt = x_h.dtype
        out = {"heldout_loss": np.asarray(dsm_loss(energy, x_h, xi_h, sigma)), "sigma": np.asarray(sigma)}
        stream = Stream(cfg["run"]["seed"], StreamBlock.HELDOUT)
        tune = train[:min(500, len(train))]
        side = test.shape[1]
        for i, (tag, s) in enumerate(self.noise_levels(cfg, sigma, test)):
            z = stream.normal(1 + i, np.arange(len(test)), side * side, Purpose.DATA_NOISE).reshape(test.shape)
            noisy = test + s[:, None, None] * z
            flat = noisy.reshape(len(test), -1).astype(dt)
            deen_out = denoise(energy, flat, sigma).reshape(test.shape)
            if tag:                                             # the step at the test noise level instead
                rescaled = denoise(energy, flat, np.maximum(s, 1e-12)).reshape(test.shape)
                out[f"mse_denoised_rescaled{tag}"] = np.asarray(((rescaled.astype(np.float64) - test) ** 2).mean())
            # the filter's width: the best of the grid on training images with the same kind of noise
            zt = stream.normal(10 + i, np.arange(len(tune)), side * side, Purpose.DATA_NOISE).reshape(tune.shape)
            st = self.noise_levels(cfg, sigma, tune)[i][1]
            noisy_t = tune + st[:, None, None] * zt
            errs = [float(((filter_denoise(noisy_t, cfg["filter"]["median"], w) - tune) ** 2).mean())
                    for w in cfg["filter"]["gaussian"]]
            width = float(cfg["filter"]["gaussian"][int(np.argmin(errs))])
            filt = filter_denoise(noisy, cfg["filter"]["median"], width)
            out[f"mse_noisy{tag}"] = np.asarray(((noisy - test) ** 2).mean())
            out[f"mse_denoised{tag}"] = np.asarray(((deen_out.astype(np.float64) - test) ** 2).mean())
            out[f"mse_filter{tag}"] = np.asarray(((filt - test) ** 2).mean())
            out[f"filter_width{tag}"] = np.asarray(width)
            k = min(N_EXAMPLES, len(test))
            out[f"examples{tag}"] = np.stack([test[:k], noisy[:k], deen_out[:k].astype(np.float64), filt[:k]])
        if c["scores"] is not None:
            out["parzen_grid"] = np.asarray(cfg["sigma_selection"]["grid"], float)
            out["parzen_scores"] = c["scores"]
            out["sigma_selected"] = np.asarray(out["parzen_grid"][int(np.argmax(c["scores"]))])
        for k, v in energy.params.items():
            out[f"params/{k}"] = np.asarray(v)
        return out

    def energy(self, run, cfg):
        """The trained DEEN energy (an MLP on flattened images)."""
        net = MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], dtype=np.dtype(cfg["run"]["dtype"]))
        net.set_params(trained_params(run, "params", "the run did not finish"))
        return net

    def summary(self, run, cfg):
        r = {k: np.asarray(v) for k, v in run.results.items() if not k.startswith(("params", "examples"))}
        lines = [f"held-out loss {float(r['heldout_loss']):.5f} at sigma {float(r['sigma']):.4g}"]
        names = {"": f"sigma = {float(r['sigma']):.4g}", "_sigma_test": f"sigma' = {cfg['deen']['sigma_test']:.4g}",
                 "_patch_noise": f"{cfg['deen']['patch_noise']:.3g} x std(x) per image"}
        for tag, what in names.items():
            if f"mse_noisy{tag}" in r:
                lines.append(f"error/pixel at {what}: noisy {float(r[f'mse_noisy{tag}']):.5f}, DEEN "
                             f"{float(r[f'mse_denoised{tag}']):.5f}, median + Gaussian filter "
                             f"{float(r[f'mse_filter{tag}']):.5f} (width {float(r[f'filter_width{tag}']):.3g})"
                             + (f"; DEEN with the step at this noise level {float(r[f'mse_denoised_rescaled{tag}']):.5f}"
                                if f"mse_denoised_rescaled{tag}" in r else ""))
        if "sigma_selected" in r:
            lines.append(f"sigma selected by held-out Parzen likelihood: {float(r['sigma_selected']):.4g}")
        return lines

    def plot(self, run, png):
        """Paper 002, Figures 2-3: clean / noisy / DEEN / filter rows for each test noise,
        and the training curves."""
        plt = pyplot()
        tags = [t for t in ("", "_sigma_test", "_patch_noise") if f"examples{t}" in run.results]
        titles = {"": "test noise at the training sigma", "_sigma_test": "test noise at sigma' (other level)",
                  "_patch_noise": "patch-dependent test noise"}
        fig, axes = plt.subplots(1, len(tags) + 1, figsize=(3.6 * len(tags) + 3.6, 3.4),
                                 gridspec_kw={"width_ratios": [2] * len(tags) + [1.4]})
        for ax, tag in zip(axes, tags):
            ex = np.clip(np.asarray(run.results[f"examples{tag}"]), 0, 1)    # [4, k, side, side]
            rows, k, side = ex.shape[0], ex.shape[1], ex.shape[2]
            gap = max(1, side // 8)
            mosaic = np.ones((rows * (side + gap) - gap, k * (side + gap) - gap))
            for r in range(rows):
                for j in range(k):
                    mosaic[r * (side + gap):r * (side + gap) + side, j * (side + gap):j * (side + gap) + side] = ex[r, j]
            ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1)
            ax.set_yticks([r * (side + gap) + side / 2 for r in range(rows)], ["clean", "noisy", "DEEN", "filter"])
            ax.set_xticks([])
            ax.set_title(titles[tag], fontsize=9)
            ax.set_xlabel("test images")
        ax = axes[-1]
        for name, label in (("loss", "training loss"), ("heldout_loss", "held-out loss")):
            if name in run.observables:
                o = run.observables[name]
                ax.plot(o.steps, o.values, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("DEEN loss")
        ax.set_title("denoising score matching loss", fontsize=9)
        ax.legend(fontsize=8)
        return save(fig, png)
