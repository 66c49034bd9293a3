"""Paper 001's central claim, measured: how much sooner dual training (alpha = 20) gets
close to its final KL / SM than primal training (alpha = 0.05).

    python bench/dual_speedup.py [--seeds 0 1 2] [--modes 1 2] [--dual-steps 4000]
                                 [--primal-steps 20000] [--out bench/out/dual_speedup]

Runs ``runs/dual_ebm_dual.toml`` and ``runs/dual_ebm_primal.toml`` (reduced scale:
n = 2000, N = 4000, m = 64, s = 0.02) through the command line for every seed and
teacher (``teacher.modes`` 1: monomodal, 2: bimodal), keeping finished files, and
prints one markdown table.  Primal needs more iterations: its neurons move at
alpha s = 1e-3 per iteration against dual's s = 0.02.

"Close to the final value" (the paper's wording) is measured in log scale: the first
monitored iteration t at which log m_t <= log m_final + 0.1 (log m_0 - log m_final), i.e.
90 % of the way from the start to the run's own final value m_final (mean of the last 5
monitored values); the speed-up is t_primal / t_dual, in iterations and in seconds.
Also reported: the first iteration with KL below ``--kl-threshold`` (one level per
teacher that both trainings reach), which does not depend on where a run stops.
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config, out, seed, modes, steps, every):
    if os.path.exists(out):
        return
    cmd = [sys.executable, "-m", "particleflow.cli", "run", os.path.join(ROOT, "runs", config), "--out", out,
           "--quiet", "--steps", str(steps), "--seed", str(seed), "--set", f"teacher.modes={modes}",
           "--set", f"output.every={every}", "--set", f"output.frame_every={steps}",
           "--set", f"output.checkpoint_every={steps}", "--set", "output.plot=false"]
    subprocess.run(cmd, check=True)


def curve(path, key):
    with h5py.File(path, "r") as f:
        o = f["observables"][key]
        return np.asarray(o["step"]), np.asarray(o["value"], np.float64), \
            float(np.asarray(f["results/seconds_per_iteration"]))


def t_close(steps, values, frac=0.1, tail=5):
    """First step at which log v <= log v_final + frac (log v_0 - log v_final)."""
    lv = np.log(values)
    final = np.log(values[-tail:].mean())
    level = final + frac * (lv[0] - final)
    hit = np.nonzero(lv <= level)[0]
    return int(steps[hit[0]]) if len(hit) else None


def t_below(steps, values, threshold):
    hit = np.nonzero(values < threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dual-steps", type=int, default=4000)
    ap.add_argument("--primal-steps", type=int, default=30000)
    ap.add_argument("--kl-threshold", type=float, nargs="+", default=[0.1, 0.3],
                    help="one per teacher in --modes: a KL level both trainings reach")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "dual_speedup"))
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for modes in a.modes:
        for seed in a.seeds:
            files = {}
            for name, config, steps, every in (("dual", "dual_ebm_dual.toml", a.dual_steps, 10),
                                               ("primal", "dual_ebm_primal.toml", a.primal_steps, 50)):
                files[name] = os.path.join(a.out, f"{name}_modes{modes}_seed{seed}.h5")
                run(config, files[name], seed, modes, steps, every)
            row = {"modes": modes, "seed": seed, "threshold": a.kl_threshold[a.modes.index(modes)]}
            for key in ("kl", "sm"):
                for name, path in files.items():
                    s, v, spi = curve(path, key)
                    row[f"{name}_{key}_t"] = t_close(s, v)
                    row[f"{name}_{key}_final"] = float(v[-5:].mean())
                    row[f"{name}_{key}_0"] = float(v[0])
                    row[f"{name}_spi"] = spi
                    if key == "kl":
                        row[f"{name}_kl_below"] = t_below(s, v, row["threshold"])
            rows.append(row)
    print("| teacher | seed | metric | dual: start -> final, t_90 | primal: start -> final, t_90 | "
          "speed-up (iterations) | speed-up (seconds) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for key in ("kl", "sm"):
            td, tp = r[f"dual_{key}_t"], r[f"primal_{key}_t"]
            it = f"{tp / td:.1f}x" if td and tp else "-"
            sec = f"{tp * r['primal_spi'] / (td * r['dual_spi']):.1f}x" if td and tp else "-"
            print(f"| {'mono' if r['modes'] == 1 else 'bi'}modal | {r['seed']} | {key} | "
                  f"{r[f'dual_{key}_0']:.3g} -> {r[f'dual_{key}_final']:.3g}, {td} | "
                  f"{r[f'primal_{key}_0']:.3g} -> {r[f'primal_{key}_final']:.3g}, {tp} | {it} | {sec} |")
    print()
    print("| teacher | seed | KL level | first iteration below it: dual | primal | ratio | "
          "seconds per iteration: dual | primal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, p = r["dual_kl_below"], r["primal_kl_below"]
        print(f"| {'mono' if r['modes'] == 1 else 'bi'}modal | {r['seed']} | {r['threshold']} | {d} | {p} | "
              f"{(p / d) if d and p else float('nan'):.1f} | {1e3 * r['dual_spi']:.2f} ms | "
              f"{1e3 * r['primal_spi']:.2f} ms |")
    for modes in a.modes:
        below = [r["primal_kl_below"] / r["dual_kl_below"] for r in rows
                 if r["modes"] == modes and r["primal_kl_below"] and r["dual_kl_below"]]
        if below:
            print(f"modes {modes}, first KL below its level: primal / dual median {np.median(below):.1f}x, "
                  f"range {min(below):.1f}-{max(below):.1f}x over {len(below)} seeds")
        for key in ("kl", "sm"):
            ratios = [r[f"primal_{key}_t"] / r[f"dual_{key}_t"] for r in rows
                      if r["modes"] == modes and r[f"primal_{key}_t"] and r[f"dual_{key}_t"]]
            if ratios:
                print(f"modes {modes}, {key}: speed-up median {np.median(ratios):.1f}x, range "
                      f"{min(ratios):.1f}-{max(ratios):.1f}x over {len(ratios)} seeds")


if __name__ == "__main__":
    main()
