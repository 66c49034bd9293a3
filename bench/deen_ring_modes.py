"""Paper 002, Figure 1(a): when does DEEN's exp(-E) show all eight ring modes after 1000
iterations at sigma = 0.1?

    python bench/deen_ring_modes.py [--stds 0.1 0.2 0.3 0.5] [--seeds 0 1 2] [--steps 1000]

Runs ``runs/deen_ring.toml`` (8 Gaussians on a circle of radius 2, MLP [2, 32, 32, 32, 1]
tanh, Adam 1e-3, batch 256, sigma = 0.1: the paper's network, optimiser and noise) for
each mode s.d. (the paper does not give its mixture's radius or s.d.) and seed, keeping
finished files, and prints per s.d. the smallest and largest mode fraction of exp(-E)
(mass within 3 s.d. of the noisy mode, over the 8 modes; equal modes give 0.125 each),
the number of modes holding at least 1/4 of an equal share (visible on a linear colour
scale), and the held-out loss against the Bayes denoiser's MSE.
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "deen_ring_modes"))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    print("| mode s.d. | noisy-mode s.d. / spacing | seed | smallest / largest mode fraction | "
          "modes >= 1/32 | held-out loss / Bayes MSE | corr(-E, log p_sigma) |")
    print("|---|---|---|---|---|---|---|")
    spacing = 2 * 2.0 * np.sin(np.pi / 8)
    for std in a.stds:
        for seed in a.seeds:
            out = os.path.join(a.out, f"std{std}_seed{seed}.h5")
            if not os.path.exists(out):
                subprocess.run([sys.executable, "-m", "particleflow.cli", "run", os.path.join(ROOT, "runs", "deen_ring.toml"),
                                "--out", out, "--quiet", "--steps", str(a.steps), "--seed", str(seed),
                                "--set", f"data.std={std}", "--set", f"deen.sigma={a.sigma}",
                                "--set", "output.plot=false"], check=True)
            with h5py.File(out, "r") as f:
                r = {k: np.asarray(v) for k, v in f["results"].items()}
            fr = r["mode_fractions"]
            ratio = float(r["heldout_loss"]) / float(r["mmse"])
            print(f"| {std} | {np.hypot(std, a.sigma) / spacing:.3f} | {seed} | {fr.min():.3g} / {fr.max():.3g} | "
                  f"{int((fr >= 1 / 32).sum())} | {ratio:.3f} | {float(r['corr_logp']):.3f} |")


if __name__ == "__main__":
    main()
