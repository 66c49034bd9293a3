"""``estimator = "gaussian_ml"``: maximum likelihood of a zero-mean Gaussian's precision
matrix by contrastive gradients with persistent MALA negatives and Adam
(``particleflow.estimators.contrastive_ml``).

    [run]      steps (Adam iterations), seed
    [data]     d, n, std (observations x ~ N(0, std^2 I), drawn from the seed)
    [model]    precision0 (starting precision: precision0 * I)
    [sampler]  chains (persistent MALA chains), step_size
    [adam]     lr, beta1, beta2
    [output]   every, checkpoint_every, compression, plot

E(x | P) = x^T P x / 2, so grad_P E = x x^T / 2 and the contrastive gradient is
(S_data - S_chains) / 2 with S the second-moment matrices; the maximum-likelihood
estimate is P = S_data^{-1} (closed form, stored as ``precision_mle``).
Observables: ``precision`` (the flattened matrix) and the moves' statistics every
``output.every`` steps; frames of the chains and the parameter particle.
"""
import numpy as np

from ..config import Field, output_section, positive, run_section
from ..energies import GaussianPrecision
from ..estimators.contrastive import contrastive_ml
from ..moves import MALA
from ..random import Purpose, Stream, StreamBlock
from .base import Experiment

DATA = {"d": Field("int", 2, lo=1, hi=64, doc="dimension"), "n": Field("int", 2000, lo=2, doc="observations"),
        "std": positive(0.5, doc="true standard deviation of every coordinate")}
MODEL = {"precision0": positive(1.0, doc="starting precision (times the identity)")}
SAMPLER = {"chains": Field("int", 2000, lo=1, doc="persistent MALA chains"),
           "step_size": positive(0.05, doc="MALA step size")}
ADAM = {"lr": positive(0.05, doc="learning rate"), "beta1": Field("float", 0.9, lo=0, hi=0.999, doc="Adam beta1"),
        "beta2": Field("float", 0.999, lo=0, hi=0.99999, doc="Adam beta2")}


def observations(cfg):
    d = cfg["data"]
    z = Stream(cfg["run"]["seed"], StreamBlock.INIT).normal(0, np.arange(d["n"]), d["d"], Purpose.INIT)
    return d["std"] * z


class GaussianML(Experiment):
    name = "gaussian_ml"
    description = "maximum likelihood of a Gaussian precision by contrastive gradients, MALA negatives, Adam"
    sections = {"run": run_section(steps=500, dtype=None, steps_doc="Adam iterations"), "data": DATA,
                "model": MODEL, "sampler": SAMPLER, "adam": ADAM,
                "output": output_section(every=10, checkpoint_every=100)}

    def memory_bytes(self, cfg):
        d = cfg["data"]["d"]
        return 8 * d * (2 * cfg["data"]["n"] + 8 * cfg["sampler"]["chains"]) + 8 * 16 * d * d

    def build(self, cfg, base_dir=".", restore=False):
        x = observations(cfg)
        d = cfg["data"]["d"]
        energy = GaussianPrecision(cfg["model"]["precision0"] * np.eye(d))
        s = cfg["sampler"]
        chains = Stream(cfg["run"]["seed"], StreamBlock.INIT + 1).normal(0, np.arange(s["chains"]), d, Purpose.INIT)
        a = cfg["adam"]
        sim = contrastive_ml(energy, x, chains / np.sqrt(cfg["model"]["precision0"]),
                             lambda e: MALA(e, s["step_size"]), lr=a["lr"], betas=(a["beta1"], a["beta2"]),
                             seed=cfg["run"]["seed"])
        every = cfg["output"]["every"]
        sim.observe("precision", lambda sim: np.array(sim.ensembles["theta"].x[0]), every=every)
        sim.observe_moves(every)
        sim.trajectory(["data"], every=None)
        sim.trajectory(["chains", "theta"], every=every)
        sim.context.update(energy=energy, data=x)
        return sim

    def results(self, sim, cfg):
        x = sim.context["data"]
        mle = np.linalg.inv(x.T @ x / x.shape[0])
        P = np.asarray(sim.context["energy"].params["precision"])
        return {"precision": P, "precision_mle": mle,
                "relative_error": np.asarray(np.linalg.norm(P - mle) / np.linalg.norm(mle))}

    def energy(self, run, cfg):
        return GaussianPrecision(np.asarray(run.results["precision"]))

    def summary(self, run, cfg):
        r = run.results
        return [f"precision (learned) diag {np.array2string(np.diag(np.asarray(r['precision'])), precision=4)}; "
                f"MLE diag {np.array2string(np.diag(np.asarray(r['precision_mle'])), precision=4)}; "
                f"relative error {float(r['relative_error']):.3g}"]
