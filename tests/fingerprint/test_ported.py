"""Cases ported from dask's ``dask/tests/test_tokenize.py`` and joblib's
``joblib/test/test_hashing.py``, keeping their intent: determinism (the same value twice,
after a cloudpickle round trip, in another process with another ``PYTHONHASHSEED``) and
distinctness. Where our documented design differs on purpose, the case is kept and
asserts our behaviour, marked ``DIFFERENCE:`` with the reason.

Plus property tests of the families the issue found (OrderedDict order, category order,
subclass state), each against the library's own notion of "the same value".
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import functools
import gc
import io
import pathlib
import pickle
import subprocess
import sys
from enum import Enum, Flag, IntEnum, IntFlag
from pathlib import Path
from typing import Union

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import FingerprintError
from pipeline.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=60, deadline=None)


def check(value):
    """dask's check_tokenize: idempotent, and equal after one and after two cloudpickle
    round trips (functions and local classes travel by value)."""
    before = fingerprint(value)
    assert fingerprint(value) == before
    once = cloudpickle.loads(cloudpickle.dumps(value))
    twice = cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(cloudpickle.dumps(value))))
    assert fingerprint(once) == before
    assert fingerprint(twice) == before
    return before


# -- dask: scalars and numpy ---------------------------------------------------------
def test_numpy_scalars_differ_from_each_other_and_from_python():
    assert check(np.int64(1)) != check(1)
    assert check(np.int64(1)) != check(np.int32(1))
    assert check(np.int64(1)) != check(np.uint32(1))
    assert check(np.int64(1)) != check("1")
    assert check(np.int64(1)) != check(np.float64(1))


def test_numpy_arrays():
    assert check(np.random.RandomState(1234).random_sample(1000)) == check(
        np.random.RandomState(1234).random_sample(1000)
    )
    check(np.random.random(7).astype(dtype="i2"))  # uneven sizes
    arr = np.random.random(8)
    assert check(arr[::2]) != check(arr[::3])  # discontiguous
    check(np.array(["2000-01-01T12:00:00"], dtype="M8[ns]"))
    assert check(np.array(1.0, dtype="f8")) == check(np.array(1.0, dtype="f8"))
    rec = np.array([(1, 2)], dtype=[("a", "i4"), ("b", "i8")])
    assert check(rec[0]) == check(np.array([(1, 2)], dtype=[("a", "i4"), ("b", "i8")])[0])
    with np.printoptions(formatter={"all": lambda x: "foo"}):  # not the string representation
        assert check(np.array(1)) != check(np.array(2))
    assert check(np.array([])) != check(np.array([], dtype=np.int64))
    x, y = np.arange(2000), np.arange(2000)
    y[1000] = 0  # the middle is not in the repr
    assert check([x]) != check([y])
    check(np.array(["foo", "Jos\xe9", np.nan], dtype="O"))


def test_numpy_object_arrays():
    a = np.array(["a", "aa", "aaa"], dtype=object)
    assert check(a) == check(a.copy())
    assert check(np.array(["a", None, "aaa"], dtype=object)) == check(np.array(["a", None, "aaa"], dtype=object))
    pairs = [(1, "a"), (1, None), (1, "aaa")]
    assert check(np.array(pairs, dtype=object)) == check(np.array(pairs, dtype=object))

    class NeedsCloudPickle:
        pass

    # DIFFERENCE: dask cloudpickles this; a stateless instance is its class here (deterministic)
    assert check(np.array(["a", None, NeedsCloudPickle()], dtype=object)) == check(
        np.array(["a", None, NeedsCloudPickle()], dtype=object)
    )


def test_numpy_memmaps(tmp_path):
    fn = tmp_path / "demo_data"
    fn.write_bytes(b"ashekwicht")
    with open(fn, "rb") as f:
        mmap1 = np.memmap(f, dtype=np.uint8, mode="r", offset=0, shape=5)
        mmap2 = np.memmap(f, dtype=np.uint8, mode="r", offset=5, shape=5)
        mmap3 = np.memmap(f, dtype=np.uint8, mode="r", offset=0, shape=5)
        assert check(mmap1) == check(mmap3)
        assert check(mmap1) != check(mmap2)
        assert check(mmap1[1:-1]) == check(mmap3[1:-1])
        assert check(mmap1[1:2]) != check(mmap1[1:3])
        assert check(mmap1[1:-1]) != check(mmap2[1:-1])
    x = np.random.normal(size=(10, 10))
    np.save(tmp_path / "x.npy", x)
    mm, mm2 = np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "x.npy", mmap_mode="r")
    assert len({check(mm[0, :]), check(mm[1, :]), check(mm[0:3, :]), check(mm[:, 0])}) == 4
    assert check(mm) == check(mm2)
    # joblib's test_hash_memmap with coerce_mmap=True: a memmap hashes as the array it maps
    assert fingerprint(mm) == fingerprint(np.asarray(mm).copy())


def test_numpy_ufuncs():
    assert check(np.sin) != check(np.cos)
    inc = np.frompyfunc(lambda x: x + 1, 1, 1)
    inc2 = np.frompyfunc(lambda x: x + 1, 1, 1)
    inc3 = np.frompyfunc(lambda x: x + 2, 1, 1)
    # DIFFERENCE: dask gives two ufuncs of identical code different random tokens (and raises
    # in deterministic mode); here a ufunc is the function it wraps: same code, same key
    assert fingerprint(inc) == fingerprint(inc2)
    assert fingerprint(inc) != fingerprint(inc3)


def test_numpy_matrix():
    rng = np.random.RandomState(1234)
    with pytest.warns(PendingDeprecationWarning):
        a = np.asmatrix(rng.rand(100))
    b = a.copy()
    assert check(a) == check(b)
    assert check(a) != check(np.asarray(a))  # a subclass is its own type
    b[:10] = 1
    assert check(a) != check(b)


# -- dask: objects the hasher can't or won't walk --------------------------------------
def test_an_object_whose_reduce_fails_raises():
    class C:
        def __reduce__(self):
            raise AssertionError("no")

    # DIFFERENCE: dask returns a random token (or raises in deterministic mode); never random here
    with pytest.raises(FingerprintError, match="can't be captured"):
        fingerprint(C())


def test_plain_object_instances():
    # DIFFERENCE: dask tokenizes each object() randomly; equal content is equal here, and an
    # object() has none but its class
    assert check(object()) == check(object())


# -- dask: functions -----------------------------------------------------------------
_GLOBAL = 1


def _local_functions():
    all_funcs = [lambda x: x, lambda x: x + 1, lambda y: y, lambda y: y + 1]
    a, b = all_funcs[:2]

    def func(x):
        return x

    def f2(x):  # differs by function name
        return x

    all_funcs += [func, f2]
    local_scope = 1

    def func():
        nonlocal local_scope
        local_scope += 1
        return a(local_scope)

    all_funcs.append(func)

    def func():
        global _GLOBAL
        _GLOBAL += 1
        return _GLOBAL

    all_funcs.append(func)

    def func(x, c=a):  # differ only by defaults, which are lambdas
        return c(x)

    all_funcs.append(func)

    def func(x, c=b):
        return c(x)

    all_funcs.append(func)

    def func(x):  # differ only by constants, which are lambdas
        c = lambda x: x + 2  # noqa: E731
        return c(x)

    all_funcs.append(func)

    def func(x):
        c = lambda x: x + 3  # noqa: E731
        return c(x)

    all_funcs.append(func)

    def func(x):  # differ only by the closure cell they read, which are lambdas
        c = a
        return c(x)

    all_funcs.append(func)

    def func(x):
        c = b
        return c(x)

    all_funcs.append(func)
    return all_funcs


class WithClassMethod:
    def f(self):
        pass

    @classmethod
    def g(cls):
        pass


_special_callables = [
    getattr,
    str.join,
    "foo".join,
    WithClassMethod.__str__,
    WithClassMethod().__str__,
    WithClassMethod.f,
    WithClassMethod().f,
    WithClassMethod.g,
]


@pytest.mark.parametrize("func", _local_functions() + _special_callables)
def test_functions_and_callables_are_deterministic(func):
    check(func)


def test_functions_and_callables_are_distinct():
    tokens = [check(func) for func in _local_functions() + _special_callables]
    assert len(set(tokens)) == len(tokens)


def test_local_classes_and_functions_from_different_contexts():
    def f(instance):
        class C:
            pass

        return C() if instance else C

    assert check(f(True)) == check(f(True))  # dask: xfail (cloudpickle#453); passes here
    assert check(f(False)) == check(f(False))

    def g():
        def h():
            return 123

        return h

    assert check(g()) == check(g())


def f1(a, b, c=1):
    pass


def f2(a, b=1, c=2):
    pass


def f3(a):
    pass


def test_callables_and_partials():
    assert check(f1) != check(f2)
    assert check(functools.partial(f3, f2, c=f1)) == check(functools.partial(f3, f2, c=f1))
    assert check(functools.partial(f3, f2, c=f1)) != check(functools.partial(f3, f2, c=5))
    assert check(functools.partial(f2, b=2)) != check(functools.partial(f2, b=3))
    assert check(functools.partial(f1, b=2)) != check(functools.partial(f2, b=2))


def test_callable_class_instances():
    class C:
        def __init__(self, x):
            self.x = x

        def __call__(self):
            return self.x

    class D(C):
        pass

    assert check(C(1)) != check(C(2))
    assert check(C(1)) != check(D(1))


# -- dask: pandas ----------------------------------------------------------------------
def test_pandas_frames():
    a = pd.DataFrame({"x": [1, 2, 3], "y": ["4", "asd", None]}, index=[1, 2, 3])
    b = pd.DataFrame({"x": [1, 2, 3], "y": ["4", "asd", None]}, index=[1, 2, 3])
    assert check(a) == check(b)
    b.index.name = "foo"
    assert check(a) != check(b)
    a = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "a"]})
    b = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "a"]})
    a["z"] = a.y.astype("category")
    assert check(a) != check(b)
    b["z"] = a.y.astype("category")
    assert check(a) == check(b)
    # (pandas 3's default Arrow strings can't hold a lone surrogate: an object column does)
    columns = pd.Index(["x\ud83d", "y\ud83d"], dtype=object)
    rows = [[1, "4"], [2, "asd\ud83d"], [3, None]]
    check(pd.DataFrame(rows, columns=columns, index=[1, 2, 3], dtype=object))
    check(pd.DataFrame({"ö".encode(): [1, 2, 3], "ö": ["ö", "ö".encode(), None]}, index=[1, 2, 3]))

    class NeedsCloudPickle:
        pass

    check(pd.DataFrame({"x": ["foo", None, NeedsCloudPickle()]}))


@pytest.mark.parametrize(
    "arr",
    [
        pd.array([1, 0, None], dtype="Int64"),
        pd.array(["2000"], dtype="Period[D]"),
        pd.array([1, 0, 0], dtype="Sparse[int]"),
        pd.array([pd.Timestamp("2000")], dtype="datetime64[ns]"),
        pd.array([pd.Timestamp("2000", tz="CET")], dtype="datetime64[ns, CET]"),
        pd.array(["a", "b"], dtype=pd.api.types.CategoricalDtype(["a", "b", "c"], ordered=False)),
        pd.array(["a", "b", None], dtype="string"),
        pd.array([True, False, None], dtype="boolean"),
    ],
    ids=str,
)
def test_pandas_extension_arrays(arr):
    check(arr)


def test_pandas_scalars_offsets_and_indexes():
    check(pd.NA)
    offsets = [
        pd.offsets.Second(1),
        pd.offsets.MonthBegin(2),
        pd.offsets.Day(1),
        pd.offsets.BQuarterEnd(2),
        pd.DateOffset(years=1),
        pd.DateOffset(months=7),
        pd.DateOffset(days=10),
    ]
    assert len({check(o) for o in offsets}) == len(offsets)
    check(pd.Index(["a", "b"]))
    check(pd.MultiIndex.from_product([["a", "b"], [0, 1]]))


# -- dask: plain objects, containers, stdlib -------------------------------------------
def test_objects_by_their_state():
    class Foo:
        def __init__(self, x):
            self.x = x

        def __repr__(self):
            return "a foo"

    assert check(Foo(1)) != check(Foo(2))  # not by repr

    class Slotted:
        __slots__ = ("x", "y")

        def __init__(self, x=None, y=None):
            if x is not None:
                self.x = x
            if y is not None:
                self.y = y

    assert check(Slotted(x=1)) != check(Slotted(y=1))
    check(Slotted())

    class Base:
        __slots__ = ("x",)

    class Bar(Base):
        def __init__(self, x, y):
            self.x = x
            if y is not None:
                self.y = y

    tokens = [check(Bar(1, 2)), check(Bar(1, 3)), check(Bar(1, None)), check(Bar(2, 2))]
    assert len(set(tokens)) == len(tokens)


def test_containers():
    assert check([1]) != check([2])
    assert check([1]) != check((1,))
    assert check([1]) == check([1])
    assert check({"x": 1, 1: "x"}) == check({1: "x", "x": 1})  # insertion order ignored, unsortable keys
    assert check({"x": 1, 1: "x"}) != check({"x": 1, 2: "x"})
    assert check({"x": 1, 1: "x"}) != check({"x": 2, 1: "x"})
    assert check({1, 2, "x", (1, "x")}) == check({2, "x", (1, "x"), 1})
    v = (1, 2, 3)
    assert check({1: v, 2: v}) == check({2: v, 1: v})
    assert check({(i, v) for i in range(100)}) == check({(i, v) for i in reversed(range(100))})
    a = collections.OrderedDict([("a", 1), ("b", 2)])
    b = collections.OrderedDict([("a", 1), ("b", 2)])
    c = collections.OrderedDict([("b", 2), ("a", 1)])
    assert check(a) == check(b)
    assert check(a) != check(c)


def test_circular_recursion():
    a = [1, 2]
    a[0] = a
    b = [1, 3]
    b[0] = b
    assert check(a) != check(b)
    c = [[], []]
    c[0].append(c[0])
    c[1].append(c[1])
    d = [[], []]
    d[0].append(d[1])
    d[1].append(d[0])
    assert check(c) != check(d)
    e = {}
    e[0] = e
    check(e)


@pytest.mark.parametrize("enum_type", [Enum, IntEnum, IntFlag, Flag])
def test_enums(enum_type):
    class Color(enum_type):
        RED = 1
        BLUE = 2

    assert fingerprint(Color.RED) == fingerprint(Color.RED)
    assert fingerprint(Color.RED) != fingerprint(Color.BLUE)


@dataclasses.dataclass
class ADataClass:
    a: int


@dataclasses.dataclass
class BDataClass:
    a: float


@dataclasses.dataclass
class NoValueDataClass:
    a: int = dataclasses.field(init=False)


def test_dataclasses():
    assert check(ADataClass(1)) != check(ADataClass(2))
    assert check(ADataClass) != check(BDataClass)
    assert check(ADataClass(1)) != check(BDataClass(1))

    class SubA(ADataClass):
        pass

    assert check(ADataClass) != check(SubA)
    assert check(SubA(1)) != check(ADataClass(1))
    redefined = dataclasses.make_dataclass("ADataClass", [("a", Union[int, str])])
    assert check(ADataClass(1)) != check(redefined(1))
    unset = check(NoValueDataClass())  # an unset init=False field: a marker, not an AttributeError
    done = NoValueDataClass()
    done.a = 0
    assert unset != check(done)


def test_stdlib_values():
    assert check(range(5, 10, 2)) != check(range(1, 10, 2))
    assert check(range(5, 10, 2)) != check(range(5, 15, 2))
    assert check(range(5, 10, 2)) != check(range(5, 10, 1))
    assert check(datetime.timedelta(days=1)) == check(datetime.timedelta(days=1))
    assert check(datetime.timedelta(days=1)) != check(datetime.timedelta(days=2))
    day = datetime.date(2021, 6, 25)
    for other in [(2002, 6, 25), (2021, 7, 25), (2021, 6, 26)]:
        assert check(day) != check(datetime.date(*other))
    utc = datetime.UTC
    t = datetime.time(1, 2, 3, 4, utc)
    for other in [(2, 2, 3, 4, utc), (1, 3, 3, 4, utc), (1, 2, 4, 4, utc), (1, 2, 3, 5, utc), (1, 2, 3, 4)]:
        assert check(t) != check(datetime.time(*other))
    for x in [1, True, "a", b"a", 1.0, 1j, 1.0j, [], (), {}, None, str, int, decimal.Decimal("1.1")]:
        check(x)
    check(pathlib.PurePath("/this/that"))


# -- joblib ---------------------------------------------------------------------------
def test_trivial_hash():
    """Two objects have one hash only when they are the same value."""
    objs = [1, 2, 1.0, 2.0, 1 + 1j, 2.0 + 1j, "a", "b", (1,), (1, 1), [1], [1, 1], {1: 1}, {1: 2}, {2: 1}, None]
    objs += [gc.collect, [1].append]
    assert len({fingerprint(o) for o in objs}) == len(objs)


def test_hash_methods():
    a1, a2 = collections.deque(range(10)), collections.deque(range(9))
    assert fingerprint(a1.extend) != fingerprint(a2.extend)
    # DIFFERENCE: joblib hashes an open StringIO's method; an open stream has no stable
    # content, so it raises here (pass its path instead)
    with pytest.raises(FingerprintError, match="stream"):
        fingerprint(io.StringIO("a").flush)


def test_hash_numpy():
    rnd = np.random.RandomState(0)
    arr1 = rnd.random_sample((10, 10))
    arr2 = arr1.copy()
    arr3 = arr2.copy()
    arr3[0] += 1
    for x in (arr1, arr2, arr3):
        for y in (arr1, arr2, arr3):
            assert (fingerprint(x) == fingerprint(y)) == bool(np.all(x == y))
    assert fingerprint({1: arr1, 2: arr1}) == fingerprint({1: arr2, 2: arr2})
    assert fingerprint({1: arr1, 2: arr1}) != fingerprint({1: arr2, 2: arr3})
    assert fingerprint(arr1) != fingerprint(arr1.T)
    a_hash = fingerprint(np.arange(10))
    for dtype in ["datetime64[s]", "timedelta64[D]"]:
        assert fingerprint(np.arange(0, 10, dtype=dtype)) != a_hash


def test_hash_numpy_noncontiguous():
    a = np.asarray(np.arange(6000).reshape((1000, 2, 3)), order="F")[:, :1, :]
    # DIFFERENCE: joblib hashes the memory layout; layout is storage here (equal content is equal)
    assert fingerprint(a) == fingerprint(np.ascontiguousarray(a)) == fingerprint(np.asfortranarray(a))


class Klass:
    def f(self, x):
        return x


def test_bound_methods_of_equal_instances_hash_equal():
    assert fingerprint(Klass().f) == fingerprint(Klass().f)


def test_object_dtype_numpy_scalars_strings_and_dtypes():
    a = np.array([np.arange(i) for i in range(6)], dtype=object)
    b = np.array([np.arange(i) for i in range(6)], dtype=object)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(np.float64(2.0)) != fingerprint(np.float64(3.0))
    s = "foo"
    x, y = {s: "bar"}, {s: "bar"}
    assert fingerprint([x, y]) == fingerprint([x, pickle.loads(pickle.dumps(y))])
    d = np.dtype([("f1", np.uint), ("f2", np.int32)])
    assert fingerprint([d, pickle.loads(pickle.dumps(d))]) == fingerprint([d, d])
    names = {f"#s{12069 + i}__c_maps.nii.gz": [33] for i in range(13)}
    assert fingerprint(names) == fingerprint(pickle.loads(pickle.dumps(names)))
    assert fingerprint(set(names)) == fingerprint(pickle.loads(pickle.dumps(set(names))))


class MyClass:
    def __init__(self, a, b):
        self.a, self.b = a, b
        self.c = "fixed"


def corpus():
    """Values for joblib's 'hashes stay the same' and the cross-process check."""
    import random

    rng = random.Random(42)
    nrng = np.random.RandomState(42)
    return [
        "This is a string to hash",
        "C'est l\xe9t\xe9",
        (123456, 54321, -98765),
        [rng.random() for _ in range(5)],
        [3, "abc", None, MyClass(1, 2)],
        {"abcde": 123, "sadfas": [-9999, 2, 3]},
        nrng.randint(-1000, high=1000, size=50).astype("<i8"),
        tuple(nrng.randn(3).astype("<f4") for _ in range(5)),
        {-3333: nrng.randn(3, 5).astype("<f4"), 0: [nrng.randint(10, size=20).astype("<i8")]},
        collections.OrderedDict([("b", 1), ("a", 2)]),
        pd.Categorical(["a", "b"], categories=["b", "a"]),
        {"alpha", "beta", "gamma", "delta"},
        f1,
        _local_functions()[-1],
    ]


# joblib's "hashes stay the same": the fingerprints of the value part of the corpus, pinned.
# A change of any of them changes every key that holds such a value: bump the key version
# in pipeline/keys.py with it. (Functions are left out: bytecode is per Python minor version.)
GOLDEN = [
    "xxh3:c3cad4979037e81b0a1955244be6cb8a",
    "xxh3:f13a2aca64472a0a4607f9d2d90b67bd",
    "xxh3:e2efaaeb6f5319d945261f030f4e8221",
    "xxh3:72e7ebcae1010e7caf8996584d3ba0dc",
    "xxh3:44b2abb6f1fa86f5361ae42235e472ab",
    "xxh3:e71bac4c8192639373b76719bac914b8",
    "xxh3:68de8976e1379f0a7141ecae8d3fbf92",
    "xxh3:268de61261da2283f48a7b31422e6914",
    "xxh3:8ec61f2a54f46d927226694585df5af2",
    "xxh3:51fe29346875939c92eb5da55febedb3",
    "xxh3:ac300db7018d83c25aa24f94d248e4be",  # Arrow strings: value ends, not lengths (#12)
    "xxh3:d094072c11c01d07403ee9a899ba9383",
]


def test_hashes_stay_the_same():
    assert [fingerprint(v) for v in corpus()[: len(GOLDEN)]] == GOLDEN


def test_hashes_are_the_same_in_processes_with_other_hash_seeds():
    here = [fingerprint(v) for v in corpus()]
    code = "from tests.fingerprint.test_ported import corpus; from pipeline import fingerprint; "
    code += "print(' '.join(fingerprint(v) for v in corpus()))"
    for seed in ("0", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == here


# -- properties of the families the issue found ------------------------------------------
items = st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 2)), max_size=4, unique_by=lambda kv: kv[0])


@FAST
@given(items, items, st.data())
def test_ordered_dicts_hash_equal_exactly_when_they_compare_equal(a, other, data):
    for b in (other, data.draw(st.permutations(a))):  # another dict, and the same items reordered
        x, y = collections.OrderedDict(a), collections.OrderedDict(b)
        assert (fingerprint(x) == fingerprint(y)) == (x == y)
        assert fingerprint(x) != fingerprint(dict(a))  # type() tells them apart


@FAST
@given(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=5),
    st.permutations("abc"),
    st.permutations("abc"),
    st.booleans(),
)
def test_categoricals_hash_equal_exactly_when_codes_categories_and_order_agree(values, cats1, cats2, ordered):
    a = pd.Categorical(values, categories=cats1, ordered=ordered)
    b = pd.Categorical(values, categories=cats2, ordered=ordered)
    same = list(a.categories) == list(b.categories) and list(a.codes) == list(b.codes)
    assert (fingerprint(a) == fingerprint(b)) == same


class Tagged(dict):
    pass


@FAST
@given(st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=3), st.integers(0, 2), st.integers(0, 2))
def test_a_dict_subclass_hashes_equal_exactly_when_content_and_added_state_agree(d, t1, t2):
    a, b = Tagged(d), Tagged(d)
    a.tag, b.tag = t1, t2
    assert (fingerprint(a) == fingerprint(b)) == (t1 == t2)
    assert fingerprint(a) != fingerprint(dict(d))
