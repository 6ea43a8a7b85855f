"""value -> ``"xxh3:<32 hex>"``: one singledispatch registry over a type-tagged encoding.

Handlers for the standard library live here; numpy, pandas, pyarrow, scikit-learn and
pydantic handlers live in their own modules and are registered lazily, the first time
a value of theirs is met (so importing this module never imports pandas).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib
import io
import os
import pathlib
import pickle
import sys
import types
import uuid
import warnings
from typing import Any, Callable

from ..errors import FingerprintError
from .encoder import Encoder, Unhashable, type_name

__all__ = ["fingerprint", "register", "encode"]

# Top-level package -> module of ours that registers its handlers when imported.
_LAZY: dict[str, str] = {
    "numpy": "._numpy",
    "pandas": "._pandas",
    "pyarrow": "._arrow",
    "sklearn": "._sklearn",
    "pydantic": "._pydantic",
}
_warned_pickle: set[type] = set()

_NEVER = (
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
)


def _load_lazy(top: str) -> bool:
    mod = _LAZY.pop(top, None)
    if mod is None:
        return False
    importlib.import_module(mod, __package__)
    return True


def _register_imported() -> None:
    """Register handlers of every lazily-supported library that is already imported.

    Done before each top-level call so the handler chosen for a type never depends on
    which values happened to be hashed first (np.float64 subclasses float, say)."""
    for top in [t for t in _LAZY if t in sys.modules]:
        _load_lazy(top)


@functools.singledispatch
def encode(v: Any, enc: Encoder) -> None:
    """Feed ``v`` into ``enc``. Fallback for types without a handler of their own."""
    tp = type(v)
    for klass in tp.__mro__:
        if _load_lazy(getattr(klass, "__module__", "").partition(".")[0]):
            return encode(v, enc)
    if isinstance(v, _NEVER):
        raise Unhashable(v, "its value only exists while it runs")
    if isinstance(v, io.IOBase):
        raise Unhashable(v, "an open file or stream has no stable content; pass its path (pathlib.Path)")
    if dataclasses.is_dataclass(v):
        return _encode_dataclass(v, enc)
    _encode_object(v, enc)


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
    _register_imported()
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


# -- scalars -------------------------------------------------------------------------
@encode.register(type(None))
def _none(v: None, enc: Encoder) -> None:
    enc.tag(b"None")


@encode.register(bool)
def _bool(v: bool, enc: Encoder) -> None:
    enc.tag(b"T" if v else b"F")


@encode.register(int)
def _int(v: int, enc: Encoder) -> None:
    enc.tag(b"int")
    enc.blob(v.to_bytes(v.bit_length() // 8 + 1, "little", signed=True))


@encode.register(float)
def _float(v: float, enc: Encoder) -> None:
    enc.tag(b"float")
    enc.float(v)


@encode.register(complex)
def _complex(v: complex, enc: Encoder) -> None:
    enc.tag(b"complex")
    enc.float(v.real)
    enc.float(v.imag)


@encode.register(str)
def _str(v: str, enc: Encoder) -> None:
    enc.tag(b"str")
    enc.text(v)


@encode.register(bytes)
@encode.register(bytearray)
@encode.register(memoryview)
def _bytes(v: Any, enc: Encoder) -> None:
    enc.tag(type(v).__name__.encode())
    enc.blob(v if not isinstance(v, memoryview) or v.contiguous else v.tobytes())


@encode.register(decimal.Decimal)
def _decimal(v: decimal.Decimal, enc: Encoder) -> None:
    enc.tag(b"Decimal")
    enc.text(str(v.normalize()) if v.is_finite() else str(v))


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
    tp = type(v)
    enc.tag(base.__name__.encode() if tp is base else b"sub:" + type_name(tp).encode())


@encode.register(list)
@encode.register(tuple)
def _sequence(v: Any, enc: Encoder) -> None:
    _container_tag(v, list if isinstance(v, list) else tuple, enc)
    if not enc.enter(v):
        return
    enc.int(len(v))
    for i, item in enumerate(v):
        enc.value_at(f"[{i}]", item)
    enc.leave(v)


@encode.register(dict)
def _dict(v: dict, enc: Encoder) -> None:
    _container_tag(v, dict, enc)
    if not enc.enter(v):
        return
    enc.int(len(v))
    for d in sorted(enc.sub_digest_pair(k, x, f"[{k!r}]") for k, x in v.items()):
        enc.update(d)
    enc.leave(v)


@encode.register(set)
@encode.register(frozenset)
def _set(v: Any, enc: Encoder) -> None:
    _container_tag(v, set if isinstance(v, set) else frozenset, enc)
    if not enc.enter(v):
        return
    enc.int(len(v))
    for d in sorted(enc.sub_digest(x, "{item}") for x in v):
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
    enc.int(os.path.getsize(path))
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            enc.update(view[:n])


@encode.register(pathlib.PurePath)
def _path(v: pathlib.PurePath, enc: Encoder) -> None:
    p = pathlib.Path(v)
    if p.is_file():
        enc.tag(b"file")
        hash_file(p, enc)
    elif p.is_dir():
        enc.tag(b"dir")
        files = sorted(
            (os.path.relpath(os.path.join(root, f), p).replace(os.sep, "/"), os.path.join(root, f))
            for root, _dirs, names in os.walk(p)
            for f in names
        )
        enc.int(len(files))
        for rel, full in files:
            enc.text(rel)
            hash_file(full, enc)
    else:
        enc.tag(b"path-missing")
        enc.text(p.as_posix())


# -- code, classes, modules ----------------------------------------------------------
@encode.register(types.FunctionType)
def _function(v: types.FunctionType, enc: Encoder) -> None:
    from .code import code_fingerprint

    enc.tag(b"function")
    enc.text(code_fingerprint(v))


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


@encode.register(type)
def _type(v: type, enc: Encoder) -> None:
    from .code import code_fingerprint, is_project_local

    enc.tag(b"type")
    enc.text(type_name(v))
    if is_project_local(v):
        enc.text(code_fingerprint(v))


@encode.register(types.ModuleType)
def _module(v: types.ModuleType, enc: Encoder) -> None:
    enc.tag(b"module")
    enc.text(v.__name__)


# -- objects -------------------------------------------------------------------------
def _encode_dataclass(v: Any, enc: Encoder) -> None:
    enc.tag(b"dataclass")
    enc.text(type_name(type(v)))
    if not enc.enter(v):
        return
    fields = dataclasses.fields(v)
    enc.int(len(fields))
    for f in fields:
        enc.text(f.name)
        enc.value_at("." + f.name, getattr(v, f.name))
    enc.leave(v)


def _encode_object(v: Any, enc: Encoder) -> None:
    """Unknown type: walk ``__getstate__`` (its ``__dict__``/slots), else pickle bytes."""
    tp = type(v)
    try:
        state = v.__getstate__()
    except Exception as e:  # a type that refuses to be pickled refuses to be hashed
        raise Unhashable(v, f"it can't be captured ({e})") from None
    enc.tag(b"object")
    enc.text(type_name(tp))
    if state is not None:
        if not enc.enter(v):
            return
        enc.value_at(".__getstate__()", state)
        enc.leave(v)
        return
    try:
        data = pickle.dumps(v, protocol=5)
    except Exception as e:
        raise Unhashable(v, f"it has no state to walk and can't be pickled ({e})") from None
    if tp not in _warned_pickle:
        _warned_pickle.add(tp)
        warnings.warn(
            f"fingerprinting {type_name(tp)} by its pickle bytes; register a handler with "
            "pipeline.register_fingerprint for a key that is stable across library versions",
            stacklevel=3,
        )
    enc.blob(data)
