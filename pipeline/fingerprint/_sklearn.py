"""scikit-learn estimators: class, hyperparameters and fitted state (not the version stamp).

An estimator's state is a dict of str keys: hashed in key order in one stream, its
plain-scalar entries (most hyperparameters) in joined tokens, the rest through the
registry (:mod:`._state`). Fitted trees: see :mod:`._sklearn_tree`.
"""

from __future__ import annotations

import struct

from sklearn.base import BaseEstimator

from ._state import encode_state, state_order
from .encoder import Encoder, type_name
from .values import encode

_pack_q = struct.Struct("<q").pack


_HEADS: dict[type, bytes] = {}  # estimator class -> its tag and name, as written


def _head(tp: type) -> bytes:
    head = _HEADS.get(tp)
    if head is None:
        name = type_name(tp).encode("utf-8", "surrogatepass")
        head = b"sklearn\x00" + _pack_q(len(name)) + name  # enc.tag(b"sklearn"); enc.text(name)
        if len(_HEADS) < 1024:
            _HEADS[tp] = head
    return head


# estimator class -> whether its state is its __dict__: no class in its MRO but
# BaseEstimator (which adds the version stamp this leaves out) defines __getstate__
_PLAIN: dict[type, bool] = {}


def _plain_state(tp: type) -> bool:
    plain = _PLAIN.get(tp)
    if plain is None:
        own = [c for c in tp.__mro__ if "__getstate__" in vars(c)]
        plain = own == [BaseEstimator, object] and not getattr(tp, "__slots__", None)
        if len(_PLAIN) < 1024:
            _PLAIN[tp] = plain
    return plain


_LAST: dict[type, object] = {}  # estimator class -> the key order its last state had


@encode.register(BaseEstimator)
def _estimator(v: BaseEstimator, enc: Encoder) -> None:
    tp = type(v)
    enc.update(_head(tp))
    if not enc.enter(v):
        return
    if _plain_state(tp):
        state = v.__dict__  # what __getstate__ copies, read in place
    else:
        state = v.__getstate__()
    if isinstance(state, dict) and "_sklearn_version" in state:
        state = {k: x for k, x in state.items() if k != "_sklearn_version"}
    order = state_order(state, _LAST.get(tp)) if isinstance(state, dict) else None
    if order is not None:
        if len(_LAST) >= 1024:
            _LAST.clear()
        _LAST[tp] = order
        encode_state(state, order, enc)
    else:
        enc.value_at(".__getstate__()", state)
    enc.leave(v)
