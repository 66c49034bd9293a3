"""The generic figure of a trajectory: what ``particleflow plot RUN.h5 --what ...`` draws
for any run, and the figure of experiments that have no picture of their own.

Panels, chosen by ``what``:

* ``ensembles``: the last frame of every ensemble that has one.
  - 2-D positions: filled contours of exp(-E) (the run's energy, rebuilt from the
    file; normalised on the plotted window) with the particles over it (at most 5000,
    a fixed random subset);
  - 1-D: a histogram with exp(-E) normalised on the plotted range over it;
  - images ([n, H, W] or [n, C, H, W] per frame): a grid of the first 64;
  - other dimensions: the first two coordinates;
  - a single particle (e.g. a parameter vector): a bar chart of its coordinates;
  - an ensemble moved by parallel tempering: its beta = 1 rows only.
* ``traces``: every scalar observable against steps.  An observable that never
  changes (e.g. the ESS of an unweighted ensemble) gets no panel: it is listed in one
  line under the figure instead.
* ``all``: both.
"""
import numpy as np

from ..analysis import replica_groups
from .registry import load_energy
from .common import pyplot, save

WHAT = ("all", "ensembles", "traces")
MAX_POINTS = 5000
GRID = 200


def _constant(v):
    v = np.asarray(v, np.float64)
    if not np.all(np.isfinite(v)):
        return False
    return float(np.ptp(v)) <= 1e-12 * max(1.0, float(np.abs(v).max()))


def traces(run):
    """(changing observables {name: Observable}, constant ones {name: value})."""
    changing, constant = {}, {}
    for k, o in sorted(run.observables.items()):
        if not len(o.steps):
            continue
        v = o.values
        if np.ndim(v) != 1:
            continue
        if len(v) > 1 and _constant(v):
            constant[k] = v[0]
        else:
            changing[k] = o
    return changing, constant


def _energy(run):
    try:
        return load_energy(run)
    except (ValueError, KeyError, OSError):    # an energy that cannot be rebuilt: drawn without it
        return None


def _window(x, pad=0.15):
    lo, hi = np.percentile(x, [0.5, 99.5], axis=0)
    span = np.maximum(hi - lo, 1e-6)
    return lo - pad * span, hi + pad * span


def density_panel(ax, energy, pts, title):
    """Filled contours of exp(-E) on the window of ``pts`` [n, 2], ``pts`` over them."""
    lo, hi = _window(pts)
    half = max(hi - lo) / 2
    mid = (lo + hi) / 2
    lo, hi = mid - half, mid + half                 # square window: equal aspect
    if energy is not None:
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
        grid = np.stack([gx.ravel(), gy.ravel()], 1)       # in the positions' dtype (networks' own)
        e = np.asarray(energy.value(grid.astype(pts.dtype)), np.float64)
        p = np.exp(-(e - np.nanmin(e))).reshape(GRID, GRID)
        p /= p.sum() * ((hi[0] - lo[0]) / (GRID - 1)) * ((hi[1] - lo[1]) / (GRID - 1))
        cs = ax.contourf(gx, gy, p, levels=12, cmap="Blues")
        ax.figure.colorbar(cs, ax=ax, fraction=0.046, pad=0.04, label="exp(-E) / Z (window)")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="tab:orange", linewidths=0)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x_0")
    ax.set_ylabel("x_1")
    ax.set_title(title, fontsize=9)


def histogram_panel(ax, energy, x, title):
    ax.hist(x, bins=80, density=True, alpha=0.6, color="tab:orange")
    if energy is not None:
        lo, hi = _window(x[:, None])
        g = np.linspace(lo[0], hi[0], 400)
        e = np.asarray(energy.value(g[:, None].astype(x.dtype)), np.float64)
        p = np.exp(-(e - e.min()))
        p /= p.sum() * (g[1] - g[0])
        ax.plot(g, p, color="tab:blue", label="exp(-E) / Z")
        ax.legend(fontsize=7)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)


WORDS = {"acceptance": "acceptance rate", "mean_energy": "mean energy E", "ess": "effective sample size",
         "lr": "learning rate", "step_size": "step size", "restart_fraction": "fraction restarted",
         "mean_weight": "mean weight", "kl": "KL(teacher || student)", "sm": "score-matching gap",
         "tv": "total variation", "loss": "loss", "log_z": "log Z"}


def trace_words(name):
    """(title, y label) of an observable ``slot/key`` (or ``key``) in words."""
    slot, _, key = name.rpartition("/")
    word = WORDS.get(key, key.replace("_", " "))
    return (f"{word} ({slot})" if slot else word), word


def trace_panel(ax, steps, values, name):
    """An observable against the step, labelled in words; a trace that varies by less
    than 2 % of its size keeps a y range of +-1 % around it, so that rounding noise does
    not fill the panel."""
    ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3)
    title, ylabel = trace_words(name)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size:
        lo, hi = float(v.min()), float(v.max())
        size = max(abs(lo), abs(hi))
        if size > 0 and hi - lo < 0.02 * size:
            ax.set_ylim(lo - 0.01 * size, hi + 0.01 * size)


def image_grid(images, side=8):
    """[n, H, W] or [n, C, H, W] -> one [side * H, side * W(, C)] image in [0, 1]."""
    a = np.asarray(images[:side * side], np.float64)
    if a.ndim == 4:
        a = np.moveaxis(a, 1, -1)
        if a.shape[-1] == 1:
            a = a[..., 0]
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    n, h, w = a.shape[:3]
    rows = -(-n // side)
    out = np.ones((rows * (h + 1), side * (w + 1)) + a.shape[3:])
    for i in range(n):
        r, c = divmod(i, side)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = a[i]
    return out


def ensemble_panels(run):
    """[(kind, name, last frame, step)] for every ensemble with committed frames."""
    out = []
    for name, e in run.ensembles.items():
        if not len(e.steps):
            continue
        groups = replica_groups(run, name)
        last = np.asarray(e.positions[-1])[::groups]          # parallel tempering: the beta = 1 rows
        kind = ("image" if last.ndim in (3, 4) and len(last) > 1
                else "vector" if len(last) == 1 or last.ndim > 4
                else "density" if last.ndim == 2 and last.shape[1] == 2
                else "histogram" if last.ndim == 2 and last.shape[1] == 1 else "scatter")
        out.append((kind, name if groups == 1 else f"{name} (beta = 1 rows)", last, int(e.steps[-1])))
    return out


def draw(run, png, what="all"):
    """Draw the panels ``what`` picks (see the module docstring) into ``png``."""
    plt = pyplot()
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}; got {what!r}")
    ens = ensemble_panels(run) if what in ("all", "ensembles") else []
    changing, constant = traces(run) if what in ("all", "traces") else ({}, {})
    n = len(ens) + len(changing)
    if n == 0:
        raise ValueError(f"{run.path} has nothing to draw for --what {what}")
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    axes = list(axes.ravel())
    energy = _energy(run) if any(k in ("density", "histogram") for k, *_ in ens) else None
    rng = np.random.default_rng(0)
    for (kind, name, last, step), ax in zip(ens, axes):
        title = f"{name}: step {step}"
        if kind == "image":
            ax.imshow(image_grid(last), cmap="gray")
            ax.axis("off")
            ax.set_title(f"{title}, first {min(64, len(last))} samples", fontsize=9)
            continue
        pts = last.reshape(len(last), -1)
        if kind == "vector":                # one particle (a parameter vector): its coordinates
            v = pts[0][:200]
            ax.bar(np.arange(v.size), v, width=1.0)
            ax.set_xlabel("coordinate")
            ax.set_ylabel("value")
            ax.set_title(f"{title}: the {'first 200 ' if pts.shape[1] > 200 else ''}coordinates of its one "
                         "particle" if len(pts) == 1 else f"{title}: first particle", fontsize=9)
            continue
        pts = pts[rng.permutation(len(pts))[:MAX_POINTS]] if len(pts) > MAX_POINTS else pts
        if kind == "density":
            density_panel(ax, energy, pts, title + (", over exp(-E)" if energy is not None else ""))
        elif kind == "histogram":
            histogram_panel(ax, energy, pts[:, 0], title)
        else:
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.set_xlabel("x_0")
            ax.set_ylabel("x_1")
            ax.set_title(f"{title} (coordinates 0 and 1 of {pts.shape[1]})", fontsize=9)
    for (k, o), ax in zip(changing.items(), axes[len(ens):]):
        trace_panel(ax, o.steps, o.values, k)
    for ax in axes[n:]:
        ax.axis("off")
    if constant:
        line = "constant over the run: " + ", ".join(f"{trace_words(k)[0]} = {float(v):.6g}"
                                                     for k, v in constant.items())
        fig.text(0.01, 0.005, line, fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.04 if constant else 0, 1, 1))
    return save(fig, png, tight=False)


def energy_histograms(samples, reference, energy, png):
    """Histograms of E over the samples and over the reference draws (when given)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    e_x = np.asarray(energy.value(samples), np.float64)
    vals = [e_x]
    if reference is not None:
        vals.append(np.asarray(energy.value(np.asarray(reference).reshape((len(reference),)
                                                                          + samples.shape[1:]).astype(samples.dtype)),
                               np.float64))
    bins = np.histogram_bin_edges(np.concatenate(vals), bins=60)
    ax.hist(e_x, bins=bins, density=True, alpha=0.6, label=f"samples ({len(e_x)})")
    if reference is not None:
        ax.hist(vals[1], bins=bins, density=True, histtype="step", lw=1.5, color="k",
                label=f"reference ({len(vals[1])})")
    ax.set_xlabel("E(x)")
    ax.legend(fontsize=8)
    return save(fig, png)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_labels(runs, names):
    """One legend label per run: the config keys whose values differ between the runs
    (``dual.alpha=20``), else the file names."""
    flat = [_flat(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if len({repr(g.get(k)) for g in flat}) > 1} - {"output.plot"})
    if not keys or not all(flat):
        return list(names)
    return [", ".join(f"{k}={f.get(k)}" for k in keys[:3]) for f in flat]


def overlay(runs, names, png):
    """The observables of several runs in shared panels, one line per run (legend: what
    differs between their configs)."""
    plt = pyplot()
    labels = run_labels(runs, names)
    keys = sorted({k for r in runs for k in traces(r)[0]})
    if not keys:
        raise ValueError("the runs have no observable that changes over the run to overlay")
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    axes = list(axes.ravel())
    for key, ax in zip(keys, axes):
        for r, label in zip(runs, labels):
            if key in r.observables and len(r.observables[key].steps):
                o = r.observables[key]
                ax.plot(o.steps, o.values, label=label)
        title, ylabel = trace_words(key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    for ax in axes[len(keys):]:
        ax.axis("off")
    return save(fig, png)
