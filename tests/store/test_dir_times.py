"""Kept directory listings (``pipeline.store.dir_times``): used while a directory is unchanged
and settled, listed again as soon as anything in it changes, ignored when damaged."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid

import pytest
import xxhash

from pipeline import Manifest, Store
from pipeline.store import dir_times, layout
from pipeline.store.listing import created_at

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def kept_in(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_LISTING_CACHE", str(tmp_path / "listing-cache"))
    return tmp_path / "listing-cache"


def commit(store: Store, i: int, stage: str = "s") -> Manifest:
    m = Manifest(
        stage=stage,
        key=f"xxh3:{i:032x}",
        outputs=store.put({"i": i}),
        created=(T0 + dt.timedelta(minutes=i)).isoformat(),
    )
    return store.commit(m)


def settle(store: Store, *stages: str) -> None:
    """Make the stage directories look last changed a minute ago (as after a run)."""
    past = time.time() - 60
    for stage in stages:
        os.utime(store._backend._path(layout.stage_dir(stage)), (past, past))


def times(store: Store, stage: str = "s") -> dict[str, float]:
    (d,) = [d for d in dir_times.json_times(store._backend, layout.STAGES) if d.rel == layout.stage_dir(stage)]
    return dict(zip(d.names, d.times))


def exact_page(store: Store, limit: int) -> list[str]:
    found = sorted(store.manifests(), key=lambda m: (created_at(m), m.stage, m.key), reverse=True)
    return [m.key for m in found[:limit]]


def test_an_unchanged_settled_directory_is_not_listed_again(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i) for i in range(5)]
    settle(store, "s")
    first = times(store)
    assert len(first) == 5 and os.listdir(kept_in)  # listed, and kept
    name = layout.manifest_path("s", made[0].key).rpartition("/")[2]
    path = store._backend._path(layout.manifest_path("s", made[0].key))
    os.utime(path, (1.0, 1.0))  # in place: the directory does not change
    assert times(store) == first  # so the kept listing is what is used
    commit(store, 99)  # a new entry: the directory changes, and is listed again
    again = times(store)
    assert len(again) == 6 and again[name] == 1.0


def test_an_unsettled_directory_is_not_kept(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    commit(store, 1)
    times(store)  # changed just now: listed, not kept (a change in the same tick would go unseen)
    assert not kept_in.exists() or not [f for f in os.listdir(next(kept_in.iterdir())) if not f.startswith(".")]


def test_pages_stay_exact_through_commits_recommits_and_deletes(tmp_path):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i, stage=f"s{i % 3}") for i in range(30)]
    for step in range(6):
        settle(store, "s0", "s1", "s2")
        for limit in (1, 5, 50):
            assert [m.key for m in store.newest(limit=limit).manifests] == exact_page(store, limit)
        if step == 0:
            commit(store, 100, stage="s1")  # a new newest
        elif step == 1:
            store.delete_manifest(made[29])
        elif step == 2:  # the same key committed again, newer: a rename over the old file
            m = made[28]
            store.commit(
                Manifest(stage=m.stage, key=m.key, outputs=m.outputs, created=(T0 + dt.timedelta(days=9)).isoformat())
            )
        elif step == 3:
            os.rename(store._backend._path(layout.stage_dir("s2")), store._backend._path(layout.stage_dir("s2")) + "x")
            os.rename(store._backend._path(layout.stage_dir("s2")) + "x", store._backend._path(layout.stage_dir("s2")))
        elif step == 4:
            commit(store, 200, stage="s3")  # a new stage directory
    assert store.newest(limit=1).manifests[0].key == made[28].key  # re-committed newest of all


def test_a_damaged_or_tampered_kept_listing_is_ignored(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    for i in range(4):
        commit(store, i)
    settle(store, "s")
    good = times(store)
    (where,) = list(kept_in.iterdir())
    for f in where.iterdir():
        data = f.read_bytes()
        for bad in (
            data[:-7],
            data.replace(b"0000", b"../x", 1),
            b"\xff" + data,
            b"",
            data.replace(b'"n": 4', b'"n": 9'),
        ):
            f.write_bytes(bad)
            assert times(store) == good  # listed again (and kept again, whole)
        f.write_bytes(data.replace(b'"subdirs": []', b'"subdirs": [".."]'))
        assert times(store) == good


def test_another_backend_gives_its_listing_times():
    store = Store(f"memory://store-{uuid.uuid4().hex}")
    for i in range(3):
        commit(store, i)
    assert len(times(store)) == 3
    assert [m.key for m in store.newest(limit=2).manifests] == exact_page(store, 2)


def test_a_kept_listing_is_used_without_holding_every_name(tmp_path, kept_in):
    """The newest page of a big directory touches only the names it reads: loading a kept
    listing of 20k files and taking its first 10 allocates a few KB (all 20k as Python
    strings and floats took ~2.6 MB)."""
    import tracemalloc

    store = Store(tmp_path / "store", fsync=False)
    where = store._backend._path(layout.stage_dir("s"))
    os.makedirs(where)
    for i in range(20_000):
        with open(os.path.join(where, f"{i:032x}.json"), "wb"):
            pass
    settle(store, "s")
    (first,) = dir_times.json_times(store._backend, layout.STAGES)  # listed, and kept
    tracemalloc.start()
    try:
        (d,) = dir_times.json_times(store._backend, layout.STAGES)
        top = list(zip(d.times[:10], d.names))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert top == list(zip(first.times[:10], first.names[:10])) and len(d.names) == 20_000
    assert peak < 200_000, peak


def test_a_tampered_listing_with_a_matching_checksum_is_refused_when_used(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i) for i in range(4)]
    settle(store, "s")
    page = [m.key for m in store.newest(limit=4).manifests]
    (where,) = list(kept_in.iterdir())
    (f,) = list(where.iterdir())
    head, _, body = f.read_bytes().partition(b"\n")
    meta = json.loads(head)
    body = body.replace(b"0000", b"../x", 1)  # a name that would leave the stage directory
    meta["xxh"] = xxhash.xxh3_64_hexdigest(body)
    head = json.dumps(meta).encode()
    f.write_bytes(head + b" " * (-(len(head) + 1) % 8) + b"\n" + body)
    with pytest.raises(dir_times.StaleListing):
        list(dir_times.json_times(store._backend, layout.STAGES)[0].names)
    assert [m.key for m in store.newest(limit=4).manifests] == page == [m.key for m in reversed(made)]


def test_a_kept_listing_cut_short_while_in_use_is_refused_and_listed_again(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    made = [commit(store, i) for i in range(6)]
    settle(store, "s")
    page = [m.key for m in store.newest(limit=3).manifests]
    assert page == [m.key for m in reversed(made)][:3]
    (d,) = dir_times.json_times(store._backend, layout.STAGES)  # kept, and now open
    (where,) = list(kept_in.iterdir())
    (f,) = list(where.iterdir())
    os.truncate(f, f.stat().st_size // 2)  # in place, under the open listing (no store write does this)
    with pytest.raises(dir_times.StaleListing):
        list(d.names)
    assert [m.key for m in store.newest(limit=3).manifests] == page


def test_a_kept_listing_reads_as_the_lists_it_was_made_from(tmp_path, kept_in):
    store = Store(tmp_path / "store", fsync=False)
    for i in range(300):  # more than one read's worth of names
        commit(store, i)
    settle(store, "s")
    where = store._backend._path(layout.stage_dir("s"))
    found = sorted(((e.stat().st_mtime, e.name) for e in os.scandir(where)), reverse=True)
    names, times = [n for _, n in found], [t for t, _ in found]
    dir_times.json_times(store._backend, layout.STAGES)  # listed, kept
    (kept,) = dir_times.json_times(store._backend, layout.STAGES)
    assert not isinstance(kept.names, list)  # read from the kept file
    assert list(kept.names) == names and list(kept.times) == times and len(kept.names) == 300
    for part in (slice(0, 5), slice(127, 131), slice(290, None), slice(None, None, -7), slice(-3, None)):
        assert list(kept.names[part]) == names[part] and list(kept.times[part]) == times[part]
    assert (kept.names[-1], kept.times[-1], kept.names[128]) == (names[-1], times[-1], names[128])
