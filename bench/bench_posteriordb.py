"""pf.mcmc with its defaults on posteriordb posteriors, against posteriordb's reference
draws and against NumPyro's NUTS (from a separate venv, never a dependency):

    python bench/bench_posteriordb.py [--numpyro-python /path/to/venv/bin/python] [--rounds 2]
        [--only NAME,NAME] [--chains 1000] [--draws 1000] [--sampler mala|hmc] [--json out.json]
    python bench/bench_posteriordb.py --table out.json [more.json]      # the markdown table again

Every posterior starts as Stan does by default: uniform(-2, 2) on the unconstrained
space, one draw per chain.  One thread each (NUMBA_NUM_THREADS / OMP / XLA flags set
before import).  Reported per posterior and sampler:

* worst |z| of the means: (mean - reference mean) / sqrt(sd^2 / ESS_bulk + sd^2 / n_ref),
  the sampler's own bulk ESS per coordinate (correct if <= 4);
* sd ratio range (sampler sd / reference sd, correct if all in [0.95, 1.05]);
* max split R-hat and max nested R-hat (particleflow's superchains);
* ESS per gradient: min bulk ESS over coordinates / (chains x gradient evaluations per
  chain, warm-up included);
* min ESS per second: min bulk ESS / wall time of warm-up + sampling (compilation
  excluded: each sampler runs a small warm-up call first);
* the warnings the sampler raised.

Models and data: bench/posteriordb/ (models.py, data/ extracted by extract.py).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "posteriordb"))
import models  # noqa: E402


def score(model, draws, ess, seconds, gradients, chains):
    """The comparison with the reference for draws [draws, chains, d]."""
    ref = model.reference().reshape(-1, model.dim)
    flat = draws.reshape(-1, model.dim)
    mean, sd = flat.mean(0), flat.std(0)
    rmean, rsd = ref.mean(0), ref.std(0)
    z = (mean - rmean) / np.sqrt(rsd ** 2 / np.maximum(ess, 1.0) + rsd ** 2 / len(ref))
    ratio = sd / rsd
    ok = bool(np.all(np.abs(z) <= 4) and np.all((ratio >= 0.95) & (ratio <= 1.05)))
    return {"worst_z": float(np.max(np.abs(z))), "worst_coord": model.names[int(np.argmax(np.abs(z)))],
            "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()), "correct": ok,
            "min_ess": float(ess.min()), "ess_per_grad": float(ess.min() / (chains * gradients)),
            "ess_per_s": float(ess.min() / seconds), "seconds": float(seconds), "gradients": float(gradients)}


def run_particleflow(model, chains, draws, seed, sampler="mala", warmup="auto"):
    import particleflow as pf
    x0 = np.random.default_rng(seed).uniform(-2, 2, (chains, model.dim))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        r = pf.mcmc(model.value_and_grad, x0, draws=draws, sampler=sampler, seed=seed, warmup=warmup)
        wall = time.perf_counter() - t
    out = score(model, r.positions, r.ess_bulk, r.seconds, r.gradients, chains)
    out.update(rhat=float(np.max(r.rhat)), rhat_nested=float(np.max(r.rhat_nested)), warnings=r.warnings,
               warned=bool(r.warnings), acceptance=r.acceptance, wall=wall,
               warmup_gradients=r.warmup_gradients, n_stuck=r.n_stuck, divergences=r.divergences,
               caught=[str(c.message) for c in caught if issubclass(c.category, pf.ConvergenceWarning)])
    return out


def warm_up_compilation():
    import particleflow as pf
    m = models.get("eight_schools_nc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in ("mala", "hmc"):
            pf.mcmc(m.value_and_grad, np.random.default_rng(0).uniform(-2, 2, (64, m.dim)), draws=8, tune=10,
                    sampler=s)


def run_numpyro(python, name, chains, draws, seed):
    cmd = [python, os.path.join(HERE, "numpyro_reference.py"), name, str(seed), str(draws)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    m = models.get(name)
    draws_arr = np.asarray(res.pop("draws"))                     # [draws, chains, d]
    from particleflow.analysis import ess_bulk, split_rhat
    ess = ess_bulk(draws_arr)
    res.update(rhat=float(np.max(split_rhat(draws_arr))))
    sc = score(m, draws_arr, ess, res["seconds"], res["gradients"], draws_arr.shape[1])
    sc.update(res)
    return sc


def table(rows):
    """Markdown: one line per posterior and sampler (medians over rounds; correctness and
    warnings of every round), then the ratios particleflow / NumPyro."""
    import statistics
    by = {}
    for r in rows:
        by.setdefault((r["posterior"], r["sampler"]), []).append(r)
    lines = ["| posterior | sampler | correct | worst \\|z\\| | sd ratio | split R-hat | nested R-hat | "
             "ESS / gradient | min ESS / s | warnings |", "|---|---|---|---|---|---|---|---|---|---|"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)                         # noqa: E731
    for (post, samp), rs in by.items():
        kinds = {"nested R-hat": "nested R-hat", "stuck": "stuck chains", "divergent": "divergences"}
        warn = sorted({v for r in rs for w in r.get("warnings", []) for k, v in kinds.items() if k in w})
        nested = f"{max(r['rhat_nested'] for r in rs):.4f}" if "rhat_nested" in rs[0] else "-"
        lines.append(f"| {post} | {samp} | {sum(r['correct'] for r in rs)}/{len(rs)} | {med(rs, 'worst_z'):.2f} | "
                     f"{min(r['sd_ratio_min'] for r in rs):.3f}-{max(r['sd_ratio_max'] for r in rs):.3f} | "
                     f"{max(r['rhat'] for r in rs):.3f} | {nested} | {med(rs, 'ess_per_grad'):.4f} | "
                     f"{med(rs, 'ess_per_s'):.0f} | {'; '.join(warn) or '-'} |")
    posts = sorted({p for p, _ in by})
    ratio_g, ratio_s = [], []
    for p in posts:
        a = [k for k in by if k[0] == p and k[1].startswith("particleflow")]
        b = [k for k in by if k[0] == p and k[1].startswith("numpyro")]
        if a and b:
            ratio_g.append(med(by[a[0]], "ess_per_grad") / med(by[b[0]], "ess_per_grad"))
            ratio_s.append(med(by[a[0]], "ess_per_s") / med(by[b[0]], "ess_per_s"))
    if ratio_g:
        lines.append("")
        lines.append(f"particleflow / NumPyro over {len(ratio_g)} posteriors: ESS per gradient median "
                     f"{statistics.median(ratio_g):.1f}x (range {min(ratio_g):.1f}-{max(ratio_g):.1f}), "
                     f"min ESS per second median {statistics.median(ratio_s):.0f}x "
                     f"(range {min(ratio_s):.0f}-{max(ratio_s):.0f})")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numpyro-python")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--first-round", type=int, default=0, help="round number (and seed) of the first round; "
                    "odd rounds run the posteriors in reverse order")
    ap.add_argument("--only")
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--sampler", default="mala")
    ap.add_argument("--warmup", default="auto", help="auto (the default) or tune (no annealing: step size, "
                    "dense mass and ChEES from the starts as they are)")
    ap.add_argument("--json")
    ap.add_argument("--table", nargs="+", help="print the markdown table of saved --json files and exit")
    a = ap.parse_args()
    if a.table:
        rows = [r for f in a.table for r in json.load(open(f))]
        print(table(rows))
        return
    names = a.only.split(",") if a.only else [m.name for m in models.MODELS]
    warm_up_compilation()
    rows = []
    for rnd in range(a.first_round, a.first_round + a.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            m = models.get(name)
            pf_row = run_particleflow(m, a.chains, a.draws, seed=rnd, sampler=a.sampler, warmup=a.warmup)
            tag = "" if a.warmup == "auto" else f", warmup={a.warmup}"
            pf_row.update(posterior=name, sampler=f"particleflow {a.sampler}{tag}", round=rnd)
            rows.append(pf_row)
            print(json.dumps({k: v for k, v in pf_row.items() if k != "caught"}), flush=True)
            if a.numpyro_python:
                nr = run_numpyro(a.numpyro_python, name, a.chains, a.draws, seed=rnd)
                nr.update(posterior=name, sampler="numpyro nuts", round=rnd)
                rows.append(nr)
                print(json.dumps(nr), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
