"""The manifest cache of S3 stores (pipeline.store.manifest_cache) on the real SeaweedFS server.

A listing tells each manifest's ETag; a manifest whose ETag is unchanged since this machine
last read it comes from the cache, any other is read from the store. Here: a warm listing
reads no manifest again; one rewritten in place (new ETag) is read again, one deleted is
gone, a damaged or tampered cache entry is ignored (never quarantines the good manifest),
an unusable cache file leaves the store working, and gc never deletes an object that a
listed manifest references, whatever the cache holds.

GETs are counted where the store's S3 reader sends them (the real call, counted on its way).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import warnings

import pytest

from pipeline import Store
from pipeline.store import layout
from pipeline.store.retention import gc
from tests.store.test_store import commit, object_rel


@pytest.fixture
def url(s3_server) -> str:
    return s3_server.new_url()


def open_store(url: str, s3_server) -> Store:
    return Store(url, **s3_server.storage_options)


class Gets:
    """The manifest GETs a store sends (its reader's ``get``, wrapped to count, still called)."""

    def __init__(self, store: Store) -> None:
        self.keys: list[str] = []
        reader = store._backend._reader
        real = reader.get

        def get(rel: str):
            if layout.is_manifest(rel):
                self.keys.append(rel)
            return real(rel)

        reader.get = get

    def take(self) -> int:
        n, self.keys = len(self.keys), []
        return n


def keyed(i: int) -> str:
    return "xxh3:" + f"{i:032x}"


def cache_file(store: Store):
    return store._backend._cache.path


def test_a_warm_listing_reads_no_manifest_again(url, s3_server):
    writer = open_store(url, s3_server)
    made = {commit(writer, {"i": i}, key=keyed(i)).key for i in range(12)}
    store = open_store(url, s3_server)
    gets = Gets(store)
    assert {m.key for m in store.manifests()} == made
    assert gets.take() == 12  # cold: each read once
    assert {m.key for m in store.manifests()} == made
    assert len(store.live_objects()) == 12 and store.verify().clean
    assert gets.take() == 0  # warm: the listing is enough
    # ``newest`` takes its candidates from the manifest index, not a listing: each row it shows is
    # read from the store (a listing's ETag vouches for a cached copy; the index's never does)
    assert {m.key for m in store.newest(limit=5).manifests} <= made
    assert gets.take() <= 12
    other = open_store(url, s3_server)  # another process of this machine: the cache is per store, on disk
    other_gets = Gets(other)
    assert {m.key for m in other.manifests()} == made and other_gets.take() == 0


def test_a_lookup_always_reads_the_store(url, s3_server):
    store = open_store(url, s3_server)
    m = commit(store, {"v": 1})
    list(store.manifests())
    gets = Gets(store)
    assert store.manifest(m.stage, m.key) == m
    assert gets.take() == 1


def test_a_manifest_rewritten_in_place_is_read_again(url, s3_server):
    store = open_store(url, s3_server)
    old = commit(store, {"v": 1})
    assert list(store.manifests()) == [old]
    writer = open_store(url, s3_server)  # another writer commits the same key again, other content
    new = dataclasses.replace(old, outputs=writer.save({"v": 2}), compute_seconds=7.0)
    writer.commit(new)
    gets = Gets(store)
    assert list(store.manifests()) == [new]
    assert gets.take() == 1
    assert store.load(store.newest(limit=1).manifests[0].outputs) == {"v": 2}
    assert gets.take() == 1  # the row ``newest`` shows is read from the store
    assert list(store.manifests()) == [new] and gets.take() == 0


def test_a_deleted_manifest_disappears(url, s3_server):
    store = open_store(url, s3_server)
    a, b = commit(store, {"v": 1}, key=keyed(1)), commit(store, {"v": 2}, key=keyed(2))
    assert len(list(store.manifests())) == 2
    open_store(url, s3_server).delete_manifest(a)
    assert list(store.manifests()) == [b]
    assert store.newest(limit=10).manifests == (b,) and store.newest(limit=10).total == 1
    assert store.verify().manifests == 1
    rows = sqlite3.connect(cache_file(store)).execute("SELECT rel FROM manifests").fetchall()
    rows = [rel for (rel,) in rows if layout.is_manifest(rel)]  # (the index's delta records are cached too)
    assert rows == [layout.manifest_path(b.stage, b.key)]  # a complete listing forgets the deleted


def tamper(store: Store, change) -> None:
    db = sqlite3.connect(cache_file(store))
    with db:
        for rel, etag, body in db.execute("SELECT rel, etag, body FROM manifests").fetchall():
            db.execute("UPDATE manifests SET etag = ?, body = ? WHERE rel = ?", (*change(etag, bytes(body)), rel))
    db.close()


@pytest.mark.parametrize(
    "change",
    [
        lambda etag, body: (etag, body[:-40] + b"X" + body[-39:]),  # a flipped byte
        lambda etag, body: (etag, body[: len(body) // 2]),  # truncated
        lambda etag, body: (etag, b""),
    ],
    ids=["flipped", "truncated", "empty"],
)
def test_a_damaged_cache_entry_is_ignored(url, s3_server, change):
    store = open_store(url, s3_server)
    m = commit(store, {"v": 1})
    assert list(store.manifests()) == [m]
    tamper(store, change)
    gets = Gets(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unreadable manifest" warning: nothing is quarantined
        assert list(store.manifests()) == [m]
        assert store.newest().manifests == (m,)
    assert gets.take() == 2  # read again from the store once (the good copy is cached again); ``newest`` reads its row
    assert list(store._backend.list(layout.QUARANTINE)) == []
    assert store.verify().clean


def test_an_unusable_cache_file_leaves_the_store_working(url, s3_server):
    store = open_store(url, s3_server)
    m = commit(store, {"v": 1})
    path = cache_file(store)
    store._backend._cache.close()
    path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    again = open_store(url, s3_server)  # a damaged file is started afresh
    assert list(again.manifests()) == [m] and again.verify().clean
    assert sqlite3.connect(path).execute("SELECT count(*) FROM manifests").fetchone() == (1,)


@pytest.mark.parametrize("planted", [False, True], ids=["stale", "planted"])
def test_gc_with_a_stale_cache_never_deletes_a_referenced_object(url, s3_server, planted):
    """The cache holds a manifest's old version (naming object X); the store's now names Y.
    Even with the old bytes planted under the new ETag, gc keeps Y and frees only X."""
    store = open_store(url, s3_server)
    old = commit(store, {"v": "old"})
    keep = commit(store, {"v": "other"}, key=keyed(9))
    assert len(store.live_objects()) == 2  # both manifests are in the cache now
    writer = open_store(url, s3_server)
    new = dataclasses.replace(old, outputs=writer.save({"v": "new"}))
    writer.commit(new)
    rel = layout.manifest_path(old.stage, old.key)
    if planted:
        etag = {item.rel: item.etag for item in writer._backend._reader.list(layout.STAGES)}[rel]
        db = sqlite3.connect(cache_file(store))
        with db:
            db.execute("UPDATE manifests SET etag = ? WHERE rel = ?", (etag, rel))
        db.close()
    report = gc(store, grace_seconds=0)
    assert report.deleted_objects == 1
    present = set(store._backend.list(layout.OBJECTS))
    assert object_rel(old.outputs) not in present
    assert {object_rel(new.outputs), object_rel(keep.outputs)} <= present
    assert store.load(store.manifest(new.stage, new.key).outputs) == {"v": "new"}
    assert store.verify().clean


def test_options_the_reader_does_not_know_keep_s3fs(url, s3_server):
    """An s3fs option that may change what a read returns (here ``s3_additional_kwargs``):
    every read goes through s3fs, uncached, as before."""
    store = Store(url, **s3_server.storage_options, s3_additional_kwargs={})
    assert store._backend._reader is None and store._backend._cache is None
    m = commit(store, {"v": 1})
    assert list(store.manifests()) == [m] and store.manifest(m.stage, m.key) == m and store.verify().clean


def test_an_s3_store_ships_to_another_process(url, s3_server):
    """A store travels pickled with the run context: it opens afresh there (client, cache)."""
    import pickle

    store = open_store(url, s3_server)
    m = commit(store, {"v": 1})
    again = pickle.loads(pickle.dumps(store))
    assert again.manifest(m.stage, m.key) == m and list(again.manifests()) == [m]
    assert again._backend._reader is not store._backend._reader
