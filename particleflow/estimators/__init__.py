"""Estimators: learning algorithms written as schedules over ensembles and moves.

* ``importance``: importance-sampling maximum likelihood (paper 003).

Config-driven runs of each estimator live in ``<name>_run.py`` (schema, execute,
plot); ``particleflow.io.config.ESTIMATOR_MODULES`` maps the config's
``estimator`` key to that module.
"""
from . import importance
from .importance import GaussianProposal, ImportanceML, weight_second_moment

__all__ = ["importance", "ImportanceML", "GaussianProposal", "weight_second_moment"]
