"""The checkpoint store: round-trips, layout, verification, corruption, bad locations.

Round-trips and corruption run on a real local directory and on fsspec's in-memory
filesystem (the parametrised ``store`` fixture). Bad locations use real read-only
and full filesystems (bind mounts, a small tmpfs) where the machine allows mounting.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import subprocess
import time
import warnings
from collections import OrderedDict, namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline import IntegrityError, Manifest, StageCache, Store, StoreError, fingerprint, materialize
from pipeline.store.local import LocalBackend
from pipeline.store.tree import leaves

# -- helpers -----------------------------------------------------------------------------


def raw_bytes(store: Store, rel: str) -> bytes:
    return bytes(store._backend.read(rel))


def write_raw(store: Store, rel: str, data: bytes) -> None:
    """Overwrite a file in place, bypassing the store's atomic write (as bit rot would)."""
    if isinstance(store._backend, LocalBackend):
        Path(store._backend.root, rel).write_bytes(data)
    else:
        store._backend.fs.pipe_file(f"{store._backend.root}/{rel}", data)


def flip_byte(store: Store, rel: str) -> None:
    data = bytearray(raw_bytes(store, rel))
    data[len(data) // 2] ^= 0xFF
    write_raw(store, rel, bytes(data))


def object_files(store: Store) -> list[str]:
    return sorted(r for r in store._backend.list("objects") if not r.startswith("objects/tmp/"))


def object_rel(leaf: dict) -> str:
    suffix = {"json": "json", "joblib": "joblib", "arrow-pandas": "arrow"}.get(leaf.codec, "parquet")
    return f"objects/{leaf.object[:2]}/{leaf.object[2:]}.{suffix}"


def commit(store: Store, value, stage: str = "s", key: str = "xxh3:" + "ab" * 16) -> Manifest:
    m = Manifest(stage=stage, key=key, outputs=store.save(value), created=dt.datetime.now(dt.UTC).isoformat())
    store.commit(m)
    return m


def assert_same(a, b) -> None:
    """Same type and same content, recursively (frames, arrays, models, plain values)."""
    a, b = materialize(a), materialize(b)  # a stage hit is lazy (pipeline.lazy): compare the values
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (pd.DataFrame, pd.Series)):
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, check_exact=True, check_column_type="equiv", check_freq=False)
        else:
            pd.testing.assert_series_equal(a, b, check_exact=True, check_freq=False)
        assert fingerprint(a) == fingerprint(b)
    elif isinstance(a, pa.Table):
        assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif hasattr(a, "get_params"):  # an estimator: same params and same fitted state
        assert fingerprint(a) == fingerprint(b)
    else:
        assert a == b


# -- values ------------------------------------------------------------------------------

N = 50
NEG_NAN = np.array([0xFFF8000000000000], dtype=np.uint64).view(np.float64)  # 0/0 on x86
_rng = np.random.default_rng(7)


def _frames() -> dict[str, pd.DataFrame]:
    r = np.random.default_rng(1)
    return {
        "numpy-columns": pd.DataFrame(
            {
                "i": r.integers(-5, 5, N),
                "f": r.standard_normal(N),
                "f32": r.standard_normal(N).astype("float32"),
                "u8": r.integers(0, 255, N).astype("uint8"),
                "b": r.random(N) > 0.5,
                "s": [f"row{i}" for i in range(N)],
                "nan": np.where(r.random(N) > 0.7, np.nan, 1.0),
            }
        ),
        "arrow-columns": pd.DataFrame(
            {
                "i": pd.array([1, None, 3] * 10, dtype="int64[pyarrow]"),
                "s": pd.array(["a", None, "ccc"] * 10, dtype="string[pyarrow]"),
                "f": pd.array([0.5, None, -1.0] * 10, dtype="float32[pyarrow]"),
                "t": pd.array(
                    [pd.Timestamp("2024-01-01", tz="UTC"), None, pd.Timestamp("2025-06-30", tz="UTC")] * 10
                ).astype("timestamp[us, tz=UTC][pyarrow]"),
                "d": pd.array([dt.date(2024, 1, 1), None, dt.date(1999, 12, 31)] * 10, dtype="date32[pyarrow]"),
            }
        ),
        "nullable-columns": pd.DataFrame(
            {
                "I": pd.array([1, None, 3] * 5, dtype="Int64"),
                "B": pd.array([True, None, False] * 5, dtype="boolean"),
                "F": pd.array([0.25, None, 2.0] * 5, dtype="Float64"),
            }
        ),
        "categorical": pd.DataFrame(
            {
                "c": pd.Categorical(["lo", "hi", None, "mid"] * 5, categories=["lo", "mid", "hi"], ordered=True),
                "u": pd.Categorical(list("abab") * 5),
            }
        ),
        "tz-aware": pd.DataFrame(
            {
                "paris": pd.date_range("2024-03-30", periods=N, freq="37min", tz="Europe/Paris"),
                "utc_us": pd.date_range("2024-01-01", periods=N, freq="s", tz="UTC", unit="us"),
                "naive": pd.date_range("2000-01-01", periods=N, freq="D"),
                "delta": pd.to_timedelta(np.arange(N), unit="ms"),
            }
        ),
        "multiindex": pd.DataFrame(
            {"v": np.arange(24.0)},
            index=pd.MultiIndex.from_product(
                [["a", "b"], [3, 1, 2], [True, False], ["x", "y"]], names=["k", "n", "b", None]
            ),
        ),
        "multiindex-columns": pd.DataFrame(
            np.arange(12).reshape(3, 4),
            columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")], names=["grp", "sub"]),
        ),
        "non-default-index": pd.DataFrame({"v": [3, 1, 2]}, index=pd.Index([30, 10, 20], name="id")),
        "string-index": pd.DataFrame({"v": [1.5, 2.5]}, index=pd.Index(["x", "y"], name="name")),
        "datetime-index": pd.DataFrame(
            {"v": range(5)}, index=pd.date_range("2024", periods=5, freq="h", tz="Asia/Tokyo")
        ),
        "range-index-step": pd.DataFrame({"v": range(4)}, index=pd.RangeIndex(10, 18, 2)),
        "integer-column-labels": pd.DataFrame({0: [1, 2], 1: [3.0, 4.0]}),
        "empty": pd.DataFrame(),
        "no-rows": pd.DataFrame({"a": pd.Series([], dtype="float32"), "s": pd.Series([], dtype="str")}),
        "period-interval": pd.DataFrame(
            {"p": pd.period_range("2024-01", periods=3, freq="M"), "iv": pd.interval_range(0, 3)}
        ),
        "bytes": pd.DataFrame({"b": [b"x", b"", None]}),
        # NaN with its sign bit set (what 0/0 gives on x86) past the probed first rows, -0.0,
        # and a float index with NaN: the bits must come back, or the fingerprint changes
        "computed-nan": pd.DataFrame(
            {"r": np.concatenate([np.ones(100), NEG_NAN.repeat(3), [-0.0, np.nan, 0.0]])},
            index=pd.Index(np.concatenate([np.arange(105.0), NEG_NAN]), name="f"),
        ),
        # plain numpy numbers of every width, past the probed first rows: Arrow IPC
        "numeric-dtypes": pd.DataFrame(
            {
                **{t: np.iinfo(t).max - np.arange(100, dtype=t) for t in ("int8", "int16", "int32", "int64")},
                **{t: np.iinfo(t).max - np.arange(100, dtype=t) for t in ("uint8", "uint16", "uint32", "uint64")},
                "f16": np.linspace(-1, 1, 100).astype("float16"),
                "f32": np.concatenate([np.ones(97), [np.nan, -np.inf, -0.0]]).astype("float32"),
                "f64": np.concatenate([np.ones(96), NEG_NAN, [np.nan, np.inf, -0.0]]),
                "b": np.arange(100) % 3 == 0,
            }
        ),
        "numeric-multiindex": pd.DataFrame(
            {"v": np.arange(6.0)},
            index=pd.MultiIndex.from_arrays([[1, 1, 2, 2, 3, 3], [0.5, -0.0, 0.5, 1.5, 2.5, 3.5]], names=["n", None]),
        ),
        "numeric-no-rows": pd.DataFrame({"a": np.array([], dtype="float32"), "b": np.array([], dtype="uint16")}),
        # Parquet would change these (dtype, categories, unit, element types): they must
        # still come back exactly, by way of joblib (pandas 2 keeps object strings in Parquet).
        "object-strings-with-none": pd.DataFrame({"o": pd.Series(["a", None, "c"], dtype=object)}),
        "object-strings-with-nan": pd.DataFrame({"s": pd.Series(["a", np.nan, "c"], dtype=object)}),
        "integer-categories": pd.DataFrame({"c": pd.Categorical([3, 1, 3, 2])}),
        "datetime-seconds": pd.DataFrame({"t": pd.date_range("2024", periods=3, freq="D").astype("datetime64[s]")}),
        "list-column": pd.DataFrame({"l": [[1, 2], [], [3]]}),
        "dict-column": pd.DataFrame({"d": [{"a": 1}, {"b": 2}]}),
        "decimal-column": pd.DataFrame({"d": [decimal.Decimal("1.10"), decimal.Decimal("2.5")]}),
        # pyarrow writes this one but cannot read it back (dtype name not understood)
        "list-arrow-column": pd.DataFrame(
            {"l": pd.array([[1, 2], [], None], dtype=pd.ArrowDtype(pa.list_(pa.int64())))}
        ),
        "python-strings": pd.DataFrame({"s": pd.array(["a", None], dtype="string[python]")}),
        "mixed-objects": pd.DataFrame({"m": [1, "a", None, 2.5]}),
        "duplicate-columns": pd.DataFrame([[1, 2]], columns=["a", "a"]),
    }


FRAMES = _frames()
PARQUET_FRAMES = list(FRAMES)[: list(FRAMES).index("numeric-no-rows") + 1]
ARROW_FRAMES = [  # numpy numbers only, in columns and index: Arrow IPC, the rest of PARQUET_FRAMES Parquet
    "multiindex-columns",
    "non-default-index",
    "range-index-step",
    "integer-column-labels",
    "computed-nan",
    "numeric-dtypes",
    "numeric-multiindex",
    "numeric-no-rows",
]


@pytest.mark.parametrize("name", list(FRAMES))
def test_frame_round_trip_and_fingerprint(store, name):
    df = FRAMES[name]
    tree = store.save(df)
    back = store.load(tree)
    if name == "python-strings":  # comes back as pyarrow-backed strings: same values, same fingerprint
        pd.testing.assert_frame_equal(df, back, check_dtype=False)
    else:
        assert_same(df, back)
    assert fingerprint(back) == fingerprint(df) == tree.fingerprint  # downstream keys depend on it
    if name in PARQUET_FRAMES:
        assert tree.codec == ("arrow-pandas" if name in ARROW_FRAMES else "parquet-pandas")
    for i, dtype in enumerate(df.dtypes):  # floats bit for bit: NaN sign and payload, -0.0
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            bits = f"u{dtype.itemsize}"
            np.testing.assert_array_equal(df.iloc[:, i].to_numpy().view(bits), back.iloc[:, i].to_numpy().view(bits))


def test_frames_go_to_parquet_zstd(store):
    tree = store.save(FRAMES["numpy-columns"])
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(pa.BufferReader(raw_bytes(store, object_rel(tree)))).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}


def test_numeric_frames_go_to_uncompressed_arrow_ipc_and_come_back_writable(store):
    df = FRAMES["numeric-dtypes"]
    tree = store.save(df)
    data = raw_bytes(store, object_rel(tree))
    assert data[:6] == b"ARROW1" and tree.bytes == len(data) and object_rel(tree).endswith(".arrow")
    assert len(data) >= df.memory_usage(index=False).sum() - df["b"].nbytes  # buffers as they are, no codec
    back = store.load(tree)
    back.iloc[0, 0] = 0  # a loaded frame is the caller's to change: its arrays are not the file's
    back["f64"] += 1.0
    assert back.iloc[0, 0] == 0 and back["f64"].iloc[0] == 2.0 and store.load(tree).equals(df)


def test_a_numeric_frame_saved_as_parquet_before_still_loads(store):
    """Objects written before numeric frames went to Arrow IPC: the same leaf still reads back."""
    import io

    from pipeline.store import codecs
    from pipeline.store.tree import Leaf

    df = FRAMES["numeric-dtypes"]
    buf = io.BytesIO()
    codecs.PARQUET_FRAME.write(df, buf)
    oid = xxhash.xxh3_128_hexdigest(buf.getvalue())
    rel = f"objects/{oid[:2]}/{oid[2:]}.parquet"
    if isinstance(store._backend, LocalBackend):
        Path(store._backend.root, rel).parent.mkdir(parents=True, exist_ok=True)
    write_raw(store, rel, buf.getvalue())
    back = store.load(Leaf(oid, "parquet-pandas", len(buf.getvalue())))
    assert_same(df, back)
    assert store.verify().corrupt == 0


SERIES = {
    "named": pd.Series([1.0, 2.0, np.nan], name="x"),
    "unnamed": pd.Series([1, 2, 3]),
    "int-name": pd.Series(["a", "b"], name=3),
    "index-and-name": pd.Series([1, 2], index=pd.Index(["a", "b"], name="k"), name="v"),
    "categorical": pd.Series(pd.Categorical(["a", "b", "a"]), name="c"),
    "tz": pd.Series(pd.date_range("2024", periods=3, tz="US/Eastern"), name="t"),
    "tuple-name": pd.Series([1, 2], name=("a", "b")),
    "timestamp-name": pd.Series([1, 2], name=pd.Timestamp("2024-01-01")),
}


@pytest.mark.parametrize("name", list(SERIES))
def test_series_round_trip(store, name):
    s = SERIES[name]
    tree = store.save(s)
    back = store.load(tree)
    assert_same(s, back)
    assert back.name == s.name and type(back.name) is type(s.name)
    assert tree.codec == ("joblib" if name in ("tuple-name", "timestamp-name") else "parquet-series")


TABLES = {
    "flat": pa.table(
        {
            "i": pa.array([1, None, 3], pa.int32()),
            "s": pa.array(["a", "b", None], pa.large_string()),
            "t": pa.array([0, 1, None], pa.timestamp("ms", tz="Europe/Berlin")),
            "dur": pa.array([1, 2, 3], pa.duration("s")),
        }
    ),
    "nested": pa.table(
        {
            "l": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "st": pa.array([{"a": 1, "b": "x"}, {"a": 2, "b": None}, None]),
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    ),
    "metadata": pa.table({"a": [1, 2]}).replace_schema_metadata({"origin": "test"}),
    "chunked": pa.concat_tables([pa.table({"a": [1.0]}), pa.table({"a": [2.0, 3.0]})]),
    # Parquet would change these (seconds unit, date64, duplicate names): joblib keeps them.
    "timestamp-seconds": pa.table({"t": pa.array([0, 1], pa.timestamp("s"))}),
    "date64": pa.table({"d": pa.array([0, 86_400_000], pa.date64())}),
    "duplicate-names": pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_arrow_table_round_trip(store, name):
    t = TABLES[name]
    tree = store.save(t)
    back = store.load(tree)
    assert_same(t, back)
    assert fingerprint(back) == fingerprint(t)
    parquet = name in ("flat", "nested", "metadata", "chunked")
    assert tree.codec == ("parquet-arrow" if parquet else "joblib")


ARRAYS = {
    "float64": _rng.standard_normal((20, 3)),
    "fortran-int32": np.asfortranarray(np.arange(12, dtype="int32").reshape(3, 4)),
    "bool-0d": np.array(True),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "datetime": np.array(["2024-01-01", "NaT"], dtype="datetime64[s]"),
    "strings": np.array(["a", "bcd"]),
    "large": _rng.random(300_000),  # > 1 MB: read through the memory-mapped path
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_numpy_round_trip(store, name):
    a = ARRAYS[name]
    tree = store.save(a)
    back = store.load(tree)
    assert_same(a, back)
    assert back.flags.f_contiguous == a.flags.f_contiguous
    assert tree.codec == "joblib"


def _fitted_models():
    r = np.random.default_rng(3)
    X, y = r.standard_normal((60, 4)), r.integers(0, 2, 60)
    return {
        "logistic": LogisticRegression(C=0.5).fit(X, y),
        "pipeline": make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, y.astype(float)),
        "unfitted": Ridge(alpha=3.0),
    }, X


@pytest.mark.parametrize("name", ["logistic", "pipeline", "unfitted"])
def test_sklearn_round_trip(store, name):
    models, X = _fitted_models()
    model = models[name]
    tree = store.save(model)
    back = store.load(tree)
    assert type(back) is type(model) and repr(back) == repr(model)
    assert fingerprint(back) == fingerprint(model) == tree.fingerprint
    if name != "unfitted":
        np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert tree.codec == "joblib"


JSON_VALUES = {
    "metrics": {"acc": 0.91, "loss": 1e-300, "n": 12, "ok": True, "none": None, "name": "é✓"},
    "nested": {"a": [1, [2, [3, {"b": []}]]], "big": 2**80, "neg": -0.0},
    "non-finite": {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
    "list": [1, "two", 3.0, None, False],
    "scalar-int": 7,
    "scalar-str": "hello",
    "none": None,
    "empty-dict": {},
}


@pytest.mark.parametrize("name", list(JSON_VALUES))
def test_json_round_trip(store, name):
    v = JSON_VALUES[name]
    tree = store.save(v)
    back = store.load(tree)
    assert_same(v, back)
    assert tree.codec == "json"
    assert fingerprint(back) == fingerprint(v)


def test_tuples_and_lists_come_back_as_they_were(store):
    v = {"as_list": [1, 2], "as_tuple": (1, 2), "nested": [1, (2, 3)], "tuple_of_lists": ([1], [2])}
    back = store.load(store.save(v))
    assert type(back["as_list"]) is list and type(back["as_tuple"]) is tuple
    assert back["nested"] == [1, (2, 3)] and type(back["nested"][1]) is tuple
    assert type(back["tuple_of_lists"]) is tuple and all(type(x) is list for x in back["tuple_of_lists"])
    assert fingerprint(back) == fingerprint(v)
    assert store.load(store.save(())) == () and store.load(store.save([])) == []
    assert type(store.load(store.save((1,)))) is tuple


Point = namedtuple("Point", "x y")


def test_non_string_keys_and_dict_subclasses_keep_their_type(store):
    for v in ({1: "a", 2: "b"}, OrderedDict(b=1, a=2), Point(1, 2), {"k": (1, 2)}, [(1, 2)]):
        back = store.load(store.save(v))
        assert type(back) is type(v) and back == v


def test_multi_output_tuple_each_part_with_its_own_codec(store):
    models, _ = _fitted_models()
    value = (FRAMES["categorical"], ARRAYS["float64"], {"acc": 0.5}, models["logistic"], SERIES["named"])
    tree = store.save(value)
    assert [leaf.codec for leaf in tree.items] == ["parquet-pandas", "joblib", "json", "joblib", "parquet-series"]
    back = store.load(tree)
    assert type(back) is tuple and len(back) == 5
    for a, b in zip(value[:3] + value[4:], back[:3] + back[4:]):
        assert_same(a, b)
    assert fingerprint(back) == fingerprint(value) == tree.fingerprint


def test_multi_output_dict_each_part_with_its_own_codec(store):
    models, _ = _fitted_models()
    value = {"train": FRAMES["tz-aware"], "model": models["pipeline"], "metrics": {"r2": 0.3}, "table": TABLES["flat"]}
    tree = store.save(value)
    assert {k: t.codec for k, t in tree.entries} == {
        "train": "parquet-pandas",
        "model": "joblib",
        "metrics": "json",
        "table": "parquet-arrow",
    }
    back = store.load(tree)
    assert list(back) == list(value)
    assert_same(value["train"], back["train"])
    assert_same(value["table"], back["table"])
    assert back["metrics"] == {"r2": 0.3}
    assert fingerprint(back) == fingerprint(value)
    nested = store.load(store.save((value["metrics"], {"inner": (FRAMES["empty"], 1)})))
    assert nested[1]["inner"][1] == 1 and type(nested[1]["inner"]) is tuple


def test_a_dict_that_is_plain_json_is_one_object(store):
    tree = store.save({"a": [1, 2], "b": {"c": None}})
    assert tree.codec == "json"


def test_a_value_nothing_can_save_is_one_clear_error(store):
    import threading

    with pytest.raises(StoreError, match="cannot save the result of type _thread.lock"):
        store.save(threading.Lock(), what="the result")
    assert store.verify().temp_files == 0


# -- layout ------------------------------------------------------------------------------


def test_objects_are_named_by_the_checksum_of_their_bytes(store):
    m = commit(store, (FRAMES["numpy-columns"], {"a": 1}, ARRAYS["large"]))
    for leaf in leaves(m.outputs):
        rel = object_rel(leaf)
        assert rel.startswith(f"objects/{leaf.object[:2]}/") and len(Path(rel).stem) == 30
        data = raw_bytes(store, rel)
        assert xxhash.xxh3_128_hexdigest(data) == leaf.object and len(data) == leaf.bytes
    assert Store.manifest_path("s", m.key) == f"stages/s/{m.key.removeprefix('xxh3:')}.json"
    assert "stages/s/" + m.key.removeprefix("xxh3:") + ".json" in list(store._backend.list("stages"))
    assert json.loads(raw_bytes(store, "store.json")) == {"format": 1}


def test_equal_values_are_stored_once(store):
    a = store.save(FRAMES["tz-aware"])
    b = store.save(FRAMES["tz-aware"].copy())
    assert a.object == b.object
    assert len(object_files(store)) == 1
    assert store.verify().temp_files == 0


def test_saving_an_existing_object_again_makes_it_young_for_gc(store):
    """gc deletes unreferenced objects past a grace period: an old orphan that a new save
    deduplicates against must look new again, or gc could delete it before the manifest lands."""
    first = store.save(ARRAYS["float64"])
    rel = object_rel(first)
    if isinstance(store._backend, LocalBackend):
        path = Path(store._backend.root, rel)
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 7200))
        old = path.stat().st_mtime
    else:
        old = store._backend.fs.info(f"{store._backend.root}/{rel}")["created"]
    time.sleep(0.01)
    assert store.save(ARRAYS["float64"].copy()).object == first.object
    if isinstance(store._backend, LocalBackend):
        assert path.stat().st_mtime > old + 7000
    else:
        assert store._backend.fs.info(f"{store._backend.root}/{rel}")["created"] > old
    assert len(object_files(store)) == 1 and store.verify().temp_files == 0


def test_manifest_commit_reopen_and_checkpoints(store):
    m = commit(store, FRAMES["multiindex"], stage="train/fit model")
    ck = Manifest(stage="train/fit model", key=m.key, outputs=store.save({"epoch": 3}), step=3, kind="checkpoint")
    store.commit(ck)
    again = Store(store.url) if isinstance(store._backend, LocalBackend) else store
    assert again.manifest("train/fit model", m.key) == m
    assert again.manifest("train/fit model", m.key, step=3) == ck
    assert [x.key for x in again.manifests("train/fit model")] == [m.key]
    assert again.latest("train/fit model") == m and again.stages() == ["train/fit model"]
    assert any(r.startswith("checkpoints/") and r.endswith("/3.json") for r in again._backend.list("checkpoints"))
    report = again.verify()
    assert (report.manifests, report.ok, report.corrupt, report.missing, report.bad_manifests) == (2, 2, 0, 0, 0)


def test_a_key_cannot_escape_the_store(store):
    rel = Store.manifest_path("../../etc", "../../passwd")
    assert ".." not in rel.split("/") and rel.startswith("stages/")


def test_memory_stores_are_separate():
    a, b = Store("memory://sep-a"), Store("memory://sep-b")
    commit(a, {"x": 1})
    assert list(b.manifests()) == [] and len(list(a.manifests())) == 1


def test_a_directory_of_another_format_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "store.json").write_text('{"format": 99}')
    with pytest.raises(StoreError, match="format"):
        Store(tmp_path / "other")


def test_file_url_is_the_local_backend(tmp_path):
    s = Store(f"file://{tmp_path}/st")
    assert isinstance(s._backend, LocalBackend)
    commit(s, {"a": 1})
    assert (tmp_path / "st" / "store.json").is_file()


# -- verify and corruption ---------------------------------------------------------------


def test_verify_counts_ok_corrupt_missing_quarantined(store):
    m1 = commit(store, (FRAMES["numpy-columns"], {"a": 1}), key="xxh3:" + "01" * 16)
    m2 = commit(store, ARRAYS["float64"], key="xxh3:" + "02" * 16)
    m3 = commit(store, {"b": 2}, key="xxh3:" + "03" * 16)
    store.save(ARRAYS["strings"])  # written, never committed: an orphan
    report = store.verify()
    assert (report.manifests, report.ok, report.corrupt, report.missing, report.quarantined) == (3, 4, 0, 0, 0)
    assert report.orphans == 1 and report.clean

    flip_byte(store, object_rel(m1.outputs[0]))
    store._backend.delete(object_rel(m2.outputs))
    write_raw(store, Store.manifest_path("s", m3.key), b'{"format": 1, "stage": "s"')  # torn
    with pytest.warns(UserWarning, match="unreadable"):
        report = store.verify()
    assert (report.manifests, report.ok, report.corrupt, report.missing) == (2, 1, 1, 1)
    assert report.bad_manifests == 1 and report.quarantined == 2 and not report.clean
    quarantined = list(store._backend.list("quarantine"))
    assert any(m1.outputs[0].object in q for q in quarantined)
    report = store.verify()  # the corrupt object is gone now: it is missing, not corrupt
    assert (report.corrupt, report.missing, report.bad_manifests) == (0, 2, 0)


def test_verify_finds_an_object_grown_or_shrunk_and_names_its_users(store):
    """verify reads each object at the size its manifest records: one of another size (a
    byte appended, a byte cut) is read whole all the same, and is corrupt."""
    grown = commit(store, {"g": 1}, key="xxh3:" + "04" * 16)
    shrunk = commit(store, ARRAYS["float64"], key="xxh3:" + "05" * 16)
    commit(store, {"g": 1}, key="xxh3:" + "06" * 16)  # the same object as ``grown``: a second user
    write_raw(store, object_rel(grown.outputs), raw_bytes(store, object_rel(grown.outputs)) + b" ")
    write_raw(store, object_rel(shrunk.outputs), raw_bytes(store, object_rel(shrunk.outputs))[:-1])
    report = store.verify()
    assert (report.ok, report.corrupt, report.missing, report.quarantined) == (0, 2, 0, 2)
    named = {p.what: p for p in report.problems}
    assert {p.kind for p in report.problems} == {"corrupt"}
    assert sorted(k for _s, k, _ in named[grown.outputs.object].used_by) == ["xxh3:" + "04" * 16, "xxh3:" + "06" * 16]
    assert [k for _s, k, _ in named[shrunk.outputs.object].used_by] == ["xxh3:" + "05" * 16]


def test_local_read_many_reads_a_file_whole_whatever_size_it_is_expected_to_have(tmp_path):
    backend = LocalBackend(str(tmp_path))
    for name, data in (("a", b"12345"), ("b", b"x" * 70_000), ("c", b"")):
        (tmp_path / name).write_bytes(data)
    hints = {"a": 5, "b": 3, "c": 10}  # right, too small, too large
    got = {rel: bytes(buf) for rel, buf in backend.read_many(["a", "b", "c"], hints)}
    assert got == {"a": b"12345", "b": b"x" * 70_000, "c": b""}


def test_manifest_with_a_bad_reference_is_a_bad_manifest(store):
    m = commit(store, {"a": 1})
    doc = json.loads(raw_bytes(store, Store.manifest_path(m.stage, m.key)))
    doc["outputs"]["codec"] = "pickle5000"
    write_raw(store, Store.manifest_path(m.stage, m.key), json.dumps(doc).encode())
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.manifest(m.stage, m.key) is None
    assert store.verify().bad_manifests == 0  # already quarantined by the read above


def test_a_corrupt_object_is_never_returned(store):
    m = commit(store, FRAMES["numpy-columns"])
    flip_byte(store, object_rel(m.outputs))
    with pytest.raises(IntegrityError, match="corrupt"):
        store.load(m.outputs)
    assert object_rel(m.outputs) not in object_files(store)
    assert len(list(store._backend.list("quarantine"))) == 1


def make_features(rows: int, log: str) -> pd.DataFrame:
    """A stage that leaves a line in ``log`` each time it really runs."""
    with open(log, "a") as f:
        f.write("ran\n")
    r = np.random.default_rng(rows)
    return pd.DataFrame({"x": r.standard_normal(rows), "c": pd.Categorical(r.choice(["a", "b"], rows))})


def make_parts(rows: int, log: str) -> tuple:
    with open(log, "a") as f:
        f.write("ran\n")
    return np.arange(rows), {"rows": rows}


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_object_makes_the_stage_recompute(store, tmp_path, damage):
    log = tmp_path / "runs.log"
    stage = StageCache(store).wrap(make_features, ignore=["log"])
    expected = stage(2000, str(log))
    assert runs(log) == 1
    assert_same(stage(2000, str(log)), expected)
    assert runs(log) == 1
    m = store.manifest(stage.name, stage.key(2000, str(log)).key)
    rel = object_rel(m.outputs)
    if damage == "flip":
        flip_byte(store, rel)
    elif damage == "truncate":
        write_raw(store, rel, raw_bytes(store, rel)[:-100])
    else:
        store._backend.delete(rel)
    with pytest.warns(UserWarning, match="recomputing") as caught:
        result = materialize(stage(2000, str(log)))  # a hit is lazy: the damage shows when it is read
    assert runs(log) == 2  # recomputed, not served wrong data, not failed
    assert_same(result, expected)
    if damage != "delete":
        assert any(m.outputs.object in q for q in store._backend.list("quarantine"))
        assert any("corrupt" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(stage(2000, str(log)), expected)  # healed: a plain hit again
    assert runs(log) == 2
    assert store.verify().clean


def test_a_damaged_part_of_a_multi_output_recomputes_the_whole(store, tmp_path):
    log = tmp_path / "runs.log"
    stage = StageCache(store).wrap(make_parts, ignore=["log"])
    stage(10, str(log))
    m = store.manifest(stage.name, stage.key(10, str(log)).key)
    flip_byte(store, object_rel(m.outputs[1]))
    with pytest.warns(UserWarning, match="recomputing"):
        arr, meta = stage(10, str(log))
    assert runs(log) == 2 and meta == {"rows": 10} and arr.tolist() == list(range(10))


def test_an_unreadable_manifest_makes_the_stage_recompute(store, tmp_path):
    log = tmp_path / "runs.log"
    stage = StageCache(store).wrap(make_features, ignore=["log"])
    expected = stage(30, str(log))
    write_raw(store, Store.manifest_path(stage.name, stage.key(30, str(log)).key), b"\x00garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert_same(stage(30, str(log)), expected)
    assert runs(log) == 2 and store.verify().clean


# -- bad locations -----------------------------------------------------------------------


def _mount(*args: str) -> str | None:
    """Run mount; None on success, else why it failed."""
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_store_path_that_is_a_file(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    with pytest.raises(StoreError) as e:
        Store(f)
    assert str(f) in str(e.value) and "is a file" in str(e.value) and "choose another" in str(e.value)
    with pytest.raises(StoreError, match="cannot create store directory") as e:
        Store(f / "sub")
    assert str(f / "sub") in str(e.value)
    assert f.read_text() == "x"


def test_unwritable_location_under_sys():
    target = Path("/sys/pipeline-store-test")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this machine")
    with pytest.raises(StoreError) as e:
        Store(target)
    assert str(target) in str(e.value) and "writable" in str(e.value)
    assert not target.exists()


@pytest.fixture
def read_only_view(tmp_path):
    """``(src, ro)``: a store directory and a read-only bind mount of it."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    why = _mount("--bind", str(src), str(ro))
    if why:
        pytest.skip(f"cannot bind-mount a read-only view (needs mount privileges): {why}")
    try:
        why = _mount("-o", "remount,bind,ro", str(ro))
        if why:
            pytest.skip(f"cannot remount read-only: {why}")
        yield src, ro
    finally:
        _umount(ro)


def test_unwritable_store_directory(read_only_view):
    src, ro = read_only_view
    m = commit(Store(src), FRAMES["categorical"])
    with pytest.raises(OSError):  # really read-only, even for root
        (ro / "probe").write_text("x")
    with pytest.raises(StoreError) as e:
        Store(ro)
    assert str(ro) in str(e.value) and "not writable" in str(e.value) and "--store" in str(e.value)
    with pytest.raises(StoreError) as e:
        Store(ro / "new")
    assert str(ro / "new") in str(e.value) and "Read-only file system" in str(e.value)
    store = Store(src)  # left consistent
    assert store.verify().clean and store.verify().temp_files == 0
    assert_same(store.load(store.manifest(m.stage, m.key).outputs), FRAMES["categorical"])


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: a real full disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    why = _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))
    if why:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs mount privileges): {why}")
    try:
        yield mnt
    finally:
        _umount(mnt)


def test_full_disk(small_disk, tmp_path):
    root = small_disk / "store"
    store = Store(root)
    m = commit(store, {"kept": True}, key="xxh3:" + "0f" * 16)
    big = np.random.default_rng(0).random(1_000_000)  # 8 MB on a 2 MB disk
    with pytest.raises(StoreError) as e:
        store.save(big)
    msg = str(e.value)
    assert str(root) in msg and "No space left" in msg and "free disk space" in msg

    log = tmp_path / "runs.log"
    stage = StageCache(store).wrap(make_parts, ignore=["log"])
    with pytest.raises(StoreError, match="No space left"):
        stage(1_000_000, str(log))

    filler = small_disk / "filler"  # now fill the disk so that even a manifest can't be written
    with open(filler, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with pytest.raises(StoreError, match="No space left") as e:
        store.commit(Manifest(stage="s", key="xxh3:" + "1f" * 16, outputs=m.outputs))
    assert str(root) in str(e.value)

    report = store.verify()  # left consistent: old entry intact, nothing half-written
    assert report.clean and report.manifests == 1 and report.temp_files == 0
    assert store.load(store.manifest("s", m.key).outputs) == {"kept": True}
    filler.unlink()
    assert stage(1000, str(log))[1] == {"rows": 1000} and store.verify().clean


# -- property: any frame comes back with the same fingerprint ----------------------------

_KINDS = ("float", "float32", "int", "bool", "str", "category", "tz", "Int64", "arrow-str", "timedelta", "object")


def _column(kind: str, rng: np.random.Generator, n: int) -> pd.Series:
    holes = rng.random(n) < 0.2
    if kind in ("float", "float32"):
        specials = np.array([np.nan, NEG_NAN[0], np.inf, -np.inf, -0.0, 0.0, 1e-310])
        v = np.where(rng.random(n) < 0.3, specials[rng.integers(0, len(specials), n)], rng.standard_normal(n))
        return pd.Series(v.astype(kind.replace("float", "float64") if kind == "float" else "float32"))
    if kind == "int":
        return pd.Series(rng.integers(-(2**62), 2**62, n))
    if kind == "bool":
        return pd.Series(rng.random(n) < 0.5)
    words = np.array(["", "a", "ß", "x y", "0"])[rng.integers(0, 5, n)].astype(object)
    if kind == "str":
        return pd.Series(np.where(holes, None, words), dtype="str")
    if kind == "category":
        return pd.Series(pd.Categorical(np.where(holes, None, words), ordered=bool(rng.integers(2))))
    if kind == "tz":
        t = pd.Series(pd.to_datetime(rng.integers(0, 2**40, n), unit="ms", utc=True).tz_convert("America/Chicago"))
        return t.where(~holes)
    if kind == "Int64":
        return pd.Series(pd.array(np.where(holes, None, rng.integers(-5, 5, n)), dtype="Int64"))
    if kind == "arrow-str":
        return pd.Series(pd.array(np.where(holes, None, words), dtype="string[pyarrow]"))
    if kind == "timedelta":
        return pd.Series(pd.to_timedelta(rng.integers(-(10**12), 10**12, n), unit="ns")).where(~holes)
    return pd.Series(np.where(holes, None, words), dtype=object)


@settings(max_examples=int(os.environ.get("STORE_PROPERTY_EXAMPLES", "60")), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 150),
    kinds=st.lists(st.sampled_from(_KINDS), min_size=1, max_size=4),
    index=st.sampled_from(["range", "shifted-range", "int", "str", "datetime", "multi"]),
)
def test_any_frame_comes_back_with_the_same_fingerprint(seed, rows, kinds, index):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"{k}{i}": _column(k, rng, rows) for i, k in enumerate(kinds)})
    if index == "shifted-range":
        df.index = pd.RangeIndex(7, 7 + 3 * rows, 3)
    elif index == "int":
        df.index = pd.Index(rng.permutation(rows), name="id")
    elif index == "str":
        df.index = pd.Index([f"r{i}" for i in range(rows)], dtype="str")
    elif index == "datetime":
        df.index = pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC", name="t")
    elif index == "multi":
        df.index = pd.MultiIndex.from_arrays(
            [rng.integers(0, 3, rows), [f"k{i}" for i in range(rows)]], names=["a", "b"]
        )
    back = PROPERTY_STORE.load(tree := PROPERTY_STORE.save(df))
    assert fingerprint(back) == fingerprint(df) == tree.fingerprint, tree.codec
    pd.testing.assert_frame_equal(
        back, df, check_exact=True, check_column_type="equiv", check_dtype=False, check_freq=False
    )


PROPERTY_STORE = Store("memory://property-store")


_NUMERIC_KINDS = ("float", "float32", "int", "bool")


@settings(max_examples=int(os.environ.get("STORE_PROPERTY_EXAMPLES", "60")), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 300),
    kinds=st.lists(st.sampled_from(_NUMERIC_KINDS), min_size=1, max_size=5),
    index=st.sampled_from(["range", "shifted-range", "int", "float-nan"]),
    stride=st.sampled_from([1, 2, 3]),
)
def test_any_numeric_frame_comes_back_bit_for_bit_from_arrow(seed, rows, kinds, index, stride):
    """Numeric frames take the zero-copy Arrow path: NaN sign and payload, -0.0, subnormals,
    every dtype and index come back exactly, also from strided slices of a bigger frame."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"{k}{i}": _column(k, rng, rows * stride) for i, k in enumerate(kinds)}).iloc[::stride]
    if index == "shifted-range":
        df.index = pd.RangeIndex(7, 7 + 3 * len(df), 3)
    elif index == "int":
        df.index = pd.Index(rng.permutation(len(df)), name="id")
    elif index == "float-nan":
        df.index = pd.Index(np.where(rng.random(len(df)) < 0.2, NEG_NAN[0], rng.standard_normal(len(df))))
    back = PROPERTY_STORE.load(tree := PROPERTY_STORE.save(df))
    assert tree.codec == "arrow-pandas"
    assert fingerprint(back) == fingerprint(df) == tree.fingerprint
    pd.testing.assert_frame_equal(back, df, check_exact=True, check_freq=False)
    for i, dtype in enumerate(df.dtypes):
        if dtype.kind == "f":
            bits = f"u{dtype.itemsize}"
            np.testing.assert_array_equal(df.iloc[:, i].to_numpy().view(bits), back.iloc[:, i].to_numpy().view(bits))
    if index == "float-nan":
        np.testing.assert_array_equal(df.index.to_numpy().view("u8"), back.index.to_numpy().view("u8"))
