"""An estimator's state is fed in joined tokens with its keys' order, value layout and
scalar runs cached: the stream stays the one the per-token calls write, on the first
call and on every cached one, and values the caches could confuse (0.0 / -0.0, True / 1,
NaNs, one key object for another) keep their own keys."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from pipeline.fingerprint import fingerprint
from pipeline.fingerprint._state import encode_state, state_order
from pipeline.fingerprint.encoder import Encoder
from pipeline.fingerprint.values import encode


def generic(state: dict) -> bytes:
    enc = Encoder(encode)
    enc.tag(b"state")
    enc.int(len(state))
    for key in sorted(state):
        enc.text(key)
        encode(state[key], enc)
    return enc.digest()


def joined(state: dict) -> bytes:
    enc = Encoder(encode)
    encode_state(state, state_order(state), enc)
    return enc.digest()


STATES = [
    {},
    {"a": 1},
    {"alpha": 0.0, "beta": None, "gamma": "gini", "delta": True, "eps": 2**70},
    {"alpha": -0.0, "beta": None, "gamma": "gini", "delta": True, "eps": 2**70},
    {"alpha": float("nan"), "beta": 1, "gamma": "", "delta": 1, "eps": -1},
    {"z_small": np.arange(3.0), "a_big": np.arange(10_000), "m": np.int64(3), "s": "x"},
    {"strided": np.arange(20.0)[::2], "objects": np.array(["a", None], dtype=object), "f": np.float32(-0.0)},
    {"nested": DecisionTreeClassifier(max_depth=3), "list": [1, 2.5, "x"], "d": {"k": 0.0}, "t": (1,)},
    {"structured": np.zeros(2, dtype=[("a", "<i8"), ("b", "u1")]), "n": 1.5},
]


@pytest.mark.parametrize("state", STATES, ids=range(len(STATES)))
def test_state_stream_is_the_per_token_stream(state):
    first = joined(state)
    assert first == generic(state)
    assert joined(dict(state)) == first  # every cache warm now
    assert joined(dict(reversed(state.items()))) == first  # the dict's own order is no content


def test_values_the_caches_could_confuse_keep_their_own_keys():
    base = {"a": 0.0, "b": True, "c": "x", "d": None}
    for changed in ({"a": -0.0}, {"b": 1}, {"a": 0}, {"c": "y"}, {"d": False}, {"a": float("nan")}):
        state = {**base, **changed}
        joined(base)  # cached first
        assert joined(state) == generic(state) != generic(base), changed
    nan = {"a": float("nan")}
    assert joined(nan) == joined({"a": float("nan")})  # another NaN object, the same bytes


def test_a_str_subclass_key_is_not_taken_for_a_str():
    class Key(str):
        pass

    plain = {"a": 1, "b": 2}
    assert state_order(plain) is not None
    assert state_order({Key("a"): 1, "b": 2}) is None  # equal to a cached tuple of keys
    tree = DecisionTreeClassifier()
    other = DecisionTreeClassifier()
    other.__dict__ = {Key(k) if k == "criterion" else k: x for k, x in other.__dict__.items()}
    assert fingerprint(other) != fingerprint(tree)


def test_an_unpickled_estimator_hashes_as_its_original_twice():
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    tree = DecisionTreeClassifier(random_state=0).fit(X, X[:, 0] > 0.5)
    key = fingerprint(tree)
    for _ in range(2):  # the second time through the orders and runs the first one cached
        assert fingerprint(pickle.loads(pickle.dumps(tree))) == key
