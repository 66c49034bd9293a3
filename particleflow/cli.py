"""Command line: ``particleflow demo`` (the default main job of the quick start).

The full run / resume / inspect / plot CLI with TOML configs is issue 3; this module
already follows its rules: user errors print one line and exit with code 2.
"""
import sys
import time

import click
import numpy as np


class UserError(click.ClickException):
    exit_code = 2


@click.group()
@click.version_option(package_name="particleflow")
def main():
    """particleflow: particle-system simulation engine for energy-based models."""


@main.command()
@click.option("--n", "n_particles", default=200_000, show_default=True, help="number of chains")
@click.option("--steps", default=500, show_default=True, help="MALA steps per chain")
@click.option("--step-size", default=0.3, show_default=True, help="MALA step size")
@click.option("--seed", default=0, show_default=True, help="seed in [0, 2**32)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
def demo(n_particles, steps, step_size, seed, dtype):
    """Sample a 2-D 6-component Gaussian mixture with MALA chains (CPU, no GPU needed)
    and compare the ensemble's moments with the exact ones."""
    import particleflow as pf
    if n_particles < 1 or steps < 1:
        raise UserError("--n and --steps must be >= 1")
    try:
        ang = 2 * np.pi * np.arange(6) / 6
        mix = pf.energies.GaussianMixture(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=1.0)
        move = pf.moves.MALA(mix, step_size)
        x0 = np.random.default_rng(seed).standard_normal((n_particles, 2)).astype(dtype)
        sim = pf.Simulation({"chains": pf.Ensemble(x0)}, seed=seed).schedule(move, "chains", name="mala")
    except ValueError as e:
        raise UserError(str(e)) from None
    sim.run(1)                     # compiles the kernel
    t0 = time.perf_counter()
    sim.run(steps - 1) if steps > 1 else None
    dt = time.perf_counter() - t0
    x = sim.ensembles["chains"].x.astype(np.float64)
    _, acc = sim.stats("mala", "acceptance")
    click.echo(f"MALA on a 6-component mixture: {n_particles} chains x {steps} steps ({dtype})")
    click.echo(f"  acceptance           {acc[-50:].mean():.3f}")
    click.echo(f"  mean     sampled {np.array2string(x.mean(0), precision=3)}   exact [0. 0.]")
    click.echo(f"  cov diag sampled {np.array2string(np.diag(np.cov(x.T)), precision=3)}   exact [5.5 5.5]")
    if steps > 1:
        click.echo(f"  throughput           {n_particles * (steps - 1) / dt:.3g} particle-steps/s")


if __name__ == "__main__":
    sys.exit(main())
