"""The contrastive gradient shared by likelihood-based EBM estimators.

For an energy family E(x | theta), the gradient of the negative log-likelihood per
data point is E_data[grad_theta E] - E_model[grad_theta E].  Every estimator that
learns by maximum likelihood estimates the second expectation with some samples:
importance-sampling ML with self-normalised weights (paper 003, Eq. 12), independent
MH or resampled draws (Eq. 17), short-run / persistent / CD-k Langevin chains
(paper 004), MALA negatives.  They all call ``contrastive_gradient``.
"""

import numpy as np

from ..backend import array_module, to_numpy
from ..ensemble import Ensemble
from ..moves import Adam, Move
from ..simulation import Simulation


def contrastive_gradient(energy, positive, negative, positive_weights=None, negative_weights=None,
                         negative_scale=1.0):
    """grad_theta [sum_i a_i E(x+_i) - s sum_j b_j E(x-_j)] as a dict like ``energy.params``.

    Parameters
    ----------
    energy : a family with ``grad_params(x, cotangent)`` (networks, parametric families)
    positive, negative : [n+, ...] data and [n-, ...] model samples
    positive_weights, negative_weights : [n+], [n-]; default 1/n+ and 1/n- (means)
    negative_scale : s (importance-sampling ML uses a = 1, b = normalised weights, s = N)
    """
    xp = array_module(positive)
    a = xp.full(positive.shape[0], 1.0 / positive.shape[0]) if positive_weights is None else positive_weights
    b = xp.full(negative.shape[0], 1.0 / negative.shape[0]) if negative_weights is None else negative_weights
    g_pos = energy.grad_params(positive, a)
    g_neg = energy.grad_params(negative, b)
    if negative_scale == 1.0:
        return {k: g_pos[k] - g_neg[k] for k in g_pos}
    return {k: g_pos[k] - negative_scale * g_neg[k] for k in g_pos}


__all__ = ["contrastive_gradient"]


class LoadParameters(Move):
    """Copy a parameter particle (the one position of a parameter ensemble, the
    energy's parameters flattened in ``energy.params`` order) into the energy.  A model
    with a ``project(params)`` method (constrained parameters) gets the projected
    parameters, and the particle is replaced by them."""

    def __init__(self, energy):
        super().__init__()
        self.energy = None            # not a sampler: no dimension check against the energy
        self.target = energy

    def _step(self, ens, stream, step):
        load_parameters(self.target, ens)
        return {}


def load_parameters(model, ens):
    """Set ``model``'s parameters from the one particle of ``ens`` (projected, and the
    particle replaced by the projection, for a model with ``project``)."""
    project = getattr(model, "project", None)
    set_flat = getattr(model, "set_flat_params", None)
    single_dtype = getattr(model, "single_dtype", None)
    if project is None and set_flat is not None and single_dtype is not None and single_dtype():
        set_flat(to_numpy(ens.x[0]))
        return
    params = unflatten(model.params, to_numpy(ens.x[0]))
    if project is not None:          # constrained parameters: projected gradient steps
        params = project(params)
        ens.x = ens.xp.asarray(flatten(params)[None, :], dtype=ens.dtype)
    model.set_params(params)


class ParameterView:
    """The one home of a trained model's parameters in a checkpoint: the parameter
    ensemble.  Registered as the model's state, it saves nothing of its own, and
    restoring it (after the ensembles) copies the restored particle into the model."""

    def __init__(self, sim, name, model):
        self.sim, self.name, self.model = sim, name, model

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        load_parameters(self.model, self.sim.ensembles[self.name])


def flatten(params):
    """A parameter dict as one float64 vector (keys in dict order)."""
    return np.concatenate([np.ravel(to_numpy(v)).astype(np.float64) for v in params.values()])


def unflatten(like, v):
    """The inverse of ``flatten``, with the keys and shapes of ``like``."""
    out, i = {}, 0
    for k, a in like.items():
        n = int(np.prod(np.shape(a)))
        out[k] = np.asarray(v[i:i + n]).reshape(np.shape(a)).copy()
        i += n
    return out


def _flat_gradient(g):
    """A gradient dict flattened, or a gradient already flat (a float64 vector in
    ``params`` order) as it is."""
    if isinstance(g, dict):
        return flatten(g)
    if not (isinstance(g, np.ndarray) and g.ndim == 1 and g.dtype == np.float64):
        raise ValueError("a parameter gradient must be a dict like the model's params or a float64 vector "
                         f"in params order; got {type(g).__name__}")
    return g


def add_parameter_trainer(sim, model, gradient, lr=1e-3, betas=(0.9, 0.999), suffix="", weight_decay=0.0):
    """Train ``model`` inside ``sim``: a one-particle ensemble ``theta<suffix>`` holds its
    parameters flattened, Adam moves it along ``gradient(step)`` (a dict like
    ``model.params``, or that dict already flattened, for the Simulation's current
    step), and ``LoadParameters`` copies it back into the model (``weight_decay``:
    Adam's L2 term).  The parameters live once in a checkpoint, as the ensemble's
    particle (``ParameterView`` copies them back into the model on restore); Adam's
    moments and update count are its move state, so a checkpointed run resumes
    bitwise."""
    name = f"theta{suffix}"
    sim.add_ensemble(name, Ensemble(flatten(model.params)[None, :], name=name))
    sim.schedule(Adam(lambda theta: _flat_gradient(gradient(sim.step))[None, :], lr=lr, betas=betas,
                      weight_decay=weight_decay), name,
                 name=f"adam{suffix}")
    sim.schedule(LoadParameters(model), name, name=f"load_parameters{suffix}")
    sim.register_state(f"model{suffix}", ParameterView(sim, name, model))
    return sim


def contrastive_ml(energy, data, chains, sampler, lr=1e-2, betas=(0.9, 0.999), seed=0, dtype=np.float64):
    """Maximum likelihood by contrastive gradients with persistent MCMC negatives, as a
    Simulation of three ensembles:

    * ``data`` (static): the observations;
    * ``chains``: persistent model samples, moved by ``sampler(energy)`` (e.g.
      ``lambda e: MALA(e, 0.1)``) toward the current energy;
    * ``theta``: one particle, the energy's parameters flattened, moved by Adam along
      grad_theta [mean E(data) - mean E(chains)] and copied into the energy
      (``add_parameter_trainer``).

    One step = one sampler step on the chains, one Adam step, one parameter copy."""
    sim = Simulation({"data": Ensemble(np.asarray(data, dtype=dtype), name="data"),
                      "chains": Ensemble(np.asarray(chains, dtype=dtype), name="chains")}, seed=seed)
    sim.schedule(sampler(energy), "chains", name="sampler")
    return add_parameter_trainer(
        sim, energy, lambda step: contrastive_gradient(energy, sim.ensembles["data"].x, sim.ensembles["chains"].x),
        lr, betas)
