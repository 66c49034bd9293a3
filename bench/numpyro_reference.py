"""NumPyro NUTS on one posterior of bench/posteriordb, run from a separate venv (NumPyro
and JAX are never dependencies of particleflow):

    /path/to/venv/bin/python bench/numpyro_reference.py NAME SEED DRAWS

4 chains, sequential, one CPU thread; NUTS with NumPyro's default window adaptation
(1000 warm-up iterations, target acceptance 0.8, diagonal mass); each chain starts
where Stan starts by default, uniform(-2, 2) on the unconstrained space.  The log
density is the same Stan program as bench/posteriordb/models.py, written in jax.numpy
(JAX differentiates it).  The configuration runs twice in one process and the second
run is timed, so that JIT compilation is not counted.  Prints one JSON line: draws
[draws, 4, d], gradient evaluations per chain (leapfrog steps, warm-up included) and
seconds.
"""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import expit  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

jax.config.update("jax_enable_x64", True)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "posteriordb"))
import models  # noqa: E402


def half_cauchy(s, scale):
    return jnp.log1p(jnp.exp(2 * s) / scale ** 2) - s


def half_normal(s, scale):
    return 0.5 * jnp.exp(2 * s) / scale ** 2 - s


def potential(m):
    """E(q) = -log p(q) for one unconstrained vector q [d], as models.py."""
    if isinstance(m, models.Regression):
        X, y = jnp.asarray(m.X), jnp.asarray(m.y)

        def E(q):
            beta, s = q[:-1], q[-1]
            r = y - X @ beta
            e = y.size * s + 0.5 * jnp.sum(r * r) * jnp.exp(-2 * s)
            if m.beta_scale is not None:
                e = e + 0.5 * jnp.sum(beta ** 2) / m.beta_scale ** 2
            if m.sigma_prior is None:
                return e - s
            f = half_cauchy if m.sigma_prior[0] == "cauchy" else half_normal
            return e + f(s, m.sigma_prior[1])
        return E
    if isinstance(m, models.EightSchools):
        y, sig = jnp.asarray(m.y), jnp.asarray(m.sigma)

        def E(q):
            tt, mu, s = q[:-2], q[-2], q[-1]
            th = tt * jnp.exp(s) + mu
            return 0.5 * jnp.sum(tt ** 2) + 0.5 * jnp.sum(((y - th) / sig) ** 2) + 0.5 * (mu / 5) ** 2 + \
                half_cauchy(s, 5.0)
        return E
    if isinstance(m, models.GaussMix):
        y = jnp.asarray(m.y)

        def E(q):
            m1 = q[0]
            m2 = m1 + jnp.exp(q[1]) if m.ordered else q[1]
            s1, s2, lt = q[2], q[3], q[4]
            th = expit(lt)
            l1 = jnp.log(th) - s1 - 0.5 * ((y - m1) / jnp.exp(s1)) ** 2
            l2 = jnp.log1p(-th) - s2 - 0.5 * ((y - m2) / jnp.exp(s2)) ** 2
            ll = jnp.sum(jnp.logaddexp(l1, l2))
            lp = -0.125 * (jnp.exp(2 * s1) + jnp.exp(2 * s2)) - 0.125 * (m1 ** 2 + m2 ** 2) + \
                5 * jnp.log(th) + 5 * jnp.log1p(-th) + s1 + s2
            if m.ordered:
                lp = lp + q[1]
            return -(ll + lp)
        return E
    if isinstance(m, models.GPPoisson):
        D2, k, N = jnp.asarray(m.D2), jnp.asarray(m.k), m.N

        def E(q):
            lr, la, ft = q[0], q[1], q[2:]
            rho, alpha = jnp.exp(lr), jnp.exp(la)
            K = alpha ** 2 * jnp.exp(-D2 / (2 * rho ** 2)) + 1e-10 * jnp.eye(N)
            f = jnp.linalg.cholesky(K) @ ft
            ll = jnp.sum(k * f - jnp.exp(f))
            lp = 24 * lr - 4 * rho - 0.125 * alpha ** 2 - 0.5 * jnp.sum(ft ** 2) + lr + la
            return -(ll + lp)
        return E
    if isinstance(m, models.Arma11):
        y = jnp.asarray(m.y)

        def E(q):
            mu, phi, th, s = q
            err0 = y[0] - (mu + phi * mu)

            def body(err, t):
                e = y[t] - (mu + phi * y[t - 1] + th * err)
                return e, e * e
            _, sq = jax.lax.scan(body, err0, jnp.arange(1, y.size))
            sse = err0 ** 2 + jnp.sum(sq)
            return y.size * s + 0.5 * sse * jnp.exp(-2 * s) + 0.5 * (mu / 10) ** 2 + 0.5 * (phi / 2) ** 2 + \
                0.5 * (th / 2) ** 2 + half_cauchy(s, 2.5)
        return E
    raise KeyError(m.name)


def run(m, E, seed, draws):
    init = jnp.asarray(np.random.default_rng(1000 + seed).uniform(-2, 2, (4, m.dim)))
    mc = MCMC(NUTS(potential_fn=E), num_warmup=1000, num_samples=draws, num_chains=4, chain_method="sequential",
              progress_bar=False)
    t = time.perf_counter()
    mc.warmup(jax.random.PRNGKey(seed), init_params=init, extra_fields=("num_steps",), collect_warmup=True)
    warm = int(np.sum(mc.get_extra_fields()["num_steps"]))
    mc.run(jax.random.PRNGKey(seed + 1), extra_fields=("num_steps",))        # from the warmed-up state
    samples = np.asarray(mc.get_samples(group_by_chain=True))          # [4, draws, d]
    steps = int(np.sum(mc.get_extra_fields()["num_steps"]))
    return samples, (warm + steps) / 4.0, time.perf_counter() - t


def main():
    name, seed, draws = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    m = models.get(name)
    E = potential(m)
    run(m, E, seed + 7, draws)                               # compiles (same shapes)
    samples, grads, secs = run(m, E, seed, draws)
    print(json.dumps({"draws": np.swapaxes(samples, 0, 1).tolist(), "gradients": grads, "seconds": secs}))


if __name__ == "__main__":
    main()
