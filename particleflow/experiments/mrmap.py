"""``estimator = "mrmap"``: a least-action potential learned by Maximum Recovery MAP
(paper 000, Sections 3-4): the hyperbolic network of Algorithm 3.1 trained by
Algorithm 3.2 (``particleflow.estimators.mrmap``).

    [run]      steps (Adam iterations), seed
    [data]     kind = "mixture" (2-D mixture of N(mu_i, I), mu_i on a circle; Figures
               3-4) | "digits" (scikit-learn's 8x8 digits) | "faces" (the LFW faces
               bundled with scikit-image, 25x25, resized to image_size); n, n_val,
               components, radius (mixture); n_test, image_size (images)
    [model]    q (embedding), layers (l), width (rows of each K_j; 0: q), beta, h,
               solver ("direct" | "cg"), cg_iter
    [mrmap]    sigma, known_fraction (training: each P_i observes this share of the
               coordinates; 1: P = I), alpha, gamma (eq. 3.7), batch, grad_block, lr, decay_every
               (the learning rate halves every this many steps), weight_decay,
               eval_fractions, eval_repeats (images: Table 1)
    [output]   every, checkpoint_every, compression, plot

Observables every ``output.every`` steps: ``loss``, ``re``, ``rp``, ``rc`` of the latest
minibatch (at step 0: the untrained network's, on step 0's minibatch).  Results: the trained parameters as ``network/<name>`` (``pf.experiments.load_energy(run)``
rebuilds the network; ``.recover(d, mask)`` applies it);

* mixture: ``val_mse`` (mean ||xhat - x||^2 on the validation points with fresh noise,
  P = I), ``identity_mse`` (xhat = d), ``bayes_mse`` (the posterior mean under the true
  mixture: the best any denoiser can do), ``train_mse``, ``fit_mse`` (the data fit
  K u_0 alone), and ``val_x``, ``val_d``, ``val_xhat``, ``val_phi`` (the learned
  potential along each point's flow), ``grid_phi`` over ``grid_axis``;
* images: ``known_fraction`` [F], ``rel_err_mean`` / ``rel_err_std`` [F] (the relative
  error ||xhat - x||^2 / ||x||^2 over every test image and ``eval_repeats`` random
  selections each: Table 1's mean +- s.d.), ``rel_err_fit_mean`` (K u_0 alone), and
  ``examples`` [F, 4, 6, S, S] (observed pixels, K u_0, xhat, original).

Images need the optional ``data`` extra; grey levels in [0, 1].
"""
import numpy as np

from .. import datasets
from ..config import ConfigError, Field, output_section, positive, run_section
from ..energies.analytic import ring_means
from ..energies.hyperbolic import HyperbolicNetwork
from ..estimators.mrmap import check_fraction, mrmap_training, observe, relative_errors
from ..moves import StepDecay
from ..random import Purpose, Stream, StreamBlock
from .base import Experiment, trained_params
from .common import grey_images, pyplot, save

IMAGES = ("digits", "faces")
DATA = {"kind": Field("str", "mixture", choices=("mixture",) + IMAGES, doc="data set"),
        "n": Field("int", 600, lo=1, doc="mixture: training points"),
        "n_val": Field("int", 1000, lo=1, doc="mixture: validation points"),
        "components": Field("int", 6, lo=1, hi=100, doc="mixture: Gaussians N(mu_i, I)"),
        "radius": positive(4.0, doc="mixture: radius of the circle of the means"),
        "n_test": Field("int", 297, lo=1, doc="images: held-out test images"),
        "image_size": Field("int", 25, lo=4, hi=25, doc="faces: side after resizing (bilinear)")}
MODEL = {"q": Field("int", 128, lo=1, hi=4096, doc="embedding dimension"),
         "layers": Field("int", 5, lo=2, hi=100, doc="flow states u_1 .. u_l (network depth)"),
         "width": Field("int", 0, lo=0, hi=4096, doc="rows of each K_j (0: q)"),
         "beta": positive(0.1, doc="regularisation of the data fit (K^T P^T P K + beta I)"),
         "h": positive(1.0, doc="step of the recurrence (h^2 multiplies the force)"),
         "solver": Field("str", "direct", choices=("direct", "cg"), doc="solves with A: batched inverse or CG"),
         "cg_iter": Field("int", 8, lo=1, hi=10000, doc="CG iterations per solve")}
MRMAP = {"sigma": positive(1.0, doc="noise s.d. of the latent data d = P x + eps"),
         "known_fraction": Field("float", 1.0, lo=0, lo_open=True, hi=1,
                                 doc="training: share of coordinates each P_i observes (1: P = I)"),
         "alpha": Field("float", 1.0, lo=0, doc="weight of the predictive error Rp"),
         "gamma": Field("float", 1.0, lo=0, doc="weight of the consistency error Rc"),
         "batch": Field("int", 256, lo=1, doc="minibatch size"),
         "grad_block": Field("int", 0, lo=0, doc="rows per block of the loss gradient; under mpiexec the ranks "
                             "share the blocks (data-parallel, bitwise for any rank count); 0: the whole batch"),
         "lr": positive(1e-3, doc="Adam learning rate"),
         "decay_every": Field("int", 0, lo=0, doc="halve the learning rate every this many steps (0: never)"),
         "weight_decay": Field("float", 1e-5, lo=0, doc="Adam's L2 weight decay"),
         "eval_fractions": Field("list", [0.05, 0.1, 0.2, 0.3], doc="images: known fractions evaluated"),
         "eval_repeats": Field("int", 10, lo=1, hi=1000, doc="images: random selections per test image")}
GRID = 61
N_EXAMPLES = 6
EVAL = 1                                 # observe(split=EVAL + k): evaluation masks and noise


def mixture_means(cfg):
    return ring_means(cfg["data"]["components"], cfg["data"]["radius"])


def mixture_points(cfg, n, split):
    """n points of the mixture, split 0 training, 1 validation (Philox, from the seed)."""
    stream = Stream(cfg["run"]["seed"], StreamBlock.INIT + split)
    ids = np.arange(n)
    mu = mixture_means(cfg)
    k = np.minimum((stream.uniform(0, ids, 1, Purpose.INIT)[:, 0] * len(mu)).astype(np.int64), len(mu) - 1)
    return mu[k] + stream.normal(0, ids, 2, Purpose.PROPOSAL)


def mixture_posterior_mean(cfg, d, sigma):
    """E[x | d] for x from the mixture of N(mu_i, I) and d = x + N(0, sigma^2 I): the
    components' posterior means (mu_i sigma^2 + d) / (1 + sigma^2) weighted by
    N(d; mu_i, (1 + sigma^2) I)."""
    mu = mixture_means(cfg)
    s2 = sigma ** 2
    logw = -((d[:, None, :] - mu[None]) ** 2).sum(2) / (2 * (1 + s2))
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return (w[:, :, None] * (mu[None] * s2 + d[:, None, :]) / (1 + s2)).sum(1)


def images(cfg):
    """(training, test) [n, S, S] grey levels in [0, 1]."""
    return datasets.hold_out(grey_images(cfg["data"]), cfg["data"]["n_test"], cfg["run"]["seed"])


def side(cfg):
    return 8 if cfg["data"]["kind"] == "digits" else cfg["data"]["image_size"]


def network_of(cfg, params=None):
    m = cfg["model"]
    kw = {"beta": m["beta"], "h": m["h"], "solver": m["solver"], "cg_iter": m["cg_iter"]}
    if params is not None:
        return HyperbolicNetwork(params, **kw)
    p = 2 if cfg["data"]["kind"] == "mixture" else side(cfg) ** 2
    return HyperbolicNetwork.init(p, m["q"], m["layers"], width=m["width"] or m["q"], seed=cfg["run"]["seed"], **kw)


class MRMAP(Experiment):
    name = "mrmap"
    description = "paper 000: a least-action potential and its hyperbolic network trained by MR-MAP"
    sections = {"run": run_section(steps=3000, dtype=None, steps_doc="Adam iterations"), "data": DATA,
                "model": MODEL, "mrmap": MRMAP, "output": output_section(every=50, checkpoint_every=500)}

    def check(self, cfg):
        try:
            check_fraction(cfg["mrmap"]["known_fraction"], "mrmap.known_fraction")
            for f in cfg["mrmap"]["eval_fractions"]:
                check_fraction(f, "every entry of mrmap.eval_fractions")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not cfg["mrmap"]["eval_fractions"]:
            raise ConfigError("mrmap.eval_fractions must list at least one known fraction in (0, 1]")
        d = cfg["data"]
        if d["kind"] in IMAGES:
            datasets.require_data_extra(d["kind"])
            total = 1797 if d["kind"] == "digits" else 100
            if d["n_test"] >= total:
                raise ConfigError(f"data.n_test ({d['n_test']}) must leave training images: the {d['kind']} "
                                  f"set has {total}")

    def memory_bytes(self, cfg):
        m, b = cfg["model"], cfg["mrmap"]["batch"]
        p = 2 if cfg["data"]["kind"] == "mixture" else side(cfg) ** 2
        q, width = m["q"], m["width"] or m["q"]
        per_batch = b * (p * q * (2 if m["solver"] == "direct" else 0) + 3 * q * q * (m["solver"] == "direct")
                         + 4 * m["layers"] * (q + width) + 8 * p)
        return 8 * (2 * per_batch + 8 * (p * q + q * q + m["layers"] * width * q))

    def build(self, cfg, base_dir=".", restore=False):
        mr = cfg["mrmap"]
        train = mixture_points(cfg, cfg["data"]["n"], 0) if cfg["data"]["kind"] == "mixture" \
            else images(cfg)[0].reshape(-1, side(cfg) ** 2)
        net = network_of(cfg)
        lr = StepDecay(mr["lr"], mr["decay_every"], 0.5) if mr["decay_every"] else mr["lr"]
        sim = mrmap_training(net, train, mr["sigma"], mr["known_fraction"], mr["batch"], lr,
                             weight_decay=mr["weight_decay"], alpha=mr["alpha"], gamma=mr["gamma"],
                             seed=cfg["run"]["seed"], grad_block=mr["grad_block"] or None)
        every = cfg["output"]["every"]
        for k in ("loss", "re", "rp", "rc"):
            sim.observe(k, lambda s, k=k: s.context[k], every=every)
        sim.static("data")                # rebuilt from the config: neither recorded nor saved
        sim.context["cfg"] = cfg
        return sim

    def results(self, sim, cfg):
        net = sim.context["network"]
        out = {f"network/{k}": np.asarray(v) for k, v in net.params.items()}
        mr, seed = cfg["mrmap"], cfg["run"]["seed"]
        if cfg["data"]["kind"] == "mixture":
            sigma = mr["sigma"]
            x = mixture_points(cfg, cfg["data"]["n_val"], 1)
            d, mask = observe(x, 1.0, sigma, seed, 0, split=EVAL)
            flow = net.forward(d, mask)
            xhat = flow["xhat"]
            train = sim.ensembles["data"].x
            dt, mt = observe(np.asarray(train), 1.0, sigma, seed, 0, split=EVAL + 1)
            mse = lambda a, b: float(((np.asarray(a) - b) ** 2).sum(1).mean())
            out.update(val_mse=mse(xhat, x), identity_mse=mse(d, x),
                       bayes_mse=mse(mixture_posterior_mean(cfg, d, sigma), x),
                       train_mse=mse(net.recover(dt, mt), train), fit_mse=mse(flow["x0"], x),
                       val_x=x, val_d=d, val_xhat=xhat, val_phi=net.potential(flow))
            lim = cfg["data"]["radius"] + 3.0
            axis = np.linspace(-lim, lim, GRID)
            g = np.stack(np.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
            out["grid_axis"] = axis
            out["grid_phi"] = net.potential(net.forward(g, np.ones_like(g))).reshape(GRID, GRID)
            return {k: np.asarray(v) for k, v in out.items()}
        test = images(cfg)[1]
        S = side(cfg)
        xt = test.reshape(len(test), -1)
        fr = mr["eval_fractions"]
        mean, std, fit, examples = [], [], [], []
        for k, f in enumerate(fr):
            errs, errs_fit = [], []
            for r in range(mr["eval_repeats"]):
                d, mask = observe(xt, f, mr["sigma"], seed, r, split=EVAL + k)
                flow = net.forward(d, mask)
                errs.append(relative_errors(xt, flow["xhat"]))
                errs_fit.append(relative_errors(xt, flow["x0"]))
                if r == 0:
                    obs = np.where(mask[:N_EXAMPLES] > 0, d[:N_EXAMPLES], np.nan)
                    examples.append(np.stack([obs, flow["x0"][:N_EXAMPLES], flow["xhat"][:N_EXAMPLES],
                                              xt[:N_EXAMPLES]]).reshape(4, -1, S, S))
            e = np.concatenate(errs)
            mean.append(e.mean())
            std.append(e.std(ddof=1) if len(e) > 1 else 0.0)
            fit.append(np.concatenate(errs_fit).mean())
        out.update(known_fraction=np.asarray(fr, np.float64), rel_err_mean=np.asarray(mean),
                   rel_err_std=np.asarray(std), rel_err_fit_mean=np.asarray(fit), examples=np.asarray(examples))
        return out

    def energy(self, run, cfg):
        return network_of(cfg, trained_params(run, "network", "a finished mrmap run stores them"))

    def summary(self, run, cfg):
        r = run.results
        rc = run.observables.get("rc")
        lines = []
        if rc is not None and len(rc.steps):
            v = np.asarray(rc.values, np.float64)
            lines.append(f"Rc: first {v[0]:.3e}, last {v[-1]:.3e} (ratio {v[-1] / v[0]:.2e})")
        if cfg["data"]["kind"] == "mixture":
            lines.append(f"validation MSE {float(r['val_mse']):.4f}; identity (xhat = d) {float(r['identity_mse']):.4f} "
                         f"(ratio {float(r['val_mse']) / float(r['identity_mse']):.3f}); Bayes posterior mean "
                         f"{float(r['bayes_mse']):.4f} (ratio {float(r['val_mse']) / float(r['bayes_mse']):.3f}); "
                         f"training {float(r['train_mse']):.4f}; data fit K u_0 {float(r['fit_mse']):.4f}")
        else:
            for f, m, s, fm in zip(*(np.asarray(r[k]) for k in ("known_fraction", "rel_err_mean", "rel_err_std",
                                                                 "rel_err_fit_mean"))):
                lines.append(f"known {100 * f:.0f}%: relative error {m:.3e} +- {s:.2e} (data fit K u_0: {fm:.3e})")
        return lines

    def plot(self, run, png):
        plt = pyplot()
        r = run.results
        rc = run.observables.get("rc")
        if "val_x" in r:
            fig, axes = plt.subplots(1, 5, figsize=(20, 4))
            x, d, xh, phi = (np.asarray(r[k]) for k in ("val_x", "val_d", "val_xhat", "val_phi"))
            ax = np.asarray(r["grid_axis"])
            for a, pts, title in zip(axes[:3], (x, d, xh), ("validation x", "latent d = x + eps",
                                                             "recovered xhat (colour: learned phi)")):
                a.scatter(pts[:, 0], pts[:, 1], s=4, c=phi, cmap="viridis")
                a.set_title(title, fontsize=9)
                a.set_aspect("equal")
                a.set_xlabel("x_0")
                a.set_ylabel("x_1")
            im = axes[3].imshow(np.asarray(r["grid_phi"]), origin="lower", extent=(ax[0], ax[-1], ax[0], ax[-1]),
                                cmap="viridis")
            axes[3].scatter(x[:, 0], x[:, 1], s=2, c="w", alpha=0.5)
            axes[3].set_title("learned phi at the flow of each grid point, with the data", fontsize=9)
            axes[3].set_xlabel("x_0")
            axes[3].set_ylabel("x_1")
            fig.colorbar(im, ax=axes[3], fraction=0.046, label="phi")
            last = axes[4]
        else:
            ex = np.asarray(r["examples"])
            F, _, n, S, _ = ex.shape
            fig, axes = plt.subplots(F + 1, 4, figsize=(2.2 * n * 4 / 3, 1.3 * F + 2.4), squeeze=False)
            for i in range(F):
                for c in range(4):
                    tiles = np.full((S, n * (S + 1) - 1), np.nan)
                    for j in range(n):
                        tiles[:, j * (S + 1):j * (S + 1) + S] = ex[i, c, j]
                    a = axes[i, c]
                    a.imshow(tiles, cmap="gray", vmin=0, vmax=1)
                    a.set_xticks([])
                    a.set_yticks([])
                    if i == 0:
                        a.set_title(("observed pixels", "data fit K u_0", "recovery xhat", "original")[c], fontsize=9)
                axes[i, 0].set_ylabel(f"{100 * r['known_fraction'][i]:.0f}% known", fontsize=9)
            for a in axes[F, 1:]:
                a.axis("off")
            last = axes[F, 0]
        if rc is not None and len(rc.steps):
            last.semilogy(rc.steps, np.asarray(rc.values, np.float64))
            last.set_title("consistency error Rc during training", fontsize=9)
            last.set_xlabel("step")
            last.set_ylabel("Rc")
        return save(fig, png, dpi=80)
