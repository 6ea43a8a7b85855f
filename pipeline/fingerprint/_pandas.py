"""pandas handlers: frames hashed column by column over their buffers.

A column is its name, its dtype and its values; numpy-backed values go through the
numpy buffer path, Arrow-backed and nullable values through the Arrow path, so a
frame hashes the same whether it was read from CSV, Parquet or built from a dict.
Storage choices that are not content hash equal: a RangeIndex and the same integers
materialised, an unordered Categorical whatever the order of its categories.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from . import _numpy
from .encoder import Encoder, Unhashable
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


def _canonical_codes(cat: pd.Categorical) -> tuple[pd.Index, Iterator[np.ndarray]]:
    """(categories, codes in pieces). An unordered categorical's category order is a
    storage choice: categories are sorted and the codes remapped, a piece at a time."""
    categories, codes = cat.categories, np.asarray(cat.codes)
    if not cat.ordered and len(categories) > 1 and not categories.is_monotonic_increasing:
        try:
            order = np.asarray(categories.argsort())
        except TypeError:  # categories that don't sort (mixed types): keep their order
            order = None
        if order is not None:
            remap = np.empty(len(categories) + 1, codes.dtype)
            remap[order] = np.arange(len(categories), dtype=codes.dtype)
            remap[-1] = -1  # code -1 (missing) indexes the last slot
            pieces = (remap.take(codes[i : i + _STEP]) for i in range(0, len(codes), _STEP))
            return categories.take(order), pieces
    return categories, iter([codes])


def encode_values(arr: object, enc: Encoder) -> None:
    """Feed a pandas array (``Series.array`` / ``Index.array``)."""
    if isinstance(arr, pd.Categorical):
        enc.tag(b"pd.Categorical")
        enc.int(int(arr.ordered))
        categories, pieces = _canonical_codes(arr)
        enc.value_at(".categories", categories)
        enc.int(len(arr))
        for piece in pieces:
            _numpy.feed_buffer(piece, enc)
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


@encode.register(pd.DataFrame)
def _frame(df: pd.DataFrame, enc: Encoder) -> None:
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
