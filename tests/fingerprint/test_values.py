"""Value fingerprints: equal content -> equal key, any difference -> a different key.

Property tests compare ``fingerprint`` against a small oracle of what "the same value"
means; a long-lived worker process with another ``PYTHONHASHSEED`` checks that keys
are the same in every process.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import io
import pickle
import socket
import struct
import subprocess
import sys
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.preprocessing import StandardScaler

from pipeline import FingerprintError
from pipeline.fingerprint import fingerprint, register

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fp(v):
    return fingerprint(v)


# -- the oracle: what "the same value" means for plain Python data --------------------
def oracle(x):
    t = type(x)
    if t is float:
        return ("float", struct.pack("<d", x))  # bitwise: -0.0 != 0.0, nan == nan
    if t is complex:
        return ("complex", struct.pack("<dd", x.real, x.imag))
    if t in (list, tuple):
        return (t.__name__, tuple(map(oracle, x)))
    if t is dict:
        return ("dict", frozenset((oracle(k), oracle(v)) for k, v in x.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(map(oracle, x)))
    return (t.__name__, x)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.complex_numbers(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(),
    st.timedeltas(),
)
keys = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.frozensets(keys, max_size=4),
        st.sets(keys, max_size=4),
    ),
    max_leaves=12,
)


def rebuilt(x):
    """The same value built another way: containers rebuilt, insertion orders reversed."""
    t = type(x)
    if t in (list, tuple):
        return t(rebuilt(v) for v in x)
    if t is dict:
        return {k: rebuilt(x[k]) for k in reversed(list(x))}
    if t in (set, frozenset):
        return t(sorted(x, key=repr, reverse=True))
    return pickle.loads(pickle.dumps(x))


@FAST
@given(values)
def test_equal_values_built_differently_hash_equal(v):
    assert fp(v) == fp(rebuilt(v))


@FAST
@given(values, values)
def test_fingerprints_agree_with_the_oracle(a, b):
    assert (fp(a) == fp(b)) == (oracle(a) == oracle(b))


@FAST
@given(st.dictionaries(st.text(max_size=4), st.integers(), min_size=2, max_size=8), st.randoms())
def test_dict_and_set_order_independent(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    assert fp(d) == fp(dict(items))
    assert fp(set(d)) == fp(set(k for k, _ in items))
    assert fp(frozenset(d)) != fp(set(d))  # ...but a set is not a frozenset


def test_scalars_of_different_type_never_collide():
    class UserId(int):
        pass

    class Color(enum.IntEnum):
        RED = 1

    family = [
        1,
        1.0,
        True,
        "1",
        b"1",
        bytearray(b"1"),
        1 + 0j,
        decimal.Decimal(1),
        np.int64(1),
        np.float64(1),
        np.int32(1),
        [1],
        (1,),
        {1},
        frozenset({1}),
        {1: None},
        UserId(1),
        Color.RED,
        None,
        0,
        False,
        "",
    ]
    assert len({fp(v) for v in family}) == len(family)


def test_containers_carry_their_structure():
    assert fp([[1, 2], [3]]) != fp([[1], [2, 3]])
    assert fp(["ab", "c"]) != fp(["a", "bc"])
    assert fp({"a": 1, "b": 2}) != fp({"a": 2, "b": 1})
    assert fp(collections.OrderedDict(a=1)) != fp({"a": 1})
    assert fp(range(3)) != fp([0, 1, 2])


def test_stdlib_scalars():
    assert fp(decimal.Decimal("1.0")) == fp(decimal.Decimal("1.00")) == fp(decimal.Decimal("1"))
    # beyond the default 28-digit context: exact, never rounded together
    assert fp(decimal.Decimal("1." + "0" * 40 + "1")) != fp(decimal.Decimal("1." + "0" * 40 + "2"))
    assert fp(decimal.Decimal("NaN")) != fp(decimal.Decimal("Infinity"))
    assert fp(dt.date(2024, 1, 2)) != fp(dt.datetime(2024, 1, 2))
    assert fp(dt.datetime(2024, 1, 2, tzinfo=dt.UTC)) != fp(dt.datetime(2024, 1, 2))
    assert fp(dt.timedelta(days=1)) == fp(dt.timedelta(hours=24))
    assert fp(pd.Timedelta(1, "s")) == fp(pd.Timedelta(1_000_000_000, "ns"))
    assert fp(memoryview(np.zeros(2))) != fp(memoryview(np.zeros(16, np.uint8)))
    assert fp(memoryview(b"abcd")[::2]) == fp(memoryview(b"ac"))


class Mode(enum.Enum):
    A = "a"
    B = "b"


class OtherMode(enum.Enum):
    A = "a"


def test_enums():
    assert fp(Mode.A) == fp(Mode("a"))
    assert fp(Mode.A) != fp(Mode.B)
    assert fp(Mode.A) != fp(OtherMode.A)
    assert fp(Mode.A) != fp("a")


@dataclasses.dataclass
class Config:
    lr: float
    layers: list


@dataclasses.dataclass
class OtherConfig:
    lr: float
    layers: list


class Model(pydantic.BaseModel):
    lr: float
    name: str = "m"


class OtherModel(pydantic.BaseModel):
    lr: float
    name: str = "m"


def test_dataclasses_and_pydantic():
    assert fp(Config(0.1, [1, 2])) == fp(Config(lr=0.1, layers=[1, 2]))
    assert fp(Config(0.1, [1, 2])) != fp(Config(0.1, [2, 1]))
    assert fp(Config(0.1, [])) != fp(OtherConfig(0.1, []))
    assert fp(Model(lr=0.1)) == fp(Model(name="m", lr=0.1))
    assert fp(Model(lr=0.1)) != fp(Model(lr=0.2))
    assert fp(Model(lr=0.1)) != fp(OtherModel(lr=0.1))


# -- files and directories ---------------------------------------------------------
def test_path_file_by_content_and_dir_by_tree(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x,y\n1,2\n")
    b.write_text("x,y\n1,2\n")
    assert fp(a) == fp(b)  # a file is its content
    b.write_text("x,y\n1,3\n")
    assert fp(a) != fp(b)

    for root in ("d1", "d2"):
        (tmp_path / root / "sub").mkdir(parents=True)
        (tmp_path / root / "sub" / "f.txt").write_text("hello")
        (tmp_path / root / "g.txt").write_text("world")
    assert fp(tmp_path / "d1") == fp(tmp_path / "d2")
    (tmp_path / "d2" / "sub" / "f.txt").rename(tmp_path / "d2" / "sub" / "h.txt")
    assert fp(tmp_path / "d1") != fp(tmp_path / "d2")  # names are part of the tree
    (tmp_path / "d2" / "sub" / "h.txt").rename(tmp_path / "d2" / "sub" / "f.txt")
    (tmp_path / "d2" / "g.txt").write_text("world!")
    assert fp(tmp_path / "d1") != fp(tmp_path / "d2")
    assert fp(tmp_path / "missing") != fp(tmp_path / "missing2")


# -- numpy ---------------------------------------------------------------------------
def test_numpy_dtype_and_shape_are_part_of_the_key():
    cases = [
        np.zeros(4, "int32"),
        np.zeros(2, "int64"),
        np.zeros((2, 2), "int32"),
        np.zeros(8, "int16"),
        np.zeros(4, "float32"),
        np.zeros(4, ">i4"),
        np.zeros((4, 1), "int32"),
        np.zeros(4, "uint32"),
    ]
    assert len({fp(a) for a in cases}) == len(cases)
    assert fp(np.float64(1.0)) != fp(np.float32(1.0)) != fp(1.0)
    assert fp(np.array("ab")) != fp(np.array(b"ab"))


numeric_arrays = hnp.arrays(
    dtype=st.sampled_from(["int8", "int32", "int64", "uint16", "float32", "float64", "complex64", "bool", "M8[s]"]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
)


@FAST
@given(numeric_arrays)
def test_numpy_layout_does_not_matter(a):
    assert fp(a) == fp(np.asfortranarray(a)) == fp(a.copy())
    big = np.zeros((a.shape[0] * 2, *a.shape[1:]), a.dtype)
    big[::2] = a
    view = big[::2]  # a strided view vs its copy
    assert fp(view) == fp(np.ascontiguousarray(view)) == fp(a)


@FAST
@given(numeric_arrays, st.sampled_from(["int16", "int64", "float64", "float32", "uint8"]))
def test_numpy_other_dtype_or_shape_differs(a, other):
    assume(np.dtype(other) != a.dtype and a.dtype.kind != "c")
    with np.errstate(invalid="ignore", over="ignore"):  # a lossy cast is the point here
        assert fp(a) != fp(a.astype(other))
    assert fp(a) != fp(a.reshape(*a.shape, 1))
    if a.ndim > 1:
        assert fp(a) != fp(a.reshape(-1))
    if a.ndim > 1 and a.shape[0] != a.shape[1]:
        assert fp(a) != fp(a.reshape(a.shape[1], a.shape[0], *a.shape[2:]))


def test_numpy_object_arrays_and_scalars():
    strs = np.array(["a", "bc", "", "é"], dtype=object)
    assert fp(strs) == fp(np.array(list(strs), dtype=object))
    assert fp(strs) != fp(np.array(["ab", "c", "", "é"], dtype=object))
    assert fp(np.array([1, "1"], dtype=object)) != fp(np.array(["1", "1"], dtype=object))
    assert fp(np.array([1, 2], dtype=object)) != fp(np.array([1, 2]))
    assert fp(np.ma.masked_array([1, 2], mask=[0, 1])) != fp(np.ma.masked_array([1, 2], mask=[1, 0]))
    assert fp(np.ma.masked_array([1, 5], mask=[0, 1])) == fp(np.ma.masked_array([1, 7], mask=[0, 1]))


def test_numpy_big_buffers_are_not_copied():
    a = np.random.default_rng(0).random((1000, 5000))  # 40 MB
    fortran, view = np.asfortranarray(a), a[:, ::2]
    tracemalloc.start()
    try:
        fp(a)
        contiguous_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert fp(fortran) == fp(a)
        assert fp(view) == fp(view.copy())
        strided_peak = tracemalloc.get_traced_memory()[1] - view.nbytes  # minus the test's own copy
    finally:
        tracemalloc.stop()
    assert contiguous_peak < 100_000
    assert strided_peak < a.nbytes / 8  # copied a bounded block at a time


# -- pandas ----------------------------------------------------------------------------
KINDS = ["int64", "float64", "str", "category", "datetime64[us]", "bool"]


@st.composite
def frames(draw):
    n = draw(st.integers(0, 8))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4))
    data = {}
    for i, kind in enumerate(kinds):
        if kind == "int64":
            col = draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))
        elif kind == "float64":
            col = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False).map(float), min_size=n, max_size=n))
        elif kind in ("str", "category"):
            col = draw(st.lists(st.sampled_from(["a", "b", "cc", "d e"]), min_size=n, max_size=n))
        elif kind == "bool":
            col = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        else:
            col = draw(st.lists(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1)), min_size=n, max_size=n))
            col = [d.replace(microsecond=0) for d in col]
        data[f"{kind}_{i}"] = pd.Series(col, dtype=kind)
    return pd.DataFrame(data)


def from_csv(df):
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    buf.seek(0)
    dtypes = {c: str(t) for c, t in df.dtypes.items() if not str(t).startswith("datetime")}
    dates = [c for c, t in df.dtypes.items() if str(t).startswith("datetime")]
    back = pd.read_csv(buf, dtype=dtypes, parse_dates=dates, keep_default_na=False)
    return back.astype(df.dtypes.to_dict())


@FAST
@given(frames())
def test_frame_from_csv_equals_frame_from_dict(df):
    assert fp(from_csv(df)) == fp(df)
    assert fp(df) == fp(df.copy(deep=True))
    assert fp(df) == fp(pd.DataFrame({c: df[c].to_list() for c in df}).astype(df.dtypes.to_dict()))


@FAST
@given(frames())
def test_frame_structure_is_part_of_the_key(df):
    first = df.columns[0]
    assert fp(df) != fp(df.rename(columns={first: first + "_"}))
    if len(df):  # (an empty index has no labels to differ in)
        assert fp(df) != fp(df.set_axis(pd.RangeIndex(1, len(df) + 1)))
    if len(df.columns) > 1:
        assert fp(df) != fp(df[list(reversed(df.columns))])
    if len(df):
        assert fp(df) != fp(df.iloc[:-1])
        assert fp(df) != fp(df.astype({first: "object"}))


def test_frame_index_and_dtype_variants():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    assert fp(df) == fp(df.set_axis(pd.Index([0, 1, 2])))  # RangeIndex vs the same ints
    assert fp(df) != fp(df.set_axis(pd.Index([0, 1, 3])))
    assert fp(df) != fp(df.set_axis(pd.Index([0, 1, 2], name="i")))
    assert fp(df) != fp(df.astype({"a": "float32"}))
    assert fp(df) != fp(df.astype({"a": "Float64"}))
    assert fp(df) != fp(df.astype({"b": "object"}))
    assert fp(df) != fp(df.astype({"b": "category"}))
    assert fp(df) != fp(df.T)
    assert fp(df) == fp(df.iloc[::-1].iloc[::-1])
    assert fp(df) == fp(pd.DataFrame(df.to_numpy(dtype=object), columns=df.columns).astype(df.dtypes.to_dict()))
    assert fp(df["a"]) != fp(df["a"].rename("z"))
    assert fp(df["a"]) != fp(df[["a"]])
    assert fp(df.columns) != fp(list(df.columns))


def test_string_storage_and_arrow_chunks_are_not_content():
    vals = ["a", None, "ccc", "é"]
    py = pd.Series(vals, dtype="string[python]")
    arrow = pd.Series(vals, dtype="string[pyarrow]")
    assert fp(py) == fp(arrow)  # same dtype ("string"), other storage
    chunked = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([["a", None], ["ccc", "é"]])))
    whole = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([["a", None, "ccc", "é"]])))
    assert fp(chunked) == fp(whole)
    assert fp(py) != fp(pd.Series(["a", None, "ccc", "e"], dtype="string[python]"))
    assert fp(pd.Series([1, None], dtype="Int64")) != fp(pd.Series([1, 0], dtype="Int64"))
    assert fp(pd.Series([1, None], dtype="Int64")) == fp(pd.Series([1, pd.NA], dtype="Int64"))


def test_categoricals():
    a = pd.Categorical(["x", "y", "x", None], categories=["y", "x"])
    b = pd.Categorical(["x", "y", "x", None], categories=["x", "y"])
    # the order of categories is behaviour, ordered or not: it decides .codes and sorting
    assert list(a.codes) != list(b.codes) and list(a.sort_values()) != list(b.sort_values())
    assert fp(a) != fp(b)
    assert fp(pd.Series(a)) != fp(pd.Series(b))
    assert fp(pd.Categorical(["a", "b"], categories=["a", "b"])) != fp(
        pd.Categorical(["a", "b"], categories=["b", "a"])
    )
    assert fp(a) == fp(pd.Categorical(["x", "y", "x", None], categories=["y", "x"]))
    ordered = [pd.Categorical(["x", "y"], categories=c, ordered=True) for c in (["x", "y"], ["y", "x"])]
    assert fp(ordered[0]) != fp(ordered[1])
    assert fp(a) != fp(pd.Categorical(["x", "y", "y", None]))
    assert fp(a) != fp(pd.Categorical(["x", "y", "x", None], categories=["x", "y", "z"]))
    assert fp(pd.CategoricalDtype(["a"], ordered=True)) != fp(pd.CategoricalDtype(["a"], ordered=False))


def test_multiindex():
    tuples = [("a", 1), ("a", 2), ("b", 1)]
    m1 = pd.MultiIndex.from_tuples(tuples, names=["k", "n"])
    m2 = pd.MultiIndex.from_arrays([["a", "a", "b"], [1, 2, 1]], names=["k", "n"])
    assert fp(m1) == fp(m2)
    assert fp(m1) != fp(m1.set_names(["k", "m"]))
    assert fp(m1) != fp(pd.MultiIndex.from_tuples(tuples[::-1], names=["k", "n"]))
    big = pd.MultiIndex.from_product([["a", "b", "c"], [1, 2]], names=["k", "n"])
    assert fp(big[[0, 2, 4]]) == fp(pd.MultiIndex.from_tuples([("a", 1), ("b", 1), ("c", 1)], names=["k", "n"]))
    df = pd.DataFrame({"v": [1, 2, 3]}, index=m1)
    assert fp(df) != fp(df.reset_index())


def test_frame_zero_copy_memory():
    n = 500_000
    df = pd.DataFrame({f"c{i}": np.arange(n, dtype="float64") * i for i in range(8)})  # 32 MB
    tracemalloc.start()
    try:
        fp(df)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.02 * df.memory_usage(deep=True).sum()


# -- pyarrow ---------------------------------------------------------------------------
def test_arrow_chunking_is_not_content():
    assert fp(pa.chunked_array([["a", "b"], ["c"]])) == fp(pa.chunked_array([["a"], ["b", "c"]]))
    assert fp(pa.chunked_array([[1, None], [3]])) == fp(pa.chunked_array([[1], [None, 3]]))
    t1 = pa.table({"a": [1, 2, 3], "s": ["x", None, "z"]})
    t2 = pa.concat_tables([t1.slice(0, 1), t1.slice(1)])
    assert t2.column("a").num_chunks == 2
    assert fp(t1) == fp(t2)
    assert fp(t1) != fp(t1.rename_columns(["a", "t"]))
    assert fp(t1) != fp(t1.select(["s", "a"]))
    assert fp(t1) != fp(t1.cast(pa.schema([("a", pa.int32()), ("s", pa.string())])))
    assert fp(t1) != fp(pa.record_batch(t1.to_pydict()))
    assert fp(pa.array([1, 2])) != fp(pa.array([1, 2], pa.int32()))
    assert fp(pa.array(["a"])) != fp(pa.array(["a"], pa.large_string()))


def test_arrow_text_across_pieces_chunks_offsets_and_views():
    """Text is fed as value ends counted from the column's first byte: zero-copy for one
    large_string chunk from offset 0, rebased for every other layout, the same stream."""
    from pipeline.fingerprint._arrow import PIECE

    words = [f"w{i % 97}" * (i % 5) for i in range(2 * PIECE + 123)]
    words[PIECE + 7] = None
    one = pa.chunked_array([pa.array(words, pa.large_string())])
    layouts = [
        pa.chunked_array([pa.array(words, pa.string())]),  # 32-bit offsets
        pa.chunked_array([pa.array(words[:1000], pa.large_string()), pa.array(words[1000:], pa.large_string())]),
        pa.chunked_array([pa.array(["pad"] + words, pa.large_string()).slice(1)]),  # offset != 0
        pa.chunked_array([pa.array(words, pa.string_view())]),
        pa.chunked_array([pa.array(words, pa.large_string()).dictionary_encode()]),
    ]
    for other in layouts:
        assert fp(other.cast(pa.large_string())) == fp(one)
        assert fp(pa.table({"s": other}).cast(pa.schema([("s", pa.large_string())]))) == fp(pa.table({"s": one}))
    moved = list(words)
    moved[3], moved[4] = moved[3] + moved[4][:1], moved[4][1:]  # same bytes, another split
    assert fp(pa.chunked_array([pa.array(moved, pa.large_string())])) != fp(one)
    assert fp(pd.Series(words, dtype="str")) == fp(pd.Series(words, dtype="str").iloc[::1].copy())


def test_arrow_values_under_nulls_are_not_content():
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    garbage = pa.Array.from_buffers(pa.int64(), 3, [validity, pa.py_buffer(np.array([1, 99, 3]).tobytes())])
    clean = pa.array([1, None, 3], pa.int64())
    assert fp(garbage) == fp(clean)
    dates = pa.array([dt.date(2020, 1, 1), None])
    assert fp(dates) == fp(pa.array([dt.date(2020, 1, 1), None]))
    assert fp(dates) != fp(pa.array([dt.date(2020, 1, 1), dt.date(1970, 1, 1)]))
    nested = pa.array([[1, 2], None, [3]])
    assert fp(nested) == fp(pa.chunked_array([[[1, 2]], [None, [3]]]).combine_chunks())
    assert fp(nested) != fp(pa.array([[1], [2], [3]]))
    dictionary = pa.array(["a", "b", "a"]).dictionary_encode()
    assert fp(pa.table({"c": dictionary})) != fp(pa.table({"c": pa.array(["a", "b", "a"])}))  # schema differs


# -- scikit-learn ----------------------------------------------------------------------
def test_sklearn_params_and_fitted_state():
    X = np.arange(20, dtype=float).reshape(10, 2)
    y = X @ [1.0, 2.0]
    assert fp(Ridge(alpha=1.0)) == fp(Ridge(alpha=1.0))
    assert fp(Ridge(alpha=1.0)) != fp(Ridge(alpha=2.0))
    assert fp(Ridge()) != fp(LinearRegression())
    fitted = Ridge().fit(X, y)
    assert fp(fitted) != fp(Ridge())
    assert fp(fitted) == fp(Ridge().fit(X, y))
    assert fp(fitted) != fp(Ridge().fit(X, y + 1))
    assert fp(StandardScaler().fit(X)) == fp(pickle.loads(pickle.dumps(StandardScaler().fit(X))))


def _forest(seed=0, n=3):
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).random((200, 4))
    return RandomForestClassifier(n, random_state=seed).fit(X, X[:, 0] > 0.5)


def test_a_forest_is_its_fitted_trees():
    forest = _forest()
    assert fp(forest) == fp(_forest())  # two fits with the same seed
    assert fp(forest) == fp(pickle.loads(pickle.dumps(forest)))
    assert fp(forest) != fp(_forest(seed=1))
    changed = pickle.loads(pickle.dumps(forest))
    changed.estimators_[1].tree_.threshold[0] += 1e-9  # one node of one tree (a writable view)
    assert changed.estimators_[1].tree_.threshold[0] != forest.estimators_[1].tree_.threshold[0]
    assert fp(changed) != fp(forest)
    changed = pickle.loads(pickle.dumps(forest))
    changed.estimators_[2].tree_.value[-1, 0, 0] += 1e-9  # one leaf value
    assert fp(changed) != fp(forest)
    changed = pickle.loads(pickle.dumps(forest))
    changed.estimators_[0].min_samples_leaf = 2  # a hyperparameter of one tree
    assert fp(changed) != fp(forest)


def test_a_tree_fast_path_writes_the_generic_stream():
    """The Tree handler joins its tokens into few updates: the stream it writes is the one
    the per-token calls write."""
    from pipeline.fingerprint._sklearn_tree import _tree
    from pipeline.fingerprint.encoder import Encoder
    from pipeline.fingerprint.values import encode, scalar_tokens

    tree = _forest(n=1).estimators_[0].tree_
    fast = Encoder(encode)
    _tree(tree, fast)
    _, (n_features, n_classes, n_outputs), state = tree.__reduce__()
    slow = Encoder(encode)
    slow.tag(b"sklearn.Tree")
    for n in (n_features, n_outputs, state["max_depth"], state["node_count"]):
        slow.int(n)
    for a in (n_classes, state["nodes"], state["values"]):
        encode(a, slow)
    assert fast.digest() == slow.digest()
    for v in (None, True, False, 0, -1, 2**70, 1.5, -0.0, "", "é\x00"):
        one, other = Encoder(encode), Encoder(encode)
        encode(v, one)
        other.update(scalar_tokens()[type(v)](v))
        assert one.digest() == other.digest(), v
    assert fp({"a": np.int64(3)}) != fp({"a": 3})


# -- unknown types, functions ----------------------------------------------------------
class Plain:
    def __init__(self, a):
        self.a = a


class Stateless:
    pass


class Items(collections.deque):
    pass


def test_unknown_types_walk_their_state():
    assert fp(Plain(1)) == fp(Plain(1))
    assert fp(Plain(1)) != fp(Plain(2))
    assert fp(Plain([1])) != fp(Plain((1,)))
    a, b = Items([1, 2]), Items([1, 3])
    a.tag = b.tag = "t"
    assert fp(a) != fp(b)  # what __reduce__ saves, not just an equal __dict__
    assert fp(collections.deque([1])) != fp(collections.deque([1], maxlen=3))


def test_a_stateless_instance_is_its_class_without_pickle_bytes():
    class Local:  # a local class: pickle can't even name it
        def run(self):
            return 1

    class Other:
        def run(self):
            return 2

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fp(Stateless()) == fp(Stateless())
        assert fp(Local()) == fp(Local())
    assert fp(Local()) != fp(Other())  # same shape, other code
    assert fp(Local()) != fp(Stateless())


def test_cycles_terminate_and_differ():
    a = [1]
    a.append(a)
    b = [2]
    b.append(b)
    assert fp(a) == fp(a) and fp(a) != fp(b)
    d = {"k": 1}
    d["self"] = d
    assert fp(d) == fp(d)
    p = Plain(None)
    p.a = p
    assert fp(p) == fp(p)
    shared = [1, 2]
    assert fp([shared, shared]) == fp([[1, 2], [1, 2]])  # sharing is not a cycle


def test_functions_hash_by_code():
    def f(x):
        return x + 1

    def g(x):
        return x + 2

    assert fp(f) == fp(f) and fp(f) != fp(g)
    assert fp(len) != fp(abs)


def test_register_a_handler():
    class Opaque:
        def __init__(self, key):
            self.key = key
            self.lock = threading.Lock()

    register(Opaque)(lambda o: o.key)
    assert fp(Opaque(1)) == fp(Opaque(1))
    assert fp(Opaque(1)) != fp(Opaque(2))
    assert fp(Opaque(1)) != fp(1)


# -- bad input ---------------------------------------------------------------------------
def _gen():
    yield 1


@pytest.mark.parametrize(
    "make, type_name",
    [
        (threading.Lock, "_thread.lock"),
        (_gen, "generator"),
        (lambda: socket.socket(), "socket.socket"),
        (lambda: open(__file__), "_io.TextIOWrapper"),
    ],
)
def test_unhashable_argument_names_its_path_and_type(make, type_name):
    bad = make()
    try:
        with pytest.raises(FingerprintError) as err:
            fingerprint({"opts": [1, {"inner": bad}]}, name="argument 'params'")
    finally:
        getattr(bad, "close", lambda: None)()
    msg = str(err.value)
    assert "argument 'params'['opts'][1]['inner']" in msg
    assert type_name in msg
    assert isinstance(err.value, TypeError)


def test_unhashable_in_frame_and_object_names_the_column_and_attribute():
    df = pd.DataFrame({"ok": [1, 2], "bad": [threading.Lock(), 1]})
    with pytest.raises(FingerprintError, match=r"df\['bad'\]\[0\] \(type _thread.lock\)"):
        fingerprint(df, name="df")
    with pytest.raises(FingerprintError, match=r"cfg\.__getstate__\(\)\['a'\]"):
        fingerprint(Plain(threading.Lock()), name="cfg")


# -- determinism across processes --------------------------------------------------------
WORKER = """
import pickle, sys
from pipeline.fingerprint import fingerprint
inp, out = sys.stdin.buffer, sys.stdout
while True:
    head = inp.read(8)
    if not head:
        break
    value = pickle.loads(inp.read(int.from_bytes(head, "little")))
    out.write(fingerprint(value) + "\\n")
    out.flush()
"""


class Worker:
    """A real interpreter with its own hash seed, fingerprinting what it is sent."""

    def __init__(self, seed: str) -> None:
        env = {"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=False
        )

    def __call__(self, value) -> str:
        data = pickle.dumps(value)
        self.proc.stdin.write(len(data).to_bytes(8, "little") + data)
        self.proc.stdin.flush()
        return self.proc.stdout.readline().decode().strip()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker("12345")
    yield w
    w.close()


@settings(max_examples=30, deadline=None)
@given(st.one_of(values, frames(), numeric_arrays))
def test_same_key_in_another_process(worker, v):
    assert worker(v) == fp(v)


def test_same_key_in_another_process_for_every_family(worker, tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"\x00\x01" * 1000)
    corpus = [
        {"set": {"alpha", "beta", "gamma", "delta", "eps"}, "fz": frozenset({"x", "y", "z"})},
        pd.DataFrame({"s": ["a", "b"], "c": pd.Categorical(["u", "v"]), "t": pd.to_datetime(["2020-01-01", None])}),
        pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]),
        pa.table({"a": [1, None], "s": ["x", "yy"]}),
        Ridge(alpha=0.5).fit(np.eye(3), [1.0, 2.0, 3.0]),
        Config(0.1, ["x", {"y"}]),
        decimal.Decimal("3.14"),
        f,
        np.array(["a", "bb"], dtype=object),
    ]
    for v in corpus:
        assert worker(v) == fp(v), v


THREADS = """
import importlib.abc, sys, threading, time

class SlowLoader(importlib.abc.MetaPathFinder):
    '''Make importing our pandas handlers slow, to widen the first-use window.'''

    def find_spec(self, name, path=None, target=None):
        if name != "pipeline.fingerprint._pandas":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        real = spec.loader.exec_module
        spec.loader.exec_module = lambda module: (time.sleep(0.3), real(module))
        return spec

import importlib.util
import numpy as np, pandas as pd
sys.meta_path.insert(0, SlowLoader())
from pipeline.fingerprint import fingerprint

df = pd.DataFrame({"a": np.arange(10), "s": list("abcdefghij")})
keys, barrier = [], threading.Barrier(4)

def work():
    barrier.wait()
    keys.append(fingerprint({"df": df}))

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(set(keys)), keys[0] == fingerprint({"df": df}))
"""


def test_first_use_from_many_threads_gives_one_key():
    """Threads hashing a frame while another is still registering the pandas handlers
    wait for it, instead of hashing the frame through the generic object walk."""
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", THREADS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1 True"


# -- padding of structured dtypes: never content -----------------------------------------------
_PADDED = np.dtype({"names": ["a", "b"], "formats": ["<i8", "u1"], "offsets": [0, 8], "itemsize": 16})


def _padded(values, padding_byte):
    """A structured array of ``_PADDED`` whose 7 padding bytes per element are ``padding_byte``."""
    raw = np.full(len(values) * 16, padding_byte, np.uint8)
    out = raw.view(_PADDED)
    out["a"] = [a for a, _ in values]
    out["b"] = [b for _, b in values]
    return out


def test_padding_bytes_of_a_structured_array_are_not_content():
    values = [(1, 2), (3, 4), (5, 6)]
    zeroed, garbage = _padded(values, 0), _padded(values, 0xAB)
    assert zeroed.tobytes() != garbage.tobytes()  # the memory differs, the content does not
    assert fingerprint(zeroed) == fingerprint(garbage)
    assert fingerprint(garbage[::2]) == fingerprint(np.ascontiguousarray(zeroed[::2]))
    assert fingerprint(_padded([(1, 2), (3, 4), (5, 7)], 0xAB)) != fingerprint(garbage)  # a field byte is
    nested = np.dtype([("inner", _PADDED), ("c", "<f4")])
    one, two = np.zeros(2, nested), np.zeros(2, nested)
    two.view(np.uint8).reshape(2, -1)[:, 9] = 0xFF  # a padding byte of the inner field
    assert fingerprint(one) == fingerprint(two)
    two["c"][1] = 1.0
    assert fingerprint(one) != fingerprint(two)


def test_fitted_trees_hash_equal_after_a_joblib_round_trip():
    """A tree's node array has padding that unpickling fills with whatever memory held: a
    model and the same model loaded from the store (or loaded twice) must hash equal, else
    every stage downstream of a loaded model misses."""
    import io

    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.RandomState(0)
    X, y = rng.rand(300, 4), rng.randint(0, 2, 300)
    tree, forest = DecisionTreeClassifier(random_state=0), RandomForestClassifier(8, random_state=0)
    for model in (tree.fit(X, y), forest.fit(X, y)):
        buf = io.BytesIO()
        joblib.dump(model, buf)
        loads = [joblib.load(io.BytesIO(buf.getvalue())) for _ in range(3)]
        assert {fingerprint(m) for m in loads} == {fingerprint(model)}, type(model).__name__
    other = DecisionTreeClassifier(random_state=0, max_depth=2).fit(X, y)
    assert fingerprint(other) != fingerprint(DecisionTreeClassifier(random_state=0).fit(X, y))
