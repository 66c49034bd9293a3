"""What several experiments share: the figure backend and the bundled image sets."""
import numpy as np
from scipy import ndimage

from .. import datasets


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (the optional 'plot' extra)."""
    import matplotlib  # optional dependency: the 'plot' extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, png, dpi=90, tight=True):
    """Lay out (``tight``), write and close ``fig``; returns ``png``."""
    if tight:
        fig.tight_layout()
    fig.savefig(png, dpi=dpi)
    pyplot().close(fig)
    return png


def grey_images(data):
    """[n, S, S] float64 grey levels in [0, 1] for a config's ``data`` table:
    scikit-learn's digits (``kind = "digits"``, S = 8) or scikit-image's LFW faces
    resized to ``image_size`` (bilinear, clipped back to [0, 1])."""
    if data["kind"] == "digits":
        return datasets.digits()[0]
    x = datasets.faces()
    size = data["image_size"]
    if size != x.shape[1]:
        x = np.clip(ndimage.zoom(x, (1, size / x.shape[1], size / x.shape[2]), order=1), 0, 1)
    return x
