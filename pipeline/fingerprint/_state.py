"""An estimator's state dict (str keys) hashed in key order, in few updates.

The stream is the one ``enc.tag(b"state")``, ``enc.int(len(state))``, then
``enc.text(key)`` and ``encode(value)`` per entry in key order would write. Every
estimator of an ensemble repeats its class's keys and most of their values (a forest's
100 trees differ in ``random_state`` and their fitted arrays), so the work is cached at
three levels, each exact:

- per tuple of keys (in the dict's own order): the sorted keys and their tokens;
- per tuple of the values' exact types: which entries are plain scalars (None, bool,
  int, str, float) and which are not (arrays, numpy scalars, anything else);
- per tuple of the plain scalars' values (floats by their bytes: 0.0 == -0.0): the
  joined tokens of the scalar runs between the other entries.
"""

from __future__ import annotations

import struct
from operator import is_, itemgetter
from typing import Any, Callable

import numpy as np

from ._numpy import array_header, feed_buffer, scalar_token
from .encoder import Encoder, Unhashable
from .values import encode, scalar_tokens

_SCALARS = scalar_tokens()
_PLAIN = frozenset(_SCALARS)  # None, bool, int, float, str: exact types
_SMALL = 4096  # an array of at most this many bytes is joined into the update it follows
_MEMO = 4096  # scalar runs kept per layout
_pack_q = struct.Struct("<q").pack


def _key_token(key: str) -> bytes:
    data = key.encode("utf-8", "surrogatepass")
    return _pack_q(len(data)) + data


def _getter(indices: list[int]) -> Callable[[tuple], tuple]:
    """``itemgetter`` that always returns a tuple (for none or one index too)."""
    if len(indices) == 1:
        (i,) = indices
        return lambda vals: (vals[i],)
    return itemgetter(*indices) if indices else lambda vals: ()


class _Layout:
    """Which entries of a state (by the exact types of its values) are plain scalars,
    and the scalar runs already seen for it."""

    __slots__ = ("others", "scalars", "floats", "pack", "runs")

    def __init__(self, types: tuple[type, ...]) -> None:
        self.others = tuple(i for i, tp in enumerate(types) if tp not in _PLAIN)
        self.scalars = _getter([i for i, tp in enumerate(types) if tp in _PLAIN and tp is not float])
        floats = [i for i, tp in enumerate(types) if tp is float]
        self.floats = _getter(floats)
        self.pack = struct.Struct(f"<{len(floats)}d").pack
        self.runs: dict[tuple, list[bytes]] = {}

    def segments(self, order: _Order, vals: tuple) -> list[bytes]:
        """The state's tokens up to each other entry (its key included), then the rest."""
        memo = (self.scalars(vals), self.pack(*self.floats(vals)))
        segments = self.runs.get(memo)
        if segments is None:
            segments, run, others = [], [order.head], frozenset(self.others)
            for i, (token, x) in enumerate(zip(order.tokens, vals)):
                run.append(token)
                if i in others:
                    segments.append(b"".join(run))
                    run = []
                else:
                    run.append(_SCALARS[type(x)](x))
            segments.append(b"".join(run))
            if len(self.runs) >= _MEMO:
                self.runs.clear()
            self.runs[memo] = segments
        return segments


class _Order:
    """A state's keys sorted, with their tokens, and its layouts by value types."""

    __slots__ = ("names", "keys", "tokens", "head", "layouts")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names  # the keys in the state's own order, as last checked
        self.keys = tuple(sorted(names))
        self.tokens = tuple(map(_key_token, self.keys))
        self.head = b"state\x00" + _pack_q(len(names))  # enc.tag(b"state"); enc.int(len)
        self.layouts: dict[tuple[type, ...], _Layout] = {}

    def fits(self, state: dict) -> bool:
        """Whether ``state``'s keys are the very key objects, in the order, last checked."""
        return len(state) == len(self.names) and all(map(is_, self.names, state))

    def layout(self, types: tuple[type, ...]) -> _Layout:
        layout = self.layouts.get(types)
        if layout is None:
            if len(self.layouts) >= 64:
                self.layouts.clear()
            layout = self.layouts[types] = _Layout(types)
        return layout


# a state's keys in its own order -> their _Order (equal tuples: the names are checked
# to be exact str objects before an order is used)
_ORDERS: dict[tuple, _Order] = {}


def state_order(state: dict, last: _Order | None = None) -> _Order | None:
    """The order to hash a state dict in; None when a key is not an exact ``str``.
    ``last``: the order the caller used for a state like it (its class's last one)."""
    if last is not None and last.fits(state):
        return last
    names = tuple(state)
    order = _ORDERS.get(names)
    if order is not None and order.fits(state):
        return order  # the very key objects checked before
    if not all(type(k) is str for k in names):
        return None
    if order is None:
        order = _Order(names)
        if len(_ORDERS) >= 1024:
            _ORDERS.clear()
        _ORDERS[names] = order
    order.names = names  # equal keys, other objects (an unpickled model): checked now
    return order


def encode_state(state: dict, order: _Order, enc: Encoder) -> None:
    """Feed a state dict whose keys ``order`` was made for (``state_order``)."""
    vals = tuple(map(state.__getitem__, order.keys))
    layout = order.layout(tuple(map(type, vals)))
    segments = layout.segments(order, vals)
    parts: list[Any] = [segments[0]]
    i = 0
    try:  # the error path segment is only built when an entry fails
        for i, segment in zip(layout.others, segments[1:]):  # noqa: B007
            x = vals[i]
            if type(x) is np.ndarray and not x.dtype.hasobject:  # classes_, coef_: no dispatch
                parts.append(array_header(x))
                if x.nbytes <= _SMALL and x.flags.c_contiguous and not x.dtype.fields:
                    parts.append(x.tobytes())  # the bytes feed_buffer would feed
                else:
                    enc.update(b"".join(parts))
                    parts.clear()
                    feed_buffer(x, enc)
            elif isinstance(x, np.generic) and not x.dtype.hasobject:  # n_classes_
                parts.append(scalar_token(x))
            else:
                enc.update(b"".join(parts))
                parts.clear()
                encode(x, enc)
            parts.append(segment)
    except Unhashable as e:
        e.path.append(f".__getstate__()[{order.keys[i]!r}]")
        raise
    enc.update(b"".join(parts))
