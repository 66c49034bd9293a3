"""Runnable experiments: one module each, behind the protocol of ``base.Experiment``.

The registry is built by discovery: every module of this package defines its
``Experiment`` subclass(es) with a ``name``, and that name is the config's
``estimator = "..."`` value.  So adding an experiment is one new module here plus its
config in ``runs/`` (``docs/adding-an-experiment.md``); code outside the package
calls ``register``.
"""
import importlib
import pkgutil

from ..config import ConfigError, Field
from .base import Experiment

_NOT_EXPERIMENTS = ("base", "reference")


def _discover():
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_EXPERIMENTS:
            continue
        # the experiment modules import only lower layers and .base (no cycle)
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Experiment) and obj.__module__ == mod.__name__ \
                    and obj.name:
                found[obj.name] = obj()
    return dict(sorted(found.items()))


REGISTRY = _discover()


def register(experiment):
    """Add an experiment instance to the registry (its ``name`` is the config value)."""
    if not isinstance(experiment, Experiment) or not experiment.name:
        raise ValueError("register() takes an Experiment instance with a name")
    REGISTRY[experiment.name] = experiment
    return experiment


def get(name):
    """The registered experiment called ``name``."""
    return REGISTRY[Field("str", choices=tuple(REGISTRY)).check("estimator", name)]


def of_config(raw):
    """The experiment a raw config selects (``estimator``, default "sample")."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a table")
    return get(raw.get("estimator", "sample"))


def validate(raw):
    """The validated config (defaults filled in) of the experiment it selects."""
    return of_config(raw).validate(raw)


def load_energy(run):
    """The energy of a run read with ``particleflow.io.open_run``: rebuilt from its
    stored config (fixed energies) or its results (learned ones)."""
    cfg = run.config
    if not cfg:
        raise ValueError(f"{run.path} stores no config to rebuild its energy from")
    return of_config(cfg).energy(run, validate(cfg))


__all__ = ["Experiment", "REGISTRY", "register", "get", "of_config", "validate", "load_energy"]
