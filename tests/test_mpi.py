"""Runs over several MPI ranks: bitwise the same datasets as one process, a killed
rank, resume.  The runs need the 'mpi' extra (mpi4py and an MPI with ``mpiexec``);
without it they skip.  The sharded reductions themselves are tested without MPI
below, by splitting arrays the way ranks do."""
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import particleflow as pf
from particleflow.backend import Device
from particleflow.parallel import BLOCK, Shard, n_blocks, shard_range

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "runs")


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


try:
    import mpi4py
    HAVE_MPI = _mpiexec() is not None and bool(mpi4py.__version__)
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs the 'mpi' extra (mpi4py and mpiexec)")


# ------------------------------------------------------------------ without MPI
def test_shard_ranges_cover_blocks_contiguously():
    for n in (1, 511, 512, 513, 5000, 100000):
        for size in (1, 2, 3, 7):
            ranges = [shard_range(n, r, size) for r in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            for (a, b), (c, _) in zip(ranges, ranges[1:]):
                assert b == c and a % BLOCK == 0 and c % BLOCK == 0
            sizes = [n_blocks(b - a) for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n", [700, 5000, 20001])
def test_block_sums_are_independent_of_the_split(n):
    """A sum over shards (partials gathered in block order) equals the one-process
    sum bit for bit, for 1, 2, 3 and 5 ranks, and is the float64 sum to rounding."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3)) * 10 ** rng.uniform(-3, 3, (n, 1))
    dev = Device("cpu")
    whole = dev.sum(x)
    np.testing.assert_allclose(whole, x.sum(0), rtol=1e-12)
    assert Device("cpu").sum(x.astype(np.float32)).dtype == np.float64
    for size in (2, 3, 5):
        ranges = [shard_range(n, r, size) for r in range(size)]
        parts = [dev.block_partials(x[a:b]) for a, b in ranges]
        assert np.concatenate(parts).sum(0).tobytes() == whole.tobytes()
    # and a different split that does not follow the blocks does not (the test can fail)
    odd = np.concatenate([dev.block_partials(x[:300]), dev.block_partials(x[300:])]).sum(0)
    assert odd.tobytes() != whole.tobytes()


def test_weights_and_ess_of_a_sharded_ensemble_match_one_process():
    """Ensemble reductions on shards (with an in-process two-rank communicator)."""
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.standard_normal((n, 2))
    lw = rng.standard_normal(n) * 2
    full = pf.Ensemble(x, log_weights=lw)

    class TwoRanks:
        size, rank = 2, 0

        def __init__(self):
            self.shards = [pf.Ensemble(x, log_weights=lw) for _ in range(2)]

        def allreduce_max(self, v):
            return max(float(s.log_weights.max()) for s in self.shards)

        def allgather_rows(self, part, rows):
            assert [len(g) for g in self.gathered] == rows
            return np.concatenate(self.gathered)

    comm = TwoRanks()
    dev = Device("cpu", comm)
    for r, e in enumerate(comm.shards):
        e.device = dev
        e.take_shard(Shard(*shard_range(n, r, 2), n))
    # what each rank contributes to a sum of its normalised weights (computed per rank)
    m = float(lw.max())
    w = [np.exp(e.log_weights - m) for e in comm.shards]
    comm.gathered = [dev.block_partials(v) for v in w]
    total = float(dev.sum(w[0], comm.shards[0].shard))
    assert total == float(Device("cpu").sum(np.exp(lw - m)))
    assert comm.shards[0].n_global == n and comm.shards[0].n == shard_range(n, 0, 2)[1]
    np.testing.assert_allclose(full.ess(), 1 / (full.weights() ** 2).sum(), rtol=1e-12)


def test_plain_runs_do_not_import_mpi4py():
    code = ("import sys, numpy as np, particleflow as pf\n"
            "from particleflow.runner import execute\n"
            "from particleflow import experiments\n"
            "from particleflow.config import loads\n"
            f"text = open({os.path.join(RUNS, 'demo.toml')!r}).read()\n"
            "cfg = experiments.validate(loads(text))\n"
            "cfg['run']['steps'] = 3; cfg['ensembles']['chains']['n'] = 600\n"
            "import tempfile, os\n"
            "execute(cfg, text, os.path.join(tempfile.mkdtemp(), 'a.h5'))\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE",
                                                          "MPI_LOCALNRANKS", "PARTICLEFLOW_MPI")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------ under mpiexec
def _launch(ranks, args, cwd, **kw):
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "particleflow._main"] if ranks > 1 else \
        [sys.executable, "-m", "particleflow._main"]
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, timeout=900, **kw)


def _datasets(path):
    """name -> bytes of every dataset of a run file except timings and metadata."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("parameters") \
                    and not name.endswith(("seconds_per_iteration", "sampling_seconds", "elapsed_s")):
                out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes())
        f.visititems(visit)
    return out


def _same_bits(a, b):
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    differ = [k for k in da if da[k] != db[k]]
    assert not differ, f"{a} and {b} differ in {differ}"
    return len(da)


RUNS_BITWISE = [
    ("demo.toml", ["--steps", "60", "--set", "ensembles.chains.n=5000", "--set", "output.every=10"], (2, 3)),
    ("importance_resample.toml", ["--steps", "30", "--set", "ensembles.chains.n=6000"], (2, 3)),
    ("dual_ebm_dual.toml", ["--steps", "40", "--set", "output.frame_every=10", "--set", "output.every=5",
                            "--set", "dual.restart_probability=0.1", "--set", "data.n_test=500"], (2, 3)),
    ("importance_gaussian.toml", ["--set", "run.runs=40", "--set", "fit.runs=5", "--set", "fit.iterations=10",
                                  "--set", "sampling.M=[100]", "--set", "fit.average_last=5"], (2, 3)),
    ("deen_ring.toml", ["--steps", "30", "--set", "data.n=2000"], (2, 3)),
    # data-parallel: the ranks share the loss gradient's blocks (4 of 64 rows)
    ("deen_ring.toml", ["--steps", "30", "--set", "data.n=2000", "--set", "deen.grad_block=64"], (2, 3)),
    ("mrmap_mixture.toml", ["--steps", "20", "--set", "output.every=5"], (2, 3)),
    ("mrmap_mixture.toml", ["--steps", "20", "--set", "output.every=5", "--set", "mrmap.grad_block=64"], (2, 3)),
    # the ranks share the chains' blocks (4 of 64 rows; 4 of 16 rows and a ConvNet)
    ("shortrun_ring.toml", ["--steps", "6", "--set", "short_run.chain_block=64", "--set", "short_run.K_values=[20]",
                            "--set", "data.n=2000", "--set", "output.every=2"], (2, 3)),
    ("shortrun_digits.toml", ["--steps", "3", "--set", "short_run.chain_block=16", "--set", "short_run.K_values=[10]",
                              "--set", "generator.recon_iter=3", "--set", "output.every=1"], (2, 3)),
    ("eight_schools.toml", ["--steps", "120", "--set", "ensembles.chains.n=600", "--set", "schedule.0.warmup=40",
                            "--set", "output.every=10"], (2, 3)),
]


FAST_BITWISE = ("demo.toml",)          # the others run in the full suite only (pytest -m slow)


@needs_mpi
@pytest.mark.parametrize("config,args,ranks", [
    pytest.param(*r, marks=() if r[0] in FAST_BITWISE else pytest.mark.slow) for r in RUNS_BITWISE],
    ids=[r[0] + ("/grad_block" if any("grad_block" in a for a in r[1]) else "") for r in RUNS_BITWISE])
def test_runs_over_ranks_are_bitwise_one_process(tmp_path, config, args, ranks):
    common = [os.path.join(RUNS, config), "--set", "output.plot=false", "--quiet"] + args
    r = _launch(1, ["run", "--out", "r1.h5"] + common, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for R in ranks:
        r = _launch(R, ["run", "--out", f"r{R}.h5"] + common, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _same_bits(tmp_path / "r1.h5", tmp_path / f"r{R}.h5") > 5
        with h5py.File(tmp_path / f"r{R}.h5", "r") as f:
            assert f["parameters"].attrs["ranks"] == R
    if config in ("demo.toml", "dual_ebm_dual.toml"):
        # the particles sit in one shard file per rank, linked as virtual datasets
        assert sorted(os.listdir(tmp_path / "r3.h5.shards")) == \
            [f"rank-{r:04d}.{e}" for r in range(3) for e in ("ckpt", "h5") if (r, e) != (0, "ckpt")]
        name = "chains" if config == "demo.toml" else "particles"
        with h5py.File(tmp_path / "r3.h5", "r") as f:
            assert f[f"particles/{name}/position/value"].is_virtual


RESTART_FROM_SHARDS = """
estimator = "sample"
[run]
steps = 20
seed = 3
[output]
every = 5
plot = false
[energy]
kind = "gaussian_mixture"
ring_components = 3
ring_radius = 2.0
[ensembles.chains]
n = 3000
[ensembles.pool]
n = 2600
init_scale = 2.0
[[schedule]]
move = "restart"
ensemble = "chains"
source = "pool"
probability = 0.3
[[schedule]]
move = "hmc"
ensemble = "pool"
step_size = 0.2
n_leapfrog = 3
[[schedule]]
move = "mala"
ensemble = "chains"
step_size = 0.3
"""


@pytest.mark.slow
@needs_mpi
def test_restarts_from_a_sharded_ensemble_are_bitwise_one_process(tmp_path):
    """Restart draws rows of another sharded ensemble by global index (an all-to-all
    exchange); the pool is moved by HMC, so both ensembles are sharded."""
    (tmp_path / "c.toml").write_text(RESTART_FROM_SHARDS)
    for R in (1, 3):
        r = _launch(R, ["run", "c.toml", "--out", f"r{R}.h5", "--quiet"], tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    _same_bits(tmp_path / "r1.h5", tmp_path / "r3.h5")
    with h5py.File(tmp_path / "r3.h5", "r") as f:
        assert f["particles/pool/position/value"].is_virtual and f["particles/chains/position/value"].is_virtual
        assert 0.2 < f["observables/restart_0/restart_fraction/value"][-1] < 0.4


def _rank_pid(out, rank, timeout=300):
    """The pid of MPI rank ``rank`` of the run writing ``out`` (from /proc)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().split(b"\0")
                if str(out).encode() not in cmd or b"particleflow._main" not in cmd:
                    continue
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
            except OSError:
                continue
            if env.get(b"PMI_RANK") == str(rank).encode():
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} process found")


def _run_then_kill_rank_1(cfg, tmp_path, out, ckpt):
    """Run ``cfg`` on 2 ranks to whole.h5; then again to ``out``, killing rank 1 (SIGKILL)
    once ``ckpt`` exists.  Returns the killed job's (stdout, stderr)."""
    r = _launch(2, ["run", "--out", "whole.h5"] + cfg, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "particleflow._main", "run",
                             "--out", str(out)] + cfg, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = _rank_pid(out, 1)
    t0 = time.time()
    while not ckpt.exists() and time.time() - t0 < 600 and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "the run never checkpointed"
    os.kill(victim, signal.SIGKILL)
    out_text, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    return out_text, err


@pytest.mark.slow
@needs_mpi
def test_a_killed_rank_ends_the_job_and_resume_completes_to_the_same_bits(tmp_path):
    cfg = [os.path.join(RUNS, "demo.toml"), "--set", "output.plot=false", "--quiet", "--steps", "3000",
           "--set", "ensembles.chains.n=40000", "--set", "output.every=10", "--set", "output.checkpoint_every=100"]
    out = tmp_path / "cut.h5"
    out_text, err = _run_then_kill_rank_1(cfg, tmp_path, out, tmp_path / "cut.h5.shards" / "rank-0001.ckpt")
    # the launcher names the dead rank and ends the others (MPICH's hydra: stdout)
    assert "Killed (signal 9)" in out_text + err or "killed" in (out_text + err).lower(), out_text + err
    # every shard keeps its committed frames (readable while flagged open, as SWMR allows)
    for rank in (0, 1):
        with h5py.File(tmp_path / "cut.h5.shards" / f"rank-{rank:04d}.h5", "r", libver="latest", swmr=True) as f:
            steps = f["particles/chains/position/step"][()]
            assert len(steps) >= 1 and steps[0] == 0 and np.all(np.diff(steps) == 10)
    with h5py.File(tmp_path / "cut.h5.ckpt", "r") as f:
        assert f.attrs["step"] < 3000          # killed mid-run
    r = _launch(2, ["resume", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _same_bits(tmp_path / "whole.h5", out)


@pytest.mark.slow
@needs_mpi
def test_a_killed_rank_of_a_training_run_keeps_the_committed_frames_and_resume_ends_bitwise(tmp_path):
    """Short-run training whose ranks share the chains' blocks: rank 1 killed after the
    first checkpoint ends the job; the run file keeps its committed frames, and resume
    (on 2 ranks) ends bitwise where the uninterrupted run ends."""
    cfg = [os.path.join(RUNS, "shortrun_ring.toml"), "--set", "output.plot=false", "--quiet", "--steps", "1500",
           "--set", "short_run.chain_block=64", "--set", "short_run.K_values=[20]", "--set", "data.n=2000",
           "--set", "output.every=10", "--set", "output.checkpoint_every=100"]
    out, ckpt = tmp_path / "cut.h5", tmp_path / "cut.h5.ckpt"
    _run_then_kill_rank_1(cfg, tmp_path, out, ckpt)
    with h5py.File(out, "r", libver="latest", swmr=True) as f:
        steps = f["particles/chains_K20/position/step"][()]
        assert len(steps) >= 1 and steps[0] == 0 and np.all(np.diff(steps) == 10)
    with h5py.File(ckpt, "r") as f:
        assert 100 <= f.attrs["step"] < 1500          # killed mid-run, after a checkpoint
    r = _launch(2, ["resume", str(out), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _same_bits(tmp_path / "whole.h5", out)


FAILS_ON_RANK_1 = """from mpi4py import MPI
def make():
    def vg(x):
        if MPI.COMM_WORLD.Get_rank() == 1:
            raise RuntimeError("broken energy on rank 1")
        return 0.5 * (x * x).sum(1), x
    return vg
"""


def _tree(folder):
    """relative path -> sha256 of every file below ``folder``."""
    import hashlib
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@needs_mpi
def test_an_error_on_one_rank_aborts_every_rank_and_leaves_the_old_output_untouched(tmp_path):
    """An error on one rank at the first step ends every rank with one message; with
    --force, the previous run's file, checkpoints and shards are byte-identical
    afterwards and nothing of the failed run is left."""
    common = ["--steps", "20", "--quiet", "--set", "ensembles.chains.n=3000", "--set", "output.plot=false"]
    r = _launch(2, ["run", "--out", "e.h5", os.path.join(RUNS, "demo.toml")] + common, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    before = _tree(tmp_path)
    assert "e.h5.shards/rank-0001.h5" in before
    (tmp_path / "bad.py").write_text(FAILS_ON_RANK_1)
    text = open(os.path.join(RUNS, "demo.toml")).read()
    start, end = text.index("[energy]"), text.index("[ensembles.chains]")
    (tmp_path / "bad.toml").write_text(text[:start] + '[energy]\npython = "bad.py:make"\ndim = 2\n\n' + text[end:])
    r = _launch(2, ["run", "--out", "e.h5", "bad.toml", "--force"] + common, tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "error on rank 1 of 2: RuntimeError: broken energy on rank 1" in r.stderr
    assert "aborting every rank" in r.stderr
    after = {k: v for k, v in _tree(tmp_path).items() if k not in ("bad.py", "bad.toml")
             and not k.startswith("__pycache__")}
    assert after == before


@needs_mpi
def test_resume_with_another_rank_count_is_refused(tmp_path):
    cfg = [os.path.join(RUNS, "demo.toml"), "--set", "output.plot=false", "--quiet", "--steps", "20",
           "--set", "ensembles.chains.n=3000", "--set", "output.checkpoint_every=10"]
    r = _launch(2, ["run", "--out", "a.h5"] + cfg, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(tmp_path / "a.h5.ckpt", "r+") as f:       # pretend it stopped early
        f.attrs["step"] = 10
    r = _launch(1, ["resume", "a.h5"], tmp_path)
    assert r.returncode == 2
    assert "mpiexec -n 2" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("config,args", [
    ("deen_ring.toml", ["--set", "data.n=2000"]),
    ("shortrun_ring.toml", ["--set", "short_run.chain_block=64", "--set", "short_run.K_values=[20]",
                            "--set", "data.n=2000"])], ids=["deen_ring", "shortrun_ring"])
def test_a_training_run_checkpointed_on_2_ranks_resumes_on_3_and_in_one_process_to_the_same_bits(tmp_path, config,
                                                                                               args):
    """A training run splits no ensemble (every rank holds the whole state, rank 0 writes;
    the short-run ranks share only the work of each step's chains): its step-20
    checkpoint written under mpiexec -n 2 resumes under -n 3 and in one process, and
    both end bitwise where the uninterrupted one-process run ends."""
    import shutil
    cfg = [os.path.join(RUNS, config), "--set", "output.plot=false", "--quiet", "--steps", "40",
           "--set", "output.checkpoint_every=20", "--set", "output.every=10"] + args
    r = _launch(1, ["run", "--out", "whole.h5"] + cfg, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _launch(2, ["run", "--out", "cut.h5"] + cfg, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(tmp_path / "cut.h5.ckpt.prev", "r") as f:
        assert f.attrs["step"] == 20 and f.attrs["ranks"] == 2 and not f.attrs["sharded"]
    for ranks in (3, 1):
        out = tmp_path / f"resumed{ranks}.h5"
        shutil.copy(tmp_path / "cut.h5", out)
        shutil.copy(tmp_path / "cut.h5.ckpt.prev", str(out) + ".ckpt")      # as if stopped at step 20
        r = _launch(ranks, ["resume", str(out), "--quiet"], tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        _same_bits(tmp_path / "whole.h5", out)


@pytest.mark.slow
@needs_mpi
def test_missing_or_foreign_shards_are_refused_not_read_as_zeros(tmp_path):
    """A run file whose .shards folder is missing, lacks one shard, or (in a copy made
    elsewhere) belongs to another run: every reader refuses it in one line, exit 2."""
    cfg = [os.path.join(RUNS, "demo.toml"), "--set", "output.plot=false", "--quiet", "--steps", "10",
           "--set", "ensembles.chains.n=3000"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        r = _launch(2, ["run", "--out", "r.h5"] + cfg + (["--seed", "7"] if d == "b" else []), tmp_path / d)
        assert r.returncode == 0, r.stderr[-3000:]
    # b's run file beside a's shards: a copy run from another folder
    shutil.copy(tmp_path / "b" / "r.h5", tmp_path / "a" / "copy.h5")
    os.rename(tmp_path / "a" / "r.h5.shards", tmp_path / "a" / "copy.h5.shards")
    shutil.copytree(tmp_path / "a" / "copy.h5.shards", tmp_path / "a" / "r.h5.shards")
    cases = {"foreign": (tmp_path / "a" / "copy.h5", "belongs to another run")}
    shutil.rmtree(tmp_path / "b" / "r.h5.shards")
    cases["missing folder"] = (tmp_path / "b" / "r.h5", "is missing")
    os.remove(tmp_path / "a" / "r.h5.shards" / "rank-0001.h5")
    cases["missing shard"] = (tmp_path / "a" / "r.h5", "is missing")
    for what, (path, msg) in cases.items():
        for cmd in (["inspect", str(path), "--stats"], ["eval", str(path)]):
            r = _launch(1, cmd, tmp_path)
            assert r.returncode == 2, (what, cmd, r.stdout, r.stderr)
            assert r.stderr.count("\n") == 1 and msg in r.stderr, (what, cmd, r.stderr)
