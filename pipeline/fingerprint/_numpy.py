"""numpy handlers: arrays hashed zero-copy over their buffer, dtype and shape first.

A subclass of ndarray adds its type and its ``__dict__``; a memmap is storage, hashed as
the array it maps. A ufunc is numpy's own by name, one made by ``np.frompyfunc`` by the
Python function it wraps; ``np.vectorize`` by its function and options.
"""

from __future__ import annotations

import gc
import struct
import types

import numpy as np

from ._padding import feed_padded, padding_plan
from .encoder import Encoder, Unhashable, type_name
from .values import encode

_CHUNK_BYTES = 4 << 20  # bound on the temporary copy of a non-contiguous array
_STR_PIECE = 1 << 16  # strings per piece of an object array of str


# id(dtype) -> (the dtype, its field names, its spelling, that spelling as a length-prefixed
# token): ``descr`` costs 20 us. A dtype object is immutable but for its ``names``, which
# the entry checks.
_DESCR: dict[int, tuple[np.dtype, tuple[str, ...] | None, str, bytes]] = {}
_pack_q = struct.Struct("<q").pack


def _dtype_entry(dtype: np.dtype) -> tuple[np.dtype, tuple[str, ...] | None, str, bytes]:
    entry = _DESCR.get(id(dtype))
    if entry is not None and entry[0] is dtype and entry[1] == dtype.names:
        return entry
    token = str(dtype.descr) if dtype.fields else dtype.str
    data = token.encode()
    if len(_DESCR) >= 256:
        _DESCR.clear()
    entry = _DESCR[id(dtype)] = (dtype, dtype.names, token, _pack_q(len(data)) + data)
    return entry


def dtype_token(dtype: np.dtype) -> str:
    """A dtype's full spelling: byte order, unit, and fields for structured dtypes."""
    return dtype.str if not dtype.fields else _dtype_entry(dtype)[2]


def feed_buffer(a: np.ndarray, enc: Encoder) -> None:
    """Feed an array's elements in C order without copying a contiguous array.

    A non-contiguous array (Fortran order, strided view) is copied a bounded block at a
    time, so equal content hashes equal whatever its memory layout. A structured array with
    padding is fed with its padding bytes zeroed (:mod:`._padding`)."""
    plan = padding_plan(a.dtype) if a.dtype.fields else None
    if plan is not None:
        feed_padded(a, plan, enc)
        return
    if a.flags.c_contiguous:
        enc.update(a.reshape(-1).view(np.uint8))
        return
    row = a[0].nbytes if a.shape[0] else 0
    if a.ndim > 1 and row > _CHUNK_BYTES:  # one row is already too big: go down an axis
        for i in range(a.shape[0]):
            feed_buffer(a[i], enc)
        return
    step = max(1, _CHUNK_BYTES // max(1, row))
    for i in range(0, a.shape[0], step):
        enc.update(np.ascontiguousarray(a[i : i + step]).reshape(-1).view(np.uint8))


_SHAPES = [struct.Struct(f"<{n + 1}q").pack for n in range(65)]  # ndim, then the shape


def array_header(a: np.ndarray) -> bytes:
    """What ``encode`` writes before a plain (non-object) array's elements: its tag,
    dtype and shape, as one token (for handlers that feed many small arrays)."""
    return b"ndarray\x00" + _dtype_entry(a.dtype)[3] + _SHAPES[a.ndim](a.ndim, *a.shape)


def _shape(a: np.ndarray, enc: Encoder) -> None:
    enc.int(a.ndim)
    for n in a.shape:
        enc.int(n)


def _str_digest(flat: np.ndarray, enc: Encoder) -> bytes | None:
    """Digest of an object array holding only ``str``, fed a piece at a time at C speed;
    None as soon as an element is anything else (a ``str`` subclass included).

    A piece is its strings each ended by NUL (b"A"), or, when a string holds a NUL
    itself, their lengths then their text (b"B"): either way the stream parses back
    into exactly the strings it came from."""
    text = enc.child()
    for i in range(0, len(flat), _STR_PIECE):
        piece = flat[i : i + _STR_PIECE]
        if set(map(type, piece)) != {str}:
            return None
        joined = "\x00".join(piece)
        if joined.count("\x00") == len(piece) - 1:
            text.update(b"A")
            text.update(joined.encode("utf-8", "surrogatepass"))
            text.update(b"\x00")
        else:
            text.update(b"B")
            text.update(np.fromiter(map(len, piece), np.int64, len(piece)))
            text.update("".join(piece).encode("utf-8", "surrogatepass"))
    return text.digest()


def encode_objects(a: np.ndarray, enc: Encoder) -> None:
    """An object array: all-``str`` (the common text column) through a vectorised path,
    anything else element by element through the registry."""
    flat = a.reshape(-1)
    digest = _str_digest(flat, enc) if a.size else None
    if digest is not None:
        enc.tag(b"ndarray[str]")
        _shape(a, enc)
        enc.update(digest)
        return
    enc.tag(b"ndarray[object]")
    _shape(a, enc)
    if not enc.enter(a):
        return
    i = 0
    try:  # the error path segment is only built when an element fails
        for i, item in enumerate(flat):  # noqa: B007
            encode(item, enc)
    except Unhashable as e:
        e.path.append(f"[{i}]" if a.ndim == 1 else f"[{np.unravel_index(i, a.shape)}]")
        raise
    enc.leave(a)


@encode.register(np.ndarray)
def _ndarray(a: np.ndarray, enc: Encoder) -> None:
    tp = type(a)
    if tp is not np.ndarray and not isinstance(a, np.memmap):
        enc.tag(b"sub:" + type_name(tp).encode())
        enc.value_at(".__dict__", dict(getattr(a, "__dict__", {})))
        a = a.view(np.ndarray)
    if a.dtype.hasobject:
        encode_objects(a, enc)
        return
    enc.update(array_header(a))
    feed_buffer(a, enc)


@encode.register(np.ma.MaskedArray)
def _masked(a: np.ma.MaskedArray, enc: Encoder) -> None:
    """Mask and data; what lies under the mask is replaced by the fill value."""
    enc.tag(b"np.ma")
    enc.value_at(".mask", np.ma.getmaskarray(a))
    enc.value_at(".filled()", a.filled() if a.mask is not np.ma.nomask else a.data)


def scalar_token(v: np.generic) -> bytes:
    """Everything ``encode`` writes for a numpy scalar (not of object dtype)."""
    return b"np.scalar\x00" + _dtype_entry(v.dtype)[3] + v.tobytes()


@encode.register(np.generic)
def _scalar(v: np.generic, enc: Encoder) -> None:
    if v.dtype.hasobject:  # pragma: no cover - np.object_ scalars do not exist in practice
        raise Unhashable(v, "numpy object scalar")
    enc.update(scalar_token(v))


@encode.register(np.dtype)
def _dtype(v: np.dtype, enc: Encoder) -> None:
    enc.tag(b"np.dtype")
    enc.text(dtype_token(v))


@encode.register(np.random.Generator)
def _generator(v: np.random.Generator, enc: Encoder) -> None:
    enc.tag(b"np.Generator")
    enc.value_at(".bit_generator.state", v.bit_generator.state)


@encode.register(np.random.RandomState)
def _random_state(v: np.random.RandomState, enc: Encoder) -> None:
    enc.tag(b"np.RandomState")
    enc.value_at(".get_state()", v.get_state(legacy=False))


@encode.register(np.ufunc)
def _ufunc(u: np.ufunc, enc: Encoder) -> None:
    if getattr(np, u.__name__, None) is u:
        enc.tag(b"np.ufunc")
        enc.text(u.__name__)
        return
    wrapped = [r for r in gc.get_referents(u) if isinstance(r, types.FunctionType) or callable(r)]
    enc.tag(b"np.ufunc[other]")
    enc.text(u.__name__)
    enc.int(u.nin)
    enc.int(u.nout)
    if wrapped:  # np.frompyfunc: the function it calls is what it computes
        enc.value_at(".<wrapped function>", wrapped[0])
        enc.value_at(".identity", u.identity)
        return
    # a compiled ufunc of another package (scipy.special.gamma): its loops and doc
    enc.value_at(".types", list(u.types))
    enc.value_at(".__doc__", u.__doc__)


@encode.register(np.vectorize)
def _vectorize(v: np.vectorize, enc: Encoder) -> None:
    enc.tag(b"np.vectorize")
    for attr in ("pyfunc", "otypes", "excluded", "signature", "cache"):
        enc.value_at("." + attr, getattr(v, attr, None))
