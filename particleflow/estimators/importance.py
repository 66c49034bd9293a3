"""Importance-sampling maximum likelihood for EBMs (paper 003, Geyer's approach).

For data x_1..x_N and an energy family E(x | theta) with phi(x | theta) = exp(-E),
the negative log-likelihood J(theta) = sum_n E(x_n | theta) + N log Z(theta) (Eq. 5)
is approximated with M draws y_m ~ q from a normalised proposal (Eqs. 7-8):

    Zhat(theta) = (1/M) sum_m phi(y_m | theta) / q(y_m),
    J_GL(theta) = sum_n E(x_n | theta) + N log Zhat(theta)        (log-sum-exp)

and its gradient uses the self-normalised weights wbar_m = w_m / sum_j w_j
(Eqs. 12, 13, 18):

    grad J_GL(theta) = sum_n grad E(x_n | theta) - N sum_m wbar_m grad E(y_m | theta).

For a proposal independent of theta this is the exact derivative of J_GL for the
fixed draws (tested against finite differences).  For a theta-dependent proposal
q(. | theta) the draws are y_m(theta) = mu(theta) + s(theta) z_m with common random
numbers z_m (drawn once), and Eq. 18 is the importance estimate of grad J(theta)
at the current theta (not the derivative of the CRN curve, which would add terms
through y_m(theta) and q(. | theta)).

Three routes to the gradient (paper Sections 4-6), all on the engine's ensembles
and moves:
  "is"           Eq. 12 with the normalised weights above;
  "imh"          model samples from persistent independent Metropolis-Hastings
                 chains (``moves.IndependentMH``, one step per iteration, M chains),
                 then Eq. 17: sum_n grad E(x_n) - (N/M) sum_m grad E(y_m);
  "is_resample"  M fresh proposal draws weighted by w and resampled
                 (``moves.Resample``, any of the four schemes), then Eq. 17.

Why the band of J_GL explodes under q1 for theta > 2.8 (Figures 1-2): Var Zhat =
(E_q[w^2] - Z^2) / M with, for phi(y) = exp(-y^2 / (2 theta^2)) and
q = N(mu, s^2) (one dimension),

    E_q[w^2] = int phi(y)^2 / q(y) dy = sqrt(2 pi) s int exp(-a y^2 + b y + c) dy,
    a = 1/theta^2 - 1/(2 s^2),  b = -mu / s^2,  c = mu^2 / (2 s^2),

which is finite iff a > 0, i.e. s > theta / sqrt(2), and then equals
sqrt(2 pi) s sqrt(pi / a) exp(b^2 / (4 a) + c) (``weight_second_moment``).  For
q1 = N(2, 2^2), s = 2: finite only for theta < 2 sqrt(2) = 2.83; beyond it the
weights have infinite variance, Zhat is dominated by rare draws far in the tails and
log Zhat (hence J_GL) has a heavy lower tail that does not shrink with M.  For
q2 = N(2, (2 + theta)^2), s = 2 + theta > theta / sqrt(2) for every theta > 0, so the
variance is finite everywhere and shrinks as 1/M.  (As theta -> 2 sqrt(2) from
below the variance still blows up continuously, which is why the q1 band widens
already before 2.8.)
"""
import math

import numpy as np

from ..energies.parametric import GaussianStd
from ..ensemble import Ensemble
from ..errors import FitDivergenceError
from ..kernels.reductions import gaussian_std_rows, log_mean_exp
from ..moves import IndependentMH, Move, Resample
from ..random import Purpose, Stream
from ..simulation import Simulation
from .contrastive import contrastive_gradient
from .contrastive import flatten as flatten_params
from .contrastive import unflatten

ROUTES = ("is", "imh", "is_resample")


# ------------------------------------------------------------------ proposals
class GaussianProposal:
    """q(y | theta) = N(mu(theta), s(theta)^2 I_d), normalised.

    ``mean`` and ``std`` are numbers or callables of the parameter dict (for a
    theta-dependent proposal such as paper 003's q2(. | theta) = N(2, (2 + theta)^2):
    ``GaussianProposal(2.0, lambda p: 2.0 + float(p["std"]))``)."""

    def __init__(self, mean, std, dim=1):
        self.mean, self.std, self.dim = mean, std, int(dim)
        self.depends_on_theta = callable(mean) or callable(std)
        if not self.depends_on_theta:
            self.moments(None)

    def moments(self, params):
        mu = float(self.mean(params) if callable(self.mean) else self.mean)
        s = float(self.std(params) if callable(self.std) else self.std)
        if not (math.isfinite(mu) and math.isfinite(s) and s > 0):
            raise ValueError(f"proposal needs a finite mean and a positive std; got mean {mu}, std {s}")
        return mu, s

    def draw(self, z, params):
        mu, s = self.moments(params)
        return mu + s * z

    def log_pdf(self, y, params):
        mu, s = self.moments(params)
        u = (y.reshape(y.shape[0], -1) - mu) * (1.0 / s)
        sq = u[:, 0] * u[:, 0] if u.shape[1] == 1 else np.einsum("ij,ij->i", u, u)
        return -0.5 * sq - self.dim * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def at(self, params):
        """This proposal frozen at ``params``, as an energy (value = -log q) with
        ``sample(stream, step, ids, dtype)``, for ``moves.IndependentMH``."""
        return _FrozenProposal(self, params)


class _FrozenProposal:
    def __init__(self, q, params):
        self.q, self.params, self.dim = q, params, q.dim

    def value(self, x):
        return -self.q.log_pdf(x, self.params)

    def sample(self, stream, step, ids, dtype=np.float64, purpose=Purpose.PROPOSAL):
        z = stream.normal(step, ids, self.dim, purpose, dtype)
        return self.q.draw(z, self.params).astype(dtype)


def weight_second_moment(theta, mu, s):
    """E_q[w^2] for phi(y) = exp(-y^2 / (2 theta^2)), q = N(mu, s^2), one dimension
    (derivation in the module docstring); inf where it diverges (s <= theta / sqrt 2)."""
    a = 1.0 / theta ** 2 - 1.0 / (2 * s ** 2)
    if a <= 0:
        return math.inf
    b, c = -mu / s ** 2, mu ** 2 / (2 * s ** 2)
    return math.sqrt(2 * math.pi) * s * math.sqrt(math.pi / a) * math.exp(b * b / (4 * a) + c)


def _log_mean_exp_rows(lw):
    """log mean_m exp(lw[r, m]) and the ESS (sum w)^2 / sum w^2 of each row."""
    if isinstance(lw, np.ndarray):
        return log_mean_exp(lw)
    m = lw.max(axis=1, keepdims=True)
    e = np.exp(lw - m)
    s1 = e.sum(1)
    s2 = (e * e).sum(1)
    return m[:, 0] + np.log(s1) - math.log(lw.shape[1]), s1 * s1 / s2


# ------------------------------------------------------------------ estimator
class ImportanceML:
    """Geyer's importance-sampling ML estimator over ``runs`` independent replicas.

    Parameters
    ----------
    energy : a family with ``params``, ``set_params``, ``value`` and ``grad_params``
        (``GaussianStd``, ``GaussianPrecision``, ``MLP``, ``ConvNet``, ...)
    data : [N, *event_shape] observations
    proposal : ``GaussianProposal`` (normalised, possibly theta-dependent)
    M : proposal draws per run
    runs : independent replicas (each its own common random numbers)
    seed : Philox seed; run r draws its proposal noise from stream r
    """

    def __init__(self, energy, data, proposal, M, runs=1, seed=0):
        data = np.asarray(data, dtype=np.float64)
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must have shape (N, *event_shape) with N >= 1; got {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("data contains NaN or Inf values; remove or impute them first")
        if int(M) < 1 or int(runs) < 1:
            raise ValueError(f"M and runs must be >= 1; got M={M}, runs={runs}")
        d = int(np.prod(data.shape[1:]))
        if proposal.dim != d:
            raise ValueError(f"proposal has dimension {proposal.dim} but the data have dimension {d}")
        self.energy, self.data, self.proposal = energy, data, proposal
        self.M, self.runs, self.seed, self.dim = int(M), int(runs), int(seed), d
        self.N = data.shape[0]
        # common random numbers: z[r, m] ~ N(0, I), step 0 of stream r, ids 0..M-1
        # (so M = 100 uses the first 100 of the M = 5000 draws of the same run)
        self.z = np.stack([Stream(self.seed, r).normal(0, np.arange(self.M), d, Purpose.PROPOSAL)
                           for r in range(self.runs)])
        self._chains = {}
        self._resamplers = {}
        self._frozen = self.proposal.at(None)          # params set before each use
        self._imh = IndependentMH(self.energy, self._frozen)

    # ---------------------------------------------------------- J_GL over runs
    def _with_params(self, params):
        if params is not None:
            self.energy.set_params(params)
        return self.energy.params

    def draws(self, params=None):
        """Proposal draws y [runs, M, *event_shape] at ``params`` (common random numbers)."""
        return self.proposal.draw(self.z, self._with_params(params)).reshape(
            (self.runs, self.M) + self.data.shape[1:])

    def log_weights(self, params=None):
        """(y, log w) with log w[r, m] = -E(y_rm | theta) - log q(y_rm | theta)."""
        p = self._with_params(params)
        y = self.draws(p)
        flat = y.reshape((-1,) + self.data.shape[1:])
        lw = -self.energy.value(flat) - self.proposal.log_pdf(flat, p)
        return y, lw.reshape(self.runs, self.M)

    def objective(self, params=None, chunk_elements=1 << 18):
        """J_GL per run (Eq. 8) with log Zhat and the weights' ESS: three [runs] arrays.
        Runs are processed in chunks of about ``chunk_elements`` draws (cache-sized)."""
        p = self._with_params(params)
        log_z = np.empty(self.runs)
        ess = np.empty(self.runs)
        if self._fused_gaussian():
            # the paper's Section 7 family: one fused pass per run (kernels/reductions.py)
            mu, s = self.proposal.moments(p)
            gaussian_std_rows(self.z, mu, s, 0.5 / self.energy.std ** 2, log_z, ess)
            return self.energy.value(self.data).sum() + self.N * log_z, log_z, ess
        step = max(1, chunk_elements // self.M)
        for r0 in range(0, self.runs, step):
            r1 = min(self.runs, r0 + step)
            y = self.proposal.draw(self.z[r0:r1], p).reshape((-1,) + self.data.shape[1:])
            lw = -self.energy.value(y) - self.proposal.log_pdf(y, p)
            log_z[r0:r1], ess[r0:r1] = _log_mean_exp_rows(lw.reshape(r1 - r0, self.M))
        return self.energy.value(self.data).sum() + self.N * log_z, log_z, ess

    fused = True

    def _fused_gaussian(self):
        return self.fused and type(self.energy) is GaussianStd and type(self.proposal) is GaussianProposal

    def _event(self, y):
        return y.reshape((-1,) + self.data.shape[1:])

    # ---------------------------------------------------------- gradients
    def grad(self, params=None, run=0, route="is", step=0, scheme="systematic", chains=None):
        """Gradient of J (dict like ``params``) for one run by ``route``; ``step``
        numbers the fresh draws of the stochastic routes (an iteration counter).
        ``chains``: dict run -> Ensemble of the persistent IMH chains (default: the
        estimator's own)."""
        p = self._with_params(params)
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; valid routes: {', '.join(ROUTES)}")
        stream = Stream(self.seed, run)
        if route == "is":
            return self._is_grad(*self._is_draws(p, run))
        if route == "is_resample":
            z = stream.normal(step + 1, np.arange(self.M), self.dim, Purpose.PROPOSAL)
            ens = Ensemble(self._event(self.proposal.draw(z, p)))
            ens.log_weights = -self.energy.value(ens.x) - self.proposal.log_pdf(ens.x, p)   # Eq. 19
            self._resampler(scheme)(ens, stream, step)
            samples, c = ens.x, np.full(self.M, 1.0 / self.M)
        else:  # imh: persistent chains, one independent-MH step per call
            chains = self._chains if chains is None else chains
            ens = chains.get(run)
            if ens is None:
                ens = Ensemble(self._event(self.proposal.draw(self.z[run], p)))
                chains[run] = ens
            self._frozen.params = p
            self._imh(ens, stream, step + 1)
            samples, c = ens.x, np.full(self.M, 1.0 / self.M)
        return self._grad_from(samples, c)

    def _resampler(self, scheme):
        mv = self._resamplers.get(scheme)
        if mv is None:
            mv = self._resamplers[scheme] = Resample(scheme)
        return mv

    def _is_draws(self, p, run):
        """This run's fixed proposal draws y and their log-weights at ``p``."""
        y = self._event(self.proposal.draw(self.z[run], p))
        return y, -self.energy.value(y) - self.proposal.log_pdf(y, p)

    def _is_grad(self, y, lw):
        w = np.exp(lw - lw.max())
        return self._grad_from(y, w / w.sum())                         # Eqs. 12-13

    def _grad_from(self, samples, c):
        """sum_n grad E(x_n) - N sum_m c_m grad E(y_m)  (Eqs. 12, 17)."""
        return contrastive_gradient(self.energy, self.data, samples, np.ones(self.N), c, negative_scale=self.N)

    # ---------------------------------------------------------- minimisation
    def fit(self, params0, run=0, route="is", iterations=100, learning_rate=1.0, average_last=0,
            scheme="systematic", max_step=None):
        """Gradient descent theta <- theta - lr * grad J / N for one run: a Simulation
        of one ``ImportanceDescent`` move on a one-particle ensemble.  Returns
        (params, history): params averages the last ``average_last`` iterates
        (Polyak-Ruppert; the stochastic routes fluctuate around the optimum) or is
        the last iterate; history lists the iterates."""
        ens = Ensemble(flatten_params(params0)[None, :], name="theta")
        mv = ImportanceDescent(self, route, [run], params0, iterations, learning_rate, average_last,
                               scheme, max_step)
        sim = Simulation({"theta": ens}, seed=self.seed).schedule(mv, "theta", name="descent")
        hist = []
        sim.run(iterations, progress=lambda s: hist.append(mv.params_of(s.ensembles["theta"].x[0])))
        return mv.estimate(ens)[0], hist

    def fit_lbfgs(self, params0, run=0, bounds=None, tol=1e-10):
        """Minimise J_GL of one run with scipy's L-BFGS-B (deterministic objective:
        only for proposals independent of theta).  ``bounds``: dict name -> (lo, hi)."""
        from scipy.optimize import minimize
        if self.proposal.depends_on_theta:
            raise ValueError("L-BFGS needs a deterministic J_GL: use a proposal independent of "
                             "theta, or gradient descent (fit) for a theta-dependent one")
        names = list(params0)
        shapes = [np.shape(params0[k]) for k in names]
        sizes = [int(np.prod(s)) for s in shapes]

        def unflat(v):
            out, i = {}, 0
            for k, s, n in zip(names, shapes, sizes):
                out[k] = v[i:i + n].reshape(s)
                i += n
            return out

        def fg(v):
            p = unflat(v)
            self.energy.set_params(p)
            y, lw = self._is_draws(p, run)
            log_z, _ = _log_mean_exp_rows(lw[None])
            J = self.energy.value(self.data).sum() + self.N * log_z[0]
            g = self._is_grad(y, lw)
            return J / self.N, np.concatenate([np.ravel(g[k]) for k in names]) / self.N

        b = None
        if bounds:
            b = []
            for k, n in zip(names, sizes):
                b += [bounds.get(k, (None, None))] * n
        v0 = np.concatenate([np.ravel(np.asarray(params0[k], float)) for k in names])
        res = minimize(fg, v0, jac=True, method="L-BFGS-B", bounds=b, options={"gtol": tol, "ftol": tol})
        return unflat(res.x), res


class ImportanceDescent(Move):
    """One gradient-descent iteration theta <- theta - lr grad J_GL / N per particle,
    where particle i of the ensemble is the parameter vector of run ``runs[i]`` of an
    ``ImportanceML`` estimator, and the gradient comes by ``route`` (Eq. 12, or Eq. 17
    with IMH or resampled samples).  The step number selects the fresh draws of the
    stochastic routes.  ``max_step`` clips the Euclidean norm of each update: with few
    draws a resampled or IMH sample can sit far in the tail (y^2 >> theta^2), and one
    such gradient would throw theta out of the family.  The last ``average_last``
    iterates are kept for the Polyak-Ruppert average (``estimate``).

    State (checkpointed): the persistent IMH chains and the kept iterates."""

    stats_keys = ()

    def __init__(self, estimator, route, runs, params0, iterations, learning_rate=1.0, average_last=0,
                 scheme="systematic", max_step=None):
        super().__init__()
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; valid routes: {', '.join(ROUTES)}")
        if iterations < 1 or not learning_rate > 0:
            raise ValueError("iterations must be >= 1 and learning_rate > 0")
        if max_step is not None and not max_step > 0:
            raise ValueError(f"max_step must be > 0; got {max_step}")
        self.est, self.route, self.runs = estimator, route, [int(r) for r in runs]
        self.names = list(params0)
        self.like = {k: np.zeros(np.shape(params0[k])) for k in self.names}
        self.iterations, self.learning_rate = int(iterations), float(learning_rate)
        self.average_last, self.scheme, self.max_step = int(average_last), scheme, max_step
        self.chains = {}
        self.tail = [[] for _ in self.runs]

    def params_of(self, v):
        """The parameter dict of a flattened particle."""
        return unflatten(self.like, np.asarray(v, dtype=np.float64))

    def _step(self, ens, stream, step):
        new_x = ens.x.copy()
        for i, run in enumerate(self.runs):
            p = self.params_of(ens.x[i])
            g = self.est.grad(p, run, self.route, step=step, scheme=self.scheme, chains=self.chains)
            upd = {k: self.learning_rate * g[k] / self.est.N for k in p}
            if self.max_step is not None:
                norm = math.sqrt(sum(float((u * u).sum()) for u in upd.values()))
                if norm > self.max_step:
                    upd = {k: u * (self.max_step / norm) for k, u in upd.items()}
            new = {k: p[k] - upd[k] for k in p}
            if not all(np.isfinite(v).all() for v in new.values()):
                raise FitDivergenceError(f"importance ML fit diverged at iteration {step} (route {self.route}, "
                                         f"run {run}); lower the learning rate")
            try:
                self.est.energy.set_params(new)
            except ValueError as e:
                raise FitDivergenceError(f"importance ML fit left the model family at iteration {step} "
                                         f"(route {self.route}, run {run}): {e}; lower the learning rate") from None
            new_x[i] = flatten_params(new)
            if self.average_last and step >= self.iterations - self.average_last:
                self.tail[i].append(new)
        ens.x = new_x
        return {}

    def estimate(self, ens):
        """Per run: the average of the kept iterates, or the current iterate."""
        out = []
        for i in range(len(self.runs)):
            if self.average_last and self.tail[i]:
                out.append({k: np.mean([q[k] for q in self.tail[i]], axis=0) for k in self.names})
            else:
                out.append(self.params_of(ens.x[i]))
        return out

    def state_dict(self):
        return {"chains": {str(r): e.x for r, e in self.chains.items()},
                "tail": {str(i): np.array([flatten_params(q) for q in t]) for i, t in enumerate(self.tail) if t}}

    def load_state_dict(self, state):
        self.chains = {int(r): Ensemble(np.asarray(x)) for r, x in state.get("chains", {}).items()}
        self.tail = [[] for _ in self.runs]
        for i, a in state.get("tail", {}).items():
            self.tail[int(i)] = [self.params_of(v) for v in np.asarray(a)]
