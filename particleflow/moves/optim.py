"""Optimisers as deterministic moves on a parameter ensemble.

An optimiser moves the positions ``x`` of an ensemble (a parameter vector, or n
parameter vectors trained in parallel) along ``grad(ensemble) -> array like x``, the
gradient of the loss being minimised.  Conventions follow PyTorch:

* SGD:  b <- mu b + (g + lambda x);  x <- x - lr b   (b = g at the first step)
* Adam: m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
        x <- x - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
  with L2 weight decay (g += lambda x) or decoupled (AdamW: x <- x (1 - lr lambda) first).
* StepDecay(lr, step_size, gamma): lr_t = lr gamma^floor(t / step_size).
* CosineDecay(lr, steps, final=0): lr_t = final + (lr - final) (1 + cos(pi min(t, steps) / steps)) / 2.

The learning-rate schedule is evaluated at the Simulation's step (the ``step``
argument of the move), so "decay every 1000 steps" means steps of the run whatever
the move's ``every``; Adam's bias correction counts the optimiser's own updates
``t``.  Their state (moments, update count) is returned by ``state_dict()`` and
restored by ``load_state_dict()`` for checkpoints; a restored optimiser continues
bitwise.
"""
import math

import numpy as np

from ..backend import to_device, to_numpy
from . import fastpaths
from ..checks import positive
from .base import Move


class StepDecay:
    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = positive(lr, "lr")
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be an integer >= 1; got {step_size!r}")
        self.step_size = step_size
        self.gamma = positive(gamma, "gamma")

    def __call__(self, t):
        return self.lr * self.gamma ** (t // self.step_size)


class CosineDecay:
    def __init__(self, lr, steps, final=0.0):
        self.lr = positive(lr, "lr")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
        self.steps = steps
        if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0 <= final <= lr:
            raise ValueError(f"final must be a number in [0, lr]; got {final!r}")
        self.final = float(final)

    def __call__(self, t):
        return self.final + (self.lr - self.final) * 0.5 * (1 + math.cos(math.pi * min(t, self.steps) / self.steps))


def _schedule(lr):
    if callable(lr):
        return lr
    value = positive(lr, "lr")
    return lambda t: value


class _Optimiser(Move):
    stats_keys = ("lr",)

    def __init__(self, grad, lr, weight_decay):
        super().__init__()
        if not callable(grad):
            raise ValueError("grad must be a callable ensemble -> gradient array like ensemble.x")
        self.grad = grad
        self.lr = _schedule(lr)
        if not math.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state = {}

    def _gradient(self, ens):
        g = self.grad(ens)
        if g.shape != ens.x.shape:
            raise ValueError(f"grad returned shape {g.shape}; expected {ens.x.shape}")
        return g

    def state_dict(self):
        return {"t": self.t, **{k: to_numpy(v) for k, v in self.state.items()}}

    def load_state_dict(self, d):
        d = dict(d)
        self.t = int(d.pop("t"))
        self.state = {k: to_device(np.asarray(v), self.device or "cpu") for k, v in d.items()}


class SGD(_Optimiser):
    def __init__(self, grad, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(grad, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.momentum = float(momentum)

    def _step(self, ens, stream, step):
        fl = ens.dtype.type
        g = self._gradient(ens)
        if self.weight_decay:
            g = g + fl(self.weight_decay) * ens.x
        if self.momentum:
            b = self.state.get("momentum")
            b = g.copy() if b is None else fl(self.momentum) * b + g
            self.state["momentum"] = b
            g = b
        lr = self.lr(step)
        ens.x = ens.x - fl(lr) * g
        self.t += 1
        return {"lr": lr}


class Adam(_Optimiser):
    def __init__(self, grad, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(grad, lr, weight_decay)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1); got {betas!r}")
        self.b1, self.b2 = float(b1), float(b2)
        self.eps = positive(eps, "eps")
        self.decoupled = bool(decoupled)

    def _step(self, ens, stream, step):
        xp = ens.xp
        fl = ens.dtype.type
        lr = self.lr(step)
        x = ens.x
        g = self._gradient(ens)
        if self.weight_decay:
            if self.decoupled:
                x = x * fl(1 - lr * self.weight_decay)
            else:
                g = g + fl(self.weight_decay) * x
        m, v = self.state.get("m"), self.state.get("v")
        if m is None:
            m, v = xp.zeros_like(x), xp.zeros_like(x)
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        fast = fastpaths.lookup("adam", x)
        done = fast is not None and fast(x, g, m, v, self.b1, self.b2, c1, c2, lr, self.eps)
        if done:                   # one fused pass, bitwise the array expressions below
            ens.x, m, v = done
        else:
            m = fl(self.b1) * m + fl(1 - self.b1) * g
            v = fl(self.b2) * v + fl(1 - self.b2) * g * g
            mhat = m / fl(c1)
            vhat = v / fl(c2)
            ens.x = x - fl(lr) * mhat / (xp.sqrt(vhat) + fl(self.eps))
        self.state["m"], self.state["v"] = m, v
        return {"lr": lr}
