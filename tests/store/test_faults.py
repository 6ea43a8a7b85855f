"""The faults fault injection found (issue #10), each as a test on real files and processes.

1. a manifest copied over another key's, or bit-flipped, is never served and `verify` says so;
2. gc racing writers loses no committed entry (tests/store/test_gc_race.py, slow);
3. on S3 a long-lived process sees what others commit (test_store_s3.py);
4. a save over a same-size rotted object leaves a verified object behind;
5. a 300-byte stage name works, and an OS error is a StoreError naming the path;
6. a symlinked object is refused, temps of killed writers are cleaned, quarantine names
   never overwrite each other.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline import StageCache, Store, StoreError, materialize
from pipeline.store.retention import gc


def echo(x: int) -> dict:
    return {"x": x}


def manifest_files(root: Path, stage: str) -> list[Path]:
    return sorted((root / "stages").glob(f"{stage}*/*.json"))


def quarantined(root: Path) -> list[str]:
    q = root / "quarantine"
    return sorted(p.name for p in q.iterdir()) if q.exists() else []


# -- 1. manifests verify themselves ------------------------------------------------------------


def test_a_manifest_copied_over_another_keys_is_never_served(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(echo)
    assert stage(1) == {"x": 1} and stage(2) == {"x": 2}
    path1 = root / store.manifest_path("echo", stage.key(1).key)
    path2 = root / store.manifest_path("echo", stage.key(2).key)
    shutil.copyfile(path2, path1)  # a bad sync or restore
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = store.verify()
    assert not report.clean and report.bad_manifests == 1
    shutil.copyfile(path2, path1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = stage.call(1)
    assert outcome.value == {"x": 1} and not outcome.hit  # recomputed, never {"x": 2}
    assert stage.call(1).hit and stage.call(2).hit


def test_every_single_bit_flip_in_a_manifest_is_detected(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(echo)
    stage(7)
    key = stage.key(7).key
    path = root / store.manifest_path("echo", key)
    good = path.read_bytes()
    rng = random.Random(10)
    served = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(1000):
            pos, bit = rng.randrange(len(good)), rng.randrange(8)
            bad = bytearray(good)
            bad[pos] ^= 1 << bit
            path.write_bytes(bytes(bad))
            if store.manifest("echo", key) is not None:
                served.append((pos, bit, chr(good[pos])))
            if i % 10 == 0:  # verify too (on every 10th flip: it walks the whole store)
                path.write_bytes(bytes(bad))
                report = store.verify()
                assert not report.clean and report.bad_manifests == 1, (pos, bit)
    assert served == [], f"{len(served)} of 1000 flipped manifests were served: {served[:10]}"
    path.write_bytes(good)
    assert store.manifest("echo", key) is not None and store.verify().clean


# -- 4. dedup must not keep rotted bytes -------------------------------------------------------


def test_a_fresh_save_repairs_a_same_size_rotted_object(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    value = np.arange(1000.0)
    stage = StageCache(store).wrap(lambda v: v * 2, name="double")
    stage(value)
    (obj,) = [p for p in (root / "objects").rglob("*.joblib")]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x10  # same size, other bytes
    obj.write_bytes(bytes(data))
    StageCache(store).wrap(lambda v: v * 2, name="double2")(value)  # same content, a fresh save
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first entry is whole again: no "recomputing"
        outcome = stage.call(value)
    assert outcome.hit
    np.testing.assert_array_equal(outcome.value, value * 2)
    assert store.verify().clean


# -- 5. long names, OS errors ------------------------------------------------------------------


def test_a_300_byte_stage_name_works(tmp_path):
    store = Store(tmp_path / "store")
    name = "s" * 290 + "é" * 5  # 300 bytes in UTF-8
    assert len(name.encode()) == 300
    stage = StageCache(store).wrap(echo, name=name)
    assert not stage.call(3).hit
    assert stage.call(3).hit
    other = StageCache(store).wrap(echo, name="s" * 290 + "è" * 5)  # same prefix, another stage
    assert not other.call(3).hit
    assert store.verify().clean
    for path in (tmp_path / "store").rglob("*"):
        assert len(path.name.encode()) <= 200, path.name


def test_an_os_error_reading_the_store_is_a_store_error_naming_the_path(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(echo)
    stage(1)
    shutil.rmtree(root / "stages")
    (root / "stages").write_text("not a directory")  # reads now fail with ENOTDIR
    with pytest.raises(StoreError, match="stages") as e:
        stage(1)
    assert "echo" in str(e.value)


# -- 6. symlinks, temps, quarantine names ------------------------------------------------------


def test_an_object_replaced_by_a_symlink_is_never_served(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    log = tmp_path / "log"

    def heavy(n: int) -> np.ndarray:
        with open(log, "a") as f:
            f.write("ran\n")
        return np.arange(n)

    stage = StageCache(store).wrap(heavy)
    stage(50)
    (obj,) = [p for p in (root / "objects").rglob("*.joblib")]
    outside = tmp_path / "outside.joblib"
    shutil.copyfile(obj, outside)  # the same bytes: only the link gives it away
    obj.unlink()
    obj.symlink_to(outside)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = stage.call(50)  # a hit is lazy: the object is refused when read, and recomputed
        assert (materialize(served.value) == np.arange(50)).all()
    assert log.read_text().count("ran") == 2
    assert not obj.is_symlink()  # the recompute wrote a real object in its place
    assert outside.exists()  # the target outside the store is untouched
    assert stage.call(50).hit and store.verify().clean


SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from pipeline import Store

    class Slow:
        def __reduce__(self):
            print("writing", flush=True)
            time.sleep(60)
            return (Slow, ())

    # Bytes beyond what a stage holds in memory go to the temp file before Slow is pickled
    # (a small object is staged in memory: a writer killed before its commit leaves nothing).
    Store(sys.argv[1]).save([b"x" * (8 << 20), Slow()])
    """
)


def test_temp_files_of_killed_writers_are_cleaned(tmp_path):
    root = tmp_path / "store"
    Store(root)
    script = tmp_path / "slow.py"
    script.write_text(SLOW_WRITER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    tmp = root / "objects" / "tmp"
    assert len(list(tmp.iterdir())) >= 1  # left by the kills (a second writer removes the first's)
    store = Store(root)  # opening the store removes them: their writers are dead
    assert store.verify().temp_files == 0 and list(tmp.iterdir()) == []


def test_gc_spares_temps_of_live_writers_at_any_grace_and_removes_stale_ones(tmp_path):
    from pipeline.store import layout

    root = tmp_path / "store"
    store = Store(root)
    tmp = root / "objects" / "tmp"
    live = root / layout.temp_path()  # a temp of this process: a writer in flight
    live.write_bytes(b"half an object")
    foreign = tmp / "0123abcd-1-deadbeef"  # another host's writer: judged by age only
    foreign.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(live, (old, old))
    assert gc(store, grace_seconds=0).deleted_temp_files == 0  # foreign is young, live is alive
    os.utime(foreign, (old, old))
    assert gc(store, grace_seconds=0).deleted_temp_files == 1
    assert live.exists() and not foreign.exists()


def test_quarantine_names_never_overwrite_each_other(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(echo)
    stage(1)
    path = root / store.manifest_path("echo", stage.key(1).key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for garbage in (b"\x00one", b"\x00two", b"\x00three"):
            path.write_bytes(garbage)
            assert stage(1) == {"x": 1}
    names = quarantined(root)
    assert len(names) == 3, names
    assert sorted((root / "quarantine" / n).read_bytes() for n in names) == [b"\x00one", b"\x00three", b"\x00two"]


def test_old_manifests_without_a_checksum_are_not_served(tmp_path):
    """Format-1 manifests (no checksum) can't prove they are the ones asked for: a miss."""
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(echo)
    stage(1)
    path = root / store.manifest_path("echo", stage.key(1).key)
    doc = json.loads(path.read_bytes())
    if "seal" not in doc:
        pytest.skip("today's store writes format-1 manifests")
    old = {k: v for k, v in doc.items() if k != "seal"}
    old["format"] = 1
    path.write_text(json.dumps(old))
    report = store.verify()
    assert report.unverified == 1 and report.manifests == 0 and report.clean  # counted, kept
    assert gc(store, grace_seconds=0).deleted_objects == 0  # what it references is kept
    with pytest.warns(UserWarning, match="format 1"):
        assert not stage.call(1).hit  # not served: recomputed (and rewritten sealed)
    assert stage.call(1).hit and store.verify().unverified == 0


def test_a_directory_replaced_by_a_symlink_is_never_followed(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    stage = StageCache(store).wrap(lambda n: np.arange(n), name="arange")
    stage(50)
    (obj,) = [p for p in (root / "objects").rglob("*.joblib")]
    outside = tmp_path / "outside"
    shutil.copytree(obj.parent, outside)  # the same bytes, elsewhere
    shutil.rmtree(obj.parent)
    obj.parent.symlink_to(outside, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = stage.call(50)  # read when used: refused, recomputed into a real directory
        assert (materialize(served.value) == np.arange(50)).all()
    assert not obj.parent.is_symlink() and obj.is_file()
    assert (outside / obj.name).is_file()  # nothing outside the store was moved or written
    assert stage.call(50).hit and store.verify().clean
