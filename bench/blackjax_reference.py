"""BlackJAX's tempered SMC on the ring mixture, for bench/bench_annealing.py; run in a
separate venv (JAX and BlackJAX are never dependencies of particleflow):

    python bench/bench_annealing.py --jax-python /path/to/venv/bin/python

Usage: blackjax_reference.py N TEMPERATURES MCMC_STEPS.  The same problem as
bench_annealing.py: the six unit Gaussians on a circle of radius 3 (2-D), prior
N(0, 3^2 I), a fixed schedule of TEMPERATURES equally spaced values, MALA (step 0.5)
MCMC_STEPS times per temperature, systematic resampling at every temperature (BlackJAX's
tempered SMC always resamples).  One warm-up run (jit compilation) at the same sizes,
then a timed run; prints the seconds of the timed run and its log Z estimate.
"""
import sys
import time

import numpy as np


def main():
    n, temps, steps = (int(a) for a in sys.argv[1:4])
    import jax
    import jax.numpy as jnp
    import blackjax
    from blackjax.smc import resampling

    jax.config.update("jax_enable_x64", True)
    ang = 2 * np.pi * np.arange(6) / 6
    means = jnp.asarray(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1))

    def log_target(x):
        d2 = ((x[None, :] - means) ** 2).sum(-1)
        return jax.scipy.special.logsumexp(-0.5 * d2) - jnp.log(6.0) - jnp.log(2 * jnp.pi)

    def log_prior(x):
        return -0.5 * (x ** 2).sum() / 9.0 - jnp.log(2 * jnp.pi * 9.0)

    def log_lik(x):
        return log_target(x) - log_prior(x)

    smc = blackjax.tempered_smc(log_prior, log_lik, blackjax.mala.build_kernel(), blackjax.mala.init,
                                {"step_size": jnp.array([0.5])}, resampling.systematic, num_mcmc_steps=steps)
    step = jax.jit(smc.step)
    lambdas = np.linspace(0.0, 1.0, temps + 1)[1:]

    def run(seed):
        key = jax.random.PRNGKey(seed)
        key, k0 = jax.random.split(key)
        state = smc.init(3.0 * jax.random.normal(k0, (n, 2), dtype=jnp.float64))
        log_z = 0.0
        for lam in lambdas:
            key, k = jax.random.split(key)
            state, info = step(k, state, lam)
            log_z += info.log_likelihood_increment
        jax.block_until_ready(state.particles)
        return float(log_z)

    run(0)
    t0 = time.perf_counter()
    lz = run(1)
    print(f"{time.perf_counter() - t0}\t{lz}")


if __name__ == "__main__":
    main()
