"""H5MD 1.1 trajectory files: a streaming writer (SWMR) and a reader.

Layout (one file per run)::

    /h5md                       attrs version = [1, 1]; groups author (name), creator (name, version)
    /h5md/modules/particleflow  attrs version, description of the extra elements below
    /particles/<ensemble>/box   attrs dimension = d, boundary = ["none"] * d
    /particles/<ensemble>/{position, log_weight, id, sign}/{step [T], time [T], value [T, n, ...]}
                                (id gets a frame only when the ids changed: the ids at
                                position frame t are those of the last id frame with step <= t)
    /observables/<name>/{step, time, value}      (move statistics as <slot>/<key>)
    /parameters                 attrs config (TOML text), seed, particleflow_version, git_revision,
                                dtype, backend; group learned/ for trained energies' parameters
    /results/<name>             end-of-run values, written when the run finishes

Time is the step counter (particleflow has no physical time unit).

Writing: every dataset is chunked and resizable along frames and is created before
the file switches to SWMR mode.  Frames are buffered and written one slab at a time,
``value`` first and ``step`` last, then the file is flushed: the committed frame count
of an element is ``len(step)`` and readers ignore longer ``value`` tails.  The file
handle stays open for the whole run, so the cost of a frame does not grow with the
file (emcee's backend reopens per step and slows down).

A writer killed by SIGKILL leaves a file that HDF5 marks as "open for writing";
``open_run`` (and ``h5py.File(path, "r", libver="latest", swmr=True)``) read it with
every flushed frame; ``repair`` (``particleflow repair``) and ``particleflow resume``
rewrite it into a clean file that plain ``h5py.File(path)`` opens.  A run that
ends or is interrupted by SIGINT/SIGTERM closes the file normally, and plain
``h5py.File(path)`` opens it.
"""
import contextlib
import ctypes
import os
import subprocess
import time
import tomllib
import zlib

import h5py
import numpy as np
from .._version import __version__
from ..backend import to_numpy
from ..observers import Observer, Spec
from .files import lock_holder, temporary_beside

H5MD_VERSION = (1, 1)
MODULE_DESCRIPTION = (
    "particleflow extends H5MD with: /particles/<e>/log_weight, /particles/<e>/id and "
    "/particles/<e>/sign (time-dependent elements like position); /observables/<slot>/<key> "
    "for move statistics; /parameters/config (TOML text of the run) and "
    "/parameters/learned (parameters of trained energies); /results/<name> for "
    "end-of-run values. time equals step.")
TARGET_CHUNK_BYTES = 512 * 1024
GROW_FRAMES = 64          # large-frame elements are extended this many frames at a time


def git_revision():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _set_read_attempts(fapl, attempts):
    """``H5Pset_metadata_read_attempts``, which h5py does not wrap: looked up in the
    HDF5 library h5py loaded (a handle's symbols include its dependencies').  Returns
    False where it cannot be found."""
    global _SET_ATTEMPTS
    if _SET_ATTEMPTS is None:
        try:
            fn = ctypes.CDLL(h5py.h5p.__file__).H5Pset_metadata_read_attempts
            fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
            _SET_ATTEMPTS = fn
        except (OSError, AttributeError):
            _SET_ATTEMPTS = False
    return bool(_SET_ATTEMPTS) and _SET_ATTEMPTS(fapl.id, attempts) >= 0


_SET_ATTEMPTS = None


def open_for_reading(path):
    """Open a trajectory read-only, in SWMR mode (a file whose writer was killed is
    still flagged as open for writing, and only SWMR readers accept it).

    A SWMR reader retries a metadata block whose checksum fails 100 times, with
    growing sleeps, because a live writer may be rewriting it; on a damaged file that
    is a hang of minutes.  Unless another process holds the output's lock (a live
    writer; not this process, which locks an output to repair or resume it), one
    attempt is made, so damage is an error at once."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    if lock_holder(path) in (None, str(os.getpid())):
        _set_read_attempts(fapl, 1)
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    except OSError:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=fapl)
    return h5py.File(fid)


class _Element:
    """One time-dependent H5MD element: step, time and value datasets plus a frame
    buffer of ``capacity`` frames."""

    def __init__(self, group, frame_shape, dtype, compression):
        self.group = group
        frame_shape = tuple(frame_shape)
        dtype = np.dtype(dtype)
        frame_bytes = max(1, int(np.prod(frame_shape, dtype=np.int64)) * dtype.itemsize)
        self.capacity = int(max(1, min(1024, TARGET_CHUNK_BYTES // frame_bytes)))
        chunk = (self.capacity,) + frame_shape
        if frame_bytes > 2 * TARGET_CHUNK_BYTES and frame_shape:
            # split very large frames along the particle axis
            rows = max(1, TARGET_CHUNK_BYTES * frame_shape[0] // frame_bytes)
            chunk = (1, min(frame_shape[0], rows)) + frame_shape[1:]
        # Damage after writing must read as an error, not as numbers: every frame's value
        # gets its CRC-32 in ``crc32`` (checked by the reader; HDF5's Fletcher-32 filter
        # cannot see a chunk zero-filled together with its checksum, and it would rule
        # out writing whole chunks directly), step and time chunks a Fletcher-32 checksum.
        opts = {} if compression in (None, "none") else {"compression": compression}
        if "value" not in group:
            group.create_dataset("value", shape=(0,) + frame_shape, maxshape=(None,) + frame_shape,
                                 dtype=dtype, chunks=chunk, **opts)
            for name, kind in (("step", np.int64), ("time", np.float64), ("crc32", np.uint32)):
                group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=kind,
                                     chunks=(max(64, self.capacity),), fletcher32=True)
        self.value = group["value"]
        self.step = group["step"]
        self.time = group["time"]
        self.crc = group["crc32"]
        self.committed = self.step.shape[0]     # frames whose step is on disk
        self.written = self.committed           # frames whose value is on disk
        self.pending = []                       # steps of written, uncommitted frames
        self.pending_crc = []                   # and their values' CRC-32
        self.buffer = np.empty((self.capacity,) + frame_shape, dtype=dtype) if self.capacity > 1 else None
        self.direct = (self.buffer is None and self.value.chunks == (1,) + frame_shape
                       and self.value.compression is None)
        self.steps = []

    def append(self, step, value):
        """Add one frame; returns True when frame values went to disk."""
        if self.buffer is None:               # large frames: no staging copy
            if self.value.shape[0] <= self.written:
                # grow in blocks: frames beyond len(step) are uncommitted and ignored
                self.value.resize(self.written + GROW_FRAMES, axis=0)
            value = np.ascontiguousarray(value, dtype=self.value.dtype)
            if self.direct:
                # one frame is exactly one uncompressed chunk: hand HDF5 the bytes
                self.value.id.write_direct_chunk((self.written,) + (0,) * (self.value.ndim - 1), value)
            else:
                self.value[self.written] = value
            self.written += 1
            self.pending.append(step)
            self.pending_crc.append(zlib.crc32(value))
            return True
        self.buffer[len(self.steps)] = value
        self.steps.append(step)
        if len(self.steps) == self.capacity:
            self.write()
            return True
        return False

    def write(self):
        """Write buffered frame values (not yet committed)."""
        k = len(self.steps)
        if k == 0:
            return
        a, b = self.written, self.written + k
        if self.value.shape[0] < b:
            self.value.resize(b, axis=0)
        self.value[a:b] = self.buffer[:k]
        self.written = b
        self.pending.extend(self.steps)
        self.pending_crc.extend(zlib.crc32(self.buffer[i]) for i in range(k))
        self.steps = []

    def commit(self):
        """Write the checksums, time, then step, for every written frame: the step
        commits them."""
        self.write()
        k = len(self.pending)
        if k == 0:
            return
        a, b = self.committed, self.committed + k
        st = np.asarray(self.pending, dtype=np.int64)
        self.crc.resize(b, axis=0)
        self.crc[a:b] = np.asarray(self.pending_crc, dtype=np.uint32)
        self.pending_crc = []
        self.time.resize(b, axis=0)
        self.time[a:b] = st.astype(np.float64)
        self.step.resize(b, axis=0)
        self.step[a:b] = st
        self.committed = b
        self.pending = []


class TrajectoryWriter:
    """Streams ensembles and observables of a Simulation into an H5MD file.

    Parameters
    ----------
    path : str; created (the caller decides about overwriting)
    ensembles : dict name -> Ensemble (shapes and which elements exist)
    observables : dict name -> example value (shape and dtype of each observable)
    parameters : dict of attributes for /parameters (config, seed, dtype, ...)
    compression : None, "lzf" or "gzip"
    """

    def __init__(self, path, ensembles, observables, parameters, compression=None,
                 author="particleflow user", flush_interval=1.0):
        self.path = path
        self.agree = None
        self.flush_interval = float(flush_interval)
        self._last_flush = time.monotonic()
        self._last_ids = {}
        # no chunk cache: frames are written whole, straight from our buffers
        f = h5py.File(path, "w", libver="latest", rdcc_nbytes=0)
        self.file = f
        h5 = f.create_group("h5md")
        h5.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
        h5.create_group("author").attrs["name"] = author
        creator = h5.create_group("creator")
        creator.attrs["name"] = "particleflow"
        creator.attrs["version"] = __version__
        mod = h5.create_group("modules").create_group("particleflow")
        mod.attrs["version"] = np.array([0, 1], dtype=np.int32)
        mod.attrs["description"] = MODULE_DESCRIPTION
        params = f.create_group("parameters")
        for k, v in parameters.items():
            params.attrs[k] = v
        params.attrs["particleflow_version"] = __version__
        params.attrs["git_revision"] = git_revision()
        self.elements = {}
        parts = f.create_group("particles")
        for name, ens in ensembles.items():
            g = parts.create_group(name)
            box = g.create_group("box")
            d = ens.dim
            box.attrs["dimension"] = d
            box.attrs["boundary"] = np.array(["none"] * d, dtype=h5py.string_dtype())
            self.elements[(name, "position")] = _Element(g.create_group("position"), ens.x.shape,
                                                         ens.dtype, compression)
            self.elements[(name, "id")] = _Element(g.create_group("id"), (ens.n,), np.int64, compression)
            if ens.log_weights is not None:
                self.elements[(name, "log_weight")] = _Element(g.create_group("log_weight"), (ens.n,),
                                                               ens.dtype, compression)
            if ens.signs is not None:
                self.elements[(name, "sign")] = _Element(g.create_group("sign"), (ens.n,),
                                                         np.int8, compression)
        obs = f.create_group("observables")
        self.observables = {}
        for name, example in observables.items():
            ex = np.asarray(example)
            dtype = np.float64 if ex.dtype.kind in "biuf" else ex.dtype
            self.observables[name] = _Element(obs.require_group(name), ex.shape, dtype, None)
        f.create_group("results")
        f.swmr_mode = True

    def write_frame(self, step, ensembles):
        wrote = False
        for (name, what), el in self.elements.items():
            if name not in ensembles:          # static ensembles are written at frame 0 only
                continue
            ens = ensembles[name]
            if what == "id":
                # ids change only when particles are resampled or born: the id element
                # gets a frame (with its own step) only when they changed
                ids = to_numpy(ens.ids)
                last = self._last_ids.get(name)
                same = last is not None and np.array_equal(last, ids)
                if self.agree is not None:     # the shards of one ensemble decide together
                    same = not self.agree(not same)
                if same:
                    continue
                self._last_ids[name] = ids.copy()
                wrote |= el.append(step, ids)
                continue
            v = {"position": ens.x, "log_weight": ens.log_weights, "sign": ens.signs}[what]
            wrote |= el.append(step, to_numpy(v))
        if wrote:
            self._maybe_flush()

    def write_observable(self, name, step, value):
        if self.observables[name].append(step, np.asarray(value)):
            self._maybe_flush()

    def _maybe_flush(self):
        """Commit written frames (step datasets) and flush them to SWMR readers, at
        most every ``flush_interval`` seconds: per-frame commits and flushes cost
        more than the frame data itself."""
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self):
        """Write and commit every buffered frame, then flush the file."""
        for el in list(self.elements.values()) + list(self.observables.values()):
            el.commit()
        self.file.flush()
        self._last_flush = time.monotonic()

    def frame_counts(self):
        return {"/".join(k): el.committed for k, el in self.elements.items()} | \
            {f"observables/{k}": el.committed for k, el in self.observables.items()}

    def write_results(self, results):
        """Store end-of-run values under /results.  HDF5's SWMR mode forbids creating
        datasets, so the writer commits every frame, closes the SWMR handle and
        reopens the file (not in SWMR mode) to add them."""
        self.close()
        with h5py.File(self.path, "r+", libver="latest") as f:
            write_results(f, results)

    def close(self):
        """Flush, trim preallocated frames, close."""
        if self.file is None:
            return
        self.flush()
        for el in list(self.elements.values()) + list(self.observables.values()):
            if el.value.shape[0] > el.committed:
                el.value.resize(el.committed, axis=0)
        self.file.close()
        self.file = None


class TrajectoryObserver(Observer):
    """The HDF5 writer as a Simulation observer: creates ``path`` when the run starts
    (every dataset exists before step 0, as SWMR requires), streams frames and
    observables, and stores ``sim.results`` under /results when the run finishes.

    ``resume_frames``: the committed frame counts of a checkpoint; the frames up to
    them are copied from the existing ``path`` into a fresh file that atomically
    replaces it (a killed writer leaves its file flagged as open), and the run
    continues appending to it."""

    def __init__(self, path, parameters, compression=None, resume_frames=None, ensembles=None,
                 observables=True, agree=None):
        self.path, self.parameters, self.compression = path, parameters, compression
        self.resume_frames = resume_frames
        self.only = None if ensembles is None else set(ensembles)
        self.with_observables = bool(observables)
        self.agree = agree
        self.writer = None

    def start(self, sim, spec):
        # a writer of part of a run (one rank's shard file, or the run file of a run
        # over several ranks) keeps the ensembles and observables it was given
        spec = Spec({k: e for k, e in spec.ensembles.items() if self.only is None or k in self.only},
                    spec.observables if self.with_observables else {})
        if self.resume_frames is None:
            self.writer = TrajectoryWriter(self.path, spec.ensembles, spec.observables, self.parameters,
                                           compression=self.compression)
        else:
            self.writer = _rewrite_prefix(self.path, spec, self.parameters, self.compression, self.resume_frames)
        self.writer.agree = self.agree

    def record(self, step, frames, values):
        if self.only is not None:
            frames = {k: e for k, e in frames.items() if k in self.only}
        if not self.with_observables:
            values = {}
        if frames:
            self.writer.write_frame(step, frames)
        for k, v in values.items():
            self.writer.write_observable(k, step, to_numpy(v))
        if step == 0:
            self.writer.flush()            # readers see the initial state at once

    def finish(self, sim):
        if self.with_observables:          # a shard file holds particles only
            self.writer.write_results(sim.results)

    def close(self):
        if self.writer is not None:
            self.writer.close()

    def flush(self):
        self.writer.flush()

    def frame_counts(self):
        return self.writer.frame_counts()


def _rewrite_prefix(out, spec, params, compression, frames):
    """A writer on a fresh copy of ``out`` holding the first ``frames[element]`` frames
    of every element; the copy replaces ``out``."""
    tmp = temporary_beside(out, ".resume.tmp")
    old = Run(out)
    for key, n in frames.items():
        group = key if key.startswith("observables/") else f"particles/{key}"
        have = old._counts.get("/" + group, 0)
        if n > have:
            old.close()
            raise ValueError(f"{out} holds {have} committed frames of {key} but its checkpoint needs {n}: the "
                             "trajectory and the checkpoint do not belong together")
    try:
        w = _copy_prefix(tmp, out, old, spec, params, compression, frames)
    except (OSError, RuntimeError) as e:
        if not _read_failure(e):
            raise
        raise damaged(out, e) from None
    w.path = out
    return w


def _copy_prefix(tmp, out, old, spec, params, compression, frames):
    with _replace_on_success(tmp, out, old):
        w = TrajectoryWriter(tmp, spec.ensembles, spec.observables, params, compression=compression)
        elements = [(f"{name}/{what}", f"particles/{name}/{what}", el) for (name, what), el in w.elements.items()]
        elements += [(f"observables/{k}", f"observables/{k}", el) for k, el in w.observables.items()]
        for key, group, el in elements:
            n = frames.get(key, 0)
            if n:
                kept = _Frames(old.file[group], {old.file[group].name: n})
                steps = kept.steps()
                for i in range(n):
                    el.append(int(steps[i]), kept[i])
        for (name, what), el in w.elements.items():
            n = frames.get(f"{name}/{what}", 0)
            if what == "id" and n:
                # ids get a frame only when they change: compare with the last one kept
                w._last_ids[name] = np.asarray(old.file[f"particles/{name}/id/value"][n - 1])
        w.flush()
    return w


@contextlib.contextmanager
def _replace_on_success(tmp, path, source):
    """Close ``source``; then move ``tmp`` over ``path`` if the block succeeded, or
    delete ``tmp`` if it raised (the original file is never damaged)."""
    try:
        yield
    except BaseException:
        source.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    source.close()
    os.replace(tmp, path)


def _digest(value):
    """CRC-32 of a dataset's value as read back (strings by their text)."""
    a = np.asarray(value)
    data = repr(a.tolist()).encode() if a.dtype.kind in "OSUV" else np.ascontiguousarray(a).tobytes()
    return zlib.crc32(data)


def write_checked(group, name, value):
    """A dataset written once, with the CRC-32 of its value as attribute ``crc32``
    (small and scalar datasets cannot carry HDF5's chunk checksums)."""
    a = np.asarray(value)
    ds = group.create_dataset(name, data=a)
    # numbers read back as written; text may come back as bytes: digest what is read
    ds.attrs["crc32"] = np.uint32(_digest(a if a.dtype.kind in "biufc" else ds[()]))
    return ds


def read_checked(ds):
    """The value of a ``write_checked`` dataset; ValueError if it no longer matches
    its checksum (datasets without one, from older files, are read as they are)."""
    v = ds[()]
    want = ds.attrs.get("crc32")
    if want is not None and int(want) != _digest(v):
        raise damaged(ds.file.filename, f"checksum of {ds.name} does not match")
    return v


def write_results(f, results):
    g = f.require_group("results")
    for k, v in results.items():
        if k in g:
            del g[k]
        write_checked(g, k, v)


# ---------------------------------------------------------------- reader
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _gf2_times(matrix, vector):
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def _crc32_shift(nbytes):
    """The GF(2)-linear map taking CRC-32(A) to its contribution to CRC-32(A + B) for
    any B of ``nbytes`` bytes (zlib's crc32_combine: CRC-32(A + B) = shift(CRC-32(A))
    ^ CRC-32(B)), as its 32 columns."""
    def square(m):
        return [_gf2_times(m, m[k]) for k in range(32)]

    m = [0xEDB88320] + [1 << (k - 1) for k in range(1, 32)]     # append one zero bit
    for _ in range(3):
        m = square(m)                                            # ... 2, 4, 8: one zero byte
    cols = [1 << k for k in range(32)]                           # the identity
    n = nbytes
    while n:                                                     # m^nbytes by squaring
        if n & 1:
            cols = [_gf2_times(m, c) for c in cols]
        n >>= 1
        if n:
            m = square(m)
    return cols


def crc32_append(crc_a, crc_b, nbytes_b):
    """CRC-32 of A + B per frame from CRC-32(A), CRC-32(B) and B's length (arrays of
    frames; A empty where ``crc_a`` is 0 and B its whole frame)."""
    if nbytes_b == 0:
        return np.asarray(crc_a, np.uint32)
    m = _crc32_shift(nbytes_b)
    return np.array([_gf2_times(m, int(a)) ^ int(b) for a, b in zip(crc_a, crc_b)], dtype=np.uint32)


def link_shards(path, layout):
    """Give the run file ``path`` the particles of ensembles written in shards, as HDF5
    virtual datasets: ``layout`` maps an ensemble name to (n, [(shard file, lo, hi)])
    and the shard holding rows lo:hi of it.  ``step`` and ``time`` are copied from
    the first shard (all shards hold the same frames); every ``value`` is a virtual
    dataset [T, n, ...] over the shards' values, in particle order.  The shard files
    are named relative to the run file's folder, so the run moves with its shards."""
    base = os.path.dirname(os.path.abspath(path))
    with h5py.File(path, "r+", libver="latest") as f:
        for name, (n, parts) in layout.items():
            srcs = [h5py.File(p, "r") for p, _, _ in parts]
            try:
                first = srcs[0][f"particles/{name}"]
                g = f.require_group(f"particles/{name}")
                if "box" not in g:
                    srcs[0].copy(first["box"], g)
                for what in first:
                    if what == "box":
                        continue
                    counts = [len(s[f"particles/{name}/{what}/step"]) for s in srcs]
                    if len(set(counts)) != 1:
                        raise ValueError(f"the shards of {name}/{what} hold different frame counts {counts}; "
                                         "resume the run to complete them")
                    T = counts[0]
                    el = g.require_group(what)
                    for k in ("step", "time", "value", "crc32"):
                        if k in el:
                            del el[k]
                    for k in ("step", "time"):
                        el.create_dataset(k, data=first[f"{what}/{k}"][:T], maxshape=(None,))
                    if all("crc32" in s[f"particles/{name}/{what}"] for s in srcs):
                        # each frame's CRC-32 over the whole frame, from the shards' CRCs
                        crc = np.zeros(T, np.uint32)
                        for s in srcs:
                            v = s[f"particles/{name}/{what}/value"]
                            crc = crc32_append(crc, s[f"particles/{name}/{what}/crc32"][:T],
                                               int(np.prod(v.shape[1:], dtype=np.int64)) * v.dtype.itemsize)
                        el.create_dataset("crc32", data=crc, maxshape=(None,))
                    v0 = first[f"{what}/value"]
                    lay = h5py.VirtualLayout(shape=(T, n) + v0.shape[2:], dtype=v0.dtype)
                    for s, (p, lo, hi) in zip(srcs, parts):
                        v = s[f"particles/{name}/{what}/value"]
                        src = h5py.VirtualSource(os.path.relpath(os.path.abspath(p), base), v.name, shape=v.shape)
                        lay[:, lo:hi] = src[:T]
                    el.create_virtual_dataset("value", lay, fillvalue=0)
            finally:
                for s in srcs:
                    s.close()


def check_complete(path):
    """Raise ``ValueError`` unless ``path`` is an HDF5 file at least as long as its
    superblock's end-of-file address.  A truncated file fails here at once; HDF5
    itself may hang on it or read zeros where data was cut off (in SWMR mode it skips
    its own end-of-file check)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(2048 + 64)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    for off in (0, 512, 1024, 2048):
        if head[off:off + 8] == HDF5_SIGNATURE:
            break
    else:
        raise ValueError(f"{path} is not an HDF5 file")
    version = head[off + 8] if len(head) > off + 8 else -1
    if version >= 2:
        width, at = (head[off + 9] if len(head) > off + 9 else 0), off + 12
    elif version in (0, 1):
        width, at = (head[off + 13] if len(head) > off + 13 else 0), off + (24 if version == 0 else 28)
    else:
        raise ValueError(f"{path}: damaged HDF5 superblock")
    if width not in (2, 4, 8) or len(head) < at + 3 * width:
        raise ValueError(f"{path}: damaged or truncated HDF5 superblock")
    base = int.from_bytes(head[at:at + width], "little")
    end = base + int.from_bytes(head[at + 2 * width:at + 3 * width], "little")
    if size < end:
        raise ValueError(f"{path} is truncated ({size} of {end} bytes): the file was cut off (copy or disk "
                         "error); it cannot be read or repaired safely")
    # the file consistency flags (superblock v2 / v3): bit 0 open for writing, bit 2
    # open for SWMR writing; set while a writer has it open (or was killed)
    return head[off + 11] if version >= 2 else 0


LIVE_RETRY_SECONDS = 2.0


def _with_retries(path, read):
    """``read()``; a failed HDF5 read of a file flagged as open for writing (a writer
    without an output lock, e.g. a Simulation run from Python, may be rewriting the
    block) is tried again for up to ``LIVE_RETRY_SECONDS``; then, and at once for a
    closed file, it is ``damaged``."""
    deadline = None
    while True:
        try:
            return read()
        except (OSError, RuntimeError) as e:
            if deadline is None:
                try:
                    flags = check_complete(path)
                except ValueError:
                    flags = 0
                deadline = time.monotonic() + (LIVE_RETRY_SECONDS if flags & 0x05 else 0.0)
            if time.monotonic() >= deadline:
                raise damaged(path, e) from None
            time.sleep(0.05)


def _refresh(ds):
    if ds.file.swmr_mode:
        ds.refresh()
    return ds


def damaged(path, error):
    """The ValueError for a file HDF5 cannot read back (a metadata or data checksum
    fails, an object header is garbage): zero-filled or overwritten blocks."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return ValueError(f"{path} is damaged ({reason}): part of it was overwritten or zero-filled after it was "
                      "written (disk or copy error); it cannot be read or repaired, rerun its config")


def _read_failure(error):
    """Whether an HDF5 error while copying a file is a failed read (damage), not a
    failed write (disk full, permissions), which the caller reports as such."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) or (getattr(error, "errno", None) is None
                                               and "write" not in text and "no space" not in text)


def _verify(name, obj):
    """Read and check one object of a file: every committed frame of an element
    (``_Frames``), every other dataset whole (HDF5 checks chunk checksums, and
    ``read_checked`` the CRC of a dataset written once)."""
    if isinstance(obj, h5py.Group) and "value" in obj and "step" in obj:
        frames = _Frames(obj, {obj.name: min(obj[k].shape[0] for k in ("step", "time", "value"))})
        frames.steps()
        for i in range(len(frames)):
            frames[i]
    elif isinstance(obj, h5py.Dataset) and obj.size and not ("value" in obj.parent and "step" in obj.parent):
        read_checked(obj)


def _walk_metadata(f):
    """Read every object header, attribute and chunk index of ``f`` once: with one
    metadata read attempt (``open_for_reading``) a damaged block is an error here, at
    open, instead of a hang or zeros later.  Reads no data chunks (their checksums are
    checked when they are read)."""
    def visit(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj.shape, obj.dtype
            if obj.chunks is not None and not obj.is_virtual:
                obj.id.get_num_chunks()
    dict(f.attrs)
    f.visititems(visit)


class _Frames:
    """Lazy view of the committed frames of one element: ``len``, ``shape`` and
    indexing by an integer or a slice along frames (plus any trailing indices).  The
    frame count is the run's snapshot (``Run.refresh``), so every read within one
    snapshot sees the same prefix."""

    def __init__(self, group, counts):
        self._group = group
        self._counts = counts

    def __len__(self):
        return self._counts[self._group.name]

    @property
    def shape(self):
        return (len(self),) + self._group["value"].shape[1:]

    def __getitem__(self, idx):
        return _with_retries(self._group.file.filename, lambda: self._read(idx))

    def _read(self, idx):
        n = len(self)
        v = self._group["value"]
        first, rest = (idx[0], idx[1:]) if isinstance(idx, tuple) else (idx, ())
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"frame {first} out of range for {n} committed frames")
            return self._checked(v, i, i + 1, 1)[0][rest]
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if stop <= start:
                return np.empty((0,) + v.shape[1:], dtype=v.dtype)[(slice(None),) + rest]
            return self._checked(v, start, stop, step)[(slice(None),) + rest]
        raise TypeError("index frames with an integer or a slice")

    def _checked(self, v, start, stop, step):
        """Frames start:stop:step, each checked against its stored CRC-32 (files
        without checksums are read as they are)."""
        data = v[start:stop:step]
        g = self._group
        if "crc32" in g:
            want = _refresh(g["crc32"])[start:stop:step]
            if len(want) != len(data):
                raise damaged(g.file.filename, f"{g.name} has fewer checksums than committed frames")
            for k, frame in enumerate(data):
                if zlib.crc32(np.ascontiguousarray(frame)) != int(want[k]):
                    raise damaged(g.file.filename, f"checksum of frame {start + k * step} of {g.name} does "
                                  "not match its values")
        return data

    def steps(self):
        n = len(self)
        steps = _with_retries(self._group.file.filename,
                              lambda: self._group["step"][:n] if n else np.empty(0, np.int64))
        if n > 1 and (np.diff(steps) <= 0).any():         # a writer's steps always increase
            raise damaged(self._group.file.filename, f"the steps of {self._group.name} do not increase")
        return steps

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


class EnsembleRecord:
    def __init__(self, group, counts):
        self._g = group
        self.positions = _Frames(group["position"], counts)
        self.ids = _Frames(group["id"], counts)
        self.log_weights = _Frames(group["log_weight"], counts) if "log_weight" in group else None
        self.signs = _Frames(group["sign"], counts) if "sign" in group else None

    @property
    def steps(self):
        return self.positions.steps()


class Observable:
    def __init__(self, group, counts):
        self._frames = _Frames(group, counts)

    @property
    def steps(self):
        return self._frames.steps()

    @property
    def values(self):
        return self._frames[:]


ELEMENTS = ("position", "id", "log_weight", "sign")


class Run:
    """A trajectory opened by ``open_run``; use as a context manager or call ``close``.
    Frame counts are a snapshot taken at open (``refresh()`` takes a new one while
    a run is still writing the file): reads within one snapshot are consistent."""

    def __init__(self, path):
        self.path = path
        check_complete(path)
        self.file = None

        def attempt():
            if self.file is not None:
                self.file.close()
                self.file = None
            self.file = open_for_reading(path)
            self._open()
        try:
            _with_retries(path, attempt)
        except BaseException as e:
            if self.file is not None:
                self.file.close()
            if isinstance(e, KeyError):
                raise damaged(path, e) from None
            raise

    def _open(self):
        path, f = self.path, self.file
        _walk_metadata(f)
        if "h5md" not in f or "particles" not in f:
            raise ValueError(f"{path} is an HDF5 file but not a particleflow trajectory (no /h5md or /particles)")
        if "h5md/modules/particleflow" not in f or "observables" not in f or "parameters" not in f or not all(
                "position" in g and "id" in g for g in f["particles"].values()):
            raise ValueError(f"{path} is an H5MD file not written by particleflow; particleflow reads, "
                             "resumes and repairs only its own trajectories")
        self._counts = {}
        self.ensembles = {k: EnsembleRecord(g, self._counts) for k, g in f["particles"].items()}
        self.observables = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "value" in obj and "step" in obj:
                self.observables[name] = Observable(obj, self._counts)
        f["observables"].visititems(visit)
        self.refresh()
        self.results = {}
        if "results" in f:
            f["results"].visititems(lambda k, v: self.results.__setitem__(k, read_checked(v))
                                    if isinstance(v, h5py.Dataset) else None)
        self.parameters = dict(f["parameters"].attrs)
        self._check_shards()

    def _check_shards(self):
        """A run over several processes keeps its sharded particles in other files,
        linked as virtual datasets: HDF5 reads a missing source as zeros, so every source
        must exist, be complete and belong to this run (its ``run_id``)."""
        base = os.path.dirname(os.path.abspath(self.path))
        seen = set()
        for g in self.file["particles"].values():
            for el in g.values():
                ds = el.get("value") if isinstance(el, h5py.Group) else None
                if ds is None or not ds.is_virtual:
                    continue
                for src in ds.virtual_sources():
                    name = src.file_name
                    full = name if os.path.isabs(name) else os.path.join(base, name)
                    if full in seen:
                        continue
                    seen.add(full)
                    if not os.path.exists(full):
                        raise ValueError(f"{self.path}: its shard file {name} is missing (a run over several "
                                         "processes keeps its particles in the .shards folder beside the run file; "
                                         "copy or move them together)")
                    check_complete(full)
                    with open_for_reading(full) as sf:
                        rid = sf["parameters"].attrs.get("run_id") if "parameters" in sf else None
                    mine = self.parameters.get("run_id")
                    if mine is not None and rid != mine:
                        raise ValueError(f"{self.path}: the shard file {name} belongs to another run (run ids "
                                         f"{rid} and {mine}); keep each run's .shards folder with its run file")

    def refresh(self):
        """Take a new snapshot of the committed frame counts: an element's count is
        the shortest of its step, time and value datasets."""
        groups = [g[e] for g in self.file["particles"].values() for e in ELEMENTS if e in g]
        groups += [o._frames._group for o in self.observables.values()]
        for g in groups:
            self._counts[g.name] = min(_refresh(g[k]).shape[0] for k in ("step", "time", "value", "crc32") if k in g)
        return self

    @property
    def config(self):
        text = self.parameters.get("config", "")
        return tomllib.loads(text) if text else {}

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_run(path):
    """Open a trajectory for reading (works while the run is still writing it)."""
    if not os.path.exists(path):
        raise ValueError(f"no such file: {path}")
    try:
        return Run(path)
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 trajectory ({e})") from None


def repair(path):
    """Rewrite a trajectory whose writer was killed into a clean file that plain
    ``h5py.File(path)`` opens: every group and attribute is copied, each element is
    cut to its committed frames (``len(step)``), and the result atomically replaces
    ``path``.  Returns the number of committed position frames per ensemble."""
    with open_run(path) as run:            # complete, particleflow's own, with frames
        if not any(len(e.positions) for e in run.ensembles.values()):
            raise ValueError(f"{path} has no committed frames: nothing to keep; rerun the config instead")
    tmp = temporary_beside(path, ".repair.tmp")
    try:
        src = open_for_reading(path)
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 trajectory ({e})") from None
    counts = {}
    try:
        _copy_trimmed(src, tmp, path, counts)
    except (OSError, RuntimeError) as e:
        if not _read_failure(e):
            raise
        raise damaged(path, e) from None
    return counts


def _copy_trimmed(src, tmp, path, counts):
    with _replace_on_success(tmp, path, src):
        # HDF5 copies chunks as they are: every committed frame and dataset is read and
        # checked first, so that damage is reported instead of carried into the copy
        src.visititems(_verify)
        if "h5md" not in src or "particles" not in src:
            raise ValueError(f"{path} is not a particleflow trajectory (no /h5md or /particles)")
        with h5py.File(tmp, "w", libver="latest") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for name in src:
                src.copy(src[name], dst, name=name)

            def trim(name, obj):
                if isinstance(obj, h5py.Group) and "step" in obj and "value" in obj:
                    n = min(obj[k].shape[0] for k in ("step", "time", "value"))
                    for ds in ("step", "value", "time", "crc32"):
                        if ds in obj and obj[ds].shape[0] > n:
                            obj[ds].resize(n, axis=0)
                    if name.startswith("particles/") and name.endswith("/position"):
                        counts[name.split("/")[1]] = n
            dst.visititems(trim)
