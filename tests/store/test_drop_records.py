"""Drop records (``dropped/``) are removed by ``gc`` once no mirror needs them: older than the
record window, every mirror the store had is given to gc, reachable, and does not hold the
dropped commit. A mirror that was down (or received a late copy) keeps them; a dropped result
never comes back and a committed one is never lost. On a local mirror and on SeaweedFS."""

from __future__ import annotations

import contextlib
import warnings

from pipeline import StageCache, Store
from pipeline.store import drops, layout
from pipeline.store.keep import LatestN
from pipeline.store.lifecycle import Retention
from pipeline.store.mirror_sync import pull, push, status
from pipeline.store.retention import gc
from tests.store.test_gc_s3_race import two_gcs_on_one_record
from tests.store.test_mirror import produce, runs
from tests.store.test_mirror_lifecycle import behind_a_proxy, filled, keys_of, mirror_url  # noqa: F401 (a fixture)


def records(store: Store) -> set[str]:
    return {rel for rel, _ in drops.records(store._backend)}


def quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_records_go_once_every_mirror_applied_them_and_nothing_comes_back(tmp_path, mirror_url):  # noqa: F811
    url, options = mirror_url
    mirror = Store(url, **options)
    primary, stage, keys = filled(tmp_path, mirror)
    assert gc(primary, Retention(LatestN(1))).dropped_manifests == 2
    assert len(records(primary)) == len(records(mirror)) == 2
    assert gc(primary).records == drops.PruneReport()  # young records stay: a copy may be on its way
    assert len(records(primary)) == 2
    assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=2)
    assert records(primary) == records(mirror) == set()
    assert keys_of(primary) == keys_of(mirror) == {keys[2]}  # the kept result is in both still
    log = tmp_path / "log"
    assert not stage.call(1, str(log)).hit and runs(log) == 4  # recomputed: nothing gave it back
    fresh = Store(tmp_path / "restored", mirrors=[mirror])
    [pulled] = pull(fresh, fresh.mirrors)
    assert keys_of(fresh) == {keys[1], keys[2]} and not pulled.failed


def down(mirror_dir):
    mirror_dir.rename(mirror_dir.with_name("away"))
    mirror_dir.write_text("not a directory")  # the mirror can't be opened


def up(mirror_dir):
    mirror_dir.unlink()
    mirror_dir.with_name("away").rename(mirror_dir)


def test_a_mirror_down_during_gc_keeps_the_records_until_it_applied_them(tmp_path):
    m = tmp_path / "m"
    primary, _stage, keys = filled(tmp_path, Store(m))
    down(m)
    quietly(gc, primary, Retention(LatestN(1)))
    assert quietly(gc, Store(tmp_path / "p", mirrors=[str(m)]), record_seconds=0).records.kept == 2  # still down
    up(m)
    assert keys_of(Store(m)) == set(keys)  # it missed the drops
    primary = Store(tmp_path / "p", mirrors=[Store(m)])  # a later process: the mirror is back
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    log = tmp_path / "log"
    assert not stage.call(1, str(log)).hit and runs(log) == 4  # the mirror's copy is not given back
    report = gc(primary, record_seconds=0).records  # keys[0] dropped in the mirror now; keys[1] is a new commit
    assert report == drops.PruneReport(kept=2)  # both recorded there now, and kept here until a gc finds them so
    assert keys_of(Store(m)) == {keys[1], keys[2]}
    assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=2)
    assert records(primary) == records(Store(m)) == set()
    assert not stage.call(0, str(log)).hit and runs(log) == 5  # dropped for good
    assert stage.call(1, str(log)).hit and stage.call(2, str(log)).hit  # committed results stay
    assert all(s.in_sync for s in status(primary, primary.mirrors))


def test_a_late_copy_in_a_mirror_keeps_the_record_and_is_dropped(tmp_path):
    """A replication or push that read the entry before gc dropped it writes it to the mirror after."""
    m = tmp_path / "m"
    primary, stage, keys = filled(tmp_path, Store(m))
    rel = layout.manifest_path("produce", keys[0])
    late = bytes(Store(m)._backend.read(rel))
    gc(primary, Retention(LatestN(1)))
    Store(m)._backend.write_atomic(rel, late)
    assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=1, kept=1)
    assert keys[0] not in keys_of(Store(m))  # dropped there now
    assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=1)
    log = tmp_path / "log"
    assert not stage.call(0, str(log)).hit and runs(log) == 4


def test_records_are_kept_by_a_gc_not_given_the_mirrors_they_name(tmp_path):
    primary, _stage, _keys = filled(tmp_path, Store(tmp_path / "m"))
    gc(primary, Retention(LatestN(1)))
    assert gc(Store(tmp_path / "p"), record_seconds=0).records == drops.PruneReport(kept=2)  # library use, no mirrors
    assert len(records(primary)) == 2
    alone = Store(tmp_path / "alone")  # a store that never had mirrors: its records go after the window
    stage = StageCache(alone).wrap(produce, ignore=["log"])
    for seed in range(3):
        stage.call(seed, str(tmp_path / "log2"))
    gc(alone, Retention(LatestN(1)))
    assert gc(alone, record_seconds=0).records == drops.PruneReport(removed=2) and records(alone) == set()


def test_an_empty_directory_in_place_of_a_mirror_keeps_the_records(tmp_path):
    """A mirror's disk not mounted: its mount point is an empty directory, which lacks the records."""
    m = tmp_path / "m"
    primary, stage, keys = filled(tmp_path, Store(m))
    gc(primary, Retention(LatestN(1)))
    m.rename(tmp_path / "unmounted")
    m.mkdir()
    assert gc(primary, record_seconds=0).records == drops.PruneReport(kept=2)
    m.rename(tmp_path / "empty")
    (tmp_path / "unmounted").rename(m)  # mounted again
    assert len(records(primary)) == 2
    log = tmp_path / "log"
    assert not stage.call(0, str(log)).hit and runs(log) == 4


def test_a_record_of_a_gc_killed_before_its_delete_drops_nothing(tmp_path):
    """gc writes the record, then deletes the manifest: killed in between, the store still holds the
    commit. ``push`` must not delete the mirror's copy for it (today it does), and gc removes the record."""
    m = tmp_path / "m"
    primary, stage, keys = filled(tmp_path, Store(m))
    rel = layout.manifest_path("produce", keys[0])
    drops.record(primary._backend, rel, primary._parse_manifest(rel))  # ... and killed here
    [pushed] = push(primary, primary.mirrors)
    assert pushed.dropped == 0 and keys_of(Store(m)) == set(keys)
    assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=1)
    assert keys_of(primary) == keys_of(Store(m)) == set(keys)
    log = tmp_path / "log"
    assert stage.call(0, str(log)).hit and runs(log) == 3


def test_a_s3_mirror_down_during_gc_keeps_the_records(s3_server, tmp_path):
    with behind_a_proxy(s3_server) as (proxy, url, options):
        primary, _stage, keys = filled(tmp_path, Store(url, **options))
        proxy.down()
        quietly(gc, primary, Retention(LatestN(1)))
        assert quietly(gc, primary, record_seconds=0).records == drops.PruneReport(kept=2)
        proxy.up()
        primary = Store(tmp_path / "p", mirrors=[Store(url, **options)])
        assert gc(primary, record_seconds=0).records == drops.PruneReport(kept=2)  # caught up now
        assert keys_of(Store(url, **options)) == {keys[2]}
        assert gc(primary, record_seconds=0).records == drops.PruneReport(removed=2)
        assert records(primary) == records(Store(url, **options)) == set()
        fresh = Store(tmp_path / "restored", mirrors=[Store(url, **options)])
        pull(fresh, fresh.mirrors)
        assert keys_of(fresh) == {keys[2]}


def test_a_commit_of_the_same_key_while_gc_drops_it_is_not_lost(tmp_path, monkeypatch):
    """gc checked that the manifest is the one it plans to drop, then deletes it: a rerun of that
    key committing in between (``--force``, say) had its fresh commit deleted with it."""
    import dataclasses

    store = Store(tmp_path / "s")
    stage = StageCache(store).wrap(produce, ignore=["log"])
    keys = [stage.call(seed, str(tmp_path / "log")).manifest.key for seed in range(2)]
    old = store.manifest("produce", keys[0])
    rerun = dataclasses.replace(old, created="2099-01-01T00:00:00+00:00", run_id="the-rerun")
    record = drops.record

    def recorded_then_the_rerun_commits(*args, **kwargs):
        data = record(*args, **kwargs)
        if args[1] == layout.manifest_path("produce", keys[0]):
            store.commit(rerun)  # a real commit of the same key, in the instant before gc's delete
        return data

    monkeypatch.setattr(drops, "record", recorded_then_the_rerun_commits)
    assert gc(store, Retention(LatestN(1))).dropped_manifests == 0  # what it found there was not what it planned
    assert store.manifest("produce", keys[0]) == rerun  # the rerun's commit is there
    log = tmp_path / "log"
    assert stage.call(0, str(log)).hit and runs(log) == 2


def test_a_gc_killed_with_a_manifest_aside_is_settled_by_the_next(tmp_path):
    store = Store(tmp_path / "s")
    stage = StageCache(store).wrap(produce, ignore=["log"])
    keys = [stage.call(seed, str(tmp_path / "log")).manifest.key for seed in range(3)]
    dropped_rel, kept_rel = (layout.manifest_path("produce", k) for k in keys[:2])
    drops.record(store._backend, dropped_rel, store._parse_manifest(dropped_rel))
    for rel in (dropped_rel, kept_rel):  # killed after the move: one it dropped, one a writer committed since
        store._backend.move(rel, layout.dropping_path(rel))
    assert keys_of(store) == {keys[2]}
    gc(store)
    assert keys_of(store) == {keys[1], keys[2]}  # the commit no record names is back; the dropped one is gone
    assert not [r for r in store._backend.list(layout.DROPPED) if r.endswith(".aside")]
    log = tmp_path / "log"
    assert stage.call(1, str(log)).hit and not stage.call(0, str(log)).hit


@contextlib.contextmanager
def before_taking(store: Store, rel: str, action):
    """Run ``action`` once, right before ``store``'s backend deletes or moves ``rel`` (a local
    disk sends no requests to hook: its own methods are wrapped, then called as they are)."""
    backend, seen = store._backend, []

    def hooked(name):
        original = getattr(backend, name)

        def call(path, *args, **kwargs):
            if path == rel and not seen:
                seen.append(name)
                action()
            return original(path, *args, **kwargs)

        return call

    for name in ("delete", "move"):
        setattr(backend, name, hooked(name))
    try:
        yield seen
    finally:
        for name in ("delete", "move"):
            delattr(backend, name)


def test_a_record_a_second_gc_writes_while_the_first_removes_the_old_one_stays(tmp_path):
    first, second = Store(tmp_path / "s"), Store(tmp_path / "s")
    two_gcs_on_one_record(first, second, tmp_path, lambda rrel, action: before_taking(first, rrel, action))


def test_a_gc_killed_with_a_drop_record_aside_is_put_back_by_the_next(tmp_path):
    store = Store(tmp_path / "s")
    stage = StageCache(store).wrap(produce, ignore=["log"])
    key = stage.call(0, str(tmp_path / "log")).manifest.key
    rel = layout.manifest_path("produce", key)
    drops.record(store._backend, rel, store._parse_manifest(rel))
    rrel = layout.dropped_path(rel)
    store._backend.move(rrel, layout.dropping_path(rrel))  # drops.remove took it aside ... and was killed
    assert drops.read(store._backend, rel) is None
    gc(store)
    assert drops.dropped(store._backend, rel) == drops.ident(store.manifest("produce", key))
    assert not [r for r in store._backend.list(layout.DROPPED) if r.endswith(".aside")]


def test_records_owed_to_a_mirror_removed_from_the_configuration_go_after_the_forget_window(tmp_path):
    """They were kept forever: every gc since runs without that mirror."""
    primary, stage, keys = filled(tmp_path, Store(tmp_path / "m"))
    gc(primary, Retention(LatestN(1)))
    other = Store(tmp_path / "other")
    moved = Store(tmp_path / "p", mirrors=[other])  # the old mirror is out of the configuration, another one in
    assert gc(moved, record_seconds=0).records == drops.PruneReport(kept=2)  # not yet: it may come back
    assert gc(moved, record_seconds=0, forget_seconds=0).records == drops.PruneReport(kept=2)  # the new one caught up
    assert len(records(other)) == 2
    assert gc(moved, record_seconds=0, forget_seconds=0).records == drops.PruneReport(removed=2)
    assert records(moved) == records(other) == set()
    log = tmp_path / "log"
    assert stage.call(2, str(log)).hit and runs(log) == 3  # the kept result stays
