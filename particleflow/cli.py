"""Command line: ``particleflow run | resume | inspect | plot | list | demo``.

Exit codes: 0 success, 2 user error (one line, no traceback), 1 internal error,
130 / 143 after SIGINT / SIGTERM (the run is flushed and checkpointed first).
Existing outputs are never overwritten without ``--force``.
"""
import contextlib
import copy
import errno
import functools
import glob
import importlib.util
import itertools
import os
import re
import sys
import tempfile
import threading
import time
import warnings

import click
import numpy as np

from . import energies, experiments, moves
from .experiments import figures
from .analysis import evaluate_run
from .analysis import summary as analysis_summary
from .analysis.metrics import RHAT_NESTED_MAX
from .config import apply_overrides, dumps, loads, set_path
from .ensemble import Ensemble
from .errors import ConvergenceWarning, DivergenceError, Terminated
from .io.files import lock_holder, output_lock, temporary_beside
from .kernels._jit import KernelCacheWarning, kernel_cache_dir
from .io.h5md import open_run
from .io.inferencedata import export_netcdf, import_arviz
from .io.h5md import repair as _repair
from .parallel import world
from .runner import (Interrupted, check_memory, default_out, execute, interrupted_line, load_config_file, parse_bytes, plan,
                     read_start)
from .simulation import Simulation
from .status import listen


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None):
        if world().rank == 0:            # every rank of an MPI run meets the same error
            click.echo(f"error: {self.format_message()}", err=True)


def _user_errors(fn):
    """Turn the library's user-facing exceptions into exit code 2: invalid values,
    divergence, files that cannot be written (disk full, read-only, permissions)."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        try:
            with warnings.catch_warnings():
                # numpy's overflow / invalid-value warnings: a run that goes non-finite is
                # reported once, by the divergence check, naming ensemble, step and move
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*a, **k)
        except (ValueError, DivergenceError) as e:
            raise UserError(str(e)) from None
        except MemoryError:
            raise UserError("not enough memory for this run; reduce its sizes (particles, data, grid)") from None
        except OverflowError as e:
            raise UserError(f"a value overflowed ({e}); reduce step sizes or scales in the config") from None
        except OSError as e:
            text = " ".join(str(e).split())
            if e.errno in USER_ERRNOS and _in_kernel_cache(e):
                raise UserError(f"cannot write the kernel cache in {kernel_cache_dir()}: "
                                f"{e.strerror or text}; free space there, or set PARTICLEFLOW_KERNEL_CACHE to "
                                "another folder (or to 0: no cache, every run compiles)") from None
            if e.errno in USER_ERRNOS or "No space left" in text or "Read-only" in text:
                m = re.search(r"filename = '([^']*)'", text)
                where = e.filename or (m.group(1) if m else None)
                reason = "no space left on device" if (e.errno == errno.ENOSPC or "No space left" in text) else \
                    ("read-only file system" if "Read-only" in text else (e.strerror or text))
                raise UserError(f"cannot write{f' {where}' if where else ''}: {reason}; free space or choose "
                                "another --out, then rerun (or `particleflow resume` a run that has a checkpoint)") \
                    from None
            raise
    return wrapper


def _in_kernel_cache(error):
    """Whether ``error`` was raised while numba saved a compiled kernel to its cache."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("numba.core.caching"):
            return True
        tb = tb.tb_next
    return False


USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR,
               errno.ENOTDIR}


@click.group()
@click.version_option(package_name="particleflow")
def cli():
    """particleflow: particle-system simulation engine for energy-based models."""


def _check_writable(out, force, what="--out"):
    """Refuse an existing file without ``force`` and a path that cannot be created;
    nothing is removed here (the run replaces the old file when it starts)."""
    d = os.path.dirname(os.path.abspath(out))
    if os.path.islink(out):
        raise UserError(f"{out} is a symbolic link; {what} must name a file (give the link's target itself)")
    if os.path.isdir(out):
        raise UserError(f"{out} is a directory; {what} must name a file")
    holder = lock_holder(out)
    if holder is not None:
        raise UserError(f"{out} is being written by another particleflow process (pid {holder}); wait for it "
                        f"to finish, or choose another {what}")
    if os.path.exists(out) and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it or {what} to choose another path")
    if not os.path.isdir(d):
        if os.path.exists(d):
            raise UserError(f"{d} is not a directory; choose another {what}")
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output directory {d}: {e.strerror}; choose another {what}") from None
    try:                                      # can a file be created there at all (/proc, /sys, read-only)?
        fd, probe = tempfile.mkstemp(dir=d, prefix=".particleflow-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot create files in {d}: {e.strerror}; choose another {what}") from None


class _Progress:
    """A one-line progress bar (rate, ETA, latest key statistics) redrawn in place on a
    terminal at most 10 times a second (the line erased to its end first); a line every
    10% otherwise.  The rate and ETA count from the end of the first step, whose time
    includes compiling kernels on a first run; slow runs show seconds per step."""

    KEYS = ("acceptance", "ess", "restart_fraction", "mean_weight", "lr")

    def __init__(self, start_step, enabled):
        self.start, self.enabled = start_step, enabled
        self.tty = sys.stderr.isatty()
        self.next_report = None
        self.last_draw = 0.0
        self.anchor = None            # (step, time) at the first call: after the first step
        self.last_output = time.perf_counter()
        self.bar_open = False         # a redrawn bar is on the terminal's current line
        self.lock = threading.Lock()

    def say(self, line):
        """One line of its own (a phase's report) on stdout, with the run's other narrative
        (stderr keeps the bar, warnings and the one-line errors), ending a redrawn bar's
        line first."""
        if not self.enabled:
            return
        with self.lock:
            if self.bar_open:
                click.echo("", err=True)
            click.echo(line)
            self.bar_open = False
            self.last_output = time.perf_counter()

    @staticmethod
    def rate_text(rate):
        if rate <= 0:
            return "      ? steps/s"
        return f"{rate:8.1f} steps/s" if rate >= 1 else f"{1 / rate:8.2f} s/step"

    def __call__(self, sim, n_total):
        if not self.enabled:
            return
        step = sim.step
        now = time.perf_counter()
        if self.anchor is None:
            self.anchor = (step, now)
        if self.tty and step < n_total and now - self.last_draw < 0.1:
            return
        tenth = max(1, n_total // 10)
        if self.next_report is None:
            self.next_report = (self.start // tenth + 1) * tenth
        if not self.tty and step < self.next_report and step < n_total:
            return
        self.last_draw = now
        s0, t0 = self.anchor
        rate = (step - s0) / (now - t0) if step > s0 and now > t0 else 0.0
        eta = f"ETA {(n_total - step) / rate:7.1f}s" if rate > 0 else "ETA       ?"
        keys = [f"{slot}.{k}={d[k]:.3g}" for slot, d in sim.last_stats().items() for k in self.KEYS if k in d]
        bar_w = 30
        fill = int(bar_w * step / n_total)
        line = (f"[{'#' * fill}{'.' * (bar_w - fill)}] {step}/{n_total} {self.rate_text(rate)} "
                f"{eta} {' '.join(keys[:3])}")
        with self.lock:
            if self.tty:
                click.echo("\r" + line + "\x1b[K", nl=step >= n_total, err=True)
                self.bar_open = step < n_total
            else:
                click.echo(line, err=True)
                self.next_report = (step // tenth + 1) * tenth
            self.last_output = now


class _Phases:
    """The command line's listener for ``status.phase``: a phase that lasts ``announce``
    seconds gets a line (so a quick failure still prints one line), then one every
    ``every`` seconds while it lasts without other output (a heartbeat thread), and its
    duration at the end when it took more than 2 s without a progress bar."""

    def __init__(self, progress, every=10.0, announce=1.0):
        self.progress, self.every, self.announce = progress, every, announce
        self.stack = []                          # [[text, start time, announced]]
        self.wake = threading.Event()
        self.thread = None

    def __call__(self, event, text):
        now = time.perf_counter()
        if event == "begin":
            self.stack.append([text, now, False])
        elif self.stack:
            text, t0, announced = self.stack.pop()
            if announced and now - t0 > 2 and self.progress.last_draw < t0:
                self.progress.say(f"  {text}: {now - t0:.1f} s")

    def _beat(self):
        while not self.wake.wait(min(self.announce, self.every / 3)):
            if not self.stack:
                continue
            entry = self.stack[-1]
            now = time.perf_counter()
            if not entry[2]:
                if now - entry[1] >= self.announce:
                    entry[2] = True
                    self.progress.say(f"- {entry[0]}")
            elif now - self.progress.last_output >= self.every:
                self.progress.say(f"  ... {entry[0]}: {now - entry[1]:.0f} s so far")

    def __enter__(self):
        if self.progress.enabled:
            self.previous = listen(self)
            self.thread = threading.Thread(target=self._beat, name="particleflow-phases", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.wake.set()
            self.thread.join()
            listen(self.previous)


def _finish(out, cfg, quiet):
    if world().rank:                     # rank 0 reports for an MPI run
        return
    exp = experiments.get(cfg["estimator"])
    with open_run(out) as r:
        if not quiet:
            for line in exp.summary(r, cfg):
                click.echo(line)
        diagnostics = getattr(exp, "diagnostics", None)
        if diagnostics is not None:
            for w in diagnostics(r, cfg)[1]:                  # failed convergence checks, even when quiet
                click.echo(f"warning: {w}", err=True)
    if cfg["output"]["plot"]:
        try:
            png = _plot(out, figure_path(out))
            if not quiet:
                click.echo(f"plot: {png}")
        except UserError as e:
            if not quiet:
                click.echo(f"note: no plot written ({e.format_message()})", err=True)
    if not quiet:
        click.echo(f"trajectory: {out}")


@cli.command()
@click.argument("config")
@click.option("--out", default=None, help="trajectory path (default: <config dir>/out/<name>.h5)")
@click.option("--set", "overrides", multiple=True, help="override a config key: key.path=value")
@click.option("--steps", type=click.IntRange(1, 2 ** 32 - 1), default=None, help="override run.steps")
@click.option("--seed", type=click.IntRange(0, 2 ** 32 - 1), default=None, help="override run.seed")
@click.option("--force", is_flag=True, help="overwrite an existing output")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--max-memory", default=None, help="refuse configs estimated to need more (e.g. 64G; default: this machine's memory)")
@click.option("--dry-run", is_flag=True, help="print the plan (ensembles, schedule, steps, memory, file size, "
                                              "cost) without running or writing anything")
@_user_errors
def run(config, out, overrides, steps, seed, force, quiet, max_memory, dry_run):
    """Run CONFIG.toml and stream its trajectory to an H5MD file.  A config with a
    [sweep] table ("key.path" = [values, ...]) runs once per combination of values,
    writing <out stem>_<key>=<value>.h5 for each."""
    limit = None if max_memory is None else parse_bytes(max_memory, "--max-memory")
    text, raw = load_config_file(config)
    sets = list(overrides) + ([f"run.steps={steps}"] if steps is not None else []) + \
        ([f"run.seed={seed}"] if seed is not None else [])
    raw = apply_overrides(raw, sets)
    sweep = raw.pop("sweep", None)
    out = out or default_out(config)
    base_dir = os.path.dirname(os.path.abspath(config))
    if dry_run:
        one = raw
        if isinstance(sweep, dict) and sweep and all(isinstance(v, list) and v for v in sweep.values()):
            click.echo(f"sweep over {', '.join(sweep)}: {int(np.prod([len(v) for v in sweep.values()]))} runs; "
                       "the plan of the first:")
            one = copy.deepcopy(raw)
            for k, v in sweep.items():
                set_path(one, k, v[0])
        cfg = experiments.validate(one)
        with _Phases(_Progress(0, not quiet)):
            lines = plan(cfg, base_dir)
        for line in lines:
            click.echo(line)
        cost = config_cost(config)
        click.echo(f"output: {out}" + (" (exists: --force would replace it)" if os.path.exists(out) else ""))
        if cost:
            click.echo(f"cost: {cost}")
        return
    if sweep is None:
        cfg = experiments.validate(raw)
        _check_writable(out, force)
        _run_one(cfg, dumps(raw) if sets else text, out, base_dir, quiet, limit)
        return
    if not isinstance(sweep, dict) or not sweep or not all(isinstance(v, list) and v for v in sweep.values()):
        raise UserError('sweep must be a table of "key.path" = [value, ...] with non-empty arrays')
    combos = []
    for values in itertools.product(*sweep.values()):
        one = copy.deepcopy(raw)
        for k, v in zip(sweep, values):
            set_path(one, k, v)
        cfg = experiments.validate(one)                   # every combination is checked before any runs
        tag = "_".join(f"{k.split('.')[-1]}={_safe(v)}" for k, v in zip(sweep, values))
        combos.append((cfg, one, os.path.splitext(out)[0] + f"_{tag}.h5", tag))
    paths = [c[2] for c in combos]
    dup = next((p for p in paths if paths.count(p) > 1), None)
    if dup is not None:
        raise UserError(f"sweep: two combinations would write the same file {dup}; remove repeated values")
    for _, _, path, _ in combos:
        _check_writable(path, force)
    for cfg, one, path, tag in combos:
        if not quiet:
            click.echo(f"== sweep: {tag} -> {path}")
        _run_one(cfg, dumps(one), path, base_dir, quiet, limit)


def _safe(v):
    """A sweep value as part of a file name (no path separators or odd characters)."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(v))


def _run_one(cfg, text, out, base_dir, quiet, max_memory=None):
    quiet = quiet or world().rank > 0
    prog = _Progress(0, not quiet)
    try:
        with _Phases(prog):
            execute(cfg, text, out, progress=prog, base_dir=base_dir, max_memory=max_memory, exit_on_signal=True)
    except Interrupted as e:
        click.echo(("\n" if e.started else "") + interrupted_line(out, e.started, e.signum), err=True)
        sys.exit(e.exit_code)
    _finish(out, cfg, quiet)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--quiet", is_flag=True)
@click.option("--max-memory", default=None, help="as for run")
@_user_errors
def resume(path, quiet, max_memory):
    """Continue the run whose trajectory is PATH from its last checkpoint (a run stopped
    while computing its end-of-run values computes them)."""
    if not os.path.exists(path):
        raise UserError(f"no such trajectory: {path}")
    quiet = quiet or world().rank > 0
    start = read_start(path)
    cfg = experiments.validate(loads(start["config"], "the checkpoint's config"))
    n_total = experiments.get(cfg["estimator"]).steps(cfg)
    try:
        with open_run(path) as r:
            has_results = bool(r.results)
    except ValueError as e:
        raise UserError(f"cannot resume: {e}") from None
    if start["step"] >= n_total and has_results:     # a run stopped while computing them has none
        raise UserError(f"{path} is already complete ({start['step']} of {n_total} steps)")
    prog = _Progress(start["step"], not quiet)
    try:
        with _Phases(prog):
            execute(cfg, start["config"], path, start=start, progress=prog, exit_on_signal=True,
                    max_memory=None if max_memory is None else parse_bytes(max_memory, "--max-memory"))
    except Interrupted as e:
        click.echo(("\n" if e.started else "") + interrupted_line(path, e.started, e.signum, resumed=True), err=True)
        sys.exit(e.exit_code)
    _finish(path, cfg, quiet)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@_user_errors
def repair(path):
    """Rewrite a trajectory whose run was killed (SIGKILL, power loss) into a clean
    file that plain h5py opens, keeping every committed frame."""
    with output_lock(path):                # not while a run writes it
        counts = _repair(path)
    click.echo(f"{path}: " + ", ".join(f"{k}: {v} frames" for k, v in counts.items()))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--stats", is_flag=True, help="also print tau, ESS and split R-hat per coordinate")
@_user_errors
def inspect(path, stats):
    """Ensembles, frames, observables and results of a trajectory, as a table."""
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
        click.echo("statistics of the frames after the warm-up (the second half when no move adapts); frames "
                   "are draws, particles are chains.")
        click.echo("split R-hat asks every chain to have mixed on its own; with many short chains, or chains "
                   "that cannot cross between modes, read nested R-hat instead (Margossian et al. 2024): it "
                   "compares superchains (contiguous groups of chains; with auto_warmup each is an independent "
                   f"annealing run) and should be below {RHAT_NESTED_MAX}.")
        for name, (first, rows, warns) in analysis_summary(path).items():
            click.echo(f"{name}: draws from step {first}")
            click.echo(f"{'coord':>5} {'mean':>11} {'sd':>10} {'ess_bulk':>10} {'ess_tail':>10} {'rhat':>8} "
                       f"{'rhat_nested':>11}")
            for j, m, sd, bulk, tail, rh, nrh in rows:
                click.echo(f"{j:>5} {m:>11.4f} {sd:>10.4f} {bulk:>10.1f} {tail:>10.1f} {rh:>8.4f} {nrh:>11.4f}")
            for w in warns:
                click.echo(f"warning: {name}: {w}", err=True)


def figure_path(trajectory):
    """A run's own figure: the trajectory's name with .png, or with .png appended when
    the trajectory's name already ends in .png (never the trajectory itself)."""
    png = os.path.splitext(trajectory)[0] + ".png"
    return trajectory + ".png" if os.path.abspath(png) == os.path.abspath(trajectory) else png


def _needs_matplotlib():
    if importlib.util.find_spec("matplotlib") is None:        # the optional 'plot' extra
        raise UserError("plotting needs matplotlib: pip install 'particleflow[plot]'")


def _write_figure(png, draw):
    """``draw(tmp)`` into a temporary file beside ``png``, then moved over it: an existing
    figure is replaced only by a complete one."""
    tmp = temporary_beside(png, ".png")
    try:
        draw(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, png)
    return png


def _plot(path, png, what="figure"):
    with open_run(path) as r:
        if not any(len(e.steps) for e in r.ensembles.values()) and not any(len(o.steps) for o in r.observables.values()):
            raise UserError(f"{path} has no committed frames or observables to plot yet")
        _needs_matplotlib()
        exp = experiments.get(r.parameters.get("estimator", "sample"))
        return _write_figure(png, lambda tmp: exp.plot(r, tmp) if what == "figure" else figures.draw(r, tmp, what))


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", default=None, help="PNG path (default: PATH with .png; several runs: FIRST_overlay.png)")
@click.option("--force", is_flag=True, help="overwrite an existing --out file")
@click.option("--what", type=click.Choice(("figure",) + figures.WHAT), default="figure", show_default=True,
              help="figure: the experiment's own; ensembles: last frames (2-D over exp(-E) contours, "
                   "image grids); traces: observables that change; all: both")
@_user_errors
def plot(paths, out, force, what):
    """Draw a trajectory: by default the experiment's figure (2-D runs: the density
    exp(-E) with the particles over it and the observables that change; the paper
    experiments: their figures).  The default output PATH.png is the run's own figure
    and is replaced; any other existing file needs --force.  Several PATHs: their
    observables overlaid, one line per run, labelled by what differs between their
    configs (dual vs primal, a sweep)."""
    if len(paths) > 1:
        for p in paths:
            if not os.path.exists(p):
                raise UserError(f"no such trajectory: {p}")
        png = out or os.path.splitext(paths[0])[0] + "_overlay.png"
        _check_writable(png, force)
        _needs_matplotlib()
        with contextlib.ExitStack() as stack:
            runs = [stack.enter_context(open_run(p)) for p in paths]
            click.echo(_write_figure(png, lambda tmp: figures.overlay(runs, [os.path.basename(p) for p in paths], tmp)))
        return
    path = paths[0]
    default = figure_path(path)
    png = out or default
    if os.path.abspath(png) == os.path.abspath(path):
        raise UserError(f"--out {png} is the trajectory itself; give the figure another name")
    _check_writable(png, force or os.path.abspath(png) == os.path.abspath(default))
    click.echo(_plot(path, png, what))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=click.Choice(["netcdf"]), default="netcdf", show_default=True,
              help="output format (ArviZ's InferenceData as netCDF)")
@click.option("--ensemble", default=None, help="the ensemble to export (default: the only one that moves)")
@click.option("--first-frame", type=click.IntRange(0), default=0, help="drop the frames before this one (warm-up)")
@click.option("--no-lp", is_flag=True, help="do not evaluate -E at every draw")
@click.option("--compress", is_flag=True, help="zlib-compress the variables (smaller, slower)")
@click.option("--force", is_flag=True, help="overwrite an existing OUT")
@_user_errors
def export(path, out, fmt, ensemble, first_frame, no_lp, compress, force):
    """Export a trajectory for ArviZ / xarray: particles as chains, frames as draws
    (needs the 'arviz' extra)."""
    if not os.path.exists(path):
        raise UserError(f"no such trajectory: {path}")
    import_arviz()
    _check_writable(out, force, "OUT")
    click.echo(export_netcdf(path, out, ensemble, first_frame, lp=not no_lp, compress=compress,
                             energy=experiments.load_energy))


@cli.command(name="eval")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--ensemble", default=None, help="the ensemble to evaluate (default: the only one that moves)")
@click.option("--frame", type=int, default=-1, show_default=True, help="the frame (negative: from the end)")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="held-out draws (.npy, [m, ...]); default: exact draws of the energy when it has a sampler")
@click.option("--max-points", type=click.IntRange(10, 20000), default=2000, show_default=True,
              help="samples used by the kernel statistics (their cost grows as its square)")
@click.option("--png", default=None, help="also draw the energy histograms of samples and reference")
@click.option("--force", is_flag=True, help="overwrite an existing --png file")
@_user_errors
def eval_(path, ensemble, frame, reference, max_points, png, force):
    """Sample quality of a run's ensemble against its energy: kernel Stein discrepancy,
    MMD and energy histograms against reference draws, mass per mode of a mixture."""
    if not os.path.exists(path):
        raise UserError(f"no such trajectory: {path}")
    ref = None
    if reference is not None:
        if not os.path.exists(reference):
            raise UserError(f"--reference: no such file {reference}")
        try:
            ref = np.load(reference, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"--reference: cannot read {reference} as a .npy array ({err})") from None
        if ref.dtype.kind not in "fiu" or ref.ndim < 2 or ref.shape[0] < 2:
            raise UserError(f"--reference: {reference} must hold real numbers of shape (m, ...) with m >= 2 draws; "
                            f"got {ref.dtype} {ref.shape}")
    if png is not None:
        _check_writable(png, force, "--png")
    with open_run(path) as r:
        ev = evaluate_run(r, experiments.load_energy, ensemble, frame, ref, max_points=max_points)
    click.echo(f"{path}: ensemble {ev['ensemble']}, frame {frame}")
    for key, value, note in ev["rows"]:
        click.echo(f"  {key:<24} {value:>12.6g}   {note}")
    if png is not None:
        click.echo(figures.energy_histograms(ev["samples"], ev["reference"], ev["energy"], png))


@cli.command(name="list")
def list_():
    """Experiments and the configs in runs/."""
    click.echo("experiments (estimator = ...):")
    for name, exp in experiments.REGISTRY.items():
        click.echo(f"  {name:<16} {exp.description}")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.path.join(os.getcwd(), "runs"), os.path.join(here, "runs")):
        files = sorted(glob.glob(os.path.join(d, "*.toml")))
        if files:
            click.echo(f"configs in {d}:")
            width = max(len(os.path.basename(f)) for f in files)
            for f in files:
                click.echo(f"  {os.path.basename(f):<{width}}  {config_cost(f)}".rstrip())
            break


def config_cost(path):
    """The ``# cost: ...`` line of a config (its measured time on 2 cores), or ''."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("# cost:"):
                    return line[len("# cost:"):].strip()
    except OSError:
        pass
    return ""


@cli.command()
@click.option("--n", "n_particles", default=200_000, show_default=True, help="number of chains")
@click.option("--steps", default=500, show_default=True, help="MALA steps per chain")
@click.option("--step-size", default=0.3, show_default=True, help="MALA step size")
@click.option("--seed", type=click.IntRange(0, 2 ** 32 - 1), default=0, show_default=True, help="seed in [0, 2**32)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@_user_errors
def demo(n_particles, steps, step_size, seed, dtype):
    """Sample a 2-D 6-component Gaussian mixture with MALA chains (no files written)."""
    if n_particles < 1 or steps < 1:
        raise UserError("--n and --steps must be >= 1")
    check_memory(n_particles * 2 * np.dtype(dtype).itemsize * 12)
    mix = energies.GaussianMixture(energies.ring_means(6, 3.0), scale=1.0)
    move = moves.MALA(mix, step_size)
    x0 = np.random.default_rng(seed).standard_normal((n_particles, 2)).astype(dtype)
    sim = Simulation({"chains": Ensemble(x0)}, seed=seed).schedule(move, "chains", name="mala")
    sim.observe_moves(every=1)
    sim.run(1)                     # compiles the kernel
    t0 = time.perf_counter()
    if steps > 1:
        sim.run(steps - 1)
    dt = time.perf_counter() - t0
    x = sim.ensembles["chains"].x.astype(np.float64)
    acc = sim.recorder.observables["mala/acceptance"].values
    click.echo(f"MALA on a 6-component mixture: {n_particles} chains x {steps} steps ({dtype})")
    click.echo(f"  acceptance           {acc[-50:].mean():.3f}")
    click.echo(f"  mean     sampled {np.array2string(x.mean(0), precision=3)}   exact [0. 0.]")
    click.echo(f"  cov diag sampled {np.array2string(np.diag(np.cov(x.T)), precision=3)}   exact [5.5 5.5]")
    if steps > 1:
        click.echo(f"  throughput           {n_particles * (steps - 1) / dt:.3g} particle-steps/s")


def main(argv=None):
    """Entry point: user errors and click's own errors (bad options or arguments: one
    ``error:`` line naming the command's --help) exit 2; particleflow's warnings are one
    ``warning:`` line; Ctrl-C before a run's signal handling is installed exits 130 with
    one line; anything unexpected is an internal error (exit 1) with a one-line
    summary (``PARTICLEFLOW_DEBUG=1`` shows the traceback)."""
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (ConvergenceWarning, KernelCacheWarning)):     # one line, as every message
            if not world().rank:
                click.echo(f"warning: {message}", err=True)
        else:
            default_show(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        cli.main(args=argv, prog_name="particleflow", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:                 # a bad option or argument: one line, as every user error
        where = e.ctx.command_path if e.ctx is not None else "particleflow"
        click.echo(f"error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted before the run started; nothing was written", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated (SIGTERM); a run's file is written only once it has started, and a finished "
                   "run's file is complete", err=True)
        sys.exit(143)
    except Exception as e:  # internal error
        click.echo(f"internal error: {type(e).__name__}: {e} (please report it)", err=True)
        if os.environ.get("PARTICLEFLOW_DEBUG"):
            raise
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
