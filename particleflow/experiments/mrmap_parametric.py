"""``estimator = "mrmap_parametric"``: Maximum Recovery MAP of a potential known up to its
parameters (paper 000, Section 2), repeated over fresh data sets.

    [run]      steps (repetitions: one fresh data set per sample size each), seed
    [data]     kind = "gaussian1d" (Example 2.1: x ~ N(0, theta), d = x + N(0, sigma^2))
               | "covariance" (x ~ N(0, Theta), d = P x + noise, P = I or a random
               selection of known_fraction of the coordinates) | "laplace" (x with
               density theta/2 exp(-theta |x|), phi = theta |x|: the paper's
               inconsistent case); theta (the variance / the rate), covariance (a
               matrix), sigma, known_fraction, alpha (eq. 2.6's predictive weight),
               n_values (sample sizes)
    [output]   every, checkpoint_every, compression, plot

Every step draws one data set per sample size n and fits it; the estimates accumulate
in the ensemble ``estimates`` (one row per repetition, so a resumed run continues
them).  Results, with R repetitions and the sample sizes ``n_values``:

* gaussian1d: ``theta_hat`` [R, N] (numerical minimiser of eq. 2.5),
  ``theta_closed_form`` [R, N] (sigma^2 d.x / (||d||^2 - d.x)), ``max_relative_gap``
  (between them), ``theta_hat_mean`` / ``theta_hat_std`` [N];
* covariance: ``theta_hat`` [R, N, p, p], ``sample_covariance`` [R, N, p, p] (X X^T / n,
  the maximum-likelihood estimate), ``error_to_sample`` / ``error_to_truth`` [R, N]
  (Frobenius norms);
* laplace: ``theta_hat`` [R, N], ``theta_hat_mean`` / ``theta_hat_std`` [N].
"""
import numpy as np

from ..config import ConfigError, Field, output_section, positive, run_section
from ..ensemble import Ensemble
from ..estimators.mrmap import (check_fraction, covariance_mrmap, gaussian_variance_closed_form,
                                gaussian_variance_mrmap, laplace_mrmap, observe)
from ..moves import Move
from ..random import Purpose, Stream, StreamBlock
from ..simulation import Simulation
from .base import Experiment
from .common import pyplot, save

DATA = {"kind": Field("str", "gaussian1d", choices=("gaussian1d", "covariance", "laplace"), doc="model"),
        "theta": positive(2.0, doc="gaussian1d: the variance; laplace: the rate"),
        "covariance": Field("list", [[2.0, 0.6], [0.6, 1.0]], doc="covariance: the true Theta (symmetric, "
                                                                   "positive definite)"),
        "sigma": positive(1.0, doc="noise s.d. of the latent data d"),
        "known_fraction": Field("float", 1.0, lo=0, lo_open=True, hi=1, doc="covariance: share of coordinates "
                                                                             "each P_i observes (1: P = I)"),
        "alpha": Field("float", 0.0, lo=0, doc="covariance: weight of the predictive error (eq. 2.6)"),
        "n_values": Field("list", [100, 1000, 10000], doc="sample sizes")}
MAX_N = 10 ** 7


def true_covariance(cfg):
    return np.asarray(cfg["data"]["covariance"], dtype=np.float64)


def draw(cfg, step, j, n):
    """(x, d, mask) of repetition ``step`` at the j-th sample size: a pure function of the
    seed, step and j."""
    d = cfg["data"]
    seed = cfg["run"]["seed"]
    stream = Stream(seed, StreamBlock.INIT + j)
    if d["kind"] == "covariance":
        C = np.linalg.cholesky(true_covariance(cfg))
        x = stream.normal(step, np.arange(n), C.shape[0], Purpose.INIT) @ C.T
        obs, mask = observe(x, d["known_fraction"], d["sigma"], seed, step, split=j)
        return x, obs, mask
    if d["kind"] == "gaussian1d":
        x = np.sqrt(d["theta"]) * stream.normal(step, np.arange(n), 1, Purpose.INIT)[:, 0]
    else:
        u = stream.uniform(step, np.arange(n), 1, Purpose.INIT)[:, 0] - 0.5
        x = -np.sign(u) * np.log1p(-2 * np.abs(u)) / d["theta"]
    eps = stream.normal(step, np.arange(n), 1, Purpose.DATA_NOISE)[:, 0]
    return x, x + d["sigma"] * eps, None


def width(cfg):
    """Numbers stored per sample size."""
    kind = cfg["data"]["kind"]
    p = len(cfg["data"]["covariance"])
    return {"gaussian1d": 2, "laplace": 1, "covariance": 2 * p * p}[kind]


def fit(cfg, step):
    """The row of ``estimates`` for repetition ``step``."""
    d = cfg["data"]
    out = []
    for j, n in enumerate(d["n_values"]):
        x, obs, mask = draw(cfg, step, j, n)
        if d["kind"] == "gaussian1d":
            out += [gaussian_variance_mrmap(x, obs, d["sigma"]), gaussian_variance_closed_form(x, obs, d["sigma"])]
        elif d["kind"] == "laplace":
            out.append(laplace_mrmap(x, obs, d["sigma"]))
        else:
            theta = covariance_mrmap(x, obs, mask, d["sigma"], d["alpha"])
            out += list(theta.ravel()) + list((x.T @ x / n).ravel())
    return np.asarray(out)


class Refit(Move):
    """Fill row ``step`` of the ensemble with that repetition's estimates."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def _step(self, ens, stream, step):
        x = np.array(ens.x)
        x[step] = fit(self.cfg, step)
        ens.x = x
        return {}


class MRMAPParametric(Experiment):
    name = "mrmap_parametric"
    description = "paper 000, Section 2: MR-MAP of a Gaussian variance / covariance and a Laplace rate"
    sections = {"run": run_section(steps=20, dtype=None, steps_doc="repetitions (fresh data sets)"),
                "data": DATA, "output": output_section(every=1, checkpoint_every=10)}

    def check(self, cfg):
        d = cfg["data"]
        ns = d["n_values"]
        if not ns or not all(isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= MAX_N for n in ns):
            raise ConfigError(f"data.n_values must be integers in [2, {MAX_N}]; got {ns!r}")
        try:
            check_fraction(d["known_fraction"], "data.known_fraction")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if d["kind"] == "covariance":
            c = d["covariance"]
            try:
                a = np.asarray(c, dtype=np.float64)
                ok = a.ndim == 2 and a.shape[0] == a.shape[1] and 1 <= a.shape[0] <= 16 and np.allclose(a, a.T) \
                    and np.isfinite(a).all() and np.linalg.eigvalsh(a).min() > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"data.covariance must be a symmetric positive definite p x p matrix "
                                  f"(1 <= p <= 16) given as a list of rows; got {c!r}")

    def memory_bytes(self, cfg):
        p = len(cfg["data"]["covariance"])
        return 8 * max(cfg["data"]["n_values"]) * (8 + 4 * p * p)

    def build(self, cfg, base_dir=".", restore=False):
        R, N = cfg["run"]["steps"], len(cfg["data"]["n_values"])
        sim = Simulation({"estimates": Ensemble(np.zeros((R, N * width(cfg))), name="estimates")},
                         seed=cfg["run"]["seed"])
        sim.schedule(Refit(cfg), "estimates", name="refit")
        sim.observe("theta_hat", lambda s: np.asarray(s.ensembles["estimates"].x[s.step - 1]).reshape(N, -1)[:, 0],
                    every=cfg["output"]["every"], initial=False)
        sim.trajectory([], every=None)
        return sim

    def results(self, sim, cfg):
        d = cfg["data"]
        R, N = cfg["run"]["steps"], len(d["n_values"])
        est = np.asarray(sim.ensembles["estimates"].x).reshape(R, N, -1)
        out = {"n_values": np.asarray(d["n_values"], np.int64)}
        if d["kind"] == "covariance":
            p = len(d["covariance"])
            th, S = est[:, :, :p * p].reshape(R, N, p, p), est[:, :, p * p:].reshape(R, N, p, p)
            out.update(theta_hat=th, sample_covariance=S,
                       error_to_sample=np.linalg.norm(th - S, axis=(2, 3)),
                       error_to_truth=np.linalg.norm(th - true_covariance(cfg), axis=(2, 3)),
                       sample_error_to_truth=np.linalg.norm(S - true_covariance(cfg), axis=(2, 3)))
            return out
        out["theta_hat"] = est[:, :, 0]
        out["theta_hat_mean"], out["theta_hat_std"] = est[:, :, 0].mean(0), est[:, :, 0].std(0, ddof=1) if R > 1 \
            else np.zeros(N)
        if d["kind"] == "gaussian1d":
            out["theta_closed_form"] = est[:, :, 1]
            out["max_relative_gap"] = np.asarray(np.max(np.abs(est[:, :, 0] - est[:, :, 1]) / np.abs(est[:, :, 1])))
        return out

    def summary(self, run, cfg):
        r, d = run.results, cfg["data"]
        ns = list(np.asarray(r["n_values"]))
        lines = []
        if d["kind"] == "covariance":
            e1, e2, e3 = (np.asarray(r[k]) for k in ("error_to_sample", "error_to_truth", "sample_error_to_truth"))
            for j, n in enumerate(ns):
                lines.append(f"n = {n}: ||Theta_hat - XX^T/n|| mean {e1[:, j].mean():.4g}; ||Theta_hat - Theta|| "
                             f"{e2[:, j].mean():.4g} (XX^T/n: {e3[:, j].mean():.4g})")
            return lines
        th = np.asarray(r["theta_hat"])
        for j, n in enumerate(ns):
            lines.append(f"n = {n}: theta_hat mean {th[:, j].mean():.5g} s.d. {th[:, j].std():.3g} "
                         f"(true theta {d['theta']})")
        if "max_relative_gap" in r:
            lines.append(f"largest relative gap to the closed form: {float(r['max_relative_gap']):.2e}")
        return lines

    def plot(self, run, png):
        plt = pyplot()
        r, cfg = run.results, run.config
        ns = np.asarray(r["n_values"])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if "theta_hat_mean" in r:
            ax.errorbar(ns, np.asarray(r["theta_hat_mean"]), yerr=np.asarray(r["theta_hat_std"]), marker="o",
                        capsize=3, label="MR-MAP theta_hat (mean +- s.d.)")
            ax.axhline(cfg["data"]["theta"], color="k", ls="--", label="true theta")
            ax.set_ylabel("estimate theta_hat")
        else:
            ax.plot(ns, np.asarray(r["error_to_truth"]).mean(0), marker="o", label="||Theta_hat - Theta||")
            ax.plot(ns, np.asarray(r["sample_error_to_truth"]).mean(0), marker="s", label="||XX^T/n - Theta||")
            ax.set_yscale("log")
            ax.set_ylabel("error, Frobenius norm (mean over runs)")
        ax.set_xscale("log")
        ax.set_xlabel("sample size n")
        ax.legend(fontsize=8)
        ax.set_title(f"MR-MAP estimate against sample size ({cfg['data']['kind']} data)", fontsize=9)
        return save(fig, png)
