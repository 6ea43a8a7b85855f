"""The store on S3: a real S3-compatible server (SeaweedFS, tests/s3server.py) via s3fs.

The same round-trips, StageCache hits and misses, verification and corruption handling
as on a local directory, on ``s3://bucket/prefix`` with credentials passed through
``Store(url, key=..., secret=..., client_kwargs={"endpoint_url": ...})``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline import StageCache, Store, StoreError, fingerprint
from pipeline.store.remote import FsspecBackend
from tests.store.test_store import ARROW_FRAMES, FRAMES, assert_same, commit, flip_byte, object_rel


@pytest.fixture
def s3_store(s3_server) -> Store:
    return Store(s3_server.new_url(), **s3_server.storage_options)


def count_rows(df: pd.DataFrame, log: str) -> dict:
    """A stage that leaves a line in ``log`` each time it really runs."""
    with open(log, "a") as f:
        f.write("ran\n")
    return {"rows": len(df), "sum": float(df.select_dtypes("float").sum().sum())}


def split(df: pd.DataFrame, log: str) -> tuple:
    with open(log, "a") as f:
        f.write("ran\n")
    half = len(df) // 2
    return df.iloc[:half], df.iloc[half:], np.arange(len(df))


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_layout_on_s3(s3_store, s3_server):
    assert isinstance(s3_store._backend, FsspecBackend)
    m = commit(s3_store, FRAMES["numpy-columns"])
    fs = s3_server.filesystem()
    root = s3_store.url.removeprefix("s3://")
    assert fs.cat_file(f"{root}/store.json") == b'{"format": 1}'
    assert fs.exists(f"{root}/{object_rel(m.outputs)}")
    assert fs.exists(f"{root}/stages/s/{m.key.removeprefix('xxh3:')}.json")


@pytest.mark.parametrize(
    "name", ["numpy-columns", "arrow-columns", "categorical", "tz-aware", "multiindex", "non-default-index"]
)
def test_frame_round_trip_on_s3(s3_store, name):
    df = FRAMES[name]
    tree = s3_store.save(df)
    back = s3_store.load(tree)
    assert_same(df, back)
    assert fingerprint(back) == fingerprint(df)
    assert tree.codec == ("arrow-pandas" if name in ARROW_FRAMES else "parquet-pandas")


def test_other_values_round_trip_on_s3(s3_store):
    r = np.random.default_rng(0)
    X, y = r.standard_normal((40, 3)), r.integers(0, 2, 40)
    model = LogisticRegression().fit(X, y)
    value = (
        pd.Series([1.5, None], name="s"),
        pa.table({"a": [1, 2], "l": [[1], []]}),
        r.random((300, 500)),  # 1.2 MB
        model,
        {"acc": 0.5, "as_tuple": (1, 2), "as_list": [1, 2]},
    )
    tree = s3_store.save(value)
    assert [getattr(t, "codec", "dict") for t in tree.items] == [
        "parquet-series",
        "parquet-arrow",
        "joblib",
        "joblib",
        "dict",
    ]
    back = s3_store.load(tree)
    for a, b in zip(value[:3], back[:3]):
        assert_same(a, b)
    np.testing.assert_array_equal(back[3].predict(X), model.predict(X))
    assert back[4] == value[4] and type(back[4]["as_tuple"]) is tuple
    assert fingerprint(back) == fingerprint(value)


def test_stagecache_hit_and_miss_on_s3(s3_store, s3_server, tmp_path):
    log = tmp_path / "runs.log"
    df = FRAMES["numpy-columns"]
    stage = StageCache(s3_store).wrap(split, ignore=["log"])
    first = stage.call(df, str(log))
    assert not first.hit and runs(log) == 1
    second = stage.call(df.copy(), str(log))
    assert second.hit and runs(log) == 1
    for a, b in zip(first.value, second.value):
        assert_same(a, b)
    other = stage.call(df.iloc[:10], str(log))  # new input content: a miss
    assert not other.hit and runs(log) == 2
    reopened = StageCache(Store(s3_store.url, **s3_server.storage_options)).wrap(split, ignore=["log"])
    assert reopened.call(df, str(log)).hit and runs(log) == 2
    report = s3_store.verify()
    assert report.clean and report.manifests == 2 and report.ok == 6 and report.temp_files == 0


def test_corrupt_object_on_s3_is_quarantined_and_recomputed(s3_store, tmp_path):
    log = tmp_path / "runs.log"
    stage = StageCache(s3_store).wrap(count_rows, ignore=["log"])
    df = FRAMES["tz-aware"]
    expected = stage(df, str(log))
    m = s3_store.manifest(stage.name, stage.key(df, str(log)).key)
    flip_byte(s3_store, object_rel(m.outputs))
    with pytest.warns(UserWarning, match="recomputing"):
        assert stage(df, str(log)) == expected
    assert runs(log) == 2
    assert any(m.outputs.object in q for q in s3_store._backend.list("quarantine"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stage(df, str(log)) == expected
    assert runs(log) == 2
    report = s3_store.verify()
    assert report.clean and report.quarantined == 1


def test_verify_on_s3_finds_missing_and_corrupt(s3_store):
    a = commit(s3_store, FRAMES["categorical"], key="xxh3:" + "0a" * 16)
    b = commit(s3_store, np.arange(1000), key="xxh3:" + "0b" * 16)
    flip_byte(s3_store, object_rel(a.outputs))
    s3_store._backend.delete(object_rel(b.outputs))
    report = s3_store.verify()
    assert (report.manifests, report.ok, report.corrupt, report.missing, report.quarantined) == (2, 0, 1, 1, 1)


def test_wrong_credentials_are_one_clear_error(s3_server):
    url = s3_server.new_url()
    with pytest.raises(StoreError, match=url) as e:
        Store(url, **{**s3_server.storage_options, "secret": "not-the-secret"})
    assert "Forbidden" in str(e.value) and "credentials" in str(e.value)


OTHER_PROCESS = """
import json, sys
import numpy as np
from pipeline import StageCache, Store

def grow(n):
    return np.arange(n)

url, opts, ns = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
store = Store(url, **opts)
stage = StageCache(store).wrap(grow, version="1")
print(json.dumps([stage.call(n).manifest.key for n in ns]))
"""


def test_a_long_lived_process_sees_what_others_commit_on_s3(s3_server, tmp_path):
    """Two processes on one S3 store: the long-lived one (this test) looks up, verifies and
    collects after the other commits; every committed entry is seen, whole, and survives gc."""
    import json
    import subprocess
    import sys

    from pipeline.store.retention import gc

    url = s3_server.new_url()
    store = Store(url, **s3_server.storage_options)
    script = tmp_path / "other.py"
    script.write_text(OTHER_PROCESS)

    def grow(n):
        return np.arange(n)

    stage = StageCache(store).wrap(grow, version="1")
    assert not stage.call(1).hit  # this process lists and caches what it sees
    assert store.verify().clean and gc(store, grace_seconds=0).deleted_objects == 0

    def other(ns):
        out = subprocess.run(
            [sys.executable, str(script), url, json.dumps(s3_server.storage_options), json.dumps(ns)],
            capture_output=True, text=True, check=True, env={**__import__("os").environ, "PYTHONPATH": str(Path.cwd())},
        )  # fmt: skip
        return json.loads(out.stdout)

    assert other([2, 3, 4]) == [stage.key(n).key for n in (2, 3, 4)]  # the same stage
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in (2, 3, 4):
            assert stage.call(n).hit, n  # committed by the other process: seen here
    report = store.verify()
    assert report.clean and report.manifests == 4 and report.ok == 4 and report.missing == 0
    other([5, 6])
    assert gc(store, grace_seconds=0).deleted_objects == 0  # the other's new entries are live
    assert store.verify().ok == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n in (1, 2, 3, 4, 5, 6):
            outcome = stage.call(n)
            assert outcome.hit, n
            np.testing.assert_array_equal(outcome.value, np.arange(n))


def test_newest_live_objects_and_verify_on_s3(s3_store):
    """On S3 the page comes from the listing's LastModified and many manifests are read at once:
    the same answers as on disk; a damaged newest manifest is never shown, and what it names
    stays live until verify quarantines it."""
    import datetime as dt

    from pipeline import Manifest
    from pipeline.store import layout
    from pipeline.store.listing import created_at

    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    made = []
    for i in range(300):  # more than one read-ahead batch
        leaf = s3_store.put({"i": i})
        m = Manifest(
            stage=f"s{i % 3}", key=f"xxh3:{i:032x}", outputs=leaf, created=(t0 + dt.timedelta(minutes=i)).isoformat()
        )
        made.append(s3_store.commit(m))
    page = s3_store.newest(limit=5)
    assert [m.key for m in page.manifests] == [m.key for m in made[::-1][:5]] and page.total == 300
    assert [m.key for m in s3_store.newest("s1", limit=2).manifests] == [made[298].key, made[295].key]
    since = created_at(made[290])
    assert {m.key for m in s3_store.manifests(since=since)} == {m.key for m in made[290:]}
    live = s3_store.live_objects()
    assert live == {layout.object_path(m.outputs.object, "json") for m in made}

    newest = made[-1]
    rel = layout.manifest_path(newest.stage, newest.key)
    raw = bytearray(s3_store._backend.read(rel))
    raw[len(raw) // 2] ^= 1
    s3_store._backend.write_atomic(rel, bytes(raw))
    assert s3_store.live_objects() == live  # a damaged manifest's objects stay until verify says so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [m.key for m in s3_store.newest(limit=2).manifests] == [made[-2].key, made[-3].key]
    s3_store._backend.write_atomic(rel, bytes(raw))  # (the page quarantined it)
    report = s3_store.verify()
    assert (report.manifests, report.ok, report.bad_manifests, report.corrupt, report.missing) == (299, 299, 1, 0, 0)
    assert report.orphans == 1  # the damaged manifest's object, no longer referenced
