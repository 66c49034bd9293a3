"""Row reductions for importance weights (paper 003): for each row r of log-weights
``lw [R, M]``

    log_mean[r] = log (1/M) sum_m exp(lw[r, m])      (log-sum-exp, max-shifted)
    ess[r]      = (sum_m w)^2 / sum_m w^2             (Kish effective sample size)

in two passes over the row (max, then sums of w and w^2 with the vectorisable exp of
``vmath``), instead of numpy's ~6 passes with [R, M] temporaries.  Rows are
independent and each is summed in a fixed order, so results do not depend on the
thread count.  CPU only: on the GPU the numpy expressions run as CuPy reductions.
"""
import math

import numba
import numpy as np
from numba import prange

from . import _jit
from .vmath import exp64


@numba.njit(inline="always", error_model="numpy")
def _row_stats(row, buf, M):
    """(log mean exp, ESS) of row[:M]; buf is scratch of length >= M."""
    mx = row[0]
    for m in range(1, M):
        mx = max(mx, row[m])
    for m in range(M):                      # no reduction: vectorises
        buf[m] = exp64(row[m] - mx)
    s1 = 0.0
    s2 = 0.0
    for m in range(M):
        s1 += buf[m]
        s2 += buf[m] * buf[m]
    return mx + math.log(s1) - math.log(M), s1 * s1 / s2


@numba.njit(parallel=True, error_model="numpy", cache=True)
def log_mean_exp_rows(lw, log_mean, ess):
    R, M = lw.shape
    for r in prange(R):
        buf = np.empty(M)
        log_mean[r], ess[r] = _row_stats(lw[r], buf, M)


@numba.njit(parallel=True, error_model="numpy", cache=True)
def gaussian_std_rows(z, mu, s, coef, log_mean, ess):
    """Fused importance weights of the isotropic Gaussian family against a Gaussian
    proposal, per row r of common random numbers ``z [R, M, d]``:
    y = mu + s z,  log w = -coef |y|^2 - log q(y),  log q(y) = -|z|^2/2 - d (log s + log(2 pi)/2),
    with coef = 1 / (2 theta^2) (``energies.GaussianStd``).  Same numbers as the
    generic path of ``ImportanceML.objective`` (tested), in one pass per row."""
    R, M, d = z.shape
    const = d * (math.log(s) + 0.5 * math.log(2 * math.pi))
    for r in prange(R):
        lw = np.empty(M)
        buf = np.empty(M)
        for m in range(M):
            acc_y = 0.0
            acc_z = 0.0
            for k in range(d):
                zk = z[r, m, k]
                yk = mu + s * zk
                acc_y += yk * yk
                acc_z += zk * zk
            lw[m] = -coef * acc_y + 0.5 * acc_z + const
        log_mean[r], ess[r] = _row_stats(lw, buf, M)


def log_mean_exp(lw):
    """(log_mean [R], ess [R]) of a float64 array ``lw [R, M]``."""
    lw = np.ascontiguousarray(lw, dtype=np.float64)
    out = np.empty(lw.shape[0])
    ess = np.empty(lw.shape[0])
    log_mean_exp_rows(lw, out, ess)
    return out, ess


@numba.njit(inline="always", error_model="numpy")
def _block_sum(x, s0, s1, out_row):
    k = x.shape[1]
    acc = np.zeros(k)
    for i in range(s0, s1):
        for j in range(k):
            acc[j] += x[i, j]
    for j in range(k):
        out_row[j] = acc[j]


@numba.njit(parallel=True, error_model="numpy", cache=True)
def _block_sums_threaded(x, bl, out):
    n = x.shape[0]
    for b in prange(out.shape[0]):
        _block_sum(x, b * bl, min(n, b * bl + bl), out[b])


@numba.njit(error_model="numpy", cache=True)
def _block_sums_serial(x, bl, out):
    n = x.shape[0]
    for b in range(out.shape[0]):
        _block_sum(x, b * bl, min(n, b * bl + bl), out[b])


def block_sums(x, bl, out):
    """out[b, k] = sum of x[i, k] over the rows i of block b (rows b*bl .. b*bl+bl-1),
    accumulated in float64 in row order.  One thread owns a block, so each partial
    sum is the same for any thread count and for any split of the rows into shards
    that start at multiples of ``bl`` (``particleflow.parallel``).  Up to
    ``_jit.SERIAL_MAX`` rows the calling thread sums alone (the same numbers)."""
    (_block_sums_serial if x.shape[0] <= _jit.SERIAL_MAX else _block_sums_threaded)(x, bl, out)
