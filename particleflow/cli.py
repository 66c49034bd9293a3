"""Command line: ``particleflow run | resume | inspect | plot | list | demo``.

Exit codes: 0 success, 2 user error (one line, no traceback), 1 internal error,
130 / 143 after SIGINT / SIGTERM (the run is flushed and checkpointed first).
Existing outputs are never overwritten without ``--force``.
"""
import glob
import os
import sys
import time

import click
import numpy as np


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _user_errors(fn):
    """Turn the library's user-facing exceptions into exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **k):
        from .errors import DivergenceError
        try:
            return fn(*a, **k)
        except (ValueError, DivergenceError) as e:
            raise UserError(str(e)) from None
    return wrapper


@click.group()
@click.version_option(package_name="particleflow")
def cli():
    """particleflow: particle-system simulation engine for energy-based models."""


def _default_out(config_path):
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), "out", f"{stem}.h5")


def _check_writable(out, force):
    from .runner import checkpoint_path
    d = os.path.dirname(os.path.abspath(out))
    if os.path.exists(out) and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it or --out to choose another path")
    if os.path.isdir(out):
        raise UserError(f"{out} is a directory; --out must name a file")
    if not os.path.isdir(d):
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output directory {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
        raise UserError(f"output directory {d} is not writable; choose another --out")
    if force:
        for p in (out, checkpoint_path(out), checkpoint_path(out) + ".prev"):
            if os.path.exists(p):
                os.remove(p)


class _Progress:
    """A one-line progress bar (steps/s, ETA, latest key statistics) on a terminal;
    a line every 10% otherwise."""

    def __init__(self, n_total, start_step, enabled):
        self.n_total, self.start, self.enabled = n_total, start_step, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.next_report = start_step

    def __call__(self, step, n_total, stats):
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        rate = (step - self.start) / dt if dt > 0 else 0.0
        eta = (n_total - step) / rate if rate > 0 else float("inf")
        keys = []
        for slot, d in stats.items():
            for k in ("acceptance", "ess", "restart_fraction"):
                if k in d:
                    keys.append(f"{slot}.{k}={d[k]:.3g}")
        bar_w = 30
        fill = int(bar_w * step / n_total)
        line = (f"[{'#' * fill}{'.' * (bar_w - fill)}] {step}/{n_total} {rate:8.1f} steps/s "
                f"ETA {eta:6.1f}s {' '.join(keys[:3])}")
        if self.tty:
            click.echo("\r" + line, nl=step >= n_total, err=True)
        elif step >= self.next_report or step >= n_total:
            click.echo(line, err=True)
            self.next_report = step + max(1, n_total // 10)


def _finish(out, cfg, quiet):
    from .io.config import estimator_module
    module = estimator_module(cfg.get("estimator", "sample"))
    if module is not None and hasattr(module, "summary_lines") and not quiet:
        from .io.h5md import open_run
        with open_run(out) as r:
            for line in module.summary_lines(r):
                click.echo(line)
    if cfg["output"]["plot"]:
        try:
            png = _plot(out, os.path.splitext(out)[0] + ".png")
            if not quiet:
                click.echo(f"plot: {png}")
        except UserError as e:
            if not quiet:
                click.echo(f"note: no plot written ({e.format_message()})", err=True)
    if not quiet:
        click.echo(f"trajectory: {out}")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="trajectory path (default: <config dir>/out/<name>.h5)")
@click.option("--set", "overrides", multiple=True, help="override a config key: key.path=value")
@click.option("--steps", type=int, default=None, help="override run.steps")
@click.option("--seed", type=int, default=None, help="override run.seed")
@click.option("--force", is_flag=True, help="overwrite an existing output")
@click.option("--quiet", is_flag=True, help="no progress bar")
@_user_errors
def run(config, out, overrides, steps, seed, force, quiet):
    """Run CONFIG.toml and stream its trajectory to an H5MD file.  A config with a
    [sweep] table ("key.path" = [values, ...]) runs once per combination of values,
    writing <out stem>_<key>=<value>.h5 for each."""
    import copy
    import itertools
    from .io import config as cfgmod
    from .runner import load_config_file
    text, raw = load_config_file(config)
    sets = list(overrides) + ([f"run.steps={steps}"] if steps is not None else []) + \
        ([f"run.seed={seed}"] if seed is not None else [])
    raw = cfgmod.apply_overrides(raw, sets)
    sweep = raw.pop("sweep", None)
    out = out or _default_out(config)
    base_dir = os.path.dirname(os.path.abspath(config))
    if sweep is None:
        cfg = cfgmod.validate(raw)
        _check_writable(out, force)
        _run_one(cfg, cfgmod.dumps(raw) if sets else text, out, base_dir, quiet)
        return
    if not isinstance(sweep, dict) or not sweep or not all(isinstance(v, list) and v for v in sweep.values()):
        raise UserError('sweep must be a table of "key.path" = [value, ...] with non-empty arrays')
    combos = []
    for values in itertools.product(*sweep.values()):
        one = copy.deepcopy(raw)
        for k, v in zip(sweep, values):
            cfgmod.set_path(one, k, v)
        cfg = cfgmod.validate(one)                   # every combination is checked before any runs
        tag = "_".join(f"{k.split('.')[-1]}={v}" for k, v in zip(sweep, values))
        combos.append((cfg, one, os.path.splitext(out)[0] + f"_{tag}.h5", tag))
    for _, _, path, _ in combos:
        _check_writable(path, force)
    for cfg, one, path, tag in combos:
        if not quiet:
            click.echo(f"== sweep: {tag} -> {path}")
        _run_one(cfg, cfgmod.dumps(one), path, base_dir, quiet)


def _run_one(cfg, text, out, base_dir, quiet):
    from .io import config as cfgmod
    from .runner import Interrupted, execute
    module = cfgmod.estimator_module(cfg["estimator"])
    if module is not None and not hasattr(module, "build_plan"):     # one-shot estimators
        prog = _Progress(1, 0, not quiet)
        results = module.execute(cfg, text, out, progress=lambda i, n, s: prog(i, n, s), base_dir=base_dir)
        if not quiet:
            for line in module.summary(results, cfg):
                click.echo(line)
        _finish(out, cfg, quiet)
        return
    prog = _Progress(cfg["run"]["steps"], 0, not quiet)
    try:
        execute(cfg, text, out, progress=prog, base_dir=base_dir)
    except Interrupted as e:
        click.echo(f"\ninterrupted: trajectory flushed and checkpointed at {out}; "
                   f"continue with: particleflow resume {out}", err=True)
        sys.exit(e.exit_code)
    _finish(out, cfg, quiet)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--quiet", is_flag=True)
@_user_errors
def resume(path, quiet):
    """Continue the run whose trajectory is PATH from its last checkpoint."""
    from .io import config as cfgmod
    from .io.checkpoint import read_checkpoint
    from .runner import Interrupted, checkpoint_path, execute
    if not os.path.exists(path):
        raise UserError(f"no such trajectory: {path}")
    if not os.path.exists(checkpoint_path(path)):
        from .io.h5md import open_run
        try:
            with open_run(path) as r:
                est = r.parameters.get("estimator", "sample")
        except ValueError:
            est = "sample"           # unreadable: read_checkpoint below names the problem
        if est != "sample":
            raise UserError(f"{path} is a run of estimator {est!r}, which finishes in one go and has no "
                            "checkpoint; rerun its config with --force")
    start = read_checkpoint(checkpoint_path(path))
    cfg = cfgmod.validate(cfgmod.loads(start["config"], "the checkpoint's config"))
    if start["step"] >= cfg["run"]["steps"]:
        raise UserError(f"{path} is already complete ({start['step']} of {cfg['run']['steps']} steps)")
    try:
        from .io.h5md import open_run
        open_run(path).close()
    except ValueError as e:
        raise UserError(f"cannot resume: {e}") from None
    prog = _Progress(cfg["run"]["steps"], start["step"], not quiet)
    try:
        execute(cfg, start["config"], path, start=start, progress=prog)
    except Interrupted as e:
        click.echo(f"\ninterrupted: checkpointed; continue with: particleflow resume {path}", err=True)
        sys.exit(e.exit_code)
    _finish(path, cfg, quiet)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@_user_errors
def repair(path):
    """Rewrite a trajectory whose run was killed (SIGKILL, power loss) into a clean
    file that plain h5py opens, keeping every committed frame."""
    from .io.h5md import repair as _repair
    counts = _repair(path)
    click.echo(f"{path}: " + ", ".join(f"{k}: {v} frames" for k, v in counts.items()))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--stats", is_flag=True, help="also print tau, ESS and split R-hat per coordinate")
@_user_errors
def inspect(path, stats):
    """Ensembles, frames, observables and results of a trajectory, as a table."""
    from .io.h5md import open_run
    with open_run(path) as r:
        click.echo(f"{path}: particleflow {r.parameters.get('particleflow_version', '?')}, "
                   f"seed {r.parameters.get('seed', '?')}, dtype {r.parameters.get('dtype', '?')}")
        click.echo(f"{'ensemble':<20} {'n':>9} {'event shape':>12} {'frames':>7} {'steps':>15}")
        for name, e in r.ensembles.items():
            shp = e.positions.shape
            st = e.steps
            span = f"{st[0]}..{st[-1]}" if len(st) else "-"
            click.echo(f"{name:<20} {shp[1]:>9} {str(tuple(shp[2:])):>12} {shp[0]:>7} {span:>15}")
        click.echo(f"{'observable':<32} {'frames':>7} {'last value':>24}")
        for name, o in sorted(r.observables.items()):
            v = o.values
            last = np.array2string(np.asarray(v[-1]), precision=4) if len(v) else "-"
            click.echo(f"{name:<32} {len(v):>7} {last:>24}")
        for name, v in r.results.items():
            v = np.asarray(v)
            if v.size > 8 and v.dtype.kind in "fiu":
                fin = v[np.isfinite(v)] if v.dtype.kind == "f" else v
                rng = f"min {fin.min():.4g}, mean {fin.mean():.4g}, max {fin.max():.4g}" if fin.size else "no finite values"
                click.echo(f"result {name}: shape {v.shape}, {rng}")
            else:
                click.echo(f"result {name} = {np.array2string(v, precision=4)}")
    if stats:
        from .analysis import summary
        click.echo("statistics over the second half of the frames (frames are the samples):")
        click.echo(f"{'ensemble':<16} {'coord':>5} {'mean':>10} {'sd':>10} {'tau':>9} {'ess':>10} {'rhat':>7}")
        for name, j, m, sd, tau, ess, rh in summary(path):
            click.echo(f"{name:<16} {j:>5} {m:>10.4f} {sd:>10.4f} {tau:>9.2f} {ess:>10.1f} {rh:>7.4f}")


def _plot(path, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'particleflow[plot]'") from None
    from .io.config import estimator_module
    from .io.h5md import open_run
    with open_run(path) as r:
        est = r.parameters.get("estimator", "sample")
        if est != "sample" and hasattr(estimator_module(est), "plot"):
            tmp = png + ".tmp.png"
            estimator_module(est).plot(r, tmp)
            os.replace(tmp, png)
            return png
        obs = {k: o for k, o in sorted(r.observables.items()) if np.ndim(o.values[0:1]) <= 1 and len(o.steps)}
        ens = list(r.ensembles.items())
        ncols = max(1, len(obs)) + len(ens)
        fig, axes = plt.subplots(1, ncols, figsize=(4 * ncols, 3.5), squeeze=False)
        axes = axes[0]
        for ax, (k, o) in zip(axes, obs.items()):
            ax.plot(o.steps, o.values)
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step")
        for ax, (name, e) in zip(axes[len(obs):], ens):
            last = np.asarray(e.positions[-1])
            if last.ndim == 2 and last.shape[1] >= 2:
                pts = last[np.random.default_rng(0).permutation(len(last))[:5000]]
                ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
                ax.set_aspect("equal")
            elif last.ndim == 3 or last.ndim == 4:
                ax.imshow(last[0] if last.ndim == 3 else np.moveaxis(last[0], 0, -1))
            else:
                ax.hist(last.reshape(len(last), -1)[:, 0], bins=60)
            ax.set_title(f"{name}: last frame (step {e.steps[-1]})", fontsize=9)
        fig.tight_layout()
        tmp = png + ".tmp.png"
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, png)
    return png


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="PNG path (default: PATH with .png)")
@_user_errors
def plot(path, out):
    """Observables against steps and the last frame of every ensemble."""
    click.echo(_plot(path, out or os.path.splitext(path)[0] + ".png"))


@cli.command(name="list")
def list_():
    """Estimators and the configs in runs/."""
    from .io.config import TOP
    click.echo("estimators: " + ", ".join(TOP["estimator"].choices))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(os.getcwd(), "runs"), os.path.join(here, "runs")):
        files = sorted(glob.glob(os.path.join(d, "*.toml")))
        if files:
            click.echo(f"configs in {d}:")
            for f in files:
                click.echo(f"  {os.path.basename(f)}")
            break


@cli.command()
@click.option("--n", "n_particles", default=200_000, show_default=True, help="number of chains")
@click.option("--steps", default=500, show_default=True, help="MALA steps per chain")
@click.option("--step-size", default=0.3, show_default=True, help="MALA step size")
@click.option("--seed", default=0, show_default=True, help="seed in [0, 2**32)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@_user_errors
def demo(n_particles, steps, step_size, seed, dtype):
    """Sample a 2-D 6-component Gaussian mixture with MALA chains (no files written)."""
    import particleflow as pf
    if n_particles < 1 or steps < 1:
        raise UserError("--n and --steps must be >= 1")
    ang = 2 * np.pi * np.arange(6) / 6
    mix = pf.energies.GaussianMixture(3.0 * np.stack([np.cos(ang), np.sin(ang)], 1), scale=1.0)
    move = pf.moves.MALA(mix, step_size)
    x0 = np.random.default_rng(seed).standard_normal((n_particles, 2)).astype(dtype)
    sim = pf.Simulation({"chains": pf.Ensemble(x0)}, seed=seed).schedule(move, "chains", name="mala")
    sim.run(1)                     # compiles the kernel
    t0 = time.perf_counter()
    if steps > 1:
        sim.run(steps - 1)
    dt = time.perf_counter() - t0
    x = sim.ensembles["chains"].x.astype(np.float64)
    _, acc = sim.stats("mala", "acceptance")
    click.echo(f"MALA on a 6-component mixture: {n_particles} chains x {steps} steps ({dtype})")
    click.echo(f"  acceptance           {acc[-50:].mean():.3f}")
    click.echo(f"  mean     sampled {np.array2string(x.mean(0), precision=3)}   exact [0. 0.]")
    click.echo(f"  cov diag sampled {np.array2string(np.diag(np.cov(x.T)), precision=3)}   exact [5.5 5.5]")
    if steps > 1:
        click.echo(f"  throughput           {n_particles * (steps - 1) / dt:.3g} particle-steps/s")


def main(argv=None):
    """Entry point: click's own errors (bad options) also exit 2; anything unexpected
    is an internal error (exit 1) with a one-line summary."""
    try:
        return cli.main(args=argv, prog_name="particleflow", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as e:  # internal error
        click.echo(f"internal error: {type(e).__name__}: {e} (please report it)", err=True)
        if os.environ.get("PARTICLEFLOW_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
