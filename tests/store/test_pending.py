"""Background commits (pipeline.store.pending) and deferred stage commits (StageCache), no Prefect."""

from __future__ import annotations

import multiprocessing
import threading
import uuid

import numpy as np
import pandas as pd
import pytest

from pipeline import StageCache, Store, fingerprint
from pipeline.store.pending import DEPTH, NO_SNAPSHOT, commits, snapshot


def _group() -> str:
    group = f"test-{uuid.uuid4().hex}"
    commits().open(group)
    return group


def _blocker(group: str) -> threading.Event:
    """A job that holds the commit thread until the event is set."""
    release = threading.Event()
    commits().submit(group, ("blocker", group), "a blocking job", lambda: release.wait(30))
    return release


def test_join_waits_for_every_job_and_returns_the_failed_ones():
    group = _group()
    done = []
    commits().submit(group, ("a", "1"), "job a", lambda: done.append("a"))

    def fails():
        raise OSError("disk full")

    commits().submit(group, ("b", "2"), "job b", fails)
    failed = commits().join(group)
    assert done == ["a"]
    assert [(p.what, str(p.error)) for p in failed] == [("job b", "disk full")]
    assert not commits().accepts(group)  # closed by its join


def test_at_most_depth_jobs_are_in_flight():
    group = _group()
    release = _blocker(group)
    for i in range(DEPTH - 1):
        commits().submit(group, ("q", str(i)), "queued", lambda: None)
    third = threading.Thread(target=commits().submit, args=(group, ("q", "x"), "over", lambda: None))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "a submit beyond DEPTH did not wait"
    release.set()
    third.join(10)
    assert not third.is_alive()
    assert commits().join(group) == []


def test_then_runs_after_success_only_and_at_once_when_already_done():
    group = _group()
    seen = []
    release = _blocker(group)
    ok = commits().submit(group, ("ok", "1"), "ok", lambda: 41)
    ok.then(lambda r: seen.append(("later", r)))  # attached while the job waits
    release.set()
    bad = commits().submit(group, ("bad", "1"), "bad", lambda: 1 / 0)
    bad.then(lambda r: seen.append(("never", r)))
    assert [p.what for p in commits().join(group)] == ["bad"]
    ok.then(lambda r: seen.append(("now", r)))
    assert seen == [("later", 41), ("now", 41)]


def _accepts_in_child(group, out):
    out.put(commits().accepts(group))


def test_a_group_is_not_accepted_in_a_forked_child():
    group = _group()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_accepts_in_child, args=(group, out))
    child.start()
    child.join(30)
    assert commits().accepts(group)
    assert out.get(timeout=10) is False
    commits().join(group)


def test_snapshot_of_a_frame_is_untouched_by_later_writes_and_other_values_have_none():
    df = pd.DataFrame({"x": np.arange(5.0), "k": pd.Categorical(list("abcab"))})
    before = fingerprint(df)
    snap = snapshot((df, {"n": 1, "m": [1.5, None]}))
    df.iloc[0, 0] = 99.0
    df["x"] += 1
    assert fingerprint(snap[0]) == before
    assert snap[1] == {"n": 1, "m": [1.5, None]}
    assert snapshot(np.zeros(3)) is NO_SNAPSHOT
    assert snapshot((df, object())) is NO_SNAPSHOT


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(float(n)), "b": np.arange(n) % 7})


def test_a_deferred_stage_returns_before_its_commit_and_a_second_call_reads_it(tmp_path):
    store = Store(tmp_path / "store")
    calls = []

    def make(n):
        calls.append(n)
        return _frame(n)

    group = _group()
    release = _blocker(group)
    stage = StageCache(store).wrap(make).defer_commits(group)
    outcome = stage.call(1000)
    key = stage.key(1000).key
    assert outcome.pending is not None and outcome.manifest is None
    assert store.manifest("make", key) is None  # not committed while the thread is held
    release.set()
    again = StageCache(store).wrap(make).call(1000)  # waits for the commit in flight, then hits
    assert again.hit and calls == [1000]
    assert commits().join(group) == []
    m = store.manifest("make", key)
    assert m is not None and m.outputs.fingerprint == fingerprint(_frame(1000))
    assert outcome.pending.result == m


def test_a_deferred_result_is_keyed_as_a_synchronous_one(tmp_path):
    def make(n):
        return _frame(n), {"n": n}

    sync_store, deferred_store = Store(tmp_path / "a"), Store(tmp_path / "b")
    sync = StageCache(sync_store).wrap(make).call(50)
    group = _group()
    deferred = StageCache(deferred_store).wrap(make).defer_commits(group).call(50)
    assert commits().join(group) == []
    m = deferred.pending.result
    assert (m.key, m.outputs.fingerprint) == (sync.manifest.key, sync.manifest.outputs.fingerprint)
    assert [leaf.object for leaf in _leaves(m)] == [leaf.object for leaf in _leaves(sync.manifest)]


def _leaves(m):
    from pipeline.store.tree import leaves

    return list(leaves(m.outputs))


def test_an_output_changed_while_its_commit_waits_is_not_cached(tmp_path):
    store = Store(tmp_path / "store")
    shared = np.zeros(1000)

    def make():
        return pd.DataFrame({"x": shared}, copy=False)  # aliases memory the caller writes to later

    group = _group()
    release = _blocker(group)
    stage = StageCache(store).wrap(make).defer_commits(group)
    stage.call()
    shared[0] = 1.0  # after the stage returned, before its commit ran
    release.set()
    failed = commits().join(group)
    assert len(failed) == 1 and "changed after the stage returned" in str(failed[0].error)
    assert store.manifest("make", stage.key().key) is None


def test_values_without_a_snapshot_and_unopened_groups_commit_at_once(tmp_path):
    store = Store(tmp_path / "store")
    arrays = StageCache(store).wrap(lambda n: np.arange(n), name="arr").defer_commits(_group())
    assert arrays.call(3).manifest is not None  # an array: committed before the call returned
    frames = StageCache(store).wrap(_frame, name="frame").defer_commits("never-opened")
    assert frames.call(3).manifest is not None


@pytest.fixture(autouse=True)
def _no_jobs_left():
    yield
    assert commits().join_all() == []
