"""value <-> bytes. Tables as Parquet (zstd), small JSON-able values as JSON, the rest joblib.

Frames of plain numeric columns (numpy bool, int, uint, float; numeric or range index) go
to Arrow IPC, uncompressed: their buffers are written as they are, zero-copy, so a save
costs what writing the bytes costs. zstd gains little on such data (about 10% on float
features, with byte-stream-split) and costs most of the save: 1.7 s of 2.0 s for 800 MB.

A codec writes to a file object and reads back from an in-memory buffer (the one whose
checksum was just verified), so an object is read from disk exactly once.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from .faithful import Unfaithful, check_frame, check_table

JSON_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Codec:
    name: str
    suffix: str
    write: Callable[[Any, Any], None]
    read: Callable[[Any], Any]
    executes_code: bool = False
    """Reading runs code the bytes name (pickle): with a signing key, only signed objects are read."""


def _reader(buf: Any) -> Any:
    import pyarrow as pa

    return pa.BufferReader(buf if isinstance(buf, pa.Buffer) else pa.py_buffer(buf))


# -- parquet -------------------------------------------------------------------------
def _write_table(table: Any, f: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Float columns: byte-stream-split encoding, no dictionary. Dictionary encoding gains
    # nothing on measured floats and BYTE_STREAM_SPLIT lets zstd find the redundancy in
    # exponents and high mantissa bytes (measured on 1e6 x 20 floats: 10% smaller, faster
    # to write and to read). "item", not "element", names list children so lists come back
    # as the same type.
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    others = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(
        table,
        f,
        compression="zstd",
        use_compliant_nested_type=False,
        use_dictionary=others,
        use_byte_stream_split=floats or False,
    )


def _read_table(buf: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(_reader(buf))


def _write_arrow(table: Any, f: Any) -> None:
    check_table(table, _write_table)
    _write_table(table, f)


def _frame_to_table(df: Any) -> Any:
    """``df`` as an Arrow table in which a float NaN stays NaN, bit for bit.

    ``Table.from_pandas`` turns NaN into null, and null comes back as the canonical NaN,
    but the NaN numpy computes (0/0, inf - inf, sqrt(-1) on x86) has its sign bit set: the
    frame would come back with other bits, so another fingerprint."""
    import numpy as np
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=None)
    columns = [(i, dtype, lambda i=i: df.iloc[:, i]) for i, dtype in enumerate(df.dtypes)]
    index = [c for c in table.schema.pandas_metadata.get("index_columns", []) if isinstance(c, str)]
    for level, name in enumerate(index):
        values = df.index.get_level_values(level)
        columns.append((table.schema.get_field_index(name), values.dtype, lambda v=values: v))
    for i, dtype, values in columns:
        if isinstance(dtype, np.dtype) and dtype.kind == "f" and table.column(i).null_count:
            table = table.set_column(i, table.field(i), pa.array(values().to_numpy(), from_pandas=False))
    return table


def _write_frame(df: Any, f: Any) -> None:
    table = _frame_to_table(df)
    check_frame(df, table, _frame_to_table, _write_table)
    _write_table(table, f)


# -- arrow ipc (numeric frames) ------------------------------------------------------
_NUMERIC_KINDS = frozenset("biuf")


def is_numeric_frame(df: Any) -> bool:
    """True when every column and index level of ``df`` is a numpy bool/int/uint/float."""
    import numpy as np
    import pandas as pd

    def numeric(dtype: Any) -> bool:
        return isinstance(dtype, np.dtype) and dtype.kind in _NUMERIC_KINDS

    index = df.index
    levels = list(index.dtypes) if isinstance(index, pd.MultiIndex) else [index.dtype]
    return len(df.columns) > 0 and all(numeric(d) for d in df.dtypes) and all(numeric(d) for d in levels)


def _numeric_table(df: Any) -> Any:
    """``df`` (a numeric frame) as an Arrow table, zero-copy and bit for bit.

    ``Table.from_pandas`` scans every float column for NaN to turn it into null (0.6 s for
    800 MB, as long as writing the file); ``from_pandas=False`` arrays take the buffers as
    they are, so NaN stays NaN with its sign and payload. The schema and its pandas metadata
    (column labels, index) come from ``Schema.from_pandas``, which reads dtypes, not data."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(df, preserve_index=None)
    index = [c for c in schema.pandas_metadata.get("index_columns", []) if isinstance(c, str)]
    arrays = [pa.array(df.iloc[:, i].to_numpy(), from_pandas=False) for i in range(len(df.columns))]
    arrays += [pa.array(df.index.get_level_values(level).to_numpy(), from_pandas=False) for level in range(len(index))]
    if len(arrays) != len(schema) or any(a.type != t for a, t in zip(arrays, schema.types)):
        raise Unfaithful("its columns do not map one to one onto Arrow columns")
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_ipc(table: Any, f: Any) -> None:
    import pyarrow as pa

    with pa.ipc.new_file(f, table.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
        writer.write_table(table)


def _read_ipc(buf: Any) -> Any:
    import pyarrow as pa

    return pa.ipc.open_file(_reader(buf)).read_all()


def _write_numeric_frame(df: Any, f: Any) -> None:
    if not is_numeric_frame(df):
        raise Unfaithful("not a frame of numpy numeric columns")
    table = _numeric_table(df)
    check_frame(df, table, _numeric_table, _write_ipc, _read_ipc)
    _write_ipc(table, f)


def _read_numeric_frame(buf: Any) -> Any:
    return _read_ipc(buf).to_pandas()


def _read_frame(buf: Any) -> Any:
    return _read_table(buf).to_pandas()


def _write_series(s: Any, f: Any) -> None:
    if type(s.name) not in (type(None), bool, int, float, str):  # JSON keeps these exactly
        raise Unfaithful(f"a series name of type {type(s.name).__name__} does not survive Parquet metadata")
    frame = s.to_frame(name="__series__")
    table = _frame_to_table(frame)
    check_frame(frame, table, _frame_to_table, _write_table)
    meta = dict(table.schema.metadata or {})
    meta[b"pipeline.series_name"] = json.dumps({"name": s.name}).encode()
    _write_table(table.replace_schema_metadata(meta), f)


def _read_series(buf: Any) -> Any:
    table = _read_table(buf)
    name = json.loads(table.schema.metadata[b"pipeline.series_name"])["name"]
    return table.to_pandas()["__series__"].rename(name)


# -- json ----------------------------------------------------------------------------
def _is_jsonable(v: Any, depth: int = 0) -> bool:
    """True when JSON round-trips ``v`` exactly (types included)."""
    if depth > 32:
        return False
    tp = type(v)
    if v is None or tp in (bool, int, str):
        return True
    if tp is float:
        return True
    if tp is list:
        return all(_is_jsonable(x, depth + 1) for x in v)
    if tp is dict:
        return all(type(k) is str and _is_jsonable(x, depth + 1) for k, x in v.items())
    return False


def _write_json(v: Any, f: Any) -> None:
    f.write(json.dumps(v, allow_nan=True, separators=(",", ":")).encode())


def _read_json(buf: Any) -> Any:
    return json.loads(bytes(buf))


# -- joblib --------------------------------------------------------------------------
STRIDED_MAX_BYTES = 16 << 20
"""A non-contiguous array larger than this sends its value to joblib's own pickler, which
writes it in chunks (the C pickler would first copy it whole)."""


class _Strided(Exception):
    pass


def _write_pickle(v: Any, f: Any) -> None:
    """The C pickler (protocol 5: a contiguous array's buffer goes to the file in one write,
    uncopied), a stream ``joblib.load`` reads as it reads its own; 10-15x faster than
    joblib's pure-Python pickler on a model of many small attributes (a checkpoint, a trial)."""
    _pickler()(f, protocol=5).dump(v)


@functools.cache
def _pickler() -> type:
    import pickle

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj).__name__ == "ndarray" and obj.nbytes > STRIDED_MAX_BYTES:
                flags = obj.flags
                if not (flags.c_contiguous or flags.f_contiguous):
                    raise _Strided(f"a non-contiguous array of {obj.nbytes} bytes")
            return NotImplemented

    return Pickler


def _write_joblib(v: Any, f: Any) -> None:
    import joblib

    joblib.dump(v, f)


def _read_joblib(buf: Any) -> Any:
    import joblib

    return joblib.load(io.BytesIO(buf) if isinstance(buf, bytes) else _reader(buf))


def preload() -> None:
    """Import the codecs' libraries now. A background writer must not import them lazily:
    at interpreter exit (a program that ends while a checkpoint write is in flight) joblib's
    import fails ("can't register atexit after shutdown")."""
    import joblib  # noqa: F401
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401


class Pickled:
    """A value already written by the pickle codec (``pickled``): its bytes, byte for byte the
    object ``PICKLE`` would write of the value, saved as that object (codec ``joblib``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<pickled value, {len(self.data)} bytes>"


def pickled(value: Any, *, limit: int | None = None) -> Pickled | None:
    """``value`` as the pickle codec writes it, when that is the codec it is saved with (None:
    another codec, or the C pickler refuses it and joblib's would write it). A snapshot a
    background checkpoint write takes: the bytes serve as the copy later training steps cannot
    touch (cheaper than a deep copy), and the writer then only hashes and writes them.
    ``limit``: None too when the bytes would be more (pickling stops as soon as they are)."""
    if candidates(value)[0] is not PICKLE:
        return None
    buf = io.BytesIO() if limit is None else _Bounded(limit)
    try:
        _write_pickle(value, buf)
    except Exception:  # (_Strided, _Bounded's limit, or what only joblib's pickler takes: written later, as before)
        return None
    return Pickled(buf.getvalue())


class _Bounded(io.BytesIO):
    """A BytesIO that refuses to hold more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, b: Any) -> int:
        if self.tell() + memoryview(b).nbytes > self._limit:
            raise OverflowError(f"more than {self._limit} bytes")
        return super().write(b)


def _write_pickled(v: Pickled, f: Any) -> None:
    f.write(v.data)


PARQUET_FRAME = Codec("parquet-pandas", "parquet", _write_frame, _read_frame)
ARROW_FRAME = Codec("arrow-pandas", "arrow", _write_numeric_frame, _read_numeric_frame)
PARQUET_SERIES = Codec("parquet-series", "parquet", _write_series, _read_series)
PARQUET_TABLE = Codec("parquet-arrow", "parquet", _write_arrow, _read_table)
JSON = Codec("json", "json", _write_json, _read_json)
JOBLIB = Codec("joblib", "joblib", _write_joblib, _read_joblib, executes_code=True)
PICKLE = Codec("joblib", "joblib", _write_pickle, _read_joblib, executes_code=True)
"""The joblib codec written by the C pickler (tried first; joblib's pickler when it refuses)."""
PICKLED = Codec("joblib", "joblib", _write_pickled, _read_joblib, executes_code=True)
"""The joblib codec of a value pickled beforehand (``Pickled``): its bytes as they are."""
CODECS = {c.name: c for c in (PARQUET_FRAME, ARROW_FRAME, PARQUET_SERIES, PARQUET_TABLE, JSON, JOBLIB)}


def candidates(value: Any, *, small_frames: bool = False) -> list[Codec]:
    """Codecs to try for ``value``, best first; joblib is always the last resort.
    ``small_frames``: numeric frames as Parquet (compressed) rather than Arrow IPC."""
    if type(value) is Pickled:
        return [PICKLED]
    mod = type(value).__module__.partition(".")[0]
    if mod == "pandas":
        import pandas as pd

        if type(value) is pd.DataFrame:
            if is_numeric_frame(value) and not small_frames:
                return [ARROW_FRAME, PARQUET_FRAME, PICKLE, JOBLIB]
            return [PARQUET_FRAME, PICKLE, JOBLIB]
        if type(value) is pd.Series:
            return [PARQUET_SERIES, PICKLE, JOBLIB]
    if mod == "pyarrow":
        import pyarrow as pa

        if isinstance(value, pa.Table):
            return [PARQUET_TABLE, PICKLE, JOBLIB]
    if _is_jsonable(value) and _json_small(value):
        return [JSON]
    return [PICKLE, JOBLIB]


def _json_small(v: Any) -> bool:
    if type(v) is float and not math.isfinite(v):
        return True
    if type(v) in (list, dict):
        return len(json.dumps(v, allow_nan=True)) <= JSON_MAX_BYTES
    return True
