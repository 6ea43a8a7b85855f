"""scikit-learn estimators: class, hyperparameters and fitted state (not the version stamp).

An estimator's state is a dict of str keys: hashed in key order in one stream, its
plain-scalar entries (most hyperparameters) through their handlers directly, the rest
through the registry. Fitted trees: see :mod:`._sklearn_tree`.
"""

from __future__ import annotations

import struct
from operator import itemgetter

import numpy as np
from sklearn.base import BaseEstimator

from ._numpy import array_header, feed_buffer, scalar_token
from .encoder import Encoder, Unhashable, type_name
from .values import encode, scalar_tokens

_SCALARS = scalar_tokens()
# (key, exact type, value) -> the key's text token and the value's token, for the scalar
# entries every estimator of an ensemble repeats. Floats are not kept: 0.0 == -0.0.
_ENTRIES: dict[tuple, bytes] = {}
_CACHED = frozenset({type(None), bool, int, str})
_pack_q = struct.Struct("<q").pack


def _key_token(key: str) -> bytes:
    data = key.encode("utf-8", "surrogatepass")
    return _pack_q(len(data)) + data


def _entry_token(key: str, x: object, tp: type) -> bytes:
    return _key_token(key) + _SCALARS[tp](x)


def encode_state(state: dict, enc: Encoder) -> None:
    """A str-keyed state dict, in key order (its order is no behaviour of the object).

    Keys and plain scalars are gathered and fed in one update; the stream is the one
    ``enc.tag(b"state")``, ``enc.int(len(state))``, then ``enc.text(key)`` and
    ``encode(value)`` per entry would write."""
    items = sorted(state.items(), key=itemgetter(0))
    parts: list[bytes] = [b"state\x00" + _pack_q(len(items))]
    key = ""
    try:  # the error path segment is only built when an entry fails
        for key, x in items:
            tp = type(x)
            if tp in _CACHED:
                memo = (key, tp, x)
                token = _ENTRIES.get(memo)
                if token is None:
                    token = _entry_token(key, x, tp)
                    if len(_ENTRIES) < 4096:
                        _ENTRIES[memo] = token
                parts.append(token)
            elif tp is float:
                parts.append(_entry_token(key, x, tp))
            elif tp is np.ndarray and not x.dtype.hasobject:  # classes_, coef_: no dispatch
                parts.append(_key_token(key) + array_header(x))
                enc.update(b"".join(parts))
                parts.clear()
                feed_buffer(x, enc)
            elif isinstance(x, np.generic) and not x.dtype.hasobject:  # n_classes_
                parts.append(_key_token(key) + scalar_token(x))
            else:
                parts.append(_key_token(key))
                enc.update(b"".join(parts))
                parts.clear()
                encode(x, enc)
    except Unhashable as e:
        e.path.append(f".__getstate__()[{key!r}]")
        raise
    enc.update(b"".join(parts))


_HEADS: dict[type, bytes] = {}  # estimator class -> its tag and name, as written


def _head(tp: type) -> bytes:
    head = _HEADS.get(tp)
    if head is None:
        name = type_name(tp).encode("utf-8", "surrogatepass")
        head = b"sklearn\x00" + _pack_q(len(name)) + name  # enc.tag(b"sklearn"); enc.text(name)
        if len(_HEADS) < 1024:
            _HEADS[tp] = head
    return head


@encode.register(BaseEstimator)
def _estimator(v: BaseEstimator, enc: Encoder) -> None:
    enc.update(_head(type(v)))
    if not enc.enter(v):
        return
    state = v.__getstate__()
    if isinstance(state, dict):
        state = {k: x for k, x in state.items() if k != "_sklearn_version"}
    if isinstance(state, dict) and all(type(k) is str for k in state):
        encode_state(state, enc)
    else:
        enc.value_at(".__getstate__()", state)
    enc.leave(v)
