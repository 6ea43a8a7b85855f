"""The generic walk of a value no handler is registered for: what pickle would save of it.

A dataclass by its fields; an object with a custom reduction (``copyreg``, ``__reduce_ex__``,
``__reduce__``) by what that returns; any other by its ``__getstate__`` (``__dict__`` and
slots), or by its class when it has no state. ``encode_extra_state`` is what a subclass of a
built-in type adds to its base content. Every piece is fed back through ``enc.value_at``
(the value registry of :mod:`.values`), never as pickle bytes.
"""

from __future__ import annotations

import copyreg
import dataclasses
from typing import Any, Callable

from .encoder import Encoder, Unhashable, type_name

__all__ = ["encode_dataclass", "encode_object", "encode_extra_state"]


def encode_dataclass(v: Any, enc: Encoder) -> None:
    enc.tag(b"dataclass")
    enc.text(type_name(type(v)))
    if not enc.enter(v):
        return
    fields = dataclasses.fields(v)
    enc.int(len(fields))
    for f in fields:
        enc.text(f.name)
        value = getattr(v, f.name, _UNSET)
        if value is _UNSET:  # an init=False field nobody set yet
            enc.tag(b"unset")
        else:
            enc.value_at("." + f.name, value)
    enc.leave(v)


_UNSET = object()


def _custom_reduce(tp: type) -> Callable[[Any], Any] | None:
    """How pickle would take ``tp`` apart when it is not the default ``__dict__`` walk:
    a ``copyreg`` entry, or the type's own ``__reduce_ex__`` / ``__reduce__``."""
    reducer = copyreg.dispatch_table.get(tp)
    if reducer is not None:
        return reducer
    if tp.__reduce_ex__ is not object.__reduce_ex__:
        return lambda v: v.__reduce_ex__(4)
    if tp.__reduce__ is not object.__reduce__:
        return lambda v: v.__reduce__()
    return None


def _encode_reduced(v: Any, reduced: Any, enc: Encoder) -> None:
    """Walk what ``__reduce__`` returns: constructor, its arguments, state and items.

    Everything a pickle would contain is covered (a deque's items, not just its empty
    ``__dict__``), but as a canonical walk rather than version-dependent pickle bytes."""
    enc.tag(b"reduce")
    enc.text(type_name(type(v)))
    if isinstance(reduced, str):  # a module-level singleton, pickled by name
        enc.text(reduced)
        return
    if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
        raise Unhashable(v, f"its __reduce__ returned {type_name(type(reduced))}")
    func, args, state, items, pairs = (*reduced, None, None, None)[:5]
    enc.text(f"{getattr(func, '__module__', None)}.{getattr(func, '__qualname__', type_name(type(func)))}")
    if not enc.enter(v):
        return
    enc.value_at(".__reduce__()[1]", args)
    enc.value_at(".__reduce__()[2]", state)
    enc.value_at(".__reduce__()[3]", None if items is None else list(items))
    enc.value_at(".__reduce__()[4]", None if pairs is None else list(pairs))
    enc.leave(v)


def encode_object(v: Any, enc: Encoder) -> None:
    """Unknown type: walk what pickle would save (its ``__reduce__``, else its
    ``__getstate__``: ``__dict__`` and slots). An instance with no state at all (CPython's
    own pickle check: no C-level fields either) is its class, local classes included."""
    tp = type(v)
    reducer = _custom_reduce(tp)
    try:
        reduced = reducer(v) if reducer is not None else None
        state = v.__getstate__() if reducer is None else None
        if reducer is None and state is None:
            v.__reduce_ex__(4)  # raises for an object with C-level state (a lock, a socket)
    except Exception as e:  # a type that refuses to be pickled refuses to be hashed
        raise Unhashable(v, f"it can't be captured ({e})") from None
    if reducer is not None:
        return _encode_reduced(v, reduced, enc)
    enc.tag(b"object")
    enc.text(type_name(tp))
    if state is None:
        enc.tag(b"stateless")
        enc.value_at("<class>", tp)
        return
    if not enc.enter(v):
        return
    enc.value_at(".__getstate__()", state)
    enc.leave(v)


def encode_extra_state(v: Any, enc: Encoder) -> None:
    """What an instance of a subclass of a built-in type adds to its base content: the
    constructor arguments and state of its ``__reduce_ex__`` (``__dict__``, slots, a
    defaultdict's factory). Its items are not repeated: the base handler feeds them."""
    try:
        reduced = v.__reduce_ex__(4)
    except Exception as e:  # a type that refuses to be pickled refuses to be hashed
        raise Unhashable(v, f"its state can't be captured ({e})") from None
    if not isinstance(reduced, tuple):
        enc.tag(b"by-name")
        enc.value_at(".__reduce__()", reduced)
        return
    func, args, state = (*reduced, None, None)[:3]
    if func is copyreg.__newobj__ and args:  # (cls, *args): the class is already tagged
        args = args[1:]
    enc.value_at(".__reduce__()[1]", args)
    enc.value_at(".__reduce__()[2]", state)
