"""What ``gc`` drops and what ``tag`` / ``untag`` change reaches the mirrors: a dropped entry is
dropped in every mirror that is up and never comes back from one (lookup, ``pull``); a mirror
that was down gets the drops and tags from ``mirror push``; a store restored from a mirror
keeps its ``Pinned`` tags. On a local mirror and on the real S3 server (SeaweedFS)."""

from __future__ import annotations

import contextlib
import warnings

import pytest

from pipeline import StageCache, Store
from pipeline.store.keep import LatestN, Pinned
from pipeline.store.lifecycle import Retention
from pipeline.store.mirror_sync import pull, push, status
from pipeline.store.retention import gc
from tests.helpers.tcpproxy import Proxy
from tests.store.test_mirror import produce, runs
from tests.store.test_unreachable import FAST


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])  # s3: a SeaweedFS server
def mirror_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "m"), {}
    s3 = request.getfixturevalue("s3_server")
    return s3.new_url(), s3.storage_options


def filled(tmp_path, mirror: Store, n: int = 3) -> tuple[Store, StageCache, list[str]]:
    primary = Store(tmp_path / "p", mirrors=[mirror])
    stage = StageCache(primary).wrap(produce, ignore=["log"])
    keys = [stage.call(seed, str(tmp_path / "log")).manifest.key for seed in range(n)]  # oldest first
    return primary, stage, keys


def keys_of(store: Store) -> set[str]:
    return {m.key for m in store.manifests()}


def test_gc_drops_reach_the_mirror_and_a_dropped_entry_never_comes_back(tmp_path, mirror_url):
    url, options = mirror_url
    mirror = Store(url, **options)
    primary, stage, keys = filled(tmp_path, mirror)
    assert keys_of(mirror) == set(keys)
    report = gc(primary, Retention(LatestN(1)))
    assert report.dropped_manifests == 2
    assert keys_of(primary) == keys_of(mirror) == {keys[2]}  # dropped in the mirror too
    log = tmp_path / "log"
    assert not stage.call(0, str(log)).hit and runs(log) == 4  # recomputed, not given back by the mirror
    assert keys[0] in keys_of(mirror)  # and the new commit replicated as any other
    fresh = Store(tmp_path / "restored", mirrors=[mirror])
    [pulled] = pull(fresh, fresh.mirrors)
    assert keys_of(fresh) == {keys[0], keys[2]} and not pulled.failed


@contextlib.contextmanager
def behind_a_proxy(s3_server):
    """(proxy, url, storage options) of a new S3 store reached through a TCP proxy that can go down."""
    proxy = Proxy(s3_server.endpoint)
    try:
        options = {**s3_server.storage_options, "config_kwargs": FAST}
        options["client_kwargs"] = {"endpoint_url": proxy.endpoint}
        yield proxy, s3_server.new_url(), options
    finally:
        proxy.down()


def test_a_mirror_down_during_gc_gets_the_drops_from_push_and_gives_nothing_back_meanwhile(s3_server, tmp_path):
    with behind_a_proxy(s3_server) as (proxy, url, options):
        primary, stage, keys = filled(tmp_path, Store(url, **options))
        proxy.down()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert gc(primary, Retention(LatestN(1))).dropped_manifests == 2  # the store's gc is not held up
        assert any(url in str(w.message) and "unreachable" in str(w.message) for w in caught)
        proxy.up()
        primary = Store(tmp_path / "p", mirrors=[Store(url, **options)])  # a later process: the mirror is back
        [st] = status(primary, primary.mirrors)
        assert st.dropped_in_mirror == 2 and st.missing_in_primary.entries == 0 and not st.in_sync
        stage = StageCache(primary).wrap(produce, ignore=["log"])
        assert not stage.call(1, str(tmp_path / "log")).hit  # the mirror still has it: not given back
        [pushed] = push(primary, primary.mirrors)
        assert pushed.dropped == 1 and not pushed.failed  # keys[0]; keys[1] was committed again just now
        assert keys_of(Store(url, **options)) == {keys[1], keys[2]}
        assert all(s.in_sync for s in status(primary, primary.mirrors))


def test_tags_reach_the_mirror_and_a_store_restored_from_it_keeps_its_pins(tmp_path, mirror_url):
    url, options = mirror_url
    mirror = Store(url, **options)
    primary, _stage, keys = filled(tmp_path, mirror)
    primary.tags.add("prod", "produce", keys[0])
    primary.tags.add("old", "produce", keys[1])
    assert {t.name for t in mirror.tags.all()} == {"prod", "old"}
    primary.tags.remove("old", "produce", keys[1])
    assert {(t.name, t.key) for t in mirror.tags.all()} == {("prod", keys[0])}
    restored = Store(tmp_path / "restored", mirrors=[mirror])  # the store lost: back from the mirror
    [pulled] = pull(restored, restored.mirrors)
    assert pulled.tags == 1 and restored.tags.of("produce", keys[0]) == {"prod"}
    gc(restored, Retention(LatestN(1) | Pinned("prod")))
    assert keys_of(restored) == {keys[0], keys[2]}  # the pinned entry survives the restored store's gc


def test_push_brings_a_mirror_that_was_down_the_tags_it_missed(tmp_path):
    blocked = tmp_path / "m"
    primary, _stage, keys = filled(tmp_path, Store(blocked))
    (tmp_path / "m").rename(tmp_path / "m-away")
    blocked.write_text("not a directory")  # the mirror cannot be written
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        primary.tags.add("prod", "produce", keys[0])  # the tag command does not fail
    blocked.unlink()
    (tmp_path / "m-away").rename(blocked)
    primary = Store(tmp_path / "p", mirrors=[Store(blocked)])
    [st] = status(primary, primary.mirrors)
    assert st.missing_in_mirror.tags == 1 and not st.in_sync
    [pushed] = push(primary, primary.mirrors)
    assert pushed.tags == 1 and Store(blocked).tags.of("produce", keys[0]) == {"prod"}
    assert all(s.in_sync for s in status(primary, primary.mirrors))
