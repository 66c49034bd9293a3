"""Minibatches of a data set for estimators: rows drawn with replacement and
Gaussian data noise, both from the Philox streams (a pure function of seed, step and
split), and the checks of a data array against a model."""
import math

import numpy as np

from ..backend import fast_paths_on
from ..kernels.batches import noisy_rows
from ..random import Purpose, Stream, StreamBlock, _check_step

# the split of a batch: its stream is StreamBlock.DATA + split
TRAIN, HELDOUT = StreamBlock.TRAIN - StreamBlock.DATA, StreamBlock.HELDOUT - StreamBlock.DATA


def noisy_batch(data, sigma, seed, step, batch_size, split=TRAIN):
    """(x, xi) for ``step``: ``batch_size`` data rows drawn uniformly with replacement
    and their noisy copies xi = x + sigma z, both from the Philox streams (a pure
    function of seed, step and split).  C-contiguous float data on the host take one
    compiled call (``kernels.batches.noisy_rows``), bitwise the array code below."""
    stream = Stream(seed, StreamBlock.DATA + split)
    if (isinstance(data, np.ndarray) and data.dtype in (np.float32, np.float64) and data.ndim >= 2
            and data.flags.c_contiguous and data.shape[0] >= 1 and data[0].size >= 1 and fast_paths_on()):
        _check_step(step)                  # one compiled call, bitwise the array code below
        x, xi = noisy_rows(data.reshape(data.shape[0], -1), sigma, int(batch_size), int(step),
                           stream.key(Purpose.MINIBATCH), stream.key(Purpose.DATA_NOISE))
        return x.reshape((batch_size,) + data.shape[1:]), xi.reshape((batch_size,) + data.shape[1:])
    ids = np.arange(batch_size)
    u = stream.uniform(step, ids, 1, Purpose.MINIBATCH)[:, 0]
    rows = np.minimum((u * data.shape[0]).astype(np.int64), data.shape[0] - 1)
    x = data[rows]
    d = math.prod(data.shape[1:])
    z = stream.normal(step, ids, d, Purpose.DATA_NOISE, data.dtype).reshape(x.shape)
    return x, x + data.dtype.type(sigma) * z


def check_data(data, model):
    data = np.asarray(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (n, *event_shape) with n >= 1; got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("data contains NaN or Inf values; remove or impute them first")
    d = int(np.prod(data.shape[1:]))
    if getattr(model, "dim", None) is not None and model.dim != d:
        raise ValueError(f"data have dimension {d} ({data.shape[1:]}) but the model is defined on dimension "
                         f"{model.dim}")
    return data.astype(next(iter(model.params.values())).dtype)


def check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")


__all__ = ["noisy_batch", "check_data", "check_batch_size", "TRAIN", "HELDOUT"]
