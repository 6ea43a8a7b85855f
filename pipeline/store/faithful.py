"""Will a table come back from Parquet (or Arrow IPC) exactly as it went in? Checked before writing it.

Parquet changes a few things silently: object columns of strings come back as ``str``
(pandas 3), ``datetime64[s]`` as ``[ms]``, integer categories as plain integers, lists as
arrays, structs grow the keys of other rows, ``NaN`` in an object column comes back as
``None``. A frame whose reloaded fingerprint differs would give every downstream stage a
different key on a hit than on a miss, so such values are refused here and go to joblib,
which round-trips exactly.

Two checks, both cheap: object columns may only hold plain strings or bytes (missing
values as ``None``); and the first rows, written to Parquet in memory and read back, must
fingerprint the same as before (dtypes, categories, index, column labels, values).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import FingerprintError
from ..fingerprint import fingerprint

PROBE_ROWS = 64


class Unfaithful(ValueError):
    """The value would not come back from Parquet as it went in."""


def check_frame(
    df: Any,
    table: Any,
    to_table: Callable[[Any], Any],
    write: Callable[[Any, Any], None],
    read: Callable[[Any], Any] | None = None,
) -> None:
    """Raise Unfaithful unless ``df`` -> ``table`` -> file -> pandas gives ``df`` back
    (the file as ``write`` makes it and ``read`` reads it; Parquet by default)."""
    _check_object_columns(df, table)
    head = df.iloc[:PROBE_ROWS]
    probe = to_table(head)
    if probe.schema.remove_metadata() != table.schema.remove_metadata():
        raise Unfaithful("column types of the first rows differ from the whole frame")
    _same(head, _round_trip(probe, write, read).to_pandas())


def check_table(table: Any, write: Callable[[Any, Any], None]) -> None:
    """Raise Unfaithful unless an Arrow table comes back from Parquet with the same schema."""
    probe = table.slice(0, PROBE_ROWS)
    try:
        back = _round_trip(probe, write)
    except Exception as e:  # e.g. duplicate column names: Parquet writes them, can't read them
        raise Unfaithful(f"Parquet cannot read it back ({e})") from None
    if not back.schema.equals(probe.schema, check_metadata=True):
        raise Unfaithful(f"schema changes through Parquet: {probe.schema.types} -> {back.schema.types}")


def _round_trip(table: Any, write: Callable[[Any, Any], None], read: Callable[[Any], Any] | None = None) -> Any:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    write(table, sink)
    return (read or _read_parquet)(sink.getvalue())


def _read_parquet(buf: Any) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(buf))


def _same(before: Any, after: Any) -> None:
    try:
        same = fingerprint(after) == fingerprint(before)
    except FingerprintError as e:
        raise Unfaithful(f"cannot be fingerprinted to check it ({e})") from None
    if not same:
        changed = [f"{c}: {before[c].dtype} -> {after[c].dtype}" for c in _changed_dtypes(before, after)]
        raise Unfaithful("it changes through Parquet" + (f" ({', '.join(changed)})" if changed else ""))


def _changed_dtypes(before: Any, after: Any) -> list[Any]:
    if list(before.columns) != list(after.columns) or before.columns.has_duplicates:
        return []
    return [c for c in before.columns if str(before[c].dtype) != str(after[c].dtype)]


def _check_object_columns(df: Any, table: Any) -> None:
    """Object columns (and index levels) may hold only plain strings or bytes, None for missing."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    def is_object(dtype: Any) -> bool:
        return isinstance(dtype, np.dtype) and dtype.kind == "O"

    exact = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.null())
    arrays = [(table.schema.field(i), df.iloc[:, i]) for i, dtype in enumerate(df.dtypes) if is_object(dtype)]
    index_fields = [c for c in table.schema.pandas_metadata.get("index_columns", []) if isinstance(c, str)]
    for level, name in enumerate(index_fields):
        values = df.index.get_level_values(level)
        if is_object(values.dtype):
            arrays.append((table.schema.field(name), values))
    for field, values in arrays:
        if field.type not in exact:
            raise Unfaithful(f"object column {field.name!r} holds {field.type}, which comes back changed")
        values = values.to_numpy()
        if any(values[i] is not None for i in np.flatnonzero(pd.isna(values))):
            raise Unfaithful(f"object column {field.name!r} has missing values other than None")
