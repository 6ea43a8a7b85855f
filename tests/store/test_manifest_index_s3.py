"""The manifest index of S3 stores (pipeline.store.manifest_index) on the real SeaweedFS server.

Writers in several processes each add their own delta records; a writer SIGKILLed between
its delta and its manifest leaves nothing shown; a manifest no delta told of (an older
version's writer) is found by gc's full listing, and gc never deletes what it names whatever
the index says; a damaged or deleted index is rebuilt from a listing; ``ls`` shows what
another process committed or deleted since it last looked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

from pipeline import Store
from pipeline.store import layout, manifest_index
from pipeline.store.retention import gc
from tests.store.test_store import commit, object_rel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def url(s3_server) -> str:
    return s3_server.new_url()


def open_store(url: str, s3_server) -> Store:
    return Store(url, **s3_server.storage_options)


def keyed(i: int) -> str:
    return "xxh3:" + f"{i:032x}"


def listed(store: Store) -> set[str]:
    """The stage manifests a full listing of the store shows (the authority)."""
    return {rel for rel in store._backend.list(layout.STAGES) if layout.is_manifest(rel)}


def indexed(store: Store) -> set[str]:
    return {rel for rel in store._backend.index.entries() if rel.startswith(layout.STAGES + "/")}


def index_files(store: Store, under: str) -> list[str]:
    return sorted(store._backend.list(under))


def writer_script(url: str, s3_server, body: str) -> str:
    """Python code that opens ``store`` at ``url`` and runs ``body``."""
    options = json.dumps(json.dumps(s3_server.storage_options))
    head = f"""
    import json, os, signal, sys
    from pipeline import Store
    from pipeline.store import layout
    from tests.store.test_store import commit
    store = Store({url!r}, **json.loads({options}))
    """
    return textwrap.dedent(head) + textwrap.dedent(body)


def run_writer(url: str, s3_server, body: str) -> subprocess.CompletedProcess:
    """``body`` in a fresh Python process with ``store`` open at ``url`` (pipes read)."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    script = writer_script(url, s3_server, body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_writers_in_several_processes_lose_no_entry(url, s3_server):
    open_store(url, s3_server)
    script = writer_script(
        url,
        s3_server,
        """
        from concurrent.futures import ThreadPoolExecutor
        base = int(os.environ["BASE"])
        def one(i):
            commit(store, {"i": i}, stage=f"s{i % 3}", key="xxh3:" + f"{i:032x}")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(base, base + 40)))
        """,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONPATH": ROOT, "BASE": str(base)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for base in (0, 1000, 2000)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    reader = open_store(url, s3_server)
    assert len(listed(reader)) == 120
    assert indexed(reader) == listed(reader)
    assert len(index_files(reader, layout.INDEX_DELTAS)) == 120  # one record each, none overwritten
    page = reader.newest(limit=200)
    assert page.total == 120 and len(page.manifests) == 120


def test_a_writer_killed_between_its_delta_and_its_manifest_leaves_nothing_shown(url, s3_server):
    store = open_store(url, s3_server)
    kept = commit(store, {"v": 1}, key=keyed(1))
    done = run_writer(
        url,
        s3_server,
        """
        real = type(store._backend)._put_raw
        def put_raw(self, rel, data):
            if layout.is_manifest(rel):  # the delta is written; die before the manifest
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, rel, data)
        type(store._backend)._put_raw = put_raw
        commit(store, {"v": 2}, key="xxh3:" + f"{2:032x}")
        """,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    reader = open_store(url, s3_server)
    assert len(indexed(reader)) == 2 and len(listed(reader)) == 1  # the index holds too much, never too little
    page = reader.newest(limit=10)
    assert page.manifests == (kept,) and page.total == 1  # read and found missing: not shown, not counted


def test_a_manifest_no_delta_told_of_is_found_by_gc_and_its_objects_kept(url, s3_server):
    """An older version's writer (no delta record), or one killed after its manifest but
    before its delta: gc decides from a full listing (never the index), keeps what it names,
    and rebuilds the index from that listing, so ``ls`` shows it from then on."""
    store = open_store(url, s3_server)
    shown = commit(store, {"v": 1}, key=keyed(1))
    assert store.newest().total == 1  # a snapshot is there: from now on the deltas tell
    done = run_writer(
        url,
        s3_server,
        """
        from pipeline.store.manifest_index import ManifestIndex
        ManifestIndex.put = lambda self, rel, data: None  # as code before the index wrote
        commit(store, {"v": "unindexed"}, key="xxh3:" + f"{2:032x}")
        """,
    )
    assert done.returncode == 0, done.stderr
    hidden = store.manifest("s", keyed(2))
    assert hidden is not None
    assert object_rel(hidden.outputs) not in store._backend.index.live_objects()  # the index misses it
    assert store.newest(limit=10).manifests == (shown,)
    report = gc(store, grace_seconds=0)
    assert report.deleted_objects == 0
    present = set(store._backend.list(layout.OBJECTS))
    assert {object_rel(shown.outputs), object_rel(hidden.outputs)} <= present
    assert store.load(hidden.outputs) == {"v": "unindexed"}
    assert store.newest(limit=10).manifests == (hidden, shown)  # gc's listing put it in the index
    assert open_store(url, s3_server).newest(limit=10).total == 2


def test_gc_keeps_what_a_manifest_names_when_the_index_lies_about_it(url, s3_server, monkeypatch):
    """A delta record saying the manifest names no object at all: gc still keeps its object,
    and its listing corrects the index (once the record is older than the re-read window)."""
    monkeypatch.setattr(manifest_index, "WINDOW_MS", 200)
    store = open_store(url, s3_server)
    m = commit(store, {"v": 1}, key=keyed(1))
    rel = layout.manifest_path(m.stage, m.key)
    lie = {"put": rel, "written": time.time(), "etag": "", "objects": []}
    store._backend._put_raw(layout.index_delta(int(time.time() * 1000)), json.dumps(lie).encode())
    assert store._backend.index.live_objects() == set()  # --dry-run would believe it
    time.sleep(0.5)
    assert gc(store, grace_seconds=0).deleted_objects == 0
    assert store.load(store.manifest(m.stage, m.key).outputs) == {"v": 1}
    assert store._backend.index.live_objects() == {object_rel(m.outputs)}  # gc's listing corrected it


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted"])
def test_a_damaged_or_missing_index_is_rebuilt_from_a_listing(url, s3_server, damage):
    store = open_store(url, s3_server)
    made = [commit(store, {"i": i}, key=keyed(i)) for i in range(6)]
    assert store.newest(limit=3).total == 6  # the first reader built a snapshot
    (snapshot,) = index_files(store, layout.INDEX_SNAPSHOTS)
    fs = store._backend.fs
    if damage == "deleted":
        for rel in index_files(store, layout.INDEX):
            store._backend._delete_raw([rel])
    else:
        data = store._backend.read(snapshot)
        store._backend._put_raw(snapshot, b"\x00garbage" if damage == "garbage" else bytes(data)[:-20])
    del fs
    reader = open_store(url, s3_server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = reader.newest(limit=3)
    assert [m.key for m in page.manifests] == [m.key for m in made[::-1][:3]] and page.total == 6
    assert (damage == "deleted") != any("damaged" in str(w.message) for w in caught)
    (rebuilt,) = index_files(reader, layout.INDEX_SNAPSHOTS)
    assert rebuilt != snapshot and indexed(reader) == listed(reader)


def test_ls_shows_what_another_process_committed_or_deleted(url, s3_server):
    store = open_store(url, s3_server)
    a, b = commit(store, {"v": "a"}, key=keyed(1)), commit(store, {"v": "b"}, key=keyed(2))
    assert store.newest(limit=10).manifests == (b, a)
    done = run_writer(
        url,
        s3_server,
        """
        commit(store, {"v": "c"}, key="xxh3:" + f"{3:032x}")
        store.delete_manifest(store.manifest("s", "xxh3:" + f"{1:032x}"))
        """,
    )
    assert done.returncode == 0, done.stderr
    page = store.newest(limit=10)  # the same store object, the same process: fresh all the same
    assert [m.key for m in page.manifests] == [keyed(3), keyed(2)] and page.total == 2


def test_a_delete_whose_record_was_lost_is_not_shown(url, s3_server):
    """A manifest deleted by a writer that wrote no "gone" record: the index still names it;
    ``ls`` reads it, finds it missing and shows it neither as a row nor in the count."""
    store = open_store(url, s3_server)
    a, b = commit(store, {"v": "a"}, key=keyed(1)), commit(store, {"v": "b"}, key=keyed(2))
    store._backend.fs.rm_file(store._backend._path(layout.manifest_path(b.stage, b.key)))  # no record
    assert len(indexed(store)) == 2
    page = store.newest(limit=10)
    assert page.manifests == (a,) and page.total == 1


def test_deltas_are_compacted_into_a_snapshot(url, s3_server, monkeypatch):
    monkeypatch.setattr(manifest_index, "WINDOW_MS", 100)
    monkeypatch.setattr(manifest_index, "COMPACT_AT", 5)
    store = open_store(url, s3_server)
    store.newest()  # a first snapshot (of an empty store)
    made = [commit(store, {"i": i}, key=keyed(i)) for i in range(12)]
    assert len(index_files(store, layout.INDEX_DELTAS)) == 12
    time.sleep(0.3)
    first = index_files(store, layout.INDEX_SNAPSHOTS)
    assert store.newest(limit=20).total == 12  # compacts: 12 settled deltas > 5 (they stay: readers of the
    assert len(index_files(store, layout.INDEX_SNAPSHOTS)) == 2  # first snapshot may still list them)
    assert len(index_files(store, layout.INDEX_DELTAS)) == 12
    made += [commit(store, {"i": i}, key=keyed(i)) for i in range(12, 18)]
    time.sleep(0.3)
    assert store.newest(limit=20).total == 18  # compacts again: the first snapshot and its deltas go
    snapshots = index_files(store, layout.INDEX_SNAPSHOTS)
    assert len(snapshots) == 2 and not set(first) & set(snapshots)
    assert len(index_files(store, layout.INDEX_DELTAS)) == 6
    assert indexed(store) == listed(store) == {layout.manifest_path(m.stage, m.key) for m in made}
    assert len(store._backend.index.live_objects()) == 18
    assert open_store(url, s3_server).newest(limit=20).manifests == store.newest(limit=20).manifests


def test_gc_dry_run_from_the_index_counts_what_gc_then_deletes(url, s3_server):
    """After a gc, the index knows the unreferenced objects it kept (too young) and learns of
    objects whose manifests were replaced or deleted: a dry run needs no listing of the
    objects, and says what gc then deletes."""
    store = open_store(url, s3_server)
    a = commit(store, {"v": "a"}, key=keyed(1))
    b = commit(store, {"v": "b"}, key=keyed(2))
    stray = store.put({"v": "never committed"})  # unreferenced, young: kept by a gc with a grace
    assert gc(store).deleted_objects == 0
    assert all(e.objects is not None for e in store._backend.index.entries().values())  # gc noted them
    store.commit(dataclasses.replace(a, outputs=store.save({"v": "a2"})))  # a's old object: unreferenced
    store.delete_manifest(b)  # b's too
    listings = []
    real = store._backend._reader.list

    def counting(prefix):
        listings.append(prefix)
        return real(prefix)

    store._backend._reader.list = counting
    dry = gc(store, dry_run=True, grace_seconds=0)
    store._backend._reader.list = real
    assert dry.indexed and layout.OBJECTS not in listings and layout.STAGES not in listings
    assert dry.deleted_objects == 3 and dry.live_objects == 1
    done = gc(store, grace_seconds=0)
    assert done.deleted_objects == 3 and not done.indexed
    present = set(store._backend.list(layout.OBJECTS))
    assert object_rel(stray) not in present and object_rel(a.outputs) not in present
    assert store.load(store.manifest(a.stage, a.key).outputs) == {"v": "a2"}
    assert gc(store, dry_run=True, grace_seconds=0).deleted_objects == 0
