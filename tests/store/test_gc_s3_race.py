"""gc dropping a manifest on a real S3 server (SeaweedFS) while a writer commits the same key.

The interleaving is driven at the wire: a botocore ``before-send`` hook on the gc's own S3
clients (its botocore client and s3fs's aiobotocore one) lets a second store — its own
clients, its own real PUT — commit the key just before gc's DELETE request of that manifest
leaves. Whatever gc sends then (a plain delete, the delete half of a copy + delete, a
conditional one), the commit that landed first must survive."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import urllib.parse
from typing import Callable, Iterator

from pipeline import StageCache, Store
from pipeline.store import drops, layout, remote
from pipeline.store.keep import LatestN
from pipeline.store.lifecycle import Retention
from pipeline.store.retention import gc
from tests.store.test_mirror import make_value, produce, runs


def _clients(store: Store) -> list:
    """The S3 clients a store on ``s3://`` sends its requests with (botocore's, s3fs's)."""
    backend = store._backend
    clients = [backend._reader.client] if backend._reader is not None else []
    s3fs = backend.fs._fs
    s3fs.connect()
    return [*clients, s3fs.s3]


@contextlib.contextmanager
def before_delete_of(store: Store, rel: str, action: Callable[[], None]) -> Iterator[list[str]]:
    """Run ``action`` (once) in the instant before ``store`` sends a DELETE request naming ``rel``
    (DeleteObject, or DeleteObjects with it in its body); yields the operations it ran before."""
    key = f"{store._backend.root.partition('/')[2]}/{rel}"
    seen: list[str] = []

    def names_rel(request) -> bool:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        path = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path)
        return path.endswith("/" + key) or f"<Key>{key}</Key>".encode() in body

    def hook(request, event_name, **_):
        if seen or not names_rel(request):
            return None
        seen.append(event_name.rpartition(".")[2])
        try:
            loop = asyncio.get_running_loop()  # s3fs's client: its request waits, its loop is free
        except RuntimeError:
            action()
            return None
        return _none_after(loop.run_in_executor(None, action))

    clients = _clients(store)
    events = ("before-send.s3.DeleteObject", "before-send.s3.DeleteObjects")
    for client in clients:
        for event in events:
            client.meta.events.register(event, hook, unique_id=f"s3gc-{id(hook)}-{event}")
    try:
        yield seen
    finally:
        for client in clients:
            for event in events:
                client.meta.events.unregister(event, unique_id=f"s3gc-{id(hook)}-{event}")


async def _none_after(future) -> None:
    await future  # None: botocore takes a handler's non-None answer for the response


def _stage_results(store: Store, tmp_path) -> tuple:
    stage = StageCache(store).wrap(produce, ignore=["log"])
    keys = [stage.call(seed, str(tmp_path / "log")).manifest.key for seed in range(2)]
    return stage, keys


def test_a_commit_of_the_same_key_just_before_gcs_delete_on_s3_is_not_lost(s3_server, tmp_path):
    """gc plans to drop ``keys[0]`` (LatestN(1)); a rerun of that key (``--force``, another
    process) commits right before gc's DELETE of the manifest. Copy + delete (s3fs ``mv``)
    deleted the fresh commit, and the aside copy was the dropped one: the commit was lost."""
    url, options = s3_server.new_url(), s3_server.storage_options
    store = Store(url, **options)
    stage, keys = _stage_results(store, tmp_path)
    rel = layout.manifest_path("produce", keys[0])
    rerun = dataclasses.replace(store.manifest("produce", keys[0]), created="2099-01-01T00:00:00+00:00", run_id="rerun")
    writer = Store(url, **options, skip_instance_cache=True)  # the rerun's own store: its own clients
    with before_delete_of(store, rel, lambda: writer.commit(rerun)) as seen:
        report = gc(store, Retention(LatestN(1)))
    assert seen, "gc never sent a DELETE of the manifest: the interleaving did not happen"
    assert Store(url, **options).manifest("produce", keys[0]) == rerun, "the rerun's commit was lost"
    assert report.dropped_manifests == 0  # what was there when it deleted was not what it planned to drop
    log = tmp_path / "log"
    assert stage.call(0, str(log)).hit and runs(log) == 2  # the committed result is there, objects too
    assert drops.dropped(store._backend, rel) != drops.ident(rerun)


def test_without_conditional_deletes_the_writer_writes_its_commit_again(s3_server, tmp_path):
    """A server that ignores ``If-Match`` on DeleteObject (both stores are told so, as their probe
    would find): gc drops by copy + delete, the rerun's PUT lands between them and is deleted.
    The writer, seeing the drop record and the aside copy, waits for gc to settle and writes its
    commit again."""
    url, options = s3_server.new_url(), s3_server.storage_options
    store, writer, watcher = (Store(url, **options, skip_instance_cache=True) for _ in range(3))
    for s in (store, writer):
        s._backend._deletes_conditionally = False  # what the probe says of such a server
    stage, keys = _stage_results(store, tmp_path)
    rel = layout.manifest_path("produce", keys[0])
    rerun = dataclasses.replace(store.manifest("produce", keys[0]), created="2099-01-01T00:00:00+00:00", run_id="rerun")
    failed: list[BaseException] = []

    def commit() -> None:
        try:
            writer.commit(rerun, value=make_value(0))
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            failed.append(e)

    rerunning = threading.Thread(target=commit)

    def rerun_put_lands() -> None:  # the rerun's PUT is on the server; the rest of its commit goes on
        rerunning.start()
        deadline = time.monotonic() + 30
        while watcher.manifest("produce", keys[0]) != rerun and not failed and time.monotonic() < deadline:
            time.sleep(0.01)

    with before_delete_of(store, rel, rerun_put_lands) as seen:
        gc(store, Retention(LatestN(1)))
    rerunning.join(timeout=60)
    assert seen and not rerunning.is_alive() and not failed, failed
    assert Store(url, **options).manifest("produce", keys[0]) == rerun, "the rerun's commit was lost"
    log = tmp_path / "log"
    assert stage.call(0, str(log)).hit and runs(log) == 2


def test_seaweedfs_deletes_conditionally_and_the_probe_leaves_nothing(s3_server):
    remote._CONDITIONAL.clear()  # probed afresh (once per server and process otherwise)
    store = Store(s3_server.new_url(), **s3_server.storage_options)
    assert store._backend._deletes_conditionally
    assert list(store._backend.list(layout.TMP)) == []


def test_gc_on_s3_still_drops_what_nobody_commits_again(s3_server, tmp_path):
    url, options = s3_server.new_url(), s3_server.storage_options
    store = Store(url, **options)
    stage, keys = _stage_results(store, tmp_path)
    assert gc(store, Retention(LatestN(1))).dropped_manifests == 1
    assert Store(url, **options).manifest("produce", keys[0]) is None
    assert not [rel for rel in store._backend.list(layout.DROPPED) if layout.dropping_manifest(rel)]  # none aside
    log = tmp_path / "log"
    assert stage.call(1, str(log)).hit and not stage.call(0, str(log)).hit and runs(log) == 3


def test_a_record_a_second_gc_writes_while_the_first_removes_the_old_one_stays_on_s3(s3_server, tmp_path):
    url, options = s3_server.new_url(), s3_server.storage_options
    first, second = (Store(url, **options, skip_instance_cache=True) for _ in range(2))
    two_gcs_on_one_record(first, second, tmp_path, lambda rrel, action: before_delete_of(first, rrel, action))


def two_gcs_on_one_record(first: Store, second: Store, tmp_path, before_removal) -> None:
    """gc ``first`` removes the old drop record of a key (no mirror needs it) while gc ``second``
    drops a later commit of that key and writes its record at the same path, in the instant before
    ``first``'s removal: the later record must stay (a mirror that missed that drop must not give
    the later commit back)."""
    _stage, keys = _stage_results(first, tmp_path)
    rel = layout.manifest_path("produce", keys[0])
    committed = first.manifest("produce", keys[0])
    assert gc(first, Retention(LatestN(1))).dropped_manifests == 1
    rerun = dataclasses.replace(committed, created="2020-01-01T00:00:00+00:00", run_id="rerun")
    first.commit(rerun, value=make_value(0))  # a later commit of that key, older than keys[1]: the next drop
    dropped = []
    with before_removal(layout.dropped_path(rel), lambda: dropped.append(gc(second, Retention(LatestN(1))))) as seen:
        report = gc(first, record_seconds=0)
    assert seen and [r.dropped_manifests for r in dropped] == [1]  # the interleaving happened
    assert drops.dropped(first._backend, rel) == drops.ident(rerun), "the second gc's record was deleted"
    assert report.records == drops.PruneReport(kept=1)


def test_a_writer_does_not_wait_for_the_aside_of_a_gc_killed_long_ago(s3_server, tmp_path, monkeypatch):
    """Without conditional deletes: a gc killed with a manifest aside leaves it until the next gc.
    A writer of that key waits for a young aside (at most ``SETTLE_SECONDS``), not for a stale one."""
    from pipeline.store import unchanged

    store = Store(s3_server.new_url(), **s3_server.storage_options, skip_instance_cache=True)
    store._backend._deletes_conditionally = False
    _stage, keys = _stage_results(store, tmp_path)
    rel = layout.manifest_path("produce", keys[0])
    committed = store.manifest("produce", keys[0])
    drops.record(store._backend, rel, committed)
    store._backend.move(rel, layout.dropping_path(rel))  # ... and killed
    rerun = dataclasses.replace(committed, created="2099-01-01T00:00:00+00:00", run_id="rerun")
    monkeypatch.setattr(unchanged, "SETTLE_SECONDS", 3.0)
    t = time.monotonic()
    store.commit(rerun)
    assert time.monotonic() - t >= 3.0  # a young aside: waited for it to settle
    monkeypatch.setattr(unchanged, "STALE_SECONDS", 0.0)
    t = time.monotonic()
    store.commit(dataclasses.replace(rerun, run_id="again"))
    assert time.monotonic() - t < 3.0  # (a few requests)
    gc(store)  # settles it: the aside is the dropped commit, a later one is there
    assert store.manifest("produce", keys[0]).run_id == "again"
    assert not [r for r in store._backend.list(layout.DROPPED) if layout.dropping_manifest(r)]
