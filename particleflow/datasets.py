"""Image data sets that ship inside Python packages (nothing is downloaded at run time).

* ``digits()``: scikit-learn's 1797 handwritten digits, 8x8, scaled to [0, 1];
* ``photographs(names)`` and ``patches(...)``: grey-level photographs bundled with
  scikit-image (``skimage.data``: camera, grass, gravel, brick, moon, ...; all 512x512)
  scaled to [0, 1], and square patches cut from them at positions drawn from the Philox
  streams (a pure function of the seed);
* ``faces()``: the 100 LFW faces (25x25, grey levels in [0, 1]) of
  ``skimage.data.lfw_subset`` (which also holds 100 non-face crops, left out).

scikit-learn and scikit-image form the optional ``data`` extra
(``pip install 'particleflow[data]'``); without it these functions, and
``require_data_extra`` which configs call before anything is written, raise
``MissingExtraError`` naming the extra.
"""
import importlib
import importlib.util

import numpy as np

from .random import Purpose, Stream, StreamBlock

PHOTOGRAPHS = ("camera", "grass", "gravel", "brick", "moon")
# the photographs that ship inside scikit-image (no download), by name: only these are
# ever called (a config names a function of skimage.data, so the list is explicit)
BUNDLED_PHOTOGRAPHS = ("astronaut", "brick", "camera", "cat", "checkerboard", "chelsea", "clock", "coffee", "coins",
                       "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                       "moon", "page", "rocket", "text")
PACKAGES = {"digits": ("sklearn", "scikit-learn"), "patches": ("skimage", "scikit-image"),
            "faces": ("skimage", "scikit-image")}


class MissingExtraError(ValueError):
    """A data set needs a package of the optional ``data`` extra that is not installed."""


def require_data_extra(kind):
    """Raise ``MissingExtraError`` unless the package behind data set ``kind`` imports."""
    module, dist = PACKAGES[kind]
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"the {kind!r} data set needs {dist}, which is in the optional 'data' extra: "
                                "pip install 'particleflow[data]' (scikit-learn and scikit-image)")


def _import(kind, name):
    require_data_extra(kind)
    return importlib.import_module(name)


def digits():
    """[1797, 8, 8] float64 in [0, 1] (scikit-learn's ``load_digits``, grey levels / 16),
    and the [1797] labels."""
    d = _import("digits", "sklearn.datasets").load_digits()
    return d.images.astype(np.float64) / 16.0, d.target.astype(np.int64)


def check_photographs(names):
    """Raise ``ValueError`` unless every name is one of the photographs bundled with
    scikit-image (``BUNDLED_PHOTOGRAPHS``; checked before a run writes anything)."""
    _import("patches", "skimage.data")
    for name in names:
        if not isinstance(name, str) or name not in BUNDLED_PHOTOGRAPHS:
            raise ValueError(f"unknown photograph {name!r}; valid: {', '.join(BUNDLED_PHOTOGRAPHS)} (the photographs "
                             "bundled with scikit-image)")


def hold_out(x, n_test, seed):
    """(training, test) rows of ``x``: a seeded permutation (Philox stream
    ``StreamBlock.DATASET_SPLIT``) puts ``n_test`` rows in the test part."""
    order = Stream(seed, StreamBlock.DATASET_SPLIT).uniform(0, np.arange(len(x)), 1, Purpose.INIT)[:, 0].argsort()
    return x[order[n_test:]], x[order[:n_test]]


def photographs(names=PHOTOGRAPHS):
    """{name: [H, W] float64 grey levels in [0, 1]} from ``skimage.data``."""
    check_photographs(names)
    data = _import("patches", "skimage.data")
    out = {}
    for name in names:
        img = np.asarray(getattr(data, name)(), dtype=np.float64)
        if img.ndim == 3:                                       # RGB(A): ITU-R 601 luma
            img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
        if img.ndim != 2:
            raise ValueError(f"photograph {name!r} is not an image (shape {img.shape})")
        out[name] = img / 255.0 if img.max() > 1.0 else img
    return out


def patches(images, size, n, seed, split, test_fraction=0.25):
    """``n`` [size, size] patches cut uniformly from ``images`` ({name: [H, W]}): image
    chosen uniformly, top-left corner uniform within the split's rows.  ``split`` 0 takes
    rows from the top ``1 - test_fraction`` of every image, 1 from the bottom part, so
    training and test patches never overlap.  Positions come from the Philox stream
    (seed, ``StreamBlock.SUBSAMPLE + split``)."""
    if split not in (0, 1):
        raise ValueError(f"split must be 0 (training rows) or 1 (test rows); got {split!r}")
    imgs = list(images.values())
    for name, img in images.items():
        cut = int(img.shape[0] * (1 - test_fraction))
        rows = cut if split == 0 else img.shape[0] - cut
        if rows < size or img.shape[1] < size:
            raise ValueError(f"patch size {size} does not fit the {'training' if split == 0 else 'test'} part "
                             f"of photograph {name!r} ({rows}x{img.shape[1]} pixels)")
    u = Stream(seed, StreamBlock.SUBSAMPLE + split).uniform(0, np.arange(n), 3, Purpose.INIT)
    which = np.minimum((u[:, 0] * len(imgs)).astype(np.int64), len(imgs) - 1)
    out = np.empty((n, size, size))
    for i in range(n):
        img = imgs[which[i]]
        cut = int(img.shape[0] * (1 - test_fraction))
        lo, hi = (0, cut - size) if split == 0 else (cut, img.shape[0] - size)
        r = lo + min(int(u[i, 1] * (hi - lo + 1)), hi - lo)
        c = min(int(u[i, 2] * (img.shape[1] - size + 1)), img.shape[1] - size)
        out[i] = img[r:r + size, c:c + size]
    return out


def faces():
    """[100, 25, 25] float64 grey levels in [0, 1]: the faces of ``skimage.data.lfw_subset()``
    (its first 100 images; the other 100 are background crops, not faces)."""
    return np.asarray(_import("faces", "skimage.data").lfw_subset()[:100], dtype=np.float64)


__all__ = ["MissingExtraError", "require_data_extra", "digits", "photographs", "patches", "faces", "check_photographs", "hold_out", "PHOTOGRAPHS"]
