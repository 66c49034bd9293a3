"""``estimator = "deen"``: Deep Energy Estimator Networks on 2-D data (paper 002).

    [run]      steps (Adam iterations), seed, dtype
    [data]     kind = "ring" (K isotropic Gaussians on a circle) | "spiral"; n, n_heldout,
               components, radius, std (ring), noise (spiral)
    [model]    sizes = [2, 32, 32, 32, 1], activation = "tanh"
    [deen]     sigma, batch, grad_block, lr, schedule (constant | cosine), sigma_test (a second noise
               level for single-step denoising)
    [sigma_selection]  grid = [...] (held-out Parzen log-likelihood; empty: no selection),
               use (train at the selected sigma instead of deen.sigma)
    [baselines]  score_network, score_sizes (the direct score network psi = MLP(x) in R^2),
               cd (the energy trained by contrastive divergence, eqs. 26-27)
    [output]   every, checkpoint_every, compression, plot

The algorithm is ``particleflow.estimators.deen``.  Observables every ``output.every``
steps: ``loss`` (the latest minibatch's DEEN loss) and ``heldout_loss`` (on a fixed
noisy held-out subset of up to 2000 points).  Results: ``heldout_loss`` (all held-out
points, fixed noise), ``mse_noisy`` and ``mse_denoised`` at sigma and at
``sigma_test`` (single-step denoising, eq. 11, xhat = xi - sigma^2 grad E(xi) with the
training sigma: the trained denoiser as it is; ``mse_denoised_rescaled_sigma_test``
takes the step sigma_test^2 instead), ``curl_relative`` (mean |d1 psi2 -
d2 psi1| over mean |d1 psi2| of the score psi = -grad E on a grid, from Hessian-vector
products); for the ring, where the truth is known: ``mmse`` (the Bayes denoiser's
MSE on the same held-out pairs, the loss's minimum: the noisy density is the same
mixture with variance std^2 + sigma^2), ``corr_logp`` (Pearson correlation of -E and
log p_sigma on a grid where p_sigma > 1e-3 max) and ``mode_fractions`` (mass of
exp(-E) near each mode); ``sigma_selected`` and ``parzen_scores`` with a selection
grid; the trained parameters as ``params/<name>`` (``pf.experiments.load_energy``).
Baselines add ``heldout_loss_score`` and ``curl_relative_score`` (from the score
network's Jacobian), ``heldout_loss_cd``, ``corr_logp_cd`` and ``mode_fractions_cd``, and
their parameters as ``params_score/...`` and ``params_cd/...``.
"""
import math

import numpy as np

from ..config import ConfigError, Field, output_section, positive, run_section
from ..energies import MLP, ScoreMLP, ring_means as ring_of
from ..estimators.deen import (HELDOUT, add_contrastive_divergence, add_score_network, deen, denoise, dsm_loss,
                               noisy_batch, select_sigma)
from ..random import Purpose, Stream, StreamBlock
from ..status import phase
from .base import Experiment, check_layer_sizes, learning_rate, trained_params
from .common import pyplot, save

DATA = {"kind": Field("str", "ring", choices=("ring", "spiral"), doc="data set (generated from the seed)"),
        "n": Field("int", 20000, lo=2, doc="training points"),
        "n_heldout": Field("int", 5000, lo=2, doc="held-out points"),
        "components": Field("int", 8, lo=1, hi=1000, doc="ring: number of Gaussians"),
        "radius": positive(2.0, doc="ring: radius of the circle of means"),
        "std": positive(0.1, doc="ring: standard deviation of each Gaussian"),
        "noise": Field("float", 0.05, lo=0, doc="spiral: standard deviation of the noise around the curve")}
MODEL = {"sizes": Field("list", [2, 32, 32, 32, 1], doc="MLP layer sizes, [2, ..., 1]"),
         "activation": Field("str", "tanh", choices=("tanh", "softplus", "silu"), doc="smooth activation")}
DEEN = {"sigma": positive(0.1, doc="training noise level"), "batch": Field("int", 256, lo=1, doc="minibatch size"),
        "grad_block": Field("int", 0, lo=0, doc="rows per block of the loss gradient: blocks run on the threads "
                            "and, under mpiexec, are shared by the ranks (data-parallel, bitwise for any rank count); "
                            "0: the whole batch at once, on every rank"),
        "lr": positive(1e-3, doc="Adam learning rate"),
        "schedule": Field("str", "constant", choices=("constant", "cosine"),
                          doc="learning rate: constant, or cosine decay to 0 over run.steps"),
        "sigma_test": positive(0.3, doc="a second noise level for single-step denoising")}
BASELINES = {"score_network": Field("bool", False, doc="also train the direct score network psi = MLP(x) in R^2"),
             "score_sizes": Field("list", [2, 32, 32, 32, 2], doc="its layer sizes, [2, ..., 2]"),
             "cd": Field("bool", False, doc="also train the energy by contrastive divergence (eqs. 26-27)")}
SELECTION = {"grid": Field("list", [], doc="sigmas for the held-out Parzen selection (empty: none)"),
             "use": Field("bool", False, doc="train at the selected sigma")}
GRID = np.linspace(-3.0, 3.0, 121)


def check_selection(cfg):
    """The [sigma_selection] section (shared with the image experiment)."""
    g = cfg["sigma_selection"]["grid"]
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in g):
        raise ConfigError(f"sigma_selection.grid must be positive numbers; got {g!r}")
    if cfg["sigma_selection"]["use"] and not g:
        raise ConfigError("sigma_selection.use = true needs a non-empty sigma_selection.grid")


def data_sets(cfg):
    """(train, held-out) [n, 2] float64 from the seed."""
    d, seed = cfg["data"], cfg["run"]["seed"]
    out = []
    for split, n in ((0, d["n"]), (1, d["n_heldout"])):
        stream = Stream(seed, StreamBlock.INIT + split)
        u = stream.uniform(0, np.arange(n), 1, Purpose.INIT)[:, 0]
        z = stream.normal(0, np.arange(n), 2, Purpose.PROPOSAL)
        if d["kind"] == "ring":
            k = np.minimum((u * d["components"]).astype(np.int64), d["components"] - 1)
            out.append(ring_means(cfg)[k] + d["std"] * z)
        else:
            t = np.sqrt(u)                                     # uniform along the curve's area
            ang = 4 * np.pi * t
            out.append(np.stack([2 * t * np.cos(ang), 2 * t * np.sin(ang)], 1) + d["noise"] * z)
    return out


def ring_means(cfg):
    return ring_of(cfg["data"]["components"], cfg["data"]["radius"])


def ring_log_density(cfg, x, sigma):
    """log p_sigma(x): the ring mixture convolved with N(0, sigma^2 I)."""
    mu, v = ring_means(cfg), cfg["data"]["std"] ** 2 + sigma ** 2
    a = -((x[:, None, :] - mu[None]) ** 2).sum(2) / (2 * v)
    m = a.max(1)
    return m + np.log(np.exp(a - m[:, None]).sum(1)) - math.log(len(mu)) - math.log(2 * math.pi * v)


def ring_posterior_mean(cfg, xi, sigma):
    """E[x | xi] for the ring mixture (the Bayes denoiser): component responsibilities
    under N(mu_k, (s^2 + sigma^2) I), then the Gaussian posterior mean per component."""
    mu, s2 = ring_means(cfg), cfg["data"]["std"] ** 2
    v = s2 + sigma ** 2
    a = -((xi[:, None, :] - mu[None]) ** 2).sum(2) / (2 * v)
    w = np.exp(a - a.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    per = mu[None] + (s2 / v) * (xi[:, None, :] - mu[None])
    return (w[:, :, None] * per).sum(1)


class DEEN(Experiment):
    name = "deen"
    description = "paper 002: deep energy estimator networks (denoising score matching) on 2-D data"
    sections = {"run": run_section(steps=4000, steps_doc="Adam iterations"), "data": DATA, "model": MODEL,
                "deen": DEEN, "sigma_selection": SELECTION, "baselines": BASELINES,
                "output": output_section(every=100, checkpoint_every=1000)}

    def check(self, cfg):
        check_layer_sizes(cfg["model"]["sizes"], "model.sizes", 2, 1, " (2-D data, one energy)")
        check_layer_sizes(cfg["baselines"]["score_sizes"], "baselines.score_sizes", 2, 2)
        check_selection(cfg)

    def memory_bytes(self, cfg):
        width = max(cfg["model"]["sizes"])
        d = cfg["data"]
        return 8 * (4 * (d["n"] + d["n_heldout"]) * 2 + 12 * cfg["deen"]["batch"] * width
                    + 8 * GRID.size ** 2 * max(width, d["components"]))

    def build(self, cfg, base_dir=".", restore=False):
        train, held = data_sets(cfg)
        dt = np.dtype(cfg["run"]["dtype"])
        sigma = cfg["deen"]["sigma"]
        scores = None
        if cfg["sigma_selection"]["grid"]:
            grid = cfg["sigma_selection"]["grid"]
            with phase(f"choosing sigma: held-out Parzen likelihood, {len(grid)} bandwidths, "
                       f"{len(held)} x {len(train)} points"):
                chosen, scores = select_sigma(train, held, grid)
            if cfg["sigma_selection"]["use"]:
                sigma = chosen
        energy = MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], seed=cfg["run"]["seed"], dtype=dt)
        sim = deen(energy, train.astype(dt), sigma, cfg["deen"]["batch"], learning_rate(cfg["deen"], cfg["run"]["steps"]),
                   seed=cfg["run"]["seed"], grad_block=cfg["deen"]["grad_block"] or None)
        b = cfg["baselines"]
        if b["score_network"]:
            add_score_network(sim, ScoreMLP(b["score_sizes"], seed=cfg["run"]["seed"], dtype=dt), cfg["deen"]["lr"])
        if b["cd"]:
            cd = MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], seed=cfg["run"]["seed"], dtype=dt)
            add_contrastive_divergence(sim, cd, cfg["deen"]["lr"])
        x_h, xi_h = noisy_batch(held.astype(dt), sigma, cfg["run"]["seed"], 0, len(held), split=HELDOUT)
        watch = slice(0, min(2000, len(held)))
        every = cfg["output"]["every"]
        sim.observe("loss", lambda s: s.context["loss"], every=every, initial=False)
        sim.observe("heldout_loss", lambda s: dsm_loss(energy, x_h[watch], xi_h[watch], sigma), every=every)
        sim.trajectory(["data"], every=None)
        sim.context.update(cfg=cfg, held=(x_h, xi_h), sigma_used=sigma, scores=scores)
        return sim

    def results(self, sim, cfg):
        c = sim.context
        energy, sigma = c["energy"], c["sigma_used"]
        x_h, xi_h = c["held"]
        out = {"heldout_loss": np.asarray(dsm_loss(energy, x_h, xi_h, sigma)), "sigma": np.asarray(sigma)}
        stream = Stream(cfg["run"]["seed"], StreamBlock.HELDOUT)
        for i, (tag, s) in enumerate((("", sigma), ("_sigma_test", cfg["deen"]["sigma_test"]))):
            z = stream.normal(1 + i, np.arange(len(x_h)), 2, Purpose.DATA_NOISE, x_h.dtype)
            noisy = x_h + x_h.dtype.type(s) * z                 # fresh noise at each level
            out[f"mse_noisy{tag}"] = np.asarray(((noisy - x_h) ** 2).sum(1).mean())
            out[f"mse_denoised{tag}"] = np.asarray(((denoise(energy, noisy, sigma) - x_h) ** 2).sum(1).mean())
            if tag:                                             # the step at the test noise level instead
                out[f"mse_denoised_rescaled{tag}"] = np.asarray(((denoise(energy, noisy, s) - x_h) ** 2).sum(1).mean())
        gx, gy = np.meshgrid(GRID, GRID)
        pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(x_h.dtype)
        out["curl_relative"] = np.asarray(curl_relative(energy, pts))
        if cfg["data"]["kind"] == "ring":
            post = ring_posterior_mean(cfg, xi_h.astype(np.float64), sigma)
            out["mmse"] = np.asarray(((x_h.astype(np.float64) - post) ** 2).sum(1).mean())
            logp = ring_log_density(cfg, pts.astype(np.float64), sigma)
            neg_e = -energy.value(pts).astype(np.float64)
            mask = logp > logp.max() + math.log(1e-3)
            out["corr_logp"] = np.asarray(np.corrcoef(neg_e[mask], logp[mask])[0, 1])
            out["mode_fractions"] = mode_fractions(cfg, pts.astype(np.float64), neg_e, sigma)
        if c["scores"] is not None:
            out["parzen_grid"] = np.asarray(cfg["sigma_selection"]["grid"], float)
            out["parzen_scores"] = c["scores"]
            out["sigma_selected"] = np.asarray(out["parzen_grid"][int(np.argmax(c["scores"]))])
        for k, v in energy.params.items():
            out[f"params/{k}"] = np.asarray(v)
        if "score_network" in c:
            net = c["score_network"]
            r = x_h - xi_h - xi_h.dtype.type(sigma ** 2) * net(xi_h)
            out["heldout_loss_score"] = np.asarray((r * r).sum(1).mean())
            J = net.jacobian(pts).astype(np.float64)
            out["curl_relative_score"] = np.asarray(np.abs(J[:, 1, 0] - J[:, 0, 1]).mean() / np.abs(J[:, 1, 0]).mean())
            for k, v in net.params.items():
                out[f"params_score/{k}"] = np.asarray(v)
        if "cd_energy" in c:
            cd = c["cd_energy"]
            out["heldout_loss_cd"] = np.asarray(dsm_loss(cd, x_h, xi_h, sigma))
            if cfg["data"]["kind"] == "ring":
                neg_cd = -cd.value(pts).astype(np.float64)
                out["corr_logp_cd"] = np.asarray(np.corrcoef(neg_cd[mask], logp[mask])[0, 1])
                out["mode_fractions_cd"] = mode_fractions(cfg, pts.astype(np.float64), neg_cd, sigma)
            for k, v in cd.params.items():
                out[f"params_cd/{k}"] = np.asarray(v)
        return out

    def energy(self, run, cfg, which="params"):
        """The trained DEEN energy (``which="params_cd"``: the CD baseline's;
        ``"params_score"``: the direct score network)."""
        dt = np.dtype(cfg["run"]["dtype"])
        if which == "params_score":
            net = ScoreMLP(cfg["baselines"]["score_sizes"], dtype=dt)
        else:
            net = MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], dtype=dt)
        net.set_params(trained_params(run, which, "the run did not finish, or it trained no such model"))
        return net

    def summary(self, run, cfg):
        r = {k: np.asarray(v) for k, v in run.results.items() if not k.startswith("params")}
        line = (f"held-out loss {float(r['heldout_loss']):.5f}" + (f", mmse {float(r['mmse']):.5f} "
                f"(ratio {float(r['heldout_loss'] / r['mmse']):.3f})" if "mmse" in r else "") +
                f"; denoising MSE {float(r['mse_noisy']):.4f} -> {float(r['mse_denoised']):.4f} at sigma, "
                f"{float(r['mse_noisy_sigma_test']):.4f} -> {float(r['mse_denoised_sigma_test']):.4f} at sigma_test "
                f"({float(r['mse_denoised_rescaled_sigma_test']):.4f} with the step sigma_test^2)")
        lines = [line, f"curl (relative) {float(r['curl_relative']):.2e}"]
        if "corr_logp" in r:
            lines.append(f"corr(-E, log p_sigma) {float(r['corr_logp']):.4f}; mode fractions "
                         f"{np.array2string(r['mode_fractions'], precision=3)}")
        if "curl_relative_score" in r:
            lines.append(f"direct score network: held-out loss {float(r['heldout_loss_score']):.5f}, curl (relative) "
                         f"{float(r['curl_relative_score']):.3g}")
        if "heldout_loss_cd" in r:
            lines.append(f"contrastive divergence: held-out loss {float(r['heldout_loss_cd']):.5f}" + (
                f", corr {float(r['corr_logp_cd']):.4f}, mode fractions "
                f"{np.array2string(r['mode_fractions_cd'], precision=3)}" if "mode_fractions_cd" in r else ""))
        if "sigma_selected" in r:
            lines.append(f"sigma selected by held-out Parzen likelihood: {float(r['sigma_selected']):.4g}")
        return lines

    def plot(self, run, png):
        """Paper 002, Figure 1 panels: data, exp(-E) on a grid, the score field."""
        plt = pyplot()
        energy = self.energy(run, self.validate(run.config))
        data = np.asarray(run.ensembles["data"].positions[0])
        gx, gy = np.meshgrid(GRID, GRID)
        pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(next(iter(energy.params.values())).dtype)
        e = energy.value(pts).reshape(gx.shape)
        cfg = self.validate(run.config)
        has_score = any(k.startswith("params_score/") for k in run.results)
        has_cd = any(k.startswith("params_cd/") for k in run.results)
        fig, axes = plt.subplots(1, 3 + has_score + has_cd, figsize=(4.9 * (3 + has_score + has_cd), 4.2))
        sub = data[np.random.default_rng(0).permutation(len(data))[:3000]]
        axes[0].scatter(sub[:, 0], sub[:, 1], s=2, alpha=0.5)
        axes[0].set_title(f"training data ({len(sub)} of {len(data)} points)")
        density(fig, axes[1], e, "learned density exp(-E)")
        q = np.linspace(-3, 3, 21)
        qx, qy = np.meshgrid(q, q)
        qp = np.stack([qx.ravel(), qy.ravel()], 1).astype(pts.dtype)
        s = -energy.grad(qp)
        axes[2].quiver(qx, qy, s[:, 0].reshape(qx.shape), s[:, 1].reshape(qx.shape))
        axes[2].set_title("learned score -grad E (arrows)")
        k = 3
        if has_score:
            J = self.energy(run, cfg, "params_score").jacobian(pts)
            im = axes[k].imshow((J[:, 1, 0] - J[:, 0, 1]).reshape(gx.shape), origin="lower",
                                extent=(-3, 3, -3, 3), cmap="coolwarm")
            fig.colorbar(im, ax=axes[k], fraction=0.046, label="d psi_1 / d x_0 - d psi_0 / d x_1")
            axes[k].set_title("curl of the direct score network psi")
            k += 1
        if has_cd:
            ecd = self.energy(run, cfg, "params_cd").value(pts).reshape(gx.shape)
            density(fig, axes[k], ecd, "density exp(-E), contrastive divergence")
        for ax in axes:
            ax.set_aspect("equal")
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_xlabel("x_0")
            ax.set_ylabel("x_1")
        return save(fig, png)


def density(fig, ax, e, title):
    """exp(-E) on the [-3, 3]^2 grid, normalised to 1 at its maximum, with its colorbar."""
    im = ax.imshow(np.exp(-(e - e.min())), origin="lower", extent=(-3, 3, -3, 3))
    fig.colorbar(im, ax=ax, fraction=0.046, label="exp(-E) / its maximum")
    ax.set_title(title)


def curl_relative(energy, pts):
    """mean |d1 psi2 - d2 psi1| / mean |d1 psi2| for psi = -grad E, from two Hessian-vector
    products (the Hessian's off-diagonal entries H10 and H01)."""
    e0 = np.zeros_like(pts)
    e0[:, 0] = 1
    e1 = np.zeros_like(pts)
    e1[:, 1] = 1
    h10 = energy.hvp(pts, e0)[:, 1].astype(np.float64)
    h01 = energy.hvp(pts, e1)[:, 0].astype(np.float64)
    return float(np.abs(h10 - h01).mean() / max(np.abs(h10).mean(), 1e-300))


def mode_fractions(cfg, pts, neg_e, sigma):
    """Mass of exp(-E) on the grid within 3 sd of each ring mode, as fractions."""
    mu = ring_means(cfg)
    w = np.exp(neg_e - neg_e.max())
    r = 3 * math.sqrt(cfg["data"]["std"] ** 2 + sigma ** 2)
    mass = np.array([w[((pts - m) ** 2).sum(1) < r * r].sum() for m in mu])
    return mass / mass.sum()
