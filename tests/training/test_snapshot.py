"""The snapshot a background checkpoint write takes of an entry the store pickles (an estimator,
a plain object): its pickled bytes, taken in the training thread, written as they are. The
objects on disk are the ones the store writes for the value itself; round trips stay exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from pipeline import Store
from pipeline.store import codecs
from pipeline.store.tree import leaves
from pipeline.training import Background, Checkpointer, KeepAll, Sync, TrainState, adapters

RNG = np.random.default_rng(0)
X = RNG.standard_normal((300, 6))
Y = (X[:, 0] > 0).astype(int)


def run(store: Store, writer, epochs: int = 3) -> list[SGDClassifier]:
    """Train ``epochs`` epochs under a checkpoint each; the model as each checkpoint saw it."""
    ckpt = Checkpointer(store=store, name="run", keep=KeepAll(), writer=writer)
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0), rng=np.random.default_rng(1)))
    seen = []
    for epoch in ckpt.epochs(state, epochs):
        state.model.partial_fit(X[state.rng.permutation(len(X))], Y, classes=[0, 1])
        ckpt.step(epoch, state, {"val_loss": 1.0 / (epoch + 1)})
        seen.append(copy.deepcopy(state.model))
    ckpt.finish(state)
    return seen


def model_written(store: Store, step: int) -> tuple[str, str, int]:
    """``(object id, codec, bytes)`` of the model of checkpoint ``step``: as its manifest
    carries it (a small model, ``pipeline.training.entries``)."""
    carried = store.checkpoints("run", "default").read(step).extra["pickled"]["model"]
    return carried["object"], carried["codec"], carried["bytes"]


def test_an_estimator_is_snapshot_as_its_pickled_bytes_not_a_deep_copy(tmp_path, monkeypatch) -> None:
    class NoDeepCopy:
        @staticmethod
        def deepcopy(*args, **kwargs):
            raise AssertionError("the snapshot deep-copied an entry the store pickles")

    monkeypatch.setattr(adapters, "_copy", NoDeepCopy)
    store = Store(tmp_path / "s")
    seen = run(store, Background())
    for step, model in enumerate(seen, 1):
        back = Checkpointer(store=store, name="run").restore(TrainState(model=SGDClassifier()), step=step).model
        np.testing.assert_array_equal(back.coef_, model.coef_)
        assert back.t_ == model.t_


def test_the_bytes_written_are_the_ones_the_store_writes_for_the_model(tmp_path) -> None:
    """Same bytes as before (the model pickled by the writer): what each checkpoint carries is
    the store's object of the model as it was at that step, async or not."""
    background, sync, plain = Store(tmp_path / "b"), Store(tmp_path / "s"), Store(tmp_path / "p")
    seen = run(background, Background())
    assert [m.coef_.tolist() for m in run(sync, Sync())] == [m.coef_.tolist() for m in seen]
    for step, model in enumerate(seen, 1):
        expected = plain.put(model)
        for store in (background, sync):
            assert model_written(store, step) == (expected.object, expected.codec, expected.bytes)


def test_a_value_only_joblib_pickles_is_snapshot_and_written_as_before(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(codecs, "STRIDED_MAX_BYTES", 1000)  # the C pickler refuses this strided array
    value = {"w": np.arange(4000, dtype=np.float64)[::2], "tag": object.__name__}
    assert codecs.pickled(value) is None
    store = Store(tmp_path / "s")
    ckpt = Checkpointer(store=store, name="run", writer=Background())
    state = ckpt.restore(TrainState(extra=value))
    ckpt.step(0, state, {})
    value["w"][:] = -1.0  # after the snapshot: not in the checkpoint
    ckpt.finish(state)
    back = Checkpointer(store=store, name="run").restore(TrainState(extra=None)).extra
    np.testing.assert_array_equal(back["w"], np.arange(4000, dtype=np.float64)[::2])


@pytest.mark.parametrize("value", [SGDClassifier(alpha=0.5), ("a", 1, 2.5), {"n": 2**70, "s": {1, 2}}])
def test_pickled_bytes_are_the_pickle_codecs_bytes_and_load_back(tmp_path, value) -> None:
    store = Store(tmp_path / "s")
    encoded = codecs.pickled(value)
    assert encoded is not None
    leaf, direct = store.put(encoded), store.put(value)
    assert (leaf.object, leaf.codec) == (direct.object, direct.codec)
    back = store.load(leaf)
    assert type(back) is type(value)
    assert repr(back) == repr(value)
    assert [*leaves(leaf)] == [leaf]
