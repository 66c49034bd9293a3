"""Paper 004's comparisons (Tables 1-3) on the bundled 8x8 digits, scored by a classifier
trained once with scikit-learn (the 'data' extra) instead of the Inception network.

    python bench/shortrun_digits_scores.py [--steps 500] [--samples 1000] [--jobs 2]

Runs ``runs/shortrun_digits.toml`` (the paper's ConvNet, n_f = 16, Adam 1e-4, batch 64,
data noise 0.03, x <- x + grad f(x) + 0.01 z from U[-1, 1]) for ``--steps`` iterations in
these variants, keeping finished files:

* the K grid: K in {5, 10, 20, 50, 100} (one run, one learner per K);
* the learners at K = 20: short-run (from noise), persistent CD (replay buffer), CD-k
  (from the data);
* the data noise sigma in {0.01, 0.03, 0.1} and the width n_f in {8, 16, 32}, at K = 20.

Scores, per learner, over ``--samples`` fresh short-run samples (K steps from U[-1, 1]):

* **IS analogue**: exp(E_x KL(p(y | x) || p(y))) with p(y | x) from an MLP classifier
  (one hidden layer of 64 ReLU units) trained on all 1797 digits scaled to [-1, 1]
  (10 classes: 1 for samples that all look alike, 10 at best);
* **FD analogue**: the Frechet distance between Gaussians fitted to the classifier's hidden
  features of the samples and of the 1797 digits (0 for the data itself, up to sampling
  error: the data's two halves are reported as a floor);
* **reconstruction MSE** per pixel of the 16 held-out digits after 200 Adam steps on z
  (the run's own result).
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

import numpy as np
from scipy import linalg

import particleflow as pf
from particleflow import datasets, experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {                     # name: (overrides, the K of the learners reported)
    "K grid": (["short_run.K_values=[5, 10, 20, 50, 100]"], [5, 10, 20, 50, 100]),
    "persistent CD": (["short_run.mode='pcd'", "short_run.K_values=[20]"], [20]),
    "CD-k from data": (["short_run.mode='cd'", "short_run.K_values=[20]"], [20]),
    "sigma = 0.01": (["short_run.data_noise=0.01", "short_run.K_values=[20]"], [20]),
    "sigma = 0.1": (["short_run.data_noise=0.1", "short_run.K_values=[20]"], [20]),
    "n_f = 8": (["model.n_f=8", "short_run.K_values=[20]"], [20]),
    "n_f = 32": (["model.n_f=32", "short_run.K_values=[20]"], [20]),
}


def scorer():
    """(classifier, digits scaled to [-1, 1] [1797, 64])."""
    from sklearn.neural_network import MLPClassifier
    x, y = datasets.digits()
    x = 2 * x.reshape(len(x), -1) - 1
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=0).fit(x, y)
    return clf, x


def features(clf, x):
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


def inception_analogue(clf, x):
    p = clf.predict_proba(x)
    py = p.mean(0)
    kl = (p * (np.log(p + 1e-12) - np.log(py + 1e-12))).sum(1)
    return float(np.exp(kl.mean()))


def frechet(a, b):
    m1, m2 = a.mean(0), b.mean(0)
    # a ridge of 1e-6: units that no input switches on make the covariances singular
    ridge = 1e-6 * np.eye(a.shape[1])
    c1, c2 = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))


def short_run_samples(energy, K, n, seed=0):
    """n samples of K steps x <- x + grad f(x) + 0.01 z (f = -E) from U[-1, 1]^64."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32)
    for _ in range(K):
        x = x - energy.grad(x) + np.float32(0.01) * rng.standard_normal(x.shape).astype(np.float32)
    return x.reshape(n, -1).astype(np.float64)


def run(name, overrides, steps, out):
    """Run one variant (kept when its file exists); its wall time goes to OUT.seconds."""
    if os.path.exists(out):
        return
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "particleflow.cli", "run", os.path.join(ROOT, "runs", "shortrun_digits.toml"),
           "--out", out, "--quiet", "--steps", str(steps), "--set", "output.plot=false"]
    for o in overrides:
        cmd += ["--set", o]
    subprocess.run(cmd, check=True, env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    with open(out + ".seconds", "w") as fh:
        fh.write(f"{time.perf_counter() - t0:.1f}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "shortrun_digits_scores"))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    files = {name: os.path.join(a.out, f"{name.replace(' ', '_').replace('=', '')}.h5") for name in VARIANTS}
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        for f in [pool.submit(run, name, VARIANTS[name][0], a.steps, files[name]) for name in VARIANTS]:
            f.result()
    clf, data = scorer()
    fd_data, half = features(clf, data), len(data) // 2
    print(f"scorer: training accuracy {clf.score(data, datasets.digits()[1]):.3f}; data: IS analogue "
          f"{inception_analogue(clf, data):.2f}, FD analogue between its two halves "
          f"{frechet(fd_data[:half], fd_data[half:]):.2f}")
    print()
    print("| learner | K | IS analogue | FD analogue | reconstruction MSE per pixel | mean ||grad f|| | run's seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, (_, Ks) in VARIANTS.items():
        with pf.io.open_run(files[name]) as r:
            cfg = experiments.validate(r.config)
            exp = experiments.get("shortrun")
            res = r.results
            seconds = open(files[name] + ".seconds").read().strip() if os.path.exists(files[name] + ".seconds") else "-"
            for i, K in enumerate(np.asarray(res["K_values"])):
                if int(K) not in Ks:
                    continue
                e = exp.energy(r, cfg, int(K))
                x = short_run_samples(e, int(K), a.samples)
                rec = float(np.asarray(res["reconstruction_error"])[-1]) if int(K) == max(Ks) else float("nan")
                print(f"| {name} | {int(K)} | {inception_analogue(clf, x):.2f} | {frechet(features(clf, x), fd_data):.2f} | "
                      f"{rec:.4f} | {float(np.asarray(res['grad_norm'])[i]):.3g} | {seconds} |")


if __name__ == "__main__":
    main()
