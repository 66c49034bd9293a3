"""``estimator = "sample"``: the engine's generic sampler (``runs/demo.toml``).

    [run]        steps, seed, dtype
    [output]     every, checkpoint_every, compression, plot
    [energy]     kind = "gaussian" (mean, precision) | "gaussian_mixture"
                 (means or ring_components/ring_radius, scale or covariances, weights),
                 or from_run = "a run file": the energy that run saved (a trained network),
                 or python = "file.py:function": your own energy (an Energy, or a callable
                 x -> (E, grad E) with energy.dim),
                 or [[energy.terms]] tables of those with a weight each (their weighted sum);
                 temperature = T samples exp(-E / T)
    [ensembles.<name>]  n, init = "normal" | "zeros" | "file", init_scale, file, dim
    [[schedule]] move = langevin | mala | hmc | parallel_tempering | independent_mh | resample |
                 reweight | restart | reinitialize, ensemble, every, name, and the move's keys
                 (one declaration per move: ``MOVES``)

Observables every ``output.every`` steps: ``<ensemble>/mean``, ``<ensemble>/ess`` and
every move's statistics ``<slot>/<key>``; frames of every ensemble at the same
cadence.  Results: ``<ensemble>/final_mean``.
"""
import importlib.util
import os
import sys

import numpy as np

from .. import energies, moves
from ..config import ConfigError, Field, output_section, positive, run_section, table
from ..ensemble import Ensemble
from ..analysis.metrics import diagnose_run
from ..io.h5md import open_run
from ..random import Purpose, Stream, StreamBlock
from .registry import load_energy
from ..simulation import ENSEMBLE_NAME, Simulation
from .base import Experiment

ENERGY = {"kind": Field("str", None, choices=("gaussian", "gaussian_mixture"), doc="energy family"),
          "terms": Field("list", None, doc="instead of kind: [[energy.terms]] tables (each an energy as this "
                                          "table describes, with a weight): the sum of weight * E"),
          "temperature": positive(None, doc="sample exp(-E / T) (any energy; default 1)"),
          "from_run": Field("str", None, doc="instead of kind: the saved energy of a run file "
                                             "(relative to the config), e.g. a trained DEEN"),
          "python": Field("str", None, doc="instead of kind: 'file.py:function' (file relative to the config); "
                                           "the function, called with no arguments, returns an Energy or a "
                                           "callable x [n, d] -> (E [n], grad E [n, d]). This runs your code, "
                                           "as running the file with python would"),
          "dim": Field("int", None, lo=1, doc="python: the dimension, when the function returns a callable"),
          "mean": Field("list", None, doc="gaussian: mean vector"),
          "precision": Field("list", None, doc="gaussian: precision matrix (symmetric positive definite)"),
          "means": Field("list", None, doc="gaussian_mixture: component means [K][d]"),
          "ring_components": Field("int", None, lo=1, hi=100000, doc="gaussian_mixture: K means on a circle (2-D)"),
          "ring_radius": positive(None, doc="radius of the ring of means"),
          "scale": Field("float", None, lo=0, lo_open=True, doc="isotropic component standard deviation"),
          "covariances": Field("list", None, doc="full component covariances [K][d][d]"),
          "weights": Field("list", None, doc="component weights (normalised; default equal)")}
TERM = {k: v for k, v in ENERGY.items() if k != "terms"} | {
    "weight": Field("float", 1.0, doc="the term's factor in the sum")}
ENSEMBLE = {"n": Field("int", lo=1, doc="number of particles"),
            "init": Field("str", "normal", choices=("normal", "zeros", "file"), doc="initial positions"),
            "init_scale": positive(1.0, doc="standard deviation of normal initial positions"),
            "file": Field("str", None, doc="init = 'file': a .npy array [n, d] (relative to the config)"),
            "dim": Field("int", None, lo=1, doc="optional check against the energy's dimension")}
ADAPT = {"warmup": Field("int", 0, lo=0, doc="calls that adapt h to target_acceptance (dual averaging)"),
         "adapt_mass": Field("str", "none", choices=("none", "diag", "dense"),
                             doc="warmup > 0: also adapt the preconditioner to the ensemble's covariance"),
         "adapt_per_chain": Field("bool", False, doc="warmup > 0: one step size per particle"),
         "auto_warmup": Field("bool", False, doc="the automatic warm-up (moves.AutoWarmup): anneal from a "
                              "Gaussian fitted to the ensemble's initial positions to the target, then tune "
                              "step size, dense mass (and HMC's trajectory length) for `warmup` calls "
                              "(default 300); the slot reports beta, log_z, n_stuck, gradients"),
         "superchains": Field("int", 4, lo=1, doc="auto_warmup: independent annealing groups (the superchains "
                              "of nested R-hat)")}


def _adapted(kind, mv, s):
    """``mv`` wrapped in the warm-up adaptation its slot asks for."""
    mass = None if s["adapt_mass"] == "none" else s["adapt_mass"]
    if mass and not s["warmup"]:
        raise ConfigError(f"{kind}: adapt_mass = {s['adapt_mass']!r} needs warmup > 0 (the calls that adapt)")
    if mass and s.get("mass") is not None:
        raise ConfigError("hmc: adapt_mass replaces the fixed mass; drop one of mass and adapt_mass")
    trajectory = None if s.get("adapt_trajectory", "none") == "none" else s["adapt_trajectory"]
    if s["auto_warmup"]:
        if mass or trajectory or s["adapt_per_chain"] or s.get("mass") is not None:
            raise ConfigError(f"{kind}: auto_warmup adapts the step size, a dense mass and (HMC) the trajectory "
                              "length itself; drop adapt_mass, adapt_per_chain, adapt_trajectory and mass")
        return moves.AutoWarmup(mv, tune=s["warmup"] or 300, target=s["target_acceptance"],
                                groups=s["superchains"])
    if (s["adapt_per_chain"] or trajectory) and not s["warmup"]:
        raise ConfigError(f"{kind}: adapt_per_chain and adapt_trajectory need warmup > 0 (the calls that adapt)")
    if not s["warmup"]:
        return mv
    return moves.AdaptStepSize(mv, s["target_acceptance"], s["warmup"], mass=mass,
                               per_chain=s["adapt_per_chain"], trajectory=trajectory)


def _gaussian_proposal(s, d):
    mean = np.zeros(d) if s["proposal_mean"] is None else np.asarray(s["proposal_mean"], dtype=float)
    if mean.shape != (d,) or not np.isfinite(mean).all():
        raise ConfigError(f"proposal_mean must be a list of {d} finite numbers; got {s['proposal_mean']!r:.80}")
    return energies.Gaussian(mean, np.eye(d) / s["proposal_scale"] ** 2)


def _ladder(s):
    if (s["betas"] is None) == (s["n_temperatures"] is None):
        raise ConfigError("parallel_tempering needs exactly one of betas (a list decreasing from 1.0) and "
                          "n_temperatures (with beta_min: a geometric ladder)")
    if s["betas"] is not None:
        return s["betas"]
    return moves.geometric_ladder(s["n_temperatures"], s["beta_min"])


def _base(s):
    if s["base"] == "uniform":
        if not s["hi"] > s["lo"]:
            raise ConfigError(f"reinitialize: hi must be above lo; got lo = {s['lo']}, hi = {s['hi']}")
        return moves.UniformBox(s["lo"], s["hi"])
    return moves.GaussianBase(s["mean"], s["std"])


class MoveSpec:
    """One declaration per move: its config keys (validated by ``config.table``) and how
    a validated slot builds it, ``build(slot, energy, sim) -> Move``."""

    def __init__(self, doc, fields, build):
        self.doc, self.fields, self.build = doc, fields, build


MOVES = {
    "langevin": MoveSpec(
        "unadjusted Langevin (Euler-Maruyama on grad E)",
        {"step_size": positive(doc="h"), "temperature": positive(1.0, doc="T"),
         "noise_scale": Field("float", None, lo=0, doc="noise sd (default sqrt(2 h T))")},
        lambda s, e, sim: moves.Langevin(e, s["step_size"], noise_scale=s["noise_scale"],
                                         temperature=s["temperature"])),
    "mala": MoveSpec(
        "Metropolis-adjusted Langevin",
        {"step_size": positive(doc="h (the initial value when warmup > 0)"),
         "target_acceptance": Field("float", 0.57, lo=0, lo_open=True, hi=1, doc="warm-up target")} | ADAPT,
        lambda s, e, sim: _adapted("mala", moves.MALA(e, s["step_size"]), s)),
    "hmc": MoveSpec(
        "Hamiltonian Monte Carlo (leapfrog)",
        {"step_size": positive(doc="leapfrog step (the initial value when warmup > 0)"),
         "n_leapfrog": Field("int", lo=1, doc="leapfrog steps"),
         "mass": Field("float", None, lo=0, lo_open=True, doc="scalar mass (default 1)"),
         "jitter": Field("float", 0.0, lo=0, hi=0.99, doc="step size drawn from h (1 +- jitter) each step"),
         "target_acceptance": Field("float", 0.7, lo=0, lo_open=True, hi=1, doc="warm-up target")} | ADAPT |
        {"adapt_trajectory": Field("str", "none", choices=("none", "chees"),
                                   doc="warmup > 0: adapt the trajectory length h L (ChEES; n_leapfrog starts it)")},
        lambda s, e, sim: _adapted("hmc", moves.HMC(e, s["step_size"], s["n_leapfrog"], mass=s["mass"],
                                                    jitter=s["jitter"]), s)),
    "parallel_tempering": MoveSpec(
        "MALA on groups of replicas at inverse temperatures betas, with neighbour swaps "
        "(ensemble n a multiple of the number of temperatures; row 0 of each group is the target)",
        {"step_size": positive(doc="MALA step h at beta = 1 (h / beta at the others)"),
         "betas": Field("list", None, doc="inverse temperatures decreasing from 1.0"),
         "n_temperatures": Field("int", None, lo=2, hi=1000, doc="instead of betas: a geometric ladder"),
         "beta_min": Field("float", 0.1, lo=0, lo_open=True, hi=1, doc="the ladder's hottest beta")},
        lambda s, e, sim: moves.ParallelTempering(e, _ladder(s), s["step_size"])),
    "independent_mh": MoveSpec(
        "independence Metropolis-Hastings with a Gaussian proposal N(mean, s^2 I)",
        {"proposal_scale": positive(doc="s"),
         "proposal_mean": Field("list", None, doc="proposal mean (default 0)")},
        lambda s, e, sim: moves.IndependentMH(e, _gaussian_proposal(s, e.dim))),
    "resample": MoveSpec(
        "resampling of a weighted ensemble (fresh ids)",
        {"scheme": Field("str", "systematic", choices=("multinomial", "residual", "stratified", "systematic"),
                         doc="resampling scheme"),
         "ess_threshold": Field("float", None, lo=0, lo_open=True, hi=1,
                                doc="resample when ESS < threshold * n (default: always)")},
        lambda s, e, sim: moves.Resample(s["scheme"], s["ess_threshold"])),
    "reweight": MoveSpec(
        "importance weights of particles drawn from N(0, s^2 I)",
        {"proposal_scale": positive(doc="the particles are draws of N(0, s^2 I): log w += E_q - E")},
        lambda s, e, sim: moves.Reweight(e, energies.Gaussian(np.zeros(e.dim), np.eye(e.dim) / s["proposal_scale"] ** 2))),
    "restart": MoveSpec(
        "replace particles by copies of another ensemble's, with a probability per particle",
        {"source": Field("str", doc="ensemble to restart from"),
         "probability": Field("float", lo=0, hi=1, doc="restart probability per particle and step")},
        lambda s, e, sim: moves.Restart(sim.ensembles[s["source"]], s["probability"])),
    "reinitialize": MoveSpec(
        "redraw particles from a base distribution, with a probability per particle",
        {"probability": Field("float", lo=0, hi=1, doc="redraw probability per particle and step"),
         "base": Field("str", "uniform", choices=("uniform", "gaussian"), doc="base distribution"),
         "lo": Field("float", -1.0, doc="uniform: lower bound of every coordinate"),
         "hi": Field("float", 1.0, doc="uniform: upper bound"),
         "mean": Field("float", 0.0, doc="gaussian: mean of every coordinate"),
         "std": positive(1.0, doc="gaussian: standard deviation")},
        lambda s, e, sim: moves.Reinitialize(_base(s), s["probability"])),
}
# moves that reorder or replace rows: they would scramble parallel tempering's replica groups
ROW_MOVES = ("parallel_tempering", "resample", "reweight", "restart", "reinitialize")
SLOT = {"move": Field("str", choices=tuple(MOVES), doc="the move"),
        "ensemble": Field("str", doc="the ensemble it moves"),
        "every": Field("int", 1, lo=1, doc="run every this many steps"),
        "name": Field("str", None, doc="slot name (default <move>_<index>)")}


def _array(e, key, ndim):
    """energy.<key> as a float array of ``ndim`` dimensions, or a ConfigError naming it."""
    try:
        a = np.asarray(e[key], dtype=float)
    except (ValueError, TypeError):
        a = None
    if a is None or a.ndim != ndim:
        shape = {1: "[d]", 2: "[K][d] or [d][d]", 3: "[K][d][d]"}[ndim]
        raise ConfigError(f"energy.{key} must be an array of numbers of shape {shape} with rows of equal length; "
                          f"got {e[key]!r:.80}")
    if not np.isfinite(a).all():
        raise ConfigError(f"energy.{key} contains NaN or Inf")
    return a


def resolve_energy_path(e, base_dir):
    """energy.from_run (and every term's) made absolute (relative to the config)."""
    if e.get("from_run") and not os.path.isabs(e["from_run"]):
        e["from_run"] = os.path.normpath(os.path.join(base_dir, e["from_run"]))
    if e.get("python") and ":" in e["python"]:
        file, func = e["python"].rsplit(":", 1)
        if not os.path.isabs(file):
            e["python"] = os.path.normpath(os.path.join(base_dir, file)) + ":" + func
    for t in e.get("terms") or ():
        resolve_energy_path(t, base_dir)


def check_energy(e, where="energy"):
    """Validate a schema-checked [energy] table in place (its terms too)."""
    given = [k for k in ("kind", "from_run", "terms", "python") if e.get(k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where} needs exactly one of {where}.kind (gaussian, gaussian_mixture), "
                          f"{where}.from_run (a run file with a saved energy), {where}.terms (a sum) and "
                          f"{where}.python ('file.py:function'); got {', '.join(given) or 'none'}")
    if e.get("python") is not None:
        if ":" not in e["python"] or not all(e["python"].rsplit(":", 1)):
            raise ConfigError(f"{where}.python must be 'file.py:function'; got {e['python']!r:.80}")
        extra = [k for k, v in e.items() if k not in ("python", "dim", "temperature", "weight") and v is not None]
        if extra:
            raise ConfigError(f"{where}.python defines the energy; drop {where}.{extra[0]}")
        return
    if e.get("terms") is not None:
        if not e["terms"] or not all(isinstance(t, dict) for t in e["terms"]):
            raise ConfigError(f"{where}.terms must be a non-empty list of tables ([[{where}.terms]])")
        extra = [k for k, v in e.items() if k not in ("terms", "temperature") and v is not None]
        if extra:
            raise ConfigError(f"{where}.terms describes the energy; move {where}.{extra[0]} into a term")
        e["terms"] = [table(f"{where}.terms[{i}]", t, TERM) for i, t in enumerate(e["terms"])]
        for i, t in enumerate(e["terms"]):
            check_energy(t, f"{where}.terms[{i}]")
        return
    if e["kind"] is None and e["from_run"] is None:
        raise ConfigError(f"{where} needs energy.kind or energy.from_run")
    if e["kind"] == "gaussian" and (e["mean"] is None or e["precision"] is None):
        raise ConfigError(f"{where}.kind = 'gaussian' needs {where}.mean and {where}.precision")
    if e["kind"] == "gaussian_mixture" and (e["means"] is None) == (e["ring_components"] is None):
        raise ConfigError(f"{where}.kind = 'gaussian_mixture' needs exactly one of {where}.means "
                          f"or {where}.ring_components (with {where}.ring_radius)")
    if e["from_run"] is not None:
        extra = [k for k, v in e.items() if k not in ("kind", "from_run", "temperature", "weight")
                 and v is not None]
        if extra:
            raise ConfigError(f"{where}.from_run takes the energy from the run file; drop {where}.{extra[0]}")


def energy_from_run(path, run_dir=None):
    """The saved energy of the run file ``path`` (a relative path is tried from the
    current directory, then from ``run_dir``), or a ConfigError naming the file."""
    if not os.path.isabs(path) and not os.path.exists(path) and run_dir is not None:
        path = os.path.join(run_dir, path)
    if not os.path.exists(path):
        raise ConfigError(f"energy.from_run: no such file {path}")
    try:
        with open_run(path) as run:
            energy = load_energy(run)
    except (ValueError, KeyError, OSError) as err:
        raise ConfigError(f"energy.from_run: {path} has no energy to load ({err})") from None
    if getattr(energy, "dim", None) is None:
        raise ConfigError(f"energy.from_run: the energy of {path} declares no dimension")
    return energy


def energy_from_python(spec, dim=None, run_dir=None):
    """The energy that ``function()`` of ``file.py`` returns (``spec`` = 'file.py:function'):
    an ``Energy``, or a callable x -> (E, grad E) wrapped with dimension ``dim``.  The
    file runs as a script would (its directory first on ``sys.path`` while it loads);
    anything that goes wrong is one ConfigError naming the file and what to fix."""
    file, func = spec.rsplit(":", 1)
    if not os.path.isabs(file) and not os.path.exists(file) and run_dir is not None:
        file = os.path.join(run_dir, file)
    if not os.path.isfile(file):
        raise ConfigError(f"energy.python: no such file {file}")
    name = "particleflow_user_energy_" + os.path.splitext(os.path.basename(file))[0].replace("-", "_")
    spec_ = importlib.util.spec_from_file_location(name, file)
    if spec_ is None:
        raise ConfigError(f"energy.python: {file} is not a Python file (name it .py)")
    module = importlib.util.module_from_spec(spec_)
    sys.path.insert(0, os.path.dirname(os.path.abspath(file)))
    try:
        spec_.loader.exec_module(module)
        fn = getattr(module, func, None)
        if fn is None or not callable(fn):
            raise ConfigError(f"energy.python: {file} defines no function {func!r}")
        made = fn()
    except ConfigError:
        raise
    except Exception as err:                   # the user's code: report it in one line
        raise ConfigError(f"energy.python: {file}:{func} raised {type(err).__name__}: {err}") from None
    finally:
        sys.path.remove(os.path.dirname(os.path.abspath(file)))
    if isinstance(made, energies.Energy):
        if made.dim is None and dim is None:
            raise ConfigError(f"energy.python: the Energy from {func}() declares no dimension; set its dim "
                              "attribute or energy.dim")
        if dim is not None and made.dim is not None and made.dim != dim:
            raise ConfigError(f"energy.dim = {dim} but the Energy from {func}() has dimension {made.dim}")
        if made.dim is None:
            made.dim = dim
        return made
    if callable(made):
        if dim is None:
            raise ConfigError(f"energy.python: {func}() returned a callable; give its dimension as energy.dim")
        return energies.FromCallable(value_and_grad=made, dim=dim)
    raise ConfigError(f"energy.python: {func}() must return a particleflow Energy or a callable "
                      f"x -> (E, grad E); got {type(made).__name__}")


def build_energy(e, run_dir=None):
    """The energy of a validated ``[energy]`` table: a family, a run's saved energy, a
    user's Python function or a weighted sum of those, divided by the temperature when
    one is given."""
    if e.get("from_run") is not None:
        energy = energy_from_run(e["from_run"], run_dir)
    elif e.get("python") is not None:
        energy = energy_from_python(e["python"], e.get("dim"), run_dir)
    elif e.get("terms") is not None:
        energy = _combined(energies.Sum, [build_energy(t, run_dir) for t in e["terms"]],
                           [t["weight"] for t in e["terms"]])
    else:
        try:
            energy = _build_energy(e)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"energy: {err}") from None
    if e.get("temperature") not in (None, 1.0):
        energy = _combined(energies.Tempered, energy, e["temperature"])
    return energy


def _combined(cls, *args):
    try:
        return cls(*args)
    except ValueError as err:
        raise ConfigError(f"energy: {err}") from None


def _build_energy(e):
    if e["kind"] == "gaussian":
        return energies.Gaussian(_array(e, "mean", 1), _array(e, "precision", 2))
    if e["ring_components"] is not None:
        if e["ring_radius"] is None:
            raise ConfigError("energy.ring_components needs energy.ring_radius")
        means = energies.ring_means(e["ring_components"], e["ring_radius"])
    else:
        means = _array(e, "means", 2)
    cov = None if e["covariances"] is None else _array(e, "covariances", 3)
    if e["weights"] is not None:
        _array(e, "weights", 1)
    scale = e["scale"] if (e["scale"] is not None or cov is not None) else 1.0
    return energies.GaussianMixture(means, covariances=cov, scale=scale if cov is None else None,
                                    weights=e["weights"])


def initial_positions(name, index, spec, dim, dtype, seed, base_dir):
    if spec["init"] == "file":
        path = spec["file"] if os.path.isabs(spec["file"]) else os.path.join(base_dir, spec["file"])
        if not os.path.exists(path):
            raise ConfigError(f"ensembles.{name}.file: no such file {path}")
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(f"ensembles.{name}.file: cannot read {path} as a .npy array ({err or 'empty file'})") \
                from None
        if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 1 or x.dtype.kind not in "fiu":
            raise ConfigError(f"ensembles.{name}.file: {path} must hold a numeric array of shape (n, {dim}) with "
                              f"n >= 1; got {x.dtype} {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError(f"ensembles.{name}.file: {path} contains NaN or Inf values")
        return x.astype(dtype)
    if spec["init"] == "zeros":
        return np.zeros((spec["n"], dim), dtype)
    # counter-based like everything else: ensemble number `index` gets its own stream
    z = Stream(seed, StreamBlock.INIT + index).normal(0, np.arange(spec["n"]), dim, Purpose.INIT, dtype)
    return z * dtype.type(spec["init_scale"])


def build_move(kind, s, energy, sim):
    """The move of a validated schedule slot (``MOVES[kind]`` declares and builds it)."""
    try:
        return MOVES[kind].build(s, energy, sim)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{kind}: {err}") from None


class Sample(Experiment):
    name = "sample"
    shards = True
    description = ("sample a fixed energy with a schedule of moves (Langevin, MALA, HMC, parallel tempering, "
                   "independence MH, resampling, restarts)")
    sections = {"run": run_section(), "output": output_section(every=10, checkpoint_every=1000),
                "energy": ENERGY}
    free = {"ensembles": Field("table", doc="[ensembles.<name>] tables"),
            "schedule": Field("list", doc="[[schedule]] tables, one per move, run in order")}
    required = ("run", "energy")
    tables = {"ensembles.<name>": ENSEMBLE, "schedule[i]": SLOT} | \
        {f"schedule[i] (move = {k!r})": v.fields for k, v in MOVES.items()}

    def check(self, cfg):
        check_energy(cfg["energy"])
        if not cfg["ensembles"]:
            raise ConfigError("ensembles must define at least one ensemble, e.g. [ensembles.chains] n = 1000")
        ens = {}
        for name, t in cfg["ensembles"].items():
            if not ENSEMBLE_NAME.fullmatch(name):
                raise ConfigError(f"ensembles.{name}: the name is not allowed; use letters, digits, '_' and '-', "
                                  "starting with a letter or '_'")
            ens[name] = table(f"ensembles.{name}", t, ENSEMBLE)
            if ens[name]["init"] == "file" and not ens[name]["file"]:
                raise ConfigError(f"ensembles.{name}.init = 'file' needs ensembles.{name}.file (a .npy array)")
        cfg["ensembles"] = ens
        if not cfg["schedule"]:
            raise ConfigError("schedule must list at least one move ([[schedule]] move = ...)")
        slots = []
        for i, s in enumerate(cfg["schedule"]):
            where = f"schedule[{i}]"
            if not isinstance(s, dict) or "move" not in s:
                raise ConfigError(f"{where} must be a table with a 'move' key (one of {', '.join(MOVES)})")
            kind = SLOT["move"].check(f"{where}.move", s["move"])
            slot = table(where, s, SLOT | MOVES[kind].fields)
            if slot["ensemble"] not in ens:
                raise ConfigError(f"{where}.ensemble = {slot['ensemble']!r} is not defined; "
                                  f"ensembles: {', '.join(ens)}")
            if kind == "restart" and slot["source"] not in ens:
                raise ConfigError(f"{where}.source = {slot['source']!r} is not defined; ensembles: {', '.join(ens)}")
            slots.append(slot)
        for i, s in enumerate(slots):
            if s["move"] == "parallel_tempering":
                others = [j for j, t in enumerate(slots) if j != i and t["ensemble"] == s["ensemble"]
                          and t["move"] in ROW_MOVES]
                if others:
                    j = others[0]
                    raise ConfigError(f"schedule[{i}] (parallel_tempering) owns the rows of ensemble "
                                      f"{s['ensemble']!r}: they are groups of replicas at the ladder's temperatures, "
                                      f"which schedule[{j}] ({slots[j]['move']}) would reorder or replace; give "
                                      "that move another ensemble")
        cfg["schedule"] = slots

    def resolve(self, cfg, base_dir):
        resolve_energy_path(cfg["energy"], base_dir)

    def memory_bytes(self, cfg):
        e = cfg["energy"]
        if e["from_run"] is not None or e["terms"] is not None or e.get("python") is not None:
            K, d = 1, build_energy(e).dim
        elif e["kind"] == "gaussian":
            K, d = 1, len(e["mean"])
        elif e["ring_components"] is not None:
            K, d = e["ring_components"], 2
        else:
            K, d = len(e["means"]), len(e["means"][0]) if e["means"] and isinstance(e["means"][0], list) else 1
        item = np.dtype(cfg["run"]["dtype"]).itemsize
        # components: means, precisions, Cholesky factors, constants; per particle:
        # positions, double buffer, noise, gradient, cache, frame buffer, ids, energies
        return 4 * 8 * K * d * (d + 1) + sum(s["n"] * (8 * d * item + 4 * 8) for s in cfg["ensembles"].values())

    def build(self, cfg, base_dir=".", restore=False):
        energy = build_energy(cfg["energy"])
        dtype = np.dtype(cfg["run"]["dtype"])
        seed = cfg["run"]["seed"]
        sim = Simulation(seed=seed)
        for index, (name, spec) in enumerate(cfg["ensembles"].items()):
            if spec["dim"] is not None and spec["dim"] != energy.dim:
                raise ConfigError(f"ensembles.{name}.dim = {spec['dim']} but the energy has dimension {energy.dim}")
            if restore:
                x = np.zeros((spec["n"] if spec["init"] != "file" else 1, energy.dim), dtype)
            else:
                x = initial_positions(name, index, spec, energy.dim, dtype, seed, base_dir)
            weighted = any(s["move"] == "reweight" and s["ensemble"] == name for s in cfg["schedule"])
            lw = np.zeros(x.shape[0], dtype) if weighted else None       # recorded from step 0
            sim.add_ensemble(name, Ensemble(x, log_weights=lw, name=name))
        for i, s in enumerate(cfg["schedule"]):
            mv = build_move(s["move"], s, energy, sim)
            if not restore:                 # fit of move and ensemble, before any file is written
                try:
                    mv.check(sim.ensembles[s["ensemble"]])
                except ValueError as err:
                    raise ConfigError(f"schedule[{i}] ({s['move']}): {err}") from None
            sim.schedule(mv, s["ensemble"], every=s["every"], name=s["name"] or f"{s['move']}_{i}")
        every = cfg["output"]["every"]
        sim.observe(None, ensemble_summaries, every=every)
        sim.observe_moves(every)
        sim.trajectory(every=every)
        sim.context["energy"] = energy
        return sim

    def energy(self, run, cfg):
        return build_energy(cfg["energy"], os.path.dirname(os.path.abspath(run.path)))

    def results(self, sim, cfg):
        res = {f"{name}/final_mean": np.asarray(e.mean(), dtype=np.float64) for name, e in sim.ensembles.items()}
        for slot in sim.slots:
            mv = slot.move
            if isinstance(mv, moves.AutoWarmup):
                res[f"{slot.name}/superchains"] = np.int64(mv.groups)
                res[f"{slot.name}/warmup_replaced"] = np.int64(mv.n_stuck)
                res[f"{slot.name}/warmup_done"] = np.int64(mv.done)
                if mv.done:
                    res[f"{slot.name}/log_z"] = np.float64(mv.log_z)
        return res

    def diagnostics(self, run, cfg):
        """(lines, warnings): the convergence diagnostics of the frames after the
        warm-up of a run with an auto warm-up slot (``analysis.diagnose_run``)."""
        lines, warns = self.divergences(run, cfg)
        auto = [s for s in cfg["schedule"] if s.get("auto_warmup")]
        if not auto:
            return lines, warns
        for i, s in enumerate(cfg["schedule"]):
            name = s["name"] or f"{s['move']}_{i}"
            done = run.results.get(f"{name}/warmup_done")
            if s.get("auto_warmup") and done is not None and not int(np.asarray(done)):
                warns.append(f"{name}: the warm-up had not finished when the run stopped; raise run.steps")
        for ens, (first, (rhat, nested, bulk, tail, stuck, w)) in diagnose_run(run.path).items():
            lines.append(f"{ens}: draws from step {first}: max nested R-hat {np.max(nested):.4f}, "
                         f"max split R-hat {np.max(rhat):.4f}, min ESS bulk {np.min(bulk):.0f}, "
                         f"min ESS tail {np.min(tail):.0f}, stuck chains {stuck}")
            warns += [f"{ens}: {x}" for x in w]
        return lines, warns

    def divergences(self, run, cfg):
        """(lines, warnings): each HMC slot's divergent transitions, counted after its
        warm-up when it has one (its ``adapting`` statistic is 0 from then on)."""
        lines, warns = [], []
        for i, s in enumerate(cfg["schedule"]):
            name = s["name"] or f"{s['move']}_{i}"
            total = run.observables.get(f"{name}/divergences")
            if total is None or not len(total.steps):
                continue
            counts = np.asarray(total.values, dtype=np.float64)
            adapting = run.observables.get(f"{name}/adapting")
            n, when = int(counts[-1]), "over the run"
            if adapting is not None and len(adapting.steps) == len(counts):
                tuned = np.nonzero(np.asarray(adapting.values) == 0)[0]
                if not tuned.size:
                    lines.append(f"{name}: {n} divergent transitions, all in the warm-up (not finished)")
                    continue
                # less the running total at the last recorded step of the warm-up
                n -= int(counts[tuned[0] - 1]) if tuned[0] > 0 else 0
                when = "after the warm-up"
            lines.append(f"{name}: {n} divergent transitions {when}")
            if n:
                warns.append(f"{name}: {n} divergent transitions {when} (energy error > 1000 or not finite): "
                             "the chains miss the regions where the leapfrog breaks down; lower step_size "
                             "(or raise the acceptance target) or reparameterise the model")
        return lines, warns

    def summary(self, run, cfg):
        lines, _ = self.diagnostics(run, cfg)
        return lines


def ensemble_summaries(sim):
    """``<ensemble>/mean`` (weighted) and ``<ensemble>/ess`` of every ensemble."""
    vals = {}
    for name, ens in sim.ensembles.items():
        vals[f"{name}/mean"] = np.asarray(ens.mean(), dtype=np.float64)
        vals[f"{name}/ess"] = ens.ess()
    return vals
