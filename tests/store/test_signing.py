"""Signed pickles: with a signing key, manifests carry an HMAC-SHA256 seal and joblib objects
a signature; a joblib object that is unsigned, tampered with or signed with another key is
refused before any byte of it is unpickled. The attacks below write the store the way anyone
with write access can: a consistent rewrite of object, checksum and manifest. The payload's
``__reduce__`` creates a marker directory; it must never appear."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline import StageCache, Store
from pipeline.config import Settings
from pipeline.errors import ConfigError, IntegrityError, UnsignedError
from pipeline.store import layout
from pipeline.store.manifest import Manifest
from pipeline.store.retention import gc
from pipeline.store.seal import CHECKSUM
from pipeline.store.tree import Leaf, leaves
from tests.pickles import K1, K2, Payload

ROOT = Path(__file__).resolve().parents[2]


def model() -> LogisticRegression:
    x = np.arange(40.0).reshape(20, 2)
    return LogisticRegression().fit(x, np.arange(20) % 2)


def train(n: int) -> LogisticRegression:
    return model()


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-ran"


def keyed(tmp_path, sealer=K1) -> Store:
    return Store(tmp_path / "store", sealer=sealer)


def attack(tmp_path, marker: Path, key: str, *, sealer=CHECKSUM, stage: str = "train") -> Manifest:
    """Replace the result of ``stage`` ``key`` with a payload pickle: object, checksum and
    manifest all consistent, sealed by ``sealer`` (no key, or another key)."""
    intruder = Store(tmp_path / "store", sealer=sealer)
    tree = intruder.put(Payload(str(marker)))
    assert tree.codec == "joblib"
    return intruder.commit(Manifest(stage=stage, key=key, outputs=tree, created="2026-01-01T00:00:00"))


def test_signed_results_round_trip(tmp_path):
    store = keyed(tmp_path)
    stage = StageCache(store).wrap(train)
    first = stage.call(1)
    again = stage.call(1)
    assert not first.hit and again.hit
    assert again.value.predict([[0.0, 1.0]]).shape == (1,)
    raw = (tmp_path / "store" / layout.manifest_path("train", first.manifest.key)).read_bytes()
    assert raw.startswith(b'{"seal": "hmac-sha256:' + K1.key_id.encode() + b":")
    (leaf,) = leaves(again.manifest.outputs)
    assert leaf.signature.startswith(f"hmac-sha256:{K1.key_id}:")
    assert store.verify().clean and store.verify().unsigned == 0


@pytest.mark.parametrize("sealer", [CHECKSUM, K2], ids=["unsigned", "another-key"])
def test_a_rewritten_pickle_is_never_served_nor_unpickled(tmp_path, marker, sealer):
    store = keyed(tmp_path)
    stage = StageCache(store).wrap(train)
    key = stage.call(1).manifest.key
    bad = attack(tmp_path, marker, key, sealer=sealer)
    with pytest.warns(UserWarning, match="not signed|another key"):
        assert store.manifest("train", key) is None  # never a hit
    with pytest.raises(UnsignedError, match="no signature|another key") as e:
        store.load(bad.outputs)  # a tree from anywhere (a record, a pickled reference): refused
    assert "refused to load object" in str(e.value) and "signing key" in str(e.value)
    outcome = stage.call(1)  # recomputed and signed again
    assert not outcome.hit and isinstance(outcome.value, LogisticRegression)
    assert stage.call(1).hit
    assert not marker.exists()


def test_a_tampered_signed_manifest_is_quarantined(tmp_path, marker):
    store = keyed(tmp_path)
    stage = StageCache(store).wrap(train)
    key = stage.call(1).manifest.key
    evil = Store(tmp_path / "store", sealer=CHECKSUM).put(Payload(str(marker)))
    rel = layout.manifest_path("train", key)
    raw = (tmp_path / "store" / rel).read_text()
    (leaf,) = leaves(store.manifest("train", key).outputs)
    # Point the signed manifest at the payload, keep its seal and the good leaf's signature.
    forged = raw.replace(leaf.object, evil.object).replace(f'"bytes": {leaf.bytes}', f'"bytes": {evil.bytes}')
    (tmp_path / "store" / rel).write_text(forged)
    with pytest.warns(UserWarning, match="does not match its seal"):
        assert store.manifest("train", key) is None
    # The same forged reference outside any manifest: its signature is for another object.
    with pytest.raises(UnsignedError, match="does not match"):
        store.load(Leaf(evil.object, "joblib", evil.bytes, signature=leaf.signature))
    assert not marker.exists()


def test_objects_are_checked_wherever_they_are_loaded_from(tmp_path, marker):
    """Checkpoints, search records, lazy hits shipped to another process: every load of a
    joblib object goes through the same check."""
    store = keyed(tmp_path)
    evil = Store(tmp_path / "store", sealer=CHECKSUM).put(Payload(str(marker)))
    ckpt = Manifest(stage="fit", key="xxh3:" + "c" * 32, outputs=evil, step=3, kind="checkpoint")
    Store(tmp_path / "store", sealer=CHECKSUM).checkpoints("fit", ckpt.key).commit(ckpt)
    with pytest.raises(ValueError, match="not signed"):
        store.checkpoints("fit", ckpt.key).read(3)
    from pipeline.lazy import Lazy, Source

    shipped = pickle.loads(pickle.dumps(Lazy(Source(store, evil, "train"))))  # the key travels with the store
    with pytest.raises(IntegrityError, match="refused to load object"):
        shipped.predict  # noqa: B018 (first use reads it)
    assert not marker.exists()


def test_parquet_and_json_load_without_a_signature_but_unsigned_manifests_are_no_hits(tmp_path):
    plain = Store(tmp_path / "store", sealer=CHECKSUM)
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    t_frame, t_json = plain.put(frame), plain.put({"auc": 0.9})
    store = keyed(tmp_path)
    pd.testing.assert_frame_equal(store.load(t_frame), frame)  # they run no code: loadable as they are
    assert store.load(t_json) == {"auc": 0.9}
    stage = StageCache(plain).wrap(lambda n: {"auc": 0.5 + n}, name="metrics")
    assert not stage.call(1).hit and stage.call(1).hit  # a hit for the store without a key
    with pytest.warns(UserWarning, match="not signed"):
        assert not StageCache(store).wrap(lambda n: {"auc": 0.5 + n}, name="metrics").call(1).hit


def test_verify_and_gc_with_a_key(tmp_path, marker):
    store = keyed(tmp_path)
    key = StageCache(store).wrap(train).call(1).manifest.key
    attack(tmp_path, marker, "xxh3:" + "e" * 32, sealer=K2)
    attack(tmp_path, marker, "xxh3:" + "f" * 32)
    report = store.verify()
    assert (report.manifests, report.unsigned, report.bad_manifests, report.ok) == (1, 2, 0, 2)  # one payload object
    assert report.clean  # not damage: kept, never served
    assert gc(store, grace_seconds=0).deleted_objects == 0  # what they name is kept
    # A store without the key can't vouch for signed manifests either.
    with pytest.warns(UserWarning, match="no signing key is set"):
        assert Store(tmp_path / "store", sealer=CHECKSUM).manifest("train", key) is None
    assert not marker.exists()


def test_verify_on_the_command_line_with_a_key(tmp_path, marker):
    store = keyed(tmp_path)
    StageCache(store).wrap(train).call(1)
    attack(tmp_path, marker, "xxh3:" + "e" * 32)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPELINE_SIGNING_KEY": "key one: a long random secret"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "verify", "--store", str(tmp_path / "store")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"1 manifests not signed with key id {K1.key_id}: kept, not served" in done.stdout
    assert not marker.exists()


def test_the_key_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    env = {"PIPELINE_SIGNING_KEY": "s3cret"}
    s = Settings.load(start=tmp_path, env=env)
    assert s.signing_secret() == b"s3cret" and "s3cret" not in repr(s)
    (tmp_path / "key").write_text("from a file\n")
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nsigning_key_file = "key"\n')
    assert Settings.load(start=tmp_path, env={}).signing_secret() == b"from a file"
    (tmp_path / "pyproject.toml").write_text('[tool.pipeline]\nsigning_key = "oops"\n')
    with pytest.raises(ConfigError, match="does not belong in the project file"):
        Settings.load(start=tmp_path, env={})
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.setenv("PIPELINE_SIGNING_KEY", "key one: a long random secret")
    store = Store(tmp_path / "store2")  # the configured key, by default
    assert store.key_id == K1.key_id and "secret" not in repr(store._sealer)
    assert pickle.loads(pickle.dumps(store)).key_id == K1.key_id  # shipped to workers with the run context


def test_a_store_without_a_key_loads_pickles_as_before(tmp_path):
    store = Store(tmp_path / "store", sealer=CHECKSUM)
    stage = StageCache(store).wrap(train)
    stage.call(1)
    assert stage.call(1).hit
    (leaf,) = leaves(store.latest("train").outputs)
    assert leaf.signature is None and joblib.__name__
    assert json.loads((tmp_path / "store" / "store.json").read_text()) == {"format": 1}


def test_checkpoints_and_searches_work_signed(tmp_path):
    """The library's own writers sign what they write: a Checkpointer resumes and a search's
    best model loads from a store with a key."""
    from optuna.distributions import FloatDistribution
    from sklearn.linear_model import SGDClassifier

    from pipeline.training import Checkpointer, EveryNEpochs, TrainState
    from pipeline.tuning import Search, load_best

    store = keyed(tmp_path)
    x = np.arange(80.0).reshape(40, 2)
    y = np.arange(40) % 2

    def fit(epochs: int) -> TrainState:
        ckpt = Checkpointer(save=EveryNEpochs(1), store=store, name="fit")
        state = ckpt.restore(TrainState(model=SGDClassifier(random_state=0)))
        for epoch in ckpt.epochs(state, epochs):
            state.model.partial_fit(x, y, classes=[0, 1])
            ckpt.step(epoch, state, {"loss": 1.0 - state.model.score(x, y)})
        ckpt.finish(state)
        return state

    fit(2)
    assert fit(3).epoch == 3  # resumed from the signed checkpoint of epoch 2
    checkpoints = store.checkpoints("fit", Checkpointer(store=store, name="fit").key)
    assert checkpoints.steps() and all(
        leaf.signature
        for s in checkpoints.steps()
        for leaf in leaves(checkpoints.read(s).outputs)
        if leaf.codec == "joblib"
    )

    def objective(params, checkpointer):
        return float(params["alpha"]), SGDClassifier(alpha=params["alpha"]).fit(x, y)

    Search("s", {"alpha": FloatDistribution(1e-4, 1e-1, log=True)}, objective, n_trials=2, seed=0).run(store)
    best = load_best(store, "s")
    assert isinstance(best.model, SGDClassifier)
