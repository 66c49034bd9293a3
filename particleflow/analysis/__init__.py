"""Trajectory analysis: autocorrelation times, ESS, split R-hat, weighted moments, MMD;
sample quality (kernel Stein discrepancy, mode masses: ``quality``).

All functions take arrays (numpy) or, through ``from_run``, a trajectory file.
Conventions: chains are particles of one ensemble, ``x`` has shape
``[n_frames, n_chains]`` for one coordinate or ``[n_frames, n_chains, dim]``.
"""
from .metrics import (diagnose, diagnose_run, effective_sample_size, ess_bulk, ess_tail, from_run, integrated_time,
                      mmd2, mmd_test, rhat_nested, split_rhat, summary, weight_ess, weighted_moments)
from .quality import evaluate, evaluate_run, ksd, mode_mass, replica_groups

__all__ = ["diagnose", "diagnose_run", "integrated_time", "effective_sample_size", "ess_bulk", "ess_tail",
           "rhat_nested", "split_rhat", "weighted_moments", "weight_ess", "mmd2", "mmd_test", "summary", "from_run",
           "ksd", "mode_mass", "evaluate", "evaluate_run", "replica_groups"]
