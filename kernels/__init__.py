"""Hot per-particle loops of particleflow, installed as ``particleflow.kernels``.

Every kernel is written once as a per-particle body and compiled for the CPU (numba,
parallel over fixed blocks) and for the GPU (numba.cuda, one thread per particle);
see ``_jit.py``.  Kernels never validate their input and never import
``particleflow``: the API layer validates, allocates and picks the backend.
"""
