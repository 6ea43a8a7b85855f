"""numpy handlers: arrays hashed zero-copy over their buffer, dtype and shape first."""

from __future__ import annotations

import numpy as np

from .encoder import Encoder, Unhashable
from .values import encode

_CHUNK_BYTES = 16 << 20


def dtype_token(dtype: np.dtype) -> str:
    """A dtype's full spelling: byte order, unit, and fields for structured dtypes."""
    return str(dtype.descr) if dtype.fields else dtype.str


def feed_buffer(a: np.ndarray, enc: Encoder) -> None:
    """Feed an array's elements in C order without copying a contiguous array.

    A non-contiguous array (Fortran order, strided view) is copied a bounded chunk at a
    time, so equal content hashes equal whatever its memory layout."""
    if a.flags.c_contiguous:
        enc.update(a.reshape(-1).view(np.uint8))
        return
    if a.ndim == 0:  # pragma: no cover - 0-d arrays are always contiguous
        enc.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
        return
    row = max(1, a[0].nbytes if a.shape[0] else 1)
    step = max(1, _CHUNK_BYTES // row)
    for i in range(0, a.shape[0], step):
        enc.update(np.ascontiguousarray(a[i : i + step]).reshape(-1).view(np.uint8))


@encode.register(np.ndarray)
def _ndarray(a: np.ndarray, enc: Encoder) -> None:
    if a.dtype.hasobject:
        enc.tag(b"ndarray[object]")
        enc.int(a.ndim)
        for n in a.shape:
            enc.int(n)
        if not enc.enter(a):
            return
        for i, item in enumerate(a.ravel(order="C")):
            enc.value_at(f"[{i}]", item)
        enc.leave(a)
        return
    enc.tag(b"ndarray")
    enc.text(dtype_token(a.dtype))
    enc.int(a.ndim)
    for n in a.shape:
        enc.int(n)
    feed_buffer(a, enc)


@encode.register(np.generic)
def _scalar(v: np.generic, enc: Encoder) -> None:
    if v.dtype.hasobject:  # pragma: no cover - np.object_ scalars do not exist in practice
        raise Unhashable(v, "numpy object scalar")
    enc.tag(b"np.scalar")
    enc.text(dtype_token(v.dtype))
    enc.update(np.asarray(v).reshape(-1).view(np.uint8))


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
