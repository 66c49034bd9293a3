"""The on-disk cache of generated kernels: a second process loads the machine code
(numba reports cache hits, no misses), its draws are bitwise those of the process that
compiled them and match the numpy oracle, per dtype (the same body text compiled in a
float32 and a float64 namespace must not share a cache entry), and turning the cache
off writes nothing."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from particleflow.kernels import _jit

SCRIPT = r"""
import json, numpy as np
from particleflow.kernels import philox
from particleflow.kernels.philox import normal_numpy
from particleflow.random import Purpose, Stream

s = Stream(3, 1)
ids = np.arange(0, 280000, 7, dtype=np.int64)    # 40000 particles: above SERIAL_MAX, so the driver runs
out = {"hits": 0, "misses": 0, "equal_oracle": True, "values": []}
for dt in (np.float32, np.float64):
    z = s.normal(5, ids, 3, dtype=dt)
    k0, k1 = s.key(Purpose.LANGEVIN_NOISE)
    tol = 1e-12 if dt == np.float64 else 2e-5        # vmath's log and sincos vs numpy's
    out["equal_oracle"] &= bool(np.allclose(z, normal_numpy(k0, k1, 5, ids, 3, dt), rtol=tol, atol=tol))
    out["values"].append(z.astype(np.float64).ravel()[:50].tolist())
    launch = philox.fill_kernel("normal", philox.CPU, dt, 4)
    for fn in (launch.range_kernel, launch.drive):
        out["hits"] += sum(fn.stats.cache_hits.values())
        out["misses"] += sum(fn.stats.cache_misses.values())
print(json.dumps(out))
"""


def _run(cache):
    env = dict(os.environ, PARTICLEFLOW_KERNEL_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_second_process_loads_kernels_and_draws_the_same(tmp_path):
    cold = _run(tmp_path)
    warm = _run(tmp_path)
    assert cold["misses"] == 4 and cold["hits"] == 0        # 2 dtypes x (range, driver)
    assert warm["hits"] == 4 and warm["misses"] == 0
    assert cold["equal_oracle"] and warm["equal_oracle"]
    assert cold["values"] == warm["values"]
    (sub,) = [p for p in tmp_path.iterdir() if p.name.startswith("kernels-")]
    assert len(list(sub.glob("*.py"))) == 4


def test_cache_off_writes_nothing(tmp_path):
    env_dir = tmp_path / "c"
    env = dict(os.environ, PARTICLEFLOW_KERNEL_CACHE="0")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["equal_oracle"] and out["hits"] == 0
    assert not env_dir.exists()


def test_globals_without_a_stable_name_are_not_cached():
    ns = {"TABLE": np.arange(3.0), "FL": np.float32}
    assert _jit._source_key(ns, "def f(x):\n    return x\n", {}) is None
    key32 = _jit._source_key({"FL": np.float32}, "def f(x):\n    return FL(x)\n", {})
    key64 = _jit._source_key({"FL": np.float64}, "def f(x):\n    return FL(x)\n", {})
    assert key32 and key64 and key32 != key64
    f = _jit.jit_source({"TABLE": np.arange(3.0)}, "def f(i):\n    return TABLE[i]\n", "f")
    assert f(2) == 2.0


def _damage(sub, marker):
    """An edited source (a line that would write ``marker``), machine code replaced by
    random bytes, an emptied one and a random index: each once a run to break the next."""
    py = sorted(sub.glob("*.py"))
    with open(py[0], "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    nbc = sorted((sub / "__pycache__").glob("*.nbc"))
    nbi = sorted((sub / "__pycache__").glob("*.nbi"))
    nbc[0].write_bytes(os.urandom(200))
    nbc[1].write_bytes(b"")
    nbi[0].write_bytes(os.urandom(64))
    return 4


@pytest.mark.slow
def test_a_damaged_or_edited_cache_is_recompiled_with_one_warning_and_never_runs_foreign_code(tmp_path):
    cache = tmp_path / "cache"
    cold = _run(cache)
    (sub,) = [p for p in cache.iterdir() if p.name.startswith("kernels-")]
    assert oct(os.stat(sub).st_mode & 0o777) == oct(0o700) and oct(os.stat(cache).st_mode & 0o777) == oct(0o700)
    assert (sub / "MANIFEST").exists()
    marker = tmp_path / "marker"
    n = _damage(sub, marker)
    env = dict(os.environ, PARTICLEFLOW_KERNEL_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["values"] == cold["values"] and out["equal_oracle"]
    assert not marker.exists()                                   # the edited source never ran
    assert f"{n} kernel cache files" in res.stderr and res.stderr.count("KernelCacheWarning") == 1
    again = _run(cache)                                          # repaired: all hits, no warning
    assert again["hits"] == 4 and again["misses"] == 0


def test_a_cache_folder_others_can_write_is_made_private(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    _run(cache)
    assert os.stat(cache).st_mode & 0o077 == 0


def test_a_kernel_cache_that_cannot_be_written_is_named_in_the_error(tmp_path):
    """A full or read-only cache disk fails while numba saves a kernel: the one line names
    the cache and PARTICLEFLOW_KERNEL_CACHE, not --out."""
    import click
    import numba.core.caching as caching
    from particleflow.cli import _user_errors

    class Locator(caching._CacheLocator):          # a cache folder below a plain file: ENOTDIR
        def __init__(self, path):
            self._path = path

        def get_cache_path(self):
            return self._path

        @classmethod
        def from_function(cls, py_func, py_file):
            return None

        def get_source_stamp(self):
            return None

        def get_disambiguator(self):
            return ""
    (tmp_path / "file").write_text("")

    @_user_errors
    def compile_and_save():
        Locator(str(tmp_path / "file" / "cache")).ensure_cache_path()
    with pytest.raises(click.ClickException) as e:
        compile_and_save()
    msg = e.value.format_message()
    assert msg.startswith("cannot write the kernel cache") and "PARTICLEFLOW_KERNEL_CACHE" in msg, msg
    assert "--out" not in msg


KILLED = r"""
import os, signal, numpy as np
import particleflow as pf

e = pf.energies.GaussianMixture(pf.energies.ring_means(3, 2.0), scale=0.5)
ens = pf.Ensemble(np.random.default_rng(0).normal(size=(2000, 2)).astype(np.float32))
sim = pf.Simulation({"chains": ens}, seed=0)
sim.schedule(pf.moves.MALA(e, 0.1), "chains")
sim.run(2)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_after_compiling_leaves_a_manifest_that_verifies_its_kernels(tmp_path):
    """SIGKILL runs no exit handler: the Simulation records the cache after the steps that
    compiled, so the next process keeps those kernels (no warning, nothing recompiled)."""
    cache = tmp_path / "cache"
    env = dict(os.environ, PARTICLEFLOW_KERNEL_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", KILLED], env=env, capture_output=True, text=True)
    assert res.returncode == -9, res.stderr[-2000:]
    (sub,) = [p for p in cache.iterdir() if p.name.startswith("kernels-")]
    files = _jit._cache_files(str(sub))
    assert any(f.endswith(".nbc") for f in files)
    assert _jit._read_manifest(str(sub)) == {f: _jit._digest_file(str(sub / f)) for f in files}
    old = os.stat(sub).st_mtime - 2 * _jit.FRESH_SECONDS            # no longer "being written"
    for f in files:
        os.utime(sub / f, (old, old))
    res = subprocess.run([sys.executable, "-W", "always", "-c", KILLED], env=env, capture_output=True, text=True)
    assert res.returncode == -9 and "KernelCacheWarning" not in res.stderr, res.stderr[-2000:]
    assert _jit._cache_files(str(sub)) == files                      # loaded, none dropped or added
