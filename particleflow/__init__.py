"""particleflow: a particle-system simulation engine for energy-based models.

Ensembles of particles (chains, data, neurons, parameters) advanced by moves
(Langevin, MALA, HMC, Euler-Maruyama, Wasserstein-Fisher-Rao, restarts,
reweighting, resampling) inside a Simulation, with counter-based randomness.
"""
from . import energies, moves, random
from .ensemble import Ensemble
from .errors import DivergenceError
from .simulation import Simulation, sample

__version__ = "0.1.0"
__all__ = ["Ensemble", "Simulation", "sample", "DivergenceError", "energies", "moves",
           "random", "__version__"]
