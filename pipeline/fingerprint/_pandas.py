"""pandas handlers: frames hashed column by column over their buffers.

A column is its name, its dtype and its values; numpy-backed values go through the
numpy buffer path, Arrow-backed and nullable values through the Arrow path, so a
frame hashes the same whether it was read from CSV, Parquet or built from a dict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _arrow, _numpy
from .encoder import Encoder, Unhashable
from .values import encode


def encode_values(arr: object, enc: Encoder) -> None:
    """Feed a pandas array (``Series.array`` / ``Index.array``)."""
    if isinstance(arr, pd.Categorical):
        enc.tag(b"pd.Categorical")
        enc.int(int(arr.ordered))
        enc.value_at(".categories", arr.categories)
        _numpy.feed_buffer(np.asarray(arr.codes), enc)
        return
    asi8 = getattr(arr, "asi8", None)
    if asi8 is not None:  # datetime / timedelta / period, tz-aware or not: int64 ticks
        enc.tag(b"pd.i8")
        _numpy.feed_buffer(asi8, enc)
        return
    if isinstance(arr, pd.arrays.NumpyExtensionArray):
        enc.value(arr.to_numpy())
        return
    to_arrow = getattr(arr, "__arrow_array__", None)
    if to_arrow is not None:
        import pyarrow as pa

        col = to_arrow()
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        _arrow.encode_chunks(chunks, col.type, enc)
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


@encode.register(pd.Index)
def _index(idx: pd.Index, enc: Encoder) -> None:
    if isinstance(idx, pd.RangeIndex):
        enc.tag(b"pd.RangeIndex")
        enc.value_at(".name", idx.name)
        for n in (idx.start, idx.stop, idx.step):
            enc.int(n)
        return
    if isinstance(idx, pd.MultiIndex):
        enc.tag(b"pd.MultiIndex")
        enc.value_at(".names", list(idx.names))
        enc.int(idx.nlevels)
        for level in range(idx.nlevels):
            values = idx.get_level_values(level)
            enc.text(str(values.dtype))
            encode_values(values.array, enc)
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


@encode.register(pd.Timedelta)
def _pd_timedelta(v: pd.Timedelta, enc: Encoder) -> None:
    enc.tag(b"pd.Timedelta")
    enc.int(v.value)
