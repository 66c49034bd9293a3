"""The conv GEMMs of the paper-004 ConvNet (n_f = 32, 32x32x3, batch 64, im2col form:
M = batch x output pixels, K = C_in x k x k, N = C_out), forward and both backward
products, float32, one thread: numpy's OpenBLAS against the BLIS kernels of the `blis`
package (a table, not a test).  `blis` is never a dependency; run it from a separate
venv that has numpy and blis:

    python3 -m venv /tmp/blisvenv && /tmp/blisvenv/bin/pip install numpy blis
    BLIS_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /tmp/blisvenv/bin/python bench/bench_blis_gemm.py

Rounds alternate the two libraries; medians and ranges of blis / OpenBLAS.
"""
import statistics
import time

import numpy as np
from blis.py import gemm
shapes = [(65536, 27, 32), (16384, 512, 64), (4096, 1024, 128), (1024, 2048, 256)]
rng = np.random.default_rng(0)
rows = []
for M, K, N in shapes:
    A = rng.standard_normal((M, K)).astype(np.float32); B = rng.standard_normal((K, N)).astype(np.float32)
    G = rng.standard_normal((M, N)).astype(np.float32)
    cases = {"fwd A@B": (lambda: A @ B, lambda: gemm(A, B)),
             "dX G@B^T": (lambda: G @ B.T, lambda: gemm(G, B, trans2=True)),
             "dW A^T@G": (lambda: A.T @ G, lambda: gemm(A, G, trans1=True))}
    for name, (f_np, f_blis) in cases.items():
        assert np.allclose(f_np(), f_blis(), rtol=1e-3, atol=1e-2)
        t_np, t_bl = [], []
        for _ in range(7):
            t = time.perf_counter(); [f_np() for _ in range(5)]; t_np.append((time.perf_counter() - t) / 5)
            t = time.perf_counter(); [f_blis() for _ in range(5)]; t_bl.append((time.perf_counter() - t) / 5)
        q = [b / a for a, b in zip(t_np, t_bl)]
        print(f"{M}x{K}x{N} {name}: openblas {1e3*statistics.median(t_np):.2f} ms, blis {1e3*statistics.median(t_bl):.2f} ms, blis/openblas {statistics.median(q):.2f} ({min(q):.2f}-{max(q):.2f})")
