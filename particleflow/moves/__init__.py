"""Moves: ``stats = move(ensemble, stream, step)`` advances one ensemble in place."""
from .adapt import AdaptStepSize
from .base import Move
from .euler_maruyama import EulerMaruyama
from .hmc import HMC
from .importance import IndependentMH, Reweight
from ..integrators import leapfrog, momentum_from_positions
from .langevin import MALA, Langevin
from .optim import SGD, Adam, CosineDecay, StepDecay
from .resampling import SCHEMES, Resample, resample_ancestors
from .restart import Restart
from .tempering import ParallelTempering, geometric_ladder
from .shortrun import GaussianBase, Reinitialize, ShortRun, UniformBox
from .warmup import AutoWarmup
from .wfr import WassersteinFisherRao, relu_feature_means, relu_network

__all__ = ["Move", "Langevin", "MALA", "HMC", "EulerMaruyama", "Restart", "Resample",
           "Reweight", "IndependentMH", "WassersteinFisherRao", "SCHEMES",
           "resample_ancestors", "relu_feature_means", "relu_network", "SGD", "Adam", "StepDecay", "CosineDecay",
           "ShortRun", "Reinitialize", "UniformBox", "GaussianBase", "leapfrog", "momentum_from_positions",
           "AdaptStepSize", "AutoWarmup", "ParallelTempering", "geometric_ladder"]
