"""Exceptions of particleflow."""


class DivergenceError(RuntimeError):
    """A NaN or Inf appeared in an ensemble; names the ensemble, the step and the move."""

    def __init__(self, ensemble, step, move, what="positions"):
        self.ensemble = ensemble
        self.step = step
        self.move = move
        super().__init__(
            f"ensemble {ensemble!r} diverged at step {step} in move {move}: NaN or Inf "
            f"in its {what}. Reduce the step size or check the energy's gradient.")


class FitDivergenceError(RuntimeError):
    """A parameter fit left its domain (NaN, Inf, or outside the model family);
    the message names the estimator, the iteration and the fix."""


class Terminated(BaseException):
    """SIGTERM outside a run's own signal handling (start-up, reading the config,
    after the run): the command line ends with exit code 143 and one line."""


class ConvergenceWarning(UserWarning):
    """A sampler diagnostic failed (nested R-hat above its threshold, stuck chains,
    divergent transitions): the draws may not represent the target."""
