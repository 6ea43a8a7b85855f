"""The streaming, type-tagged canonical encoder every fingerprint is built on.

An :class:`Encoder` feeds an xxh3_128 hasher with a self-delimiting token stream:
every value starts with a tag naming its kind, variable-length payloads carry their
length, and containers carry their size. Two values of different type, shape or
structure therefore never produce the same stream.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import xxhash

from .names import module_name

PREFIX = "xxh3:"

_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack


class Unhashable(Exception):
    """Internal: raised deep inside an encoding; the path is filled in on the way out."""

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.type_name = type_name(type(value))
        self.reason = reason
        self.path: list[str] = []


def type_name(tp: type) -> str:
    """``module.QualName`` of a type (builtins without the module; ``__main__`` by its file)."""
    mod = getattr(tp, "__module__", None)
    qual = getattr(tp, "__qualname__", getattr(tp, "__name__", repr(tp)))
    if mod in ("__main__", "__mp_main__"):
        mod = module_name(tp)
    return qual if mod in (None, "builtins") else f"{mod}.{qual}"


class _Tee:
    """Two hashers fed the same bytes (``Encoder.tee``)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def update(self, data: Any) -> None:
        self.first.update(data)
        self.second.update(data)

    def copy(self) -> _Tee:
        return _Tee(self.first.copy(), self.second.copy())

    def digest(self) -> bytes:
        return self.first.digest()

    def hexdigest(self) -> str:
        return self.first.hexdigest()


class Encoder:
    """Feeds values into one xxh3_128 state; ``dispatch`` picks the handler per type."""

    __slots__ = ("_h", "update", "_stack", "_dispatch")

    def __init__(self, dispatch: Callable[[Any, Encoder], None], stack: dict[int, int] | None = None):
        self._h = xxhash.xxh3_128()
        self.update = self._h.update
        self._stack = {} if stack is None else stack
        self._dispatch = dispatch

    # -- primitive tokens ------------------------------------------------------------
    def tag(self, name: bytes) -> None:
        """Start a value of kind ``name`` (tags are short ASCII words)."""
        self.update(name)
        self.update(b"\x00")

    def int(self, n: int) -> None:
        """A signed 64-bit integer (sizes, counts, small numbers)."""
        self.update(_pack_q(n))

    def float(self, x: float) -> None:
        self.update(_pack_d(x))

    def text(self, s: str) -> None:
        b = s.encode("utf-8", "surrogatepass")
        self.update(_pack_q(len(b)))
        self.update(b)

    def blob(self, data: Any) -> None:
        """A length-prefixed buffer (anything with the buffer protocol, no copy)."""
        n = memoryview(data).nbytes
        self.update(_pack_q(n))
        self.update(data)

    def checkpoint(self) -> Any:
        """The stream so far, to ``rewind`` to (a copy of the hasher's state)."""
        return self._h.copy()

    def rewind(self, checkpoint: Any) -> None:
        """Drop what was fed since ``checkpoint``. Rebinds ``update``: a caller that
        held on to the old ``enc.update`` across a rewind would feed a dropped stream."""
        self._h = checkpoint
        self.update = checkpoint.update

    # -- structure -------------------------------------------------------------------
    def value(self, v: Any) -> None:
        self._dispatch(v, self)

    def value_at(self, segment: str, v: Any) -> None:
        """Encode ``v`` as the child ``segment`` of the current value (for error paths)."""
        try:
            self._dispatch(v, self)
        except Unhashable as e:
            e.path.append(segment)
            raise

    def enter(self, obj: Any) -> bool:
        """Mark a container as being encoded. False (and a back-reference token written)
        when ``obj`` is already on the stack: a cycle."""
        depth = self._stack.get(id(obj))
        if depth is not None:
            self.tag(b"cycle")
            self.int(len(self._stack) - depth)
            return False
        self._stack[id(obj)] = len(self._stack)
        return True

    def leave(self, obj: Any) -> None:
        self._stack.pop(id(obj), None)

    def child(self) -> Encoder:
        """A separate stream sharing this one's handlers and cycle stack: its digest is fed
        back here, for order-independent sets and for columns hashed as parallel streams."""
        return Encoder(self._dispatch, self._stack)

    def sub_digest(self, v: Any) -> bytes:
        """Digest of ``v`` alone: for order-independent sets."""
        child = self.child()
        child._dispatch(v, child)
        return child.digest()

    def sub_digest_pair(self, key: Any, v: Any) -> bytes:
        """Digest of one mapping entry alone: for order-independent mappings."""
        child = self.child()
        child._dispatch(key, child)
        child._dispatch(v, child)
        return child.digest()

    def tee(self) -> None:
        """From here on, feed a second, fresh stream too (``teed_hexdigest``: the fingerprint of
        what was encoded since, alone). One walk of a value then gives both the digest of a dict
        entry (key and value) and the value's own fingerprint."""
        self.rewind(_Tee(self._h, xxhash.xxh3_128()))  # (``checkpoint`` / ``rewind`` keep both streams)

    def teed_hexdigest(self) -> str:
        """The fingerprint of what was encoded since ``tee()``."""
        return PREFIX + self._h.second.hexdigest()

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return PREFIX + self._h.hexdigest()
