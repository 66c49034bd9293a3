#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one H100): the CuPy tests, the device-parity
# tests (cpu-reference and gpu against the CPU fast paths) and the GPU rows of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import particleflow as pf, sys; sys.exit(0 if pf.backend.has_gpu() else 'no GPU: CuPy and a CUDA device are needed')"
$PY -m pytest -q tests/gpu tests/test_reference_path.py tests/test_samplers.py
$PY bench/gpu_check.py
