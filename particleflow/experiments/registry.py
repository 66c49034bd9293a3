"""The registry of experiments (filled by the package's discovery) and what needs it
below the package level: ``get``, ``of_config``, ``validate`` and ``load_energy``,
the one way to rebuild a run's energy (``particleflow.io`` reads files and knows
nothing of experiments)."""
from ..config import ConfigError, Field

REGISTRY = {}


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
