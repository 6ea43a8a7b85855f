"""Pruned checkpoints free their objects at prune time, unless another manifest references them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Manifest, Store
from pipeline.store.tree import leaves
from pipeline.training import Checkpointer, LatestN, Sync, TrainState


def object_bytes(root) -> int:
    return sum(p.stat().st_size for p in (root / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp")


def train(store, epochs, keep=LatestN(2), name="fit", pin=None):
    with Checkpointer(store=store, name=name, keep=keep, writer=Sync()) as ckpt:
        state = ckpt.restore(TrainState(weights=np.zeros(50_000)))
        for epoch in ckpt.epochs(state, epochs):
            state["weights"] = np.full(50_000, float(epoch))
            ckpt.step(epoch, state, {"loss": 1.0 / (epoch + 1)})
            if pin is not None and epoch + 1 == pin:
                store.tags.add("prod", name, "default", epoch + 1)
        ckpt.finish(state)
    return store.checkpoints(name, "default")


def test_disk_held_is_the_kept_checkpoints(tmp_path):
    store = Store(tmp_path / "s")
    cps = train(store, 8)
    assert cps.steps() == [7, 8]
    kept = sum(cps.read(s).bytes for s in cps.steps())
    assert object_bytes(tmp_path / "s") <= 1.2 * kept, (object_bytes(tmp_path / "s"), kept)


@pytest.mark.slow
def test_pruned_objects_are_freed_on_s3(s3_server):
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    cps = train(store, 5)
    assert cps.steps() == [4, 5]
    referenced = {leaf.object for s in cps.steps() for leaf in leaves(cps.read(s).outputs)}
    assert store.verify().orphans == 0 and store.verify().ok == len(referenced)


def test_an_object_another_manifest_shares_is_not_freed(tmp_path):
    store = Store(tmp_path / "s")
    # a stage result with the very bytes epoch 1's checkpoint entry will hold: one object, two manifests
    outputs = store.save_parts({"weights": np.full(50_000, 0.0)})
    store.commit(Manifest("other", "xxh3:" + "ab" * 16, outputs, created="2026-01-01T00:00:00+00:00"))
    train(store, 5)
    m = store.manifest("other", "xxh3:" + "ab" * 16)
    np.testing.assert_array_equal(store.load(m.outputs)["weights"], np.zeros(50_000))
    assert not store.missing(m.outputs)


def test_a_tagged_checkpoint_is_never_pruned(tmp_path):
    store = Store(tmp_path / "s")
    cps = train(store, 6, pin=2)
    assert cps.steps() == [2, 5, 6]
    assert not store.missing(cps.read(2).outputs)


def test_an_unreadable_tag_stops_pruning_not_training(tmp_path):
    import pytest

    store = Store(tmp_path / "s")
    store.tags.add("prod", "other", "xxh3:" + "cd" * 16)
    (tag_file,) = (tmp_path / "s" / "tags").rglob("*.json")
    tag_file.write_text("{torn")
    with pytest.warns(UserWarning, match="not pruned: tag file .* is unreadable"):
        cps = train(store, 4)
    assert cps.steps() == [1, 2, 3, 4]  # what is pinned is unknown: nothing pruned


WRITER = """
import json, sys, time, uuid
import numpy as np
import pytest
from pipeline import Manifest, Store
from pipeline.store.tree import leaves

root, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
store = Store(root)
keys, end, i = [], time.monotonic() + seconds, 0
while time.monotonic() < end:
    value = {"weights": np.full(50_000, float(i % 8))}  # the bytes of a checkpoint entry the trainer prunes
    key = "xxh3:" + uuid.uuid4().hex
    store.commit(Manifest("other", key, store.save_parts(value), created="2026-01-01T00:00:00+00:00"), value=value)
    keys.append(key)
    i += 1
with open(out, "w") as f:
    json.dump(keys, f)
"""


@pytest.mark.slow
def test_prune_time_freeing_racing_a_writer_of_the_same_bytes(tmp_path):
    """A writer process commits results whose objects are the very objects the trainer's pruned
    checkpoints free, all the while: no committed result may lose an object."""
    import json
    import os
    import subprocess
    import sys

    root = tmp_path / "s"
    store = Store(root)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OPENBLAS_NUM_THREADS": "1"}
    with open(tmp_path / "writer.err", "w") as err:
        writer = subprocess.Popen([sys.executable, str(script), str(root), "8", str(tmp_path / "keys.json")],
                                  stdout=subprocess.DEVNULL, stderr=err, env=env)  # fmt: skip
        runs = 0
        while writer.poll() is None:
            train(store, 8, keep=LatestN(1), name=f"fit-{runs}")
            runs += 1
        writer.wait()
    assert writer.returncode == 0, (tmp_path / "writer.err").read_text()[-3000:]
    keys = json.loads((tmp_path / "keys.json").read_text())
    assert runs >= 2 and len(keys) > 20, (runs, len(keys))
    lost = [k for k in keys if store.missing(store.manifest("other", k).outputs)]
    assert not lost, f"{len(lost)} of {len(keys)} committed results lost an object"
    for k in keys[:: max(1, len(keys) // 10)]:
        store.load(store.manifest("other", k).outputs)
