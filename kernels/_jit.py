"""One source, two targets: compile per-particle bodies for numba CPU and numba.cuda.

A kernel is written once as Python source: a per-particle *body* ``BODY(i, args...)``
that reads and writes flat arrays at particle index ``i``.  ``build_kernel`` wraps it

* for the CPU: a serial loop ``for i in range(count)`` compiled with
  ``error_model="numpy"`` and ``_nrt=False`` (no zero-division branches, no reference
  counting in the loop: both stop LLVM's loop vectoriser), called by a ``prange``
  loop over fixed blocks of ``CPU_BLOCK`` particles on array slices (a loop that
  starts at a non-zero offset makes numba emit negative-index wrap-around code,
  which also blocks vectorisation; slices start at zero).  Blocks are fixed, so the
  work a particle sees never depends on the thread count.
* for the GPU: a ``numba.cuda.jit`` kernel, one thread per particle, over CuPy (or,
  under ``NUMBA_ENABLE_CUDASIM=1``, numpy) arrays.

Target-specific pieces are looked up by name in the namespace the source runs in:
``EXP``, ``LOG``, ``SQRT``, ``SINCOS2PI`` (the vectorisable polynomials of
``vmath`` on the CPU, hardware math on the GPU), ``FL`` (the float type) and the
helpers compiled earlier into the same namespace (Philox, uniforms, normals).

We raise LLVM's full-unroll threshold: the bodies have short constant-trip loops
(mixture components, Philox rounds) that must be fully unrolled for the particle
loop to become the innermost loop and vectorise.  This only changes unrolling
heuristics inside this process, never results.
"""
import atexit
import contextlib
import hashlib
import importlib.util
import inspect
import math
import os
import sys
import time
import types
import warnings

import llvmlite.binding as _llvm
import numpy as np
import numba
from numba.core import event as numba_event
from numba import prange

from . import vmath

_llvm.set_option("", "--unroll-threshold=50000")

CPU_BLOCK = 512          # particles per CPU work item (fits L1 for d <= 8)
# at most this many particles run on the calling thread alone: waking the thread pool
# costs more than a second thread saves below it, and far more when another process
# holds a core (bench/threads_contention.py; docs/performance.md)
SERIAL_MAX = int(os.environ.get("PARTICLEFLOW_SERIAL_MAX", 32768))


def _simd_lanes():
    """SIMD lanes forced on the fused per-particle CPU kernels (Philox fills, fused
    analytic moves; see ``_forced_vector_width``).  LLVM's own choice is 4 (its cost
    model and 256-bit preference on AVX-512 CPUs).  Measured: Zen 4, 8 lanes 1.7x
    faster than 4, and 16 faster than 8 (one thread, n = 1e6, 3 alternating runs of
    bench/bench_core.py): float32 MALA 27.6-28.7 against 31.1-36.9 ms, HMC 76-77
    against 85-92 ms, Philox normals 9.5-9.8 against 11.0-14.4 ms, ULA within noise
    (11.1-14.2 against 11.9-12.9 ms); Ice Lake
    server: the normal panel 2.5-3.3 ns/normal at 8 lanes and 1.7-2.5 at 16 (32: as
    16), the fused ULA step of the 6-component mixture (n = 1e6) 9.55 -> 9.17 ms
    float32 and 18.0 -> 17.6 ms float64.  So 16 on AVX-512 CPUs, 8 elsewhere;
    ``PARTICLEFLOW_SIMD_LANES`` overrides.  Lanes change speed only, never values
    (the loops are elementwise, no fast-math): tested against the numpy oracles."""
    env = os.environ.get("PARTICLEFLOW_SIMD_LANES")
    if env:
        return int(env)
    try:
        avx512 = "+avx512f" in _llvm.get_host_cpu_features().flatten()
    except Exception:
        return 8
    return 16 if avx512 else 8


SIMD_LANES = _simd_lanes()
GPU_THREADS = 128        # threads per CUDA block

_CPU_DEVICE = dict(inline="always", error_model="numpy", _nrt=False)


def _cuda():
    from numba import cuda
    return cuda


def _sincos2pi_exact(u):
    a = 2.0 * math.pi * u
    return math.sin(a), math.cos(a)


class Target:
    """A compilation target: ``"cpu"`` (numba) or ``"cuda"`` (numba.cuda)."""

    def __init__(self, name):
        if name not in ("cpu", "cuda"):
            raise ValueError(f"target must be 'cpu' or 'cuda'; got {name!r}")
        self.name = name

    def device(self, fn):
        if self.name == "cpu":
            return numba.njit(**_CPU_DEVICE)(fn)
        return _cuda().jit(device=True)(fn)

    def math_namespace(self, dtype):
        dtype = np.dtype(dtype)
        fl = dtype.type
        ns = dict(np=np, math=math, FL=fl, SQRT=math.sqrt)
        if self.name == "cpu":
            if dtype == np.float64:
                ns.update(EXP=vmath.exp64, LOG=vmath.log64, SINCOS2PI=vmath.sincos2pi64)
            else:
                ns.update(EXP=vmath.exp32, LOG=vmath.log32, SINCOS2PI=vmath.sincos2pi32)
        else:
            ns.update(EXP=math.exp, LOG=math.log,
                      SINCOS2PI=self.device(_sincos2pi_exact))
        return ns

    def __repr__(self):
        return f"Target({self.name!r})"


CPU = Target("cpu")
CUDA = Target("cuda")


def compile_source(ns, src, target, filename="<particleflow-kernel>"):
    """Exec ``src`` in namespace ``ns``; compile each function it defines as a device
    function of ``target`` and store it back in ``ns`` under the same name."""
    before = set(ns)
    exec(compile(src, filename, "exec"), ns)
    digest = hashlib.sha256(src.encode()).hexdigest()[:16]
    for name in set(ns) - before:
        if inspect.isfunction(ns[name]):
            ns[name] = target.device(ns[name])
            ns[name]._pf_token = f"src:{digest}:{name}"
    return ns


# ------------------------------------------------------------------ on-disk cache
# Kernels are generated as source text (one per dimension, dtype, mixture size...)
# and numba can cache only functions that live in a file.  ``jit_source`` therefore
# writes each generated function to a file named by a digest of everything its
# machine code depends on -- the text, the names it refers to, the compile options,
# the sources of this package, numba's and Python's versions and the forced SIMD
# width -- and compiles it with ``cache=True``: a second process loads the machine
# code instead of compiling it.  A changed package gets a new directory, so a stale
# kernel is never loaded.  PARTICLEFLOW_KERNEL_CACHE=<dir> moves the cache,
# PARTICLEFLOW_KERNEL_CACHE=0 turns it off (and an unwritable directory does too).
# The cache holds code that runs as its user: its folders are private (0700; a folder
# of another user, or one others can write, is not used), a process records the
# digest of every file in MANIFEST when it exits, and the next one deletes (and so
# recompiles) any file whose digest differs -- a damaged, truncated or edited entry.

def _package_digest():
    h = hashlib.sha256()
    h.update(f"{sys.version}|{numba.__version__}|{np.__version__}|{SIMD_LANES}".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


class KernelCacheWarning(UserWarning):
    """Entries of the on-disk kernel cache were damaged or unverified and are recompiled."""


MANIFEST = "MANIFEST"
FRESH_SECONDS = 120


def _digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache_files(path):
    """Relative names of the cache's files (the kernels' sources and numba's index and
    machine code in __pycache__), the manifest and temporaries excepted."""
    out = []
    for folder, _, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), path)
            if rel != MANIFEST and ".tmp" not in f:
                out.append(rel)
    return sorted(out)


def _read_manifest(path):
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            return dict(line.rstrip("\n").split("  ", 1)[::-1] for line in f if "  " in line)
    except (OSError, UnicodeDecodeError, ValueError):
        return {}


def _verify(path):
    """Remove every cache file whose digest is not the one this package recorded when it
    last left the cache (a damaged, truncated or edited file, or one written by
    something else): numba would otherwise load it, or fail on it, in every later run.
    A file the manifest does not know yet and that is younger than ``FRESH_SECONDS`` is
    left alone (a process running now is writing it).  One warning line says how many
    were dropped; they are compiled again (numba treats a missing file as a miss)."""
    known = _read_manifest(path)
    bad = []
    now = time.time()
    for rel in _cache_files(path):
        full = os.path.join(path, rel)
        try:
            if rel not in known and now - os.stat(full).st_mtime < FRESH_SECONDS:
                continue                  # probably being written by a process that is running now
            ok = known.get(rel) == _digest_file(full)
        except OSError:
            ok = False
        if not ok:
            bad.append(full)
    for full in bad:
        with contextlib.suppress(OSError):
            os.remove(full)
    if bad:
        warnings.warn(f"{len(bad)} kernel cache files in {path} were damaged or unverified and are compiled "
                      "again", KernelCacheWarning, stacklevel=2)


def _write_manifest(path):
    """At exit: the digests of the cache's files as they are now (numba replaces its
    files atomically, so each file is complete)."""
    lines = []
    for rel in _cache_files(path):
        with contextlib.suppress(OSError):
            lines.append(f"{_digest_file(os.path.join(path, rel))}  {rel}\n")
    tmp = os.path.join(path, f"{MANIFEST}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            f.writelines(lines)
        os.replace(tmp, os.path.join(path, MANIFEST))


# Compilations this process has seen, and how many of them the manifest records: a
# process ended by SIGKILL runs no exit handler, so a Simulation records the cache after
# every step in which something compiled (``record_kernel_cache``); otherwise the next
# process would drop those files as unverified and compile them again.
_COMPILED = [0, 0]


class _CountCompiles(numba_event.Listener):
    def on_start(self, event):
        pass

    def on_end(self, event):
        _COMPILED[0] += 1


def record_kernel_cache():
    """Record the digests of the cache's files now if this process compiled anything
    since it last recorded them (otherwise one comparison).  Call where the compiled
    kernels have returned, so that numba has saved them (after a Simulation's step)."""
    if _COMPILED[0] != _COMPILED[1] and _CACHE_DIR and _CACHE_DIR[0]:
        _COMPILED[1] = _COMPILED[0]
        _write_manifest(_CACHE_DIR[0])


def _private(path):
    """Make a cache folder of ours private (0700); False if it is someone else's or
    stays writable by others (then it is not used: its code would run as ours)."""
    try:
        st = os.stat(path)
        if st.st_uid != os.getuid():
            return False
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
        return not (os.stat(path).st_mode & 0o022)
    except OSError:
        return False


def _cache_dir():
    setting = os.environ.get("PARTICLEFLOW_KERNEL_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    root = setting or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                   "particleflow")
    path = os.path.join(root, f"kernels-{_package_digest()}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not (_private(root) and _private(path)) or not os.access(path, os.W_OK):
        return None
    _verify(path)
    atexit.register(_write_manifest, path)
    numba_event.register("numba:compile", _CountCompiles())
    return path


_CACHE_DIR = []


def kernel_cache_dir():
    """The directory of on-disk compiled kernels, or None when caching is off."""
    if not _CACHE_DIR:
        _CACHE_DIR.append(_cache_dir())
    return _CACHE_DIR[0]


def _token(value):
    """A stable text standing for a global a generated kernel refers to, or None when
    there is none (then the kernel is not cached)."""
    tok = getattr(value, "_pf_token", None)
    if tok is not None:
        return tok
    if hasattr(value, "py_func"):                 # a numba dispatcher defined in a file
        f = value.py_func
        return f"fn:{f.__module__}.{f.__qualname__}" if f.__module__ else None
    if isinstance(value, types.ModuleType):
        return f"mod:{value.__name__}"
    if isinstance(value, type):
        return f"type:{value.__module__}.{value.__qualname__}"
    if isinstance(value, (types.BuiltinFunctionType, types.FunctionType)):
        return f"fn:{value.__module__}.{value.__qualname__}" if value.__module__ else None
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return f"{type(value).__name__}:{value!r}"
    return None


def _source_key(ns, src, options):
    parts = [src, repr(sorted(options.items()))]
    for name in sorted(ns):
        if name.startswith("__"):
            continue
        tok = _token(ns[name])
        if tok is None:
            return None
        parts.append(f"{name}={tok}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def jit_source(ns, src, name, **options):
    """``numba.njit(**options)`` of function ``name`` defined by source text ``src``
    with globals ``ns``, cached on disk when possible (see above)."""
    directory = kernel_cache_dir()
    key = _source_key(ns, src, options) if directory else None
    if key is None:
        g = dict(ns)
        exec(compile(src, f"<particleflow-{name}>", "exec"), g)
        return numba.njit(**options)(g[name])
    path = os.path.join(directory, f"{name.strip('_')}_{key}.py")
    try:
        with open(path) as f:
            same = f.read() == src            # a source edited on disk is written again
    except (OSError, UnicodeDecodeError):
        same = False
    for attempt in range(3):
        if not same or attempt:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(src)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(f"particleflow_kernel_{key}", path)
        module = importlib.util.module_from_spec(spec)
        module.__dict__.update((k, v) for k, v in ns.items() if not k.startswith("__"))
        sys.modules[spec.name] = module      # numba's cached environments look modules up by name
        try:
            spec.loader.exec_module(module)
            break
        except FileNotFoundError:            # another process's verification removed it: write it again
            if attempt == 2:
                raise
    fn = numba.njit(cache=True, **options)(getattr(module, name))
    fn._pf_token = f"kernel:{key}"
    return fn


@contextlib.contextmanager
def _forced_vector_width(width):
    """Compile with LLVM's loop vectoriser forced to ``width`` lanes.

    On AVX-512 CPUs (with LLVM's 256-bit preference) LLVM's cost model picks 4 lanes
    for the fused Langevin loop because of the 64-bit Philox multiplies; 8 lanes
    measured 1.7x faster on Zen 4 (bench/bench_core.py), 16 faster still on Ice Lake
    (``_simd_lanes``).  The option is global to
    LLVM, so it is set only while our kernel compiles and reset afterwards; while it
    is set LLVM prints "loop not vectorized" remarks for loops it cannot vectorise
    (the parallel driver), which we silence by pointing fd 2 at /dev/null for the
    duration of the compile."""
    if not width:
        yield
        return
    _llvm.set_option("", f"--force-vector-width={int(width)}")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        _llvm.set_option("", "--force-vector-width=0")


def build_kernel(ns, body, args, target, vector_width=0):
    """Wrap per-particle ``body`` into a launcher ``launch(n, *arrays_and_scalars)``.

    Parameters
    ----------
    ns : dict
        Namespace holding the compiled ``body`` (see ``compile_source``).
    body : str
        Name of the body in ``ns``; called as ``body(i, *args)``.
    args : list of (name, slicing)
        ``slicing`` is ``None`` for shared arrays and scalars, ``1`` for per-particle
        vectors ``[n]`` and an integer ``w`` (or the name of a scalar argument
        holding it) for flattened rows ``[n * w]``.
    vector_width : int
        If non-zero, force LLVM's loop vectoriser to this many lanes for the CPU
        per-particle loop (see ``_forced_vector_width``).
    """
    names = [a for a, _ in args]
    arglist = ", ".join(names)
    if target.name == "cpu":
        def sl(name, w):
            if w is None:
                return name
            return f"{name}[s0 * {w}:s1 * {w}]"
        sliced = ", ".join(sl(a, w) for a, w in args)
        src = (f"def _range(_count, {arglist}):\n"
               f"    for i in range(_count):\n"
               f"        {body}(i, {arglist})\n")
        rng = jit_source(ns, src, "_range", error_model="numpy", _nrt=False)
        drv_src = (f"def _drive(_n, {arglist}):\n"
                   f"    _nb = (_n + {CPU_BLOCK} - 1) // {CPU_BLOCK}\n"
                   f"    for _b in prange(_nb):\n"
                   f"        s0 = _b * {CPU_BLOCK}\n"
                   f"        s1 = min(_n, s0 + {CPU_BLOCK})\n"
                   f"        _range(s1 - s0, {sliced})\n")
        drive = jit_source(dict(_range=rng, prange=prange, min=min), drv_src, "_drive",
                           parallel=True, error_model="numpy")

        compiled = []

        def launch(n, *a):
            if n:
                if not compiled:                # first call compiles
                    if not rng.signatures:
                        with _forced_vector_width(vector_width):
                            rng(0, *a)
                    compiled.append(True)
                if n <= SERIAL_MAX:             # per particle, so the same numbers either way
                    rng(n, *a)
                else:
                    drive(n, *a)
        launch.drive = drive
        launch.range_kernel = rng
        return launch
    cuda = _cuda()
    src = (f"def _kernel(_n, {arglist}):\n"
           f"    i = cuda.grid(1)\n"
           f"    if i < _n:\n"
           f"        {body}(i, {arglist})\n")
    g = dict(ns)
    g["cuda"] = cuda
    exec(src, g)
    kern = cuda.jit(g["_kernel"])

    def launch(n, *a):
        if n:
            kern[(n + GPU_THREADS - 1) // GPU_THREADS, GPU_THREADS](n, *a)
    launch.kernel = kern
    return launch
