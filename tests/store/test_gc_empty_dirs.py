"""gc removes the empty checkpoint key directories older than its grace period (a store
written before emptied keys lost their directory holds one per finished trial); a dry run
counts them and removes nothing; a young one, a non-empty one and the stage's stay."""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline import Store
from pipeline.store.manifest import Manifest
from pipeline.store.retention import gc

DAY = 86400.0


def _emptied(store: Store, key: str, age: float) -> None:
    """A key whose only checkpoint was deleted (its directory left behind), last changed ``age`` ago."""
    ck = store.checkpoints("fit", key)
    ck.commit(Manifest(stage="fit", key=key, outputs=store.save_parts({"w": np.arange(2)}), step=1, kind="checkpoint"))
    ck.delete(1)
    old = time.time() - age
    os.utime(store.url + f"/checkpoints/fit/{key}", (old, old))


def test_gc_removes_old_empty_checkpoint_key_directories(tmp_path):
    store = Store(tmp_path / "s")
    for key in ("a", "b", "c"):
        _emptied(store, key, 2 * DAY)
    _emptied(store, "young", 0.0)
    tree = store.save_parts({"w": np.arange(3)})
    store.checkpoints("fit", "kept").commit(Manifest(stage="fit", key="kept", outputs=tree, step=4, kind="checkpoint"))
    old = time.time() - 2 * DAY
    os.utime(tmp_path / "s" / "checkpoints" / "fit" / "kept", (old, old))
    listed = lambda: sorted(os.listdir(tmp_path / "s" / "checkpoints" / "fit"))  # noqa: E731
    before = listed()
    assert before == ["a", "b", "c", "kept", "young"]

    report = gc(store, dry_run=True, grace_seconds=DAY)
    assert report.removed_dirs == 3 and listed() == before  # reported, not removed

    report = gc(store, grace_seconds=DAY)
    assert report.removed_dirs == 3
    assert listed() == ["kept", "young"]  # the young one waits for its grace, the kept one holds a checkpoint
    assert store.checkpoints("fit", "kept").steps() == [4] and store.verify().clean
    assert gc(store, grace_seconds=DAY).removed_dirs == 0
    _emptied(store, "a", 2 * DAY)  # a key emptied again writes there again
    assert gc(store, grace_seconds=0).removed_dirs == 2  # (grace 0: the young one goes too)
    assert listed() == ["kept"]


def test_gc_says_how_many_empty_checkpoint_directories_it_removes(tmp_path):
    from tests.cli.test_lifecycle import invoke

    store = Store(str(tmp_path / "s"), fsync=False)
    for key in ("a" * 32, "b" * 32):
        _emptied(store, key, 2 * DAY)
    dry = invoke("gc", "--dry-run", "--store", store.url)
    assert dry.exit_code == 0, dry.output
    assert "2 empty checkpoint directories" in dry.output
    assert os.path.isdir(store.url + "/checkpoints/fit/" + "a" * 32)  # a dry run removes nothing
    done = invoke("gc", "--store", store.url)
    assert done.exit_code == 0 and "2 empty checkpoint directories" in done.output, done.output
    assert not os.path.exists(store.url + "/checkpoints/fit/" + "a" * 32)
    assert "empty checkpoint" not in invoke("gc", "--store", store.url).output
