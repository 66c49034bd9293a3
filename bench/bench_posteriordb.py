"""pf.mcmc with its defaults on posteriordb posteriors, against posteriordb's reference
draws and against NumPyro's NUTS (from a separate venv, never a dependency):

    python bench/bench_posteriordb.py [--numpyro-python /path/to/venv/bin/python] [--rounds 2]
        [--only NAME,NAME] [--chains 1000] [--draws 1000] [--json out.json]

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


def run_particleflow(model, chains, draws, seed, sampler="mala"):
    import particleflow as pf
    x0 = np.random.default_rng(seed).uniform(-2, 2, (chains, model.dim))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        r = pf.mcmc(model.value_and_grad, x0, draws=draws, sampler=sampler, seed=seed)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--numpyro-python")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only")
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--sampler", default="mala")
    ap.add_argument("--json")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else [m.name for m in models.MODELS]
    warm_up_compilation()
    rows = []
    for rnd in range(a.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            m = models.get(name)
            pf_row = run_particleflow(m, a.chains, a.draws, seed=rnd, sampler=a.sampler)
            pf_row.update(posterior=name, sampler="particleflow " + a.sampler, round=rnd)
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


if __name__ == "__main__":
    main()
