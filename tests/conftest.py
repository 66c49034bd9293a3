import os
import signal
import threading

import h5py
import numpy as np
import pytest

import particleflow as pf
from particleflow import experiments
from particleflow.config import loads
from particleflow.io.checkpoint import read_checkpoint
from particleflow.runner import Interrupted, execute


def ring_mixture(K=6, radius=3.0, scale=1.0):
    return pf.energies.GaussianMixture(pf.energies.ring_means(K, radius), scale=scale)


DEVICES = ["cpu", "cpu-reference"] + (["gpu"] if pf.backend.has_gpu() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """The CPU with its fast paths, the array code path a GPU runs on numpy
    (``Device("cpu-reference")``) and, where there is one, the GPU: sampler tests run
    on each."""
    return request.param


def on_device(ensemble, device):
    """``ensemble`` moved to ``device``'s memory (the GPU's for "gpu")."""
    return ensemble.to("gpu") if device == "gpu" else ensemble


@pytest.fixture
def mixture():
    return ring_mixture()


@pytest.fixture
def ill_conditioned():
    """Paper 000, Example 1.1: precision [[1000, -1], [-1, 2]]."""
    return pf.energies.Gaussian(np.zeros(2), np.array([[1000.0, -1.0], [-1.0, 2.0]]))


def moment_z_scores(x, mean, cov):
    """z-scores of the sample mean and covariance of iid rows ``x`` against exact
    ``mean``/``cov``; standard errors from the sample itself (ESS = number of rows)."""
    n = x.shape[0]
    m = x.mean(0)
    z_mean = (m - mean) / np.sqrt(x.var(0) / n)
    c = x - m
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / np.sqrt(n)
    z_cov = (prods.mean(0) - cov) / se_cov
    return z_mean, z_cov


def straight_and_resumed(make, total, at):
    """Two Simulations from ``make()``: one run for ``total`` steps straight, one that
    loads the state of a third stopped after ``at`` steps and runs the remaining
    ``total - at``.  Returns (straight, resumed)."""
    straight = make()
    straight.run(total)
    stopped = make()
    stopped.run(at)
    resumed = make()
    resumed.load_state_dict(stopped.state_dict())
    resumed.run(total - at)
    return straight, resumed


def interrupted_and_resumed(text, tmp_path, at_step):
    """Run config ``text`` uninterrupted, and again with a SIGTERM after step
    ``at_step`` followed by a resume.  Returns (uninterrupted path, resumed path,
    the checkpoint written at the interruption)."""
    cfg = experiments.validate(loads(text))
    full, part = str(tmp_path / "full.h5"), str(tmp_path / "part.h5")
    execute(cfg, text, full)

    def stop(sim, total):
        if sim.step == at_step:
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Interrupted):
        execute(cfg, text, part, progress=stop)
    start = read_checkpoint(part + ".ckpt")
    assert start["step"] == at_step
    execute(cfg, text, part, start=start)
    assert_same_datasets(full, part)
    return full, part, start


TIMINGS = ("seconds_per_iteration", "teacher_sampling_seconds", "elapsed_s")


def assert_same_datasets(path_a, path_b):
    """Every dataset under /particles, /observables and /results of two run files is
    present in both with the same shape, dtype and bytes (timings excepted)."""
    def collect(f):
        out = {}
        f.visititems(lambda k, v: out.__setitem__(k, v) if isinstance(v, h5py.Dataset)
                     and k.split("/")[0] in ("particles", "observables", "results")
                     and k.split("/")[-1] not in TIMINGS else None)
        return out
    with h5py.File(path_a, "r") as a, h5py.File(path_b, "r") as b:
        da, db = collect(a), collect(b)
        assert sorted(da) == sorted(db)
        for k in da:
            x, y = da[k][()], db[k][()]
            assert x.dtype == y.dtype and np.shape(x) == np.shape(y) and np.asarray(x).tobytes() == \
                np.asarray(y).tobytes(), k
        return len(da)


def message_lines(text):
    """The lines of a command's output other than its phase reports ("- <phase>" and the
    indented lines that follow it on stdout), which a slow machine or a cold kernel cache
    may print before a config is refused, and other than the kernel cache's warning that
    it compiles again files it cannot verify (left, for one, by a process killed with
    SIGKILL while a step compiled, before the step's end recorded them)."""
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("- ", "  "))
            and not (ln.startswith("warning: ") and "kernel cache files" in ln)]


class ThreadComm:
    """R ranks as R threads of one process: ``allgather`` as MPI's (every rank gets
    every rank's object, in rank order), through a barrier."""

    def __init__(self, rank, size, shared, barrier):
        self.rank, self.size, self.shared, self.barrier = rank, size, shared, barrier

    def allgather(self, obj):
        self.shared[self.rank] = obj
        self.barrier.wait()
        out = [self.shared[r] for r in range(self.size)]
        self.barrier.wait()
        return out


def over_thread_ranks(size, fn):
    """[fn(comm) for each of ``size`` ranks], the ranks as threads (``ThreadComm``)."""
    shared, barrier, out = {}, threading.Barrier(size), [None] * size

    def run(r):
        out[r] = fn(ThreadComm(r, size, shared, barrier))
    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
