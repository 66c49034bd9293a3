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

from . import analysis, energies, estimators, experiments, io, moves, observers, random  # noqa: E402
from ._version import __version__  # noqa: E402
from .backend import Device  # noqa: E402
from .ensemble import Ensemble  # noqa: E402
from .errors import DivergenceError  # noqa: E402
from .observers import Observer, Recorder  # noqa: E402
from .simulation import Simulation, sample  # noqa: E402

__all__ = ["Ensemble", "Simulation", "sample", "Device", "Observer", "Recorder", "DivergenceError", "analysis",
           "energies", "estimators", "experiments", "io", "moves", "observers", "random", "__version__"]
