"""Estimators: learning algorithms written as schedules over ensembles and moves.
No configs and no files here (runnable experiments are ``particleflow.experiments``).

* ``contrastive``: the contrastive gradient shared by likelihood-based estimators, and
  maximum likelihood with persistent MCMC negatives (``contrastive_ml``);
* ``importance``: importance-sampling maximum likelihood (paper 003);
* ``dual_ebm``: dual / primal training of F1-EBMs (paper 001, Algorithm 1);
* ``deen``: deep energy estimator networks, denoising score matching (paper 002);
* ``shortrun``: short-run MCMC learning, persistent CD and CD-k (paper 004);
* ``mrmap``: Maximum Recovery MAP and the hyperbolic least-action network (paper 000);
* ``annealing``: log Z of an energy by AIS and adaptive tempered SMC.
"""
from . import annealing, contrastive, deen, dual_ebm, importance, mrmap, shortrun
from .annealing import anneal, log_z
from .contrastive import LoadParameters, contrastive_gradient, contrastive_ml
from .dual_ebm import DualEBM
from .importance import GaussianProposal, ImportanceDescent, ImportanceML, weight_second_moment

__all__ = ["annealing", "anneal", "log_z", "contrastive", "deen", "dual_ebm", "importance", "mrmap", "shortrun", "contrastive_gradient", "contrastive_ml", "LoadParameters",
           "DualEBM", "ImportanceML", "ImportanceDescent", "GaussianProposal", "weight_second_moment"]
