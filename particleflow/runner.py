"""Runs from configs: build the Simulation, stream the trajectory, checkpoint, resume.

Run loop (per chunk of steps up to the next frame):
    sim.run(k) -> write a frame of every ensemble + observables (move statistics and
    each ensemble's mean and ESS) -> every ``checkpoint_every`` steps flush and write
    an atomic checkpoint.  SIGINT / SIGTERM set a flag checked after every chunk: the
    current step finishes, the trajectory is flushed and closed, a checkpoint is
    written, and the process exits with 130 / 143.

Resume: read the checkpoint, rebuild the Simulation from the stored config, restore
the ensembles and the step counter, copy the trajectory's frames up to the
checkpoint into a fresh file (atomically replacing the old one, which a killed
writer leaves flagged as open), and continue.  The final state equals an
uninterrupted run's bitwise (tested).
"""
import os
import signal

import h5py
import numpy as np

from .ensemble import Ensemble
from .io import config as cfgmod
from .io.checkpoint import write_checkpoint
from .io.h5md import TrajectoryWriter, write_results
from .random import Purpose, Stream
from .simulation import Simulation

INIT_STREAM_BASE = 1 << 23       # stream ids of initial positions (schedule slots use 0, 1, ...)


class Interrupted(Exception):
    def __init__(self, signum):
        self.signum = signum
        self.exit_code = 128 + signum


def checkpoint_path(out):
    return out + ".ckpt"


def build_energy(e):
    from . import energies
    if e["kind"] == "gaussian":
        return energies.Gaussian(np.asarray(e["mean"], float), np.asarray(e["precision"], float))
    if e["ring_components"] is not None:
        if e["ring_radius"] is None:
            raise cfgmod.ConfigError("energy.ring_components needs energy.ring_radius")
        ang = 2 * np.pi * np.arange(e["ring_components"]) / e["ring_components"]
        means = e["ring_radius"] * np.stack([np.cos(ang), np.sin(ang)], 1)
    else:
        means = np.asarray(e["means"], float)
    cov = None if e["covariances"] is None else np.asarray(e["covariances"], float)
    scale = e["scale"] if (e["scale"] is not None or cov is not None) else 1.0
    return energies.GaussianMixture(means, covariances=cov, scale=scale if cov is None else None,
                                    weights=e["weights"])


def _initial_positions(name, index, spec, dim, dtype, seed, base_dir):
    if spec["init"] == "file":
        path = spec["file"] if os.path.isabs(spec["file"]) else os.path.join(base_dir, spec["file"])
        if not os.path.exists(path):
            raise cfgmod.ConfigError(f"ensembles.{name}.file: no such file {path}")
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise cfgmod.ConfigError(f"ensembles.{name}.file: cannot read {path} as a .npy array ({err})") from None
        if x.ndim != 2 or x.shape[1] != dim:
            raise cfgmod.ConfigError(f"ensembles.{name}.file: expected an array of shape (n, {dim}); got {x.shape}")
        if not np.isfinite(x).all():
            raise cfgmod.ConfigError(f"ensembles.{name}.file: {path} contains NaN or Inf values")
        return x.astype(dtype)
    if spec["init"] == "zeros":
        return np.zeros((spec["n"], dim), dtype)
    # counter-based like everything else: ensemble number `index` gets its own stream
    z = Stream(seed, INIT_STREAM_BASE + index).normal(0, np.arange(spec["n"]), dim, Purpose.INIT, dtype)
    return z * dtype.type(spec["init_scale"])


def build(cfg, base_dir=".", restore=False):
    """(Simulation, energy) from a validated config (``restore``: placeholder
    positions, to be overwritten from a checkpoint)."""
    from . import moves
    energy = build_energy(cfg["energy"])
    dtype = np.dtype(cfg["run"]["dtype"])
    seed = cfg["run"]["seed"]
    sim = Simulation(seed=seed)
    for index, (name, spec) in enumerate(cfg["ensembles"].items()):
        if spec["dim"] is not None and spec["dim"] != energy.dim:
            raise cfgmod.ConfigError(f"ensembles.{name}.dim = {spec['dim']} but the energy has dimension {energy.dim}")
        if restore:
            x = np.zeros((spec["n"] if spec["init"] != "file" else 1, energy.dim), dtype)
        else:
            x = _initial_positions(name, index, spec, energy.dim, dtype, seed, base_dir)
        sim.add_ensemble(name, Ensemble(x, name=name))
    for i, s in enumerate(cfg["schedule"]):
        kind = s["move"]
        if kind == "langevin":
            mv = moves.Langevin(energy, s["step_size"], noise_scale=s["noise_scale"], temperature=s["temperature"])
        elif kind == "mala":
            mv = moves.MALA(energy, s["step_size"])
        elif kind == "hmc":
            mv = moves.HMC(energy, s["step_size"], s["n_leapfrog"], mass=s["mass"])
        elif kind == "resample":
            mv = moves.Resample(s["scheme"], s["ess_threshold"])
        else:
            mv = moves.Restart(sim.ensembles[s["source"]], s["probability"])
        sim.schedule(mv, s["ensemble"], every=s["every"], name=s["name"] or f"{kind}_{i}")
    return sim, energy


class Plan:
    """What ``execute`` needs from an estimator: the Simulation, what to record and
    how often.

    observe(sim, last_stats) -> dict name -> value   (every ``obs_every`` steps)
    results(sim) -> dict name -> array               (once, at the end)
    frame_ensembles : names written every ``frame_every`` steps (the others only at
    frame 0: static ensembles such as training data)."""

    def __init__(self, sim, observe, results, frame_every, obs_every, frame_ensembles=None, parameters=None):
        self.sim, self.observe, self.results = sim, observe, results
        self.frame_every, self.obs_every = int(frame_every), int(obs_every)
        self.frame_ensembles = list(sim.ensembles) if frame_ensembles is None else list(frame_ensembles)
        self.parameters = parameters or {}


def build_plan(cfg, base_dir=".", restore=False):
    module = cfgmod.estimator_module(cfg["estimator"])
    if module is not None:
        return module.build_plan(cfg, base_dir, restore)
    sim, _ = build(cfg, base_dir, restore)
    every = cfg["output"]["every"]
    return Plan(sim, _observable_values,
                lambda s: {f"{name}/final_mean": np.asarray(e.mean(), dtype=np.float64)
                           for name, e in s.ensembles.items()},
                every, every)


def _observable_values(sim, last_stats):
    vals = {}
    for name, ens in sim.ensembles.items():
        vals[f"{name}/mean"] = np.asarray(ens.mean(), dtype=np.float64)
        vals[f"{name}/ess"] = ens.ess()
    for slot in sim.slots:
        for k, v in last_stats.get(slot.name, {}).items():
            vals[f"{slot.name}/{k}"] = v
    return vals


class _SignalGuard:
    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def execute(cfg, config_text, out, *, start=None, progress=None, base_dir="."):
    """Run (or continue, with ``start`` = checkpoint dict) the config; write ``out``
    and ``out + '.ckpt'``.  Returns the Simulation.  Raises ``Interrupted``."""
    plan = build_plan(cfg, base_dir, restore=start is not None)
    sim = plan.sim
    n_total = cfg["run"]["steps"]
    ckpt_every = cfg["output"]["checkpoint_every"]
    if start is not None:
        for name, st in start["ensembles"].items():
            ens = sim.ensembles[name]
            ens.x = np.ascontiguousarray(st["x"])
            ens.log_weights = st.get("log_weights")
            ens.signs = st.get("signs")
            ens.ids = st["ids"]
            ens.next_id = st["next_id"]
        sim.step = start["step"]
    last_stats = {}
    if sim.step == 0:
        # one step to learn the shapes of all observables (SWMR needs every dataset
        # before writing starts); frame 0 is the initial state
        init_frame = {k: e.copy() for k, e in sim.ensembles.items()}
        init_obs = plan.observe(sim, {})
    writer = None
    ckpt = checkpoint_path(out)

    def next_multiple(k):
        return (sim.step // k + 1) * k

    with _SignalGuard() as guard:
        try:
            while sim.step < n_total:
                nxt = min(n_total, next_multiple(plan.frame_every), next_multiple(plan.obs_every),
                          next_multiple(ckpt_every))
                for _ in range(nxt - sim.step):
                    sim.run(1)
                    last_stats.update({s.name: s.stats[-1][1] for s in sim.slots if s.stats})
                    for s in sim.slots:
                        s.stats.clear()
                    if guard.signum is not None:
                        break
                # observables once per stop: they may be costly (dual_ebm's metrics)
                obs = plan.observe(sim, last_stats) \
                    if writer is None or sim.step % plan.obs_every == 0 else None
                if writer is None:
                    writer = _open_writer(out, plan, cfg, config_text, last_stats, start,
                                          (init_frame, init_obs, obs) if start is None else None)
                if sim.step % plan.frame_every == 0:
                    writer.write_frame(sim.step, {k: sim.ensembles[k] for k in plan.frame_ensembles})
                if sim.step % plan.obs_every == 0:
                    for k, v in obs.items():
                        if k in writer.observables:
                            writer.write_observable(k, sim.step, v)
                if progress is not None:
                    progress(sim.step, n_total, last_stats)
                if guard.signum is not None or sim.step % ckpt_every == 0 or sim.step == n_total:
                    writer.flush()
                    write_checkpoint(ckpt, sim.step, sim.ensembles, writer.frame_counts(), config_text,
                                     cfg["run"]["seed"])
                if guard.signum is not None:
                    raise Interrupted(guard.signum)
        finally:
            if writer is not None:
                writer.close()
    with h5py.File(out, "r+", libver="latest") as f:
        write_results(f, plan.results(sim))
    return sim


def _open_writer(out, plan, cfg, config_text, last_stats, start, init):
    params = dict(config=config_text, seed=cfg["run"]["seed"], dtype=cfg["run"]["dtype"], backend="cpu",
                  estimator=cfg["estimator"]) | plan.parameters
    if start is not None:
        return _rewrite_from_checkpoint(out, plan.sim, params, last_stats, start, cfg)
    init_frame, init_obs, obs = init
    w = TrajectoryWriter(out, plan.sim.ensembles, {**init_obs, **obs}, params,
                         compression=cfg["output"].get("compression", "none"))
    w.write_frame(0, init_frame)
    for k, v in init_obs.items():
        w.write_observable(k, 0, v)
    return w


def _rewrite_from_checkpoint(out, sim, params, last_stats, start, cfg):
    """Copy the frames committed at the checkpoint into a fresh file, replace ``out``."""
    from .io.h5md import Run
    tmp = out + ".resume.tmp"
    old = Run(out)
    try:
        obs_examples = {k: o._frames[0] if len(o._frames) else 0.0 for k, o in old.observables.items()}
        w = TrajectoryWriter(tmp, sim.ensembles, obs_examples, params,
                             compression=cfg["output"].get("compression", "none"))
        for (name, what), el in w.elements.items():
            n = start["frames"].get(f"{name}/{what}", 0)
            src = old.file[f"particles/{name}/{what}"]
            for i in range(n):
                el.append(int(src["step"][i]), src["value"][i])
        for k, el in w.observables.items():
            n = start["frames"].get(f"observables/{k}", 0)
            src = old.file[f"observables/{k}"]
            for i in range(n):
                el.append(int(src["step"][i]), src["value"][i])
        w.flush()
    finally:
        old.close()
    os.replace(tmp, out)
    w.path = out
    return w


def load_config_file(path):
    if not os.path.exists(path):
        raise cfgmod.ConfigError(f"no such config file: {path}")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise cfgmod.ConfigError(f"cannot read config {path}: {e}") from None
    return text, cfgmod.loads(text, path)
