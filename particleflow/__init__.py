"""particleflow: a particle-system simulation engine for energy-based models.

Ensembles of particles (chains, data, neurons, parameters) advanced by moves
(Langevin, MALA, HMC, Euler-Maruyama, Wasserstein-Fisher-Rao, restarts,
reweighting, resampling) inside a Simulation, with counter-based randomness.
"""
import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "kernels")) and \
        _os.path.isfile(_os.path.join(_os.path.dirname(_here), "kernels", "_jit.py")):
    # Running from a source checkout: pyproject maps the top-level kernels/ folder to
    # particleflow.kernels only when installing; make the same name resolve here.
    __path__.append(_os.path.dirname(_here))

# numba's OpenMP threads wait passively between parallel regions unless the user says
# otherwise: spinning workers steal the cores that other processes (or this one's own
# Python thread) need, and on a shared machine 2 threads then ran 3-30x slower than 1
# (bench/threads_contention.py, docs/performance.md).  Read by the OpenMP runtime when
# numba first starts its threads, so it must be set before the first parallel kernel.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib as _importlib  # noqa: E402

from ._version import __version__  # noqa: E402

# Subpackages and names load on first use (PEP 562), so that importing the package is
# cheap: the console entry point (``_main.py``) can then guard the heavy imports
# (numba, the kernels) and answer Ctrl-C during them with one line.
_SUBMODULES = ("analysis", "backend", "config", "energies", "estimators", "experiments", "inference", "io", "moves",
               "observers", "random", "simulation")
_NAMES = {"Device": "backend", "Ensemble": "ensemble", "DivergenceError": "errors",
          "ConvergenceWarning": "errors", "mcmc": "inference", "MCMCResult": "inference", "Observer": "observers",
          "Recorder": "observers", "Simulation": "simulation", "sample": "simulation", "run": "runner"}

__all__ = ["Ensemble", "Simulation", "sample", "mcmc", "run", "MCMCResult", "ConvergenceWarning", "Device", "Observer",
           "Recorder", "DivergenceError", "analysis", "energies", "estimators", "experiments", "io", "moves", "observers",
           "random", "__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        return getattr(_importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'particleflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_NAMES))
