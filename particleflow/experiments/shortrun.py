"""``estimator = "shortrun"``: learning EBMs with short-run MCMC (paper 004), with the
persistent-CD and CD-k variants of the same estimator.

    [run]        steps (learning iterations), seed, dtype
    [data]       kind = "expfamily" (1-D N(mean, std^2), Section 4.1) | "ring" (2-D
                 Gaussians on a circle) | "digits" (scikit-learn, 8x8) | "faces"
                 (scikit-image's LFW subset, resized to image_size); n, mean, std,
                 components, radius, image_size
    [model]      ring: MLP sizes, activation; images: ConvNet n_f (the paper's Tables
                 4-6 at any width); expfamily: f = <theta, (x, x^2)>
    [short_run]  mode (short_run | pcd | cd), K_values (one learner per K, sharing the
                 data batches), step_size h and noise c (x <- x - h grad E + c z;
                 the paper's code: 1 and 0.01), init ("uniform" on [-1, 1] | "gaussian"),
                 n_chains (m, also the data batch), data_noise (sigma), lr, schedule
                 (constant | cosine), buffer_size, reinit (pcd), chain_block (rows per
                 block of chains and of the gradient; under mpiexec the ranks share them)
    [output]     every, checkpoint_every, compression, plot

The algorithm is ``particleflow.estimators.shortrun``.  Observables every
``output.every`` iterations, per K (suffix ``_K<k>``): ``f_data``, ``f_model`` (mean
negative energies of the noisy data batch and the short-run samples), ``gap``
(f_data - f_model), ``short_run_K<k>/grad_norm`` (mean ||grad f|| along the chain, the
paper's Table 2 column), ``short_run_K<k>/buffer_age`` (pcd).  Results: ``K_values``;
for every K, from 20 000 fresh chains after training: ``q_mean``, ``q_std`` (expfamily:
moments of q_theta), ``grad_norm``; expfamily: ``p_mean``, ``p_std`` (of the EBM
p_theta, NaN where not normalisable), ``theta`` [nK, 2], ``data_mean``, ``data_std``;
ring: ``mode_fractions`` [nK, components] (the mass near each mode: share of all samples
within 3 s.d. of the mode and nearer to it than to the others; 0.124 each for the data),
``off_mode`` [nK] (the share near none), ``data_mode_fractions`` and ``data_off_mode``
(the same for the training data), and
``chains_mode_fractions`` / ``chains_off_mode`` for the chains as training left them
(pcd: the replay buffer; cd: the last chains from data); the parameters as ``params_K<k>/<name>``.  Frames
of the chains of the largest K are recorded every ``output.every`` iterations.
"""
import math

import numpy as np

from .. import datasets
from ..config import ConfigError, Field, output_section, positive, run_section
from ..energies import MLP, ConvNet, QuadraticExponentialFamily
from ..ensemble import Ensemble
from ..estimators.shortrun import MODES, add_short_run, interpolate, reconstruct
from ..moves import GaussianBase, ShortRun, UniformBox
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .base import Experiment, check_layer_sizes, learning_rate, trained_params
from .deen import ring_means
from .common import grey_images, pyplot, save

IMAGES = ("digits", "faces")
DATA = {"kind": Field("str", "expfamily", choices=("expfamily", "ring") + IMAGES, doc="data set"),
        "n": Field("int", 20000, lo=2, doc="training points"),
        "mean": Field("float", 0.3, doc="expfamily: data mean"),
        "std": positive(0.2, doc="expfamily: data s.d.; ring: s.d. of each Gaussian"),
        "components": Field("int", 8, lo=1, hi=1000, doc="ring: number of Gaussians"),
        "radius": positive(1.0, doc="ring: radius of the circle of means"),
        "image_size": Field("int", 16, lo=8, hi=128, doc="faces: side after resizing (a power of two); digits: 8"),
        "n_test": Field("int", 16, lo=1, hi=100, doc="images: held out for reconstruction")}
MODEL = {"sizes": Field("list", [2, 64, 64, 64, 1], doc="ring: MLP layer sizes [2, ..., 1]"),
         "activation": Field("str", "silu", choices=("tanh", "softplus", "silu", "relu", "leaky_relu"),
                             doc="ring: activation"),
         "n_f": Field("int", 16, lo=1, hi=512, doc="images: ConvNet width (paper 004, Tables 4-6)")}
GENERATOR = {"rhos": Field("int", 8, lo=2, hi=64, doc="images: interpolation points rho in [0, 1]"),
             "recon_iter": Field("int", 200, lo=1, doc="images: Adam steps on z for reconstruction"),
             "recon_lr": positive(0.05, doc="images: Adam learning rate on z")}
SHORT_RUN = {"mode": Field("str", "short_run", choices=tuple(MODES), doc="short_run (from p_0) | pcd | cd"),
             "K_values": Field("list", [100], doc="Langevin steps per chain; one learner per value"),
             "step_size": positive(1.0, doc="h in x <- x - h grad E + c z"),
             "noise": Field("float", 0.01, lo=0, doc="c in x <- x - h grad E + c z"),
             "init": Field("str", "uniform", choices=("uniform", "gaussian"), doc="p_0: U[-1, 1]^d or N(0, I)"),
             "n_chains": Field("int", 64, lo=1, doc="chains per iteration (m), also the data batch"),
             "data_noise": Field("float", 0.03, lo=0, doc="sigma of the noise added to data batches"),
             "lr": positive(1e-4, doc="Adam learning rate"),
             "schedule": Field("str", "constant", choices=("constant", "cosine"),
                               doc="learning rate: constant, or cosine decay to 0 over run.steps"),
             "buffer_size": Field("int", 10000, lo=1, doc="pcd: replay buffer size"),
             "reinit": Field("float", 0.05, lo=0, hi=1, doc="pcd: re-initialisation probability per use"),
             "chain_block": Field("int", 0, lo=0,
                                  doc="rows per block of chains and of the gradient, each block computed on its "
                                      "own; under mpiexec the ranks share the blocks (0: one batch, on every rank)")}
N_EVAL = 20000


def images(cfg):
    """(training, held-out) [n, 1, S, S] grey levels scaled to [-1, 1] (the paper's
    range); digits: a seeded permutation holds out ``n_test``; faces: resized to
    image_size (bilinear)."""
    x = grey_images(cfg["data"])
    return datasets.hold_out(np.clip(2 * x - 1, -1, 1)[:, None], cfg["data"]["n_test"], cfg["run"]["seed"])


def data_set(cfg):
    d, seed = cfg["data"], cfg["run"]["seed"]
    if d["kind"] in IMAGES:
        return images(cfg)[0]
    stream = Stream(seed, StreamBlock.INIT)
    ids = np.arange(d["n"])
    if d["kind"] == "expfamily":
        return d["mean"] + d["std"] * stream.normal(0, ids, 1, Purpose.PROPOSAL)
    u = stream.uniform(0, ids, 1, Purpose.INIT)[:, 0]
    k = np.minimum((u * d["components"]).astype(np.int64), d["components"] - 1)
    return ring_means(cfg)[k] + d["std"] * stream.normal(0, ids, 2, Purpose.PROPOSAL)


def base_of(cfg):
    return UniformBox(-1.0, 1.0) if cfg["short_run"]["init"] == "uniform" else GaussianBase(0.0, 1.0)


class ShortRunExperiment(Experiment):
    name = "shortrun"
    description = "paper 004: learning EBMs with short-run MCMC from noise (and persistent CD, CD-k)"
    sections = {"run": run_section(steps=2000, steps_doc="learning iterations"), "data": DATA, "model": MODEL,
                "short_run": SHORT_RUN, "generator": GENERATOR,
                "output": output_section(every=50, checkpoint_every=500)}

    def check(self, cfg):
        ks = cfg["short_run"]["K_values"]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 100000 for k in ks) \
                or len(set(ks)) != len(ks):
            raise ConfigError(f"short_run.K_values must be distinct integers in [1, 100000]; got {ks!r}")
        sr = cfg["short_run"]
        if sr["mode"] == "pcd" and sr["buffer_size"] < sr["n_chains"]:
            raise ConfigError(f"short_run.buffer_size ({sr['buffer_size']}) must be at least short_run.n_chains "
                              f"({sr['n_chains']})")
        d = cfg["data"]
        if d["kind"] in IMAGES:
            datasets.require_data_extra(d["kind"])
            if d["kind"] == "faces" and d["image_size"] & (d["image_size"] - 1):
                raise ConfigError(f"data.image_size must be a power of two (8, 16, 32, ...); got {d['image_size']}")
        if cfg["data"]["kind"] == "ring":
            check_layer_sizes(cfg["model"]["sizes"], "model.sizes", 2, 1, " (2-D data, one energy)")

    def memory_bytes(self, cfg):
        sr = cfg["short_run"]
        kind = cfg["data"]["kind"]
        d = {"expfamily": 1, "ring": 2}.get(kind) or self.side(cfg) ** 2
        chains = sr["buffer_size"] if sr["mode"] == "pcd" else sr["n_chains"]
        width = max(cfg["model"]["sizes"]) if kind == "ring" else (2 if kind == "expfamily" else 16 * cfg["model"]["n_f"])
        return 8 * (4 * cfg["data"]["n"] * d + len(sr["K_values"]) * (4 * chains * d + 12 * max(chains, N_EVAL) * width))

    @staticmethod
    def side(cfg):
        return 8 if cfg["data"]["kind"] == "digits" else cfg["data"]["image_size"]

    def make_energy(self, cfg, seed=0):
        if cfg["data"]["kind"] == "expfamily":
            return QuadraticExponentialFamily()
        if cfg["data"]["kind"] in IMAGES:
            return ConvNet.nijkamp(cfg["model"]["n_f"], self.side(cfg), channels=1, seed=seed,
                                   dtype=np.dtype(cfg["run"]["dtype"]))
        return MLP(cfg["model"]["sizes"], activation=cfg["model"]["activation"], seed=seed,
                   dtype=np.dtype(cfg["run"]["dtype"]))

    def build(self, cfg, base_dir=".", restore=False):
        data = data_set(cfg)
        dt = np.float64 if cfg["data"]["kind"] == "expfamily" else np.dtype(cfg["run"]["dtype"])
        sim = Simulation({"data": Ensemble(data.astype(dt), name="data")}, seed=cfg["run"]["seed"])
        sr, every = cfg["short_run"], cfg["output"]["every"]
        energies = {}
        for K in sr["K_values"]:
            e = self.make_energy(cfg, cfg["run"]["seed"])
            tag = f"_K{K}"
            add_short_run(sim, e, sr["n_chains"], K, sr["step_size"], sr["noise"], sr["mode"], base_of(cfg),
                          sr["data_noise"], learning_rate(sr, cfg["run"]["steps"]), buffer_size=sr["buffer_size"],
                          reinit=sr["reinit"], suffix=tag, chain_block=sr["chain_block"] or None)
            energies[K] = e
            for name in ("f_data", "f_model"):
                sim.observe(name + tag, lambda s, k=name + tag: s.context[k], every=every, initial=False)
            sim.observe("gap" + tag, lambda s, t=tag: s.context["f_data" + t] - s.context["f_model" + t], every=every,
                        initial=False)
        sim.observe_moves(every=every)
        if cfg["data"]["kind"] in IMAGES:
            sim.static("data")                            # rebuilt from the config: neither recorded nor saved
        else:
            sim.trajectory(["data"], every=None)
        sim.trajectory([f"chains_K{max(sr['K_values'])}"], every=every)
        sim.context.update(cfg=cfg, energies=energies)
        return sim

    def results(self, sim, cfg):
        sr = cfg["short_run"]
        energies = sim.context["energies"]
        data = np.asarray(sim.ensembles["data"].x, np.float64)
        out = {"K_values": np.asarray(sr["K_values"], np.int64)}
        rows = {k: [] for k in ("q_mean", "q_std", "grad_norm", "p_mean", "p_std", "theta", "mode_fractions",
                                "off_mode")}
        stream = Stream(cfg["run"]["seed"], StreamBlock.SHORTRUN_EVAL)
        ids = np.arange(N_EVAL)
        for K in sr["K_values"]:
            move = sim.context[f"short_run_K{K}"]
            x0 = base_of(cfg).sample(stream, 0, ids, data.shape[1:], sim.ensembles["data"].x.dtype)
            xq, gn = move.run_chains(x0, ids, stream, 1)
            xq = np.asarray(xq, np.float64)
            rows["q_mean"].append(xq.mean(0))
            rows["q_std"].append(xq.std(0))
            rows["grad_norm"].append(gn)
            e = energies[K]
            if cfg["data"]["kind"] in IMAGES:
                pass
            elif cfg["data"]["kind"] == "expfamily":
                rows["theta"].append(e.theta.copy())
                pm, ps = e.mean_std() if e.theta[1] < 0 else (math.nan, math.nan)
                rows["p_mean"].append(pm)
                rows["p_std"].append(ps)
            else:
                fr, off = mode_fractions(cfg, xq)
                rows["mode_fractions"].append(fr)
                rows["off_mode"].append(off)
            for k, v in e.params.items():
                out[f"params_K{K}/{k}"] = np.asarray(v)
        for k, v in rows.items():
            if v:
                out[k] = np.asarray(v, np.float64)
        if cfg["data"]["kind"] == "ring":
            out["data_mode_fractions"], out["data_off_mode"] = (np.asarray(v) for v in mode_fractions(cfg, data))
            chains = [mode_fractions(cfg, np.asarray(sim.ensembles[f"chains_K{K}"].x, np.float64))
                      for K in sr["K_values"]]
            out["chains_mode_fractions"] = np.asarray([c[0] for c in chains])
            out["chains_off_mode"] = np.asarray([c[1] for c in chains])
        if cfg["data"]["kind"] == "expfamily":
            out["q_mean"], out["q_std"] = out["q_mean"][:, 0], out["q_std"][:, 0]
            out["data_mean"], out["data_std"] = np.asarray(data.mean()), np.asarray(data.std())
        if cfg["data"]["kind"] in IMAGES:
            del out["q_mean"], out["q_std"]
            out.update(self.generator_results(sim, cfg, stream))
        return out

    def generator_results(self, sim, cfg, stream):
        """Section 3.4 with the learner of the largest K: a synthesis grid, interpolation
        between pairs of starts (noise off), reconstruction of held-out images by Adam on z."""
        K = max(cfg["short_run"]["K_values"])
        sr, g = cfg["short_run"], cfg["generator"]
        e = sim.context["energies"][K]
        dt = np.dtype(cfg["run"]["dtype"])
        shape = (1, self.side(cfg), self.side(cfg))
        move = sim.context[f"short_run_K{K}"]
        samples, _ = move.run_chains(base_of(cfg).sample(stream, 2, np.arange(64), shape, dt), np.arange(64), stream, 2)
        z = base_of(cfg).sample(stream, 3, np.arange(8), shape, dt)
        rhos = np.linspace(0, 1, g["rhos"])
        inter = interpolate(e, z[:4], z[4:], rhos, K, sr["step_size"])
        test = images(cfg)[1].astype(dt)
        _, rec, losses = reconstruct(e, test, K, sr["step_size"], g["recon_iter"], g["recon_lr"], base_of(cfg),
                                     cfg["run"]["seed"])
        n_pix = float(np.prod(shape))
        return {"samples": np.asarray(samples, np.float64), "interpolation_rho": rhos,
                "interpolation": np.asarray(inter, np.float64),
                "reconstructions": np.stack([test, rec]).astype(np.float64),
                "reconstruction_error": np.asarray(losses) / n_pix}

    def energy(self, run, cfg, K=None):
        """The trained energy of the learner with K steps (default: the largest K)."""
        K = max(cfg["short_run"]["K_values"]) if K is None else K
        e = self.make_energy(cfg)
        e.set_params(trained_params(run, f"params_K{K}", f"the run did not finish, or K = {K} is not one of "
                                                         f"{cfg['short_run']['K_values']}"))
        return e

    def summary(self, run, cfg):
        r = {k: np.asarray(v) for k, v in run.results.items() if not k.startswith("params")}
        lines = []
        for i, K in enumerate(r["K_values"]):
            line = f"K = {int(K):4d}: mean ||grad f|| along the chain {float(r['grad_norm'][i]):.4g}"
            if "p_std" in r:
                line += (f"; q_theta mean {float(r['q_mean'][i]):.4f} s.d. {float(r['q_std'][i]):.4f} (data "
                         f"{float(r['data_mean']):.4f}, {float(r['data_std']):.4f}); p_theta mean "
                         f"{float(r['p_mean'][i]):.4g} s.d. {float(r['p_std'][i]):.4g}")
            elif "mode_fractions" in r:
                fr, dfr = r["mode_fractions"][i], r["data_mode_fractions"]
                line += (f"; mass within 3 s.d. of each mode {np.array2string(fr, precision=3)} "
                         f"(min {fr.min():.3f}, max {fr.max():.3f}; data {dfr.min():.3f}-{dfr.max():.3f}); "
                         f"off the modes {float(r['off_mode'][i]):.3f} (data {float(r['data_off_mode']):.3f}); "
                         f"training's chains: off the modes {float(r['chains_off_mode'][i]):.3f}")
            gap = run.observables.get(f"gap_K{int(K)}")
            if gap is not None and len(gap.steps):
                v = np.asarray(gap.values[:])
                line += f"; f_data - f_model: last {float(v[-1]):.4g}, largest |.| {float(np.abs(v).max()):.4g}"
            lines.append(line)
        if "reconstruction_error" in r:
            err = r["reconstruction_error"]
            lines.append(f"reconstruction of {r['reconstructions'].shape[1]} held-out images: error per pixel "
                         f"{float(err[0]):.4f} -> {float(err[-1]):.4f} over {len(err) - 1} steps on z")
        return lines

    def plot(self, run, png):
        """expfamily: histograms of q_theta's samples against the data and p_theta's density,
        per K; ring: the data and the short-run samples of the largest K (last frame);
        both: f_data - f_model against iterations."""
        plt = pyplot()
        cfg = self.validate(run.config)
        r = run.results
        ks = [int(k) for k in np.asarray(r["K_values"])]
        if cfg["data"]["kind"] in IMAGES:
            return self.plot_images(run, cfg, png, plt)
        data = np.asarray(run.ensembles["data"].positions[0])
        ncols = (len(ks) if cfg["data"]["kind"] == "expfamily" else 2) + 1
        fig, axes = plt.subplots(1, ncols, figsize=(3.8 * ncols, 3.6), squeeze=False)
        axes = axes[0]
        if cfg["data"]["kind"] == "expfamily":
            grid = np.linspace(-1.2, 1.8, 400)
            for ax, (i, K) in zip(axes, enumerate(ks)):
                e = self.energy(run, cfg, K)
                mv = _chains_of(e, cfg, K)
                xq, _ = mv.run_chains(UniformBox().sample(Stream(1), 0, np.arange(20000), (1,), np.dtype(np.float64)),
                                      np.arange(20000), Stream(2), 0)
                ax.hist(data[:, 0], bins=80, density=True, alpha=0.5, label="data")
                ax.hist(xq[:, 0], bins=80, density=True, alpha=0.5, label="short-run q")
                if np.isfinite(float(np.asarray(r["p_std"])[i])):
                    m, sd = float(np.asarray(r["p_mean"])[i]), float(np.asarray(r["p_std"])[i])
                    ax.plot(grid, np.exp(-0.5 * ((grid - m) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), label="EBM p")
                ax.set_title(f"densities after training with K = {K} steps", fontsize=9)
                ax.set_xlabel("x")
                ax.set_ylabel("density")
                ax.legend(fontsize=7)
        else:
            K = max(ks)
            last = np.asarray(run.ensembles[f"chains_K{K}"].positions[-1])
            for ax, pts, title in ((axes[0], data, "training data"), (axes[1], last, f"short-run samples, K = {K}")):
                sub = pts[np.random.default_rng(0).permutation(len(pts))[:3000]]
                ax.scatter(sub[:, 0], sub[:, 1], s=3, alpha=0.5)
                ax.set_title(title, fontsize=9)
                ax.set_aspect("equal")
                lim = 1.6 * cfg["data"]["radius"]
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_xlabel("x_0")
                ax.set_ylabel("x_1")
        _plot_gaps(axes[-1], run, ks)
        return save(fig, png)

    def plot_images(self, run, cfg, png, plt):
        """Synthesis grid, interpolation rows (one per pair, rho from 0 to 1),
        observed / reconstructed pairs, f_data - f_model."""
        r = run.results
        fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
        axes[0].imshow(_mosaic(np.asarray(r["samples"])[:64, 0], 8), cmap="gray", vmin=-1, vmax=1)
        axes[0].set_title(f"short-run samples, K = {max(cfg['short_run']['K_values'])}", fontsize=9)
        inter = np.asarray(r["interpolation"])[:, :, 0]                  # [rho, pair, S, S]
        axes[1].imshow(_mosaic(np.swapaxes(inter, 0, 1).reshape((-1,) + inter.shape[2:]), inter.shape[0]),
                       cmap="gray", vmin=-1, vmax=1)
        axes[1].set_title("interpolation M(rho z1 + sqrt(1 - rho^2) z2), rho from 0 to 1", fontsize=9)
        rec = np.asarray(r["reconstructions"])[:, :8, 0]                   # [2, k, S, S]
        axes[2].imshow(_mosaic(rec.reshape((-1,) + rec.shape[2:]), rec.shape[1]), cmap="gray", vmin=-1, vmax=1)
        axes[2].set_title("held-out images (top) and reconstructions", fontsize=9)
        for ax in axes[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        _plot_gaps(axes[3], run, cfg["short_run"]["K_values"])
        return save(fig, png)


def _plot_gaps(ax, run, ks):
    for K in ks:
        o = run.observables.get(f"gap_K{K}")
        if o is not None and len(o.steps):
            ax.plot(o.steps, o.values, label=f"K = {K}")
    ax.set_title("mean f on data minus mean f on short-run samples", fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_ylabel("f_data - f_model")
    if ax.lines:
        ax.legend(fontsize=7)


def _mosaic(imgs, ncols):
    """[n, S, S] images as one grid with ``ncols`` columns and 1-pixel white gaps."""
    n, S = imgs.shape[0], imgs.shape[1]
    rows = (n + ncols - 1) // ncols
    out = np.ones((rows * (S + 1) - 1, ncols * (S + 1) - 1))
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (S + 1):r * (S + 1) + S, c * (S + 1):c * (S + 1) + S] = np.clip(imgs[i], -1, 1)
    return out


def _chains_of(energy, cfg, K):
    """A ShortRun move with the config's chain settings (for drawing fresh samples)."""
    sr = cfg["short_run"]
    return ShortRun(energy, K, sr["step_size"], sr["noise"], "noise", base_of(cfg))


NEAR_SD = 3.0


def mode_fractions(cfg, x):
    """(mass near each mode: the share of all samples within NEAR_SD = 3 s.d. of the
    mode and nearer to it than to any other; the share near none).  For the data
    itself each mode holds 1/8 (1 - exp(-4.5)) = 0.124 and 0.011 is near none."""
    mu = ring_means(cfg)
    d2 = ((x[:, None, :] - mu[None]) ** 2).sum(2)
    k = d2.argmin(1)
    near = d2[np.arange(len(x)), k] < (NEAR_SD * cfg["data"]["std"]) ** 2
    counts = np.bincount(k[near], minlength=len(mu)).astype(np.float64)
    return counts / len(x), float(1 - near.mean())
