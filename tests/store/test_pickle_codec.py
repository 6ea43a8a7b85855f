"""The joblib codec is written by the C pickler (protocol 5), a stream joblib.load reads as its
own; a value holding a large non-contiguous array goes to joblib's pickler (chunked writes, no
whole copy). Either way the value comes back exactly, and old joblib-written objects still load."""

from __future__ import annotations

import fractions
import io

import joblib
import numpy as np
import pytest
import xxhash
from sklearn.linear_model import SGDClassifier

from pipeline import Store
from pipeline.errors import StoreError
from pipeline.store.codecs import STRIDED_MAX_BYTES
from pipeline.store.objects import leaf_path
from pipeline.store.tree import Leaf


def _bytes_of(store: Store, leaf) -> bytes:
    return bytes(store._backend.read(leaf_path(leaf)))


def _same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes() if a.dtype != object else list(a.ravel()) == list(b.ravel())
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b or (a != a and b != b)


def _values() -> dict[str, object]:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((50, 7))
    row = m[1]
    return {
        "c": m,
        "fortran": np.asfortranarray(m),
        "strided": m[::3, 1::2],
        "scalar": np.array(3.5),
        "objects": np.array([1, "a", None, (2, 3)], dtype=object),
        "structured": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
        "big-endian": np.arange(10, dtype=">i8"),
        "dates": np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"),
        "nan": float("nan"),
        "set": {1, 2, 3},
        "fraction": fractions.Fraction(1, 3),
        "bytes": b"\x00\x01" * 100_000,
        "nested": [{"x": m[0]}, (row, row)],
    }


def test_values_written_by_the_c_pickler_come_back_exactly(tmp_path):
    store = Store(str(tmp_path / "s"))
    value = _values()
    leaf = store.put(value)
    assert leaf.codec == "joblib"
    raw = _bytes_of(store, leaf)
    assert b"NumpyArrayWrapper" not in raw  # not joblib's pickler
    _same(store.load(leaf), value)
    back = store.load(leaf)
    assert back["nested"][1][0] is back["nested"][1][1]  # shared references stay shared


def test_a_fitted_model_round_trips_and_refits_identically(tmp_path):
    store = Store(str(tmp_path / "s"))
    x = np.random.default_rng(1).standard_normal((100, 4))
    y = (x[:, 0] > 0).astype(int)
    model = SGDClassifier(loss="log_loss", random_state=0).partial_fit(x, y, classes=[0, 1])
    back = store.load(store.put(model))
    assert back.coef_.tobytes() == model.coef_.tobytes()
    assert back.partial_fit(x, y).coef_.tobytes() == model.partial_fit(x, y).coef_.tobytes()


def test_a_large_non_contiguous_array_goes_to_joblibs_pickler(tmp_path):
    store = Store(str(tmp_path / "s"))
    big = np.arange(2 * STRIDED_MAX_BYTES // 8 + 16, dtype=np.float64).reshape(-1, 2)[:, 0]  # strided view
    assert not big.flags.c_contiguous and big.nbytes > STRIDED_MAX_BYTES
    leaf = store.put({"big": big, "small": np.ones(3)})
    assert b"NumpyArrayWrapper" in _bytes_of(store, leaf)  # joblib wrote it
    back = store.load(leaf)
    assert np.array_equal(back["big"], big) and np.array_equal(back["small"], np.ones(3))


def test_objects_written_by_joblibs_pickler_still_load(tmp_path):
    """An object as the codec wrote it before (joblib.dump), put where the store keeps it."""
    store = Store(str(tmp_path / "s"))
    value = {k: v for k, v in _values().items() if k not in ("big-endian", "structured")}  # joblib makes them native
    buf = io.BytesIO()
    joblib.dump(value, buf)
    data = buf.getvalue()
    assert b"NumpyArrayWrapper" in data
    leaf = Leaf(xxhash.xxh3_128_hexdigest(data), "joblib", len(data))
    path = tmp_path / "s" / leaf_path(leaf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    _same(store.load(leaf), value)


def test_a_value_neither_pickler_takes_names_the_failure_once(tmp_path):
    store = Store(str(tmp_path / "s"))
    with pytest.raises(StoreError) as e:
        store.put({"f": lambda: 1})
    assert str(e.value).count("joblib:") == 1
