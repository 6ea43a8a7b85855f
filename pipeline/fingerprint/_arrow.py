"""pyarrow handlers: columns hashed over their buffers, independent of how they are chunked.

A column is fed as three parallel streams — the row numbers of its nulls, value ends
(variable-width types: the int64 byte offset where each value ends, counted from the
column's first byte) and values — each the plain concatenation over rows, so
``[["a", "b"], ["c"]]`` and ``[["a"], ["b", "c"]]`` hash equal. Chunks are walked in
bounded pieces. A string column as pandas holds it (one ``large_string`` chunk from offset
0) is fed zero-copy: its offsets buffer already is the ends stream. Other layouts (32-bit
offsets, a later chunk, a slice) copy one piece of rebased offsets at a time, as does
canonicalising nulls.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .encoder import Encoder
from .values import encode

PIECE = 1 << 16  # rows per piece: bounds every temporary copy (<= 1 MB for 16-byte values)

_VARLEN = {
    pa.string(): np.int32,
    pa.binary(): np.int32,
    pa.large_string(): np.int64,
    pa.large_binary(): np.int64,
}
# same content, other physical layout: hashed as the large variant
_AS_LARGE = {
    pa.string(): pa.large_string(),
    pa.binary(): pa.large_binary(),
    pa.string_view(): pa.large_string(),
    pa.binary_view(): pa.large_binary(),
}


def logical_type(typ: pa.DataType) -> pa.DataType:
    """The type a column's content is hashed as: dictionary encoding, offset width and
    views are storage choices, not content (the exact type is hashed where it is data,
    e.g. in a Table's schema)."""
    if pa.types.is_dictionary(typ):
        return logical_type(typ.value_type)
    return _AS_LARGE.get(typ, typ)


class _Streams:
    """The parallel streams of one column."""

    def __init__(self, enc: Encoder) -> None:
        self.enc = enc
        self.valid = enc.child()
        self.lengths = enc.child()
        self.values = enc.child()
        self.ends = 0  # bytes of variable-width values fed so far

    def finish(self) -> None:
        for s in (self.valid, self.lengths, self.values):
            self.enc.update(s.digest())


def _fixed_width(typ: pa.DataType) -> bool:
    if pa.types.is_decimal(typ) or pa.types.is_fixed_size_binary(typ):
        return True
    return pa.types.is_primitive(typ) and typ.bit_width % 8 == 0


def _feed_piece(piece: pa.Array, row0: int, out: _Streams) -> None:
    """Feed at most ``PIECE`` rows. Values under a null slot are undefined in Arrow:
    they are fed as zeros (fixed width) or as empty (variable width)."""
    typ = piece.type
    if isinstance(typ, pa.ExtensionType):
        piece, typ = piece.storage, typ.storage_type
    if pa.types.is_dictionary(typ):
        piece, typ = piece.dictionary_decode(), typ.value_type
    if typ in _AS_LARGE and typ not in _VARLEN:  # string_view, binary_view
        piece, typ = piece.cast(_AS_LARGE[typ]), _AS_LARGE[typ]
    nulls = piece.null_count
    null_mask = piece.is_null().to_numpy(zero_copy_only=False) if nulls else None
    if null_mask is not None:  # row numbers, not a mask: no bytes at all for a piece without nulls
        out.valid.update(np.flatnonzero(null_mask).astype(np.int64) + row0)
    n, off = len(piece), piece.offset
    if pa.types.is_null(typ):
        return
    if pa.types.is_boolean(typ):
        if nulls:
            piece = pc.fill_null(piece, False)
        out.values.update(piece.to_numpy(zero_copy_only=False).view(np.uint8))
    elif typ in _VARLEN:
        if nulls:
            text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
            piece = pc.fill_null(piece, pa.scalar("" if text else b"", typ))
            off = piece.offset
        bufs = piece.buffers()
        offsets = np.frombuffer(bufs[1], dtype=_VARLEN[typ])[off : off + n + 1]
        first, last = int(offsets[0]), int(offsets[-1])
        ends = offsets[1:]
        if first != out.ends or ends.dtype != np.int64:  # rebase and widen: a bounded copy
            ends = ends.astype(np.int64)
            ends += out.ends - first
        out.lengths.update(ends)
        out.ends += last - first
        if bufs[2] is not None and n:
            out.values.update(memoryview(bufs[2])[first:last])
    elif _fixed_width(typ):
        width = typ.byte_width
        data = piece.buffers()[1]
        if data is None:  # all null, no buffer
            out.values.update(bytes(n * width))
            return
        raw = np.frombuffer(data, np.uint8, n * width, off * width)
        if null_mask is not None:
            raw = raw.reshape(n, width).copy()
            raw[null_mask] = 0
        out.values.update(raw)
    else:  # nested and exotic types: element by element, slow but exact
        values = out.values
        for item in piece.to_pylist():
            values.value(item)


def encode_chunks(chunks: Iterable[pa.Array], typ: pa.DataType, enc: Encoder) -> None:
    """Feed a column's content: logical type, its streams, then row and null counts.

    ``chunks`` may be a generator (converted lazily, e.g. a pandas array a slice at a time)."""
    enc.tag(b"arrow")
    enc.text(str(logical_type(typ)))
    out = _Streams(enc)
    rows = nulls = 0
    for c in chunks:
        for start in range(0, len(c), PIECE):
            _feed_piece(c.slice(start, PIECE), rows + start, out)
        rows += len(c)
        nulls += c.null_count
    out.finish()
    enc.int(rows)
    enc.int(nulls)


@encode.register(pa.Array)
def _array(v: pa.Array, enc: Encoder) -> None:
    enc.tag(b"pa.Array")
    enc.text(str(v.type))
    encode_chunks([v], v.type, enc)


@encode.register(pa.ChunkedArray)
def _chunked(v: pa.ChunkedArray, enc: Encoder) -> None:
    enc.tag(b"pa.ChunkedArray")
    enc.text(str(v.type))
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
