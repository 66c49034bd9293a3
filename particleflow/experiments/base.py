"""The experiment protocol: what the runner and the CLI need from a runnable experiment.

An experiment is one module in ``particleflow/experiments/`` holding one subclass of
``Experiment`` and registered in ``experiments/__init__.py``.  It declares:

* ``name``: the config's ``estimator = "..."`` value; ``description``: one line;
* ``sections``: the config schema, section name -> {key: ``config.Field``}; the shared
  ``[run]`` and ``[output]`` sections come from ``config.run_section`` and
  ``config.output_section``; ``free``: top-level keys validated by ``check`` (tables of
  tables, arrays of tables);
* ``check(cfg)``: cross-key validation after the schema (raise ``ConfigError``);
* ``build(cfg, base_dir, restore) -> Simulation``: ensembles, schedule, observables
  (``sim.observe``, ``sim.observe_moves``), frames (``sim.trajectory``), learnable
  state (``sim.register_state``); with ``restore`` the dynamic ensembles may hold
  placeholders, a checkpoint overwrites them;
* ``results(sim, cfg) -> dict``: end-of-run values (written under /results);
* ``summary(run, cfg) -> [str]``: lines for the terminal, from a finished run (a
  trajectory file or an in-memory ``Recorder``: both have ``observables`` and
  ``results``);
* ``plot(run, png)``: the experiment's figure (default: ``figures.draw``: last frames
  over exp(-E), sample grids, changing observables).

``shards``: True when every reduction over particles of the experiment goes through
the ensembles' device, so that a run over several MPI ranks may shard its ensembles.

``steps(cfg)`` (default ``run.steps``) and ``checkpoint_every(cfg)`` (default
``output.checkpoint_every``) tell the runner how long to run and how often to save;
``memory_bytes(cfg)`` estimates the peak memory, so that a config that cannot fit is
refused before anything is allocated.
"""
import numpy as np

from ..config import REQUIRED, ConfigError, Field, table
from ..moves import CosineDecay
from . import figures


def learning_rate(section, steps):
    """Adam's learning rate of a config section with ``lr`` and ``schedule``: the number,
    or a ``CosineDecay`` to 0 over ``steps``."""
    return section["lr"] if section["schedule"] == "constant" else CosineDecay(section["lr"], steps)


def check_layer_sizes(sizes, what, first=None, last=None, hint=""):
    """``ConfigError`` unless ``sizes`` is a list of >= 2 positive integers starting with
    ``first`` and ending with ``last`` (where given)."""
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes) or len(sizes) < 2 \
            or (first is not None and sizes[0] != first) or (last is not None and sizes[-1] != last):
        raise ConfigError(f"{what} must be integers [{'...' if first is None else first}, ..., "
                          f"{'...' if last is None else last}]{hint}; got {sizes!r}")


def trained_params(run, prefix, missing):
    """The parameters a run stored as results ``<prefix>/<name>``, or ``ValueError``
    ending with ``missing`` (why there may be none)."""
    params = {k[len(prefix) + 1:]: np.asarray(v) for k, v in run.results.items() if k.startswith(prefix + "/")}
    if not params:
        raise ValueError(f"{run.path} holds no trained parameters {prefix!r} ({missing})")
    return params


class Experiment:
    name = None
    description = ""
    # On several ranks, shard the ensembles (``Simulation.distribute``).  Only for
    # experiments whose every reduction over particles goes through the ensembles'
    # device; the others run replicated on every rank (same results, no speed-up).
    shards = False
    sections = {}
    free = {}
    required = ()            # sections that must appear in the config

    # ------------------------------------------------------------ config
    def validate(self, raw):
        """The validated config (defaults filled in), or ``ConfigError``."""
        if not isinstance(raw, dict):
            raise ConfigError("the config must be a table")
        top = {"estimator": Field("str", self.name)}
        top |= {k: Field("table", REQUIRED if k in self.required else {})
                for k in self.sections}
        top |= self.free
        cfg = table("", raw, top)
        for sec, fields in self.sections.items():
            cfg[sec] = table(sec, cfg[sec], fields)
        self.check(cfg)
        return cfg

    def check(self, cfg):
        pass

    def steps(self, cfg):
        return cfg["run"]["steps"]

    def checkpoint_every(self, cfg):
        return cfg["output"]["checkpoint_every"]

    def compression(self, cfg):
        return cfg["output"].get("compression", "none")

    def resolve(self, cfg, base_dir):
        """Make the paths a validated config names relative to its directory absolute
        (before ``memory_bytes`` and ``build``); experiments that read files override it."""

    def memory_bytes(self, cfg):
        """An estimate of the peak memory of a run (bytes), checked before anything is
        allocated; experiments override it with their own sizes."""
        return 0

    def parameters(self, cfg):
        """Extra attributes for the trajectory's /parameters group."""
        return {"dtype": cfg["run"].get("dtype", "float64")}

    # ------------------------------------------------------------ running
    def build(self, cfg, base_dir=".", restore=False):
        raise NotImplementedError

    def results(self, sim, cfg):
        return {}

    def energy(self, run, cfg):
        """The energy of a finished run (to sample it again or evaluate it)."""
        raise ValueError(f"experiment {self.name!r} cannot rebuild its energy from a run file")

    # ------------------------------------------------------------ reporting
    def summary(self, run, cfg):
        return []

    def plot(self, run, png):
        """Density contours with the particles over them (2-D), sample grids (images),
        changing observables against steps: ``figures.draw``."""
        return figures.draw(run, png, "all")
