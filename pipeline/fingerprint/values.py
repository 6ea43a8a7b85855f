"""value -> ``"xxh3:<32 hex>"``: one singledispatch registry over a type-tagged encoding.

The principle every handler keeps: two values that Python, numpy or pandas can tell
apart by behaviour get different fingerprints. Behaviour means ``==``, ``type()``,
iteration order where equality depends on it, and attribute access. So
- the exact type is part of a value: a subclass of ``dict``, ``list``, ``int``, an
  ndarray or a DataFrame hashes its own type and every piece of state it adds (what
  its ``__reduce_ex__`` / ``__dict__`` / slots hold), not only its base-class content;
- order is part of a value where equality is order-sensitive: an ``OrderedDict`` is
  hashed in order; a plain ``dict`` or ``set`` compares equal whatever the insertion
  order, so it is hashed order-independently; a Categorical's category order is kept
  (it decides ``.codes`` and sorting);
- a callable is hashed by what it runs: a function by its code fingerprint (defaults,
  closure cells and the code it reaches included, see :mod:`.code`), a wrapper
  (``functools.wraps``, ``lru_cache``, ``np.frompyfunc``, ``np.vectorize``) by what it wraps;
- equal content built two ways is equal (C vs Fortran order, a slice vs a copy, a frame
  from CSV vs from a dict, a memmap vs the array it maps): storage is not behaviour.
A value with no stable content raises FingerprintError instead of a random token; a
stateless instance is its class; an unset attribute is an explicit "unset" marker.

Handlers for the standard library live here, the generic walk of any other object in
:mod:`.objects`; function and class handlers are registered by :mod:`.code` (this module
never imports it); numpy, pandas, pyarrow, scikit-learn and pydantic handlers live in their
own modules and are registered lazily (see :mod:`.lazy_handlers`: importing this module
never imports pandas).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import io
import os
import pathlib
import reprlib
import struct
import threading
import types
import uuid
from collections import OrderedDict
from typing import Any, Callable

from ..errors import FingerprintError
from ..progress_bar import progress
from .encoder import Encoder, Unhashable, type_name
from .lazy_handlers import LAZY, load_lazy, register_imported
from .objects import encode_dataclass, encode_extra_state, encode_object

_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack

__all__ = ["fingerprint", "fingerprint_entries", "register", "encode", "encode_extra_state", "encode_object"]

_NEVER = (
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
)


@functools.singledispatch
def _registry(v: Any, enc: Encoder) -> None:
    """Feed ``v`` into ``enc``. Fallback for types without a handler of their own."""
    tp = type(v)
    if LAZY:
        for klass in tp.__mro__:
            module = getattr(klass, "__module__", "") or ""
            load_lazy(module.partition(".")[0])
            load_lazy(module)
        if encode.dispatch(tp) is not _fallback:  # a handler of theirs was just registered
            return encode(v, enc)
    if isinstance(v, _NEVER):
        raise Unhashable(v, "its value only exists while it runs")
    if isinstance(v, io.IOBase):
        raise Unhashable(v, "an open file or stream has no stable content; pass its path (pathlib.Path)")
    if dataclasses.is_dataclass(v):
        return encode_dataclass(v, enc)
    wrapped = getattr(v, "__wrapped__", None) if callable(v) else None
    if wrapped is not None and not isinstance(v, type):  # lru_cache, a wraps-decorated object
        enc.tag(b"wrapper")
        enc.text(type_name(tp))
        enc.value_at(".__wrapped__", wrapped)
        return
    encode_object(v, enc)


_fallback = _registry.registry[object]
# exact class -> its handler, as singledispatch resolves it: a dict lookup instead of its
# weak-keyed cache and wrapper (an estimator of 100 trees dispatches hundreds of times).
# Emptied by every registration and, as singledispatch's own cache is, whenever ABCs
# gained a virtual subclass (abc's cache token moved) if any registered type is an ABC.
_handlers: dict[type, Callable[[Any, Encoder], None]] = {}
_handlers_lock = threading.Lock()
_generation = [0, False, abc.get_cache_token()]  # registrations, an ABC registered, abc token


def encode(v: Any, enc: Encoder) -> None:
    """Feed ``v`` into ``enc`` through the handler registered for its type."""
    cls = v.__class__
    handler = _handlers.get(cls)
    if handler is None or (_generation[1] and abc.get_cache_token() != _generation[2]):
        handler = _resolve(cls)
    handler(v, enc)


def _resolve(cls: type) -> Callable[[Any, Encoder], None]:
    generation = _generation[0]
    token = abc.get_cache_token()
    handler = _registry.dispatch(cls)
    with _handlers_lock:
        if token != _generation[2]:
            _handlers.clear()
            _generation[2] = token
        if generation == _generation[0] and token == abc.get_cache_token():  # nothing changed meanwhile
            if len(_handlers) >= 4096:
                _handlers.clear()
            _handlers[cls] = handler
    return handler


def _register(cls: Any, func: Callable | None = None) -> Callable:
    """``singledispatch.register``, then the handler cache emptied."""
    if func is None and isinstance(cls, type):
        return lambda f: _register(cls, f)
    with _handlers_lock:
        out = _registry.register(cls, func)
        _generation[0] += 1
        _generation[1] = _generation[1] or any(hasattr(c, "__abstractmethods__") for c in _registry.registry)
        _handlers.clear()
    return out


encode.register = _register  # type: ignore[attr-defined]
encode.dispatch = _registry.dispatch  # type: ignore[attr-defined]
encode.registry = _registry.registry  # type: ignore[attr-defined]


def register(tp: type) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Teach fingerprinting a type: the handler returns a stand-in value to hash instead.

    >>> @register(MyConfig)
    ... def _(c): return (c.name, c.lr)
    """

    def deco(normalise: Callable[[Any], Any]) -> Callable[[Any], Any]:
        tag = ("user:" + type_name(tp)).encode()

        def _handler(v: Any, enc: Encoder) -> None:
            enc.tag(tag)
            enc.value_at(f"<{type_name(tp)} normalised>", normalise(v))

        encode.register(tp)(_handler)
        return normalise

    return deco


def fingerprint(value: Any, *, name: str = "value") -> str:
    """Content fingerprint of ``value``: ``"xxh3:<32 hex>"``, stable across processes.

    ``name`` only serves the error message when something in ``value`` can't be hashed.
    """
    register_imported()
    enc = Encoder(encode)
    try:
        encode(value, enc)
    except Unhashable as e:
        where = name + "".join(reversed(e.path))
        raise FingerprintError(
            f"cannot fingerprint {where} (type {e.type_name}): {e.reason}. "
            "Pass a value that can be hashed, register a handler with "
            "pipeline.register_fingerprint, or leave it out of the key (ignore=[...])."
        ) from None
    except RecursionError:
        raise FingerprintError(f"cannot fingerprint {name}: nested too deeply") from None
    return enc.hexdigest()


def _alone(value: Any, name: str) -> str | None:
    try:
        return fingerprint(value, name=name)
    except FingerprintError:
        return None


class _Watching(dict):
    """A cycle stack (``Encoder.enter``) that notes a lookup of ``watched``: an entry whose
    encoding reached back to its dict (there a cycle token; alone, the dict in full)."""

    def __init__(self, watched: int) -> None:
        super().__init__()
        self.watched, self.hit = watched, False

    def get(self, key: Any, default: Any = None) -> Any:
        if key == self.watched:
            self.hit = True
        return dict.get(self, key, default)


def fingerprint_entries(value: dict, *, name: str = "value") -> tuple[str | None, dict[Any, str | None]]:
    """``fingerprint(value)`` of a dict and ``fingerprint(v)`` of each of its values, None for
    one that can't be fingerprinted (and then for the dict), each value encoded once.

    A dict's fingerprint is not a function of its values' fingerprints (an entry's digest
    hashes the key's and the value's streams together), but the value's stream is the same:
    it is fed to the entry's hasher and to a fresh one at once (``Encoder.tee``). A value that
    reaches back to the dict is encoded alone again (its own stream holds the dict in full)."""
    register_imported()
    stack = _Watching(id(value))
    enc = Encoder(encode, stack)
    own: dict[Any, str | None] = {}

    def entry(key: Any, x: Any) -> bytes:
        child = enc.child()
        encode(key, child)
        child.tee()
        depth, stack.hit = len(stack), False
        try:
            encode(x, child)
        except Unhashable:
            own[key] = None
            for held in list(stack)[depth:]:  # what the failed walk left entered (dicts keep order)
                del stack[held]
            return b""
        own[key] = _alone(x, f"{name}[{key!r}]") if stack.hit else child.teed_hexdigest()
        return child.digest()

    try:
        _feed_dict(value, enc, entry)
    except (Unhashable, RecursionError):  # a key, or nested too deeply: each on its own
        return _alone(value, name), {k: _alone(x, f"{name}[{k!r}]") for k, x in value.items()}
    whole = all(fp is not None for fp in own.values())
    return (enc.hexdigest() if whole else None), own


# -- scalars -------------------------------------------------------------------------
@encode.register(type(None))
def _none(v: None, enc: Encoder) -> None:
    enc.tag(b"None")


def _scalar_tag(v: Any, base: type, enc: Encoder) -> None:
    """The base type's tag; a subclass (``class UserId(int)``) is tagged by its own name
    and the state it adds."""
    if type(v) is not base:
        enc.tag(b"sub:" + type_name(type(v)).encode())
        encode_extra_state(v, enc)
    enc.tag(base.__name__.encode())


@encode.register(bool)
def _bool(v: bool, enc: Encoder) -> None:
    enc.tag(b"T" if v else b"F")


@encode.register(int)
def _int(v: int, enc: Encoder) -> None:
    _scalar_tag(v, int, enc)
    enc.blob(int.to_bytes(v, v.bit_length() // 8 + 1, "little", signed=True))


@encode.register(float)
def _float(v: float, enc: Encoder) -> None:
    _scalar_tag(v, float, enc)
    enc.float(v)


@encode.register(complex)
def _complex(v: complex, enc: Encoder) -> None:
    _scalar_tag(v, complex, enc)
    enc.float(v.real)
    enc.float(v.imag)


@encode.register(str)
def _str(v: str, enc: Encoder) -> None:
    _scalar_tag(v, str, enc)
    enc.text(v)


@encode.register(bytes)
@encode.register(bytearray)
def _bytes(v: Any, enc: Encoder) -> None:
    _scalar_tag(v, bytes if isinstance(v, bytes) else bytearray, enc)
    enc.blob(v)


@encode.register(memoryview)
def _memoryview(v: memoryview, enc: Encoder) -> None:
    """Format and shape beside the bytes: a view of 2 doubles is not a view of 16 bytes."""
    enc.tag(b"memoryview")
    enc.text(v.format)
    enc.int(v.ndim)
    for n in v.shape or ():
        enc.int(n)
    enc.blob(v.cast("B") if v.c_contiguous else v.tobytes())


@encode.register(decimal.Decimal)
def _decimal(v: decimal.Decimal, enc: Encoder) -> None:
    """Equal decimals (``1.0``, ``1.00``) hash equal; exact at any precision (no context)."""
    enc.tag(b"Decimal")
    sign, digits, exponent = v.as_tuple()
    if not isinstance(exponent, int):  # NaN, sNaN, Infinity
        enc.text(str(v))
        return
    coefficient = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        exponent = 0
    while coefficient and coefficient % 10 == 0:
        coefficient //= 10
        exponent += 1
    enc.text(f"{'-' if sign else ''}{coefficient}e{exponent}")


@encode.register(dt.datetime)
@encode.register(dt.date)
@encode.register(dt.time)
def _datetime(v: Any, enc: Encoder) -> None:
    enc.tag(type_name(type(v)).encode())
    enc.text(v.isoformat())


@encode.register(dt.timedelta)
def _timedelta(v: dt.timedelta, enc: Encoder) -> None:
    enc.tag(b"timedelta")
    enc.int(v.days)
    enc.int(v.seconds)
    enc.int(v.microseconds)


@encode.register(uuid.UUID)
def _uuid(v: uuid.UUID, enc: Encoder) -> None:
    enc.tag(b"UUID")
    enc.update(v.bytes)


@encode.register(enum.Enum)
@encode.register(enum.IntEnum)
@encode.register(enum.StrEnum)
@encode.register(enum.Flag)
@encode.register(enum.IntFlag)
def _enum(v: enum.Enum, enc: Encoder) -> None:
    enc.tag(b"Enum")
    enc.text(type_name(type(v)))
    enc.value_at(".value", v.value)


# -- containers ----------------------------------------------------------------------
def _container_tag(v: Any, base: type, enc: Encoder) -> None:
    """The base type's tag; a subclass is tagged by its own name and the state it adds."""
    tp = type(v)
    if tp is base:
        enc.tag(base.__name__.encode())
        return
    enc.tag(b"sub:" + type_name(tp).encode())
    encode_extra_state(v, enc)


def _key_segment(k: Any) -> str:
    return f"[{reprlib.repr(k)}]"


@encode.register(list)
@encode.register(tuple)
def _sequence(v: Any, enc: Encoder) -> None:
    if not enc.enter(v):
        return
    _container_tag(v, list if isinstance(v, list) else tuple, enc)
    enc.int(len(v))
    i = 0
    try:  # the error path segment is only built when an item fails
        for i, item in enumerate(v):  # noqa: B007
            encode(item, enc)
    except Unhashable as e:
        e.path.append(f"[{i}]")
        raise
    enc.leave(v)


@encode.register(dict)
def _dict(v: dict, enc: Encoder) -> None:
    """A dict's equality ignores insertion order, so its entries are hashed as a sorted
    set of entry digests; an OrderedDict's equality does not, so it is hashed in order."""
    _feed_dict(v, enc, enc.sub_digest_pair)


def _feed_dict(v: dict, enc: Encoder, entry: Callable[[Any, Any], bytes]) -> None:
    """``_dict``, each entry's digest by ``entry(key, value)``."""
    if not enc.enter(v):
        return
    _container_tag(v, dict, enc)
    enc.int(len(v))
    digests = []
    for k, x in v.items():
        try:
            digests.append(entry(k, x))
        except Unhashable as e:
            e.path.append(_key_segment(k))
            raise
    if isinstance(v, OrderedDict):
        enc.tag(b"ordered")
    else:
        digests.sort()
    for d in digests:
        enc.update(d)
    enc.leave(v)


@encode.register(set)
@encode.register(frozenset)
def _set(v: Any, enc: Encoder) -> None:
    if not enc.enter(v):
        return
    _container_tag(v, set if isinstance(v, set) else frozenset, enc)
    enc.int(len(v))
    digests = []
    for x in v:
        try:
            digests.append(enc.sub_digest(x))
        except Unhashable as e:
            e.path.append("{" + reprlib.repr(x) + "}")
            raise
    for d in sorted(digests):
        enc.update(d)
    enc.leave(v)


@encode.register(range)
def _range(v: range, enc: Encoder) -> None:
    enc.tag(b"range")
    for n in (v.start, v.stop, v.step):
        enc.int(n)


@encode.register(slice)
def _slice(v: slice, enc: Encoder) -> None:
    enc.tag(b"slice")
    enc.value_at(".start", v.start)
    enc.value_at(".stop", v.stop)
    enc.value_at(".step", v.step)


# -- files ---------------------------------------------------------------------------
def hash_file(path: str | os.PathLike, enc: Encoder) -> None:
    """Feed a file's bytes in 8 MiB reads (length first, so files can't run together)."""
    enc.int(size := os.path.getsize(path))
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f, progress(f"hash {os.path.basename(path)}", size) as bar:
        while n := f.readinto(buf):
            enc.update(view[:n])
            bar.advance(n)


def _raise(err: OSError) -> None:
    raise err


def _tree(top: pathlib.Path) -> list[tuple[str, str]]:
    """(relative posix path, full path) of every entry under ``top`` that is not a plain
    directory, sorted; a directory that can't be read is an error, not a gap."""
    entries = []
    for root, dirs, names in os.walk(top, onerror=_raise):
        # symlinked directories are listed but not walked into (no loops): keep them
        for name in [d for d in dirs if os.path.islink(os.path.join(root, d))] + names:
            full = os.path.join(root, name)
            entries.append((os.path.relpath(full, top).replace(os.sep, "/"), full))
    return sorted(entries)


@encode.register(pathlib.PurePath)
def _path(v: pathlib.PurePath, enc: Encoder) -> None:
    p = pathlib.Path(v)
    try:
        if p.is_file():
            enc.tag(b"file")
            hash_file(p, enc)
        elif p.is_dir():
            enc.tag(b"dir")
            entries = _tree(p)
            enc.int(len(entries))
            for rel, full in entries:
                enc.text(rel)
                if os.path.isfile(full):
                    enc.tag(b"file")
                    hash_file(full, enc)
                elif os.path.islink(full):  # to a directory (not followed) or dangling
                    enc.tag(b"link")
                    enc.text(os.readlink(full))
                else:  # a fifo or socket: reading it could block forever
                    enc.tag(b"special")
        else:
            enc.tag(b"path-missing")
            enc.text(p.as_posix())
    except OSError as e:
        raise Unhashable(v, f"its content can't be read ({e})") from None


# -- builtins, methods, partials, modules (functions and classes: see code.py) ------
@encode.register(types.BuiltinFunctionType)
def _builtin(v: Any, enc: Encoder) -> None:
    enc.tag(b"builtin")
    enc.text(f"{getattr(v, '__module__', None)}.{v.__qualname__}")
    if getattr(v, "__self__", None) is not None and not isinstance(v.__self__, types.ModuleType):
        enc.value_at(".__self__", v.__self__)


@encode.register(types.MethodType)
def _method(v: types.MethodType, enc: Encoder) -> None:
    enc.tag(b"method")
    enc.value_at(".__func__", v.__func__)
    enc.value_at(".__self__", v.__self__)


@encode.register(functools.partial)
def _partial(v: functools.partial, enc: Encoder) -> None:
    enc.tag(b"partial")
    enc.value_at(".func", v.func)
    enc.value_at(".args", v.args)
    enc.value_at(".keywords", v.keywords)


@encode.register(types.ModuleType)
def _module(v: types.ModuleType, enc: Encoder) -> None:
    enc.tag(b"module")
    enc.text(v.__name__)


# -- scalar tokens -------------------------------------------------------------------
def _int_token(v: int) -> bytes:
    data = int.to_bytes(v, v.bit_length() // 8 + 1, "little", signed=True)
    return b"int\x00" + _pack_q(len(data)) + data


def _str_token(v: str) -> bytes:
    data = v.encode("utf-8", "surrogatepass")
    return b"str\x00" + _pack_q(len(data)) + data


def scalar_tokens() -> dict[type, Callable[[Any], bytes]]:
    """The bytes ``encode`` writes for a value of an exact built-in scalar type, for a caller
    that feeds many of them in a row (an estimator's hyperparameters) in one update.
    ``test_scalar_tokens_are_the_handlers_stream`` holds them to the handlers above."""
    return {
        type(None): lambda v: b"None\x00",
        bool: lambda v: b"T\x00" if v else b"F\x00",
        int: _int_token,
        float: lambda v: b"float\x00" + _pack_d(v),
        str: _str_token,
    }
