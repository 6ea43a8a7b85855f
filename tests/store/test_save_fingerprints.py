"""``Store.save`` of a dict fingerprints the dict and each of its values (saved as objects of
their own) in one walk of each value: a trial's model is encoded once a commit, not once as a
leaf and again inside ``{"model": m}``. Every fingerprint it records stays the one
``fingerprint`` gives that value alone."""

from __future__ import annotations

import importlib
import io

import numpy as np

from pipeline import Store
from pipeline.fingerprint import fingerprint
from pipeline.store.tree import DictNode

_sklearn = importlib.import_module("pipeline.fingerprint._sklearn")


def _fitted_model():
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 5)), np.arange(64) % 2
    return SGDClassifier(loss="log_loss", random_state=0).partial_fit(x, y, classes=[0, 1])


def test_a_model_in_a_saved_dict_is_encoded_once(tmp_path, monkeypatch):
    model = _fitted_model()
    calls = []
    real = _sklearn.encode_state
    monkeypatch.setattr(_sklearn, "encode_state", lambda *a: (calls.append(1), real(*a))[1])
    tree = Store(str(tmp_path / "s")).save({"model": model}, what="the output")
    assert len(calls) == 1
    assert isinstance(tree, DictNode)
    monkeypatch.setattr(_sklearn, "encode_state", real)
    assert tree.fingerprint == fingerprint({"model": model})
    assert dict(tree.entries)["model"].fingerprint == fingerprint(model)


def _check(tree: DictNode, value: dict) -> None:
    assert tree.fingerprint == fingerprint(value)
    for key, node in tree.entries:
        assert node.fingerprint == fingerprint(value[key]), key


def test_the_fingerprints_are_those_of_each_value_alone(tmp_path):
    store = Store(str(tmp_path / "s"))
    value = {"model": _fitted_model(), "weights": np.arange(12.0).reshape(3, 4), "names": ["a", "b"]}
    value["inner"] = {"array": np.zeros(3), "more": {"x": np.ones(2)}}
    tree = store.save(value)
    _check(tree, value)
    _check(dict(tree.entries)["inner"], value["inner"])
    assert store.load(tree)["names"] == ["a", "b"]


def test_a_value_whose_encoding_takes_bytes_back_keeps_its_own_fingerprint(tmp_path):
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<i8"], "offsets": [0, 8], "itemsize": 16})
    dirty = np.zeros(4, dtype=padded)
    dirty.view(np.uint8).reshape(4, -1)[:, 1:8] = 0xEE  # padding: fed as it lies, taken back, fed cleared
    value = {"records": dirty, "other": np.arange(2)}
    _check(Store(str(tmp_path / "s")).save(value), value)


def test_a_value_that_refers_back_to_its_dict_gets_its_own_fingerprint(tmp_path):
    value = {"array": np.zeros(4), "back": []}
    value["back"].append(value)  # inside the dict a cycle token; alone, the dict in full
    _check(Store(str(tmp_path / "s")).save(value), value)


def test_an_unhashable_value_has_none_and_so_has_its_dict(tmp_path):
    value = {"array": np.arange(3), "stream": io.BytesIO(b"x"), "text": np.array(["x"])}  # pickles; no stable content
    tree = Store(str(tmp_path / "s")).save(value)
    fps = {k: n.fingerprint for k, n in tree.entries}
    assert tree.fingerprint is None and fps["stream"] is None
    assert fps["array"] == fingerprint(value["array"]) and fps["text"] == fingerprint(value["text"])
