"""pyarrow handlers: columns hashed over their buffers, independent of how they are chunked."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .encoder import Encoder
from .values import encode

_VARLEN = {
    pa.string(): np.int32,
    pa.binary(): np.int32,
    pa.large_string(): np.int64,
    pa.large_binary(): np.int64,
}


def _zero(typ: pa.DataType) -> pa.Scalar | None:
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.scalar("", typ)
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return pa.scalar(b"", typ)
    if pa.types.is_boolean(typ):
        return pa.scalar(False, typ)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return pa.scalar(0, typ)
    if pa.types.is_temporal(typ):
        return pa.scalar(0, pa.int64()).cast(typ)
    return None


def _fixed_width(typ: pa.DataType) -> bool:
    if pa.types.is_decimal(typ) or pa.types.is_fixed_size_binary(typ):
        return True
    return pa.types.is_primitive(typ) and typ.bit_width % 8 == 0


def _feed_chunk(chunk: pa.Array, enc: Encoder) -> None:
    typ = chunk.type
    if chunk.null_count:
        zero = _zero(typ)
        if zero is not None:  # values under a null slot are undefined: make them canonical
            chunk = pc.fill_null(chunk, zero)
    n, off = len(chunk), chunk.offset
    if pa.types.is_boolean(typ):
        enc.update(chunk.to_numpy(zero_copy_only=False).view(np.uint8))
    elif typ in _VARLEN:
        bufs = chunk.buffers()
        offsets = np.frombuffer(bufs[1], dtype=_VARLEN[typ])[off : off + n + 1]
        enc.update(np.diff(offsets).view(np.uint8))
        if bufs[2] is not None and n:
            enc.update(memoryview(bufs[2])[offsets[0] : offsets[-1]])
    elif pa.types.is_dictionary(typ):
        _feed_chunk(chunk.dictionary_decode(), enc)
    elif pa.types.is_null(typ):
        return
    elif _fixed_width(typ):
        width = typ.byte_width
        enc.update(memoryview(chunk.buffers()[1])[off * width : (off + n) * width])
    else:  # nested and exotic types: element by element, slow but exact
        for i, item in enumerate(chunk.to_pylist()):
            enc.value_at(f"[{i}]", item)


def encode_chunks(chunks: Iterable[pa.Array], typ: pa.DataType, enc: Encoder) -> None:
    """Feed a column given as chunks: type, length, null mask, then values."""
    chunks = [c for c in chunks if len(c)]
    enc.tag(b"arrow")
    enc.text(str(typ))
    enc.int(sum(len(c) for c in chunks))
    nulls = sum(c.null_count for c in chunks)
    enc.int(nulls)
    if nulls:
        for c in chunks:
            enc.update(c.is_null().to_numpy(zero_copy_only=False).view(np.uint8))
    for c in chunks:
        _feed_chunk(c, enc)


@encode.register(pa.Array)
def _array(v: pa.Array, enc: Encoder) -> None:
    encode_chunks([v], v.type, enc)


@encode.register(pa.ChunkedArray)
def _chunked(v: pa.ChunkedArray, enc: Encoder) -> None:
    encode_chunks(v.chunks, v.type, enc)


def _schema(schema: pa.Schema, enc: Encoder) -> None:
    enc.int(len(schema))
    for f in schema:
        enc.text(f.name)
        enc.text(str(f.type))


@encode.register(pa.Table)
def _table(v: pa.Table, enc: Encoder) -> None:
    enc.tag(b"pa.Table")
    _schema(v.schema, enc)
    enc.int(v.num_rows)
    for col in v.columns:
        encode_chunks(col.chunks, col.type, enc)


@encode.register(pa.RecordBatch)
def _batch(v: pa.RecordBatch, enc: Encoder) -> None:
    enc.tag(b"pa.RecordBatch")
    _schema(v.schema, enc)
    enc.int(v.num_rows)
    for col in v.columns:
        encode_chunks([col], col.type, enc)


@encode.register(pa.Scalar)
def _scalar(v: pa.Scalar, enc: Encoder) -> None:
    enc.tag(b"pa.Scalar")
    enc.text(str(v.type))
    enc.value_at(".as_py()", v.as_py())


@encode.register(pa.DataType)
def _datatype(v: pa.DataType, enc: Encoder) -> None:
    enc.tag(b"pa.DataType")
    enc.text(str(v))
