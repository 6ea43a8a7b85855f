"""Small pickled entries ride in their checkpoint's manifest (``pipeline.training.entries``):
no object file per epoch checkpoint for a fitted estimator of a kilobyte, the same bytes as its
object would hold, sealed (and, with a key, authenticated) with the manifest; a big entry, and a
checkpoint written before, are objects and restore as they always have."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from pipeline import Store
from pipeline.errors import CheckpointError
from pipeline.store import DictNode, Manifest, codecs
from pipeline.store import carried as store_carried
from pipeline.store.retention import gc
from pipeline.store.seal import CHECKSUM
from pipeline.tracking import training_record
from pipeline.training import Background, Checkpointer, KeepAll, Sync, TrainState, entries
from tests.pickles import K1, K2, Payload

X = np.random.default_rng(0).standard_normal((200, 6))
Y = (X[:, 0] > 0).astype(int)


def objects_on_disk(store: Store) -> set[str]:
    root = Path(store.url) / "objects"
    return {p.name for p in root.glob("??/*") if p.is_file()}


def train(store: Store, epochs: int, writer=None, x=X) -> list[bytes]:
    """The model's pickle at each checkpoint, as the store's codec writes it."""
    ckpt = Checkpointer(store=store, name="run", keep=KeepAll(), writer=writer or Background())
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0)))
    pickles = []
    for epoch in ckpt.epochs(state, epochs):
        state.model.partial_fit(x, Y, classes=[0, 1])
        pickles.append(codecs.pickled(state.model).data)
        ckpt.step(epoch, state, {"val_loss": 1.0 - state.model.score(x, Y)})
    ckpt.finish(state)
    return pickles


def restored(store: Store, step: int | None = None) -> TrainState:
    ckpt = Checkpointer(store=store, name="run", writer=Sync())
    state = ckpt.restore(TrainState(model=SGDClassifier(loss="log_loss", random_state=0)), step=step)
    ckpt.close()
    return state


@pytest.mark.parametrize("writer", [Background(), Sync()], ids=["background", "sync"])
def test_a_small_model_s_checkpoints_write_no_object_and_restore_exactly(tmp_path, writer):
    store = Store(tmp_path / "s")
    pickles = train(store, 3, writer)
    # One object in all: the global RNG streams (unchanged, shared by the three checkpoints).
    assert len(objects_on_disk(store)) == 1
    for step in (1, 2, 3):
        manifest = store.manifest("run", "default", step)
        assert set(manifest.outputs.names()) == {"_rng"} and set(manifest.extra["pickled"]) == {"model"}
        carried = manifest.extra["pickled"]["model"]
        expected = store.put(codecs.Pickled(pickles[step - 1]))  # the object it would have been
        assert (carried["object"], carried["codec"], carried["bytes"]) == (expected.object, "joblib", expected.bytes)
        model = restored(store, step).model
        assert codecs.pickled(model).data == pickles[step - 1]
        np.testing.assert_array_equal(model.predict_proba(X), pickle.loads(pickles[step - 1]).predict_proba(X))
    assert restored(store).epoch == 3


def test_a_big_model_stays_an_object(tmp_path):
    wide = np.random.default_rng(1).standard_normal((200, 3000))  # 3000 coefficients: 24 KB of pickle
    store = Store(tmp_path / "s")
    pickles = train(store, 2, Sync(), x=wide)
    manifest = store.manifest("run", "default", 2)
    assert "pickled" not in manifest.extra and set(manifest.outputs.names()) == {"model", "_rng"}
    assert len(pickles[-1]) > entries.PICKLED_MAX_BYTES
    assert codecs.pickled(restored(store).model).data == pickles[-1]


def test_a_checkpoint_written_before_every_entry_was_an_object_restores(tmp_path):
    """The form of manifests written before (the model an object of its own)."""
    store = Store(tmp_path / "s")
    model = SGDClassifier(loss="log_loss", random_state=0).partial_fit(X, Y, classes=[0, 1])
    outputs = DictNode((("model", store.put(model)),))
    extra = {"epoch": 4, "metrics": {}, "time": 0.0, "granularity": "full", "entries": {"model": "sklearn.estimator"}}
    manifest = Manifest(stage="run", key="default", outputs=outputs, kind="checkpoint", step=4, extra=extra)
    store.checkpoints("run", "default").commit(manifest)
    state = restored(store)
    assert state.epoch == 4 and codecs.pickled(state.model).data == codecs.pickled(model).data


def test_a_plain_json_entry_shaped_like_a_carried_pickle_is_read_as_json(tmp_path):
    """The two forms sit under two names: a dict that looks like an encoded pickle is a dict."""
    store = Store(tmp_path / "s")
    lookalike = {"codec": "joblib", "object": "0" * 32, "bytes": 3, "base64": base64.b64encode(b"abc").decode()}
    ckpt = Checkpointer(store=store, name="run", writer=Sync())
    state = ckpt.restore(TrainState(notes=dict(lookalike), model=SGDClassifier().partial_fit(X, Y, classes=[0, 1])))
    ckpt.step(0, state, {})
    ckpt.finish(state)
    manifest = store.manifest("run", "default", 1)
    assert manifest.extra["inline"] == {"notes": lookalike} and set(manifest.extra["pickled"]) == {"model"}
    back = Checkpointer(store=store, name="run").restore(TrainState(notes={}, model=SGDClassifier()))
    assert back.notes == lookalike and isinstance(back.model, SGDClassifier)


def _rewrite(store: Store, step: int, change, sealer=CHECKSUM) -> None:
    """Rewrite checkpoint ``step``'s manifest with ``change(doc)`` applied, sealed by ``sealer``."""
    path = Path(store.url) / f"checkpoints/run/default/{step}.json"
    manifest = Manifest.from_json(path.read_bytes(), store._sealer)
    doc = manifest.to_doc()
    change(doc)
    path.write_bytes(Manifest._from_doc(doc).to_json(sealer))


def falls_back(store: Store, pickles: list[bytes], why: str, marker: Path) -> None:
    """Restore warns that checkpoint 3 is unusable for ``why`` and resumes from checkpoint 2,
    exactly; the payload never ran."""
    with pytest.warns(UserWarning, match=f"checkpoint 3 .*{why}.* resuming from checkpoint 2"):
        state = restored(store)
    assert state.epoch == 2 and codecs.pickled(state.model).data == pickles[1]
    assert not marker.exists()


def _carry(doc: dict, data: bytes, keep_checksum: bool = False) -> None:
    carried = doc["extra"]["pickled"]["model"]
    carried["base64"] = base64.b64encode(data).decode()
    if not keep_checksum:
        carried.update(store_carried.encode(data))


def test_tampered_carried_bytes_fail_the_seal_and_are_quarantined(tmp_path, recwarn):
    store = Store(tmp_path / "s")
    pickles = train(store, 3)
    path = Path(store.url) / "checkpoints/run/default/3.json"
    raw = path.read_bytes()
    text = json.loads(raw)["extra"]["pickled"]["model"]["base64"]  # (a sealed manifest is plain JSON)
    flipped = text[:40] + ("A" if text[40] != "A" else "B") + text[41:]
    path.write_bytes(raw.replace(text.encode(), flipped.encode()))  # its seal no longer matches
    with pytest.warns(UserWarning, match="checkpoint 3 .* quarantined it, resuming from checkpoint 2"):
        state = restored(store)
    assert state.epoch == 2 and codecs.pickled(state.model).data == pickles[1]
    assert not path.exists() and any((Path(store.url) / "quarantine").iterdir())


def test_carried_bytes_resealed_but_not_the_ones_named_are_never_unpickled(tmp_path):
    """A manifest whose carried pickle was changed and the manifest sealed again (a checksum
    store: anyone can seal) without the entry's checksum: refused before unpickling."""
    store = Store(tmp_path / "s")
    pickles = train(store, 3)
    marker = tmp_path / "code-ran"
    _rewrite(store, 3, lambda doc: _carry(doc, pickle.dumps(Payload(str(marker))), keep_checksum=True))
    falls_back(store, pickles, "does not match its checksum", marker)


def test_a_manifest_carrying_an_entry_it_names_nowhere_is_not_resumed_from(tmp_path):
    store = Store(tmp_path / "s")
    train(store, 2)
    _rewrite(store, 2, lambda doc: doc["extra"].pop("pickled"))  # (a newer writer's form, say)
    with pytest.raises(CheckpointError, match="holds entries \\['model'\\] it does not say how to read"):
        entries.load(store, store.manifest("run", "default", 2))
    with pytest.warns(UserWarning, match="checkpoint 2 .* resuming from checkpoint 1"):
        assert restored(store).epoch == 1


def test_signed_checkpoints_carry_their_model_and_restore(tmp_path):
    store = Store(tmp_path / "s", sealer=K1)
    pickles = train(store, 2)
    raw = (Path(store.url) / "checkpoints/run/default/2.json").read_bytes()
    assert raw.startswith(b'{"seal": "hmac-sha256:' + K1.key_id.encode())
    assert set(store.manifest("run", "default", 2).extra["pickled"]) == {"model"}
    assert codecs.pickled(restored(store).model).data == pickles[-1]
    assert store.verify().clean


@pytest.mark.parametrize("intruder", [CHECKSUM, K2], ids=["unsigned", "another-key"])
@pytest.mark.parametrize("form", ["object", "carried"])
def test_a_pickle_sealed_without_the_key_is_refused_as_an_unsigned_object_is(tmp_path, intruder, form):
    """With a key, checkpoint 3 rewritten by someone without it (its payload as an object, or
    carried in the manifest): both are refused alike, never unpickled; restore falls back."""
    store = Store(tmp_path / "s", sealer=K1)
    pickles = train(store, 3)
    marker = tmp_path / "code-ran"
    evil = pickle.dumps(Payload(str(marker)))
    if form == "object":
        leaf = Store(tmp_path / "s", sealer=intruder).put(codecs.Pickled(evil))

        def change(doc):
            doc["extra"].pop("pickled")
            doc["outputs"]["dict"]["model"] = {"object": leaf.object, "codec": "joblib", "bytes": leaf.bytes}
    else:

        def change(doc):
            _carry(doc, evil)

    _rewrite(store, 3, change, sealer=intruder)
    falls_back(store, pickles, "(not signed|another key)", marker)


def test_verify_gc_and_the_training_record_see_carried_entries(tmp_path):
    store = Store(tmp_path / "s")
    pickles = train(store, 3)
    assert store.verify().clean
    gc(store, dry_run=False)
    assert codecs.pickled(restored(store).model).data == pickles[-1]
    record = training_record(store, "run", "default")
    newest = record.checkpoints[-1]
    assert newest.entries == {"model": "sklearn.estimator"}
    manifest = store.manifest("run", "default", 3)
    assert newest.bytes == manifest.bytes == manifest.object_bytes + len(pickles[-1])
    ((kind, model),) = record.models(3).values()
    assert kind == "sklearn.estimator" and codecs.pickled(model).data == pickles[-1]


def test_a_mirror_holds_carried_entries_and_restores_from_them(tmp_path):
    """Replication copies a checkpoint's objects, then its manifest: the carried model with it."""
    store = Store(tmp_path / "p", mirrors=[tmp_path / "m"])
    pickles = train(store, 2)
    assert codecs.pickled(restored(Store(tmp_path / "m"), 2).model).data == pickles[-1]
