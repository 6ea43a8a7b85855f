"""A checkpoint's size counts the small pickled entries its manifest carries (a fitted
estimator rides there, ``pipeline.training.entries``), not only its objects: a size budget
(``MaxBytes``) over such checkpoints keeps no more than it says, and every size shown agrees."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier

from pipeline import Store
from pipeline.store.tree import leaves
from pipeline.tracking import training_record
from pipeline.training import Checkpointer, KeepAll, MaxBytes, Sync, TrainState

X = np.random.default_rng(0).standard_normal((200, 6))
Y = (X[:, 0] > 0).astype(int)


def held(manifest) -> int:
    """What a checkpoint holds, counted from its manifest by hand: object leaves + carried entries."""
    carried = manifest.extra.get("pickled", {})
    return sum(leaf.bytes for leaf in leaves(manifest.outputs)) + sum(d["bytes"] for d in carried.values())


def train(store: Store, epochs: int, keep) -> None:
    ckpt = Checkpointer(store=store, name="run", keep=keep, writer=Sync())
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0)))
    for epoch in ckpt.epochs(state, epochs):
        state.model.partial_fit(X, Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 1.0 - state.model.score(X, Y)})
    ckpt.finish(state)


def one_checkpoint_bytes(tmp_path) -> int:
    store = Store(tmp_path / "probe", fsync=False)
    train(store, 1, KeepAll())
    manifest = store.manifest("run", "default", 1)
    assert manifest.extra.get("pickled"), "the model is expected to ride in the manifest"
    return held(manifest)


def test_a_carried_model_s_checkpoint_size_counts_what_its_manifest_carries(tmp_path):
    store = Store(tmp_path / "s", fsync=False)
    train(store, 2, KeepAll())
    manifest = store.manifest("run", "default", 2)
    record = training_record(store, "run", "default")
    assert manifest.extra["pickled"]["model"]["bytes"] > 0
    assert manifest.bytes == held(manifest) == record.checkpoints[-1].bytes
    assert manifest.carried_bytes == manifest.extra["pickled"]["model"]["bytes"]
    assert manifest.object_bytes == manifest.bytes - manifest.carried_bytes


def test_a_checkpointer_s_size_budget_counts_carried_models(tmp_path):
    per = one_checkpoint_bytes(tmp_path)
    budget = 3 * per - 1  # two checkpoints fit, a third does not (counting their objects only, it would)
    store = Store(tmp_path / "s", fsync=False)
    train(store, 6, MaxBytes(budget))
    kept = training_record(store, "run", "default").checkpoints
    assert [c.step for c in kept] == [5, 6]
    assert sum(c.bytes for c in kept) <= budget
    assert sum(held(store.manifest("run", "default", c.step)) for c in kept) <= budget
