"""Where one Langevin gradient of the paper-004 ConvNet (n_f = 32, 32x32x3, batch 64,
float32, one thread) spends its time, and what Winograd on its 3x3 layer could save at
most (a table, not a test).

The whole grad_x pass is timed, then the first (3x3, stride 1) layer's pieces on their
own with the same kernels and shapes: im2col [64*32*32, 27], the forward GEMM
[65536, 27] x [27, 32], the input-gradient GEMM [65536, 32] x [32, 27] and col2im back
to the image.  Winograd F(2x2, 3x3) replaces 36 multiplies per 2x2 output tile by 16,
so at best it removes 1 - 16/36 = 56 % of that layer's GEMM time (its input and output
transforms cost extra passes).  Rounds alternate the measurements; medians [ranges].

    python bench/bench_conv_layers.py --rounds 7
"""
import argparse
import os
import statistics

for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402

import particleflow as pf  # noqa: E402
from particleflow.kernels import conv as K  # noqa: E402
from _timing import mean_time  # noqa: E402  (bench/_timing.py)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    B, S, C, F = 64, 32, 3, 32
    net = pf.energies.ConvNet.nijkamp(F, S, channels=C, dtype=np.float32)     # chunks of 32 images
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (B, C, S, S)).astype(np.float32)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    cols = np.empty((B * S * S, 9 * C), np.float32)
    W = rng.standard_normal((F, 9 * C)).astype(np.float32)
    z = np.empty((B * S * S, F), np.float32)
    gz = rng.standard_normal((B * S * S, F)).astype(np.float32)
    back = np.empty((B * S * S, 9 * C), np.float32)
    img = np.empty((B, S, S, C), np.float32)
    gb = np.zeros(C)
    zero_b = np.zeros(C, np.float32)
    parts = {
        "whole grad_x pass": lambda: net.grad(x),
        "layer 1 im2col": lambda: K.im2col(nhwc, 3, 3, 1, 1, S, S, cols),
        "layer 1 forward GEMM": lambda: np.matmul(cols, W.T, out=z),
        "layer 1 input-gradient GEMM": lambda: np.matmul(gz, W, out=back),
        "layer 1 col2im": lambda: K.col2im_act(back, nhwc, zero_b, np.float32(0), False, 3, 3, 1, 1, S, S, img, gb),
    }
    times = {k: [] for k in parts}
    for _ in range(a.rounds):
        for k, fn in parts.items():
            times[k].append(mean_time(fn, 5))
    med = {k: statistics.median(v) for k, v in times.items()}
    whole = med["whole grad_x pass"]
    print(f"| piece | ms | share of the pass |  ({a.rounds} rounds, one thread, medians [ranges])")
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {1e3 * med[k]:.2f} [{1e3 * min(v):.2f}-{1e3 * max(v):.2f}] | {med[k] / whole:.3f} |")
    gemm = med["layer 1 forward GEMM"] + med["layer 1 input-gradient GEMM"]
    layer = gemm + med["layer 1 im2col"] + med["layer 1 col2im"]
    print(f"\nlayer 1 in all: {1e3 * layer:.2f} ms = {layer / whole:.3f} of the pass; Winograd F(2x2, 3x3) "
          f"saves at most {1 - 16 / 36:.2f} of its GEMMs = {(1 - 16 / 36) * gemm / whole:.3f} of the pass")


if __name__ == "__main__":
    main()
