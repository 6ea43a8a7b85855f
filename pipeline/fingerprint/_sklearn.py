"""scikit-learn estimators: class, hyperparameters and fitted state (not the version stamp)."""

from __future__ import annotations

from sklearn.base import BaseEstimator

from .encoder import Encoder, type_name
from .values import encode


@encode.register(BaseEstimator)
def _estimator(v: BaseEstimator, enc: Encoder) -> None:
    enc.tag(b"sklearn")
    enc.text(type_name(type(v)))
    if not enc.enter(v):
        return
    state = v.__getstate__()
    if isinstance(state, dict):
        state = {k: x for k, x in state.items() if k != "_sklearn_version"}
    enc.value_at(".__getstate__()", state)
    enc.leave(v)
