"""Preconditioners (mass matrices) for MALA and HMC, and their estimate from an ensemble.

A preconditioner is a covariance C = L L^T.  The samplers run in the whitened
coordinates w with x = L w, where the energy is E(L w) and its gradient L^T grad E(x):

    MALA   y = x + L (-h L^T g + sqrt(2 h) z),  the proposal N(x - h C g, 2 h C);
    HMC    p ~ N(0, I);  p <- p - h/2 L^T g;  x <- x + h L p  (mass matrix M = C^-1).

The Jacobian of x = L w is constant, so it cancels in every acceptance ratio, and the
backward MALA residual needs no triangular solve (see ``MALA``).  With C the target's
covariance a Gaussian target becomes isotropic, whatever its condition number.

``"diag"`` keeps L = diag(sqrt(c_ii)); ``"dense"`` keeps the Cholesky factor.  Products
with L run in ``kernels.linalg.rows_matvec`` on the CPU (a fixed summation order per
row, never BLAS, so results do not depend on threads or on a rank's row count), and
the Cholesky factor is computed in column order by ``cholesky``
below for the same reason (it is bitwise the same for any thread or rank count).
"""
import numpy as np

from ..backend import to_numpy
from ..kernels.linalg import rows_times

KINDS = ("diag", "dense")


def cholesky(a):
    """Lower Cholesky factor of a symmetric positive-definite float64 matrix, column by
    column with numpy's pairwise sums (no LAPACK: its blocking may depend on threads)."""
    a = np.asarray(a, dtype=np.float64)
    d = a.shape[0]
    L = np.zeros_like(a)
    for j in range(d):
        s = a[j, j] - np.sum(L[j, :j] * L[j, :j])
        if not s > 0:
            raise ValueError("the covariance is not positive definite (a zero or negative pivot); "
                             "use a diagonal preconditioner or more particles")
        L[j, j] = np.sqrt(s)
        if j + 1 < d:
            L[j + 1:, j] = (a[j + 1:, j] - np.sum(L[j + 1:, :j] * L[j, :j], axis=1)) / L[j, j]
    return L


class Preconditioner:
    """A covariance C given as variances [dim] (diagonal) or a matrix [dim, dim] (dense)."""

    def __init__(self, cov):
        c = np.array(cov, dtype=np.float64)
        if c.ndim == 1:
            if not (np.isfinite(c).all() and (c > 0).all()):
                raise ValueError("a diagonal preconditioner needs positive finite variances [dim]")
            self.kind, self.factor = "diag", np.sqrt(c)
        elif c.ndim == 2 and c.shape[0] == c.shape[1]:
            if not np.isfinite(c).all() or not np.allclose(c, c.T, rtol=0, atol=1e-9 * np.abs(c).max()):
                raise ValueError("a dense preconditioner needs a finite symmetric covariance [dim, dim]")
            self.kind, self.factor = "dense", cholesky(0.5 * (c + c.T))
        else:
            raise ValueError(f"a preconditioner is a covariance: variances [dim] or a matrix [dim, dim]; "
                             f"got shape {c.shape}")
        self.cov = c
        self.dim = c.shape[0]
        self._cast = {}

    def _L(self, like, xp, transposed=False):
        key = (np.dtype(like).str, xp.__name__, transposed)
        if key not in self._cast:
            f = self.factor.T if transposed else self.factor
            self._cast[key] = xp.ascontiguousarray(xp.asarray(f, dtype=like))
        return self._cast[key]

    def _rows(self, v, xp, transposed):
        """L v (transposed=False) or L^T v for the rows of v, as v @ B with B = L^T or L
        kept in the row kernel's layout."""
        if self.kind == "diag":
            return v * self._L(v.dtype, xp)
        B = self._L(v.dtype, xp, not transposed)
        return rows_times(v, B) if xp is np else v @ B

    def forward(self, v, xp=np):
        """L v for the rows of ``v`` [n, dim]."""
        return self._rows(v, xp, False)

    def transpose(self, g, xp=np):
        """L^T g for the rows of ``g`` [n, dim]."""
        return self._rows(g, xp, True)

    def __repr__(self):
        return f"Preconditioner({self.kind}, dim={self.dim})"


def as_preconditioner(value, what="precond"):
    if value is None or isinstance(value, Preconditioner):
        return value
    try:
        return Preconditioner(value)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def shrunk_to_diagonal(S, n):
    """(1 - lam) S + lam diag(S), lam = max(0, 1 - n / (2 d)): a plug-in covariance of n
    particles in dimension d, moved linearly to its diagonal below 2 d particles."""
    d = S.shape[0]
    lam = max(0.0, 1.0 - n / (2.0 * d))
    return (1.0 - lam) * S + lam * np.diag(np.diag(S).copy())


def regulariser(n, scale):
    """Stan's small diagonal regulariser made scale-free: 1e-3 * 5 / (n + 5) * scale."""
    return 1e-3 * 5.0 / (n + 5.0) * scale


def ensemble_covariance(ensemble, kind):
    """The ensemble's covariance as a regularised preconditioner (cross-chain estimate).

    With n particles in dimension d the plug-in covariance S becomes
        diag:   diag(S) + eps I
        dense:  (1 - lam) S + lam diag(S) + eps I,   lam = max(0, 1 - n / (2 d))
    with eps = 1e-3 * 5 / (n + 5) * mean(diag S), Stan's small regulariser made scale-free.
    An ensemble of at least 2 d particles is used as it is: any shrinkage toward the
    diagonal adds a multiple of the *mean* variance to every direction, which on a
    rotated ill-conditioned target (variances 1e-2 to 1e2) swamps the small ones
    (a Ledoit-Wolf weight of 0.006 made them 7x too wide).  Below 2 d the sample
    covariance is singular or too noisy to invert, and the weight moves linearly to the
    diagonal estimate."""
    if kind not in KINDS:
        raise ValueError(f"mass adaptation must be one of {KINDS}; got {kind!r}")
    S = to_numpy(ensemble.cov()).astype(np.float64)
    if not np.isfinite(S).all():
        raise ValueError("the ensemble's covariance is not finite; the warm-up diverged "
                         "(lower the initial step size)")
    n, d = ensemble.n_global, S.shape[0]
    diag = np.diag(S).copy()
    eps = regulariser(n, max(float(diag.mean()), np.finfo(np.float64).tiny))
    if kind == "diag":
        return Preconditioner(diag + eps)
    return Preconditioner(shrunk_to_diagonal(S, n) + eps * np.eye(d))
