"""A 4x4 stride-2 convolution without im2col, against the ConvNet's im2col + GEMM (a
table, not a test): the second layer of the paper-004 net (32 -> 64 channels, 32x32 ->
16x16, one 32-image chunk, float32, one thread).

Space to depth with a one-pixel offset turns the 4x4 stride-2 convolution (padding 1)
into a 2x2 stride-1 one over 2x2 cells of 4 C channels.  On the flattened cell grid
(cells of one image row after another, one extra column and row), output q is
sum over taps (dy, dx) of F[q + dy (W/2 + 1) + dx] W_tap: four GEMMs over contiguous row
slices of F, accumulated in place by BLAS (scipy's sgemm with beta = 1), computing the
padded grid's extra column and row too.  Checked equal to im2col + GEMM (float32
rounding), then both timed in alternating rounds; medians [ranges].

    python bench/bench_conv_s2d.py --rounds 7
"""
import argparse
import os
import statistics

for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
from scipy.linalg import blas  # noqa: E402

from particleflow.kernels import conv as K  # noqa: E402
from particleflow.energies.convnet_cpu import GROUP_ROWS  # noqa: E402

B, H, C, O = 32, 32, 32, 64
HO, HC = H // 2, H // 2 + 1
from _timing import mean_time  # noqa: E402  (bench/_timing.py)


def im2col_gemm(a, Wm):
    cols = np.empty((GROUP_ROWS, 16 * C), np.float32)
    z = np.empty((B * HO * HO, O), np.float32)
    g = GROUP_ROWS // (HO * HO)
    for b0 in range(0, B, g):
        K.im2col(a[b0:b0 + g], 4, 4, 2, 1, HO, HO, cols)
        np.matmul(cols, Wm.T, out=z[b0 * HO * HO:(b0 + g) * HO * HO])
    return z.reshape(B, HO, HO, O)


def space_to_depth(a):
    ap = np.zeros((B, H + 2, H + 2, C), np.float32)
    ap[:, 1:-1, 1:-1] = a
    return np.ascontiguousarray(ap.reshape(B, HC, 2, HC, 2, C).transpose(0, 1, 3, 2, 4, 5).reshape(B * HC * HC, 4 * C))


def shifted_gemms(F, taps):
    m = B * HC * HC - HC - 1
    zt = np.zeros((O, m), np.float32, order="F")         # [O, m] in F order is [m, O] in C order
    for t, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        off = dy * HC + dx
        zt = blas.sgemm(1.0, taps[t], F[off:off + m].T, beta=1.0 if t else 0.0, c=zt, overwrite_c=True)
    full = np.zeros((B * HC * HC, O), np.float32)
    full[:m] = zt.T
    return full.reshape(B, HC, HC, O)[:, :HO, :HO]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    a_ = ap.parse_args()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((B, H, H, C)).astype(np.float32)
    W = (0.1 * rng.standard_normal((O, C, 4, 4))).astype(np.float32)
    Wm = np.ascontiguousarray(W.transpose(0, 2, 3, 1).reshape(O, -1))
    w6 = W.reshape(O, C, 2, 2, 2, 2)                      # o, c, dy, py, dx, px
    taps = [np.asfortranarray(w6[:, :, dy, :, dx, :].transpose(0, 2, 3, 1).reshape(O, 4 * C))
            for dy in (0, 1) for dx in (0, 1)]
    ref, new = im2col_gemm(a, Wm), shifted_gemms(space_to_depth(a), taps)
    assert np.allclose(ref, new, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    F = space_to_depth(a)
    cases = {"im2col + GEMM (ConvNet today)": lambda: im2col_gemm(a, Wm),
             "space to depth + 4 shifted GEMMs": lambda: shifted_gemms(space_to_depth(a), taps),
             "  of which the 4 shifted GEMMs": lambda: shifted_gemms(F, taps)}
    times = {k: [] for k in cases}
    for _ in range(a_.rounds):
        for k, fn in cases.items():
            times[k].append(mean_time(fn, 10))
    print(f"| forward of layer 2, one 32-image chunk | ms |  ({a_.rounds} rounds, one thread, medians [ranges])")
    print("|---|---|")
    for k, v in times.items():
        print(f"| {k} | {1e3 * statistics.median(v):.2f} [{1e3 * min(v):.2f}-{1e3 * max(v):.2f}] |")


if __name__ == "__main__":
    main()
