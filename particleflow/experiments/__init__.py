"""Runnable experiments: one module each, behind the protocol of ``base.Experiment``.

The registry is built by discovery: every module of this package defines its
``Experiment`` subclass(es) with a ``name``, and that name is the config's
``estimator = "..."`` value.  So adding an experiment is one new module here plus its
config in ``runs/`` (``docs/adding-an-experiment.md``); code outside the package
calls ``register``.
"""
import importlib
import pkgutil

from .base import Experiment
from .registry import REGISTRY, get, load_energy, of_config, validate

_NOT_EXPERIMENTS = ("base", "reference", "registry")


def _discover():
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_EXPERIMENTS:
            continue
        # the experiment modules import only lower layers, .base and .registry (no cycle)
        mod = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, Experiment) and obj.__module__ == mod.__name__ \
                    and obj.name:
                found[obj.name] = obj()
    return dict(sorted(found.items()))


REGISTRY.update(_discover())


def register(experiment):
    """Add an experiment instance to the registry (its ``name`` is the config value)."""
    if not isinstance(experiment, Experiment) or not experiment.name:
        raise ValueError("register() takes an Experiment instance with a name")
    REGISTRY[experiment.name] = experiment
    return experiment


__all__ = ["Experiment", "REGISTRY", "register", "get", "of_config", "validate", "load_energy"]
