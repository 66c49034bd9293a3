"""``estimator = "sample"``: the engine's generic sampler (``runs/demo.toml``).

    [run]        steps, seed, dtype
    [output]     every, checkpoint_every, compression, plot
    [energy]     kind = "gaussian" (mean, precision) | "gaussian_mixture"
                 (means or ring_components/ring_radius, scale or covariances, weights),
                 or from_run = "a run file": the energy that run saved (a trained network)
    [ensembles.<name>]  n, init = "normal" | "zeros" | "file", init_scale, file, dim
    [[schedule]] move = langevin | mala | hmc | resample | reweight | restart, ensemble, every, name, ...

Observables every ``output.every`` steps: ``<ensemble>/mean``, ``<ensemble>/ess`` and
every move's statistics ``<slot>/<key>``; frames of every ensemble at the same
cadence.  Results: ``<ensemble>/final_mean``.
"""
import os

import numpy as np

from .. import energies, moves
from ..config import ConfigError, Field, output_section, positive, run_section, table
from ..ensemble import Ensemble
from ..io.h5md import open_run
from ..random import Purpose, Stream, StreamBlock
from ..simulation import ENSEMBLE_NAME, Simulation
from .base import Experiment

ENERGY = {"kind": Field("str", None, choices=("gaussian", "gaussian_mixture"), doc="energy family"),
          "from_run": Field("str", None, doc="instead of kind: the saved energy of a run file "
                                             "(relative to the config), e.g. a trained DEEN"),
          "mean": Field("list", None, doc="gaussian: mean vector"),
          "precision": Field("list", None, doc="gaussian: precision matrix (symmetric positive definite)"),
          "means": Field("list", None, doc="gaussian_mixture: component means [K][d]"),
          "ring_components": Field("int", None, lo=1, doc="gaussian_mixture: K means on a circle (2-D)"),
          "ring_radius": positive(None, doc="radius of the ring of means"),
          "scale": Field("float", None, lo=0, lo_open=True, doc="isotropic component standard deviation"),
          "covariances": Field("list", None, doc="full component covariances [K][d][d]"),
          "weights": Field("list", None, doc="component weights (normalised; default equal)")}
ENSEMBLE = {"n": Field("int", lo=1, doc="number of particles"),
            "init": Field("str", "normal", choices=("normal", "zeros", "file"), doc="initial positions"),
            "init_scale": positive(1.0, doc="standard deviation of normal initial positions"),
            "file": Field("str", None, doc="init = 'file': a .npy array [n, d] (relative to the config)"),
            "dim": Field("int", None, lo=1, doc="optional check against the energy's dimension")}
MOVES = {
    "langevin": {"step_size": positive(doc="h"), "temperature": positive(1.0, doc="T"),
                 "noise_scale": Field("float", None, lo=0, doc="noise sd (default sqrt(2 h T))")},
    "mala": {"step_size": positive(doc="h (the initial value when warmup > 0)"),
             "warmup": Field("int", 0, lo=0, doc="calls that adapt h to target_acceptance (dual averaging)"),
             "target_acceptance": Field("float", 0.57, lo=0, lo_open=True, hi=1, doc="warm-up target"),
             "adapt_mass": Field("str", "none", choices=("none", "diag", "dense"),
                                 doc="warmup > 0: also adapt the preconditioner to the ensemble's covariance"),
             "adapt_per_chain": Field("bool", False, doc="warmup > 0: one step size per particle")},
    "hmc": {"step_size": positive(doc="leapfrog step (the initial value when warmup > 0)"),
            "n_leapfrog": Field("int", lo=1, doc="leapfrog steps"),
            "mass": Field("float", None, lo=0, lo_open=True, doc="scalar mass (default 1)"),
            "jitter": Field("float", 0.0, lo=0, hi=0.99, doc="step size drawn from h (1 +- jitter) each step"),
            "warmup": Field("int", 0, lo=0, doc="calls that adapt h to target_acceptance (dual averaging)"),
            "target_acceptance": Field("float", 0.7, lo=0, lo_open=True, hi=1, doc="warm-up target"),
            "adapt_mass": Field("str", "none", choices=("none", "diag", "dense"),
                                doc="warmup > 0: also adapt the preconditioner to the ensemble's covariance"),
            "adapt_per_chain": Field("bool", False, doc="warmup > 0: one step size per particle"),
            "adapt_trajectory": Field("str", "none", choices=("none", "chees"),
                                      doc="warmup > 0: adapt the trajectory length h L (ChEES; n_leapfrog starts it)")},
    "resample": {"scheme": Field("str", "systematic", choices=("multinomial", "residual", "stratified", "systematic"),
                                 doc="resampling scheme"),
                 "ess_threshold": Field("float", None, lo=0, lo_open=True, hi=1,
                                        doc="resample when ESS < threshold * n (default: always)")},
    "reweight": {"proposal_scale": positive(doc="the particles are draws of N(0, s^2 I): log w += E_q - E")},
    "restart": {"source": Field("str", doc="ensemble to restart from"),
                "probability": Field("float", lo=0, hi=1, doc="restart probability per particle and step")},
}
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
    """energy.from_run made absolute (relative paths are relative to the config)."""
    if e.get("from_run") and not os.path.isabs(e["from_run"]):
        e["from_run"] = os.path.normpath(os.path.join(base_dir, e["from_run"]))


def check_energy(e):
    if (e["kind"] is None) == (e["from_run"] is None):
        raise ConfigError("energy needs exactly one of energy.kind (gaussian, gaussian_mixture) and "
                          "energy.from_run (a run file with a saved energy)")
    if e["kind"] == "gaussian" and (e["mean"] is None or e["precision"] is None):
        raise ConfigError("energy.kind = 'gaussian' needs energy.mean and energy.precision")
    if e["kind"] == "gaussian_mixture" and (e["means"] is None) == (e["ring_components"] is None):
        raise ConfigError("energy.kind = 'gaussian_mixture' needs exactly one of energy.means "
                          "or energy.ring_components (with energy.ring_radius)")
    if e["from_run"] is not None:
        extra = [k for k, v in e.items() if k not in ("kind", "from_run") and v is not None]
        if extra:
            raise ConfigError(f"energy.from_run takes the energy from the run file; drop energy.{extra[0]}")


def energy_from_run(path, run_dir=None):
    """The saved energy of the run file ``path`` (a relative path is tried from the
    current directory, then from ``run_dir``), or a ConfigError naming the file."""
    if not os.path.isabs(path) and not os.path.exists(path) and run_dir is not None:
        path = os.path.join(run_dir, path)
    if not os.path.exists(path):
        raise ConfigError(f"energy.from_run: no such file {path}")
    try:
        with open_run(path) as run:
            energy = run.load_energy()
    except (ValueError, KeyError, OSError) as err:
        raise ConfigError(f"energy.from_run: {path} has no energy to load ({err})") from None
    if getattr(energy, "dim", None) is None:
        raise ConfigError(f"energy.from_run: the energy of {path} declares no dimension")
    return energy


def build_energy(e, run_dir=None):
    """The energy of a validated ``[energy]`` table."""
    if e.get("from_run") is not None:
        return energy_from_run(e["from_run"], run_dir)
    try:
        return _build_energy(e)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"energy: {err}") from None


def _build_energy(e):
    if e["kind"] == "gaussian":
        return energies.Gaussian(_array(e, "mean", 1), _array(e, "precision", 2))
    if e["ring_components"] is not None:
        if e["ring_radius"] is None:
            raise ConfigError("energy.ring_components needs energy.ring_radius")
        ang = 2 * np.pi * np.arange(e["ring_components"]) / e["ring_components"]
        means = e["ring_radius"] * np.stack([np.cos(ang), np.sin(ang)], 1)
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
    if kind == "langevin":
        return moves.Langevin(energy, s["step_size"], noise_scale=s["noise_scale"], temperature=s["temperature"])
    if kind in ("mala", "hmc"):
        mv = moves.MALA(energy, s["step_size"]) if kind == "mala" else \
            moves.HMC(energy, s["step_size"], s["n_leapfrog"], mass=s["mass"], jitter=s["jitter"])
        mass = None if s["adapt_mass"] == "none" else s["adapt_mass"]
        if mass and not s["warmup"]:
            raise ConfigError(f"{kind}: adapt_mass = {s['adapt_mass']!r} needs warmup > 0 (the calls that adapt)")
        if mass and s.get("mass") is not None:
            raise ConfigError("hmc: adapt_mass replaces the fixed mass; drop one of mass and adapt_mass")
        trajectory = None if s.get("adapt_trajectory", "none") == "none" else s["adapt_trajectory"]
        if (s["adapt_per_chain"] or trajectory) and not s["warmup"]:
            raise ConfigError(f"{kind}: adapt_per_chain and adapt_trajectory need warmup > 0 (the calls that adapt)")
        try:
            return moves.AdaptStepSize(mv, s["target_acceptance"], s["warmup"], mass=mass,
                                       per_chain=s["adapt_per_chain"], trajectory=trajectory) if s["warmup"] else mv
        except ValueError as err:
            raise ConfigError(f"{kind}: {err}") from None
    if kind == "resample":
        return moves.Resample(s["scheme"], s["ess_threshold"])
    if kind == "reweight":
        d = energy.dim
        return moves.Reweight(energy, energies.Gaussian(np.zeros(d), np.eye(d) / s["proposal_scale"] ** 2))
    return moves.Restart(sim.ensembles[s["source"]], s["probability"])


class Sample(Experiment):
    name = "sample"
    shards = True
    description = "sample a fixed energy with a schedule of moves (Langevin, MALA, HMC, resampling, restarts)"
    sections = {"run": run_section(), "output": output_section(every=10, checkpoint_every=1000),
                "energy": ENERGY}
    free = {"ensembles": Field("table", doc="[ensembles.<name>] tables"),
            "schedule": Field("list", doc="[[schedule]] tables, one per move, run in order")}
    required = ("run", "energy")
    tables = {"ensembles.<name>": ENSEMBLE, "schedule[i]": SLOT} | \
        {f"schedule[i] (move = {k!r})": v for k, v in MOVES.items()}

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
            slot = table(where, s, SLOT | MOVES[kind])
            if slot["ensemble"] not in ens:
                raise ConfigError(f"{where}.ensemble = {slot['ensemble']!r} is not defined; "
                                  f"ensembles: {', '.join(ens)}")
            if kind == "restart" and slot["source"] not in ens:
                raise ConfigError(f"{where}.source = {slot['source']!r} is not defined; ensembles: {', '.join(ens)}")
            slots.append(slot)
        cfg["schedule"] = slots

    def resolve(self, cfg, base_dir):
        resolve_energy_path(cfg["energy"], base_dir)

    def memory_bytes(self, cfg):
        e = cfg["energy"]
        if e["from_run"] is not None:
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
            sim.schedule(build_move(s["move"], s, energy, sim), s["ensemble"], every=s["every"],
                         name=s["name"] or f"{s['move']}_{i}")
        every = cfg["output"]["every"]
        sim.observe(None, ensemble_summaries, every=every)
        sim.observe_moves(every)
        sim.trajectory(every=every)
        sim.context["energy"] = energy
        return sim

    def energy(self, run, cfg):
        return build_energy(cfg["energy"], os.path.dirname(os.path.abspath(run.path)))

    def results(self, sim, cfg):
        return {f"{name}/final_mean": np.asarray(e.mean(), dtype=np.float64) for name, e in sim.ensembles.items()}


def ensemble_summaries(sim):
    """``<ensemble>/mean`` (weighted) and ``<ensemble>/ess`` of every ensemble."""
    vals = {}
    for name, ens in sim.ensembles.items():
        vals[f"{name}/mean"] = np.asarray(ens.mean(), dtype=np.float64)
        vals[f"{name}/ess"] = ens.ess()
    return vals
