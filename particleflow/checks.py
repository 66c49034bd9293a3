"""Argument checks shared by every layer: one message form for a bad number."""
import numbers

import numpy as np


def positive(value, what):
    """A positive finite float, or a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{what} must be a positive finite number; got {value!r}")
    return float(value)


def probability(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be a number in [0, 1]; got {value!r}")
    return float(value)


def block_rows(value, what):
    """None, or a number of rows per block: an integer >= 1 (a ValueError naming ``what``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be None or an integer >= 1; got {value!r}")
    return int(value)
