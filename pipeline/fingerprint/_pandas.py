"""pandas handlers: frames hashed column by column over their buffers.

A column is its name, its dtype and its values; numpy-backed values go through the
numpy buffer path, Arrow-backed and nullable values through the Arrow path, so a
frame hashes the same whether it was read from CSV, Parquet or built from a dict.
Storage choices that are not content hash equal: a RangeIndex and the same integers
materialised. A Categorical's category order is content, ordered or not: it decides its
``.codes``, ``.categories`` and how it sorts. A subclass of DataFrame or Series adds its
type and the attributes it declares (``_metadata``) or sets beyond a plain frame's.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from . import _numpy
from .encoder import Encoder, Unhashable, type_name
from .values import encode

_STEP = 1 << 16  # rows per temporary (codes remapped, index compared to a range)


def _arrow_chunks(arr: object) -> Iterator[object]:
    """An extension array as Arrow chunks: Arrow-backed ones as they are, others
    (nullable ints, python strings) converted a bounded slice at a time."""
    import pyarrow as pa

    from ._arrow import PIECE

    if isinstance(arr, pd.arrays.ArrowExtensionArray):
        col = arr.__arrow_array__()
        yield from col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        return
    for start in range(0, len(arr), PIECE):
        col = arr[start : start + PIECE].__arrow_array__()
        yield from col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def encode_values(arr: object, enc: Encoder) -> None:
    """Feed a pandas array (``Series.array`` / ``Index.array``)."""
    if isinstance(arr, pd.Categorical):
        enc.tag(b"pd.Categorical")
        enc.int(int(arr.ordered))
        enc.value_at(".categories", arr.categories)
        enc.int(len(arr))
        _numpy.feed_buffer(np.asarray(arr.codes), enc)
        return
    asi8 = getattr(arr, "asi8", None)
    if asi8 is not None:  # datetime / timedelta / period, tz-aware or not: int64 ticks
        enc.tag(b"pd.i8")
        enc.int(len(asi8))
        _numpy.feed_buffer(asi8, enc)
        return
    if type(arr) is pd.arrays.NumpyExtensionArray:  # not StringArray, its subclass
        enc.value(arr.to_numpy())
        return
    if getattr(arr, "__arrow_array__", None) is not None:
        from ._arrow import encode_chunks

        typ = arr[:0].__arrow_array__().type
        encode_chunks(_arrow_chunks(arr), typ, enc)
        return
    enc.value(np.asarray(arr, dtype=object))


_PLAIN_STATE = frozenset(vars(pd.DataFrame())) | frozenset(vars(pd.Series(dtype=float)))


def _subclass(obj: pd.DataFrame | pd.Series, base: type, enc: Encoder) -> None:
    """A subclass of DataFrame/Series: its type, and the state it adds to a plain one."""
    tp = type(obj)
    if tp is base:
        return
    enc.tag(b"sub:" + type_name(tp).encode())
    extra = {k: v for k, v in vars(obj).items() if k not in _PLAIN_STATE}
    for name in getattr(obj, "_metadata", ()):
        extra[name] = getattr(obj, name, None)
    enc.value_at(".<subclass state>", extra)


@encode.register(pd.DataFrame)
def _frame(df: pd.DataFrame, enc: Encoder) -> None:
    _subclass(df, pd.DataFrame, enc)
    enc.tag(b"pd.DataFrame")
    enc.int(df.shape[0])
    enc.int(df.shape[1])
    enc.value_at(".columns", df.columns)
    enc.value_at(".index", df.index)
    for i, name in enumerate(df.columns):
        col = df.iloc[:, i]
        enc.text(str(col.dtype))
        try:
            encode_values(col.array, enc)
        except Unhashable as e:
            e.path.append(f"[{name!r}]")
            raise


@encode.register(pd.Series)
def _series(s: pd.Series, enc: Encoder) -> None:
    _subclass(s, pd.Series, enc)
    enc.tag(b"pd.Series")
    enc.value_at(".name", s.name)
    enc.text(str(s.dtype))
    enc.value_at(".index", s.index)
    encode_values(s.array, enc)


def _as_range(idx: pd.Index) -> tuple[int, int, int] | None:
    """(length, first, step) when an index holds exactly the integers of a range."""
    if isinstance(idx, pd.RangeIndex):
        return len(idx), idx.start, idx.step
    if idx.dtype != np.int64 or type(idx.array) is not pd.arrays.NumpyExtensionArray:
        return None
    v = idx.to_numpy()
    n = len(v)
    if n < 2:
        return (n, int(v[0]), 1) if n else (0, 0, 1)
    first, step = int(v[0]), int(v[1]) - int(v[0])
    if step == 0:
        return None
    for i in range(0, n, _STEP):
        piece = v[i : i + _STEP]
        if not np.array_equal(piece, first + step * np.arange(i, i + len(piece), dtype=np.int64)):
            return None
    return n, first, step


@encode.register(pd.Index)
def _index(idx: pd.Index, enc: Encoder) -> None:
    if isinstance(idx, pd.MultiIndex):
        enc.tag(b"pd.MultiIndex")
        enc.value_at(".names", list(idx.names))
        enc.int(idx.nlevels)
        for level in range(idx.nlevels):
            values = idx.get_level_values(level)
            enc.text(str(values.dtype))
            encode_values(values.array, enc)
        return
    as_range = _as_range(idx)
    if as_range is not None:  # RangeIndex(3) and Index([0, 1, 2]) hold the same labels
        n, first, step = as_range
        enc.tag(b"pd.Index[range]")
        enc.value_at(".name", idx.name)
        enc.int(n)
        enc.int(first if n else 0)
        enc.int(step if n > 1 else 1)
        return
    enc.tag(b"pd.Index")
    enc.value_at(".name", idx.name)
    enc.text(str(idx.dtype))
    encode_values(idx.array, enc)


@encode.register(pd.Categorical)
def _categorical(c: pd.Categorical, enc: Encoder) -> None:
    encode_values(c, enc)


@encode.register(pd.api.extensions.ExtensionArray)
def _extension_array(a: object, enc: Encoder) -> None:
    enc.tag(b"pd.array")
    enc.text(str(a.dtype))
    encode_values(a, enc)


@encode.register(type(pd.NaT))
@encode.register(type(pd.NA))
def _missing(v: object, enc: Encoder) -> None:
    enc.tag(b"pd." + repr(v).encode())


@encode.register(pd.api.extensions.ExtensionDtype)
def _ext_dtype(v: object, enc: Encoder) -> None:
    enc.tag(b"pd.dtype")
    enc.text(str(v))
    categories = getattr(v, "categories", None)
    if categories is not None:
        enc.value_at(".categories", categories)
        enc.int(int(bool(v.ordered)))


@encode.register(pd.Timedelta)
def _pd_timedelta(v: pd.Timedelta, enc: Encoder) -> None:
    enc.tag(b"pd.Timedelta")
    enc.int(v.value)  # nanoseconds whatever the unit: 1 s in "s" and in "ns" are equal
