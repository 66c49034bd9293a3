"""Files damaged after they were written (a zero-filled tail of the right size, random
bytes over a data chunk, an overwritten result or checkpoint) are refused at once
with one ``damaged`` line and exit 2 by every command that reads them, and no number
read from damaged bytes is printed: metadata is read with one attempt (a SWMR reader
would retry a failed checksum for minutes), data chunks carry Fletcher-32 checksums
and results and checkpoints a CRC-32 per dataset."""
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from particleflow.cli import main

TEXT = """
estimator = "sample"
[run]
steps = 40
seed = 3
[output]
every = 10
checkpoint_every = 20
plot = false
[energy]
kind = "gaussian_mixture"
ring_components = 3
ring_radius = 2.0
[ensembles.chains]
n = 300
[[schedule]]
move = "mala"
ensemble = "chains"
step_size = 0.3
"""


def call(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    cfg = d / "c.toml"
    cfg.write_text(TEXT)
    out = d / "r.h5"
    with pytest.raises(SystemExit) as e:
        main(["run", str(cfg), "--out", str(out)])
    assert e.value.code == 0
    return out


def chunk_of(path, dataset, index=-1):
    """(byte offset, size) of one stored chunk of ``dataset``."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        n = ds.id.get_num_chunks()
        info = ds.id.get_chunk_info(index % n)
        return info.byte_offset, info.size


def damaged_copy(clean, tmp_path, offset, data):
    path = tmp_path / "d.h5"
    shutil.copy(clean, path)
    shutil.copy(str(clean) + ".ckpt", str(path) + ".ckpt")
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    return path


def assert_refused(code, out, err, path):
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "damaged" in err and str(path) in err, err


READERS = [["inspect", "{p}", "--stats"], ["eval", "{p}"], ["export", "{p}", "{d}/o.nc"],
           ["repair", "{p}"]]


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_zero_filled_position_chunk_is_refused_not_read_as_zeros(clean_run, tmp_path, capsys, argv):
    off, size = chunk_of(clean_run, "particles/chains/position/value")       # the last frames
    path = damaged_copy(clean_run, tmp_path, off, b"\0" * size)
    before = open(path, "rb").read()
    code, out, err = call([a.format(p=path, d=tmp_path) for a in argv], capsys)
    assert_refused(code, out, err, path)
    assert open(path, "rb").read() == before          # repair left the damaged file as it was
    assert not os.path.exists(tmp_path / "o.nc")


def test_random_bytes_over_the_first_frame_are_refused_by_export(clean_run, tmp_path, capsys):
    off, size = chunk_of(clean_run, "particles/chains/position/value", 0)
    frame_bytes = 300 * 2 * 8
    path = damaged_copy(clean_run, tmp_path, off + frame_bytes + 17, np.random.default_rng(0).bytes(64))
    code, out, err = call(["export", str(path), str(tmp_path / "o.nc")], capsys)
    assert_refused(code, out, err, path)


def test_an_overwritten_result_is_refused_by_inspect(clean_run, tmp_path, capsys):
    with h5py.File(clean_run, "r") as f:
        names = []
        f["results"].visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
        name = names[0]
        ds = f["results"][name]
        off, value = ds.id.get_offset(), ds[()]
    assert off is not None                              # contiguous: its bytes sit at `off`
    path = damaged_copy(clean_run, tmp_path, off, np.zeros_like(np.asarray(value)).tobytes())
    code, out, err = call(["inspect", str(path)], capsys)
    assert_refused(code, out, err, path)
    assert name in err


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_or_is_refused(clean_run, tmp_path):
    from particleflow.io.checkpoint import read_checkpoint
    ck = tmp_path / "c.ckpt"
    shutil.copy(str(clean_run) + ".ckpt", ck)
    shutil.copy(str(clean_run) + ".ckpt.prev", str(ck) + ".prev")
    good = read_checkpoint(str(ck))
    assert good["step"] == 40 and read_checkpoint(str(ck) + ".prev")["step"] == 20

    def zero_positions(p):
        with h5py.File(p, "r") as f:
            off = f["state/ensembles/chains/x"].id.get_offset()
            size = f["state/ensembles/chains/x"].id.get_storage_size()
        with open(p, "r+b") as fh:
            fh.seek(off)
            fh.write(b"\0" * size)
    zero_positions(ck)
    assert read_checkpoint(str(ck))["step"] == 20       # the older generation, intact
    zero_positions(str(ck) + ".prev")
    with pytest.raises(ValueError, match="no readable checkpoint.*does not match"):
        read_checkpoint(str(ck))


@pytest.mark.parametrize("argv", READERS + [["plot", "{p}", "--out", "{d}/p.png"]], ids=lambda a: a[0])
def test_a_half_zero_filled_file_is_answered_within_seconds(clean_run, tmp_path, argv):
    # a SWMR reader retried the zeroed metadata's checksums for minutes: a subprocess,
    # so that a regression fails by its timeout instead of hanging the suite
    size = os.path.getsize(clean_run)
    path = damaged_copy(clean_run, tmp_path, size // 2, b"\0" * (size - size // 2))
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "particleflow._main"] + [a.format(p=path, d=tmp_path) for a in argv],
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "damaged" in r.stderr, r.stderr
    assert r.stdout == ""                               # no number from the damaged file
    assert took < 20, took                              # 1-2 s here; minutes before


def test_a_killed_writers_file_still_opens_with_one_read_attempt(tmp_path):
    # the file of a killed run stays flagged as open for writing: it is read in SWMR
    # mode, with one metadata read attempt, and its committed frames are all there
    from particleflow.ensemble import Ensemble
    from particleflow.io.h5md import open_run
    ens = Ensemble(np.arange(20, dtype=np.float64).reshape(10, 2))
    code = f"""
import os, numpy as np
from particleflow.io.h5md import TrajectoryWriter
from particleflow.ensemble import Ensemble
ens = Ensemble(np.arange(20, dtype=np.float64).reshape(10, 2))
w = TrajectoryWriter({str(tmp_path / 'k.h5')!r}, {{"e": ens}}, {{}}, {{}})
for s in range(3):
    w.write_frame(s, {{"e": ens}})
w.flush()
os._exit(0)                                            # no close: as if killed
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(tmp_path / "k.h5", "r")
    with open_run(str(tmp_path / "k.h5")) as run:
        assert len(run.ensembles["e"].positions) == 3
        np.testing.assert_array_equal(run.ensembles["e"].positions[2], ens.x)


def test_crc32_of_a_concatenation_from_the_parts():
    """The run file of a sharded run combines its shards' frame CRCs (crc32_combine)."""
    import zlib
    from particleflow.io.h5md import crc32_append
    rng = np.random.default_rng(1)
    for la, lb in [(1000, 777), (1, 1), (5, 0), (0, 9), (4096, 123457)]:
        a, b = rng.bytes(la), rng.bytes(lb)
        assert crc32_append([zlib.crc32(a)], [zlib.crc32(b)], lb)[0] == zlib.crc32(a + b)
    parts = [rng.bytes(300) for _ in range(3)]                  # three shards of one frame
    crc = np.zeros(1, np.uint32)
    for p in parts:
        crc = crc32_append(crc, [zlib.crc32(p)], len(p))
    assert crc[0] == zlib.crc32(b"".join(parts))
